//! [`Document`]: rich text that stays fast at any size.
//!
//! Text lives in a rope (`jumprope`, a skip list of gap buffers: O(log n) insert and delete
//! at any char position); formatting and embeds live in a counted B-tree of runs
//! ([`crate::runs`]) kept the same length as the rope. An embed occupies one U+FFFC char in
//! the rope; the run tree, not the char, says what is an embed, so U+FFFC typed as text stays
//! text. ARCHITECTURE.md ("Document representation") has the measurements behind the choice.

use std::fmt;

use jumprope::JumpRopeBuf;

use crate::attributes::Attributes;
use crate::cursor::{Body, Piece};
use crate::delta::Delta;
use crate::error::Error;
use crate::op::{Insert, Op};
use crate::runs::{Run, Runs};

/// The char standing for an embed in the rope and in [`Document::text`].
pub const EMBED_CHAR: char = '\u{FFFC}';
const EMBED_STR: &str = "\u{FFFC}";

/// A rich-text document.
#[derive(Clone, Default)]
pub struct Document {
    text: JumpRopeBuf,
    runs: Runs,
}

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// A document of plain text.
    pub fn from_text(text: &str) -> Self {
        let mut doc = Self::new();
        if !text.is_empty() {
            doc.text.insert(0, text);
            doc.runs.insert(0, Run::text(doc.text.len_chars(), Attributes::NONE));
        }
        doc
    }

    /// A document from a delta of inserts only.
    pub fn from_delta(delta: &Delta) -> Result<Self, Error> {
        if let Some(op) = delta.ops().iter().find(|op| !matches!(op, Op::Insert { .. })) {
            return Err(Error::NotADocument {
                found: if matches!(op, Op::Retain { .. }) { "retain" } else { "delete" },
            });
        }
        let mut doc = Self::new();
        doc.apply(delta)?;
        Ok(doc)
    }

    /// Length in chars (an embed counts 1).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// True for an empty document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the text in UTF-8 bytes (an embed counts as its 3-byte U+FFFC).
    pub fn len_bytes(&self) -> usize {
        self.text.len_bytes()
    }

    /// Bytes of formatting: every run's attributes and embed ([`Attributes::bytes`],
    /// [`crate::Embed::bytes`]). A run's attributes are written out with every run, so this
    /// is what the document's formatting costs in a snapshot, beyond its text.
    pub fn format_bytes(&self) -> usize {
        self.runs.bytes()
    }

    /// An upper bound of [`Document::format_bytes`] after applying `delta` (which must fit
    /// the document), computed without changing anything: each insert adds its own
    /// formatting and may split the run it lands in; a formatting retain may add its
    /// attributes to every run it covers and split those at its ends; deletes add nothing.
    pub fn format_bytes_after(&self, delta: &Delta) -> usize {
        let mut total = self.format_bytes();
        if total == 0 && delta.ops().iter().all(|op| op.format_bytes() == 0) {
            return 0;
        }
        let mut pos = 0;
        for op in delta.ops() {
            match op {
                Op::Retain { retain, attributes } => {
                    if !attributes.is_empty() {
                        let (end, added) = (pos + retain, attributes.bytes());
                        self.runs.for_each(pos, end, &mut |start, run| {
                            total += added;
                            // A run cut at either end of the range leaves a copy outside it.
                            total += run.bytes() * (usize::from(start < pos) + usize::from(start + run.len > end));
                        });
                    }
                    pos += retain;
                }
                Op::Delete { delete } => pos += delete,
                Op::Insert { .. } => {
                    total += op.format_bytes();
                    self.runs.for_each(pos, pos + 1, &mut |start, run| {
                        if start < pos {
                            total += run.bytes();
                        }
                    });
                }
            }
        }
        total
    }

    /// Applies a delta. A delta that retains or deletes past the end is refused with
    /// [`Error::DeltaTooLong`] and the document is left unchanged.
    ///
    /// The result equals quill-delta's `document.compose(delta)`.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), Error> {
        let base_len = delta.base_len();
        if base_len > self.len() {
            return Err(Error::DeltaTooLong { base_len, doc_len: self.len() });
        }
        let mut pos = 0;
        for op in delta.ops() {
            match op {
                Op::Retain { retain, attributes } => {
                    if !attributes.is_empty() {
                        self.runs.format(pos, pos + retain, &mut |old| Attributes::compose(old, attributes, false));
                    }
                    pos += retain;
                }
                Op::Delete { delete } => {
                    self.text.remove(pos..pos + delete);
                    self.runs.remove(pos, pos + delete);
                }
                Op::Insert { insert: Insert::Text(t), attributes } => {
                    self.text.insert(pos, t.as_str());
                    self.runs.insert(pos, Run::text(t.chars(), attributes.clone()));
                    pos += t.chars();
                }
                Op::Insert { insert: Insert::Embed(e), attributes } => {
                    self.text.insert(pos, EMBED_STR);
                    self.runs.insert(pos, Run::embed(e.clone(), attributes.clone()));
                    pos += 1;
                }
            }
        }
        debug_assert_eq!(self.text.len_chars(), self.runs.len());
        Ok(())
    }

    /// The chars in `start..end` as a document delta (inserts with their attributes).
    pub fn slice(&self, start: usize, end: usize) -> Result<Delta, Error> {
        if start > end || end > self.len() {
            return Err(Error::DeltaTooLong { base_len: end, doc_len: self.len() });
        }
        let mut out = Delta::new();
        self.for_each_piece(start, end, |piece| out.push_piece(piece));
        Ok(out)
    }

    /// The whole document as a delta of inserts.
    pub fn to_delta(&self) -> Delta {
        let mut out = Delta::new();
        self.for_each_piece(0, self.len(), |piece| out.push_piece(piece));
        out
    }

    /// The plain text, each embed written as [`EMBED_CHAR`].
    pub fn text(&self) -> String {
        self.text.borrow().to_string()
    }

    /// Calls `f` with the document's content in `start..end`, in order, as insert pieces.
    /// Text may come in several pieces per run (one per rope chunk).
    pub(crate) fn for_each_piece(&self, start: usize, end: usize, mut f: impl FnMut(Piece<'_>)) {
        // Flushes buffered typing; `f` must not touch this document's text.
        let text = self.text.borrow();
        self.runs.for_each(start, end, &mut |run_start, run| {
            let s = start.max(run_start);
            let e = end.min(run_start + run.len);
            match &run.embed {
                Some(embed) => f(Piece { body: Body::Embed(embed), len: 1, attrs: &run.attrs }),
                None => {
                    for (chunk, len) in text.slice_substrings_with_len(s..e) {
                        f(Piece { body: Body::Text(chunk), len, attrs: &run.attrs });
                    }
                }
            }
        });
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.text == other.text && self.to_delta() == other.to_delta()
    }
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_delta(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Embed;
    use crate::value::Value;

    fn d(json: &str) -> Delta {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn apply_builds_and_formats() {
        let mut doc = Document::from_text("Hello world");
        doc.apply(&d(r#"{"ops":[{"retain":6,"attributes":{"bold":true}},{"insert":"big "}]}"#)).unwrap();
        assert_eq!(doc.text(), "Hello big world");
        assert_eq!(
            serde_json::to_string(&doc.to_delta()).unwrap(),
            r#"{"ops":[{"insert":"Hello ","attributes":{"bold":true}},{"insert":"big world"}]}"#
        );
        doc.apply(&d(r#"{"ops":[{"retain":2,"attributes":{"bold":null}},{"delete":3}]}"#)).unwrap();
        assert_eq!(
            serde_json::to_string(&doc.to_delta()).unwrap(),
            r#"{"ops":[{"insert":"He"},{"insert":" ","attributes":{"bold":true}},{"insert":"big world"}]}"#
        );
    }

    #[test]
    fn past_the_end_is_an_error_and_changes_nothing() {
        let mut doc = Document::from_text("abc");
        let before = doc.clone();
        assert_eq!(
            doc.apply(&Delta::new().retain(2, Attributes::NONE).insert("x", Attributes::NONE).delete(2)),
            Err(Error::DeltaTooLong { base_len: 4, doc_len: 3 })
        );
        assert_eq!(
            doc.apply(&Delta::new().retain(4, [("b", true)].into_iter().collect())).unwrap_err().to_string(),
            "delta spans 4 chars but the document has 3"
        );
        assert_eq!(doc, before);
        assert!(doc.slice(2, 4).is_err());
    }

    #[test]
    fn embeds_occupy_one_char() {
        let img = Embed::new([("image".to_owned(), Value::from("a.png"))].into_iter().collect());
        let mut doc = Document::from_text("ab");
        doc.apply(&Delta::new().retain(1, Attributes::NONE).insert_embed(img.clone(), Attributes::NONE)).unwrap();
        assert_eq!(doc.len(), 3);
        assert_eq!(doc.text(), "a\u{FFFC}b");
        assert_eq!(
            doc.to_delta(),
            Delta::new()
                .insert("a", Attributes::NONE)
                .insert_embed(img, Attributes::NONE)
                .insert("b", Attributes::NONE)
        );
        // Typed U+FFFC is text, not an embed.
        let typed = Document::from_text("\u{FFFC}");
        assert_eq!(typed.to_delta(), Delta::new().insert("\u{FFFC}", Attributes::NONE));
    }

    #[test]
    fn astral_plane_positions_count_scalar_values() {
        let mut doc = Document::from_text("😀😀");
        doc.apply(&Delta::new().retain(1, Attributes::NONE).insert("x", Attributes::NONE)).unwrap();
        assert_eq!(doc.text(), "😀x😀");
        doc.apply(&Delta::new().delete(1)).unwrap();
        assert_eq!(doc.text(), "x😀");
        assert_eq!(doc.len(), 2);
    }

    #[test]
    fn from_delta_needs_inserts_only() {
        assert_eq!(
            Document::from_delta(&Delta::new().retain(1, Attributes::NONE).insert("a", Attributes::NONE)).unwrap_err(),
            Error::NotADocument { found: "retain" }
        );
        let doc = Document::from_delta(&d(r#"{"ops":[{"insert":"a","attributes":{"x":1}},{"insert":"b"}]}"#)).unwrap();
        assert_eq!(doc.slice(1, 2).unwrap(), Delta::new().insert("b", Attributes::NONE));
    }

    #[test]
    fn a_ten_megabyte_document_edits_anywhere() {
        let line = "The quick brown fox jumps over the lazy dog, again and again.\n";
        let text = line.repeat(10 * 1024 * 1024 / line.len());
        let mut doc = Document::from_text(&text);
        let n = doc.len();
        for i in 0..1000 {
            let pos = (i * 7919) % n;
            doc.apply(&Delta::new().retain(pos, Attributes::NONE).insert("z", Attributes::NONE).delete(1)).unwrap();
        }
        doc.apply(&Delta::new().retain(n / 2, [("bold", true)].into_iter().collect())).unwrap();
        assert_eq!(doc.len(), n);
        assert_eq!(doc.to_delta().ops().len(), 2);
    }
}
