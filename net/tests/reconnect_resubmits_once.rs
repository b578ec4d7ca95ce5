//! A client's connection dies mid-stream, again and again: right after a submit (the server
//! applies it, the ack is lost), and while the client keeps editing offline. Each time it
//! reconnects, catches up and resubmits; every edit ends up in the document exactly once.

mod support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::{Attributes, Delta};
use tandem_net::protocol::Encoding;

fn append(c: &tandem_net::client::Client, doc: &str, text: &str) -> Delta {
    let len = c.session().document(doc).unwrap().len();
    Delta::new().retain(len, Attributes::NONE).insert(text, Attributes::NONE)
}

#[test]
fn every_edit_lands_exactly_once_across_reconnects() {
    let server = support::server(2, |_| {});
    let addr = server.local_addr();
    let doc = "reconnects";
    let mut flaky = support::client(addr, 7, Encoding::Binary);
    let mut observer = support::client(addr, 8, Encoding::Json);
    flaky.open(doc).unwrap();
    observer.open(doc).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut markers = Vec::new();
    for round in 0..40 {
        let marker = format!("<{round}>");
        flaky.edit(doc, append(&flaky, doc, &marker)).unwrap();
        markers.push(marker);
        // The observer types too, so catch-up has other people's ops to transform against.
        let theirs = format!("({round})");
        observer.edit(doc, Delta::new().insert(&theirs, Attributes::NONE)).unwrap();
        markers.push(theirs);
        match rng.random_range(0..3) {
            // Drop right after sending: the server applies the op, the ack is lost.
            0 => flaky.drop_connection(),
            // Drop after a moment, then edit offline before reconnecting.
            1 => {
                flaky.pump(Duration::from_millis(2)).unwrap();
                flaky.drop_connection();
                let offline = format!("[{round}]");
                let len = flaky.session().document(doc).unwrap().len();
                flaky.edit(doc, Delta::new().retain(len, Attributes::NONE).insert(&offline, Attributes::NONE)).unwrap();
                markers.push(offline);
            }
            _ => {
                flaky.pump(Duration::from_millis(1)).unwrap();
            }
        }
        if !flaky.session().is_welcomed() {
            flaky.reconnect().unwrap();
            flaky.wait_until(Duration::from_secs(10), "re-open", |s| s.is_open(doc)).unwrap();
        }
        observer.pump(Duration::from_millis(1)).unwrap();
    }
    flaky.wait_until(Duration::from_secs(30), "acks", |s| s.is_synced()).unwrap();
    observer.wait_until(Duration::from_secs(30), "acks", |s| s.is_synced()).unwrap();
    let rev = flaky.session().doc_state(doc).unwrap().rev().max(observer.session().doc_state(doc).unwrap().rev());
    for c in [&mut flaky, &mut observer] {
        c.wait_until(Duration::from_secs(30), "final revision", |s| s.doc_state(doc).unwrap().rev() == rev).unwrap();
    }
    let text = flaky.session().document(doc).unwrap().text();
    assert_eq!(observer.session().document(doc).unwrap().text(), text);
    for m in &markers {
        assert_eq!(
            text.matches(m.as_str()).count(),
            1,
            "{m} appears {} times in {text}",
            text.matches(m.as_str()).count()
        );
    }
}
