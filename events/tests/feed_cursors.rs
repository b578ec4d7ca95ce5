//! The change feed's publisher with cursors shared by a cluster's nodes: a document that moved
//! here is looked up in the shared store (a batch per statement), the answer counts this
//! node's own cursor when it is ahead, and the last cursors are saved when the feed stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_engine::{Attributes, ClientId, Commit, Delta};
use tandem_events::feed::{Cursors, FeedPublisher};
use tandem_events::{Bus, local::LocalBus};
use tandem_net::feed::FeedSink;
use tandem_storage::LogOp;

/// Cursors in memory: `shared` is what other nodes saved (what `get` reads), `saved` what this
/// publisher saved; `lookups` the batches asked for.
#[derive(Clone, Default)]
struct Memory {
    shared: Arc<Mutex<HashMap<String, u64>>>,
    saved: Arc<Mutex<HashMap<String, u64>>>,
    lookups: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Cursors for Memory {
    async fn save(&self, cursors: &[(String, u64)]) -> Result<(), String> {
        let mut saved = self.saved.lock().unwrap();
        for (doc, rev) in cursors {
            let r = saved.entry(doc.clone()).or_default();
            *r = (*r).max(*rev);
        }
        Ok(())
    }

    async fn get(&self, docs: &[String]) -> Result<Vec<(String, u64)>, String> {
        self.lookups.lock().unwrap().push(docs.to_vec());
        let shared = self.shared.lock().unwrap();
        Ok(docs.iter().filter_map(|d| shared.get(d).map(|r| (d.clone(), *r))).collect())
    }
}

fn op(doc: &str, rev: u64) -> LogOp {
    let delta = Delta::new().retain(rev as usize - 1, Attributes::default()).insert("x", Attributes::default());
    LogOp::new(doc, 1, Commit::op(rev, ClientId(7), rev, delta.chop()))
}

/// Asks until answered (the first call starts the lookup).
async fn answer(publisher: &FeedPublisher, doc: &str) -> u64 {
    for _ in 0..500 {
        if let Some(rev) = publisher.published_anywhere(doc) {
            return rev;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no answer for {doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_publisher_looks_cursors_up_and_saves_its_own_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::Local(LocalBus::open(&dir.path().join("events.db"), 10_000).await.unwrap());
    let cursors = Memory::default();
    cursors.shared.lock().unwrap().extend([("moved".to_owned(), 280), ("ahead".to_owned(), 5)]);
    let (publisher, task) = FeedPublisher::shared();
    let run = tokio::spawn(task.run(bus, cursors.clone()));

    // Not known here: looked up, answered once the lookup is done.
    assert_eq!(publisher.published_anywhere("moved"), None, "the first call starts the lookup");
    assert_eq!(answer(&publisher, "moved").await, 280);
    assert_eq!(answer(&publisher, "never").await, 0, "never published anywhere");
    // Each answer is taken once: loading the document again asks again.
    assert_eq!(publisher.published_anywhere("moved"), None);
    assert_eq!(answer(&publisher, "moved").await, 280);

    // Published here past the shared cursor (saved once a second): this node's counts.
    assert!(publisher.offer("ahead", &(6..=9).map(|r| op("ahead", r)).collect::<Vec<_>>()));
    for _ in 0..500 {
        if publisher.published("ahead") == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(publisher.published("ahead"), 9);
    assert_eq!(answer(&publisher, "ahead").await, 9, "the higher of the shared and the own cursor");

    // The last cursors are saved when the feed stops (the storage threads are gone).
    assert!(publisher.offer("moved", &(281..=283).map(|r| op("moved", r)).collect::<Vec<_>>()));
    drop(publisher);
    tokio::time::timeout(Duration::from_secs(10), run).await.expect("the feed stops").unwrap();
    let saved = cursors.saved.lock().unwrap().clone();
    assert_eq!((saved.get("moved"), saved.get("ahead")), (Some(&283), Some(&9)), "{saved:?}");
    let lookups = cursors.lookups.lock().unwrap().clone();
    assert!(lookups.iter().all(|b| !b.is_empty()) && lookups.len() <= 4, "{lookups:?}");
}
