//! The outbox relay: publishes the control plane's outbox rows to the bus in `seq` order,
//! then marks them sent.
//!
//! A row is marked only after the bus has it durably, so a crash at any point re-sends and
//! never loses; consumers deduplicate re-sent events by id. The relay never reads an event's
//! content: a row that a consumer cannot read is still published, and that consumer
//! dead-letters it, so one bad row cannot stop the rows behind it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{Bus, Message};

/// Where the relay reads from (the control plane's store implements it).
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` unsent rows, oldest first: (seq, message).
    fn unsent(&self, limit: u32) -> impl Future<Output = Result<Vec<(i64, Message)>, String>> + Send;
    /// Marks every row up to `seq` as sent.
    fn mark_sent(&self, seq: i64) -> impl Future<Output = Result<(), String>> + Send;
}

/// Rows taken per round.
const BATCH: u32 = 256;

/// What the relay has done (for `/metrics`).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Rows published.
    pub published: AtomicU64,
    /// Rounds that failed (and were retried).
    pub failures: AtomicU64,
}

/// The relay.
#[derive(Debug)]
pub struct Relay<O> {
    outbox: O,
    bus: Bus,
    wake: Arc<Notify>,
    stats: Arc<RelayStats>,
    idle_poll: Duration,
}

impl<O: Outbox> Relay<O> {
    /// A relay from `outbox` to `bus`; `wake` is notified when rows are written (it also
    /// polls every `idle_poll`, for rows written by another process).
    pub fn new(outbox: O, bus: Bus, wake: Arc<Notify>, idle_poll: Duration) -> Self {
        Self::with_stats(outbox, bus, wake, idle_poll, Arc::default())
    }

    /// The same, counting into `stats`.
    pub fn with_stats(outbox: O, bus: Bus, wake: Arc<Notify>, idle_poll: Duration, stats: Arc<RelayStats>) -> Self {
        Self { outbox, bus, wake, stats, idle_poll }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Publishes what is unsent now, one batch at a time; returns how many rows it sent.
    pub async fn drain(&self) -> Result<u64, String> {
        let mut sent = 0;
        loop {
            let rows = self.outbox.unsent(BATCH).await?;
            let Some(&(last, _)) = rows.last() else { return Ok(sent) };
            let n = rows.len();
            let messages: Vec<Message> = rows.into_iter().map(|(_, m)| m).collect();
            self.bus.publish(&messages).await.map_err(|e| e.to_string())?;
            self.outbox.mark_sent(last).await?;
            self.stats.published.fetch_add(n as u64, Ordering::Relaxed);
            sent += n as u64;
            if n < BATCH as usize {
                return Ok(sent);
            }
        }
    }

    /// Runs until the task is dropped: drains whenever woken (or every `idle_poll`), and after
    /// a failure retries with backoff (up to 30 s).
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let woken = self.wake.notified();
            match self.drain().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    let _ = tokio::time::timeout(self.idle_poll, woken).await;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("outbox relay: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
