//! The embedded op log: an append-only log of fixed-size, pre-zeroed segments in a directory,
//! written by one thread (a server core's storage thread), with an in-memory index of where
//! each document's ops are.
//!
//! The format is in [`crate::format`] and `docs/oplog-format.md`. Crash safety rests on three
//! rules:
//! - a write batch is written at the tail and made durable (`fdatasync`) before the next batch
//!   is written (in the `always` policy), so after a crash only the last batch can be torn;
//! - every record names where its batch started, so recovery can tell a torn last batch (bad
//!   bytes followed by nothing, zeros or records of the same batch: truncated) from corruption
//!   of data that was durable (bad bytes followed by a record of a later batch: start-up stops
//!   with the file and offset, and `repair` truncates there);
//! - a new segment is written whole (header, zeros), synced and renamed into place, so a
//!   segment file is never half-made.
//!
//! A failed write or `fdatasync` poisons the log: the kernel may have dropped the dirty pages,
//! so retrying could report durable what is not. Every later call fails until a restart
//! recovers from what is on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::blob::BlobStore;
use crate::error::StorageError;
use crate::format::{
    Decoded, Kind, LogOp, RECORD_PREFIX_BYTES, Record, RecordPrefix, SEGMENT_HEADER_BYTES, SegmentHeader,
    decode_header, decode_record,
};
use crate::fs::{FileHandle, Fs};
use crate::oplog::{Appended, Compacted, OpLog};
use crate::snapshot::Snapshot;

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append batch is `fdatasync`ed before it returns (group commit): an acked op
    /// survives power loss. The default.
    Always,
    /// Appends are written at once (they survive a process crash) and `fdatasync`ed at most
    /// this often: up to this much acked work can be lost on power loss.
    Interval(Duration),
    /// Written, never synced (benchmarks): acked work survives a process crash only.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Always => f.write_str("always (fdatasync per write batch before acking)"),
            Self::Interval(d) => write!(f, "every {} ms (acks may precede durability)", d.as_millis()),
            Self::Never => f.write_str("never (benchmarks only: acked ops do not survive power loss)"),
        }
    }
}

/// How the embedded log runs.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Bytes per segment file (a multiple of 4096, at least 64 KiB). Default 64 MiB.
    pub segment_bytes: u32,
    /// When appends are made durable.
    pub fsync: FsyncPolicy,
    /// History younger than this is kept. Default 30 days.
    pub retention: Duration,
    /// Truncate at corruption instead of refusing to open.
    pub repair: bool,
    /// A snapshot is kept only while dropping it would leave more than this many ops to
    /// replay between the snapshots around it (so history reads stay bounded); the others
    /// are deleted as newer ones are stored. Default 1000 (the server passes
    /// `snapshot_every_ops`).
    pub snapshot_replay_ops: u64,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
            retention: Duration::from_secs(30 * 24 * 3600),
            repair: false,
            snapshot_replay_ops: 1000,
        }
    }
}

/// What opening the log found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Records read.
    pub records: u64,
    /// Bytes of records.
    pub bytes: u64,
    /// Documents found.
    pub documents: usize,
    /// A torn last write that was truncated: file, offset, bytes cleared.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// What `repair` dropped: where it truncated, and the segment files it removed.
    pub repaired: Option<Repair>,
    /// Time taken.
    pub elapsed: Duration,
}

/// What a repair dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The corruption found.
    pub reason: String,
    /// The file truncated (or where a missing segment was).
    pub file: PathBuf,
    /// The offset truncated at.
    pub offset: u64,
    /// Bytes of records (or garbage) dropped in that file.
    pub bytes_dropped: u64,
    /// Later segment files removed.
    pub segments_removed: Vec<PathBuf>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Box<dyn FileHandle>,
    /// End of records (where the next record goes).
    end: u64,
    max_time_ms: u64,
    /// The largest op revision of each document in this segment.
    docs: FastMap<Arc<str>, u64>,
    /// Snapshot and floor records in this segment.
    markers: Vec<(Arc<str>, Kind, u64)>,
}

#[derive(Clone, Debug)]
struct SnapRef {
    rev: u64,
    time_ms: u64,
    key: String,
    segment: u64,
}

/// A segment file read whole at recovery.
struct Loaded {
    file: Box<dyn FileHandle>,
    data: Vec<u8>,
}

/// Opens and reads a whole segment into `buf` (reused: only growth is zeroed).
fn read_segment(fs: &dyn Fs, path: &Path, mut buf: Vec<u8>) -> Result<Loaded, StorageError> {
    let io = |e| StorageError::io(format!("reading {}", path.display()), e);
    let file = fs.open(path, false).map_err(io)?;
    let len =
        usize::try_from(file.size().map_err(io)?).map_err(|_| StorageError::Invalid("segment too large".into()))?;
    buf.resize(len, 0);
    file.read_exact_at(&mut buf, 0).map_err(io)?;
    Ok(Loaded { file, data: buf })
}

