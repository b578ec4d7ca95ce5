//! The change feed's source: every durable batch of ops, offered to a sink after the ack has
//! gone, and caught up from the op log when the sink had no room.
//!
//! Each core's storage thread (never a core) calls [`FeedSource::durable`] after an append is
//! durable and its reply is on the way to the core, so the feed never delays an ack. The sink
//! (the control plane's publisher, a bounded queue) may refuse: then the document is marked
//! behind from that revision, and [`FeedSource::catch_up`] later reads the missing revisions
//! back from the op log, a bounded number per call. The op log's revisions are the feed's
//! offsets: a document loaded after a restart whose last published revision (the sink's
//! cursor) is behind its head is caught up the same way.
//!
//! In a cluster a document also arrives from another node, which published its revisions
//! while it served them: the sink asks the cluster's shared cursors how far that went
//! ([`FeedSink::published_anywhere`]) and only the rest is caught up, once the burst of loads
//! that a hand-over brings is over ([`SETTLE`]), so that catching up never competes with a
//! moved document's first edits. Until then its new ops are held back, as for a document
//! behind, to keep each document's events in revision order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_storage::{LogOp, OpLog};
use tracing::warn;

/// Where the feed goes (the control plane's publisher implements it).
pub trait FeedSink: Send + Sync {
    /// Offers consecutive ops of one document made durable. Must not block; false when there
    /// is no room now (they are read back from the op log later).
    fn offer(&self, doc: &str, ops: &[LogOp]) -> bool;
    /// The last revision of `doc` the feed has published (0: none), as far as this node knows.
    fn published(&self, doc: &str) -> u64;
    /// For a document just loaded: the last revision of it published by any node (a cluster's
    /// nodes share their cursors), or `None` while that is being looked up (ask again later;
    /// the first call starts the lookup). Must not block. Without shared cursors:
    /// [`FeedSink::published`].
    fn published_anywhere(&self, doc: &str) -> Option<u64> {
        Some(self.published(doc))
    }
}

/// How long after its load a document whose cursor was looked up waits before it is caught up.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Ops read back from the op log per [`FeedSource::catch_up`] call, so that catching up never
/// holds the storage thread (and the appends behind it) for long.
pub const CATCH_UP_OPS: u64 = 256;

/// One storage thread's side of the feed.
pub struct FeedSource {
    sink: Arc<dyn FeedSink>,
    /// Documents whose revisions from the value on were not offered.
    behind: BTreeMap<Arc<str>, u64>,
    /// Documents loaded (at the instant given) whose cursor the sink is looking up; nothing of
    /// them is offered meanwhile.
    asking: BTreeMap<Arc<str>, Instant>,
    /// How long a looked-up document waits before it is caught up ([`SETTLE`]).
    settle: Duration,
}

impl std::fmt::Debug for FeedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSource").field("behind", &self.behind).field("asking", &self.asking).finish_non_exhaustive()
    }
}

impl FeedSource {
    /// A source offering to `sink`.
    pub fn new(sink: Arc<dyn FeedSink>) -> Self {
        Self::settling(sink, SETTLE)
    }

    /// A source whose looked-up documents wait `settle` before they are caught up.
    pub fn settling(sink: Arc<dyn FeedSink>, settle: Duration) -> Self {
        Self { sink, behind: BTreeMap::new(), asking: BTreeMap::new(), settle }
    }

    /// Offers a durable append (ops of several documents, each document's in revision order).
    pub fn durable(&mut self, ops: &[LogOp]) {
        let mut start = 0;
        while start < ops.len() {
            let doc = &ops[start].doc;
            let end = start + ops[start..].iter().take_while(|o| &o.doc == doc).count();
            let run = &ops[start..end];
            // Behind already, or its cursor not known yet: the gap covers these too, in order.
            if !self.behind.contains_key(doc) && !self.asking.contains_key(doc) && !self.sink.offer(doc, run) {
                self.behind.insert(Arc::clone(doc), run[0].commit.rev);
            }
            start = end;
        }
    }

    /// `doc` was loaded at revision `head`: what the feed has not published of it is caught up
    /// (after a restart that lost queued feed batches, or, in a cluster, what the node it came
    /// from had not published).
    pub fn loaded(&mut self, doc: &str, head: u64) {
        if self.behind.contains_key(doc) || self.asking.contains_key(doc) {
            return;
        }
        match self.sink.published_anywhere(doc) {
            Some(published) if published < head => {
                self.behind.insert(Arc::from(doc), published + 1);
            }
            Some(_) => {}
            None => {
                self.asking.insert(Arc::from(doc), Instant::now());
            }
        }
    }

