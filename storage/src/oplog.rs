//! The op-log interface: one trait, three backends (the embedded log, ScyllaDB behind the
//! `scylla` feature, PostgreSQL behind `postgres`), chosen by configuration.
//!
//! Calls block: a server core never calls them itself but hands requests to its storage
//! thread (see `tandem-net`'s server), so a slow disk or network never stalls an event loop.

use tandem_engine::{ClientId, DocState, Document, Limits, Notes};

use crate::error::StorageError;
use crate::format::LogOp;
use crate::snapshot::Snapshot;

/// What an append did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Ops written.
    pub written: usize,
    /// Ops already in the log with the same author and client sequence number (a retried
    /// append): skipped.
    pub duplicates: usize,
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Log segments (or partitions' rows) deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Old snapshots deleted.
    pub snapshots_deleted: usize,
}

/// One revision of a document's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The revision.
    pub rev: u64,
    /// Who made it.
    pub author: ClientId,
    /// The author's sequence number for it.
    pub client_seq: u64,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
}

/// A document as loaded for serving: its latest snapshot and the ops after it.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The ops after the snapshot (or from revision 1), in order.
    pub ops: Vec<LogOp>,
}

impl Loaded {
    /// The sequencer state: the snapshot, then the ops replayed (they stay in its history).
    pub fn into_state(self, limits: Limits) -> Result<DocState, StorageError> {
        let mut state = match &self.snapshot {
            Some(s) => s.restore(limits)?,
            None => DocState::new(limits),
        };
        for op in self.ops {
            let rev = op.rev();
            state
                .replay((*op.commit).clone())
                .map_err(|e| StorageError::Invalid(format!("replaying {} revision {rev}: {e}", op.doc)))?;
        }
        Ok(state)
    }
}

/// A durable, ordered log of each document's ops, with snapshots and bounded history.
///
/// Revisions of a document start at 1 and have no gaps. Appends are idempotent: appending an
/// op whose revision is taken by an op with the same author and client sequence number is a
/// no-op; by a different op, a [`StorageError::Conflict`]. That makes a retried append safe
/// and two sequencers for one document impossible to interleave (the ScyllaDB backend fences
/// with a lightweight transaction, the PostgreSQL one with a row lock; see ARCHITECTURE.md).
pub trait OpLog: Send {
    /// Appends ops, in order; durable (per the configured fsync policy) when it returns. Every
    /// op must continue its document's revisions. Nothing is written when any op is refused.
    fn append(&mut self, ops: &[LogOp]) -> Result<Appended, StorageError>;

    /// The ops of `doc` with revisions `from..=to`, in order.
    fn read(&mut self, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError>;

    /// The document's latest revision (0 for a document never written).
    fn latest_rev(&mut self, doc: &str) -> Result<u64, StorageError>;

    /// Stores a snapshot of `doc`; durable when it returns.
    fn put_snapshot(&mut self, doc: &str, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// The newest snapshot of `doc` at or before `rev`.
    fn snapshot_at_or_before(&mut self, doc: &str, rev: u64) -> Result<Option<Snapshot>, StorageError>;

    /// Drops the history of `doc` before `rev`: ops with smaller revisions may be deleted. A
    /// snapshot at revision `rev - 1` or later must exist.
    fn drop_history_before(&mut self, doc: &str, rev: u64) -> Result<(), StorageError>;

    /// The oldest revision of `doc` that [`OpLog::document_at`] can still build.
    fn oldest_readable(&mut self, doc: &str) -> Result<u64, StorageError>;

    /// Deletes what retention and dropped history allow; `now_ms` is the wall clock.
    fn compact(&mut self, now_ms: u64) -> Result<Compacted, StorageError>;

    /// Makes everything appended so far durable, whatever the fsync policy.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The document as served: its latest snapshot and the ops after it.
    fn load(&mut self, doc: &str) -> Result<Loaded, StorageError> {
        let latest = self.latest_rev(doc)?;
        let snapshot = self.snapshot_at_or_before(doc, latest)?;
        let from = snapshot.as_ref().map_or(0, |s| s.rev) + 1;
        let ops = if from <= latest { self.read(doc, from, latest)? } else { Vec::new() };
        Ok(Loaded { snapshot, ops })
    }

    /// The document's content at revision `rev`: the newest snapshot at or before it, then
    /// the ops up to it.
    fn document_at(&mut self, doc: &str, rev: u64) -> Result<Document, StorageError> {
        self.state_at(doc, rev).map(|(document, _)| document)
    }

    /// The document's content and notes (comment threads anchored as of `rev`, named
    /// versions) at revision `rev`.
    fn state_at(&mut self, doc: &str, rev: u64) -> Result<(Document, Notes), StorageError> {
        let latest = self.latest_rev(doc)?;
        if rev > latest {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev, latest });
        }
        let oldest = self.oldest_readable(doc)?;
        if rev < oldest {
            return Err(StorageError::HistoryUnavailable { doc: doc.to_owned(), rev, oldest });
        }
        let snapshot = self.snapshot_at_or_before(doc, rev)?;
        let (base, mut document, mut notes) = match snapshot {
            Some(s) => {
                let d = Document::from_delta(&s.content)
                    .map_err(|e| StorageError::Invalid(format!("snapshot of {doc:?} at {}: {e}", s.rev)))?;
                (s.rev, d, s.notes)
            }
            None => (0, Document::new(), Notes::new()),
        };
        if base < rev {
            for op in self.read(doc, base + 1, rev)? {
                document
                    .apply(&op.commit.delta)
                    .map_err(|e| StorageError::Invalid(format!("{doc:?} revision {}: {e}", op.rev())))?;
                notes.follow(&op.commit);
            }
        }
        Ok((document, notes))
    }

    /// Up to `limit` revisions of `doc` from `from` on, with author and time.
    fn revisions(&mut self, doc: &str, from: u64, limit: usize) -> Result<Vec<RevisionInfo>, StorageError> {
        let latest = self.latest_rev(doc)?;
        let from = from.max(1);
        if from > latest || limit == 0 {
            return Ok(Vec::new());
        }
        let to = latest.min(from.saturating_add(limit as u64 - 1));
        Ok(self
            .read(doc, from, to)?
            .into_iter()
            .map(|op| RevisionInfo {
                rev: op.rev(),
                author: op.commit.author,
                client_seq: op.commit.client_seq,
                time_ms: op.time_ms,
            })
            .collect())
    }
}
