//! Fault injection on the embedded log's files: each damage gives the specified behaviour
//! (docs/oplog-format.md, "Recovery").

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tandem_storage::conformance::edits;
use tandem_storage::format::{RECORD_PREFIX_BYTES, RecordPrefix, SEGMENT_HEADER_BYTES, decode_record};
use tandem_storage::{FaultyFs, Fs, LocalBlobs, LocalLog, LocalOptions, LogOp, OpLog, RealFs, Snapshot, StorageError};

const SMALL: u32 = 64 * 1024;

fn open_with(dir: &Path, fs: Arc<dyn Fs>, segment_bytes: u32, repair: bool) -> Result<LocalLog, StorageError> {
    let blobs = Arc::new(LocalBlobs::open(dir.join("blobs"), Arc::clone(&fs)).unwrap());
    let opts = LocalOptions { segment_bytes, repair, ..LocalOptions::default() };
    LocalLog::open(dir.join("oplog"), blobs, fs, opts)
}

fn open(dir: &Path, segment_bytes: u32) -> Result<LocalLog, StorageError> {
    open_with(dir, Arc::new(RealFs), segment_bytes, false)
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join("oplog").join(format!("{n:020}.log"))
}

/// (offset, batch start, revision) of each record in a segment file.
fn records(path: &Path) -> Vec<(u64, u64, u64)> {
    let data = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while at + RECORD_PREFIX_BYTES <= data.len() {
        let p = RecordPrefix::read(&data[at..]).unwrap();
        if p.len == 0 {
            break;
        }
        let d = decode_record(&data[at..at + p.total()]).unwrap();
        out.push((at as u64, d.batch_start, d.record.rev()));
        at += d.total;
    }
    out
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

/// One op per batch (each synced), so every record is its own write.
fn log_with_batches(dir: &Path, n: u64, segment_bytes: u32) -> Vec<LogOp> {
    let mut log = open(dir, segment_bytes).unwrap();
    let (ops, _) = edits("doc", 1, n, 0);
    for op in &ops {
        log.append(std::slice::from_ref(op)).unwrap();
    }
    ops
}

#[test]
fn a_torn_last_record_is_truncated_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ops = log_with_batches(dir.path(), 10, 64 << 20);
    let path = segment(dir.path(), 1);
    let recs = records(&path);
    let (last_at, _, _) = recs[9];
    // The last write only half reached the disk.
    let data = std::fs::read(&path).unwrap();
    let half = &data[last_at as usize..last_at as usize + 20];
    write_at(&path, last_at, &vec![0u8; 4096]);
    write_at(&path, last_at, half);
    let mut log = open(dir.path(), 64 << 20).unwrap();
    let torn = log.recovery().torn_tail.clone().expect("a torn tail is reported");
    assert_eq!((torn.0, torn.1), (path.clone(), last_at));
    assert_eq!(log.latest_rev("doc").unwrap(), 9);
    assert_eq!(log.read("doc", 1, 9).unwrap(), ops[..9]);
    // The tail is clean again: the next op lands where the torn one was.
    log.append(&ops[9..]).unwrap();
    drop(log);
    assert_eq!(records(&path)[9].0, last_at);
    let mut log = open(dir.path(), 64 << 20).unwrap();
    assert!(log.recovery().torn_tail.is_none());
    assert_eq!(log.read("doc", 1, 10).unwrap(), ops);
}

#[test]
fn a_zero_filled_tail_with_a_hole_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 64 << 20).unwrap();
    let (ops, _) = edits("doc", 1, 8, 0);
    log.append(&ops[..5]).unwrap();
    // One batch of three records, whose first record never reached the disk.
    log.append(&ops[5..]).unwrap();
    drop(log);
    let path = segment(dir.path(), 1);
    let recs = records(&path);
    let (first_of_batch, batch, _) = recs[5];
    assert_eq!(batch, first_of_batch);
    assert_eq!(recs[6].1, batch, "the batch's records name its start");
    let len = recs[6].0 - first_of_batch;
    write_at(&path, first_of_batch, &vec![0u8; len as usize]);
    let mut log = open(dir.path(), 64 << 20).unwrap();
    assert!(log.recovery().torn_tail.is_some());
    assert_eq!(log.latest_rev("doc").unwrap(), 5);
    assert_eq!(log.read("doc", 1, 5).unwrap(), ops[..5]);
    // A zero-filled tail with nothing after it is simply the end of the log.
    drop(log);
    let log = open(dir.path(), 64 << 20).unwrap();
    assert!(log.recovery().torn_tail.is_none());
}