    /// Looked-up documents loaded `settle` ago or more whose cursor is known now become
    /// behind from it (everything after it is read back; a cursor at the head leaves nothing).
    fn settle(&mut self) {
        let now = Instant::now();
        let sink = &self.sink;
        let mut known = Vec::new();
        for (doc, since) in &self.asking {
            if now.saturating_duration_since(*since) >= self.settle
                && let Some(published) = sink.published_anywhere(doc)
            {
                known.push((Arc::clone(doc), published));
            }
        }
        for (doc, published) in known {
            self.asking.remove(&doc);
            self.behind.insert(doc, published + 1);
        }
    }

    /// Reads back and offers up to [`CATCH_UP_OPS`] missing ops; true while documents remain
    /// behind (or wait for their cursor).
    pub fn catch_up(&mut self, log: &mut dyn OpLog) -> bool {
        if !self.asking.is_empty() {
            self.settle();
        }
        let mut budget = CATCH_UP_OPS;
        while budget > 0 {
            let Some((doc, from)) = self.behind.first_key_value().map(|(d, f)| (Arc::clone(d), *f)) else {
                return !self.asking.is_empty();
            };
            let head = match log.latest_rev(&doc) {
                Ok(head) => head,
                Err(e) => {
                    warn!(doc = %doc, "change feed: reading the head failed ({e}); retrying later");
                    return true;
                }
            };
            if from > head {
                self.behind.remove(&doc);
                continue;
            }
            let to = head.min(from + budget - 1);
            let ops = match log.read(&doc, from, to) {
                Ok(ops) if ops.first().is_some_and(|o| o.commit.rev == from) => ops,
                Ok(_) | Err(_) => {
                    // Compacted away (history dropped before `from`): the feed skips to what is
                    // still there.
                    let oldest = log.oldest_readable(&doc).unwrap_or(head) + 1;
                    warn!(doc = %doc, "change feed: revisions {from}..{} are no longer in the op log; skipped", oldest - 1);
                    self.behind.insert(Arc::clone(&doc), oldest.max(from + 1));
                    budget -= 1;
                    continue;
                }
            };
            if !self.sink.offer(&doc, &ops) {
                return true;
            }
            budget = budget.saturating_sub(ops.len() as u64);
            self.behind.insert(Arc::clone(&doc), to + 1);
        }
        !self.behind.is_empty() || !self.asking.is_empty()
    }

    /// Documents behind now, or waiting for their cursor.
    pub fn behind(&self) -> usize {
        self.behind.len() + self.asking.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tandem_engine::{Attributes, ClientId, Commit, Delta};
    use tandem_storage::{LocalBlobs, LocalLog, LocalOptions, RealFs};

    use super::*;

    #[derive(Default)]
    struct Sink {
        room: Mutex<usize>,
        got: Mutex<Vec<(String, u64)>>,
        published: Mutex<u64>,
    }

    impl FeedSink for Sink {
        fn offer(&self, doc: &str, ops: &[LogOp]) -> bool {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return false;
            }
            *room -= 1;
            self.got.lock().unwrap().extend(ops.iter().map(|o| (doc.to_owned(), o.commit.rev)));
            true
        }

        fn published(&self, _: &str) -> u64 {
            *self.published.lock().unwrap()
        }
    }

    fn op(doc: &str, rev: u64) -> LogOp {
        let delta = Delta::new().retain(rev as usize - 1, Attributes::default()).insert("x", Attributes::default());
        LogOp::new(doc, 1, Commit::op(rev, ClientId(7), rev, delta.chop()))
    }

    fn open(dir: &std::path::Path) -> LocalLog {
        let blobs = Arc::new(LocalBlobs::open(dir.join("blobs"), Arc::new(RealFs)).unwrap());
        LocalLog::open(dir.join("oplog"), blobs, Arc::new(RealFs), LocalOptions::default()).unwrap()
    }

