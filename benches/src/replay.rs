//! Replaying a trace's patches through each engine, the same way for all.
//!
//! Each function takes the patches (positions in chars, or UTF-16 code units for engines that
//! count those) and returns the final text, so callers can time the replay and check it.

use tandem_engine::{Attributes, Delta, Document};

use crate::trace::{Patch, Unit};

/// The engines compared.
///
/// The `rope:*` entries are bare ropes applying plain edits: not editors, but the floor an
/// editor's replay is measured against.
pub const ENGINES: &[&str] = &[
    "tandem",
    "tandem-sequencer",
    "diamond-types",
    "yrs",
    "operational-transform",
    "quill-delta-rs",
    "rope:jumprope",
    "rope:jumprope-buf",
    "rope:ropey",
    "rope:crop",
];

/// What an engine's positions count.
pub fn unit(engine: &str) -> Unit {
    match engine {
        "yrs" => Unit::Utf16,
        "rope:crop" => Unit::Bytes,
        _ => Unit::Chars,
    }
}

/// Replays through `engine`, from `start`. Returns `None` for an unknown engine.
pub fn replay(engine: &str, start: &str, patches: &[Patch]) -> Option<String> {
    Some(match engine {
        "tandem" => tandem(start, patches),
        "tandem-sequencer" => tandem_sequencer(start, patches),
        "diamond-types" => diamond_types(start, patches),
        "yrs" => yrs(start, patches),
        "operational-transform" => operational_transform(start, patches),
        "quill-delta-rs" => quill_delta_rs(start, patches),
        "rope:jumprope" => rope_jumprope(start, patches),
        "rope:jumprope-buf" => rope_jumprope_buf(start, patches),
        "rope:ropey" => rope_ropey(start, patches),
        "rope:crop" => rope_crop(start, patches),
        _ => return None,
    })
}

/// The Quill delta for one patch: retain, insert, delete.
pub fn patch_delta(Patch(pos, del, ins): &Patch) -> Delta {
    Delta::new().retain(*pos, Attributes::NONE).insert(ins, Attributes::NONE).delete(*del)
}

/// Tandem's engine: each patch becomes a delta applied to a [`Document`].
pub fn tandem(start: &str, patches: &[Patch]) -> String {
    let mut doc = Document::from_text(start);
    for p in patches {
        doc.apply(&patch_delta(p)).expect("trace patch applies");
    }
    doc.text()
}

/// Tandem's server path: each patch submitted to the per-document sequencer (which also
/// records history and exactly-once state), as one client that is always up to date.
pub fn tandem_sequencer(start: &str, patches: &[Patch]) -> String {
    let mut state = tandem_engine::DocState::restore(0, Document::from_text(start), tandem_engine::Limits::default());
    let me = tandem_engine::ClientId(1);
    for (i, p) in patches.iter().enumerate() {
        let rev = state.rev();
        state.submit(me, rev, i as u64 + 1, patch_delta(p)).expect("trace patch applies");
    }
    state.document().text()
}

/// diamond-types 1.0's `ListCRDT`, one agent, local edits.
pub fn diamond_types(start: &str, patches: &[Patch]) -> String {
    let mut doc = diamond_types::list::ListCRDT::new();
    let agent = doc.get_or_create_agent_id("a");
    if !start.is_empty() {
        doc.insert(agent, 0, start);
    }
    for Patch(pos, del, ins) in patches {
        if *del > 0 {
            doc.delete(agent, *pos..*pos + *del);
        }
        if !ins.is_empty() {
            doc.insert(agent, *pos, ins);
        }
    }
    doc.branch.content().to_string()
}

