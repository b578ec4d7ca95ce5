//! Comments and named versions sequenced with the text (`DocState::submit_note`): anchors
//! moved through every op, the same on every replica, exactly once, and ops based on
//! revisions before a note still transform.
//!
//! `TANDEM_SEED=n` replays one seed, `TANDEM_SEEDS=n` runs more.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::notes::{NoteError, Notes};
use tandem_engine::random::{self, Shape};
use tandem_engine::{ClientId, Commit, DocState, Document, Error, Limits, NoteChange, Submitted};

mod support;

use support::{MAX, applied, del, ins, seeds};

fn comment(start: usize, end: usize, text: &str) -> NoteChange {
    NoteChange::Comment { start, end, text: text.into(), mentions: vec![] }
}

/// A replica's notes: every commit applied in order, as clients and history do.
fn replay(start: &Document, commits: &[Arc<Commit>]) -> (Document, Notes) {
    let (mut doc, mut notes) = (start.clone(), Notes::new());
    for c in commits {
        doc.apply(&c.delta).unwrap();
        notes.follow(c);
    }
    (doc, notes)
}

#[test]
fn a_comment_made_on_an_old_revision_lands_on_the_same_text() {
    let mut doc = DocState::restore(0, Document::from_text("the quick brown fox\n"), Limits::default());
    // Bob inserts before "quick" while Ada, still at revision 0, comments on it.
    applied(doc.submit_within(ClientId(2), 0, 1, ins(4, "very "), MAX));
    let c = applied(doc.submit_note(ClientId(1), "ada", "Ada", 0, 1, comment(4, 9, "fast?"), false, MAX, 7));
    assert_eq!(c.rev, 2);
    assert!(c.delta.is_empty());
    let t = doc.notes().thread(2).expect("thread 2");
    assert_eq!(&doc.document().text()[t.start..t.end], "quick");
    assert_eq!((t.messages[0].user.as_str(), t.messages[0].name.as_str()), ("ada", "Ada"));
    // Sent again (a lost answer): the same revision, nothing new.
    let again = doc.submit_note(ClientId(1), "ada", "Ada", 0, 1, comment(4, 9, "fast?"), false, MAX, 8).unwrap().0;
    assert_eq!(again, Submitted::Duplicate { rev: 2 });
    // An op based before the note transforms through it.
    applied(doc.submit_within(ClientId(2), 1, 2, ins(0, "> "), MAX));
    let t = doc.notes().thread(2).unwrap();
    assert_eq!(&doc.document().text()[t.start..t.end], "quick");
}

#[test]
fn commenting_on_text_deleted_meanwhile_is_refused() {
    let mut doc = DocState::restore(0, Document::from_text("abcdef\n"), Limits::default());
    applied(doc.submit_within(ClientId(2), 0, 1, del(1, 3), MAX));
    let err = doc.submit_note(ClientId(1), "ada", "Ada", 0, 1, comment(1, 4, "x"), false, MAX, 7).unwrap_err();
    assert!(matches!(err, Error::Note(NoteError::NotFound(_))), "{err:?}");
    // A reply to a thread that is not there, an edit of someone else's message.
    let err = doc
        .submit_note(
            ClientId(1),
            "ada",
            "Ada",
            1,
            1,
            NoteChange::Reply { thread: 9, text: "hi".into(), mentions: vec![] },
            false,
            MAX,
            7,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Note(NoteError::NotFound(_))));
    applied(doc.submit_note(ClientId(1), "ada", "Ada", 1, 1, comment(0, 2, "mine"), false, MAX, 7));
    let edit = NoteChange::Edit { thread: 2, message: 2, text: "theirs".into(), mentions: vec![] };
    let err = doc.submit_note(ClientId(3), "bob", "Bob", 2, 1, edit, true, MAX, 7).unwrap_err();
    assert!(matches!(err, Error::Note(NoteError::Forbidden(_))));
}