    #[test]
    fn a_full_sink_is_caught_up_from_the_op_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let sink = Arc::new(Sink::default());
        *sink.room.lock().unwrap() = 1;
        let mut feed = FeedSource::new(Arc::clone(&sink) as Arc<dyn FeedSink>);
        let batch1 = vec![op("a", 1), op("a", 2), op("b", 1)];
        log.append(&batch1).unwrap();
        feed.durable(&batch1); // a: offered; b: no room
        let batch2 = vec![op("a", 3), op("b", 2)];
        log.append(&batch2).unwrap();
        feed.durable(&batch2); // both behind now
        assert_eq!(feed.behind(), 2);
        assert!(feed.catch_up(&mut log), "still no room");
        *sink.room.lock().unwrap() = 10;
        assert!(!feed.catch_up(&mut log));
        let got = sink.got.lock().unwrap().clone();
        let of = |d: &str| got.iter().filter(|(x, _)| x == d).map(|(_, r)| *r).collect::<Vec<_>>();
        assert_eq!(of("a"), vec![1, 2, 3]);
        assert_eq!(of("b"), vec![1, 2]);
    }

    #[test]
    fn a_document_loaded_ahead_of_the_feed_is_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(&(1..=600).map(|r| op("a", r)).collect::<Vec<_>>()).unwrap();
        let sink = Arc::new(Sink::default());
        *sink.room.lock().unwrap() = 100;
        *sink.published.lock().unwrap() = 10;
        let mut feed = FeedSource::new(Arc::clone(&sink) as Arc<dyn FeedSink>);
        feed.loaded("a", 600);
        assert!(feed.catch_up(&mut log), "a bounded amount per call");
        assert_eq!(sink.got.lock().unwrap().len() as u64, CATCH_UP_OPS);
        while feed.catch_up(&mut log) {}
        let revs: Vec<u64> = sink.got.lock().unwrap().iter().map(|(_, r)| *r).collect();
        assert_eq!(revs, (11..=600).collect::<Vec<_>>());
        feed.loaded("a", 600);
        assert_eq!(feed.behind(), 1, "the sink's cursor is still 10 here");
    }

    /// A cluster's sink: `published_anywhere` answers once the lookup is done.
    struct Shared {
        inner: Sink,
        /// The shared cursor, once looked up.
        answer: Mutex<Option<u64>>,
        lookups: Mutex<Vec<String>>,
    }

    impl FeedSink for Shared {
        fn offer(&self, doc: &str, ops: &[LogOp]) -> bool {
            self.inner.offer(doc, ops)
        }

        fn published(&self, doc: &str) -> u64 {
            self.inner.published(doc)
        }

        fn published_anywhere(&self, doc: &str) -> Option<u64> {
            self.lookups.lock().unwrap().push(doc.to_owned());
            *self.answer.lock().unwrap()
        }
    }

    #[test]
    fn a_document_from_another_node_is_caught_up_from_the_shared_cursor_after_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // Another node served revisions 1..=300 and published up to 280.
        log.append(&(1..=300).map(|r| op("a", r)).collect::<Vec<_>>()).unwrap();
        let sink = Arc::new(Shared { inner: Sink::default(), answer: Mutex::new(None), lookups: Mutex::default() });
        *sink.inner.room.lock().unwrap() = 100;
        let mut feed = FeedSource::settling(Arc::clone(&sink) as Arc<dyn FeedSink>, Duration::from_millis(50));
        feed.loaded("a", 300);
        assert_eq!(feed.behind(), 1, "waiting for its cursor");
        // Edits here meanwhile are held back, not offered ahead of the gap.
        let more = vec![op("a", 301), op("a", 302)];
        log.append(&more).unwrap();
        feed.durable(&more);
        assert!(sink.inner.got.lock().unwrap().is_empty());
        // The cursor arrives, but the document has not settled yet: nothing is read back.
        *sink.answer.lock().unwrap() = Some(280);
        assert!(feed.catch_up(&mut log));
        assert!(sink.inner.got.lock().unwrap().is_empty(), "caught up only once the hand-over's loads are over");
        std::thread::sleep(Duration::from_millis(60));
        while feed.catch_up(&mut log) {}
        let revs: Vec<u64> = sink.inner.got.lock().unwrap().iter().map(|(_, r)| *r).collect();
        assert_eq!(revs, (281..=302).collect::<Vec<_>>(), "what the other node had not published, then these");
        assert_eq!(feed.behind(), 0);
        // Published everywhere already: loading it again reads nothing back.
        *sink.answer.lock().unwrap() = Some(302);
        feed.loaded("a", 302);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!feed.catch_up(&mut log));
        assert_eq!(sink.inner.got.lock().unwrap().len(), 22);
    }
}
