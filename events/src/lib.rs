//! Tandem's event bus: typed, versioned events on four topics (`document-edits`,
//! `notifications`, `exports`, `analytics`), published in order per document and consumed
//! by groups at least once.
//!
//! One job: carry events. [`schema`] defines them; [`Bus`] publishes and subscribes on the
//! in-process backend ([`local`], the default: a durable log in the data directory) or on
//! Kafka (feature `kafka`); [`relay`] moves the control plane's outbox rows onto the bus.
//! What consumers do with the events lives in the workers.
//!
//! Delivery is at least once: a consumer commits an offset after its work is done, and a
//! crash before the commit redelivers. Consumers make the effect exactly once by the
//! event's id ([`schema::Envelope::id`]).

pub mod feed;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod local;
pub mod relay;
pub mod schema;

use std::collections::BTreeMap;

pub use schema::{Change, Envelope, Event, SCHEMA_VERSION, Topic};

/// `[events.kafka]` in the configuration.
#[derive(Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,...` of the brokers.
    pub brokers: String,
    /// Put before each topic's name (`tandem.` makes `tandem.document-edits`).
    pub topic_prefix: String,
    /// Partitions of each topic created at start (existing topics are left as they are).
    pub partitions: i32,
    /// Replicas of each topic created at start.
    pub replication: i32,
    /// Time allowed for one publish, ms.
    pub publish_timeout_ms: u64,
    /// Messages librdkafka queues locally before a publish waits.
    pub queue_messages: u32,
    /// A consumer not heard from for this long (a crashed worker) leaves its group, and
    /// its partitions go to the others, ms.
    pub session_timeout_ms: u32,
    /// How often each consumer group's lag (for `/metrics`) is read from the brokers, ms.
    pub lag_interval_ms: u64,
    /// More librdkafka properties for the producer (`[events.kafka.producer]`, e.g.
    /// `"linger.ms" = "20"`), set after Tandem's own. The ones Tandem's guarantees rest on
    /// (idempotence, `acks`, the brokers) cannot be changed here.
    pub producer: BTreeMap<String, String>,
    /// More librdkafka properties for the consumers (`[events.kafka.consumer]`); offsets'
    /// commits, the group and the brokers cannot be changed here.
    pub consumer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// The extra properties' values are left out: they may hold credentials (`sasl.password`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("queue_messages", &self.queue_messages)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("lag_interval_ms", &self.lag_interval_ms)
            .field("producer", &self.producer.keys().collect::<Vec<_>>())
            .field("consumer", &self.consumer.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// librdkafka properties that `[events.kafka.producer]` and `[events.kafka.consumer]` may
/// not set: delivery guarantees rest on them.
pub const KAFKA_FIXED_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "tandem.".into(),
            partitions: 12,
            replication: 3,
            publish_timeout_ms: 30_000,
            queue_messages: 100_000,
            session_timeout_ms: 10_000,
            lag_interval_ms: 5_000,
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend's storage or broker failed.
    #[error("event bus storage: {0}")]
    Storage(String),
    /// The configuration is wrong.
    #[error("event bus configuration: {0}")]
    Config(String),
}

/// The bus's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One message to publish: an envelope's JSON, with its topic and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: Topic,
    /// The partition key (the document id).
    pub key: String,
    /// The envelope's JSON.
    pub payload: Vec<u8>,
}

impl From<&Envelope> for Message {
    fn from(e: &Envelope) -> Self {
        Self { topic: e.topic, key: e.key.clone(), payload: e.to_json() }
    }
}

/// One message as a consumer receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its topic.
    pub topic: Topic,
    /// Its partition (always 0 in process).
    pub partition: i32,
    /// Its offset in the partition: commit it when done.
    pub offset: i64,
    /// The partition key (the document id).
    pub key: String,
    /// The event, or why it cannot be read (the consumer dead-letters it).
    pub event: std::result::Result<Envelope, String>,
    /// The bytes as published.
    pub raw: Vec<u8>,
}

impl Delivery {
    pub(crate) fn new(topic: Topic, partition: i32, offset: i64, key: String, raw: Vec<u8>) -> Self {
        let event = Envelope::from_json(&raw);
        Self { topic, partition, offset, key, event, raw }
    }
}

/// The bus: in process, or Kafka.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Bus {
    /// The in-process backend.
    Local(local::LocalBus),
    /// Kafka.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaBus),
}

impl Bus {
    /// Publishes `events` durably (each to its topic, in the given order per document);
    /// waits while the bus is full.
    pub async fn publish(&self, messages: &[Message]) -> Result<()> {
        match self {
            Self::Local(b) => b.publish(messages).await,
            #[cfg(feature = "kafka")]
            Self::Kafka(b) => b.publish(messages).await,
        }
    }

    /// A consumer of `topic` in `group`, starting at the group's committed offset.
    pub async fn subscribe(&self, group: &str, topic: Topic) -> Result<Consumer> {
        match self {
            Self::Local(b) => Ok(Consumer::Local(b.subscribe(group, topic).await?)),
            #[cfg(feature = "kafka")]
            Self::Kafka(b) => Ok(Consumer::Kafka(b.subscribe(group, topic)?)),
        }
    }

    /// How far behind each (group, topic) is, in messages: every group in process; on
    /// Kafka, the groups this process subscribed, as last read from the brokers.
    pub fn lag(&self) -> Vec<(String, Topic, u64)> {
        match self {
            Self::Local(b) => b.lag(),
            #[cfg(feature = "kafka")]
            Self::Kafka(b) => b.lag(),
        }
    }

    /// The backend's name (for logs and metrics).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Local(_) => "in-process",
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => "kafka",
        }
    }
}

/// A group's consumer of one topic.
#[derive(Debug)]
#[non_exhaustive]
pub enum Consumer {
    /// In process.
    Local(local::LocalConsumer),
    /// Kafka.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConsumer),
}

impl Consumer {
    /// Waits for messages; returns at least one and at most `max`, in order.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        match self {
            Self::Local(c) => c.next_batch(max).await,
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => c.next_batch(max).await,
        }
    }

    /// Like [`Consumer::next_batch`], but returns nothing when no message came by `deadline`.
    pub async fn next_batch_until(&mut self, max: usize, deadline: tokio::time::Instant) -> Result<Vec<Delivery>> {
        match self {
            Self::Local(c) => c.next_batch_until(max, deadline).await,
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => c.next_batch_until(max, deadline).await,
        }
    }

    /// Marks `delivery` and everything before it in its partition as done.
    pub async fn commit(&mut self, delivery: &Delivery) -> Result<()> {
        match self {
            Self::Local(c) => c.commit(delivery.offset).await,
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => c.commit(delivery),
        }
    }
}
