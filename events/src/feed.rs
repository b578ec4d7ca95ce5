//! The change feed's publisher: durable batches of ops from the storage threads, published
//! to `document-edits` as [`Event::Edited`], one event per document per batch.
//!
//! The storage threads offer batches through [`FeedPublisher`] (a bounded queue; when full,
//! they catch up from the op log later, see `tandem_net::feed`). The publisher task coalesces
//! what is queued, publishes it, then records each document's last published revision (its
//! cursor) in the metadata store, where the storage threads read it back after a restart. A
//! crash between the publish and the cursor re-publishes: feed consumers deduplicate by
//! revision (an event's `from_rev..=to_rev`), which is also its id.
//!
//! In a cluster ([`FeedPublisher::shared`]) the cursors are the cluster's, shared by its
//! nodes: a document that moved here was published by the node it came from, so the storage
//! thread that loads it asks ([`tandem_net::feed::FeedSink::published_anywhere`]) and a task
//! here looks the cursor up, a batch of documents per statement, instead of re-publishing the
//! document's whole history from this node's cursor.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_storage::LogOp;
use tokio::sync::mpsc;

use crate::schema::{Change, Envelope, Event};
use crate::{Bus, Message};

/// Batches the queue holds before storage threads fall back to catching up.
pub const QUEUE: usize = 16_384;

/// Most batches published in one round.
const ROUND_BATCHES: usize = 1024;

/// How long a round waits for more batches after its first.
const LINGER: Duration = Duration::from_millis(20);

/// How often cursors are saved (a crash re-publishes at most this much; consumers
/// deduplicate by revision).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Most bytes of deltas carried in one event (about; an op larger than this goes alone in
/// its event).
pub const MAX_CHANGES_BYTES: usize = 64 * 1024;

/// Where cursors are kept: the control plane's store, or a cluster's shared table.
pub trait Cursors: Send + Sync + 'static {
    /// Raises the cursors given (never lowers one).
    fn save(&self, cursors: &[(String, u64)]) -> impl Future<Output = Result<(), String>> + Send;
    /// The cursors of `docs` (a document never published is left out).
    fn get(&self, docs: &[String]) -> impl Future<Output = Result<Vec<(String, u64)>, String>> + Send;
}

/// Documents a shared publisher is looking up at once, at most (more wait for room).
const LOOKUP_QUEUE: usize = 4096;

/// Documents looked up per statement, at most.
const LOOKUP_BATCH: usize = 512;

/// By document: `None` while being looked up, then the cursor found (0: none), until taken.
type Answers = Arc<Mutex<HashMap<String, Option<u64>>>>;

/// A shared publisher's lookups: where documents are asked for, and the answers not taken yet.
#[derive(Debug)]
struct Lookups {
    tx: mpsc::Sender<String>,
    answers: Answers,
}

/// The feed's counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Ops published.
    pub ops: AtomicU64,
    /// Events published.
    pub events: AtomicU64,
    /// Offers refused because the queue was full (each makes a storage thread catch up).
    pub refused: AtomicU64,
}

/// The storage threads' end (cheap to clone).
#[derive(Clone, Debug)]
pub struct FeedPublisher {
    tx: mpsc::Sender<Vec<LogOp>>,
    published: Arc<Mutex<HashMap<String, u64>>>,
    stats: Arc<FeedStats>,
    /// With cursors shared by a cluster's nodes.
    lookups: Option<Arc<Lookups>>,
}

/// The publisher task's end.
#[derive(Debug)]
pub struct FeedTask {
    rx: mpsc::Receiver<Vec<LogOp>>,
    published: Arc<Mutex<HashMap<String, u64>>>,
    stats: Arc<FeedStats>,
    lookups: Option<(mpsc::Receiver<String>, Answers)>,
}

impl FeedPublisher {
    /// A publisher knowing `cursors` (loaded from the store before the data plane starts),
    /// the only node publishing its documents.
    pub fn new(cursors: Vec<(String, u64)>) -> (Self, FeedTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let published = Arc::new(Mutex::new(cursors.into_iter().collect()));
        let stats = Arc::new(FeedStats::default());
        let publisher = Self { tx, published: Arc::clone(&published), stats: Arc::clone(&stats), lookups: None };
        (publisher, FeedTask { rx, published, stats, lookups: None })
    }

