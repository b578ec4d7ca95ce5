//! Per-user undo and redo on the server (`DocState::undo`/`redo`): properties over random
//! documents and a simulation of many users undoing and redoing at random while others edit.
//!
//! `TANDEM_SEED=n` replays one seed, `TANDEM_SEEDS=n` runs more.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{
    ClientDoc, ClientId, Commit, Delta, DocState, Document, Error, Limits, Outgoing, Remote, Submitted,
};

mod support;

use support::{MAX, applied, del, ins, seeds};

fn doc_of(text: &str) -> DocState {
    DocState::restore(0, Document::from_text(text), Limits::default())
}

/// `DocState::submit_by` at the current revision.
fn edit(doc: &mut DocState, client: u64, user: &str, seq: u64, delta: Delta, now: u64) -> Arc<Commit> {
    let rev = doc.rev();
    applied(doc.submit_by(ClientId(client), user, rev, seq, delta, MAX, now))
}

#[test]
fn undo_alone_restores_the_document_and_redo_the_change() {
    for seed in seeds(2000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Document::from_delta(&random::document(&mut rng, 30, Shape::RICH)).unwrap();
        let mut doc = DocState::restore(0, start.clone(), Limits::default());
        let d = random::delta(&mut rng, start.len(), Shape::RICH);
        let mut after = start.clone();
        after.apply(&d).unwrap();
        if d.is_empty() || after == start {
            continue;
        }
        edit(&mut doc, 1, "ada", 1, d.clone(), 0);
        assert_eq!(doc.document(), &after, "seed {seed}");
        applied(doc.undo(ClientId(1), "ada", 2, MAX, 10));
        assert_eq!(doc.document(), &start, "seed {seed}: undo of {d}");
        applied(doc.redo(ClientId(1), "ada", 3, MAX, 20));
        assert_eq!(doc.document(), &after, "seed {seed}: redo of {d}");
        assert_eq!(doc.undo_depth("ada"), (1, 0), "seed {seed}");
    }
}

#[test]
fn a_sequence_undone_step_by_step_returns_to_the_start() {
    for seed in seeds(300) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Document::from_delta(&random::document(&mut rng, 30, Shape::RICH)).unwrap();
        let mut doc = DocState::restore(0, start.clone(), Limits::default());
        let mut states = vec![start.clone()];
        let mut seq = 0;
        for k in 0..rng.random_range(1..8u64) {
            let d = random::delta(&mut rng, doc.document().len(), Shape::RICH);
            seq += 1;
            // Two seconds apart: separate steps.
            edit(&mut doc, 1, "ada", seq, d, k * 2000);
            states.push(doc.document().clone());
        }
        let steps = doc.undo_depth("ada").0;
        for k in 0..steps {
            seq += 1;
            match doc.undo(ClientId(1), "ada", seq, MAX, 100_000) {
                Ok(_) => {}
                Err(Error::NothingToUndo { .. }) => break,
                Err(e) => panic!("seed {seed}: undo {k}: {e}"),
            }
        }
        // Steps that changed nothing visible were skipped; what remains is the start.
        assert_eq!(doc.document(), &start, "seed {seed}");
        assert!(matches!(
            doc.undo(ClientId(1), "ada", seq + 1, MAX, 100_000),
            Err(Error::NothingToUndo { redo: false })
        ));
    }
}

#[test]
fn undo_keeps_other_peoples_later_edits() {
    let mut doc = doc_of("hello world");
    edit(&mut doc, 1, "ada", 1, ins(0, "X"), 0);
    edit(&mut doc, 2, "bob", 1, ins(12, "!"), 10);
    edit(&mut doc, 2, "bob", 2, ins(7, "big "), 20);
    let c = applied(doc.undo(ClientId(1), "ada", 2, MAX, 30));
    assert_eq!(c.delta, del(0, 1));
    assert_eq!(doc.document().text(), "hello big world!");
    // Bob's undo takes back his own last step only.
    applied(doc.undo(ClientId(2), "bob", 3, MAX, 40));
    assert_eq!(doc.document().text(), "hello world!");
    // Ada's redo puts her X back where it belongs now.
    applied(doc.redo(ClientId(1), "ada", 3, MAX, 50));
    assert_eq!(doc.document().text(), "Xhello world!");
}

