//! A real Kafka-API broker for tests: tansu (`~/.cache/tandem/tansu`, installed by the
//! README's test command; `TANDEM_TANSU` names another binary).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker, stopped when dropped.
pub(crate) struct Broker {
    child: Child,
    /// Its Kafka port on 127.0.0.1.
    pub(crate) port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a broker with in-memory storage on a free port.
pub(crate) fn broker() -> Broker {
    let bin = std::env::var("TANDEM_TANSU")
        .unwrap_or_else(|_| format!("{}/.cache/tandem/tansu/bin/tansu", std::env::var("HOME").unwrap_or_default()));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin} ({e}): the README's test command installs tansu"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child, port }
}