    /// A publisher among a cluster's nodes: a document's cursor is looked up in the shared
    /// store (the [`Cursors`] given to [`FeedTask::run`]) when the document is loaded here.
    pub fn shared() -> (Self, FeedTask) {
        let (publisher, mut task) = Self::new(Vec::new());
        let (tx, rx) = mpsc::channel(LOOKUP_QUEUE);
        let answers = Answers::default();
        task.lookups = Some((rx, Arc::clone(&answers)));
        (Self { lookups: Some(Arc::new(Lookups { tx, answers })), ..publisher }, task)
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<FeedStats> {
        Arc::clone(&self.stats)
    }
}

impl tandem_net::feed::FeedSink for FeedPublisher {
    fn offer(&self, _doc: &str, ops: &[LogOp]) -> bool {
        let sent = self.tx.try_send(ops.to_vec()).is_ok();
        if !sent {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    fn published(&self, doc: &str) -> u64 {
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(doc).copied().unwrap_or(0)
    }

    fn published_anywhere(&self, doc: &str) -> Option<u64> {
        let Some(lookups) = &self.lookups else { return Some(self.published(doc)) };
        let mut answers = lookups.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match answers.get(doc) {
            Some(Some(shared)) => {
                let shared = *shared;
                answers.remove(doc);
                // This node's own cursor may be ahead of the saved one (saved once a second).
                Some(shared.max(self.published(doc)))
            }
            Some(None) => None,
            None => {
                // No room: asked again on the storage thread's next call.
                if lookups.tx.try_send(doc.to_owned()).is_ok() {
                    answers.insert(doc.to_owned(), None);
                }
                None
            }
        }
    }
}

/// Answers a shared publisher's lookups, a batch per statement, until the publishers are gone.
async fn look_up<C: Cursors>(mut rx: mpsc::Receiver<String>, answers: Answers, cursors: C) {
    let mut docs = Vec::new();
    while rx.recv_many(&mut docs, LOOKUP_BATCH).await > 0 {
        let mut wait = Duration::from_millis(100);
        let found: HashMap<String, u64> = loop {
            match cursors.get(&docs).await {
                Ok(found) => break found.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(
                        "change feed: looking up {} documents' cursors: {e}; retrying in {wait:?}",
                        docs.len()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        let mut answers = answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for doc in docs.drain(..) {
            let cursor = found.get(&doc).copied().unwrap_or(0);
            answers.insert(doc, Some(cursor));
        }
    }
}

/// The events for consecutive ops of one document: one per run of ops whose deltas fit in
/// [`MAX_CHANGES_BYTES`] (a larger op goes alone), so every event carries its changes and a
/// consumer that keeps the text (search) never has to read the document back.
pub fn edited(ops: &[LogOp]) -> Vec<Envelope> {
    let mut events = Vec::new();
    let mut start = 0;
    while start < ops.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < ops.len() {
            let size = ops[end].commit.delta.approx_bytes();
            if end > start && bytes + size > MAX_CHANGES_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        events.push(edited_run(&ops[start..end]));
        start = end;
    }
    events
}

/// One event for `ops` (at least one).
fn edited_run(ops: &[LogOp]) -> Envelope {
    let (first, last) = (&ops[0], &ops[ops.len() - 1]);
    let mut authors: Vec<String> = Vec::new();
    let (mut inserted, mut deleted) = (0u64, 0u64);
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        let author = op.commit.author.to_string();
        if !authors.contains(&author) {
            authors.push(author.clone());
        }
        inserted += op.commit.delta.insert_len() as u64;
        deleted += op.commit.delta.delete_len() as u64;
        let delta = serde_json::to_value(&op.commit.delta).expect("deltas serialize");
        changes.push(Change { rev: op.commit.rev, author, at_ms: op.time_ms, delta });
    }
    let doc = first.doc.to_string();
    let (from_rev, to_rev) = (first.commit.rev, last.commit.rev);
    let event = Event::Edited {
        doc: doc.clone(),
        from_rev,
        to_rev,
        authors,
        ops: ops.len() as u64,
        inserted,
        deleted,
        changes: Some(changes),
    };
    let at = i64::try_from(last.time_ms).unwrap_or(i64::MAX);
    Envelope::new(format!("{doc}@{from_rev}-{to_rev}"), at, event)
}

impl FeedTask {
    /// Publishes until the publishers are gone. Bus or store failures are retried with
    /// backoff (the queue fills meanwhile and the storage threads catch up later).
    pub async fn run<C: Cursors + Clone>(mut self, bus: Bus, cursors: C) {
        if let Some((rx, answers)) = self.lookups.take() {
            tokio::spawn(look_up(rx, answers, cursors.clone()));
        }
        let mut buffer: Vec<Vec<LogOp>> = Vec::new();
        let mut unsaved: HashMap<String, u64> = HashMap::new();
        let mut last_save = std::time::Instant::now();
        loop {
            // Waits at most a save period, so that the last cursors are saved when the
            // edits stop.
            let got = match tokio::time::timeout(SAVE_EVERY, self.rx.recv_many(&mut buffer, ROUND_BATCHES)).await {
                Ok(0) => {
                    save(&cursors, &mut unsaved).await;
                    break;
                }
                Ok(n) => n,
                Err(_) => 0,
            };
            // Lingers to publish more at once: each publish is a transaction (in process) or
            // a round trip to the brokers (Kafka), and at typing rates most batches are one op.
            let linger = tokio::time::Instant::now() + LINGER;
            let mut closed = false;
            while got > 0 && buffer.len() < ROUND_BATCHES {
                let room = ROUND_BATCHES - buffer.len();
                match tokio::time::timeout_at(linger, self.rx.recv_many(&mut buffer, room)).await {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if got == 0 {
                if !unsaved.is_empty() {
                    save(&cursors, &mut unsaved).await;
                    last_save = std::time::Instant::now();
                }
                continue;
            }
            // One event per document: its runs in this buffer are consecutive revisions,
            // except after a gap the storage thread will fill (then they stay separate).
            let mut runs: Vec<Vec<LogOp>> = Vec::new();
            for batch in buffer.drain(..) {
                match runs.iter_mut().rev().find(|r| r[0].doc == batch[0].doc) {
                    Some(run) if run.last().map(|o| o.commit.rev + 1) == batch.first().map(|o| o.commit.rev) => {
                        run.extend(batch);
                    }
                    _ => runs.push(batch),
                }
            }
            let envelopes: Vec<Envelope> = runs.iter().flat_map(|r| edited(r)).collect();
            let messages: Vec<Message> = envelopes.iter().map(Message::from).collect();
            let mut wait = Duration::from_millis(100);
            while let Err(e) = bus.publish(&messages).await {
                tracing::warn!("change feed: publishing: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            self.stats.events.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
            self.stats.ops.fetch_add(runs.iter().map(|r| r.len() as u64).sum(), Ordering::Relaxed);
            {
                let mut published = self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for run in &runs {
                    if let Some(last) = run.last() {
                        let doc = last.doc.to_string();
                        let cursor = published.entry(doc.clone()).or_default();
                        *cursor = (*cursor).max(last.commit.rev);
                        let head = unsaved.entry(doc).or_default();
                        *head = (*head).max(last.commit.rev);
                    }
                }
            }
            // Saved in bulk, once a second: one write per document per batch was the feed's
            // largest cost on a busy server.
            if last_save.elapsed() >= SAVE_EVERY || closed {
                save(&cursors, &mut unsaved).await;
                last_save = std::time::Instant::now();
            }
            if closed {
                break;
            }
        }
    }
}

/// Saves the cursors raised since the last save. A failure is logged, not retried: a cursor
/// lost makes a later load re-publish (consumers deduplicate), never lose.
async fn save<C: Cursors>(cursors: &C, unsaved: &mut HashMap<String, u64>) {
    if unsaved.is_empty() {
        return;
    }
    let heads: Vec<(String, u64)> = unsaved.drain().collect();
    if let Err(e) = cursors.save(&heads).await {
        tracing::warn!("change feed: saving cursors: {e}");
    }
}
