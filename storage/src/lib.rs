//! Tandem's storage: where acknowledged edits live.
//!
//! - [`OpLog`]: the op-log interface (append a document's op at a revision, read a revision
//!   range, latest revision, snapshots, dropping history, compaction), with the document at
//!   any retained revision and its list of revisions built on top.
//! - [`LocalLog`]: the embedded backend, the default: one append-only segmented log per core,
//!   written only by that core's storage thread, with group commit and crash recovery.
//!   `docs/oplog-format.md` specifies its format.
//! - `scylla::ScyllaLog` (feature `scylla`): the op log in a ScyllaDB cluster, appends fenced
//!   by lightweight transactions, with `scylla::migrate` creating its schema.
//! - `postgres::PostgresLog` (feature `postgres`): the op log in PostgreSQL, appends fenced by
//!   the head row's lock and the ops' primary key, one transaction per group commit.
//! - [`BlobStore`] ([`LocalBlobs`], and `s3::S3Blobs` with feature `s3`): snapshots, exports
//!   and uploads as blobs; [`blob_conformance`] is what every backend passes.
//! - [`Fs`]: the file layer under the log, with [`FaultyFs`] to inject failures in tests.
//!
//! Calls block. Server cores never make them on their event loops; they hand requests to a
//! storage thread each.

mod blob;
pub use blob::conformance as blob_conformance;
pub mod conformance;
#[cfg(any(feature = "scylla", feature = "postgres"))]
mod db;
mod error;
pub mod format;
mod fs;
mod local;
mod oplog;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "scylla")]
pub mod scylla;
mod snapshot;

pub use blob::{BlobMeta, BlobStore, LocalBlobs, check_key};
pub use error::StorageError;
pub use format::{LogOp, Record};
pub use fs::{Faults, FaultyFs, FileHandle, Fs, RealFs};
pub use local::{FsyncPolicy, LocalLog, LocalOptions, RecoveryReport, Repair, now_ms, snapshot_key};
pub use oplog::{Appended, Compacted, Loaded, OpLog, RevisionInfo};
pub use snapshot::{ClientMark, Snapshot};

/// The URL without its password, for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<unparsable URL>".into() };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
