//! Remote cursors land on the right characters after concurrent edits, and who's online is
//! reported on open and as users join and leave.

mod support;

use std::time::Duration;

use tandem_engine::{Attributes, ClientId, Delta, SelectionRange};
use tandem_net::client::Event;
use tandem_net::protocol::Encoding;

#[test]
fn a_remote_caret_stays_on_its_character() {
    let server = support::server(2, |_| {});
    let addr = server.local_addr();
    let doc = "presence";
    let mut ada = support::client(addr, 1, Encoding::Binary);
    let mut bob = support::client(addr, 2, Encoding::Json);
    ada.open(doc).unwrap();
    ada.edit(doc, Delta::new().insert("hello world", Attributes::NONE)).unwrap();
    ada.wait_until(Duration::from_secs(5), "ack", |s| s.is_synced()).unwrap();
    bob.open(doc).unwrap();
    assert_eq!(bob.session().peers(doc).iter().map(|p| p.client).collect::<Vec<_>>(), vec![ClientId(1)]);

    // Ada puts her caret before "world" (index 6) while Bob, concurrently, types at the start
    // and deletes "hello ".
    ada.set_selection(doc, &[SelectionRange::caret(6)]).unwrap();
    bob.edit(doc, Delta::new().insert(">> ", Attributes::NONE)).unwrap();
    bob.edit(doc, Delta::new().retain(3, Attributes::NONE).delete(6)).unwrap();

    let caret_on_w = |s: &tandem_net::client::ClientSession| {
        let text: Vec<char> = s.document(doc).unwrap().text().chars().collect();
        s.is_synced()
            && s.selection_of(doc, ClientId(1)).is_some_and(|r| r.len() == 1 && text.get(r[0].head) == Some(&'w'))
    };
    bob.wait_until(Duration::from_secs(5), "Ada's caret on 'w'", caret_on_w).unwrap();
    ada.wait_until(Duration::from_secs(5), "Bob's edits", |s| s.document(doc).unwrap().text() == ">> world").unwrap();
    assert_eq!(bob.session().document(doc).unwrap().text(), ">> world");

    // Bob types right at Ada's caret: her caret stays before his text, for Bob at once and
    // for Ada (whose own caret, on her screen, is hers to move).
    bob.edit(doc, Delta::new().retain(3, Attributes::NONE).insert("big ", Attributes::NONE)).unwrap();
    let caret_on_b = |s: &tandem_net::client::ClientSession| {
        let text: Vec<char> = s.document(doc).unwrap().text().chars().collect();
        s.is_synced()
            && s.selection_of(doc, ClientId(1)).is_some_and(|r| r.len() == 1 && text.get(r[0].head) == Some(&'b'))
    };
    assert!(caret_on_b(bob.session()) || !bob.session().is_synced());
    bob.wait_until(Duration::from_secs(5), "caret before \"big \"", caret_on_b).unwrap();

    // A late joiner gets the current selections with the document, moved by the server
    // through Bob's insert the same way.
    let mut cat = support::client(addr, 3, Encoding::Binary);
    cat.open(doc).unwrap();
    cat.wait_until(Duration::from_secs(5), "Ada's caret", caret_on_b).unwrap();
    let online: Vec<ClientId> = cat.session().peers(doc).iter().map(|p| p.client).collect();
    assert_eq!(online, vec![ClientId(1), ClientId(2)]);
    let names: Vec<String> = cat.session().peers(doc).iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, vec!["user-1", "user-2"]);

    // Leaving is announced, and the caret goes with the user.
    ada.close().unwrap();
    let left = cat.pump(Duration::from_millis(300)).unwrap();
    assert!(left.contains(&Event::Left { doc: doc.into(), client: ClientId(1) }), "{left:?}");
    assert!(cat.session().selection_of(doc, ClientId(1)).is_none());
}

#[test]
fn presence_is_coalesced_per_interval() {
    let server = support::server(1, |c| {
        c.presence_interval_ms = 200;
        c.max_messages_per_s = 10_000;
    });
    let addr = server.local_addr();
    let doc = "coalesced";
    let mut writer = support::client(addr, 1, Encoding::Binary);
    let mut reader = support::client(addr, 2, Encoding::Binary);
    writer.open(doc).unwrap();
    writer.edit(doc, Delta::new().insert(&"x".repeat(100), Attributes::NONE)).unwrap();
    // Carets set while the text is unacknowledged would land at its end; wait for the ack.
    writer.wait_until(Duration::from_secs(5), "ack", |s| s.is_synced()).unwrap();
    reader.open(doc).unwrap();
    reader.pump(Duration::from_millis(50)).unwrap();
    // 100 cursor moves in a burst reach the reader as a few batches, the last one current.
    for i in 0..100 {
        writer.set_selection(doc, &[SelectionRange::caret(i)]).unwrap();
    }
    let events = reader.pump(Duration::from_millis(700)).unwrap();
    let updates = events.iter().filter(|e| matches!(e, Event::Presence { .. })).count();
    assert!((1..=5).contains(&updates), "{updates} presence updates for 100 moves");
    assert_eq!(reader.session().selection_of(doc, ClientId(1)), Some(&[SelectionRange::caret(99)][..]));
}
