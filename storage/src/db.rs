//! What the database backends (ScyllaDB, PostgreSQL) share: their driver's private runtime,
//! and the conversions between revisions and the databases' signed 64-bit integers.

use crate::error::StorageError;

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
