//! What the database backends (ScyllaDB, PostgreSQL) share: their driver's private runtime,
//! the conversions between revisions and the databases' signed 64-bit integers, and an
//! append's ops grouped by document.

use std::collections::BTreeMap;

use crate::error::StorageError;
use crate::format::{LogOp, MAX_DOC_ID_BYTES};

/// A driver's error, with what was being done.
pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("{what}: {e}"))
}

/// The current-thread runtime an async driver runs on inside a (blocking) storage thread.
pub(crate) fn runtime(driver: &str) -> Result<tokio::runtime::Runtime, StorageError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StorageError::io(format!("starting the {driver} driver's runtime"), e))
}

/// A stored `bigint` as a revision, time or sequence number.
pub(crate) fn u64_of(v: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Invalid(format!("negative {what} {v} in the database")))
}

/// A revision, time or sequence number as a `bigint`.
pub(crate) fn i64_of(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Invalid(format!("{v} does not fit a bigint")))
}

/// Refuses a document id a database backend cannot key on.
pub(crate) fn check_doc(doc: &str) -> Result<(), StorageError> {
    if doc.is_empty() || doc.len() > MAX_DOC_ID_BYTES {
        return Err(StorageError::Invalid(format!("document id of {} bytes", doc.len())));
    }
    Ok(())
}

/// An append's ops by document, in document order (so two writers lock documents in the same
/// order), each document's in order; refuses a gap between one document's revisions.
pub(crate) fn by_document(ops: &[LogOp]) -> Result<BTreeMap<&str, Vec<LogOp>>, StorageError> {
    let mut groups: BTreeMap<&str, Vec<LogOp>> = BTreeMap::new();
    for op in ops {
        check_doc(&op.doc)?;
        let g = groups.entry(&op.doc).or_default();
        if let Some(prev) = g.last()
            && op.rev() != prev.rev() + 1
        {
            return Err(StorageError::RevisionGap { doc: op.doc.to_string(), expected: prev.rev() + 1, got: op.rev() });
        }
        g.push(op.clone());
    }
    Ok(groups)
}
