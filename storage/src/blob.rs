//! The blob store: snapshots, exports and uploads. A local directory by default; the S3
//! backend ([`crate::s3`], feature `s3`, on `object_store`) implements the same trait, and
//! [`conformance`] is what both promise.
//!
//! Calls block: they are made from storage threads, never from a core's event loop. An
//! asynchronous backend (S3) runs its client on a runtime of its own and waits here.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::StorageError;
use crate::fs::Fs;

/// How a blob is to be served, where the store serves it itself (S3's presigned links).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobMeta {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
}

/// A key-value store of immutable blobs.
///
/// A blob is written whole or not at all: a reader sees the old blob or the new one, never a
/// part (snapshots rely on it).
pub trait BlobStore: Send + Sync + Debug {
    /// Stores `bytes` under `key`, replacing what was there; durable when it returns.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// [`BlobStore::put`], with how the blob is to be served. Stores that do not serve
    /// blobs themselves ignore `meta`.
    fn put_with(&self, key: &str, bytes: &[u8], meta: &BlobMeta) -> Result<(), StorageError> {
        let _ = meta;
        self.put(key, bytes)
    }
    /// A URL that reads `key` without credentials for `valid_for`, signed by the store
    /// itself (S3), or `None` where the store has no such thing (a local directory: Tandem
    /// serves it behind a link it signs).
    fn presigned_get(&self, key: &str, valid_for: Duration) -> Result<Option<String>, StorageError> {
        let _ = (key, valid_for);
        Ok(None)
    }
    /// The blob under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Deletes the blob under `key` (no error when there is none).
    fn delete(&self, key: &str) -> Result<(), StorageError>;
}

/// Checks a blob key: relative `/`-separated segments of `[A-Za-z0-9._%-]`, none starting
/// with `.` (so no `.`, `..` or hidden names), at most 1024 bytes. Valid keys are valid S3 keys
/// and safe file paths.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg.len() <= 255
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%-".contains(&b))
        });
    if ok { Ok(()) } else { Err(StorageError::Invalid(format!("blob key {key:?} is not valid"))) }
}

/// Blobs as files under a directory: written to a temporary file in `<root>/.tmp`, synced,
/// renamed into place and the directory synced, so a blob is whole or absent after a crash.
/// What a crash leaves in `.tmp` is removed when the store is opened.
#[derive(Debug)]
pub struct LocalBlobs {
    root: PathBuf,
    fs: Arc<dyn Fs>,
    tmp_seq: AtomicU64,
}

impl LocalBlobs {
    /// Blobs under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>, fs: Arc<dyn Fs>) -> Result<Self, StorageError> {
        let root = root.into();
        let tmp = root.join(".tmp");
        // Temporaries of a process that crashed mid-write: never renamed, so never a blob.
        // (Another live process on the same directory names its own by pid, but the data
        // directory's lock keeps a second server out.)
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs.remove(&e.path());
            }
        }
        fs.create_dir_all(&tmp).map_err(|e| StorageError::io(format!("creating {}", tmp.display()), e))?;
        Ok(Self { root, fs, tmp_seq: AtomicU64::new(0) })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

impl BlobStore for LocalBlobs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("a key has a parent: the root").to_path_buf();
        let io = |what: &str, p: &Path, e| StorageError::io(format!("{what} {}", p.display()), e);
        self.fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(".tmp").join(format!("{}.{n}", std::process::id()));
        let mut f = self.fs.open(&tmp, true).map_err(|e| io("creating", &tmp, e))?;
        f.set_len(0).map_err(|e| io("truncating", &tmp, e))?;
        f.write_all_at(bytes, 0).map_err(|e| io("writing", &tmp, e))?;
        f.sync_data().map_err(|e| io("syncing", &tmp, e))?;
        drop(f);
        self.fs.rename(&tmp, &path).map_err(|e| io("renaming into", &path, e))?;
        self.fs.sync_dir(&dir).map_err(|e| io("syncing directory", &dir, e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path(key)?;
        let f = match self.fs.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(format!("opening {}", path.display()), e)),
        };
        let len = f.size().map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        let mut buf = vec![0; usize::try_from(len).map_err(|_| StorageError::Invalid("blob too large".into()))?];
        f.read_exact_at(&mut buf, 0).map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        Ok(Some(buf))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.fs.remove(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
        }
    }
}

