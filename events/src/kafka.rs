//! The Kafka backend (feature `kafka`): rdkafka with its bundled librdkafka.
//!
//! Producer: idempotent (`enable.idempotence`, `acks=all`), keyed by document id, so one
//! document's events land on one partition in order; `publish` returns when the brokers have
//! every message, and waits (never drops) while librdkafka's local queue is full. Consumers:
//! consumer groups with automatic commits off; the offset after a delivery is committed only
//! when the worker says the work is done, so a crash redelivers (at least once).
//!
//! Lag: a thread of its own ([`watch_lag`]) asks the brokers, every
//! `lag_interval_ms`, for each subscribed group's committed offsets and each partition's
//! high watermark, with consumers that never join the group (so they never rebalance and
//! can never hold up the workers' own consumers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::schema::Topic;
use crate::{Delivery, Error, KafkaConfig, Message, Result};

/// The bus on Kafka.
#[derive(Clone)]
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    lag: Arc<Lag>,
}

/// The (group, topic) pairs subscribed in this process, and their lag as last read.
#[derive(Debug, Default)]
struct Lag {
    watched: Mutex<BTreeSet<(String, Topic)>>,
    read: Mutex<BTreeMap<(String, Topic), u64>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").field("config", &self.config).finish_non_exhaustive()
    }
}

fn kafka(e: KafkaError) -> Error {
    Error::Storage(format!("kafka: {e}"))
}

impl KafkaBus {
    /// Connects and creates the topics that do not exist yet.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        for (section, extra) in [("producer", &config.producer), ("consumer", &config.consumer)] {
            if let Some(key) = extra.keys().find(|k| crate::KAFKA_FIXED_PROPERTIES.contains(&k.as_str())) {
                return Err(Error::Config(format!(
                    "[events.kafka.{section}] may not set {key:?}: Tandem's delivery guarantees rest on it"
                )));
            }
        }
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.publish_timeout_ms.to_string())
            .set("queue.buffering.max.messages", config.queue_messages.max(1).to_string());
        for (k, v) in &config.producer {
            producer.set(k, v);
        }
        let producer: FutureProducer = producer.create().map_err(kafka)?;
        // The admin client connects as the producer does (TLS, SASL in its properties).
        let mut admin = ClientConfig::new();
        admin.set("bootstrap.servers", &config.brokers);
        for (k, v) in &config.producer {
            admin.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> = admin.create().map_err(kafka)?;
        let names: Vec<String> = Topic::ALL.iter().map(|t| format!("{}{}", config.topic_prefix, t.name())).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, config.partitions.max(1), TopicReplication::Fixed(config.replication.max(1))))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&topics, &options).await.map_err(kafka)? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(Error::Storage(format!("kafka: creating topic {topic}: {code}"))),
            }
        }
        let lag = Arc::new(Lag::default());
        let watch = (config.clone(), Arc::downgrade(&lag));
        std::thread::Builder::new()
            .name("tandem-kafka-lag".into())
            .spawn(move || watch_lag(&watch.0, &watch.1))
            .map_err(|e| Error::Storage(format!("kafka: starting the lag thread: {e}")))?;
        Ok(Self { config, producer, lag })
    }

    /// How far behind each group subscribed in this process is, per topic, in messages
    /// (over all the topic's partitions, whichever process holds them), as last read; a
    /// group appears once its first reading is in.
    pub fn lag(&self) -> Vec<(String, Topic, u64)> {
        let read = self.lag.read.lock().unwrap_or_else(PoisonError::into_inner);
        read.iter().map(|((g, t), n)| (g.clone(), *t, *n)).collect()
    }

    fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.config.topic_prefix, topic.name())
    }

    /// Publishes `messages`; returns when the brokers acknowledged all of them.
    pub async fn publish(&self, messages: &[Message]) -> Result<()> {
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        let started = tokio::time::Instant::now();
        // All queued first, in order (idempotence keeps a partition's order across retries),
        // so librdkafka sends them in batches; then awaited. (`FutureProducer::send` is lazy:
        // awaiting each in turn sent one message per round trip, ~160 messages/s on tansu.)
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let topic = self.topic_name(m.topic);
            let mut record = FutureRecord::to(&topic).key(m.key.as_bytes()).payload(m.payload.as_slice());
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break pending.push(delivery),
                    // Backpressure: the local queue is full until the brokers take some.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if started.elapsed() < timeout =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(kafka(e)),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(kafka(e)),
                Err(_) => return Err(Error::Storage("kafka: the producer went away".into())),
            }
        }
        Ok(())
    }

    /// A consumer of `topic` in `group`, from the group's committed offsets (the oldest kept
    /// message for a new group).
    pub fn subscribe(&self, group: &str, topic: Topic) -> Result<KafkaConsumer> {
        let mut consumer = ClientConfig::new();
        consumer
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.config.session_timeout_ms.to_string());
        for (k, v) in &self.config.consumer {
            consumer.set(k, v);
        }
        let consumer: StreamConsumer = consumer.create().map_err(kafka)?;
        let name = self.topic_name(topic);
        consumer.subscribe(&[&name]).map_err(kafka)?;
        self.lag.watched.lock().unwrap_or_else(PoisonError::into_inner).insert((group.to_owned(), topic));
        Ok(KafkaConsumer { consumer, topic, name })
    }
}

