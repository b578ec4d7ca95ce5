//! A real S3-API server for tests: s3s-fs (`~/.cache/tandem/s3s-fs`, installed by the
//! README's test command; `TANDEM_S3S_FS` names another binary), serving a temporary
//! directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials the server accepts.
pub(crate) const ACCESS_KEY: &str = "tandem-test";
/// The secret that goes with [`ACCESS_KEY`].
pub(crate) const SECRET_KEY: &str = "tandem-test-secret";

/// A running s3s-fs, stopped (and its directory removed) when dropped.
pub(crate) struct S3Server {
    child: Child,
    /// The directory it serves: a bucket is a directory in it.
    pub(crate) dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Makes bucket `name`.
    pub(crate) fn bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.path().join(name)).unwrap();
    }
}

/// Starts s3s-fs on a free port.
pub(crate) fn start() -> S3Server {
    let bin = std::env::var("TANDEM_S3S_FS")
        .unwrap_or_else(|_| format!("{}/.cache/tandem/s3s-fs/bin/s3s-fs", std::env::var("HOME").unwrap_or_default()));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin} ({e}): the README's test command installs s3s-fs"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    S3Server { child, dir, endpoint: format!("http://127.0.0.1:{port}") }
}
