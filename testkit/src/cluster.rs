//! A cluster of real `tandem serve` processes on 127.0.0.1 sharing one PostgreSQL, and a
//! client that follows its document from node to node: the cluster tests' and benchmarks'
//! harness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::client::{Client, ClientError, ClientOptions};

use crate::Postgres;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One node: its address, data directory and process.
pub struct Node {
    /// Its id.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The process, while it runs.
    pub child: Option<Child>,
}

/// Nodes (`tandem serve --cluster` processes) on one PostgreSQL database, for the op log
/// and the leases.
pub struct Cluster {
    bin: PathBuf,
    /// The database.
    pub url: String,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// More `tandem serve` arguments.
    pub args: Vec<String>,
    /// With `--tls-cert`/`--tls-key` in them: a client configuration trusting that
    /// certificate (the nodes share it), for `wss://` and HTTPS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Cluster {
    /// Migrates a new database on `pg` and starts `n` nodes of the `tandem` binary `bin`
    /// (leases of 1.5 s renewed every 200 ms unless `args` name `--lease-*` values), with
    /// `args` added to each `tandem serve`. The op log is in the same database unless `args`
    /// name another (`--oplog scylla ...`: then `tandem migrate` runs with those arguments
    /// too, and the leases stay in PostgreSQL).
    pub fn new(bin: &Path, pg: &Postgres, n: usize, args: &[&str]) -> Self {
        let url = pg.database("cluster");
        let oplog: Vec<&str> = match args.iter().position(|a| *a == "--oplog") {
            Some(_) => args.to_vec(),
            None => vec!["--oplog", "postgres"],
        };
        let out = Command::new(bin)
            .arg("migrate")
            .args(&oplog)
            .args(["--auth", "dev"])
            .arg("--data-dir")
            .arg(tempfile::tempdir().unwrap().path())
            .env("TANDEM_OPLOG_DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(out.status.success(), "tandem migrate: {}", String::from_utf8_lossy(&out.stderr));
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("node-{i}"),
                addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                dir: tempfile::tempdir().unwrap(),
                child: None,
            })
            .collect();
        let arg = |name: &str| args.iter().position(|a| *a == name).map(|i| Path::new(args[i + 1]));
        let tls = match (arg("--tls-cert"), arg("--tls-key")) {
            (Some(cert), Some(key)) => {
                Some(tandem_net::tls::pinned_client_config(&tandem_net::tls::Certs::load(cert, key).unwrap()))
            }
            _ => None,
        };
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut c = Self { bin: bin.to_owned(), url, nodes, args, tls };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    /// Starts node `i` and waits until it listens.
    pub fn start(&mut self, i: usize) {
        // Short leases unless the caller names its own.
        let short = ["--lease-ttl-ms", "1500", "--lease-margin-ms", "300", "--lease-poll-ms", "200"];
        let lease: &[&str] = if self.args.iter().any(|a| a.starts_with("--lease")) { &[] } else { &short };
        // Dev auth unless the caller names its own.
        let auth: &[&str] = if self.args.iter().any(|a| a == "--auth") { &[] } else { &["--auth", "dev"] };
        let node = &mut self.nodes[i];
        let child = crate::start_listening(&node.name, || {
            let mut c = Command::new(&self.bin);
            let oplog: &[&str] = if self.args.iter().any(|a| a == "--oplog") { &[] } else { &["--oplog", "postgres"] };
            c.args(["serve", "--cluster", "true", "--cores", "2"])
                .args(oplog)
                .args(auth)
                .args(["--max-messages-per-s", "100000", "--snapshot-every-ops", "40"])
                .args(lease)
                .args(&self.args)
                .arg("--node")
                .arg(&node.name)
                .arg("--listen")
                .arg(node.addr.to_string())
                .arg("--data-dir")
                .arg(node.dir.path())
                .env("TANDEM_OPLOG_DATABASE_URL", &self.url)
                .env("TANDEM_CLUSTER_DATABASE_URL", &self.url);
            c
        });
        node.child = Some(child);
    }

