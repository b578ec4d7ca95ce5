//! Comments and named versions through real sockets: two clients comment and edit around
//! the same anchor and see the same anchors as the server, a client that reconnects (or
//! opens fresh) gets the threads, and notes survive a restart (from the op log and from a
//! snapshot).

mod support;

use tandem_engine::{Attributes, Delta, NoteChange, Notes};
use tandem_net::client::{Client, ClientError};
use tandem_net::protocol::{Encoding, ErrorCode};

const DOC: &str = "notes";

fn text(c: &Client) -> String {
    c.session().document(DOC).unwrap().text()
}

fn notes(c: &Client) -> Notes {
    c.session().notes(DOC).unwrap().clone()
}

fn insert_at(at: usize, s: &str) -> Delta {
    Delta::new().retain(at, Attributes::NONE).insert(s, Attributes::NONE)
}

fn delete_at(at: usize, n: usize) -> Delta {
    Delta::new().retain(at, Attributes::NONE).delete(n)
}

fn comment(start: usize, end: usize, text: &str) -> NoteChange {
    NoteChange::Comment { start, end, text: text.into(), mentions: vec![] }
}

fn synced(clients: &mut [&mut Client]) -> String {
    support::synced(clients, DOC)
}

fn anchored(c: &Client, thread: u64) -> String {
    let t = notes(c).thread(thread).cloned().expect("the thread");
    text(c).chars().skip(t.start).take(t.end - t.start).collect()
}

#[test]
fn anchors_move_with_concurrent_edits_the_same_everywhere() {
    let server = support::server(2, |_| {});
    let mut ada = support::client(server.local_addr(), 1, Encoding::Binary);
    let mut bob = support::client(server.local_addr(), 2, Encoding::Json);
    ada.open(DOC).unwrap();
    bob.open(DOC).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    ada.edit(DOC, insert_at(0, "The quick brown fox jumps.")).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    // Ada comments on "brown" while Bob types before it and inside it, unsynced.
    bob.edit(DOC, insert_at(4, "very ")).unwrap();
    bob.flush().unwrap();
    let thread = ada.note(DOC, comment(10, 15, "which brown? 🦊")).unwrap();
    bob.edit(DOC, insert_at(17, "-ish")).unwrap(); // inside "brown", in Bob's copy
    synced(&mut [&mut ada, &mut bob]);
    let inside = anchored(&bob, thread);
    assert_eq!(inside, "br-ishown");
    // Text typed at either end stays outside.
    let t = notes(&ada).thread(thread).cloned().unwrap();
    ada.edit(DOC, insert_at(t.end, "!")).unwrap();
    ada.edit(DOC, insert_at(t.start, "(")).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    assert_eq!(anchored(&ada, thread), inside);
    // Bob replies, Ada resolves; everyone sees the thread the same.
    bob.note(DOC, NoteChange::Reply { thread, text: "the dark one".into(), mentions: vec![] }).unwrap();
    ada.note(DOC, NoteChange::Resolve { thread }).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    let t = notes(&bob).thread(thread).cloned().unwrap();
    assert_eq!(t.messages.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["user-1", "user-2"]);
    assert_eq!(t.resolved_by.as_deref(), Some("user-1"));
    // Only the author edits a message (under dev auth the user is the name).
    match bob.note(DOC, NoteChange::Edit { thread, message: thread, text: "mine now".into(), mentions: vec![] }) {
        Err(ClientError::Refused { code: ErrorCode::Forbidden, .. }) => {}
        other => panic!("expected forbidden, got {other:?}"),
    }
    // Deleting everything anchored orphans the thread; it keeps its place.
    let t = notes(&ada).thread(thread).cloned().unwrap();
    ada.edit(DOC, delete_at(t.start - 1, t.end - t.start + 2)).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    let t = notes(&bob).thread(thread).cloned().unwrap();
    assert!(t.orphaned && t.start == t.end, "{t:?}");
    // A latecomer, and a client that reconnects after missing notes, get the same threads.
    bob.drop_connection();
    ada.note(DOC, NoteChange::Reopen { thread }).unwrap();
    let second = ada.note(DOC, comment(0, 3, "title?")).unwrap();
    bob.reconnect().unwrap();
    let mut cy = support::client(server.local_addr(), 3, Encoding::Json);
    cy.open(DOC).unwrap();
    synced(&mut [&mut ada, &mut bob, &mut cy]);
    assert_eq!(notes(&cy).threads().len(), 2);
    assert_eq!(anchored(&cy, second), "The");
    assert!(notes(&cy).thread(thread).unwrap().resolved_by.is_none());
}

