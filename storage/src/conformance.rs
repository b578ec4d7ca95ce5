//! The conformance suite every [`OpLog`] backend must pass: the embedded log always, ScyllaDB
//! when a cluster is reachable. Backends' integration tests call [`run_all`].

use std::sync::Arc;

use tandem_engine::{Attributes, ClientId, Commit, Delta, DocState, Document, Limits, NoteChange, Submitted};

use crate::error::StorageError;
use crate::format::LogOp;
use crate::oplog::OpLog;
use crate::snapshot::Snapshot;

/// A backend under test.
pub trait Backend {
    /// A log with nothing in it (a fresh directory or keyspace).
    fn fresh(&mut self) -> Box<dyn OpLog>;
    /// The log [`Backend::fresh`] last made, opened again (after dropping the old handle).
    fn reopen(&mut self) -> Box<dyn OpLog>;
    /// A time far enough past every write for retention to allow compaction, ms.
    fn compaction_time_ms(&self) -> u64 {
        u64::MAX / 2
    }
}

/// Runs every check, panicking with the check's name on the first failure.
pub fn run_all(backend: &mut dyn Backend) {
    append_and_read_ranges(backend);
    appends_are_idempotent_and_fenced(backend);
    snapshots_and_load(backend);
    history_at_every_revision(backend);
    dropped_history_and_compaction(backend);
    everything_survives_a_reopen(backend);
    notes_are_kept_in_order_with_the_ops(backend);
}

const T0: u64 = 1_700_000_000_000;

/// A document's ops: `n` edits by two authors, each valid on the document before it.
pub fn edits(doc: &str, first_rev: u64, n: u64, base_len: usize) -> (Vec<LogOp>, usize) {
    let mut len = base_len;
    let mut ops = Vec::new();
    for i in 0..n {
        let rev = first_rev + i;
        let delta = if i % 5 == 4 && len > 2 {
            Delta::new().retain(len / 2, Attributes::NONE).delete(1)
        } else {
            let attrs = if i % 3 == 0 { bold() } else { Attributes::NONE };
            Delta::new().retain((rev as usize * 7) % (len + 1), Attributes::NONE).insert(&format!("r{rev} "), attrs)
        };
        len = len + delta.insert_len() - delta.delete_len();
        let author = ClientId(1 + rev % 2);
        ops.push(LogOp { doc: doc.into(), time_ms: T0 + rev, commit: Arc::new(Commit::op(rev, author, rev, delta)) });
    }
    (ops, len)
}

fn bold() -> Attributes {
    Attributes::from_object([("bold".to_owned(), tandem_engine::Value::Bool(true))].into_iter().collect())
}

fn content(ops: &[LogOp]) -> Document {
    let mut d = Document::new();
    for op in ops {
        d.apply(&op.commit.delta).expect("edits are valid");
    }
    d
}

fn append_and_read_ranges(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (a, _) = edits("doc-a", 1, 40, 0);
    let (c, _) = edits("doc-c", 1, 25, 0);
    // Interleaved, in several batches.
    for i in 0..40 {
        let mut batch = vec![a[i].clone()];
        if i < 25 {
            batch.push(c[i].clone());
        }
        let appended = log.append(&batch).expect("append");
        assert_eq!(appended.written, batch.len(), "append_and_read_ranges: written");
    }
    assert_eq!(log.latest_rev("doc-a").unwrap(), 40);
    assert_eq!(log.latest_rev("doc-c").unwrap(), 25);
    assert_eq!(log.latest_rev("never-written").unwrap(), 0);
    assert_eq!(log.read("doc-a", 1, 40).unwrap(), a, "append_and_read_ranges: full range");
    assert_eq!(log.read("doc-a", 10, 12).unwrap(), a[9..12].to_vec());
    assert_eq!(log.read("doc-c", 25, 25).unwrap(), c[24..25].to_vec());
    assert!(log.read("doc-a", 5, 4).unwrap().is_empty(), "an empty range is empty");
    assert!(matches!(log.read("doc-a", 39, 41), Err(StorageError::FutureRevision { latest: 40, .. })));
    assert!(matches!(log.read("never-written", 1, 1), Err(StorageError::FutureRevision { latest: 0, .. })));
    assert!(log.read("never-written", 1, 0).unwrap().is_empty());
    // A batch spanning many revisions of one document.
    let (more, _) = edits("doc-c", 26, 200, content(&c).len());
    log.append(&more).unwrap();
    assert_eq!(log.read("doc-c", 20, 225).unwrap().len(), 206);
}

