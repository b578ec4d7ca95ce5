//! The bus conformance suite: what every backend promises (order per key, at least once
//! across a consumer crash, redelivery after a restart, ids to deduplicate by, backpressure,
//! unreadable messages delivered as such, independent groups). The same cases run on the
//! in-process backend (a test each) and, with the `kafka` feature, on a real Kafka-API broker
//! (tansu, started here: the `kafka` module at the end).

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

/// Opens the bus under test (again, for a restart).
trait Backend {
    /// The bus; `capacity` bounds the in-process backend.
    fn open(&self, capacity: u64) -> impl std::future::Future<Output = Bus>;
    /// A fresh name (Kafka's groups outlive a test).
    fn name(&self, base: &str) -> String;
}

struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("events.db")
    }
}

impl Backend for Local {
    async fn open(&self, capacity: u64) -> Bus {
        Bus::Local(LocalBus::open(&self.path(), capacity).await.unwrap())
    }

    fn name(&self, base: &str) -> String {
        base.to_owned()
    }
}

async fn take(consumer: &mut tandem_events::Consumer, n: usize) -> Vec<tandem_events::Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(n - out.len()))
            .await
            .expect("messages arrive")
            .unwrap();
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn order_per_key_across_publishes() {
    order_per_key(&Local::new()).await;
}

async fn order_per_key(b: &impl Backend) {
    let bus = b.open(10_000).await;
    let mut c = bus.subscribe(&b.name("g"), Topic::DocumentEdits).await.unwrap();
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
    for doc in ["a", "b", "c"] {
        let offsets: Vec<i64> = got.iter().filter(|d| d.key == doc).map(|d| d.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "one key, one partition, rising offsets");
    }
}

#[tokio::test]
async fn reads_with_a_deadline_return_nothing_at_the_deadline_and_lose_nothing() {
    reads_until_a_deadline(&Local::new()).await;
}

async fn reads_until_a_deadline(b: &impl Backend) {
    let bus = b.open(10_000).await;
    let mut c = bus.subscribe(&b.name("g"), Topic::DocumentEdits).await.unwrap();
    let msgs: Vec<Message> = (0..3).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
    bus.publish(&msgs).await.unwrap();
    let got = take(&mut c, 3).await;
    let deadline = || tokio::time::Instant::now() + std::time::Duration::from_millis(300);
    assert!(c.next_batch_until(10, deadline()).await.unwrap().is_empty(), "nothing new by the deadline");
    // Many deadlines pass while nothing comes; then what comes is read, none skipped.
    for _ in 0..3 {
        assert!(c.next_batch_until(10, tokio::time::Instant::now()).await.unwrap().is_empty());
    }
    let later: Vec<Message> = (3..6).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
    bus.publish(&later).await.unwrap();
    let mut more = Vec::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while more.len() < 3 && tokio::time::Instant::now() < until {
        more.extend(c.next_batch_until(10 - more.len(), deadline()).await.unwrap());
    }
    let ids: Vec<String> = got.iter().chain(&more).map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, (0..6).map(|i| format!("e{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn uncommitted_messages_come_again_after_a_consumer_crash() {
    let b = Local::new();
    consumer_crash(&b).await;
    let bus = b.open(10_000).await;
    assert_eq!(bus.lag(), vec![("g".into(), Topic::DocumentEdits, 6)]);
}

async fn consumer_crash(b: &impl Backend) {
    let bus = b.open(10_000).await;
    let group = b.name("g");
    let msgs: Vec<Message> = (0..10).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
    bus.publish(&msgs).await.unwrap();
    let mut c = bus.subscribe(&group, Topic::DocumentEdits).await.unwrap();
    let first = take(&mut c, 10).await;
    c.commit(&first[3]).await.unwrap();
    drop(c); // "crashed" after working on 4..9 without committing
    let mut c = bus.subscribe(&group, Topic::DocumentEdits).await.unwrap();
    let again = take(&mut c, 6).await;
    let ids: Vec<_> = again.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, (4..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_keeps_messages_offsets_and_the_next_offset() {
    restart(&Local::new()).await;
}

async fn restart(b: &impl Backend) {
    let bus = b.open(10_000).await;
    let group = b.name("g");
    bus.publish(&(0..5).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect::<Vec<_>>()).await.unwrap();
    let mut c = bus.subscribe(&group, Topic::DocumentEdits).await.unwrap();
    let got = take(&mut c, 5).await;
    c.commit(&got[1]).await.unwrap();
    drop(c);
    if let Bus::Local(local) = &bus {
        local.close().await;
    }
    drop(bus);

    let bus = b.open(10_000).await;
    let mut c = bus.subscribe(&group, Topic::DocumentEdits).await.unwrap();
    let got = take(&mut c, 3).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "e2");
    bus.publish(&[Message::from(&created("e5", "d", 5))]).await.unwrap();
    let next = take(&mut c, 1).await;
    assert_eq!(next[0].offset, got[2].offset + 1, "offsets continue after a restart");
}

#[tokio::test]
async fn groups_are_independent_and_new_groups_start_at_the_oldest_message() {
    let b = Local::new();
    let (bus, _one) = groups(&b).await;
    let err = bus.subscribe("one", Topic::DocumentEdits).await.unwrap_err();
    assert!(err.to_string().contains("already consumes"), "{err}");
}

/// Returns the bus and group "one"'s consumer of document-edits.
async fn groups(b: &impl Backend) -> (Bus, tandem_events::Consumer) {
    let bus = b.open(10_000).await;
    bus.publish(&[Message::from(&created("e0", "d", 0))]).await.unwrap();
    let (g1, g2) = (b.name("one"), b.name("two"));
    let mut one = bus.subscribe(&g1, Topic::DocumentEdits).await.unwrap();
    let mut two = bus.subscribe(&g2, Topic::DocumentEdits).await.unwrap();
    let a = take(&mut one, 1).await;
    one.commit(&a[0]).await.unwrap();
    let b2 = take(&mut two, 1).await;
    assert_eq!(a[0].event, b2[0].event);
    // Another topic is another log.
    let mut n = bus.subscribe(&g1, Topic::Notifications).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), n.next_batch(1)).await.is_err());
    (bus, one)
}

