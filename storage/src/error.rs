//! Storage errors: each a distinct variant with the facts.

use std::io;
use std::path::PathBuf;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A log file is corrupt where it cannot be a torn write: start-up stops here.
    #[error(
        "op log corrupt in {file} at offset {offset}: {reason} (run `tandem repair` to truncate the log after the last good record)"
    )]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// The byte offset in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A write or `fdatasync` failed earlier: the log accepts no more writes.
    #[error(
        "op log is poisoned after a failed write or fdatasync ({0}); restart the server to recover from what is durable"
    )]
    Poisoned(String),
    /// A different op already holds this revision.
    #[error("revision {rev} of {doc:?} is already taken by another op (author {existing_author}, seq {existing_seq})")]
    Conflict {
        /// The document.
        doc: String,
        /// The revision.
        rev: u64,
        /// The author of the op there.
        existing_author: u64,
        /// Its client sequence number.
        existing_seq: u64,
    },
    /// An op does not continue its document's revisions.
    #[error("op for {doc:?} at revision {got}, but the next revision is {expected}")]
    RevisionGap {
        /// The document.
        doc: String,
        /// The revision expected.
        expected: u64,
        /// The revision given.
        got: u64,
    },
    /// The revision is newer than the document's latest.
    #[error("{doc:?} has no revision {rev} (its latest is {latest})")]
    FutureRevision {
        /// The document.
        doc: String,
        /// The revision asked for.
        rev: u64,
        /// The latest revision.
        latest: u64,
    },
    /// The revision's history was dropped (compaction or retention).
    #[error("history of {doc:?} at revision {rev} is no longer kept (the oldest readable revision is {oldest})")]
    HistoryUnavailable {
        /// The document.
        doc: String,
        /// The revision asked for.
        rev: u64,
        /// The oldest revision still readable.
        oldest: u64,
    },
    /// Dropping history needs a snapshot to start from.
    #[error("cannot drop the history of {doc:?} before revision {rev}: no snapshot at or after revision {}", rev.saturating_sub(1))]
    NoSnapshot {
        /// The document.
        doc: String,
        /// The revision.
        rev: u64,
    },
    /// A value does not fit the format (document id, record or blob key).
    #[error("{0}")]
    Invalid(String),
    /// A stored snapshot or blob is unreadable.
    #[error("blob {key:?} is unreadable: {reason}")]
    BadBlob {
        /// The blob key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The distributed backend failed (connection, timeout, query).
    #[error("backend: {0}")]
    Backend(String),
}

impl StorageError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }
}