fn appends_are_idempotent_and_fenced(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (ops, _) = edits("d", 1, 10, 0);
    log.append(&ops[..5]).unwrap();
    // A retried append (lost reply) is recognized and skipped.
    let again = log.append(&ops[3..7]).unwrap();
    assert_eq!((again.written, again.duplicates), (2, 2), "idempotent append");
    assert_eq!(log.latest_rev("d").unwrap(), 7);
    // Another op at a taken revision: a second sequencer must not win.
    let mut rival = (*ops[5].commit).clone();
    rival.author = ClientId(99);
    let rival = LogOp { doc: "d".into(), time_ms: T0, commit: Arc::new(rival) };
    assert!(
        matches!(log.append(&[rival]), Err(StorageError::Conflict { rev: 6, .. })),
        "a different op at a taken revision conflicts"
    );
    // Gaps are refused, and a refused batch writes nothing.
    let refused = log.append(&[ops[7].clone(), ops[9].clone()]);
    assert!(matches!(refused, Err(StorageError::RevisionGap { expected: 9, got: 10, .. })), "{refused:?}");
    assert_eq!(log.latest_rev("d").unwrap(), 7, "a refused batch writes nothing");
    log.append(&ops[7..]).unwrap();
    assert_eq!(log.read("d", 1, 10).unwrap(), ops);
}

fn snapshots_and_load(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (ops, _) = edits("s", 1, 30, 0);
    log.append(&ops).unwrap();
    let loaded = log.load("s").unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.ops.len(), 30);
    let state = loaded.into_state(Limits::default()).unwrap();
    assert_eq!(state.document(), &content(&ops));
    let snap = Snapshot::of(&state, T0 + 100);
    assert_eq!(snap.rev, 30);
    log.put_snapshot("s", &snap).unwrap();
    let (more, _) = edits("s", 31, 5, state.document().len());
    log.append(&more).unwrap();
    assert_eq!(log.snapshot_at_or_before("s", 29).unwrap(), None);
    assert_eq!(log.snapshot_at_or_before("s", 35).unwrap().as_ref(), Some(&snap));
    let loaded = log.load("s").unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.rev), Some(30));
    assert_eq!(loaded.ops, more, "load gives the ops after the snapshot");
    let restored = loaded.into_state(Limits::default()).unwrap();
    let all: Vec<LogOp> = ops.iter().chain(&more).cloned().collect();
    assert_eq!(restored.document(), &content(&all));
    assert_eq!(restored.rev(), 35);
    // Exactly-once records came through the snapshot.
    assert_eq!(restored.last_client_seq(ClientId(2)), Some(35));
    assert_eq!(restored.last_client_seq(ClientId(1)), Some(34));
    let future = Snapshot { rev: 99, ..snap };
    assert!(matches!(log.put_snapshot("s", &future), Err(StorageError::FutureRevision { .. })));
}

