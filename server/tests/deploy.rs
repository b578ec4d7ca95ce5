//! The Docker Compose cluster of `deploy/cluster`, run without Docker (none runs here): the
//! same files, the nodes' `tandem.toml`, their commands and environment in `compose.yml` and
//! HAProxy's `haproxy.cfg`, with the services Compose would start replaced by the tests' own
//! (PostgreSQL; tansu for Redpanda; s3s-fs for MinIO; an SMTP sink for Mailpit) and Debian's
//! haproxy. Only addresses, credentials and paths are rewritten, and every rewrite must find
//! what it replaces: a change to the files that this test does not follow fails it.
//!
//! Through the load balancer: the editor's page, sign-up, a document, a WebSocket client that
//! follows `moved` to the document's node, an email; every metric the Grafana dashboard
//! queries is exported; then a node leaves (SIGTERM, as `docker
//! compose stop`) and another is killed (`kill -s KILL`): the balancer stops sending
//! connections to them, the client's edits go on through the other nodes, and the nodes
//! rejoin (`start`). Runs with `--features kafka` (the README's test command).
#![cfg(feature = "kafka")]

mod support;

#[path = "../../events/tests/support/tansu.rs"]
mod tansu;

#[path = "../../storage/tests/support/s3.rs"]
mod s3;

#[path = "../../workers/tests/support/smtp.rs"]
mod smtp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use serde_yaml::Value as Yaml;
use support::*;
use tandem_testkit::Postgres;
use tandem_testkit::cluster::{Follower, free_port};

/// `text` with each `(from, to)` replaced; every `from` must be there.
fn rewrite(what: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(out.contains(from), "{what} no longer has {from:?}: update this test with it");
        out = out.replace(from, to);
    }
    out
}

/// The status of `GET path` at `addr`, or `None` when nothing answered.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A service of `compose.yml`.
fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose["services"].get(name).unwrap_or_else(|| panic!("compose.yml has no service {name}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence().expect("a list").iter().map(|s| s.as_str().expect("a string").to_owned()).collect()
}

/// The metric names the Grafana dashboard (`deploy/grafana-dashboard.json`) queries.
fn dashboard_metrics() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr", Some(e)) => out.extend(
                            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                                .filter(|w| w.starts_with("tandem_"))
                                .map(str::to_owned),
                        ),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let mut out = Vec::new();
    walk(&serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(), &mut out);
    out.sort();
    out.dedup();
    out
}

struct Node {
    args: Vec<String>,
    addr: SocketAddr,
    child: Option<Child>,
}

/// A process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            drop(Killed(c));
        }
    }
}

