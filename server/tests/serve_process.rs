//! `tandem serve` as a real process: documents spread over both cores with `--cores 2`,
//! `/metrics` reports them, SIGTERM closes every client with 1001 and exits cleanly, and a
//! second server cannot take the same data directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::client::{Client, ClientError, ClientOptions};

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spawn(dir: &std::path::Path, extra: &[&str]) -> Result<Server, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--auth", "dev", "--listen", "127.0.0.1:0", "--cores", "2", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tandem starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split(' ').next().unwrap().parse().unwrap();
            std::thread::spawn(move || for _ in lines {});
            return Ok(Server { child, addr });
        }
    }
    let _ = child.wait();
    Err(log)
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, name: &str, core: u32) -> u64 {
    let prefix = format!("tandem_{name}{{core=\"{core}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in metrics"))
}

#[test]
fn documents_spread_over_both_cores_and_shutdown_is_graceful() {
    let dir = data_dir("spread");
    let mut server = spawn(&dir, &[]).unwrap();
    assert!(get(server.addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(get(server.addr, "/readyz").starts_with("HTTP/1.1 200"));
    let mut client = Client::connect(server.addr, ClientId(1), ClientOptions::default()).unwrap();
    for i in 0..40 {
        let doc = format!("doc-{i}");
        client.open(&doc).unwrap();
        client.edit(&doc, Delta::new().insert("x", Attributes::NONE)).unwrap();
    }
    client.wait_until(Duration::from_secs(10), "acks", |s| s.is_synced()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let metrics = get(server.addr, "/metrics");
    let (a, b) = (metric(&metrics, "documents_open", 0), metric(&metrics, "documents_open", 1));
    assert_eq!(a + b, 40);
    assert!(a > 0 && b > 0, "documents on core 0: {a}, core 1: {b}");
    assert_eq!(metric(&metrics, "ops_in_total", 0) + metric(&metrics, "ops_in_total", 1), 40);
    assert!(metrics.contains("tandem_driver{core=\"1\",driver="));

    // SIGTERM: the client is closed with 1001 and the process exits 0.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let err = client.pump(Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, ClientError::Closed { code: 1001, .. }), "{err}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_server_cannot_share_the_data_directory() {
    let dir = data_dir("lock");
    let _first = spawn(&dir, &[]).unwrap();
    let log = spawn(&dir, &[]).err().expect("the second server must refuse to start");
    assert!(log.contains("in use by another tandem server"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The nodes of a cluster share the key that signs export and upload links: a server uses
/// the file named by `[control] link_key_file` (made there if missing), not its data
/// directory's.
#[test]
fn the_link_key_file_may_be_shared() {
    let (dir, shared) = (data_dir("link-key-a"), data_dir("link-key-shared"));
    std::fs::create_dir_all(&shared).unwrap();
    let key = shared.join("link-key");
    let cfg = shared.join("tandem.toml");
    std::fs::write(&cfg, format!("[control]\nlink_key_file = {:?}\n", key.to_str().unwrap())).unwrap();
    let server = spawn(&dir, &["--config", cfg.to_str().unwrap()]).unwrap();
    assert!(key.exists(), "the link key was made where the configuration says");
    assert!(!dir.join("link-key").exists(), "and not in the data directory");
    let made = std::fs::read(&key).unwrap();
    drop(server);
    // Another server (another data directory) uses the same key, unchanged.
    let other = data_dir("link-key-b");
    let _second = spawn(&other, &["--config", cfg.to_str().unwrap()]).unwrap();
    assert_eq!(std::fs::read(&key).unwrap(), made);
    assert!(!other.join("link-key").exists());
    for d in [dir, other, shared] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let dir = data_dir("badconf");
    let log = spawn(&dir, &["--max-messages-per-s", "0"]).err().expect("must refuse");
    assert!(log.contains("invalid configuration"), "{log}");
    // An unreachable metadata database: named, its password not.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://tandem:hunter2@127.0.0.1:{port}/meta");
    let log = spawn(&dir, &["--database-url", &url]).err().expect("must refuse");
    assert!(log.contains(&format!("metadata in postgres://tandem:***@127.0.0.1:{port}/meta")), "{log}");
    assert!(!log.contains("hunter2"), "the password was printed: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}
