//! Per-user undo and restore through real sockets: an undo after others' concurrent edits
//! takes back only the user's change, the stack outlives a reload (a fresh client with the
//! same id), an undo in flight across a dropped connection is applied exactly once, and a
//! restore is an edit everyone sees, which undo takes back.

mod support;

use tandem_engine::{Attributes, Delta};
use tandem_net::client::{Client, ClientError};
use tandem_net::protocol::{Encoding, ErrorCode};

const DOC: &str = "undo";

fn insert_at(at: usize, s: &str) -> Delta {
    Delta::new().retain(at, Attributes::NONE).insert(s, Attributes::NONE)
}

fn synced(clients: &mut [&mut Client]) -> String {
    support::synced(clients, DOC)
}

fn nothing_to_undo(r: Result<u64, ClientError>) {
    match r {
        Err(ClientError::Refused { code: ErrorCode::NothingToUndo, .. }) => {}
        other => panic!("expected nothing_to_undo, got {other:?}"),
    }
}

#[test]
fn undo_after_others_edits_takes_back_only_the_users_change() {
    let server = support::server(2, |_| {});
    let mut ada = support::client(server.local_addr(), 1, Encoding::Binary);
    let mut bob = support::client(server.local_addr(), 2, Encoding::Json);
    ada.open(DOC).unwrap();
    bob.open(DOC).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    ada.edit(DOC, insert_at(0, "Hello")).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "Hello");
    bob.edit(DOC, insert_at(5, " world")).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    // Ada's second change (not typing on from her first: a step of its own), and Bob's edits
    // racing her undo.
    ada.edit(DOC, insert_at(0, "Big ")).unwrap();
    bob.edit(DOC, insert_at(11, "!")).unwrap();
    ada.undo(DOC, false).unwrap();
    bob.edit(DOC, insert_at(0, ">")).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), ">Hello world!");
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "> world!");
    nothing_to_undo(ada.undo(DOC, false));
    // The refusal leaves the document open and editable.
    ada.edit(DOC, insert_at(1, "Hi")).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), ">Hi world!");
    // Redo is cleared by a new change; undoing it and redoing twice brings both back.
    nothing_to_undo(ada.undo(DOC, true));
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "> world!");
    ada.undo(DOC, true).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), ">Hi world!");
    // Bob's stack is his own.
    bob.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "Hi world!");
}

#[test]
fn the_undo_stack_outlives_a_reload_and_a_dropped_connection() {
    let server = support::server(1, |_| {});
    let addr = server.local_addr();
    let mut ada = support::client(addr, 7, Encoding::Json);
    let mut bob = support::client(addr, 8, Encoding::Binary);
    ada.open(DOC).unwrap();
    bob.open(DOC).unwrap();
    for word in ["one ", "two ", "three "] {
        ada.edit(DOC, insert_at(0, word)).unwrap();
        synced(&mut [&mut ada, &mut bob]);
    }
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "two one ");

    // A reload: the page's state is gone, the tab's client id is kept.
    drop(ada);
    bob.edit(DOC, insert_at(8, "(bob)")).unwrap();
    let mut ada = support::client(addr, 7, Encoding::Json);
    ada.open(DOC).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "two one (bob)");
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "one (bob)");
    ada.undo(DOC, true).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "two one (bob)");

    // An undo sent just before the connection drops: the catch-up on reconnect answers it if
    // it was applied, or it is asked again; either way it is applied once.
    let seq = ada.send_undo(DOC, false).unwrap().expect("nothing in flight");
    ada.drop_connection();
    ada.edit(DOC, insert_at(0, "typed away ")).unwrap();
    ada.reconnect().unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "typed away one (bob)", "undo {seq} applied once");
    // The stack is intact: what was typed away, then the first word.
    ada.undo(DOC, false).unwrap();
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "(bob)");
}

#[test]
fn a_restore_is_an_edit_for_everyone_that_undo_takes_back() {
    let server = support::server(2, |_| {});
    let addr = server.local_addr();
    let mut ada = support::client(addr, 11, Encoding::Binary);
    let mut bob = support::client(addr, 12, Encoding::Json);
    ada.open(DOC).unwrap();
    bob.open(DOC).unwrap();
    ada.edit(DOC, insert_at(0, "Draft one.")).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    let draft = ada.session().doc_state(DOC).unwrap().rev();
    bob.edit(DOC, Delta::new().retain(6, Attributes::NONE).delete(3).insert("two", Attributes::NONE)).unwrap();
    synced(&mut [&mut ada, &mut bob]);
    ada.edit(DOC, insert_at(10, " More.")).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "Draft two. More.");
    let latest = ada.session().doc_state(DOC).unwrap().rev();

    // Ada restores the first draft: a new revision, seen by Bob, history kept.
    let rev = ada.restore(DOC, draft).unwrap();
    assert_eq!(rev, latest + 1);
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "Draft one.");
    assert_eq!(bob.get_revision(DOC, latest).unwrap(), ada.get_revision(DOC, latest).unwrap());
    let (_, _, revs) = bob.list_revisions(DOC, rev, 10).unwrap();
    assert_eq!(revs.iter().map(|r| (r.rev, r.author)).collect::<Vec<_>>(), vec![(rev, tandem_engine::ClientId(11))]);
    // Restoring what the document already is changes nothing: acknowledged at the latest.
    assert_eq!(ada.restore(DOC, rev).unwrap(), rev);
    assert_eq!(ada.session().doc_state(DOC).unwrap().rev(), rev);
    // Undo takes the restore back.
    ada.undo(DOC, false).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "Draft two. More.");
    // A revision from the future is refused, and the document stays open.
    match ada.restore(DOC, 1_000) {
        Err(ClientError::Refused { code: ErrorCode::NoSuchRevision, .. }) => {}
        other => panic!("expected no_such_revision, got {other:?}"),
    }
    ada.edit(DOC, insert_at(0, "> ")).unwrap();
    assert_eq!(synced(&mut [&mut ada, &mut bob]), "> Draft two. More.");
}
