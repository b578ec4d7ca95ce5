//! Tandem's workers: what consumes the bus.
//!
//! One job: turn events into effects, each once. [`run`] is the runtime every worker shares:
//! it reads its topic in its consumer group, calls the worker for each event, retries
//! transient failures with backoff, sends what it cannot process (an unreadable message, a
//! permanent failure, or a transient one that outlives every retry) to the dead-letter table
//! with the reason, and commits the offset only after that, so a crash redelivers and
//! nothing is dropped in silence. Workers make the effect exactly once by the event's id
//! ([`tandem_control::Store::claim_event`]). [`notify`] is the notification worker (email),
//! [`export`] the export worker (PDF and DOCX files).
//!
//! `tandem serve` runs every worker on the control plane's runtime; they never touch a core.

pub mod analytics;
pub mod export;
pub mod notify;
pub mod search;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_control::Store;
use tandem_control::store::DeadLetter;
use tandem_events::{Bus, Delivery, Envelope, Topic};

/// Why an event could not be processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It may work later (a server down, a timeout): retried with backoff.
    Transient(String),
    /// It never will (an invalid address): dead-lettered at once.
    Permanent(String),
}

/// A worker: one consumer group on one topic.
pub trait Worker: Send + 'static {
    /// Its consumer group, and its name in metrics and dead letters.
    fn group(&self) -> &'static str;
    /// The topic it reads.
    fn topic(&self) -> Topic;
    /// Does the event's effect (idempotently: it may see an event again after a crash).
    fn handle(&mut self, event: &Envelope) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Handles a batch of events, giving each one's result in order. The default handles them
    /// one after the other; a worker whose events are independent and wait on the network
    /// (email) handles several at once. A transient failure is retried with [`Worker::handle`].
    fn handle_all<'a>(
        &'a mut self,
        events: &'a [&'a Envelope],
    ) -> impl Future<Output = Vec<Result<(), Failure>>> + Send + 'a {
        async move {
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                results.push(self.handle(event).await);
            }
            results
        }
    }
    /// Makes the effects of the events handled so far durable (a worker that batches its
    /// writes, like search, writes them here). The batch's offsets are committed only after
    /// it succeeds; a failure is retried with backoff.
    fn flush(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        std::future::ready(Ok(()))
    }
    /// Events read per batch (at most).
    fn batch(&self) -> usize {
        64
    }
    /// How long a batch keeps collecting events after its first one arrives (a worker whose
    /// flush is costly, like search's index commit, trades this much latency for fewer
    /// flushes); zero takes what is there.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
}

/// How failures are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts before a transiently failing event is dead-lettered.
    pub attempts: u32,
    /// The first wait; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 8, backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(30) }
    }
}

/// A worker's counters (for `/metrics`).
#[derive(Debug)]
pub struct WorkerStats {
    /// The worker's group.
    pub group: &'static str,
    /// Events whose effect is done (or was done before).
    pub processed: AtomicU64,
    /// Failed attempts (each retry's failure counts).
    pub failed: AtomicU64,
    /// Attempts after a failure.
    pub retried: AtomicU64,
    /// Messages sent to the dead-letter table.
    pub dead_lettered: AtomicU64,
}

impl WorkerStats {
    /// Zeroed counters for `group`.
    pub fn new(group: &'static str) -> Arc<Self> {
        Arc::new(Self {
            group,
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        })
    }
}

/// Runs `worker` until its task is dropped. Bus or store failures are logged and retried.
pub async fn run<W: Worker>(mut worker: W, bus: Bus, store: Store, stats: Arc<WorkerStats>, policy: RetryPolicy) {
    let (group, topic) = (worker.group(), worker.topic());
    loop {
        let mut consumer = match bus.subscribe(group, topic).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("worker {group}: subscribing to {topic}: {e}; retrying");
                tokio::time::sleep(policy.backoff.max(Duration::from_secs(1))).await;
                continue;
            }
        };
        loop {
            let batch = match consumer.next_batch(worker.batch()).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("worker {group}: reading {topic}: {e}; retrying");
                    tokio::time::sleep(policy.backoff.max(Duration::from_secs(1))).await;
                    break;
                }
            };
            let mut read = batch.len();
            // The last delivery of each partition: committing it covers the ones before it.
            let mut last: Vec<Delivery> = Vec::new();
            handle(&mut worker, batch, &mut last, &store, &stats, policy).await;
            // Lingering: more events into the same flush, until the batch is full or time is up.
            let deadline = tokio::time::Instant::now() + worker.linger();
            let mut failed = false;
            while read < worker.batch() && tokio::time::Instant::now() < deadline {
                match consumer.next_batch_until(worker.batch() - read, deadline).await {
                    Ok(more) if more.is_empty() => break,
                    Ok(more) => {
                        read += more.len();
                        handle(&mut worker, more, &mut last, &store, &stats, policy).await;
                    }
                    Err(e) => {
                        tracing::warn!("worker {group}: reading {topic}: {e}; retrying");
                        failed = true;
                        break;
                    }
                }
            }
            let mut wait = policy.backoff;
            while let Err(e) = worker.flush().await {
                tracing::warn!("worker {group}: flushing: {e}; retrying in {wait:?}");
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(policy.max_backoff);
            }
            // Committed only after the effects (or the dead letters) are stored.
            for delivery in &last {
                let mut wait = policy.backoff;
                while let Err(e) = consumer.commit(delivery).await {
                    tracing::warn!("worker {group}: committing offset {}: {e}; retrying", delivery.offset);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(policy.max_backoff);
                }
            }
            if failed {
                tokio::time::sleep(policy.backoff.max(Duration::from_secs(1))).await;
                break;
            }
        }
    }
}

