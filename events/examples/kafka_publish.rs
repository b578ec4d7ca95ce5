//! Publishing throughput on Kafka: `cargo run --release -p tandem-events --features kafka
//! --example kafka_publish -- BROKERS [MESSAGES] [PER_PUBLISH] [DOCS]`. Publishes MESSAGES
//! change-feed-sized events (one `Bus::publish` call per PER_PUBLISH, as the feed's rounds
//! do) keyed over DOCS documents, and prints messages/s and each publish's latency.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use tandem_events::kafka::KafkaBus;
use tandem_events::{Bus, Envelope, Event, KafkaConfig, Message};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let per: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(256);
    let docs: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let config = KafkaConfig {
        brokers,
        topic_prefix: format!("bench{}.", std::process::id()),
        partitions: 4,
        replication: 1,
        ..KafkaConfig::default()
    };
    let bus = Bus::Kafka(KafkaBus::connect(config).await.expect("connects"));
    let messages: Vec<Message> = (0..n)
        .map(|i| {
            let doc = format!("doc-{}", i % docs);
            let event = Event::Edited {
                doc: doc.clone(),
                from_rev: i as u64 + 1,
                to_rev: i as u64 + 1,
                authors: vec!["user-1".into()],
                ops: 1,
                inserted: 1,
                deleted: 0,
                changes: None,
            };
            Message::from(&Envelope::new(format!("{doc}@{i}"), 0, event))
        })
        .collect();
    let mut latencies = Vec::new();
    let started = Instant::now();
    for chunk in messages.chunks(per.max(1)) {
        let t = Instant::now();
        bus.publish(chunk).await.expect("publishes");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{n} messages, {per} per publish: {:.0} messages/s; publish ms p50 {:.1} p99 {:.1} max {:.1}",
        n as f64 / secs,
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