#[test]
fn undo_after_concurrent_edits_leaves_theirs_intact() {
    for seed in seeds(1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Document::from_delta(&random::document(&mut rng, 30, Shape::PLAIN)).unwrap();
        let mut doc = DocState::restore(0, start.clone(), Limits::default());
        let d = random::delta(&mut rng, start.len(), Shape::RICH);
        edit(&mut doc, 1, "ada", 1, d.clone(), 0);
        // Bob inserts markers, some made before he saw Ada's op (base revision 0).
        let mut markers = Vec::new();
        for k in 0..rng.random_range(1..5u64) {
            let base = if rng.random_bool(0.5) { 0 } else { doc.rev() };
            let len = if base == 0 { start.len() } else { doc.document().len() };
            // One character each: a later marker cannot land inside an earlier one.
            let m = ["①", "②", "③", "④", "⑤"][k as usize].to_owned();
            let at = rng.random_range(0..=len);
            applied(doc.submit_by(ClientId(2), "bob", base, k + 1, ins(at, &m), MAX, 10 + k));
            markers.push(m);
        }
        applied(doc.undo(ClientId(1), "ada", 2, MAX, 100)).as_ref();
        let text = doc.document().text();
        for m in &markers {
            assert!(text.contains(m.as_str()), "seed {seed}: {m} lost from {text:?} (ada's op {d})");
        }
    }
}

#[test]
fn keystrokes_group_by_time_and_position() {
    let mut doc = doc_of("");
    let mut seq = 0;
    let mut t = 0;
    let mut key = |doc: &mut DocState, d: Delta, gap: u64| {
        seq += 1;
        t += gap;
        edit(doc, 1, "ada", seq, d, t);
    };
    // "Hello" typed fast, then a pause, then " world".
    for (i, c) in "Hello".chars().enumerate() {
        key(&mut doc, ins(i, &c.to_string()), 100);
    }
    for (i, c) in " world".chars().enumerate() {
        key(&mut doc, ins(5 + i, &c.to_string()), if i == 0 { 2000 } else { 100 });
    }
    // Backspace twice, fast: joins the " world" step.
    key(&mut doc, del(10, 1), 100);
    key(&mut doc, del(9, 1), 100);
    // A jump elsewhere starts a new step even when fast.
    key(&mut doc, ins(0, ">"), 100);
    assert_eq!(doc.document().text(), ">Hello wor");
    assert_eq!(doc.undo_depth("ada"), (3, 0));
    let mut undo = |doc: &mut DocState| {
        seq += 1;
        applied(doc.undo(ClientId(1), "ada", seq, MAX, 100_000));
        doc.document().text()
    };
    assert_eq!(undo(&mut doc), "Hello wor");
    assert_eq!(undo(&mut doc), "Hello");
    assert_eq!(undo(&mut doc), "");
}

#[test]
fn others_typing_between_keystrokes_does_not_split_the_step() {
    let mut doc = doc_of("0123456789");
    let (mut a, mut b) = (0, 0);
    for (i, c) in "abc".chars().enumerate() {
        a += 1;
        edit(&mut doc, 1, "ada", a, ins(2 + i + b as usize, &c.to_string()), 100 * a);
        // Bob types before Ada's caret: her next keystroke lands one further on.
        b += 1;
        edit(&mut doc, 2, "bob", b, ins(0, "B"), 100 * a + 50);
    }
    assert_eq!(doc.document().text(), "BBB01abc23456789");
    assert_eq!(doc.undo_depth("ada"), (1, 0));
    applied(doc.undo(ClientId(1), "ada", a + 1, MAX, 1000));
    assert_eq!(doc.document().text(), "BBB0123456789");
}