/// What every [`BlobStore`] promises, as checks that panic; the local directory and S3 (a
/// real S3-API server) both run them.
pub mod conformance {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{BlobMeta, BlobStore};

    /// Runs every check on `store`, under keys starting with `base/` (so runs can share a
    /// bucket).
    pub fn run(store: &Arc<dyn BlobStore>, base: &str) {
        round_trip(store.as_ref(), base);
        bad_keys(store.as_ref(), base);
        large_and_binary(store.as_ref(), base);
        readers_see_whole_blobs(store, base);
    }

    /// Put, overwrite, get, delete (twice), missing keys, empty blobs, metadata.
    pub fn round_trip(store: &dyn BlobStore, base: &str) {
        let key = format!("{base}/a/b.snap");
        store.put(&key, b"one").unwrap();
        store.put(&key, b"two").unwrap();
        assert_eq!(store.get(&key).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(store.get(&format!("{base}/a/none")).unwrap(), None);
        store.delete(&key).unwrap();
        store.delete(&key).unwrap();
        assert_eq!(store.get(&key).unwrap(), None);
        let empty = format!("{base}/empty");
        store.put(&empty, b"").unwrap();
        assert_eq!(store.get(&empty).unwrap().as_deref(), Some(&b""[..]));
        let meta = BlobMeta {
            content_type: Some("application/pdf".into()),
            content_disposition: Some("attachment; filename=\"x.pdf\"".into()),
        };
        let typed = format!("{base}/exports/x.pdf");
        store.put_with(&typed, b"%PDF-", &meta).unwrap();
        assert_eq!(store.get(&typed).unwrap().as_deref(), Some(&b"%PDF-"[..]));
        for k in [empty, typed] {
            store.delete(&k).unwrap();
        }
    }

    /// Keys that could escape the store or mean something else are refused, on every call.
    pub fn bad_keys(store: &dyn BlobStore, base: &str) {
        let long = format!("{base}/{}", "a".repeat(1100));
        for bad in
            ["", "/abs", "a/../b", "a//b", "a/./b", "sp ace", "nul\0", "..", "a/", ".tmp/x", "a/.hidden", long.as_str()]
        {
            assert!(store.put(bad, b"x").is_err(), "put {bad:?} accepted");
            assert!(store.get(bad).is_err(), "get {bad:?} accepted");
            assert!(store.delete(bad).is_err(), "delete {bad:?} accepted");
        }
    }

    /// Every byte value survives, and a 12 MiB blob (a large snapshot) round-trips.
    pub fn large_and_binary(store: &dyn BlobStore, base: &str) {
        let key = format!("{base}/large");
        let bytes: Vec<u8> = (0..12 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        store.put(&key, &bytes).unwrap();
        assert!(store.get(&key).unwrap().as_deref() == Some(&bytes[..]), "the large blob came back different");
        store.delete(&key).unwrap();
    }

    /// A reader racing a writer that replaces a blob sees one whole version or the other.
    pub fn readers_see_whole_blobs(store: &Arc<dyn BlobStore>, base: &str) {
        let key = format!("{base}/raced");
        let size = 1 << 20;
        store.put(&key, &vec![0u8; size]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (store, key, stop) = (Arc::clone(store), key.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let got = store.get(&key).unwrap().expect("the blob is always there");
                    assert_eq!(got.len(), size, "a partial blob was read");
                    assert!(got.iter().all(|&b| b == got[0]), "a mix of two versions was read");
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=20u8 {
            store.put(&key, &vec![i; size]).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        store.delete(&key).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;

    #[test]
    fn local_blobs_pass_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobs::open(dir.path(), Arc::new(RealFs)).unwrap());
        conformance::run(&blobs, "suite");
        assert_eq!(blobs.presigned_get("suite/x", Duration::from_secs(60)).unwrap(), None);
        // No temporary files are left behind, and a crash's are removed at the next open.
        assert_eq!(std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(), 0);
        std::fs::write(dir.path().join(".tmp/123.4"), b"half").unwrap();
        drop(blobs);
        let _again = LocalBlobs::open(dir.path(), Arc::new(RealFs)).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(), 0);
    }
}