/// Maps keyed by document id, with a fast hasher: recovery looks a document up per record.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct DocIndex {
    /// The document (the map's key, shared).
    name: Arc<str>,
    /// The revision of `locs[0]`.
    first_rev: u64,
    /// Where each op is: segment number << 32 | offset.
    locs: Vec<u64>,
    /// The latest revision (of an op or a snapshot).
    latest: u64,
    /// Snapshots, by revision.
    snapshots: Vec<SnapRef>,
    /// Ops before this revision were dropped.
    floor: u64,
    floor_segment: u64,
}

impl DocIndex {
    fn last_op_rev(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first_rev + self.locs.len() as u64 - 1)
    }

    fn first_available(&self) -> u64 {
        let first = if self.locs.is_empty() { self.latest + 1 } else { self.first_rev };
        first.max(self.floor)
    }

    fn oldest_readable(&self) -> u64 {
        let first = self.first_available();
        let floor_base = self.floor.saturating_sub(1);
        if first <= 1 {
            return floor_base;
        }
        self.snapshots.iter().map(|s| s.rev).find(|&b| b + 1 >= first && b >= floor_base).unwrap_or(self.latest)
    }

    /// The snapshots that newer ones supersede: all but the newest, the one history reads
    /// start from, and those without which more than `replay` ops would lie between two
    /// kept snapshots.
    fn superseded(&self, replay: u64) -> Vec<SnapRef> {
        let first = self.first_available();
        // The revision a history read can start from without a snapshot: 0 while every op
        // since the first is still in the log.
        let mut base = (first <= 1).then_some(0);
        let mut out = Vec::new();
        for pair in self.snapshots.windows(2) {
            let (s, next) = (&pair[0], pair[1].rev);
            match base {
                None if s.rev + 1 >= first => base = Some(s.rev),
                None => {}
                Some(b) if next - b <= replay => out.push(s.clone()),
                Some(_) => base = Some(s.rev),
            }
        }
        out
    }

    fn add_snapshot(&mut self, s: SnapRef) {
        match self.snapshots.binary_search_by_key(&s.rev, |x| x.rev) {
            Ok(i) => self.snapshots[i] = s,
            Err(i) => self.snapshots.insert(i, s),
        }
    }
}

#[derive(Debug)]
/// The next segment, being made on a thread of its own (zero-filling and syncing 64 MiB on
/// the storage thread stalled appends by ~100 ms once per segment).
struct Preparing {
    number: u64,
    handle: std::thread::JoinHandle<Result<Box<dyn FileHandle>, StorageError>>,
}

/// Makes segment `number` whole (header, zeros), syncs it and renames it into place.
fn make_segment(fs: &dyn Fs, dir: &Path, number: u64, size: u32) -> Result<Box<dyn FileHandle>, StorageError> {
    let tmp = dir.join(format!("{}.tmp", segment_name(number)));
    let path = dir.join(segment_name(number));
    let io = |e| StorageError::io(format!("creating segment {}", path.display()), e);
    let mut f = fs.open(&tmp, true).map_err(io)?;
    f.set_len(0).map_err(io)?;
    f.write_all_at(&SegmentHeader { number, size }.encode(), 0).map_err(io)?;
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = SEGMENT_HEADER_BYTES as u64;
    while at < u64::from(size) {
        let n = (u64::from(size) - at).min(ZERO_CHUNK as u64) as usize;
        f.write_all_at(&zeros[..n], at).map_err(io)?;
        at += n as u64;
    }
    f.sync_data().map_err(io)?;
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(f)
}

/// The embedded op log of one core.
pub struct LocalLog {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    blobs: Arc<dyn BlobStore>,
    opts: LocalOptions,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    docs: FastMap<Arc<str>, DocIndex>,
    poisoned: Option<String>,
    buf: Vec<u8>,
    unsynced: Vec<u64>,
    last_sync: Instant,
    preparing: Option<Preparing>,
    report: RecoveryReport,
}

impl std::fmt::Debug for LocalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("active", &self.active)
            .field("documents", &self.docs.len())
            .field("fsync", &self.opts.fsync)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

const ZERO_CHUNK: usize = 1 << 20;

fn segment_name(number: u64) -> String {
    format!("{number:020}.log")
}

fn pack(segment: u64, offset: u64) -> u64 {
    ((segment & 0xffff_ffff) << 32) | offset
}

/// The blob key of a snapshot of `doc` at `rev`: the id with unsafe bytes %-escaped (long ids
/// shortened, with a hash of the whole id).
pub fn snapshot_key(doc: &str, rev: u64) -> String {
    let mut esc = String::new();
    for b in doc.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            esc.push(char::from(b));
        } else {
            esc.push_str(&format!("%{b:02X}"));
        }
    }
    if esc.len() > 160 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in doc.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        esc.truncate(120);
        esc = format!("{esc}-{h:016x}-{}", doc.len());
    }
    format!("snapshots/{esc}/{rev:020}.snap")
}

