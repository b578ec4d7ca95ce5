//! The bus conformance suite: what every backend promises (order per key, at least once
//! across a consumer crash, redelivery after a restart, ids to deduplicate by, backpressure,
//! unreadable messages delivered as such, independent groups). Runs on the in-process
//! backend here.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tandem_events::local::LocalBus;
use tandem_events::relay::{Outbox, Relay};
use tandem_events::{Bus, Envelope, Event, Message, Topic};

fn created(id: &str, doc: &str, n: usize) -> Envelope {
    Envelope::new(
        id.to_owned(),
        1,
        Event::DocumentCreated { doc: doc.to_owned(), title: format!("t{n}"), owner: "u".into() },
    )
}

struct Backend {
    dir: tempfile::TempDir,
}

impl Backend {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("events.db")
    }

    async fn open(&self, capacity: u64) -> Bus {
        Bus::Local(LocalBus::open(&self.path(), capacity).await.unwrap())
    }
}

async fn take(consumer: &mut tandem_events::Consumer, n: usize) -> Vec<tandem_events::Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(n - out.len()))
            .await
            .expect("messages arrive")
            .unwrap();
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn order_per_key_across_publishes() {
    let b = Backend::new();
    let bus = b.open(10_000).await;
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for round in 0..20 {
        let mut batch = Vec::new();
        for doc in ["a", "b", "c"] {
            for i in 0..5 {
                let id = format!("{doc}-{round}-{i}");
                sent.entry(doc.into()).or_default().push(id.clone());
                batch.push(Message::from(&created(&id, doc, i)));
            }
        }
        bus.publish(&batch).await.unwrap();
    }
    let got = take(&mut c, 300).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for d in &got {
        let e = d.event.as_ref().unwrap();
        assert_eq!(d.key, e.key);
        seen.entry(d.key.clone()).or_default().push(e.id.clone());
    }
    assert_eq!(seen, sent);
    assert!(got.windows(2).all(|w| w[0].offset < w[1].offset));
}

#[tokio::test]
async fn uncommitted_messages_come_again_after_a_consumer_crash() {
    let b = Backend::new();
    let bus = b.open(10_000).await;
    let msgs: Vec<Message> = (0..10).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
    bus.publish(&msgs).await.unwrap();
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let first = take(&mut c, 10).await;
    c.commit(&first[3]).await.unwrap();
    drop(c); // "crashed" after working on 4..9 without committing
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let again = take(&mut c, 6).await;
    let ids: Vec<_> = again.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, (4..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert_eq!(bus.lag(), vec![("g".into(), Topic::DocumentEdits, 6)]);
}

#[tokio::test]
async fn a_restart_keeps_messages_offsets_and_the_next_offset() {
    let b = Backend::new();
    let bus = b.open(10_000).await;
    bus.publish(&(0..5).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect::<Vec<_>>()).await.unwrap();
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let got = take(&mut c, 5).await;
    c.commit(&got[1]).await.unwrap();
    drop(c);
    let Bus::Local(local) = &bus else { unreachable!() };
    local.close().await;

    let bus = b.open(10_000).await;
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let got = take(&mut c, 3).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "e2");
    bus.publish(&[Message::from(&created("e5", "d", 5))]).await.unwrap();
    let next = take(&mut c, 1).await;
    assert_eq!(next[0].offset, got[2].offset + 1, "offsets continue after a restart");
}

#[tokio::test]
async fn groups_are_independent_and_new_groups_start_at_the_oldest_message() {
    let b = Backend::new();
    let bus = b.open(10_000).await;
    bus.publish(&[Message::from(&created("e0", "d", 0))]).await.unwrap();
    let mut one = bus.subscribe("one", Topic::DocumentEdits).await.unwrap();
    let mut two = bus.subscribe("two", Topic::DocumentEdits).await.unwrap();
    let a = take(&mut one, 1).await;
    one.commit(&a[0]).await.unwrap();
    let b2 = take(&mut two, 1).await;
    assert_eq!(a[0].event, b2[0].event);
    let err = bus.subscribe("one", Topic::DocumentEdits).await.unwrap_err();
    assert!(err.to_string().contains("already consumes"), "{err}");
    // Another topic is another log.
    let mut n = bus.subscribe("one", Topic::Notifications).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), n.next_batch(1)).await.is_err());
}