/// Reads the watched groups' lag every `lag_interval_ms` until the bus is dropped. Runs on a
/// thread of its own: librdkafka's calls here block (up to a timeout each).
fn watch_lag(config: &KafkaConfig, bus: &Weak<Lag>) {
    let every = Duration::from_millis(config.lag_interval_ms.max(10));
    let mut readers: HashMap<String, BaseConsumer> = HashMap::new();
    loop {
        std::thread::sleep(every);
        let Some(lag) = bus.upgrade() else { return };
        let watched = lag.watched.lock().unwrap_or_else(PoisonError::into_inner).clone();
        drop(lag);
        for (group, topic) in watched {
            let name = format!("{}{}", config.topic_prefix, topic.name());
            let reader = match readers.entry(group.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // Never subscribes or assigns: it only asks for the group's offsets. It
                    // connects as the consumers do (TLS, SASL in their properties).
                    let mut reader = ClientConfig::new();
                    reader.set("bootstrap.servers", &config.brokers);
                    for (k, v) in &config.consumer {
                        reader.set(k, v);
                    }
                    let created =
                        reader.set("group.id", &group).set("enable.auto.commit", "false").create::<BaseConsumer>();
                    match created {
                        Ok(c) => e.insert(c),
                        Err(err) => {
                            tracing::warn!("kafka lag of group {group}: {err}");
                            continue;
                        }
                    }
                }
            };
            let read = group_lag(reader, &name);
            if let Err(e) = &read {
                tracing::debug!("kafka lag of group {group} on {name}: {e}");
            }
            let Some(lag) = bus.upgrade() else { return };
            let mut map = lag.read.lock().unwrap_or_else(PoisonError::into_inner);
            match read {
                Ok(n) => map.insert((group, topic), n),
                // Unknown now: no stale number is shown.
                Err(_) => map.remove(&(group, topic)),
            };
        }
    }
}

/// The messages in `topic` after `reader`'s group's committed offsets, over every partition
/// (a partition without a commit counts from its oldest kept message).
fn group_lag(reader: &BaseConsumer, topic: &str) -> Result<u64> {
    let timeout = Duration::from_secs(5);
    let metadata = reader.fetch_metadata(Some(topic), timeout).map_err(kafka)?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed = reader.committed_offsets(list, timeout).map_err(kafka)?;
    let mut total = 0u64;
    for p in partitions {
        let (low, high) = reader.fetch_watermarks(topic, p, timeout).map_err(kafka)?;
        let from = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        total += u64::try_from(high - from).unwrap_or(0);
    }
    Ok(total)
}

/// A group's consumer of one topic on Kafka.
pub struct KafkaConsumer {
    consumer: StreamConsumer,
    topic: Topic,
    name: String,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Waits for at least one message and returns up to `max` of those already fetched.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let first = self.consumer.recv().await.map_err(kafka)?;
        let first = self.delivery(&first);
        self.more(vec![first], max).await
    }

    /// Like [`KafkaConsumer::next_batch`], but returns nothing when no message came by
    /// `deadline`.
    pub async fn next_batch_until(&mut self, max: usize, deadline: tokio::time::Instant) -> Result<Vec<Delivery>> {
        // `recv` is cancel safe: a message is taken from the queue only when it returns it.
        let first = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
            Ok(first) => first.map_err(kafka)?,
            Err(_) => return Ok(Vec::new()),
        };
        let first = self.delivery(&first);
        self.more(vec![first], max).await
    }

    /// Adds to `out` what is already fetched, up to `max` messages in all.
    async fn more(&self, mut out: Vec<Delivery>, max: usize) -> Result<Vec<Delivery>> {
        while out.len() < max.max(1) {
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(m)) => out.push(self.delivery(&m)),
                Ok(Err(e)) => return Err(kafka(e)),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn delivery(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        Delivery::new(self.topic, m.partition(), m.offset(), key, m.payload().unwrap_or_default().to_vec())
    }

    /// Commits the offset after `delivery` in its partition.
    pub fn commit(&mut self, delivery: &Delivery) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.name, delivery.partition, Offset::Offset(delivery.offset + 1))
            .map_err(kafka)?;
        self.consumer.commit(&list, CommitMode::Async).map_err(kafka)
    }
}