    /// Sends node `i` a signal (`-STOP`, `-CONT`, `-TERM`). With a system call, not a `kill`
    /// process: forking this process (the benchmark's, with a thread per client) took CPU
    /// from the nodes at the very moment a hand-over is timed. `-STOP` returns once every
    /// thread of the node has stopped: kill(2) returns before they do, and a core still
    /// running meanwhile would serve what a test sends to the "paused" node.
    pub fn signal(&self, i: usize, sig: &str) {
        let stop = sig == "-STOP";
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let sig = match sig {
            "-STOP" => libc::SIGSTOP,
            "-CONT" => libc::SIGCONT,
            "-TERM" => libc::SIGTERM,
            "-INT" => libc::SIGINT,
            other => panic!("signal {other:?}: expected -STOP, -CONT, -TERM or -INT"),
        };
        let pid = libc::pid_t::try_from(pid).expect("a process id");
        // SAFETY: kill(2) takes plain integers and touches no memory of this process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        if stop {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stopped(pid) {
                assert!(Instant::now() < deadline, "node {i} (pid {pid}) did not stop within 10 s of SIGSTOP");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// kill -9s node `i` and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The nodes' WebSocket URLs (`wss://` with TLS).
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        self.nodes.iter().map(|n| format!("{scheme}://{}/ws", n.addr)).collect()
    }