#[test]
fn bad_notes_are_refused_and_the_document_stays_open() {
    let server = support::server(1, |_| {});
    let mut ada = support::client(server.local_addr(), 1, Encoding::Json);
    ada.open(DOC).unwrap();
    synced(&mut [&mut ada]);
    ada.edit(DOC, insert_at(0, "abc")).unwrap();
    synced(&mut [&mut ada]);
    for (change, code) in [
        (comment(1, 1, "empty range"), ErrorCode::InvalidNote),
        (comment(0, 99, "past the end"), ErrorCode::InvalidNote),
        (comment(0, 1, "   "), ErrorCode::InvalidNote),
        (comment(0, 1, &"x".repeat(tandem_engine::notes::MAX_MESSAGE_CHARS + 1)), ErrorCode::InvalidNote),
        (NoteChange::Reply { thread: 77, text: "hi".into(), mentions: vec![] }, ErrorCode::NotFound),
        (NoteChange::NameVersion { rev: 50, name: "future".into() }, ErrorCode::NotFound),
    ] {
        match ada.note(DOC, change) {
            Err(ClientError::Refused { code: c, .. }) => assert_eq!(c, code),
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }
    ada.edit(DOC, insert_at(3, "d")).unwrap();
    assert_eq!(synced(&mut [&mut ada]), "abcd");
    let rev = ada.note(DOC, NoteChange::NameVersion { rev: 1, name: "Draft sent to legal".into() }).unwrap();
    assert_eq!(rev, 3);
    assert_eq!(notes(&ada).versions().next().unwrap().name, "Draft sent to legal");
}

#[test]
fn notes_survive_a_restart_from_the_log_and_from_snapshots() {
    let tweak = |c: &mut tandem_net::ServerConfig| c.storage.snapshot_every_ops = 10;
    let first = support::server(1, tweak);
    let addr = first.local_addr();
    let mut ada = support::client(addr, 1, Encoding::Binary);
    ada.open(DOC).unwrap();
    synced(&mut [&mut ada]);
    ada.edit(DOC, insert_at(0, "hello world")).unwrap();
    synced(&mut [&mut ada]);
    let early = ada.note(DOC, comment(6, 11, "before the snapshot")).unwrap();
    for i in 0..12 {
        ada.edit(DOC, insert_at(0, &format!("{i}"))).unwrap();
        synced(&mut [&mut ada]);
    }
    let late = ada.note(DOC, comment(0, 2, "after it")).unwrap();
    ada.note(DOC, NoteChange::NameVersion { rev: 1, name: "first words".into() }).unwrap();
    synced(&mut [&mut ada]);
    let before = notes(&ada);
    let support::TestServer { handle, dir } = first;
    drop(handle);
    let mut config = tandem_net::ServerConfig { listen: addr, cores: 1, ..tandem_net::ServerConfig::default() };
    tweak(&mut config);
    config.storage.data_dir = dir.path().to_path_buf();
    let second = tandem_net::start(config).expect("restarts on the same data");
    let mut bob = support::client(second.local_addr(), 2, Encoding::Json);
    bob.open(DOC).unwrap();
    synced(&mut [&mut bob]);
    assert_eq!(notes(&bob), before);
    assert_eq!(anchored(&bob, early), "world");
    assert_eq!(anchored(&bob, late), "11");
    drop(second);
}