#[tokio::test]
async fn a_full_topic_makes_publishers_wait_until_the_slowest_group_commits() {
    let b = Backend::new();
    let bus = b.open(4).await;
    let mut c = bus.subscribe("slow", Topic::DocumentEdits).await.unwrap();
    let four: Vec<Message> = (0..4).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
    bus.publish(&four).await.unwrap();
    let bus2 = bus.clone();
    let blocked = tokio::spawn(async move { bus2.publish(&[Message::from(&created("e4", "d", 4))]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "a publish beyond capacity waits");
    let got = take(&mut c, 2).await;
    c.commit(&got[1]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), blocked).await.expect("room frees the publisher").unwrap().unwrap();
    let rest = take(&mut c, 3).await;
    assert_eq!(rest.last().unwrap().event.as_ref().unwrap().id, "e4");
}

#[tokio::test]
async fn unreadable_messages_are_delivered_with_the_reason() {
    let b = Backend::new();
    let bus = b.open(100).await;
    let mut c = bus.subscribe("g", Topic::Notifications).await.unwrap();
    let future = br#"{"schema":99,"id":"x","topic":"notifications","key":"d","at_ms":1,"event":{}}"#;
    bus.publish(&[
        Message { topic: Topic::Notifications, key: "d".into(), payload: b"not json".to_vec() },
        Message { topic: Topic::Notifications, key: "d".into(), payload: future.to_vec() },
    ])
    .await
    .unwrap();
    let got = take(&mut c, 2).await;
    assert!(got[0].event.as_ref().unwrap_err().contains("not an event envelope"));
    assert!(got[1].event.as_ref().unwrap_err().contains("schema version 99"));
    assert_eq!(got[1].raw, future.to_vec());
}

/// An outbox in memory whose `mark_sent` can fail once (a crash between publishing and
/// marking).
#[derive(Clone, Default)]
struct MemOutbox {
    rows: Arc<std::sync::Mutex<Vec<(i64, Message)>>>,
    sent: Arc<AtomicI64>,
    fail_mark: Arc<AtomicBool>,
}

impl Outbox for MemOutbox {
    async fn unsent(&self, limit: u32) -> Result<Vec<(i64, Message)>, String> {
        let sent = self.sent.load(Ordering::SeqCst);
        Ok(self.rows.lock().unwrap().iter().filter(|(s, _)| *s > sent).take(limit as usize).cloned().collect())
    }

    async fn mark_sent(&self, seq: i64) -> Result<(), String> {
        if self.fail_mark.swap(false, Ordering::SeqCst) {
            return Err("crashed before marking".into());
        }
        self.sent.store(seq, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn the_relay_resends_after_a_crash_and_consumers_deduplicate_by_id() {
    let b = Backend::new();
    let bus = b.open(10_000).await;
    let outbox = MemOutbox::default();
    for i in 0..300 {
        outbox.rows.lock().unwrap().push((i + 1, Message::from(&created(&format!("e{i}"), "d", i as usize))));
    }
    let relay = Relay::new(outbox.clone(), bus.clone(), Arc::default(), Duration::from_secs(1));
    outbox.fail_mark.store(true, Ordering::SeqCst);
    assert!(relay.drain().await.is_err(), "the first batch is published, then the relay 'crashes'");
    assert_eq!(relay.drain().await.unwrap(), 300, "everything unsent goes, the first batch again");
    assert_eq!(relay.drain().await.unwrap(), 0);
    let mut c = bus.subscribe("g", Topic::DocumentEdits).await.unwrap();
    let got = take(&mut c, 300 + 256).await;
    let mut seen = HashSet::new();
    let mut effects = Vec::new();
    for d in &got {
        let e = d.event.as_ref().unwrap();
        if seen.insert(e.id.clone()) {
            effects.push(e.id.clone());
        }
    }
    assert_eq!(effects, (0..300).map(|i| format!("e{i}")).collect::<Vec<_>>(), "in order, each once");
}