/// What HAProxy says of server `name` of the `nodes` backend (`UP`, `DOWN`, ...), from its
/// stats socket.
fn balancer_status(socket: &Path, name: &str) -> String {
    use std::os::unix::net::UnixStream;
    let Ok(mut s) = UnixStream::connect(socket) else { return String::new() };
    let mut csv = String::new();
    if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut csv).is_err() {
        return String::new();
    }
    let header: Vec<&str> = csv.lines().next().unwrap_or("").trim_start_matches("# ").split(',').collect();
    let column = header.iter().position(|h| *h == "status").expect("a status column");
    csv.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nodes") && f.get(1) == Some(&name))
        .and_then(|f| f.get(column).map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_compose_cluster_runs_behind_its_load_balancer_and_survives_a_leave_and_a_kill() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster");
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/app/dist");
    assert!(web.join("index.html").is_file(), "the editor is not built: the README's test command builds it first");
    let compose: Yaml = serde_yaml::from_str(&std::fs::read_to_string(root.join("compose.yml")).unwrap()).unwrap();
    let anchor = &compose["x-tandem"];
    let env = &anchor["environment"];
    assert_eq!(env["TANDEM_CONFIG"].as_str(), Some("/etc/tandem/tandem.toml"));
    assert!(strings(&anchor["volumes"]).contains(&"./tandem.toml:/etc/tandem/tandem.toml:ro".to_owned()));
    assert_eq!(anchor["stop_signal"].as_str(), Some("SIGTERM"), "nodes hand their shards over on SIGTERM");
    assert!(strings(&service(&compose, "haproxy")["volumes"]).iter().any(|v| v.starts_with("./haproxy.cfg:")));

    // What Compose would start, here.
    let broker = tansu::broker();
    let s3 = s3::start();
    s3.bucket("tandem");
    let pg = Postgres::start();
    let db = pg.database("deploy");
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp::smtp_sink(dir.path());
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let lb = free_port();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();

    // The nodes' configuration, as Compose mounts it, pointed at this test's services.
    let pg_url = "postgres://tandem:tandem@127.0.0.1:5432/tandem";
    assert_eq!(env["TANDEM_OPLOG_DATABASE_URL"].as_str(), Some(pg_url));
    let mut pairs = vec![
        (pg_url, db.clone()),
        ("http://127.0.0.1:9000", s3.endpoint.clone()),
        ("access_key_id = \"tandem\"", format!("access_key_id = \"{}\"", s3::ACCESS_KEY)),
        ("secret_access_key = \"tandem-secret\"", format!("secret_access_key = \"{}\"", s3::SECRET_KEY)),
        ("/var/lib/tandem-shared", shared.display().to_string()),
        ("/usr/share/tandem/web", web.display().to_string()),
        ("127.0.0.1:9092", format!("127.0.0.1:{}", broker.port)),
        ("smtp_port = 1025", format!("smtp_port = {}", sink.port)),
        ("http://127.0.0.1:8080", format!("http://127.0.0.1:{lb}")),
    ];
    for (i, port) in ports.iter().enumerate() {
        pairs.push((
            ["http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"][i],
            format!("http://127.0.0.1:{port}"),
        ));
    }
    let toml = std::fs::read_to_string(root.join("tandem.toml")).unwrap();
    assert!(!toml.contains("[events.kafka.producer]"));
    let toml = rewrite("deploy/cluster/tandem.toml", &toml, &pairs)
        // tansu 0.6 answers a fetch from inside a record batch with the batches after it only
        // (Redpanda does not need this).
        + "\n[events.kafka.producer]\n\"batch.num.messages\" = \"1\"\n";
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, toml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let tandem = |args: &[String]| {
        let mut c = Command::new(bin);
        c.args(args).env("TANDEM_CONFIG", &config).env("TANDEM_OPLOG_DATABASE_URL", &db);
        c
    };

    // `migrate`, then the nodes, each with its command from compose.yml.
    let out = tandem(&strings(&service(&compose, "migrate")["command"])).output().unwrap();
    assert!(out.status.success(), "tandem migrate: {}", String::from_utf8_lossy(&out.stderr));
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let name = format!("tandem-{}", i + 1);
            let command = strings(&service(&compose, &name)["command"]);
            let data = dir.path().join(&name);
            let joined = rewrite(
                "compose.yml's commands",
                &command.join("\n"),
                &[
                    (&format!("127.0.0.1:808{}", i + 1), format!("127.0.0.1:{}", ports[i])),
                    (&format!("/var/lib/tandem/{name}"), data.display().to_string()),
                ],
            );
            let args: Vec<String> = joined.split('\n').map(str::to_owned).collect();
            assert!(args.iter().any(|a| a == &data.display().to_string()), "{name}'s --data-dir: {command:?}");
            let addr: SocketAddr = format!("127.0.0.1:{}", ports[i]).parse().unwrap();
            Node { args, addr, child: None }
        })
        .collect();
    let start = |node: &mut Node, i: usize| {
        let child = tandem_testkit::start_listening(&format!("tandem-{}", i + 1), || tandem(&node.args));
        node.child = Some(child);
        // Compose's health check: the nodes after the first start once it is ready.
        eventually(30, "the node ready", || (status(node.addr, "/readyz") == Some(200)).then_some(()));
    };
    for (i, node) in nodes.iter_mut().enumerate() {
        start(node, i);
    }

    // HAProxy with the balancer's configuration.
    // This machine allows 20,000 open files per process, short of what `maxconn 100000`
    // needs (compose.yml raises the container's limit for it).
    assert_eq!(
        service(&compose, "haproxy")["ulimits"]["nofile"]["hard"].as_u64(),
        Some(262_144),
        "the balancer's file limit in compose.yml"
    );
    let mut pairs =
        vec![("bind 127.0.0.1:8080", format!("bind 127.0.0.1:{lb}")), ("maxconn 100000", "maxconn 5000".to_owned())];
    for (i, port) in ports.iter().enumerate() {
        pairs.push((
            ["server tandem-1 127.0.0.1:8081", "server tandem-2 127.0.0.1:8082", "server tandem-3 127.0.0.1:8083"][i],
            format!("server tandem-{} 127.0.0.1:{port}", i + 1),
        ));
    }
    let cfg =
        rewrite("deploy/cluster/haproxy.cfg", &std::fs::read_to_string(root.join("haproxy.cfg")).unwrap(), &pairs);
    // And a stats socket, for the test to see which nodes the balancer takes out.
    let stats = dir.path().join("haproxy.sock");
    let cfg = cfg.replacen("global\n", &format!("global\n    stats socket {} mode 600\n", stats.display()), 1);
    let haproxy_cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&haproxy_cfg, cfg).unwrap();
    let haproxy = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].into_iter().find(|p| Path::new(p).exists());
    let haproxy = haproxy.expect("haproxy (the README's test command installs it)");
    let check = Command::new(haproxy).arg("-c").arg("-f").arg(&haproxy_cfg).output().unwrap();
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let _balancer = Killed(
        Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&haproxy_cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lb_addr: SocketAddr = format!("127.0.0.1:{lb}").parse().unwrap();
    eventually(30, "the balancer forwarding", || (status(lb_addr, "/readyz") == Some(200)).then_some(()));

    // Through the balancer: the editor, accounts, a document, a share's email.
    let page = http(lb_addr, "GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert!(
        page.raw.contains("<html") || page.raw.contains("<!doctype html"),
        "{}",
        &page.raw[..200.min(page.raw.len())]
    );
    let (_, ada, _) = signup(lb_addr, "ada@example.com", "Ada");
    signup(lb_addr, "bob@example.com", "Bob");
    let doc = create_doc(lb_addr, &ada, "Runbook");
    let share = http(
        lb_addr,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &bearer(&ada))],
        Some(&json!({"email": "bob@example.com", "role": "editor"})),
    );
    assert_eq!(share.status, 200, "{}", share.raw);
    eventually(60, "the share's email at the SMTP sink", || (!smtp::mails(&sink.maildir).is_empty()).then_some(()));

    // Every metric the Grafana dashboard queries is one a node exports (Kafka's consumer lag
    // is read every 5 s).
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 20, "{wanted:?}");
    let mut missing = Vec::new();
    for _ in 0..40 {
        let metrics = http(nodes[0].addr, "GET", "/metrics", &[], None).raw;
        let exported: Vec<&str> =
            metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        missing = wanted.iter().filter(|m| !exported.contains(&m.as_str())).cloned().collect();
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(missing.is_empty(), "the dashboard queries metrics no node exports: {missing:?}");

    // A client that knows the balancer only: sent on to the document's node.
    let lb_url = format!("ws://127.0.0.1:{lb}/ws");
    let mut f = Follower::new(7, &doc, vec![lb_url.clone()]);
    f.token = ada.clone();
    assert!(f.ensure_open(Duration::from_secs(20)));
    assert!(f.append("<one>"));
    // The node serving the document (its index), from the lease table: the client may have
    // reached it through the balancer without being sent on.
    let owner = || {
        let shard = tandem_cluster::shard_of(&doc, 1024);
        let sql = format!("SELECT owner FROM cluster_leases WHERE shard = {shard} AND expires_at > now()");
        eventually(15, "the document's shard held", || {
            let row = pg.sql_in(&db, &sql);
            ["tandem-1", "tandem-2", "tandem-3"].iter().position(|n| *n == row.trim())
        })
    };
    f.settle();
    let first = owner();

    // `docker compose stop` of the document's node: it hands its shards over and leaves.
    let mut leaving = nodes[first].child.take().unwrap();
    assert!(Command::new("kill").args(["-TERM", &leaving.id().to_string()]).status().unwrap().success());
    assert!(leaving.wait().unwrap().success(), "a SIGTERM leave exits cleanly");
    f.urls = vec![lb_url.clone()];
    assert!(f.append("<two>"), "edits go on after the leave");
    f.settle();
    let second = owner();
    assert_ne!(second, first);
    // The balancer takes the node out, and new connections reach the others.
    let name = |i: usize| format!("tandem-{}", i + 1);
    eventually(30, "the balancer taking the stopped node out", || {
        balancer_status(&stats, &name(first)).starts_with("DOWN").then_some(())
    });
    for _ in 0..20 {
        assert_eq!(status(lb_addr, "/readyz"), Some(200));
    }

    // `kill -s KILL` of the node serving it now.
    let mut killed = nodes[second].child.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(f.append("<three>"), "edits go on after the kill");
    f.settle();
    assert_eq!(owner(), 3 - first - second, "on the one node left");
    eventually(30, "the balancer taking the killed node out", || {
        balancer_status(&stats, &name(second)).starts_with("DOWN").then_some(())
    });
    for _ in 0..20 {
        assert_eq!(status(lb_addr, "/readyz"), Some(200));
    }

    // `docker compose start`: both rejoin, and the balancer uses them again.
    for i in [first, second] {
        start(&mut nodes[i], i);
    }
    eventually(30, "the balancer putting both back", || {
        [first, second].iter().all(|&i| balancer_status(&stats, &name(i)).starts_with("UP")).then_some(())
    });
    let text = eventually(60, "every marker once, through the balancer", || {
        let text = f.settle();
        (["<one>", "<two>", "<three>"].iter().all(|m| text.matches(m).count() == 1)).then_some(text)
    });
    assert!(text.find("<one>") < text.find("<two>") && text.find("<two>") < text.find("<three>"), "{text}");
    let mut late = Follower::new(8, &doc, vec![lb_url]);
    late.token = ada;
    assert!(late.ensure_open(Duration::from_secs(20)));
    assert_eq!(late.settle(), text, "a new client through the balancer reads the same document");
}

