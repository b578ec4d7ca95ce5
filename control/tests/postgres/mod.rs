//! A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` in a temp directory, on a
//! free port, stopped when dropped. With `TANDEM_TEST_DATABASE_URL` set, that server is used
//! instead (each test makes its own database on it). Missing binaries fail the test with
//! what to install: the PostgreSQL suite never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct Postgres {
    /// `postgres://...` of the maintenance database.
    pub(crate) url: String,
    data: Option<(tempfile::TempDir, PathBuf)>,
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
fn run(bin: &Path, args: &[&str]) {
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
}

impl Postgres {
    pub(crate) fn start() -> Self {
        if let Ok(url) = std::env::var("TANDEM_TEST_DATABASE_URL") {
            return Self { url, data: None };
        }
        let bin = bin_dir();
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
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.path().display()
        );
        let log = dir.path().join("log");
        run(&bin.join("pg_ctl"), &["-D", d, "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), data: Some((dir, bin)) }
    }

    /// The URL of a new, empty database on this server.
    pub(crate) async fn database(&self, name: &str) -> String {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.url).await.expect("connects");
        let name = format!("tandem_{name}_{}", std::process::id());
        let drop = format!("DROP DATABASE IF EXISTS {name}");
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.unwrap();
        let base = self.url.rsplit_once('/').unwrap().0;
        format!("{base}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((dir, bin)) = &self.data {
            let d = dir.path().join("data");
            run(&bin.join("pg_ctl"), &["-D", d.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        }
    }
}