/// Processes `batch` ([`Worker::handle_all`], then retries) and notes its last delivery per
/// partition in `last`.
async fn handle<W: Worker>(
    worker: &mut W,
    batch: Vec<Delivery>,
    last: &mut Vec<Delivery>,
    store: &Store,
    stats: &WorkerStats,
    policy: RetryPolicy,
) {
    let events: Vec<&Envelope> = batch.iter().filter_map(|d| d.event.as_ref().ok()).collect();
    let mut results = worker.handle_all(&events).await.into_iter();
    drop(events);
    for delivery in &batch {
        let event = match &delivery.event {
            Ok(event) => event,
            Err(why) => {
                dead_letter(worker.group(), delivery, None, why, store, stats, policy).await;
                continue;
            }
        };
        let first = results.next().unwrap_or_else(|| Err(Failure::Transient("not handled".into())));
        settle(worker, delivery, event, first, store, stats, policy).await;
    }
    for d in batch {
        match last.iter_mut().find(|l| l.partition == d.partition) {
            Some(l) => *l = d,
            None => last.push(d),
        }
    }
}

/// Counts the first attempt's `result`; retries a transient failure with backoff, and
/// dead-letters what cannot be done.
async fn settle<W: Worker>(
    worker: &mut W,
    delivery: &Delivery,
    event: &Envelope,
    mut result: Result<(), Failure>,
    store: &Store,
    stats: &WorkerStats,
    policy: RetryPolicy,
) {
    let mut wait = policy.backoff;
    let mut attempt = 1;
    loop {
        match result {
            Ok(()) => {
                stats.processed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(Failure::Permanent(why)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                dead_letter(worker.group(), delivery, Some(&event.id), &why, store, stats, policy).await;
                return;
            }
            Err(Failure::Transient(why)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if attempt >= policy.attempts.max(1) {
                    let why = format!("gave up after {attempt} attempts: {why}");
                    dead_letter(worker.group(), delivery, Some(&event.id), &why, store, stats, policy).await;
                    return;
                }
                tracing::debug!("worker {}: event {} failed ({why}); retrying in {wait:?}", worker.group(), event.id);
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(policy.max_backoff);
                attempt += 1;
                result = worker.handle(event).await;
            }
        }
    }
}

async fn dead_letter(
    group: &str,
    delivery: &Delivery,
    event_id: Option<&str>,
    reason: &str,
    store: &Store,
    stats: &WorkerStats,
    policy: RetryPolicy,
) {
    tracing::warn!("worker {group}: dead-lettering {} offset {}: {reason}", delivery.topic, delivery.offset);
    let letter = DeadLetter {
        worker: group.to_owned(),
        topic: delivery.topic.name().to_owned(),
        partition: delivery.partition,
        offset: delivery.offset,
        event_id: event_id.map(str::to_owned),
        payload: String::from_utf8_lossy(&delivery.raw).into_owned(),
        reason: reason.to_owned(),
    };
    // Until it is stored: the offset is not committed before.
    let mut wait = policy.backoff;
    while let Err(e) = store.dead_letter(&letter).await {
        tracing::warn!("worker {group}: storing a dead letter: {e}; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(policy.max_backoff);
    }
    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
}

/// The workers' and the bus's numbers in Prometheus's text format.
pub fn render_metrics(workers: &[Arc<WorkerStats>], bus: &Bus, relayed: Option<u64>) -> String {
    let mut out = String::new();
    type Read = fn(&WorkerStats) -> u64;
    let counters: [(&str, &str, Read); 4] = [
        ("processed", "Events whose effect is done.", |s| s.processed.load(Ordering::Relaxed)),
        ("failed", "Failed attempts.", |s| s.failed.load(Ordering::Relaxed)),
        ("retried", "Attempts after a failure.", |s| s.retried.load(Ordering::Relaxed)),
        ("dead_lettered", "Messages given up on (the dead_letters table).", |s| {
            s.dead_lettered.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP tandem_worker_{name}_total {help}\n# TYPE tandem_worker_{name}_total counter");
        for s in workers {
            let _ = writeln!(out, "tandem_worker_{name}_total{{worker=\"{}\"}} {}", s.group, value(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP tandem_bus_lag_messages Messages a consumer group has not committed yet.\n\
         # TYPE tandem_bus_lag_messages gauge"
    );
    for (group, topic, lag) in bus.lag() {
        let _ = writeln!(out, "tandem_bus_lag_messages{{group=\"{group}\",topic=\"{topic}\"}} {lag}");
    }
    if let Some(n) = relayed {
        let _ = writeln!(
            out,
            "# HELP tandem_outbox_relayed_total Outbox rows published to the bus.\n\
             # TYPE tandem_outbox_relayed_total counter\ntandem_outbox_relayed_total {n}"
        );
    }
    out
}
