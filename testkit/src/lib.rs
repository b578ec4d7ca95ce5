//! Test fixtures shared by Tandem's crates (tests and benchmarks only).
//!
//! - `cluster` (feature `cluster`): nodes of a cluster as real processes, and a client that
//!   follows its document from node to node.
//! - `pki` (feature `pki`): a throwaway certificate authority and certificates it signs.
//! - [`Postgres`]: a throwaway PostgreSQL server, `initdb` and `pg_ctl` in a temp directory on a
//!   free port, stopped when dropped. With `TANDEM_TEST_DATABASE_URL` set, that server is
//!   used instead (each caller makes its own database on it). Missing binaries fail the test
//!   with what to install: the PostgreSQL suites never skip.

#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "pki")]
pub mod pki;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A PostgreSQL server for one test (or one test binary).
pub struct Postgres {
    /// `postgres://...` of the maintenance database.
    pub url: String,
    bin: PathBuf,
    data: Option<tempfile::TempDir>,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TANDEM_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no {}): apt-get install postgresql, or set TANDEM_TEST_DATABASE_URL",
            root.display()
        )
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL binary, as user `postgres` when we are root (PostgreSQL refuses root).
fn run(bin: &Path, args: &[&str]) -> String {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// Starts a server (or names the one in `TANDEM_TEST_DATABASE_URL`). Blocks for a second
    /// or two: from async code, call it on a blocking thread.
    pub fn start() -> Self {
        let bin = bin_dir();
        if let Ok(url) = std::env::var("TANDEM_TEST_DATABASE_URL") {
            return Self { url, bin, data: None };
        }
        let dir = tempfile::Builder::new().prefix("tandem-pg").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown of the test cluster's directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = data.to_str().unwrap();
        run(&bin.join("initdb"), &["-D", d, "--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync"]);
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.path().display()
        );
        let log = dir.path().join("log");
        run(&bin.join("pg_ctl"), &["-D", d, "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), bin, data: Some(dir) }
    }

    /// Runs SQL on the maintenance database with `psql`, returning what it printed
    /// (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in(&self.url, sql)
    }

    /// Runs SQL on the database at `url` (one [`Postgres::database`] made).
    pub fn sql_in(&self, url: &str, sql: &str) -> String {
        run(&self.bin.join("psql"), &[url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    /// The URL of a new, empty database on this server, named after `name`, the process and
    /// a counter (so tests in one binary never share one).
    pub fn database(&self, name: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tandem_{name}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "database name {name:?}");
        self.sql(&format!("DROP DATABASE IF EXISTS {name}"));
        self.sql(&format!("CREATE DATABASE {name}"));
        let base = self.url.rsplit_once('/').expect("a URL with a database").0;
        format!("{base}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.data {
            let d = dir.path().join("data");
            run(&self.bin.join("pg_ctl"), &["-D", d.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// Starts `tandem serve` (the command `make` builds, its stderr piped here) and waits until it
/// says it listens; a port still held by a process just killed is waited for (up to 20 s).
/// `what` names it in the panic if it exits first, with what it printed.
pub fn start_listening(what: &str, mut make: impl FnMut() -> Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = make()
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut log = String::new();
        for line in lines.by_ref() {
            let line = line.expect("stderr");
            log.push_str(&line);
            log.push('\n');
            if line.contains("listening on http://") || line.contains("listening on https://") {
                // TANDEM_TESTKIT_ECHO=1: the process's log on this one's stderr, each line
                // named (to see what the nodes of a failing test did, and when).
                let echo = std::env::var_os("TANDEM_TESTKIT_ECHO").is_some_and(|v| v == "1");
                let name = what.to_owned();
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        if echo {
                            eprintln!("[{name}] {line}");
                        }
                    }
                });
                return child;
            }
        }
        let status = child.wait().expect("waits");
        assert!(
            Instant::now() < deadline && log.contains("in use"),
            "{what} exited ({status}) before listening:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