impl LocalLog {
    /// Opens (creating if needed) the log in `dir`, recovering what is there.
    pub fn open(
        dir: impl Into<PathBuf>,
        blobs: Arc<dyn BlobStore>,
        fs: Arc<dyn Fs>,
        opts: LocalOptions,
    ) -> Result<Self, StorageError> {
        let dir = dir.into();
        if opts.segment_bytes < 64 * 1024 || !opts.segment_bytes.is_multiple_of(4096) {
            return Err(StorageError::Invalid(format!(
                "segment size {} must be a multiple of 4096 and at least 65536",
                opts.segment_bytes
            )));
        }
        let started = Instant::now();
        fs.create_dir_all(&dir).map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        let mut log = Self {
            dir,
            fs,
            blobs,
            opts,
            segments: BTreeMap::new(),
            active: 1,
            docs: FastMap::default(),
            poisoned: None,
            buf: Vec::new(),
            unsynced: Vec::new(),
            last_sync: Instant::now(),
            preparing: None,
            report: RecoveryReport::default(),
        };
        log.recover()?;
        if log.segments.is_empty() {
            log.finish_preparing(1)?;
        }
        log.active = log
            .segments
            .iter()
            .rev()
            .find(|(_, s)| s.end > SEGMENT_HEADER_BYTES as u64)
            .or_else(|| log.segments.iter().next())
            .map(|(n, _)| *n)
            .expect("at least one segment");
        log.report.documents = log.docs.len();
        log.report.elapsed = started.elapsed();
        Ok(log)
    }

    /// What opening found and did.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error that poisoned the log, if one did.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Segment files, and bytes of records in them.
    pub fn size(&self) -> (usize, u64) {
        let bytes = self.segments.values().map(|s| s.end - SEGMENT_HEADER_BYTES as u64).sum();
        (self.segments.len(), bytes)
    }

    /// Documents with anything in the log.
    pub fn documents(&self) -> usize {
        self.docs.len()
    }

    fn corrupt(&self, file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { file: file.to_path_buf(), offset, reason: reason.into() }
    }