/// yrs 0.28 (the Rust port of Yjs), one transaction per patch, UTF-16 offsets.
pub fn yrs(start: &str, patches: &[Patch]) -> String {
    use yrs::{GetString, Text, Transact};
    let doc = yrs::Doc::with_options(yrs::Options { offset_kind: yrs::OffsetKind::Utf16, ..yrs::Options::default() });
    let text = doc.get_or_insert_text("t");
    if !start.is_empty() {
        text.insert(&mut doc.transact_mut(), 0, start);
    }
    for Patch(pos, del, ins) in patches {
        let mut txn = doc.transact_mut();
        if *del > 0 {
            text.remove_range(&mut txn, *pos as u32, *del as u32);
        }
        if !ins.is_empty() {
            text.insert(&mut txn, *pos as u32, ins);
        }
    }
    text.get_string(&doc.transact())
}

/// operational-transform 0.6 (the Rust port of ot.js): the document is a `String`.
pub fn operational_transform(start: &str, patches: &[Patch]) -> String {
    let mut doc = start.to_owned();
    let mut len = doc.chars().count();
    for Patch(pos, del, ins) in patches {
        let mut op = operational_transform::OperationSeq::default();
        op.retain(*pos as u64);
        op.delete(*del as u64);
        op.insert(ins);
        op.retain((len - pos - del) as u64);
        doc = op.apply(&doc).expect("trace patch applies");
        len = len - del + ins.chars().count();
    }
    doc
}

/// quill-delta-rs 2.2: the document is a `Delta`, composed with each patch's delta.
pub fn quill_delta_rs(start: &str, patches: &[Patch]) -> String {
    use quill_delta_rs::Delta as QDelta;
    let mut doc = QDelta::new();
    if !start.is_empty() {
        doc = doc.insert(start, None);
    }
    for Patch(pos, del, ins) in patches {
        // Its builder asserts on zero lengths.
        let mut d = QDelta::new();
        if *pos > 0 {
            d = d.retain(*pos, None);
        }
        if !ins.is_empty() {
            d = d.insert(ins.as_str(), None);
        }
        if *del > 0 {
            d = d.delete(*del);
        }
        doc = doc.compose(&d);
    }
    doc.plain_text()
}

/// A bare `jumprope::JumpRope`: plain text only, no deltas (a floor, not an editor).
pub fn rope_jumprope(start: &str, patches: &[Patch]) -> String {
    let mut rope = jumprope::JumpRope::from(start);
    for Patch(pos, del, ins) in patches {
        if *del > 0 {
            rope.remove(*pos..*pos + *del);
        }
        if !ins.is_empty() {
            rope.insert(*pos, ins);
        }
    }
    rope.to_string()
}

/// A bare `jumprope::JumpRopeBuf` (adjacent edits coalesced), as inside Tandem's `Document`.
pub fn rope_jumprope_buf(start: &str, patches: &[Patch]) -> String {
    let mut rope = jumprope::JumpRopeBuf::new_from_str(start);
    for Patch(pos, del, ins) in patches {
        if *del > 0 {
            rope.remove(*pos..*pos + *del);
        }
        if !ins.is_empty() {
            rope.insert(*pos, ins);
        }
    }
    rope.borrow().to_string()
}

/// A bare `ropey::Rope` (a B-tree rope).
pub fn rope_ropey(start: &str, patches: &[Patch]) -> String {
    let mut rope = ropey::Rope::from_str(start);
    for Patch(pos, del, ins) in patches {
        if *del > 0 {
            rope.remove(*pos..*pos + *del);
        }
        if !ins.is_empty() {
            rope.insert(*pos, ins);
        }
    }
    rope.to_string()
}

/// A bare `crop::Rope` (a B-tree rope indexed by bytes: it takes byte positions).
pub fn rope_crop(start: &str, patches: &[Patch]) -> String {
    let mut rope = crop::Rope::from(start);
    for Patch(pos, del, ins) in patches {
        if *del > 0 {
            rope.delete(*pos..*pos + *del);
        }
        if !ins.is_empty() {
            rope.insert(*pos, ins);
        }
    }
    rope.to_string()
}