#[test]
fn a_flipped_byte_mid_log_stops_start_up_and_repair_truncates_there() {
    let dir = tempfile::tempdir().unwrap();
    let ops = log_with_batches(dir.path(), 10, 64 << 20);
    let path = segment(dir.path(), 1);
    let (bad_at, _, bad_rev) = records(&path)[3];
    let mut byte = [0u8; 1];
    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    f.read_exact_at(&mut byte, bad_at + 30).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], bad_at + 30).unwrap();
    drop(f);
    match open(dir.path(), 64 << 20) {
        Err(StorageError::Corrupt { file, offset, reason }) => {
            assert_eq!((file, offset), (path.clone(), bad_at));
            assert!(reason.contains("later write"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let err = open(dir.path(), 64 << 20).unwrap_err().to_string();
    assert!(err.contains("tandem repair") && err.contains(&format!("offset {bad_at}")), "{err}");
    // Repair keeps everything before the bad record and reports what it dropped.
    let mut log = open_with(dir.path(), Arc::new(RealFs), 64 << 20, true).unwrap();
    let repaired = log.recovery().repaired.clone().expect("repair reported");
    assert_eq!((repaired.file, repaired.offset), (path, bad_at));
    assert!(repaired.bytes_dropped > 0);
    assert_eq!(log.latest_rev("doc").unwrap(), bad_rev - 1);
    assert_eq!(log.read("doc", 1, bad_rev - 1).unwrap(), ops[..(bad_rev - 1) as usize]);
    drop(log);
    assert!(open(dir.path(), 64 << 20).is_ok(), "a repaired log opens cleanly");
}

#[test]
fn a_truncated_segment_header_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    log_with_batches(dir.path(), 2000, SMALL);
    assert!(segment(dir.path(), 3).exists(), "the log spans several segments");
    let path = segment(dir.path(), 2);
    OpenOptions::new().write(true).open(&path).unwrap().set_len(10).unwrap();
    match open(dir.path(), SMALL) {
        Err(StorageError::Corrupt { file, offset: 0, reason }) => {
            assert_eq!(file, path);
            assert!(reason.contains("header"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let mut log = open_with(dir.path(), Arc::new(RealFs), SMALL, true).unwrap();
    let repaired = log.recovery().repaired.clone().unwrap();
    assert!(repaired.segments_removed.contains(&segment(dir.path(), 3)));
    let latest = log.latest_rev("doc").unwrap();
    assert!(latest > 0 && latest < 2000);
    assert_eq!(log.read("doc", 1, latest).unwrap().len() as u64, latest);
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let ops = log_with_batches(dir.path(), 2000, SMALL);
    std::fs::remove_file(segment(dir.path(), 2)).unwrap();
    match open(dir.path(), SMALL) {
        Err(StorageError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, segment(dir.path(), 2));
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let mut log = open_with(dir.path(), Arc::new(RealFs), SMALL, true).unwrap();
    let in_first = records(&segment(dir.path(), 1)).len() as u64;
    assert_eq!(log.latest_rev("doc").unwrap(), in_first);
    assert_eq!(log.read("doc", 1, in_first).unwrap(), ops[..in_first as usize]);
}

#[test]
fn a_failed_fdatasync_poisons_the_log_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::default();
    let mut log = open_with(dir.path(), Arc::new(fs.clone()), 64 << 20, false).unwrap();
    let (ops, _) = edits("doc", 1, 6, 0);
    log.append(&ops[..3]).unwrap();
    fs.faults.fail_sync_after.store(1, Ordering::Release);
    let err = log.append(&ops[3..4]).unwrap_err();
    assert!(matches!(err, StorageError::Poisoned(ref m) if m.contains("fdatasync")), "{err}");
    let syncs = fs.faults.syncs.load(Ordering::Acquire);
    // Every later write is refused, and no fdatasync is retried.
    assert!(matches!(log.append(&ops[4..5]), Err(StorageError::Poisoned(_))));
    assert!(matches!(log.sync(), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        log.put_snapshot(
            "doc",
            &Snapshot {
                rev: 1,
                time_ms: 0,
                content: tandem_engine::Delta::new(),
                clients: Vec::new(),
                notes: Default::default()
            }
        ),
        Err(StorageError::Poisoned(_))
    ));
    assert_eq!(fs.faults.syncs.load(Ordering::Acquire), syncs, "a poisoned log does not sync again");
    assert!(log.poisoned().is_some());
    drop(log);
    // A restart recovers what is on disk: the acknowledged ops, at least.
    let mut log = open(dir.path(), 64 << 20).unwrap();
    let latest = log.latest_rev("doc").unwrap();
    assert!(latest == 3 || latest == 4, "latest {latest}");
    assert_eq!(log.read("doc", 1, 3).unwrap(), ops[..3]);
}

#[test]
fn a_failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::default();
    let mut log = open_with(dir.path(), Arc::new(fs.clone()), 64 << 20, false).unwrap();
    let (ops, _) = edits("doc", 1, 4, 0);
    log.append(&ops[..2]).unwrap();
    fs.faults.fail_write_after.store(1, Ordering::Release);
    assert!(matches!(log.append(&ops[2..3]), Err(StorageError::Poisoned(_))));
    assert!(matches!(log.append(&ops[2..3]), Err(StorageError::Poisoned(_))));
    drop(log);
    let mut log = open(dir.path(), 64 << 20).unwrap();
    assert_eq!(log.latest_rev("doc").unwrap(), 2);
}

#[test]
fn compaction_deletes_covered_segments_and_keeps_what_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), SMALL).unwrap();
    let (ops, _) = edits("doc", 1, 3000, 0);
    for chunk in ops.chunks(10) {
        log.append(chunk).unwrap();
    }
    let (segments_before, _) = log.size();
    assert!(segments_before >= 5, "{segments_before} segments");
    // Within retention, nothing goes.
    let now = ops[2999].time_ms + 1000;
    assert_eq!(log.compact(now).unwrap().segments_deleted, 0);
    // Past retention, compaction snapshots the document itself and deletes old segments.
    let later = now + 31 * 24 * 3600 * 1000;
    let done = log.compact(later).unwrap();
    assert!(done.segments_deleted >= segments_before - 2, "{done:?}");
    for n in 1..=done.segments_deleted as u64 {
        assert!(!segment(dir.path(), n).exists(), "segment {n} still there");
    }
    let oldest = log.oldest_readable("doc").unwrap();
    assert_eq!(oldest, 3000, "the snapshot compaction took is the oldest readable state");
    let full = log.document_at("doc", 3000).unwrap();
    drop(log);
    // The snapshot pointer was carried forward: a restart finds it.
    let mut log = open(dir.path(), SMALL).unwrap();
    assert_eq!(log.latest_rev("doc").unwrap(), 3000);
    assert_eq!(log.document_at("doc", 3000).unwrap(), full);
    let state = log.load("doc").unwrap().into_state(tandem_engine::Limits::default()).unwrap();
    assert_eq!(state.rev(), 3000);
    let (more, _) = edits("doc", 3001, 1, full.len());
    log.append(&more).unwrap();
}

#[test]
fn superseded_snapshots_are_dropped_and_stay_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 64 << 20).unwrap();
    let (ops, _) = edits("doc", 1, 3000, 0);
    let state_at = |rev: u64| {
        let loaded = tandem_storage::Loaded { snapshot: None, ops: ops[..rev as usize].to_vec() };
        loaded.into_state(tandem_engine::Limits::default()).unwrap()
    };
    let snapshots = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = walk(&dir.join("blobs"));
        names.sort();
        names
    };
    log.append(&ops).unwrap();
    // Snapshots a few ops apart (as large ops make them): only the newest stays...
    for rev in [1, 2, 4, 8] {
        log.put_snapshot("doc", &Snapshot::of(&state_at(rev), rev)).unwrap();
    }
    assert_eq!(snapshots(dir.path()).len(), 1, "{:?}", snapshots(dir.path()));
    // ...while snapshots more than snapshot_replay_ops (1000) apart are all kept, so reading
    // history replays at most that many ops.
    for rev in [1200, 2100, 2200] {
        log.put_snapshot("doc", &Snapshot::of(&state_at(rev), rev)).unwrap();
    }
    let kept = snapshots(dir.path());
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept.iter().any(|k| k.ends_with("00000000000000000008.snap")), "{kept:?}");
    // 2100 is not needed: 1200 and 2200 are within 1000 ops of each other.
    assert!(!kept.iter().any(|k| k.ends_with("00000000000000002100.snap")), "{kept:?}");
    drop(log);
    // Recovery knows they are gone: every revision still reads, and loads use the newest.
    let mut log = open(dir.path(), 64 << 20).unwrap();
    assert_eq!(log.load("doc").unwrap().snapshot.map(|s| s.rev), Some(2200));
    for rev in [3, 8, 1500, 2150, 3000] {
        assert_eq!(log.document_at("doc", rev).unwrap(), state_at(rev).document().clone(), "revision {rev}");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