#[tokio::test]
async fn a_full_topic_makes_publishers_wait_until_the_slowest_group_commits() {
    let b = Local::new();
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
    unreadable(&Local::new()).await;
}

async fn unreadable(b: &impl Backend) {
    let bus = b.open(100).await;
    let mut c = bus.subscribe(&b.name("g"), Topic::Notifications).await.unwrap();
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
    relay_crash(&Local::new()).await;
}

async fn relay_crash(b: &impl Backend) {
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
    let mut c = bus.subscribe(&b.name("g"), Topic::DocumentEdits).await.unwrap();
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

#[cfg(feature = "kafka")]
#[path = "support/tansu.rs"]
mod tansu;

#[cfg(feature = "kafka")]
mod kafka {
    //! The same cases on Kafka: a real tansu broker started here (`~/.cache/tandem/tansu`,
    //! installed by the README's test command; `TANDEM_TANSU` names another binary), plus
    //! the producer's backpressure.

    use tandem_events::KafkaConfig;
    use tandem_events::kafka::KafkaBus;

    use super::*;

    use crate::tansu::broker;

    struct Kafka {
        brokers: String,
        prefix: String,
    }

    impl Backend for Kafka {
        async fn open(&self, _capacity: u64) -> Bus {
            let config = KafkaConfig {
                brokers: self.brokers.clone(),
                topic_prefix: self.prefix.clone(),
                partitions: 3,
                replication: 1,
                producer: tansu_producer(),
                ..KafkaConfig::default()
            };
            Bus::Kafka(KafkaBus::connect(config).await.unwrap())
        }

        fn name(&self, base: &str) -> String {
            format!("{}{base}", self.prefix)
        }
    }

    /// One message per record batch: tansu 0.6's storage answers a fetch from an offset
    /// inside a batch with the batches after it only, so a group resuming mid-batch (after a
    /// crash) would skip the rest of that batch. Real Kafka brokers return the whole batch.
    fn tansu_producer() -> std::collections::BTreeMap<String, String> {
        [("batch.num.messages".to_owned(), "1".to_owned())].into()
    }

    #[tokio::test]
    async fn properties_tandem_relies_on_cannot_be_overridden() {
        for (section, key) in
            [("producer", "acks"), ("producer", "enable.idempotence"), ("consumer", "enable.auto.commit")]
        {
            let mut config = KafkaConfig { brokers: "127.0.0.1:1".into(), ..KafkaConfig::default() };
            let extra = if section == "producer" { &mut config.producer } else { &mut config.consumer };
            extra.insert(key.into(), "1".into());
            let err = KafkaBus::connect(config).await.unwrap_err().to_string();
            assert!(err.contains(&format!("[events.kafka.{section}] may not set \"{key}\"")), "{err}");
        }
        // And the extra properties' values stay out of logs.
        let mut config = KafkaConfig::default();
        config.producer.insert("sasl.password".into(), "hunter2".into());
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_kafka_backend_conforms() {
        let broker = broker();
        let brokers = format!("127.0.0.1:{}", broker.port);
        let fresh = |case: &str| Kafka { brokers: brokers.clone(), prefix: format!("{case}.") };
        order_per_key(&fresh("order")).await;
        consumer_crash(&fresh("crash")).await;
        restart(&fresh("restart")).await;
        let _ = groups(&fresh("groups")).await;
        unreadable(&fresh("unreadable")).await;
        relay_crash(&fresh("relay")).await;

        // Backpressure: a local queue of 10 messages; 2,000 published go through, in order.
        let b = fresh("pressure");
        let config = KafkaConfig {
            brokers: b.brokers.clone(),
            topic_prefix: b.prefix.clone(),
            partitions: 3,
            replication: 1,
            queue_messages: 10,
            lag_interval_ms: 100,
            producer: tansu_producer(),
            ..KafkaConfig::default()
        };
        let bus = Bus::Kafka(KafkaBus::connect(config).await.unwrap());
        let msgs: Vec<Message> = (0..2000).map(|i| Message::from(&created(&format!("e{i}"), "d", i))).collect();
        bus.publish(&msgs).await.unwrap();
        let group = b.name("g");
        let mut c = bus.subscribe(&group, Topic::DocumentEdits).await.unwrap();
        let got = take(&mut c, 2000).await;
        let ids: Vec<String> = got.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
        assert_eq!(ids, (0..2000).map(|i| format!("e{i}")).collect::<Vec<_>>());

        // The group's lag, read from the brokers: everything until a commit, then what is
        // after it (one partition holds all of "d"'s messages).
        let lag_becomes = |want: u64| {
            let (bus, group) = (bus.clone(), group.clone());
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let now = bus.lag();
                    if now == vec![(group.clone(), Topic::DocumentEdits, want)] {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "lag {now:?}, expected {want}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        lag_becomes(2000).await;
        c.commit(&got[1499]).await.unwrap();
        lag_becomes(500).await;
        c.commit(&got[1999]).await.unwrap();
        lag_becomes(0).await;
        reads_until_a_deadline(&fresh("deadline")).await;
        drop(broker);
    }
}