fn history_at_every_revision(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (ops, _) = edits("h", 1, 60, 0);
    log.append(&ops[..20]).unwrap();
    let state = log.load("h").unwrap().into_state(Limits::default()).unwrap();
    log.put_snapshot("h", &Snapshot::of(&state, T0)).unwrap();
    log.append(&ops[20..]).unwrap();
    for rev in 0..=60 {
        let at = log.document_at("h", rev).unwrap();
        assert_eq!(at, content(&ops[..rev as usize]), "history_at_every_revision: rev {rev}");
    }
    assert!(matches!(log.document_at("h", 61), Err(StorageError::FutureRevision { .. })));
    let revs = log.revisions("h", 10, 5).unwrap();
    assert_eq!(revs.iter().map(|r| r.rev).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    assert_eq!(revs[0].author, ops[9].commit.author);
    assert_eq!(revs[0].time_ms, ops[9].time_ms);
    assert_eq!(log.revisions("h", 58, 100).unwrap().len(), 3);
    assert!(log.revisions("h", 61, 10).unwrap().is_empty());
    assert!(log.revisions("none", 1, 10).unwrap().is_empty());
}

fn dropped_history_and_compaction(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (ops, _) = edits("c", 1, 300, 0);
    let (other, _) = edits("other", 1, 300, 0);
    for i in 0..300 {
        log.append(&[ops[i].clone(), other[i].clone()]).unwrap();
    }
    assert!(
        matches!(log.drop_history_before("c", 100), Err(StorageError::NoSnapshot { .. })),
        "dropping history needs a snapshot"
    );
    let at = |log: &mut Box<dyn OpLog>, rev: u64| {
        let st = tandem_engine::DocState::restore(rev, log.document_at("c", rev).unwrap(), Limits::default());
        Snapshot::of(&st, T0)
    };
    let snap = at(&mut log, 150);
    log.put_snapshot("c", &snap).unwrap();
    log.drop_history_before("c", 151).unwrap();
    assert_eq!(log.oldest_readable("c").unwrap(), 150);
    assert!(matches!(log.document_at("c", 149), Err(StorageError::HistoryUnavailable { oldest: 150, .. })));
    assert!(matches!(log.read("c", 140, 160), Err(StorageError::HistoryUnavailable { .. })));
    assert_eq!(log.document_at("c", 150).unwrap(), content(&ops[..150]));
    assert_eq!(log.document_at("c", 300).unwrap(), content(&ops));
    let compacted = log.compact(b.compaction_time_ms()).unwrap();
    // Whatever was deleted, what is readable stays readable and appends go on.
    let oldest = log.oldest_readable("c").unwrap();
    assert!(oldest <= 300, "the latest revision stays readable ({compacted:?})");
    for rev in [oldest, (oldest + 300) / 2, 300] {
        assert_eq!(log.document_at("c", rev).unwrap(), content(&ops[..rev as usize]), "after compaction, rev {rev}");
    }
    assert_eq!(log.document_at("other", 300).unwrap(), content(&other));
    let (more, _) = edits("c", 301, 3, content(&ops).len());
    log.append(&more).unwrap();
    assert_eq!(log.latest_rev("c").unwrap(), 303);
    let state = log.load("c").unwrap().into_state(Limits::default()).unwrap();
    assert_eq!(state.rev(), 303);
}

fn everything_survives_a_reopen(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let (ops, _) = edits("r", 1, 50, 0);
    log.append(&ops[..25]).unwrap();
    let state = log.load("r").unwrap().into_state(Limits::default()).unwrap();
    log.put_snapshot("r", &Snapshot::of(&state, T0)).unwrap();
    log.append(&ops[25..]).unwrap();
    log.sync().unwrap();
    drop(log);
    let mut log = b.reopen();
    assert_eq!(log.latest_rev("r").unwrap(), 50);
    assert_eq!(log.read("r", 1, 50).unwrap(), ops);
    let loaded = log.load("r").unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.rev), Some(25));
    assert_eq!(loaded.into_state(Limits::default()).unwrap().document(), &content(&ops));
    // And appends continue where they left off.
    let (more, _) = edits("r", 51, 2, content(&ops).len());
    log.append(&more).unwrap();
    assert!(matches!(log.append(&[ops[0].clone()]), Ok(a) if a.duplicates == 1));
}

/// Comments and named versions are revisions like ops: read back in order, replayed by a
/// load (after a snapshot too), and known to `state_at` at every revision, anchors moved.
fn notes_are_kept_in_order_with_the_ops(b: &mut dyn Backend) {
    let mut log = b.fresh();
    let mut state = DocState::new(Limits::default());
    let mut ops = Vec::new();
    let mut keep = |state: &mut DocState, r: Result<(Submitted, u64), tandem_engine::Error>| match r {
        Ok((Submitted::Applied(c), _)) => ops.push(LogOp { doc: "n".into(), time_ms: T0 + c.rev, commit: c }),
        other => panic!("notes: {other:?} at {}", state.rev()),
    };
    let edit = |state: &mut DocState, seq, delta| state.submit_within(ClientId(1), state.rev(), seq, delta, u64::MAX);
    let r = edit(&mut state, 1, Delta::new().insert("hello world\n", Attributes::NONE));
    keep(&mut state, r);
    let comment =
        NoteChange::Comment { start: 6, end: 11, text: "which world? ✓".into(), mentions: vec!["u2".into()] };
    let r = state.submit_note(ClientId(2), "u2", "Bob", 1, 1, comment, false, u64::MAX, T0);
    keep(&mut state, r);
    let r = edit(&mut state, 2, Delta::new().insert(">> ", Attributes::NONE));
    keep(&mut state, r);
    let name = NoteChange::NameVersion { rev: 3, name: "First draft".into() };
    let r = state.submit_note(ClientId(2), "u2", "Bob", 3, 2, name, false, u64::MAX, T0);
    keep(&mut state, r);
    log.append(&ops[..2]).expect("notes: append");
    log.append(&ops[2..]).expect("notes: append");
    assert_eq!(log.read("n", 1, 4).expect("notes: read"), ops, "notes: read back");
    let (doc, notes) = log.state_at("n", 3).expect("notes: state at 3");
    let t = notes.thread(2).expect("notes: the thread at 3");
    assert_eq!(&doc.text()[t.start..t.end], "world", "notes: anchor at 3");
    assert_eq!(notes.versions().len(), 0, "notes: no version yet at 3");
    assert!(log.state_at("n", 1).expect("notes: state at 1").1.is_empty(), "notes: none at 1");
    let loaded = log.load("n").expect("notes: load").into_state(Limits::default()).expect("notes: replay");
    assert_eq!(loaded.notes(), state.notes(), "notes: loaded");
    log.put_snapshot("n", &Snapshot::of(&state, T0)).expect("notes: snapshot");
    drop(log);
    let mut log = b.reopen();
    let loaded = log.load("n").expect("notes: load after a snapshot").into_state(Limits::default()).expect("notes");
    assert_eq!(loaded.notes(), state.notes(), "notes: from the snapshot");
    assert_eq!(log.state_at("n", 4).expect("notes: state at 4").1, *state.notes(), "notes: state at 4");
}