#[test]
fn versions_are_named_at_existing_revisions() {
    let mut doc = DocState::restore(0, Document::from_text("a\n"), Limits::default());
    applied(doc.submit_within(ClientId(1), 0, 1, ins(0, "x"), MAX));
    let name = |rev| NoteChange::NameVersion { rev, name: "Draft sent to legal".into() };
    assert!(doc.submit_note(ClientId(1), "ada", "Ada", 1, 2, name(5), false, MAX, 7).is_err());
    applied(doc.submit_note(ClientId(1), "ada", "Ada", 1, 2, name(1), false, MAX, 7));
    let v: Vec<_> = doc.notes().versions().map(|v| (v.rev, v.name.clone(), v.user_name.clone())).collect();
    assert_eq!(v, [(1, "Draft sent to legal".to_owned(), "Ada".to_owned())]);
}

/// Many clients edit (random rich ops and keystrokes, on old revisions too) and comment on
/// random ranges of random past revisions; every replica that applies the commits in order
/// has the server's notes, and so has one restored from a snapshot halfway.
#[test]
fn every_replica_has_the_servers_anchors() {
    let (mut threads, mut orphaned) = (0, 0);
    for seed in seeds(300) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Document::from_delta(&random::document(&mut rng, 40, Shape::RICH)).unwrap();
        let mut doc = DocState::restore(0, start.clone(), Limits::default());
        let mut docs_at = vec![start.clone()];
        let mut commits: Vec<Arc<Commit>> = Vec::new();
        let mut seqs = [0u64; 4];
        let mut halfway = None;
        for step in 0..60 {
            let client = rng.random_range(0..4usize);
            seqs[client] += 1;
            let base = doc.rev().saturating_sub(rng.random_range(0..4u64));
            let at = &docs_at[usize::try_from(base).unwrap()];
            let r = if rng.random_bool(0.3) && at.len() > 1 {
                let s = rng.random_range(0..at.len() - 1);
                let e = rng.random_range(s + 1..at.len());
                let change = comment(s, e, &format!("note {step}"));
                doc.submit_note(ClientId(client as u64), "u", "U", base, seqs[client], change, false, MAX, step)
            } else {
                let d = if rng.random_bool(0.5) {
                    random::keystroke(&mut rng, at.len())
                } else {
                    random::delta(&mut rng, at.len(), Shape::RICH)
                };
                doc.submit_within(ClientId(client as u64), base, seqs[client], d, MAX)
            };
            match r {
                Ok((Submitted::Applied(c), _)) => {
                    commits.push(c);
                    docs_at.push(doc.document().clone());
                }
                Ok(other) => panic!("seed {seed}: {other:?}"),
                // A comment on text deleted meanwhile, an op over the limits: skipped.
                Err(_) => seqs[client] -= 1,
            }
            if step == 30 {
                halfway = Some((doc.rev(), doc.document().clone(), doc.notes().clone()));
            }
            for t in doc.notes().threads() {
                assert!(t.start <= t.end && t.end <= doc.document().len(), "seed {seed}: {t:?}");
                assert_eq!(t.orphaned, t.start == t.end, "seed {seed}: {t:?}");
            }
        }
        let (text, notes) = replay(&start, &commits);
        assert_eq!(&text, doc.document(), "seed {seed}");
        assert_eq!(&notes, doc.notes(), "seed {seed}");
        let (rev, at, notes) = halfway.unwrap();
        let mut restored = DocState::restore(rev, at, Limits::default()).with_notes(notes);
        for c in commits.iter().filter(|c| c.rev > rev) {
            restored.replay((**c).clone()).unwrap();
        }
        assert_eq!(restored.notes(), doc.notes(), "seed {seed}");
        threads += doc.notes().threads().len();
        orphaned += doc.notes().threads().filter(|t| t.orphaned).count();
    }
    assert!(
        threads > orphaned && orphaned > 0 || std::env::var("TANDEM_SEED").is_ok(),
        "{threads} threads, {orphaned} orphaned"
    );
}

#[test]
fn undo_steps_over_notes() {
    let mut doc = DocState::restore(0, Document::from_text("hello\n"), Limits::default());
    applied(doc.submit_by(ClientId(1), "ada", 0, 1, ins(5, " world"), MAX, 1));
    applied(doc.submit_note(ClientId(2), "bob", "Bob", 1, 1, comment(0, 5, "greeting"), false, MAX, 2));
    applied(doc.undo(ClientId(1), "ada", 2, MAX, 3));
    assert_eq!(doc.document().text(), "hello\n");
    let t = doc.notes().thread(2).unwrap();
    assert_eq!((t.start, t.end), (0, 5));
}
