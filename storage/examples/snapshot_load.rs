//! Loading a document whose state is in a snapshot, from the local blob store and from S3
//! (a real s3s-fs, started here), for a 1 MB and a 10 MB document: p50 / p99 of `load` (the
//! snapshot read and decoded, no ops after it) over repeated loads, in one run.
//!
//!   TANDEM_S3S_FS=~/.cache/tandem/s3s-fs/bin/s3s-fs \
//!     cargo run --release -p tandem-storage --features s3 --example snapshot_load -- 30

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_engine::{Attributes, ClientId, Commit, Delta, Limits, Value};
use tandem_storage::s3::{S3Blobs, S3Options};
use tandem_storage::{BlobStore, Loaded, LocalBlobs, LocalLog, LocalOptions, LogOp, OpLog, RealFs, Snapshot};

/// A document of about `mb` MB: lines of text, every third one bold, every tenth a heading.
fn ops(doc: &str, mb: usize) -> Vec<LogOp> {
    let line = "The quick brown fox jumps over the lazy dog while the team writes the plan. ";
    let mut out = Vec::new();
    let mut len = 0;
    let target = mb << 20;
    let mut rev = 0;
    while len < target {
        let mut d = Delta::new().retain(len, Attributes::NONE);
        // Inserts of at most ~512 KiB (under the insert limit).
        let mut chunk = 0;
        let mut i = 0;
        while chunk < 512 << 10 && len + chunk < target {
            let attrs = if i % 3 == 0 {
                Attributes::from_object([("bold".to_owned(), Value::Bool(true))].into_iter().collect())
            } else {
                Attributes::NONE
            };
            d = d.insert(line, attrs);
            let nl = if i % 10 == 0 {
                Attributes::from_object([("header".to_owned(), Value::Number(2.0))].into_iter().collect())
            } else {
                Attributes::NONE
            };
            d = d.insert("\n", nl);
            chunk += line.len() + 1;
            i += 1;
        }
        len += chunk;
        rev += 1;
        out.push(LogOp::new(doc, 1_764_000_000_000 + rev, Commit::op(rev, ClientId(1), rev, d)));
    }
    out
}

fn bench(name: &str, blobs: Arc<dyn BlobStore>, dir: &std::path::Path, runs: usize) {
    for mb in [1, 10] {
        let doc = format!("bench-{mb}mb");
        let mut log = LocalLog::open(
            dir.join(format!("oplog-{name}-{mb}")),
            Arc::clone(&blobs),
            Arc::new(RealFs),
            LocalOptions::default(),
        )
        .unwrap();
        let ops = ops(&doc, mb);
        let latest = ops.len() as u64;
        log.append(&ops).unwrap();
        let state = Loaded { snapshot: None, ops }.into_state(Limits::default()).unwrap();
        let snapshot = Snapshot::of(&state, 1_764_000_000_000 + latest);
        log.put_snapshot(&doc, &snapshot).unwrap();
        let bytes = snapshot.encode(&doc).len();
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let loaded = log.load(&doc).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(loaded.snapshot.map(|s| s.rev), Some(latest));
            assert!(loaded.ops.is_empty());
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "blobs={name} doc_mb={mb} snapshot_bytes={bytes} runs={runs} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            pct(0.5),
            pct(0.99),
            times[times.len() - 1]
        );
    }
}

fn main() {
    let runs: usize = std::env::args().nth(1).map_or(30, |n| n.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn BlobStore> = Arc::new(LocalBlobs::open(dir.path().join("blobs"), Arc::new(RealFs)).unwrap());
    bench("local", local, dir.path(), runs);

    let bin = std::env::var("TANDEM_S3S_FS").expect("TANDEM_S3S_FS names the s3s-fs binary");
    let s3_dir = dir.path().join("s3");
    std::fs::create_dir_all(s3_dir.join("tandem")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "k", "--secret-key", "s"])
        .arg(&s3_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let opts = S3Options {
        bucket: "tandem".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
        ..S3Options::default()
    };
    let s3: Arc<dyn BlobStore> = Arc::new(S3Blobs::open(&opts).unwrap());
    bench("s3s-fs", s3, dir.path(), runs);
    let _ = child.kill();
    let _ = child.wait();
}
