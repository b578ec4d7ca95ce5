//! The file layer under the embedded log: the real file system, or one that injects faults.
//!
//! Everything the log does to files goes through [`Fs`], so tests can make `fdatasync` return
//! `EIO` or a write fail at a chosen moment ([`FaultyFs`]) and check the log's reaction.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An open file.
pub trait FileHandle: Send + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Sets the file's length.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// A file system.
pub trait Fs: Send + Sync + Debug {
    /// Opens a file for reading and writing, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FileHandle>>;
    /// The entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes a directory's entries durable (after a create, rename or remove in it).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FileHandle for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl RealFile {
    fn open(path: &Path, create: bool) -> io::Result<Self> {
        OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path).map(Self)
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(RealFile::open(path, create)?))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Faults to inject, shared between a test and its [`FaultyFs`]. Each counter, when nonzero,
/// counts down on every matching call and fails the call that brings it to zero... once: set
/// `fail_sync_after` to 1 and the next `fdatasync` returns `EIO`.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail the Nth `fdatasync` from now with `EIO` (0: never).
    pub fail_sync_after: AtomicU64,
    /// Fail the Nth write from now with `EIO` (0: never).
    pub fail_write_after: AtomicU64,
    /// `fdatasync` calls seen.
    pub syncs: AtomicU64,
}

impl Faults {
    fn trips(counter: &AtomicU64) -> bool {
        counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| if n == 0 { None } else { Some(n - 1) }) == Ok(1)
    }
}

/// The real file system with injected faults.
#[derive(Clone, Debug, Default)]
pub struct FaultyFs {
    /// The faults to inject.
    pub faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: RealFile,
    faults: Arc<Faults>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl FileHandle for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if Faults::trips(&self.faults.fail_write_after) {
            return Err(eio());
        }
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.faults.syncs.fetch_add(1, Ordering::Relaxed);
        if Faults::trips(&self.faults.fail_sync_after) {
            return Err(eio());
        }
        self.inner.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Fs for FaultyFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(FaultyFile { inner: RealFile::open(path, create)?, faults: Arc::clone(&self.faults) }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        RealFs.list(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}
