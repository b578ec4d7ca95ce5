//! Many clients (both subprotocols) edit shared documents at once over real sockets on a
//! 2-core server; after quiescence every client and the server hold identical content.
//!
//! Seeded: `TANDEM_SEED=n` replays one seed.

mod support;

use std::thread;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{Document, SelectionRange};
use tandem_net::protocol::Encoding;

const CLIENTS: u64 = 16;
const EDITS: usize = 150;
const DOCS: [&str; 3] = ["shared-a", "shared-b", "notes/shared-c"];

#[test]
fn sixteen_clients_converge_on_shared_documents() {
    let seed: u64 = std::env::var("TANDEM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let server = support::server(2, |c| c.max_messages_per_s = 2000);
    let addr = server.local_addr();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + i);
                let encoding = if i % 2 == 0 { Encoding::Binary } else { Encoding::Json };
                let mut c = support::client(addr, 100 + i, encoding);
                for doc in DOCS {
                    c.open(doc).unwrap();
                }
                for _ in 0..EDITS {
                    let doc = DOCS[rng.random_range(0..DOCS.len())];
                    let len = c.session().document(doc).unwrap().len();
                    c.edit(doc, random::delta(&mut rng, len, Shape::RICH)).unwrap();
                    if rng.random_bool(0.2) {
                        let len = c.session().document(doc).unwrap().len();
                        c.set_selection(doc, &[SelectionRange::caret(rng.random_range(0..=len))]).unwrap();
                    }
                    c.pump(Duration::from_millis(rng.random_range(0..3))).unwrap();
                }
                c.wait_until(Duration::from_secs(60), "all acks", |s| s.is_synced()).unwrap();
                c
            })
        })
        .collect();
    let mut clients: Vec<_> = workers.into_iter().map(|w| w.join().expect("client thread")).collect();

    // A late reader sees the final state of each document; everyone must reach it.
    let mut checker = support::client(addr, 1, Encoding::Json);
    let mut total_rev = 0;
    for doc in DOCS {
        checker.open(doc).unwrap();
        let state = checker.session().doc_state(doc).unwrap();
        let (rev, text) = (state.rev(), state.document().clone());
        total_rev += rev;
        for c in &mut clients {
            c.wait_until(Duration::from_secs(30), "final revision", |s| s.doc_state(doc).unwrap().rev() == rev)
                .unwrap();
            let mine: &Document = c.session().document(doc).unwrap();
            assert_eq!(mine, &text, "seed {seed}: client {} diverged on {doc}", c.session().client());
        }
    }
    // Edits made while an op is in flight compose into one op: count ops sent, each of
    // which must have made exactly one revision.
    let sent: u64 =
        clients.iter().flat_map(|c| DOCS.map(|doc| c.session().doc_state(doc).unwrap().next_seq() - 1)).sum();
    assert_eq!(total_rev, sent, "seed {seed}: every op committed exactly once");
    assert!(sent >= CLIENTS * EDITS as u64 / 4, "seed {seed}: only {sent} ops for {} edits", CLIENTS * EDITS as u64);
    let ops_in: u64 = server.stats().iter().map(|s| s.ops_in.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert!(ops_in <= total_rev);
}
