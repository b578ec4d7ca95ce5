//! The cluster's failover and handover times (issue 17), printed as Markdown.
//!
//! Three `tandem serve --cluster` nodes on one PostgreSQL (started from nothing, as the tests
//! do), with the default leases (3 s, renewed every 500 ms, served until 500 ms before
//! expiry) unless `--lease-ttl-ms` is given. One writer per document edits continuously
//! through whichever node serves it (following `moved`), and records when each edit was
//! acknowledged and by which node. Then:
//!
//! - **failover**: `kill -9` a node; for each document whose last acknowledgement before the
//!   kill came from it, the time from the kill to the first acknowledgement after it (by the
//!   new owner). The node is restarted and the cluster left to settle before the next kill.
//! - **handover**: `SIGTERM` a node (it hands its shards over and exits); for each document
//!   it served, the gap between the last acknowledgement before and the first after (which
//!   includes a writer's 20 ms between edits), and the time from the signal to the first
//!   acknowledgement after it (how long the document could not be written).
//!
//! `cargo run --release -p tandem-benches --bin cluster-bench -- [--tandem target/release/tandem] [--kills 10] [--leaves 10] [--docs 30] [--lease-ttl-ms 3000]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tandem_testkit::Postgres;
use tandem_testkit::cluster::{Cluster, Follower};

/// Per document: (when acknowledged, by which node's address).
type Acks = Arc<Mutex<Vec<Vec<(Instant, std::net::SocketAddr)>>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut kills, mut leaves, mut docs, mut ttl) =
        (PathBuf::from("target/release/tandem"), 10usize, 10usize, 30usize, 3000u64);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--tandem" => bin = PathBuf::from(v()),
            "--kills" => kills = v().parse().expect("--kills N"),
            "--leaves" => leaves = v().parse().expect("--leaves N"),
            "--docs" => docs = v().parse().expect("--docs N"),
            "--lease-ttl-ms" => ttl = v().parse().expect("--lease-ttl-ms MS"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(bin.exists(), "{}: build it first (cargo build --release -p tandem)", bin.display());
    let pg = Postgres::start();
    let (margin, poll) = ((ttl / 6).max(100), (ttl / 6).max(100));
    let lease = [ttl.to_string(), margin.to_string(), poll.to_string()];
    let lease_args = ["--lease-ttl-ms", &lease[0], "--lease-margin-ms", &lease[1], "--lease-poll-ms", &lease[2]];
    let mut cluster = Cluster::new(&bin, &pg, 3, &lease_args);
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::new(Mutex::new(vec![Vec::new(); docs]));
    // `moved` messages each document's client has followed so far.
    let moves: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new((0..docs).map(|_| Default::default()).collect());
    let writers: Vec<_> = (0..docs)
        .map(|d| {
            let (urls, stop, acks) = (cluster.urls(), Arc::clone(&stop), Arc::clone(&acks));
            let moves = Arc::clone(&moves);
            std::thread::spawn(move || {
                let mut f = Follower::new(1 + d as u64, &format!("bench-{d}"), urls);
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    if !f.ensure_open(Duration::from_secs(1)) {
                        continue;
                    }
                    if f.append(&format!("<{n}>")) {
                        n += 1;
                    }
                    moves[d].store(f.moves as u64, Ordering::Relaxed);
                    let c = f.client.as_ref().expect("connected");
                    if c.session().is_synced() && c.session().is_open(&f.doc) {
                        acks.lock().unwrap()[d].push((Instant::now(), c.addr()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let settle = Duration::from_millis(ttl * 2 + 2000);
    std::thread::sleep(settle);
    let mut failover = Histogram::<u64>::new(3).unwrap();
    let mut handover = Histogram::<u64>::new(3).unwrap();
    let mut signal_to_ack = Histogram::<u64>::new(3).unwrap();
    // `moved` followed per document per hand-over (1: straight to the new owner).
    let mut moves_per_handover = Histogram::<u64>::new(3).unwrap();
    for round in 0..kills + leaves {
        let i = round % 3;
        let addr = cluster.nodes[i].addr;
        let graceful = round >= kills;
        let t = Instant::now();
        // The documents it served: their last acknowledgement came from it.
        let served: Vec<(usize, Instant)> = acks
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(d, a)| a.last().filter(|(_, by)| *by == addr).map(|(at, _)| (d, *at)))
            .collect();
        let moves_before: Vec<u64> = served.iter().map(|&(d, _)| moves[d].load(Ordering::Relaxed)).collect();
        if graceful {
            cluster.signal(i, "-TERM");
            let _ = cluster.nodes[i].child.take().map(|mut c| c.wait());
        } else {
            cluster.kill(i);
        }
        // Until every one of them was acknowledged again.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pending = served.clone();
        let mut worst = Duration::ZERO;
        while !pending.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            let a = acks.lock().unwrap();
            pending.retain(|&(d, last)| match a[d].iter().find(|(at, _)| *at > t) {
                Some((at, _)) => {
                    let took = if graceful { at.duration_since(last) } else { at.duration_since(t) };
                    worst = worst.max(took);
                    let ms = took.as_micros() as u64;
                    if graceful { handover.record(ms) } else { failover.record(ms) }.unwrap();
                    if graceful {
                        signal_to_ack.record(at.duration_since(t).as_micros() as u64).unwrap();
                    }
                    false
                }
                None => true,
            });
        }
        assert!(pending.is_empty(), "{} documents were never acknowledged again", pending.len());
        if graceful {
            for (&(d, _), before) in served.iter().zip(&moves_before) {
                moves_per_handover.record(moves[d].load(Ordering::Relaxed) - before).unwrap();
            }
        }
        eprintln!(
            "{} node {i}: {} documents moved, the slowest back after {worst:?}",
            if graceful { "SIGTERM" } else { "kill -9" },
            served.len()
        );
        cluster.start(i);
        std::thread::sleep(settle);
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("## Failover and handover, 3 nodes, {docs} documents, lease {ttl} ms (margin {margin}, poll {poll})\n");
    println!("| event | samples (document x event) | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("kill -9: kill to the first ack by the new owner", &failover),
        ("SIGTERM: gap between acks", &handover),
        ("SIGTERM: signal to the first ack by the new owner", &signal_to_ack),
    ] {
        println!("| {name} | {} | {:.1} | {:.1} | {:.1} |", h.len(), ms(h, 0.5), ms(h, 0.99), h.max() as f64 / 1000.0);
    }
    if !moves_per_handover.is_empty() {
        let h = &moves_per_handover;
        println!(
            "\n`moved` followed per document per SIGTERM hand-over (1: straight to the new owner): mean {:.2}, p50 {}, p99 {}, max {}",
            h.mean(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
}