#[test]
fn a_new_edit_clears_redo_and_undo_is_exactly_once() {
    let mut doc = doc_of("abc");
    edit(&mut doc, 1, "ada", 1, ins(3, "d"), 0);
    let first = applied(doc.undo(ClientId(1), "ada", 2, MAX, 10));
    // The same request again (a reconnect): acknowledged, not applied twice.
    assert_eq!(doc.undo(ClientId(1), "ada", 2, MAX, 20).unwrap().0, Submitted::Duplicate { rev: first.rev });
    assert_eq!(doc.document().text(), "abc");
    // A different request under that number is refused.
    assert!(matches!(doc.redo(ClientId(1), "ada", 2, MAX, 30), Err(Error::SeqConflict { .. })));
    assert_eq!(doc.undo_depth("ada"), (0, 1));
    edit(&mut doc, 1, "ada", 3, ins(0, "z"), 5000);
    assert_eq!(doc.undo_depth("ada"), (1, 0));
    assert!(matches!(doc.redo(ClientId(1), "ada", 4, MAX, 5010), Err(Error::NothingToUndo { redo: true })));
    // Another session of the same user (a reload: a new client id) undoes the same stack.
    applied(doc.undo(ClientId(9), "ada", 1, MAX, 5020));
    assert_eq!(doc.document().text(), "abc");
}

#[test]
fn steps_older_than_the_history_kept_are_gone() {
    let limits = Limits { history_ops: 5, ..Limits::default() };
    let mut doc = DocState::restore(0, Document::from_text("x"), limits);
    edit(&mut doc, 1, "ada", 1, ins(0, "a"), 0);
    for k in 0..6 {
        edit(&mut doc, 2, "bob", k + 1, ins(0, "b"), 10 + k);
    }
    assert!(matches!(doc.undo(ClientId(1), "ada", 2, MAX, 100), Err(Error::NothingToUndo { redo: false })));
    assert_eq!(doc.undo_depth("ada"), (0, 0));
    // And steps over an hour old.
    edit(&mut doc, 1, "ada", 3, ins(0, "c"), 1_000);
    assert!(matches!(doc.undo(ClientId(1), "ada", 4, MAX, 1_000 + 3_600_001), Err(Error::NothingToUndo { .. })));
}

#[test]
fn undo_depth_is_bounded() {
    let mut doc = doc_of("");
    for k in 0..150u64 {
        edit(&mut doc, 1, "ada", k + 1, ins(0, "x"), k * 5000);
    }
    assert_eq!(doc.undo_depth("ada").0, tandem_engine::undo::MAX_STEPS);
}

#[test]
fn the_text_a_stack_keeps_is_bounded_but_the_newest_step_stays() {
    const MB: usize = 1 << 20;
    let mut doc = doc_of(&"x".repeat(9 * MB));
    // Six deletes of 1 MiB each, each its own step: the stack keeps what fits in 4 MiB.
    for k in 0..6u64 {
        edit(&mut doc, 1, "ada", k + 1, del(0, MB), k * 5000);
    }
    let depth = doc.undo_depth("ada").0;
    assert!((3..=4).contains(&depth), "kept {depth} steps of 1 MiB");
    // A paste, then everything deleted at once (4 MiB, the paste included): the newest step
    // is kept whatever its size, so the mistake can be undone; the older ones make room.
    let pasted = doc.document().len();
    edit(&mut doc, 1, "ada", 7, ins(0, &"y".repeat(MB - 1)), 40_000);
    edit(&mut doc, 1, "ada", 8, del(0, pasted + MB - 1), 50_000);
    assert_eq!(doc.document().len(), 0);
    assert_eq!(doc.undo_depth("ada").0, 1);
    applied(doc.undo(ClientId(1), "ada", 9, MAX, 51_000));
    assert_eq!(doc.document().len(), pasted + MB - 1);
}

/// A client's message to the server in the simulation.
enum Up {
    Submit(Outgoing),
    /// An undo (`false`) or redo (`true`) with its `client_seq`.
    Undo(u64, bool),
}

/// The server's message to a client.
enum Down {
    Ack(u64, u64),
    Op(Arc<Commit>),
    Refused(u64),
}

/// The user behind simulated client `i`: some users have two sessions.
fn user_of(i: usize) -> String {
    format!("user{}", i % 3)
}