    /// Waits until the first `nodes` nodes serve every shard between them, each at least
    /// `least`, for at most `within`; how long it took, and what each serves.
    pub fn until_all_served(&self, nodes: usize, least: u64, within: Duration) -> (Duration, Vec<u64>) {
        let t = Instant::now();
        loop {
            let s: Vec<u64> = (0..nodes).map(|i| self.metric(i, "tandem_cluster_shards_served")).collect();
            if s.iter().sum::<u64>() == 1024 && s.iter().all(|&n| n >= least) {
                return (t.elapsed(), s);
            }
            assert!(t.elapsed() < within, "shards served after {within:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A counter from node `i`'s `/metrics`, summed over cores.
    pub fn metric(&self, i: usize, name: &str) -> u64 {
        let addr = self.nodes[i].addr;
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut text = String::new();
        match &self.tls {
            None => {
                let mut s = tcp;
                std::io::Write::write_all(&mut s, request).unwrap();
                std::io::Read::read_to_string(&mut s, &mut text).unwrap();
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                std::io::Write::write_all(&mut s, request).unwrap();
                // The server's close_notify ends it; an abrupt end after the body is fine too.
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
        }
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() {
                let _ = Command::new("kill")
                    .args(["-CONT", &self.nodes[i].child.as_ref().unwrap().id().to_string()])
                    .status();
            }
            self.kill(i);
        }
    }
}

/// A client of one document that follows it from node to node (`moved`), and to a random
/// node when its node goes away.
pub struct Follower {
    /// The client, once connected.
    pub client: Option<Client>,
    /// Its id.
    pub id: u64,
    /// The document.
    pub doc: String,
    /// The nodes it may connect to.
    pub urls: Vec<String>,
    rng: ChaCha8Rng,
    /// Where to go next (a `moved`'s target), if known.
    next: Option<String>,
    /// Times it moved.
    pub moves: usize,
    /// When it last read a `moved` and left its node.
    pub moved_at: Option<Instant>,
    /// When it last connected (welcomed) to a node.
    pub connected_at: Option<Instant>,
    /// When the document last opened.
    pub opened_at: Option<Instant>,
    /// The access token for `hello` (empty under `--auth dev`).
    pub token: String,
    /// With TLS on the nodes: whom to trust (see [`Cluster::tls`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The node it is connected to, and the one before.
    current: Option<String>,
    previous: Option<String>,
}

impl Follower {
    /// A follower of `doc` for client `id`.
    pub fn new(id: u64, doc: &str, urls: Vec<String>) -> Self {
        Self {
            client: None,
            id,
            doc: doc.into(),
            urls,
            rng: ChaCha8Rng::seed_from_u64(id),
            next: None,
            moves: 0,
            moved_at: None,
            connected_at: None,
            opened_at: None,
            token: String::new(),
            tls: None,
            current: None,
            previous: None,
        }
    }

    /// Connects (to the node named last, else a random one) until the document is open.
    pub fn ensure_open(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // Whether this call connected anew (the open completing later, on a pass that stays
        // on that connection, is still the new connection's).
        let mut reconnected = false;
        while Instant::now() < deadline {
            let url = self.next.take().unwrap_or_else(|| self.urls[self.rng.random_range(0..self.urls.len())].clone());
            let staying = self.client.as_ref().is_some_and(|c| c.session().is_welcomed() && c.close_reason().is_none());
            if !staying && self.current.as_ref() != Some(&url) {
                self.previous = self.current.replace(url.clone());
            }
            let connected = match &mut self.client {
                Some(c) if c.session().is_welcomed() && c.close_reason().is_none() && self.next.is_none() => true,
                Some(c) => c.reconnect_to(&url).is_ok(),
                None => {
                    let host = url.trim_start_matches("wss://").trim_start_matches("ws://");
                    let addr: SocketAddr = host.trim_end_matches("/ws").parse().unwrap();
                    let options = ClientOptions {
                        name: format!("c{}", self.id),
                        token: self.token.clone(),
                        tls: self.tls.clone(),
                        ..ClientOptions::default()
                    };
                    match Client::connect(addr, ClientId(self.id), options) {
                        Ok(mut c) => {
                            // Refused (no access) or unanswered: looked at below.
                            let _ = c.open(&self.doc);
                            self.client = Some(c);
                            true
                        }
                        Err(_) => false,
                    }
                }
            };
            if !connected {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !staying {
                self.connected_at = Some(Instant::now());
                reconnected = true;
            }
            let doc = self.doc.clone();
            let c = self.client.as_mut().unwrap();
            // Until it opens, or is sent on.
            let r = c.wait_until(Duration::from_millis(500), "open", |s| s.is_open(&doc) || s.moved_to(&doc).is_some());
            self.follow_moves();
            match r {
                Ok(()) if self.next.is_none() && self.client.as_ref().is_some_and(|c| c.session().is_open(&doc)) => {
                    if reconnected {
                        self.opened_at = Some(Instant::now());
                    }
                    return true;
                }
                Ok(()) | Err(ClientError::Timeout(_)) => {}
                Err(_) => self.drop_connection(),
            }
        }
        false
    }

    /// Drops the connection (to test resumption).
    pub fn drop_connection(&mut self) {
        if let Some(c) = &mut self.client {
            c.drop_connection();
        }
    }

    /// A `moved` names where to go next (or, empty, to retry anywhere shortly).
    pub fn follow_moves(&mut self) {
        let Some(c) = &mut self.client else { return };
        let _ = c.events();
        let Some(to) = c.session().moved_to(&self.doc).map(str::to_owned) else { return };
        if !c.session().is_welcomed() {
            return;
        }
        self.moves += 1;
        self.moved_at = Some(Instant::now());
        c.drop_connection();
        if !to.is_empty() && self.previous.as_ref() == Some(&to) {
            // Sent back where it came from: the next node has not taken the document yet.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(5..20)));
        }
        self.next = Some(if to.is_empty() {
            // Nobody serves it this instant: again shortly, with jitter.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(10..40)));
            self.urls[self.rng.random_range(0..self.urls.len())].clone()
        } else {
            to
        });
    }

    /// Appends `marker` (kept until acknowledged, whatever happens to the connection) and
    /// waits a little for the ack; false when the edit could not be made (the document is
    /// not open here).
    pub fn append(&mut self, marker: &str) -> bool {
        let doc = self.doc.clone();
        let c = self.client.as_mut().unwrap();
        let Some(len) = c.session().document(&doc).map(|d| d.len()) else { return false };
        match c.edit(&doc, Delta::new().retain(len, Attributes::NONE).insert(marker, Attributes::NONE)) {
            Ok(()) => {}
            // Refused locally: not made.
            Err(ClientError::Edit(_)) => return false,
            // Made, but not sent (the connection failed): kept, and sent after reconnecting;
            // to the node named by a `moved` the server sent before closing, when it is
            // still there to read.
            Err(_) => {
                let _ = c.wait_until(Duration::from_millis(5), "moved", |s| s.moved_to(&doc).is_some());
                self.follow_moves();
                self.drop_connection();
                return true;
            }
        }
        let r = c.wait_until(Duration::from_millis(300), "ack", |s| s.is_synced() || s.moved_to(&doc).is_some());
        self.follow_moves();
        if matches!(r, Err(ref e) if !matches!(e, ClientError::Timeout(_))) {
            self.drop_connection();
        }
        true
    }

    /// Waits `pause` between edits as a live client does: reading what arrives, and
    /// leaving at once when sent on (`moved`).
    pub fn think(&mut self, pause: Duration) {
        let doc = self.doc.clone();
        let Some(c) = self.client.as_mut() else { return std::thread::sleep(pause) };
        let r = c.wait_until(pause, "think", |s| s.moved_to(&doc).is_some());
        self.follow_moves();
        if matches!(r, Err(ref e) if !matches!(e, ClientError::Timeout(_))) {
            self.drop_connection();
        }
    }

    /// Until every edit is acknowledged; the document's text.
    pub fn settle(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "client {} never settled on {}", self.id, self.doc);
            if !self.ensure_open(Duration::from_secs(5)) {
                continue;
            }
            let c = self.client.as_mut().unwrap();
            let doc = self.doc.clone();
            let r = c.wait_until(Duration::from_secs(2), "synced", |s| s.is_synced() || s.moved_to(&doc).is_some());
            self.follow_moves();
            if r.is_ok() && self.next.is_none() {
                return self.client.as_ref().unwrap().session().document(&self.doc).unwrap().text();
            }
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn stopped(pid: libc::pid_t) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        std::fs::read_to_string(task.path().join("stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
    })
}
