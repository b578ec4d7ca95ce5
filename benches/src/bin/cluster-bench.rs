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
//!   new owner). The node is restarted and the cluster left to settle (every node serving
//!   300 or more of the 1,024 shards) before the next kill.
//! - **handover**: `SIGTERM` a node (it hands its shards over and exits); for each document
//!   it served, how long the edit that the new owner acknowledged first waited, from when
//!   it was made (the pause a writer sees; it may have been made before the old node
//!   stopped serving, or in the 20 ms a writer waits between edits after), and the time from the
//!   signal to the new owner's first acknowledgement (how long the document could not be
//!   written, counting the time the old node still served it), split into the phases its
//!   client saw: reading `moved`, connecting to the next node, opening the document there,
//!   its first edit acknowledged. Writers read their connection between edits, as live
//!   clients do, so a `moved` is read when it arrives.
//!
//! `--no-workers` runs the nodes without their in-process workers (`[events] workers = []`,
//! as nodes whose workers run in `tandem worker` processes elsewhere): on a small machine the
//! search index's commits and the event log's writes compete with the hand-over for the
//! same cores and disk.
//!
//! The report starts with how loaded the machine was in the second before each signal (its
//! CPUs' busy share, every process counted, and the edits acknowledged): on a machine whose
//! CPUs are all busy before the signal, a hand-over's pause is mostly queueing.
//!
//! `cargo run --release -p tandem-benches --bin cluster-bench -- [--tandem target/release/tandem] [--kills 10] [--leaves 10] [--docs 30] [--lease-ttl-ms 3000] [--no-workers] [--show-slow MS]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tandem_testkit::Postgres;
use tandem_testkit::cluster::{Cluster, Follower};

/// Per document: when its client last read a `moved`, and last opened the document.
#[derive(Clone, Copy, Default)]
struct Marks {
    moved: Option<Instant>,
    connected: Option<Instant>,
    opened: Option<Instant>,
}