/// The server reads client `i`'s message `m` and queues its answers.
fn serve(server: &mut DocState, clients: &[ClientDoc], down: &mut [VecDeque<Down>], i: usize, m: Up, now: u64) {
    let (client, user) = (ClientId(i as u64 + 1), user_of(i));
    let (result, seq) = match m {
        Up::Submit(o) => (server.submit_by(client, &user, o.base_rev, o.client_seq, o.delta, MAX, now), o.client_seq),
        Up::Undo(seq, false) => (server.undo(client, &user, seq, MAX, now), seq),
        Up::Undo(seq, true) => (server.redo(client, &user, seq, MAX, now), seq),
    };
    match result {
        Ok((Submitted::Applied(c), _)) => {
            for (j, q) in down.iter_mut().enumerate() {
                if j == i && server_acks(&c, &clients[i]) {
                    q.push_back(Down::Ack(c.client_seq, c.rev));
                } else {
                    q.push_back(Down::Op(Arc::clone(&c)));
                }
            }
        }
        Err(Error::NothingToUndo { .. }) => down[i].push_back(Down::Refused(seq)),
        other => panic!("client {i}: no resubmissions or refusals here: {other:?}"),
    }
}

/// Client `i` reads the server's message `m`; returns what it sends next.
fn deliver(client: &mut ClientDoc, m: Down) -> Option<Outgoing> {
    match m {
        Down::Ack(seq, rev) => client.ack(seq, rev).unwrap(),
        Down::Op(c) => match client.remote(c.rev, &c.delta, c.author, c.client_seq).unwrap() {
            Remote::Acked(next) => next,
            // Someone's op, or the answer to our undo: edits waiting for that answer may go.
            Remote::Applied(_) if client.inflight().is_none() => client.resend(),
            Remote::Applied(_) => None,
        },
        Down::Refused(seq) => {
            client.request_refused(seq);
            client.resend()
        }
    }
}

/// Many users edit, undo and redo at random over a network that delays every message; every
/// client ends with the server's document.
#[test]
fn random_undo_and_redo_converge_on_every_client() {
    for seed in seeds(200) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Document::from_delta(&random::document(&mut rng, 20, Shape::RICH)).unwrap();
        let mut server = DocState::restore(0, start.clone(), Limits::default());
        let n = rng.random_range(2..6);
        let mut clients: Vec<ClientDoc> =
            (0..n).map(|i| ClientDoc::new(ClientId(i as u64 + 1), 0, start.clone())).collect();
        let mut up: Vec<VecDeque<Up>> = (0..n).map(|_| VecDeque::new()).collect();
        let mut down: Vec<VecDeque<Down>> = (0..n).map(|_| VecDeque::new()).collect();
        let mut now = 0u64;
        for _ in 0..400 {
            now += rng.random_range(0..700);
            let i = rng.random_range(0..n);
            match rng.random_range(0..10) {
                0..=4 => {
                    let d = random::keystroke(&mut rng, clients[i].document().len());
                    if let Some(out) = clients[i].edit(d).unwrap() {
                        up[i].push_back(Up::Submit(out));
                    }
                }
                5 | 6 => {
                    if let Some(seq) = clients[i].request() {
                        up[i].push_back(Up::Undo(seq, rng.random_bool(0.3)));
                    }
                }
                7 => {
                    if let Some(m) = up[i].pop_front() {
                        serve(&mut server, &clients, &mut down, i, m, now);
                    }
                }
                _ => {
                    if let Some(out) = down[i].pop_front().and_then(|m| deliver(&mut clients[i], m)) {
                        up[i].push_back(Up::Submit(out));
                    }
                }
            }
        }
        // Drain: the server reads everything, the clients read everything, until quiet.
        loop {
            let mut moved = false;
            for (i, queue) in up.iter_mut().enumerate() {
                while let Some(m) = queue.pop_front() {
                    moved = true;
                    serve(&mut server, &clients, &mut down, i, m, now);
                }
            }
            for i in 0..n {
                while let Some(m) = down[i].pop_front() {
                    moved = true;
                    if let Some(out) = deliver(&mut clients[i], m) {
                        up[i].push_back(Up::Submit(out));
                    }
                }
            }
            if !moved {
                break;
            }
        }
        for (i, c) in clients.iter().enumerate() {
            assert!(!c.has_pending(), "seed {seed}: client {i} still has pending edits");
            assert_eq!(c.document(), server.document(), "seed {seed}: client {i}");
        }
    }
}

/// Whether the server answers the author with an ack (a submission) or with the op (an undo
/// or redo, whose delta the author does not know).
fn server_acks(c: &Commit, author: &ClientDoc) -> bool {
    author.inflight().is_some_and(|o| o.client_seq == c.client_seq)
}