    fn recover(&mut self) -> Result<(), StorageError> {
        let entries =
            self.fs.list(&self.dir).map_err(|e| StorageError::io(format!("listing {}", self.dir.display()), e))?;
        let mut numbers = Vec::new();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".log.tmp") {
                // A segment that was being prepared: never part of the log.
                self.fs.remove(&path).map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
            } else if let Some(n) = name.strip_suffix(".log").filter(|n| n.len() == 20).and_then(|n| n.parse().ok()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut stop_at: Option<usize> = None;
        for (i, w) in numbers.windows(2).enumerate() {
            if w[1] != w[0] + 1 {
                let missing = self.dir.join(segment_name(w[0] + 1));
                let reason = format!("segment {} is missing (the log jumps from {} to {})", w[0] + 1, w[0], w[1]);
                if !self.opts.repair {
                    return Err(self.corrupt(&missing, 0, reason));
                }
                self.drop_segments_from(&numbers[i + 1..], missing, 0, 0, reason)?;
                stop_at = Some(i + 1);
                break;
            }
        }
        let numbers = &numbers[..stop_at.unwrap_or(numbers.len())];
        // A reader thread reads the next segment while this one is scanned (reading and
        // scanning take about as long each); buffers go back to it for reuse.
        let (fs, dir) = (Arc::clone(&self.fs), self.dir.clone());
        std::thread::scope(|scope| {
            let (loaded_tx, loaded) = std::sync::mpsc::sync_channel::<(u64, Result<Loaded, StorageError>)>(1);
            let (spare_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
            let to_read = numbers.to_vec();
            scope.spawn(move || {
                for n in to_read {
                    let buf = spare.try_recv().unwrap_or_default();
                    if loaded_tx.send((n, read_segment(&*fs, &dir.join(segment_name(n)), buf))).is_err() {
                        return;
                    }
                }
            });
            let result = (|| {
                for (i, &n) in numbers.iter().enumerate() {
                    let (got, segment) = loaded.recv().expect("the reader sends every segment");
                    debug_assert_eq!(got, n);
                    let segment = segment?;
                    let is_tail = !numbers[i + 1..].first().is_some_and(|&next| self.segment_has_data(next));
                    let outcome = self.recover_segment(n, is_tail, segment.file, &segment.data);
                    let _ = spare_tx.send(segment.data);
                    if let Err((offset, reason)) = outcome? {
                        let path = self.dir.join(segment_name(n));
                        if !self.opts.repair {
                            return Err(self.corrupt(&path, offset, reason));
                        }
                        let cleared = self.clear_from(n, offset)?;
                        self.drop_segments_from(&numbers[i + 1..], path, offset, cleared, reason)?;
                        break;
                    }
                }
                Ok(())
            })();
            // Unblocks the reader if it is ahead of a stop.
            drop(loaded);
            result
        })
    }

    fn segment_has_data(&self, number: u64) -> bool {
        let path = self.dir.join(segment_name(number));
        let mut first = [0u8; RECORD_PREFIX_BYTES];
        self.fs
            .open(&path, false)
            .and_then(|f| f.read_exact_at(&mut first, SEGMENT_HEADER_BYTES as u64))
            .map(|()| first != [0; RECORD_PREFIX_BYTES])
            .unwrap_or(true)
    }

    /// Removes segment files (repair), reporting what was dropped.
    fn drop_segments_from(
        &mut self,
        numbers: &[u64],
        file: PathBuf,
        offset: u64,
        bytes_dropped: u64,
        reason: String,
    ) -> Result<(), StorageError> {
        let mut removed = Vec::new();
        for &n in numbers {
            let path = self.dir.join(segment_name(n));
            self.fs.remove(&path).map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
            removed.push(path);
        }
        self.fs.sync_dir(&self.dir).map_err(|e| StorageError::io(format!("syncing {}", self.dir.display()), e))?;
        warn!(file = %file.display(), offset, bytes_dropped, removed = removed.len(), "op log repaired: {reason}");
        self.report.repaired = Some(Repair { reason, file, offset, bytes_dropped, segments_removed: removed });
        Ok(())
    }

    /// Zeroes a segment from `offset` to its end; returns the nonzero bytes cleared.
    fn clear_from(&mut self, number: u64, offset: u64) -> Result<u64, StorageError> {
        let seg = self.segments.get_mut(&number).expect("recovered segment");
        let size = seg.file.size().map_err(|e| StorageError::io(format!("reading {}", seg.path.display()), e))?;
        let mut data = vec![0u8; usize::try_from(size - offset).expect("segment fits memory")];
        seg.file
            .read_exact_at(&mut data, offset)
            .map_err(|e| StorageError::io(format!("reading {}", seg.path.display()), e))?;
        let Some(last) = data.iter().rposition(|&b| b != 0) else { return Ok(0) };
        let zeros = vec![0u8; last + 1];
        let io = |e| StorageError::io(format!("truncating {}", seg.path.display()), e);
        seg.file.write_all_at(&zeros, offset).map_err(io)?;
        seg.file.sync_data().map_err(io)?;
        seg.end = offset;
        Ok(last as u64 + 1)
    }

    /// Reads one segment into the index. The outer error is I/O; the inner one is corruption
    /// at an offset (for the caller to refuse or repair).
    fn recover_segment(
        &mut self,
        number: u64,
        is_tail: bool,
        file: Box<dyn FileHandle>,
        data: &[u8],
    ) -> Result<Result<(), (u64, String)>, StorageError> {
        let path = self.dir.join(segment_name(number));
        let len = data.len() as u64;
        self.report.segments += 1;
        let header = match SegmentHeader::decode(data) {
            Ok(h) => h,
            Err(e) => {
                self.segments.insert(number, self.new_segment_entry(path, file, 0));
                return Ok(Err((0, format!("segment header: {e}"))));
            }
        };
        if header.number != number || u64::from(header.size) != len {
            self.segments.insert(number, self.new_segment_entry(path, file, 0));
            let reason = format!(
                "segment header says number {} and {} bytes; the file is number {number} with {len} bytes",
                header.number, header.size
            );
            return Ok(Err((0, reason)));
        }
        self.segments.insert(number, self.new_segment_entry(path.clone(), file, SEGMENT_HEADER_BYTES as u64));
        let mut at = SEGMENT_HEADER_BYTES;
        let stop = loop {
            if at + RECORD_PREFIX_BYTES > data.len() {
                break None;
            }
            let prefix = RecordPrefix::read(&data[at..]).expect("8 bytes are there");
            if prefix.len == 0 {
                break None;
            }
            if at + prefix.total() > data.len() {
                break Some(format!("record of {} bytes runs past the end of the segment", prefix.len));
            }
            match decode_header(&data[at..at + prefix.total()]) {
                Ok(d) => {
                    if let Err(reason) = self.index(number, at as u64, d.kind, d.doc, d.rev, d.time_ms, d.key) {
                        // A record that checks out but breaks the document's revision order
                        // is never a torn write.
                        return Ok(Err((at as u64, reason)));
                    }
                    self.report.records += 1;
                    self.report.bytes += d.total as u64;
                    at += d.total;
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        self.segments.get_mut(&number).expect("inserted above").end = at as u64;
        let nonzero = data[at..].iter().any(|&b| b != 0);
        if !nonzero {
            return Ok(Ok(()));
        }
        if let Some((later, batch)) = later_batch_record(data, at) {
            let what = stop.unwrap_or_else(|| "zeros".into());
            return Ok(Err((
                at as u64,
                format!("{what}, followed by a valid record at offset {later} of a later write (batch at {batch})"),
            )));
        }
        if !is_tail {
            let what = stop.unwrap_or_else(|| "stray bytes after the last record".into());
            return Ok(Err((at as u64, format!("{what}, in a segment that later segments follow"))));
        }
        // The torn last write of a crash: nothing after it was ever durable.
        let cleared = self.clear_from(number, at as u64)?;
        warn!(file = %path.display(), offset = at, bytes = cleared, "op log: truncated a torn last write");
        self.report.torn_tail = Some((path, at as u64, cleared));
        Ok(Ok(()))
    }

    fn new_segment_entry(&self, path: PathBuf, file: Box<dyn FileHandle>, end: u64) -> Segment {
        Segment { path, file, end, max_time_ms: 0, docs: FastMap::default(), markers: Vec::new() }
    }

    /// Adds a record read at recovery (or just written) to the index.
    #[allow(clippy::too_many_arguments)]
    fn index(
        &mut self,
        segment: u64,
        offset: u64,
        kind: Kind,
        doc: &str,
        rev: u64,
        time_ms: u64,
        key: &str,
    ) -> Result<(), String> {
        if !self.docs.contains_key(doc) {
            let name: Arc<str> = doc.into();
            self.docs.insert(Arc::clone(&name), DocIndex { name, ..DocIndex::default() });
        }
        let idx = self.docs.get_mut(doc).expect("inserted above");
        let doc = Arc::clone(&idx.name);
        match kind {
            Kind::Op | Kind::Note => {
                match idx.last_op_rev() {
                    Some(last) if rev != last + 1 => {
                        return Err(format!("op of {doc:?} at revision {rev} follows revision {last}"));
                    }
                    Some(_) => {}
                    None => idx.first_rev = rev,
                }
                idx.locs.push(pack(segment, offset));
            }
            Kind::Snapshot => {
                idx.add_snapshot(SnapRef { rev, time_ms, key: key.to_owned(), segment });
            }
            Kind::Floor => {
                if rev >= idx.floor {
                    idx.floor = rev;
                    idx.floor_segment = segment;
                }
            }
            Kind::SnapshotDropped => idx.snapshots.retain(|s| s.rev != rev),
        }
        idx.latest = idx.latest.max(rev);
        let seg = self.segments.get_mut(&segment).expect("segment of an indexed record");
        seg.max_time_ms = seg.max_time_ms.max(time_ms);
        match kind {
            Kind::Op | Kind::Note => {
                let m = seg.docs.entry(doc).or_default();
                *m = (*m).max(rev);
            }
            k => seg.markers.push((doc, k, rev)),
        }
        Ok(())
    }

    fn check_poison(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(e) => Err(StorageError::Poisoned(e.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: StorageError) -> StorageError {
        let msg = e.to_string();
        tracing::error!("op log poisoned, refusing all further writes: {msg}");
        self.poisoned = Some(msg.clone());
        StorageError::Poisoned(msg)
    }

    /// Writes records at the tail (rotating segments as needed), syncs per the policy (or
    /// always, with `force_sync`) and indexes them.
    fn write_records(&mut self, records: &[Record], force_sync: bool) -> Result<(), StorageError> {
        self.check_poison()?;
        if records.is_empty() {
            return Ok(());
        }
        let max = u64::from(self.opts.segment_bytes) - SEGMENT_HEADER_BYTES as u64;
        // (segment, offset of the chunk, chunk bytes, records' offsets)
        let mut chunks: Vec<(u64, u64, Vec<u8>, Vec<u64>)> = Vec::new();
        let mut seg = self.active;
        let mut start = self.segments[&seg].end;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut offsets = Vec::new();
        for r in records {
            let before = buf.len();
            r.encode_into(start, &mut buf).map_err(|e| StorageError::Invalid(e.to_string()))?;
            let n = (buf.len() - before) as u64;
            if n > max {
                return Err(StorageError::Invalid(format!("a record of {n} bytes does not fit a {max}-byte segment")));
            }
            if start + buf.len() as u64 > u64::from(self.opts.segment_bytes) {
                buf.truncate(before);
                if !buf.is_empty() {
                    chunks.push((seg, start, std::mem::take(&mut buf), std::mem::take(&mut offsets)));
                }
                seg += 1;
                start = SEGMENT_HEADER_BYTES as u64;
                r.encode_into(start, &mut buf).map_err(|e| StorageError::Invalid(e.to_string()))?;
                offsets.push(start);
            } else {
                offsets.push(start + before as u64);
            }
        }
        chunks.push((seg, start, buf, offsets));
        for (seg, start, bytes, _) in &chunks {
            if !self.segments.contains_key(seg) {
                self.finish_preparing(*seg)?;
            }
            let s = self.segments.get_mut(seg).expect("prepared above");
            if let Err(e) = s.file.write_all_at(bytes, *start) {
                let e = StorageError::io(format!("writing {} at {start}", s.path.display()), e);
                return Err(self.poison(e));
            }
            if !self.unsynced.contains(seg) {
                self.unsynced.push(*seg);
            }
        }
        let sync = force_sync
            || match self.opts.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
                FsyncPolicy::Never => false,
            };
        if sync {
            self.sync_unsynced()?;
        }
        let mut i = 0;
        for (seg, start, bytes, offsets) in chunks {
            self.active = seg;
            self.segments.get_mut(&seg).expect("written").end = start + bytes.len() as u64;
            for off in offsets {
                let r = &records[i];
                let (kind, key) = match r {
                    Record::Op(_) => (Kind::Op, ""),
                    Record::Snapshot { key, .. } => (Kind::Snapshot, key.as_str()),
                    Record::Floor { .. } => (Kind::Floor, ""),
                    Record::SnapshotDropped { .. } => (Kind::SnapshotDropped, ""),
                };
                if let Err(reason) = self.index(seg, off, kind, r.doc(), r.rev(), r.time_ms(), key) {
                    return Err(self.poison(StorageError::Invalid(format!("indexing a written record: {reason}"))));
                }
                i += 1;
            }
            self.buf = bytes;
        }
        // Get the next segment ready, off this thread, once this one is half full.
        if self.segments[&self.active].end > u64::from(self.opts.segment_bytes) / 2 {
            self.prepare_next(self.active + 1);
        }
        Ok(())
    }

    fn sync_unsynced(&mut self) -> Result<(), StorageError> {
        for seg in std::mem::take(&mut self.unsynced) {
            let s = self.segments.get_mut(&seg).expect("written segment");
            if let Err(e) = s.file.sync_data() {
                let e = StorageError::io(format!("fdatasync {}", s.path.display()), e);
                return Err(self.poison(e));
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Starts making segment `number` on a thread of its own, unless it exists or is under way.
    fn prepare_next(&mut self, number: u64) {
        if self.segments.contains_key(&number) || self.preparing.is_some() {
            return;
        }
        let (fs, dir, size) = (Arc::clone(&self.fs), self.dir.clone(), self.opts.segment_bytes);
        let spawned = std::thread::Builder::new()
            .name("tandem-segment".into())
            .spawn(move || make_segment(&*fs, &dir, number, size));
        // Without a thread, the segment is made at rotation instead.
        if let Ok(handle) = spawned {
            self.preparing = Some(Preparing { number, handle });
        }
    }

    /// Makes sure segment `number` exists: waits for its thread, or makes it now.
    fn finish_preparing(&mut self, number: u64) -> Result<(), StorageError> {
        if self.segments.contains_key(&number) {
            return Ok(());
        }
        let made = match self.preparing.take() {
            Some(p) if p.number == number => {
                p.handle.join().unwrap_or_else(|_| Err(StorageError::Invalid("the segment thread panicked".into())))
            }
            other => {
                if let Some(p) = other {
                    // A segment for another number (cannot happen: segments go in order).
                    let _ = p.handle.join();
                }
                make_segment(&*self.fs, &self.dir, number, self.opts.segment_bytes)
            }
        };
        match made {
            Ok(file) => {
                let entry =
                    self.new_segment_entry(self.dir.join(segment_name(number)), file, SEGMENT_HEADER_BYTES as u64);
                self.segments.insert(number, entry);
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    fn doc_index(&self, doc: &str) -> Option<&DocIndex> {
        self.docs.get(doc)
    }

    fn read_at(&self, loc: u64) -> Result<Decoded, StorageError> {
        let (number, offset) = (self.segment_number(loc >> 32), loc & 0xffff_ffff);
        let seg = &self.segments[&number];
        let io = |e| StorageError::io(format!("reading {} at {offset}", seg.path.display()), e);
        let mut head = [0u8; 256];
        let avail = (seg.end - offset).min(head.len() as u64) as usize;
        seg.file.read_exact_at(&mut head[..avail], offset).map_err(io)?;
        let prefix = RecordPrefix::read(&head[..avail]).map_err(|e| self.corrupt(&seg.path, offset, e.to_string()))?;
        let total = prefix.total();
        if offset + total as u64 > seg.end {
            return Err(self.corrupt(&seg.path, offset, "record runs past the end of the log"));
        }
        let decoded = if total <= avail {
            decode_record(&head[..total])
        } else {
            let mut b = vec![0u8; total];
            seg.file.read_exact_at(&mut b, offset).map_err(io)?;
            decode_record(&b)
        };
        decoded.map_err(|e| self.corrupt(&seg.path, offset, e.to_string()))
    }

    /// The full segment number of a packed (low 32 bits) one.
    fn segment_number(&self, low: u64) -> u64 {
        let active = self.active;
        let candidate = (active & !0xffff_ffff) | low;
        if candidate > active { candidate - (1 << 32) } else { candidate }
    }

    fn write_snapshot_marker(&mut self, doc: &str, rev: u64, time_ms: u64, key: String) -> Result<(), StorageError> {
        self.write_records(&[Record::Snapshot { doc: doc.into(), rev, time_ms, key }], false)
    }
}

/// The first decodable record after `at` that belongs to a later write batch than one that
/// began at or before `at`: proof that the bytes at `at` were durable once.
fn later_batch_record(data: &[u8], at: usize) -> Option<(usize, u64)> {
    let mut off = at + 8;
    while off + RECORD_PREFIX_BYTES <= data.len() {
        if data[off..off + 4] != [0; 4] {
            let prefix = RecordPrefix::read(&data[off..]).expect("8 bytes");
            if off + prefix.total() <= data.len()
                && let Ok(d) = decode_header(&data[off..off + prefix.total()])
                && d.batch_start > at as u64
            {
                return Some((off, d.batch_start));
            }
        }
        off += 8;
    }
    None
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        // A segment still being made finishes before the log is gone, so a log opened again
        // right away never races its rename.
        if let Some(p) = self.preparing.take() {
            let _ = p.handle.join();
        }
    }
}

/// The wall clock, milliseconds since the Unix epoch (the time records carry).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OpLog for LocalLog {
    fn append(&mut self, ops: &[LogOp]) -> Result<Appended, StorageError> {
        self.check_poison()?;
        let mut next: FastMap<&str, u64> = FastMap::default();
        let mut records = Vec::with_capacity(ops.len());
        let mut duplicates = 0;
        for op in ops {
            let doc: &str = &op.doc;
            let latest = match next.get(doc) {
                Some(&r) => r,
                None => self.doc_index(doc).map_or(0, |i| i.latest),
            };
            let rev = op.rev();
            if rev == latest + 1 {
                next.insert(doc, rev);
                records.push(Record::Op(op.clone()));
            } else if rev <= latest && !next.contains_key(doc) {
                let existing = self.read(doc, rev, rev)?;
                let e = &existing[0].commit;
                if e.author == op.commit.author && e.client_seq == op.commit.client_seq {
                    duplicates += 1;
                } else {
                    return Err(StorageError::Conflict {
                        doc: doc.to_owned(),
                        rev,
                        existing_author: e.author.0,
                        existing_seq: e.client_seq,
                    });
                }
            } else {
                return Err(StorageError::RevisionGap { doc: doc.to_owned(), expected: latest + 1, got: rev });
            }
        }
        self.write_records(&records, false)?;
        Ok(Appended { written: records.len(), duplicates })
    }

    fn read(&mut self, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError> {
        let Some(idx) = self.doc_index(doc) else {
            return if to == 0 {
                Ok(Vec::new())
            } else {
                Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: to, latest: 0 })
            };
        };
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let last = idx.last_op_rev().unwrap_or(0);
        if to > last.max(idx.latest) {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: to, latest: idx.latest });
        }
        if from < idx.first_available() || to > last {
            return Err(StorageError::HistoryUnavailable {
                doc: doc.to_owned(),
                rev: from,
                oldest: idx.oldest_readable(),
            });
        }
        let locs: Vec<u64> = idx.locs[(from - idx.first_rev) as usize..=(to - idx.first_rev) as usize].to_vec();
        let mut out = Vec::with_capacity(locs.len());
        for (i, loc) in locs.into_iter().enumerate() {
            let d = self.read_at(loc)?;
            match d.record {
                Record::Op(op) if &*op.doc == doc && op.rev() == from + i as u64 => out.push(op),
                other => {
                    let (number, offset) = (self.segment_number(loc >> 32), loc & 0xffff_ffff);
                    return Err(self.corrupt(
                        &self.segments[&number].path,
                        offset,
                        format!(
                            "index expected op {} of {doc:?}, found {:?} revision {}",
                            from + i as u64,
                            other.doc(),
                            other.rev()
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn latest_rev(&mut self, doc: &str) -> Result<u64, StorageError> {
        Ok(self.doc_index(doc).map_or(0, |i| i.latest))
    }

    fn put_snapshot(&mut self, doc: &str, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.check_poison()?;
        let latest = self.doc_index(doc).map_or(0, |i| i.latest);
        if snapshot.rev > latest {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: snapshot.rev, latest });
        }
        let key = snapshot_key(doc, snapshot.rev);
        self.blobs.put(&key, &snapshot.encode(doc))?;
        self.write_snapshot_marker(doc, snapshot.rev, snapshot.time_ms, key)?;
        // Snapshots the new one supersedes go: first a durable record saying so (recovery
        // must not look for them), then their blobs.
        let gone = self.doc_index(doc).map(|i| i.superseded(self.opts.snapshot_replay_ops)).unwrap_or_default();
        if gone.is_empty() {
            return Ok(());
        }
        let time_ms = now_ms();
        let records: Vec<Record> =
            gone.iter().map(|s| Record::SnapshotDropped { doc: doc.into(), rev: s.rev, time_ms }).collect();
        self.write_records(&records, true)?;
        for s in gone {
            self.blobs.delete(&s.key)?;
        }
        Ok(())
    }

    fn snapshot_at_or_before(&mut self, doc: &str, rev: u64) -> Result<Option<Snapshot>, StorageError> {
        let Some(s) = self.doc_index(doc).and_then(|i| i.snapshots.iter().rev().find(|s| s.rev <= rev)) else {
            return Ok(None);
        };
        let key = s.key.clone();
        let bytes = self
            .blobs
            .get(&key)?
            .ok_or_else(|| StorageError::BadBlob { key: key.clone(), reason: "the snapshot is missing".into() })?;
        let snap = Snapshot::decode(&bytes, doc, &key)?;
        if snap.rev != s.rev {
            return Err(StorageError::BadBlob {
                key,
                reason: format!("revision {} where {} was expected", snap.rev, s.rev),
            });
        }
        Ok(Some(snap))
    }

    fn drop_history_before(&mut self, doc: &str, rev: u64) -> Result<(), StorageError> {
        let Some(idx) = self.doc_index(doc) else {
            return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
        };
        if rev <= idx.floor {
            return Ok(());
        }
        if rev > idx.latest + 1 {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev, latest: idx.latest });
        }
        if !idx.snapshots.iter().any(|s| s.rev + 1 >= rev) {
            return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
        }
        self.write_records(&[Record::Floor { doc: doc.into(), rev, time_ms: now_ms() }], false)
    }

    fn oldest_readable(&mut self, doc: &str) -> Result<u64, StorageError> {
        Ok(self.doc_index(doc).map_or(0, DocIndex::oldest_readable))
    }

    fn compact(&mut self, now_ms: u64) -> Result<Compacted, StorageError> {
        self.check_poison()?;
        let cutoff = now_ms.saturating_sub(u64::try_from(self.opts.retention.as_millis()).unwrap_or(u64::MAX));
        // Documents that keep an old segment alive only for want of a snapshot get one.
        let mut need_snapshot: Vec<Arc<str>> = Vec::new();
        for (&n, seg) in &self.segments {
            if n >= self.active || seg.max_time_ms >= cutoff {
                break;
            }
            for (doc, &max_rev) in &seg.docs {
                let idx = &self.docs[doc];
                if idx.snapshots.last().is_none_or(|s| s.rev < max_rev) && !need_snapshot.contains(doc) {
                    need_snapshot.push(Arc::clone(doc));
                }
            }
        }
        for doc in need_snapshot {
            let state = self.load(&doc)?.into_state(tandem_engine::Limits::default())?;
            self.put_snapshot(&doc, &Snapshot::of(&state, now_ms))?;
        }
        // The deletable prefix of segments.
        let mut deletable = Vec::new();
        for (&n, seg) in &self.segments {
            if n >= self.active {
                break;
            }
            let old = seg.max_time_ms < cutoff;
            let covered = seg.docs.iter().all(|(doc, &max_rev)| {
                let idx = &self.docs[doc];
                idx.snapshots.last().is_some_and(|s| s.rev >= max_rev) && (old || max_rev < idx.floor)
            });
            if !covered {
                break;
            }
            deletable.push(n);
        }
        let mut out = Compacted::default();
        if deletable.is_empty() {
            return Ok(out);
        }
        // Carry forward the latest snapshot and floor records of those segments.
        let mut carry = Vec::new();
        for n in &deletable {
            for (doc, kind, rev) in &self.segments[n].markers {
                let idx = &self.docs[doc];
                match kind {
                    Kind::Snapshot => {
                        if let Some(s) = idx.snapshots.last().filter(|s| s.rev == *rev && s.segment == *n) {
                            carry.push(Record::Snapshot {
                                doc: Arc::clone(doc),
                                rev: *rev,
                                time_ms: s.time_ms,
                                key: s.key.clone(),
                            });
                        }
                    }
                    Kind::Floor if idx.floor == *rev && idx.floor_segment == *n => {
                        carry.push(Record::Floor { doc: Arc::clone(doc), rev: *rev, time_ms: now_ms });
                    }
                    _ => {}
                }
            }
        }
        self.write_records(&carry, true)?;
        // Old snapshots referenced only from the deleted segments go too.
        for n in &deletable {
            let docs: Vec<Arc<str>> = self.segments[n].markers.iter().map(|m| Arc::clone(&m.0)).collect();
            for doc in docs {
                let idx = self.docs.get_mut(&doc).expect("indexed");
                let (gone, kept): (Vec<SnapRef>, Vec<SnapRef>) = idx.snapshots.drain(..).partition(|s| s.segment == *n);
                idx.snapshots = kept;
                for s in gone {
                    self.blobs.delete(&s.key)?;
                    out.snapshots_deleted += 1;
                }
            }
        }
        for n in deletable {
            let seg = self.segments.remove(&n).expect("listed above");
            for (doc, max_rev) in &seg.docs {
                let idx = self.docs.get_mut(doc).expect("indexed");
                if idx.locs.is_empty() || *max_rev < idx.first_rev {
                    continue;
                }
                let drop = usize::try_from(max_rev + 1 - idx.first_rev).expect("fits").min(idx.locs.len());
                idx.locs.drain(..drop);
                idx.first_rev += drop as u64;
            }
            out.segments_deleted += 1;
            out.bytes_freed += u64::from(self.opts.segment_bytes);
            drop(seg.file);
            self.fs.remove(&seg.path).map_err(|e| StorageError::io(format!("removing {}", seg.path.display()), e))?;
        }
        self.fs.sync_dir(&self.dir).map_err(|e| StorageError::io(format!("syncing {}", self.dir.display()), e))?;
        info!(segments = out.segments_deleted, snapshots = out.snapshots_deleted, "op log compacted");
        Ok(out)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_poison()?;
        self.sync_unsynced()
    }
}
