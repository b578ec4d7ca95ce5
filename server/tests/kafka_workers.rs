//! `tandem worker` processes on Kafka (a real tansu broker, started here): `tandem serve`
//! publishes the change feed and leaves search and analytics to a worker process beside it;
//! the worker is killed (-9) mid-stream and another takes over its consumer groups; search
//! and activity converge on every acknowledged edit, each counted once, and the worker's
//! `/metrics` counts its work and reports its groups' Kafka lag. Runs with `--features kafka` (the README's test command).
#![cfg(feature = "kafka")]

mod support;

#[path = "../../events/tests/support/tansu.rs"]
mod tansu;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use support::*;

/// A `tandem worker` process, killed (-9) when dropped.
struct WorkerProcess {
    child: Child,
    metrics: SocketAddr,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn worker(root: &std::path::Path) -> WorkerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["worker", "--topics", "search,analytics", "--metrics-listen", &metrics.to_string(), "--config"])
        .arg(root.join("tandem.toml"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tandem worker starts");
    eventually(30, "the worker serves /healthz", || std::net::TcpStream::connect(metrics).ok().map(|_| ()));
    WorkerProcess { child, metrics }
}

#[test]
fn worker_processes_on_kafka_index_and_count_every_edit_once_across_a_kill() {
    let broker = tansu::broker();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[events]\nbackend = \"kafka\"\nworkers = [\"notifications\"]\n\n[events.kafka]\n\
         brokers = \"127.0.0.1:{}\"\ntopic_prefix = \"e2e.\"\npartitions = 3\nreplication = 1\nsession_timeout_ms = 6000\nlag_interval_ms = 500\n\n\
         # tansu 0.6 answers a fetch from inside a record batch with the batches after it only,\n\
         # so a worker taking over mid-batch would skip messages: one message per batch.\n\
         [events.kafka.producer]\n\"batch.num.messages\" = \"1\"\n",
        broker.port
    );
    let server = start_at(dir.path(), &config, &[]);
    let addr = server.addr;
    let first = worker(dir.path());
    let (_, token, _) = signup(addr, "ada@example.com", "Ada");
    let doc = create_doc(addr, &token, "Kafka plan");
    let (mut ws, _) = Ws::hello(addr, &token, &[], 9);
    assert_eq!(ws.open(&doc)["type"], "opened");
    let mut rev = 0;
    let mut edit = |ws: &mut Ws, n: u64| {
        for _ in 0..n {
            ws.submit(&doc, rev, &format!("k{rev} "));
            rev += 1;
            assert_eq!(ws.until("ack")["rev"], rev);
        }
    };
    edit(&mut ws, 20);
    eventually(60, "the worker process indexes the edits", || {
        (hit_ids(&search(addr, &token, "k0%20k19")) == vec![doc.clone()]).then_some(())
    });
    eventually(30, "the worker process counts the edits", || {
        (activity(addr, &token, &doc).body["days"][0]["edits"] == 20).then_some(())
    });
    // kill -9 the worker while edits go on; a new one takes over its consumer groups.
    drop(first);
    edit(&mut ws, 20);
    let second = worker(dir.path());
    edit(&mut ws, 5);
    eventually(90, "every edit is searchable after the takeover", || {
        (hit_ids(&search(addr, &token, "k0%20k25%20k44")) == vec![doc.clone()]).then_some(())
    });
    eventually(60, "activity counts each edit once", || {
        let day = activity(addr, &token, &doc).body["days"][0].clone();
        assert!(day["edits"].as_u64().unwrap_or(0) <= 45, "counted twice: {day}");
        (day["edits"] == 45).then_some(())
    });
    // The worker's own /metrics: what it processed, and its groups' Kafka lag (0: caught up;
    // read from the brokers every `lag_interval_ms`).
    let metrics = eventually(30, "the worker reports no lag", || {
        let m = http(second.metrics, "GET", "/metrics", &[], None).raw;
        m.contains("tandem_bus_lag_messages{group=\"search\",topic=\"document-edits\"} 0").then_some(m)
    });
    assert!(metrics.contains("tandem_worker_processed_total{worker=\"search\"}"), "{metrics}");
    assert!(metrics.contains("tandem_analytics_edits_total"), "{metrics}");
    let server_metrics = http(addr, "GET", "/metrics", &[], None).raw;
    assert!(!server_metrics.contains("worker=\"search\""), "tandem serve left search to the worker: {server_metrics}");
    drop(ws);
    drop(second);
    drop(server);
    drop(broker);
}
