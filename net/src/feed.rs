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

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_storage::{LogOp, OpLog};
use tracing::warn;

/// Where the feed goes (the control plane's publisher implements it).
pub trait FeedSink: Send + Sync {
    /// Offers consecutive ops of one document made durable. Must not block; false when there
    /// is no room now (they are read back from the op log later).
    fn offer(&self, doc: &str, ops: &[LogOp]) -> bool;
    /// The last revision of `doc` the feed has published (0: none).
    fn published(&self, doc: &str) -> u64;
}

/// Ops read back from the op log per [`FeedSource::catch_up`] call, so that catching up never
/// holds the storage thread (and the appends behind it) for long.
pub const CATCH_UP_OPS: u64 = 256;

/// One storage thread's side of the feed.
pub struct FeedSource {
    sink: Arc<dyn FeedSink>,
    /// Documents whose revisions from the value on were not offered.
    behind: BTreeMap<Arc<str>, u64>,
}

impl std::fmt::Debug for FeedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSource").field("behind", &self.behind).finish_non_exhaustive()
    }
}

impl FeedSource {
    /// A source offering to `sink`.
    pub fn new(sink: Arc<dyn FeedSink>) -> Self {
        Self { sink, behind: BTreeMap::new() }
    }

    /// Offers a durable append (ops of several documents, each document's in revision order).
    pub fn durable(&mut self, ops: &[LogOp]) {
        let mut start = 0;
        while start < ops.len() {
            let doc = &ops[start].doc;
            let end = start + ops[start..].iter().take_while(|o| &o.doc == doc).count();
            let run = &ops[start..end];
            // Behind already: the gap covers these too, in order.
            if !self.behind.contains_key(doc) && !self.sink.offer(doc, run) {
                self.behind.insert(Arc::clone(doc), run[0].commit.rev);
            }
            start = end;
        }
    }

    /// `doc` was loaded at revision `head`: what the feed has not published of it is caught up
    /// (after a restart that lost queued feed batches).
    pub fn loaded(&mut self, doc: &str, head: u64) {
        let published = self.sink.published(doc);
        if published < head && !self.behind.contains_key(doc) {
            self.behind.insert(Arc::from(doc), published + 1);
        }
    }

    /// Reads back and offers up to [`CATCH_UP_OPS`] missing ops; true while documents remain
    /// behind.
    pub fn catch_up(&mut self, log: &mut dyn OpLog) -> bool {
        let mut budget = CATCH_UP_OPS;
        while budget > 0 {
            let Some((doc, from)) = self.behind.first_key_value().map(|(d, f)| (Arc::clone(d), *f)) else {
                return false;
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
        !self.behind.is_empty()
    }

    /// Documents behind now.
    pub fn behind(&self) -> usize {
        self.behind.len()
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
}