/// Per document: (when acknowledged, by which node's address, when the oldest edit it
/// acknowledged was made).
type Acks = Arc<Mutex<Vec<Vec<(Instant, std::net::SocketAddr, Instant)>>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut kills, mut leaves, mut docs, mut ttl) =
        (PathBuf::from("target/release/tandem"), 10usize, 10usize, 30usize, 3000u64);
    let mut workers = true;
    // Print the phases of each document back later than this after a signal.
    let mut show_slow: Option<Duration> = None;
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--tandem" => bin = PathBuf::from(v()),
            "--kills" => kills = v().parse().expect("--kills N"),
            "--leaves" => leaves = v().parse().expect("--leaves N"),
            "--docs" => docs = v().parse().expect("--docs N"),
            "--lease-ttl-ms" => ttl = v().parse().expect("--lease-ttl-ms MS"),
            "--no-workers" => workers = false,
            "--show-slow" => show_slow = Some(Duration::from_millis(v().parse().expect("--show-slow MS"))),
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(bin.exists(), "{}: build it first (cargo build --release -p tandem)", bin.display());
    let pg = Postgres::start();
    let (margin, poll) = ((ttl / 6).max(100), (ttl / 6).max(100));
    let lease = [ttl.to_string(), margin.to_string(), poll.to_string()];
    let mut args = vec!["--lease-ttl-ms", &lease[0], "--lease-margin-ms", &lease[1], "--lease-poll-ms", &lease[2]];
    // Nodes whose workers run elsewhere (`tandem worker`): no search index, analytics or
    // mail worker inside the nodes, which share this machine's cores.
    let config = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(config.path(), "[events]\nworkers = []\n").expect("writing the configuration");
    let config_path = config.path().to_str().expect("a UTF-8 path").to_owned();
    if !workers {
        args.extend(["--config", &config_path]);
    }
    let mut cluster = Cluster::new(&bin, &pg, 3, &args);
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::new(Mutex::new(vec![Vec::new(); docs]));
    // `moved` messages each document's client has followed so far.
    let moves: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new((0..docs).map(|_| Default::default()).collect());
    // Per document: when its client last read a `moved`, and last opened the document.
    let marks: Arc<Mutex<Vec<Marks>>> = Arc::new(Mutex::new(vec![Marks::default(); docs]));
    let writers: Vec<_> = (0..docs)
        .map(|d| {
            let (urls, stop, acks) = (cluster.urls(), Arc::clone(&stop), Arc::clone(&acks));
            let (moves, marks) = (Arc::clone(&moves), Arc::clone(&marks));
            std::thread::spawn(move || {
                let mut f = Follower::new(1 + d as u64, &format!("bench-{d}"), urls);
                let mut n = 0u64;
                // When the oldest edit not acknowledged yet was made.
                let mut made = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    if !f.ensure_open(Duration::from_secs(1)) {
                        continue;
                    }
                    if f.client.as_ref().is_some_and(|c| c.session().is_synced()) {
                        made = Instant::now();
                    }
                    if f.append(&format!("<{n}>")) {
                        n += 1;
                    }
                    moves[d].store(f.moves as u64, Ordering::Relaxed);
                    marks.lock().unwrap()[d] =
                        Marks { moved: f.moved_at, connected: f.connected_at, opened: f.opened_at };
                    let c = f.client.as_ref().expect("connected");
                    if c.session().is_synced() && c.session().is_open(&f.doc) {
                        acks.lock().unwrap()[d].push((Instant::now(), c.addr(), made));
                    }
                    f.think(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let settle = Duration::from_millis(ttl * 2 + 2000);
    std::thread::sleep(settle);
    // Each round starts from a balanced cluster (a new cluster's, or a restarted node's,
    // shards move a few dozen per poll), not in the middle of a rebalance.
    let balanced = |cluster: &Cluster| cluster.until_all_served(3, 300, Duration::from_secs(60));
    balanced(&cluster);
    let mut failover = Histogram::<u64>::new(3).unwrap();
    let mut handover = Histogram::<u64>::new(3).unwrap();
    let mut signal_to_ack = Histogram::<u64>::new(3).unwrap();
    // `moved` followed per document per hand-over (1: straight to the new owner).
    let mut moves_per_handover = Histogram::<u64>::new(3).unwrap();
    // A hand-over's phases as its clients saw them: the signal to reading `moved`, to the
    // document open on the next node, to the first ack there.
    let mut phases: [Histogram<u64>; 5] = std::array::from_fn(|_| Histogram::new(3).unwrap());
    // Per signal: the machine's CPUs' busy share (per mille) and the edits acknowledged in
    // the second before it.
    let (mut busy_before, mut acked_before) = (Histogram::<u64>::new(3).unwrap(), Histogram::<u64>::new(3).unwrap());
    for round in 0..kills + leaves {
        let i = round % 3;
        let addr = cluster.nodes[i].addr;
        let graceful = round >= kills;
        // How loaded the machine was going into the signal: its CPUs' busy share and the
        // edits acknowledged, over the second before it.
        let (cpu0, acks0) = (cpu_times(), acks.lock().unwrap().iter().map(Vec::len).sum::<usize>());
        std::thread::sleep(Duration::from_secs(1));
        let (cpu1, acks1) = (cpu_times(), acks.lock().unwrap().iter().map(Vec::len).sum::<usize>());
        if let (Some((b0, t0)), Some((b1, t1))) = (cpu0, cpu1)
            && t1 > t0
        {
            busy_before.record((b1 - b0) * 1000 / (t1 - t0)).unwrap();
        }
        acked_before.record((acks1 - acks0) as u64).unwrap();
        let t = Instant::now();
        // The documents it served: their last acknowledgement came from it.
        let served: Vec<(usize, Instant)> = acks
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(d, a)| a.last().filter(|(_, by, _)| *by == addr).map(|(at, _, _)| (d, *at)))
            .collect();
        let moves_before: Vec<u64> = served.iter().map(|&(d, _)| moves[d].load(Ordering::Relaxed)).collect();
        if graceful {
            // For lining up with the nodes' logs (TANDEM_TESTKIT_ECHO=1).
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            eprintln!("SIGTERM node {i} at {:.6} (Unix seconds)", wall.as_secs_f64());
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
            // The first ack by another node after the signal; on SIGTERM, the old node may
            // still have acknowledged edits after it, until it stopped serving.
            pending.retain(|&(d, _)| match a[d].iter().find(|(at, by, _)| *at > t && *by != addr) {
                Some(&(at, _, made)) => {
                    // On SIGTERM: how long the edit the new owner acknowledged first waited.
                    let took = if graceful { at.duration_since(made) } else { at.duration_since(t) };
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
                let m = marks.lock().unwrap()[d];
                let ack =
                    acks.lock().unwrap()[d].iter().find(|(at, by, _)| *at > t && *by != addr).map(|(at, _, _)| *at);
                if let Some(slow) = show_slow
                    && ack.is_some_and(|a| a.duration_since(t) > slow)
                {
                    let ms = |x: Option<Instant>| {
                        x.map_or("-".into(), |x| format!("{:.1}", (x.max(t) - t).as_secs_f64() * 1e3))
                    };
                    eprintln!(
                        "slow: bench-{d} moved {} times; ms after the signal: `moved` {}, connected {}, opened {}, ack {}",
                        moves[d].load(Ordering::Relaxed) - before,
                        ms(m.moved),
                        ms(m.connected),
                        ms(m.opened),
                        ms(ack)
                    );
                }
                if let (Some(moved), Some(connected), Some(opened), Some(ack)) = (m.moved, m.connected, m.opened, ack)
                    && moved > t
                    && connected > moved
                    && opened >= connected
                    && ack >= opened
                {
                    let spans = [(t, moved), (moved, connected), (connected, opened), (opened, ack), (moved, ack)];
                    for (h, (a, b)) in phases.iter_mut().zip(spans) {
                        h.record(b.duration_since(a).as_micros() as u64).unwrap();
                    }
                }
            }
        }
        eprintln!(
            "{} node {i}: {} documents moved, the slowest back after {worst:?}",
            if graceful { "SIGTERM" } else { "kill -9" },
            served.len()
        );
        cluster.start(i);
        std::thread::sleep(settle);
        balanced(&cluster);
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let inside = if workers { "in-process workers" } else { "no in-process workers" };
    println!(
        "## Failover and handover, 3 nodes ({inside}), {docs} documents, lease {ttl} ms (margin {margin}, poll {poll})\n"
    );
    println!(
        "In the second before each signal: the machine's CPUs busy {:.0}% (min {:.0}%, max {:.0}%; all {} CPUs, every process), {:.0} edits acknowledged (min {}, max {}).\n",
        busy_before.mean() / 10.0,
        busy_before.min() as f64 / 10.0,
        busy_before.max() as f64 / 10.0,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        acked_before.mean(),
        acked_before.min(),
        acked_before.max()
    );
    println!("| event | samples (document x event) | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("kill -9: kill to the first ack by the new owner", &failover),
        ("SIGTERM: an edit made across it, made to acknowledged (by the new owner)", &handover),
        ("SIGTERM: signal to the first ack by the new owner", &signal_to_ack),
    ] {
        println!("| {name} | {} | {:.1} | {:.1} | {:.1} |", h.len(), ms(h, 0.5), ms(h, 0.99), h.max() as f64 / 1000.0);
    }
    if !phases[0].is_empty() {
        println!("\nSIGTERM hand-overs as their clients saw them (documents that moved once or more):\n");
        println!("| phase | samples | p50 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|---:|");
        let names = [
            "signal to reading `moved`",
            "`moved` to connected to the next node (welcomed)",
            "connected to the document open",
            "open to the first ack",
            "**`moved` to the first ack (the document's pause)**",
        ];
        for (name, h) in names.iter().zip(&phases) {
            println!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |",
                h.len(),
                ms(h, 0.5),
                ms(h, 0.99),
                h.max() as f64 / 1000.0
            );
        }
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

/// The machine's CPU time so far, from `/proc/stat`: (busy, total) in clock ticks. Waiting
/// for IO counts as idle: a monoio core waiting in io_uring is counted there.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else { return None };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}
