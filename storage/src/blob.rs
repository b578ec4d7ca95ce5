//! The blob store: snapshots now, exports later. A local directory by default; the S3 backend
//! (on `object_store`) implements the same trait.
//!
//! Calls block: they are made from storage threads, never from a core's event loop. An
//! asynchronous backend (S3) runs its client on a runtime of its own and waits here.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StorageError;
use crate::fs::Fs;

/// A key-value store of immutable blobs.
pub trait BlobStore: Send + Sync + Debug {
    /// Stores `bytes` under `key`, replacing what was there; durable when it returns.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// The blob under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Deletes the blob under `key` (no error when there is none).
    fn delete(&self, key: &str) -> Result<(), StorageError>;
}

/// Checks a blob key: relative `/`-separated segments of `[A-Za-z0-9._%-]`, none of them `.`
/// or `..`, at most 1024 bytes. Valid keys are valid S3 keys and safe file paths.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.len() <= 255
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._%-".contains(&b))
        });
    if ok { Ok(()) } else { Err(StorageError::Invalid(format!("blob key {key:?} is not valid"))) }
}

/// Blobs as files under a directory: written to a temporary file, synced, renamed into
/// place and the directory synced, so a blob is whole or absent after a crash.
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
        fs.create_dir_all(&root).map_err(|e| StorageError::io(format!("creating {}", root.display()), e))?;
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
        let tmp = dir.join(format!(
            ".{}.{}.{n}.tmp",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("blob"),
            std::process::id()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;

    #[test]
    fn blobs_round_trip_and_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(dir.path(), Arc::new(RealFs)).unwrap();
        blobs.put("a/b.snap", b"one").unwrap();
        blobs.put("a/b.snap", b"two").unwrap();
        assert_eq!(blobs.get("a/b.snap").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(blobs.get("a/none").unwrap(), None);
        blobs.delete("a/b.snap").unwrap();
        blobs.delete("a/b.snap").unwrap();
        assert_eq!(blobs.get("a/b.snap").unwrap(), None);
        for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "sp ace", "nul\0"] {
            assert!(blobs.put(bad, b"x").is_err(), "{bad:?} accepted");
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