/// The Kubernetes manifests (`deploy/kubernetes/tandem.yaml`) against the Kubernetes API's
/// schemas (kubernetes-validate, strict: an unknown or misplaced field fails), and what a
/// node needs of them: readiness from `/readyz`, liveness from `/healthz`, and a grace period
/// that covers the hand-over and the drain.
#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/tandem.yaml");
    let bin = std::env::var("TANDEM_KUBERNETES_VALIDATE").unwrap_or_else(|_| {
        format!("{}/.cache/tandem/venv/bin/kubernetes-validate", std::env::var("HOME").unwrap_or_default())
    });
    let out = Command::new(&bin)
        .args(["--strict", "--quiet", "--kubernetes-version", "1.31.0"])
        .arg(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("running {bin} ({e}): the README's test command installs kubernetes-validate"));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let text = std::fs::read_to_string(&manifests).unwrap();
    let docs: Vec<Yaml> =
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["ConfigMap", "Service", "Job", "StatefulSet", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let set = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let pod = &set["spec"]["template"]["spec"];
    let node = pod["containers"].as_sequence().unwrap().iter().find(|c| c["name"] == "tandem").unwrap();
    assert_eq!(node["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(node["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    // Leaving waits up to 15 s for the hand-over, then 5 s of drain, after the 3 s preStop.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 23, "{:?}", pod["terminationGracePeriodSeconds"]);
}