/// Two sequencers (two connections on two threads) race for the same revisions of one
/// document, an op at a time: each revision is acknowledged to exactly one of them (the other
/// gets a [`StorageError::Conflict`]), and the log holds exactly the ops acknowledged.
/// `connect` opens a new connection to one fresh, shared log.
pub fn two_sequencers_race(connect: &(dyn Fn() -> Box<dyn OpLog + Send> + Sync)) {
    const REVS: u64 = 200;
    let (ops, _) = edits("raced", 1, REVS, 0);
    let rival: Vec<LogOp> = ops
        .iter()
        .map(|op| {
            let mut c = (*op.commit).clone();
            c.author = ClientId(1000 + c.author.0);
            LogOp { doc: Arc::clone(&op.doc), time_ms: op.time_ms, commit: Arc::new(c) }
        })
        .collect();
    // Both connected before either starts, so that they really race.
    let start = std::sync::Barrier::new(2);
    let race = |mine: &[LogOp], side: u64| {
        let mut log = connect();
        start.wait();
        let mut won = Vec::new();
        // Each goes for the next free revision, as a sequencer that reloads after losing
        // would: every revision is contended.
        let mut next = 1;
        while next <= REVS {
            let op = &mine[(next - 1) as usize];
            match log.append(std::slice::from_ref(op)) {
                Ok(a) if a.written == 1 => {
                    won.push(next);
                    next += 1;
                    // A pause of a few hundred microseconds now and then (as work between
                    // batches), so that the lead changes hands.
                    std::thread::sleep(std::time::Duration::from_micros((next * 7919 + side * 104_729) % 700));
                }
                Ok(a) => panic!("two_sequencers_race: unexpected {a:?}"),
                Err(StorageError::Conflict { .. }) => {
                    next = log.latest_rev("raced").expect("latest") + 1;
                }
                Err(e) => panic!("two_sequencers_race: {e}"),
            }
        }
        won
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| race(&ops, 0));
        let b = s.spawn(|| race(&rival, 1));
        (a.join().expect("sequencer a"), b.join().expect("sequencer b"))
    });
    eprintln!("two_sequencers_race: {} revisions went to one sequencer, {} to the other", a.len(), b.len());
    assert!(!a.is_empty() && !b.is_empty(), "two_sequencers_race: no race happened (one side won everything)");
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|w| w[0] != w[1]), "two_sequencers_race: a revision written twice: {a:?} {b:?}");
    let mut log = connect();
    let latest = log.latest_rev("raced").expect("latest");
    assert_eq!(latest, REVS, "two_sequencers_race: latest");
    assert_eq!(all.len() as u64, latest, "two_sequencers_race: every revision acknowledged to one side");
    for op in log.read("raced", 1, latest).expect("read") {
        let i = (op.rev() - 1) as usize;
        let from_a = a.contains(&op.rev()) && op.commit.author == ops[i].commit.author;
        let from_b = b.contains(&op.rev()) && op.commit.author == rival[i].commit.author;
        assert!(from_a ^ from_b, "two_sequencers_race: revision {} is neither side's acknowledged op", op.rev());
    }
}
