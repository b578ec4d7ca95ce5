//! The peer adapters against the real peer servers: a short scenario against ShareDB 7 and
//! against the y-websocket server must converge, with acks and deliveries counted. The servers
//! come from `loadgen/peers/install.sh` (which `scripts/test.sh` runs) in `~/.cache/tandem/peers`
//! or `TANDEM_PEERS_DIR`. Without them the test fails and says how to install them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new("node")
        .arg(dir.join("server.js"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{} did not come up", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

/// The installed peers (this test never skips: without them it fails and says how to get them).
fn peers() -> PathBuf {
    let candidates = [
        std::env::var_os("TANDEM_PEERS_DIR").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tandem/peers")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("sharedb/node_modules").is_dir() && d.join("y-websocket/node_modules").is_dir());
    found.expect("the peers are not installed: run scripts/test.sh (which installs them), or loadgen/peers/install.sh")
}

fn run(protocol: &str, port: u16, out: &std::path::Path) -> serde_json::Value {
    let scenario = out.with_extension("toml");
    std::fs::write(
        &scenario,
        "# peer check\nname = \"peer-check\"\ndescription = \"3 documents x 4 editors at 8 ops/s\"\nthreads = 1\n\
         [stages]\nramp_up_s = 1\nsteady_s = 3\nramp_down_s = 1\n\
         [[groups]]\nname = \"editors\"\nrole = \"editor\"\ndocs = 3\nusers_per_doc = 4\nedit_rate = 8\n",
    )
    .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen"))
        .args(["run", scenario.to_str().unwrap(), "--target", &format!("ws://127.0.0.1:{port}/")])
        .args(["--protocol", protocol, "--label", protocol, "--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "tandem-loadgen against {protocol} failed");
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn sharedb_and_y_websocket_runs_converge() {
    let dir = peers();
    let work = tempfile::tempdir().unwrap();
    for (peer, protocol) in [("sharedb", "sharedb"), ("y-websocket", "yjs")] {
        let port = free_port();
        let _server = start(&dir.join(peer), port);
        let r = run(protocol, port, &work.path().join(peer));
        assert_eq!(r["converged"], true, "{peer}: {r:#}");
        assert_eq!(r["errors"], 0, "{peer}");
        assert_eq!(r["live_users"], 12, "{peer}");
        let (sent, acked, untraced) =
            (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap(), r["untraced"].as_u64().unwrap());
        assert!(sent >= 200, "{peer}: sent {sent}");
        assert!((acked + untraced) * 10 >= sent * 9, "{peer}: {acked} acked + {untraced} untraced of {sent}");
        // Each edit reaches the 3 other editors of its document.
        let delivered = r["delivered"].as_u64().unwrap();
        assert!(delivered * 10 >= sent * 3 * 8, "{peer}: delivered {delivered} of {sent} x 3");
        assert!(r["propagation_latency_ms"]["count"].as_u64().unwrap() > 0, "{peer}");
    }
}
