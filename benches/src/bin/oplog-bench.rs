//! The op log's benchmarks (issue 4), printed as Markdown: raw `fdatasync` latency on this disk
//! (the floor), durable appends per core with group commit under 1, 100 and 10,000 writers,
//! recovery time per GB, and the time to join a document with a 1M-op history. With
//! `--postgres URL`, the group-commit rows are measured on the PostgreSQL op log too, beside
//! the local log's in the same run (the database at URL gets a fresh `tandem_bench` schema).
//!
//! `cargo run --release -p tandem-benches --bin oplog-bench -- DIR [--recovery-mb N] [--only fdatasync|commit|recovery|join] [--postgres URL]`
//! DIR must be on the disk to measure (not tmpfs); it is emptied first.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tandem_engine::{Attributes, ClientId, Commit, Delta, DocState, Limits, Submitted};
use tandem_net::codec::encode_server;
use tandem_net::protocol::{Encoding, ServerMsg};
use tandem_storage::postgres::{self, PostgresLog, PostgresOptions};
use tandem_storage::{FsyncPolicy, LocalBlobs, LocalLog, LocalOptions, LogOp, OpLog, RealFs, Snapshot};

fn open(dir: &Path, fsync: FsyncPolicy) -> LocalLog {
    let blobs = Arc::new(LocalBlobs::open(dir.join("blobs"), Arc::new(RealFs)).unwrap());
    let opts = LocalOptions { fsync, ..LocalOptions::default() };
    LocalLog::open(dir.join("oplog"), blobs, Arc::new(RealFs), opts).unwrap()
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// 4 KiB overwrites of a pre-zeroed file, each followed by `fdatasync`: the physical floor.
fn raw_fdatasync(dir: &Path, samples: usize) -> Histogram<u64> {
    let path = dir.join("raw-fdatasync");
    let f = std::fs::File::options().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    f.write_all_at(&vec![0u8; samples * 4096], 0).unwrap();
    f.sync_all().unwrap();
    let mut h = Histogram::new(3).unwrap();
    let block = vec![7u8; 4096];
    for i in 0..samples {
        f.write_all_at(&block, (i * 4096) as u64).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    drop(f);
    std::fs::remove_file(path).unwrap();
    h
}

fn keystroke(doc: &str, rev: u64, author: u64) -> LogOp {
    let delta = Delta::new().retain(rev as usize % 64, Attributes::NONE).insert("k", Attributes::NONE);
    LogOp { doc: doc.into(), time_ms: 0, commit: Arc::new(Commit::op(rev, ClientId(author), rev, delta)) }
}

/// Closed loop, as the server runs it: each writer has one op outstanding; a core gathers the
/// ops of released writers into the next batch while one batch is with the storage thread.
fn group_commit(mut log: Box<dyn OpLog + Send>, writers: usize, duration: Duration) -> (f64, Histogram<u64>, f64) {
    let (to_storage, storage_rx) = mpsc::sync_channel::<Vec<LogOp>>(1);
    let (done_tx, done) = mpsc::sync_channel::<()>(1);
    let storage = std::thread::spawn(move || {
        for batch in storage_rx {
            log.append(&batch).unwrap();
            done_tx.send(()).unwrap();
        }
    });
    // Each writer edits its own document (documents are independent sequences).
    let docs: Vec<String> = (0..writers).map(|w| format!("doc-{w}")).collect();
    let mut revs = vec![0u64; writers];
    let mut h = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    let mut ops = 0u64;
    let mut batches = 0u64;
    // Every writer submits at once; afterwards, the writers of each durable batch resubmit.
    let mut ready: Vec<usize> = (0..writers).collect();
    let mut inflight: Option<(Instant, Vec<usize>)> = None;
    loop {
        let mut gathered = Vec::with_capacity(ready.len());
        let submitted = Instant::now();
        for &w in &ready {
            revs[w] += 1;
            gathered.push(keystroke(&docs[w], revs[w], w as u64));
        }
        let who = std::mem::take(&mut ready);
        if let Some((sent, prev)) = inflight.take() {
            done.recv().unwrap();
            let lat = sent.elapsed().as_micros() as u64;
            for _ in &prev {
                h.record(lat).unwrap();
            }
            ops += prev.len() as u64;
            batches += 1;
            ready = prev;
        }
        if start.elapsed() >= duration {
            break;
        }
        if !gathered.is_empty() {
            to_storage.send(gathered).unwrap();
            inflight = Some((submitted, who));
        } else if ready.is_empty() {
            break;
        }
    }
    if inflight.is_some() {
        done.recv().unwrap();
    }
    drop(to_storage);
    storage.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    (ops as f64 / secs, h, ops as f64 / batches.max(1) as f64)
}

/// Writes about `mb` MB of ops over 1,000 documents, then times opening (recovering) the log.
fn recovery(dir: &Path, mb: u64) -> (f64, u64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let mut log = open(dir, FsyncPolicy::Never);
    let mut revs = vec![0u64; 1000];
    let mut batch = Vec::with_capacity(10_000);
    let mut written = 0u64;
    while log.size().1 < mb << 20 {
        for i in 0..10_000 {
            let d = i % 1000;
            revs[d] += 1;
            batch.push(keystroke(&format!("doc-{d}"), revs[d], d as u64));
        }
        log.append(&batch).unwrap();
        written += batch.len() as u64;
        batch.clear();
    }
    log.sync().unwrap();
    let bytes = log.size().1;
    drop(log);
    // Drop the page cache's copy when allowed (root), so recovery reads the disk; then again
    // with the log in the page cache (a restart right after a stop), which isolates the scan.
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    let t = Instant::now();
    let log = open(dir, FsyncPolicy::Always);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(log.recovery().records, written);
    drop(log);
    let t = Instant::now();
    let log = open(dir, FsyncPolicy::Always);
    let warm = t.elapsed().as_secs_f64();
    assert_eq!(log.recovery().records, written);
    eprintln!("recovery read {} records ({})", written, if cold { "cold cache" } else { "warm cache" });
    let gb = bytes as f64 / (1u64 << 30) as f64;
    (secs / gb, bytes, warm / gb)
}

/// A document with a 1M-op history (snapshots every 1,000 ops, as the server takes them):
/// the time from asking for it to the first frame a joining client gets.
fn join_1m(dir: &Path) -> (Histogram<u64>, u64, usize) {
    let _ = std::fs::remove_dir_all(dir);
    let mut log = open(dir, FsyncPolicy::Never);
    let mut state = DocState::new(Limits::default());
    let mut batch = Vec::new();
    for i in 0..1_000_000u64 {
        let len = state.document().len();
        // Typing with some deleting: the document stays around 10K chars.
        let delta = if len > 10_000 && i % 2 == 0 {
            Delta::new().retain((i as usize * 7919) % (len - 1), Attributes::NONE).delete(1)
        } else {
            Delta::new().retain((i as usize * 104_729) % (len + 1), Attributes::NONE).insert("x", Attributes::NONE)
        };
        let commit = match state.submit(ClientId(1 + i % 8), state.rev(), i + 1, delta).unwrap() {
            Submitted::Applied(c) => c,
            Submitted::Duplicate { .. } => unreachable!(),
        };
        batch.push(LogOp { doc: "big".into(), time_ms: 0, commit });
        if state.rev().is_multiple_of(1000) {
            log.append(&batch).unwrap();
            batch.clear();
            log.put_snapshot("big", &Snapshot::of(&state, 0)).unwrap();
        }
    }
    // A tail after the last snapshot, as a live document has.
    for i in 0..500u64 {
        let len = state.document().len();
        let delta = Delta::new().retain((i as usize * 31) % (len + 1), Attributes::NONE).insert("y", Attributes::NONE);
        if let Submitted::Applied(commit) = state.submit(ClientId(9), state.rev(), 2_000_000 + i, delta).unwrap() {
            batch.push(LogOp { doc: "big".into(), time_ms: 0, commit });
        }
    }
    log.append(&batch).unwrap();
    log.sync().unwrap();
    let expected = state.document().text();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut frame_len = 0;
    for _ in 0..50 {
        let t = Instant::now();
        let loaded = log.load("big").unwrap();
        let st = loaded.into_state(Limits::default()).unwrap();
        let msg = ServerMsg::Opened {
            doc: "big".into(),
            rev: st.rev(),
            snapshot: Some(st.document().to_delta()),
            ops: None,
            online: Vec::new(),
            last_seq: None,
            role: None,
        };
        let frame = encode_server(&msg, Encoding::Binary);
        h.record(t.elapsed().as_micros() as u64).unwrap();
        frame_len = frame.len();
        assert_eq!(st.document().text(), expected);
    }
    (h, state.rev(), frame_len)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: oplog-bench DIR [--recovery-mb N]"));
    let mut recovery_mb = 1024;
    let mut only: Option<String> = None;
    let mut postgres: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--recovery-mb" => recovery_mb = args.next().and_then(|v| v.parse().ok()).expect("--recovery-mb N"),
            "--only" => only = args.next(),
            "--postgres" => postgres = Some(args.next().expect("--postgres URL")),
            other => panic!(
                "unknown argument {other:?} (--recovery-mb N, --only fdatasync|commit|recovery|join, --postgres URL)"
            ),
        }
    }
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let raw = raw_fdatasync(&dir, 2000);
    println!("## Raw fdatasync (4 KiB overwrite of a pre-zeroed file), 2000 samples\n");
    println!("p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n", pct(&raw, 0.5), pct(&raw, 0.99), raw.max() as f64 / 1000.0);
    if run("commit") {
        commit_section(&dir, &raw, postgres.as_deref());
    }
    if run("recovery") {
        let (per_gb, bytes, warm_per_gb) = recovery(&dir.join("recovery"), recovery_mb);
        println!(
            "\n## Recovery\n\n{:.1} MB of records: {per_gb:.3} s per GB from a cold page cache, {warm_per_gb:.3} s per GB warm\n",
            bytes as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(dir.join("recovery"));
    }
    if run("join") {
        join_section(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn commit_section(dir: &Path, raw: &Histogram<u64>, postgres: Option<&str>) {
    println!("## Durable appends, one core's log, group commit (fsync = always), 10 s each\n");
    println!(
        "| log | writers | durable ops/s | ops per commit | commit p50 ms | commit p99 ms | p99 / raw fdatasync p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let pg = postgres.map(|url| {
        let opts = PostgresOptions { schema: "tandem_bench".into(), ..PostgresOptions::from_url(url) };
        let _ = postgres::drop_schema(&opts);
        postgres::migrate(&opts).expect("migrating the benchmark's schema");
        opts
    });
    for writers in [1, 100, 10_000] {
        let gc = dir.join(format!("gc-{writers}"));
        let _ = std::fs::remove_dir_all(&gc);
        let mut logs: Vec<(&str, Box<dyn OpLog + Send>)> = vec![("local", Box::new(open(&gc, FsyncPolicy::Always)))];
        if let Some(opts) = &pg {
            // Each row on fresh tables: the same documents start at revision 1 again.
            postgres::drop_schema(opts).expect("dropping the benchmark's schema");
            postgres::migrate(opts).expect("migrating the benchmark's schema");
            logs.push(("postgres", Box::new(PostgresLog::connect(opts.clone()).expect("connecting"))));
        }
        for (name, log) in logs {
            let (rate, h, per_batch) = group_commit(log, writers, Duration::from_secs(10));
            println!(
                "| {name} | {writers} | {rate:.0} | {per_batch:.0} | {:.3} | {:.3} | {:.2} |",
                pct(&h, 0.5),
                pct(&h, 0.99),
                pct(&h, 0.99) / pct(raw, 0.99)
            );
        }
        let _ = std::fs::remove_dir_all(&gc);
    }
    if let Some(opts) = &pg {
        let _ = postgres::drop_schema(opts);
    }
}

fn join_section(dir: &Path) {
    let (h, rev, frame) = join_1m(&dir.join("join"));
    println!(
        "## Join a document with a {rev}-op history (snapshot every 1,000 ops), 50 joins\n\nload + restore + encode the first frame ({frame} bytes): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(&h, 0.5),
        pct(&h, 0.99),
        h.max() as f64 / 1000.0
    );
}
