//! Cross-region edit latency (issue 17's multi-region design), printed as Markdown.
//!
//! A document lives in its home region: the node that serves it, with its op log beside it.
//! Clients in other regions reach that node across the WAN (a `moved` sends them there). Here
//! three regions are simulated on one machine: one `tandem serve` is region A, the home of
//! the document; clients in regions B and C connect to it through links that delay every byte
//! by the one-way latency between the regions, in each direction (a userspace relay: this
//! kernel has no `sch_netem`, so `tc netem` is not available). One writer per region edits
//! the document at `--rate` edits a second, one edit in flight at a time; every writer also
//! reads the others'. Measured: each writer's edit to its acknowledgement, and each edit to
//! its receipt by each other region's client, against the reference design's 140 ms budget.
//!
//! `cargo run --release -p tandem-benches --bin region-sim -- [--tandem target/release/tandem]
//! [--seconds 20] [--rate 5] [--delays A-B=30,A-C=40,B-C=70]`
//!
//! The default one-way delays are assumptions after public inter-region round-trip times
//! (about 60 ms between US East and US West, 80 ms between US East and Western Europe, 140 ms
//! between US West and Western Europe); only the delays to A matter, A being the home.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::client::{Client, ClientOptions, Event};
use tandem_testkit::cluster::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGIONS: [&str; 3] = ["A", "B", "C"];
const BUDGET_MS: f64 = 140.0;
const DOC: &str = "region-sim";

/// Sent times by (author, client_seq).
type Sent = Arc<Mutex<HashMap<(u64, u64), Instant>>>;
/// Latencies by (writer region, reader region), microseconds; the writer's own is its ack.
type Latencies = Arc<Mutex<HashMap<(usize, usize), Histogram<u64>>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut seconds, mut rate, mut delays) =
        ("target/release/tandem".to_owned(), 20u64, 5.0f64, "A-B=30,A-C=40,B-C=70".to_owned());
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--tandem" => bin = v(),
            "--seconds" => seconds = v().parse().expect("--seconds N"),
            "--rate" => rate = v().parse().expect("--rate EDITS_PER_S"),
            "--delays" => delays = v(),
            other => panic!("unknown argument {other} (see the file's header)"),
        }
    }
    let one_way = parse_delays(&delays);
    let data = tempfile::tempdir().expect("a temp dir");
    let port = free_port();
    let node: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let mut server = start(&bin, node, data.path());

    // Region i reaches A's node directly (i = 0) or through a link delaying by A-i each way.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let entry: Vec<SocketAddr> = (0..REGIONS.len())
        .map(|i| if i == 0 { node } else { rt.block_on(link(node, Duration::from_millis(one_way[0][i]))) })
        .collect();

    let sent: Sent = Arc::default();
    let lat: Latencies = Arc::default();
    let until = Instant::now() + Duration::from_secs(seconds);
    let start_at = Instant::now() + Duration::from_secs(2);
    let handles: Vec<_> = (0..REGIONS.len())
        .map(|i| {
            let (sent, lat, addr) = (Arc::clone(&sent), Arc::clone(&lat), entry[i]);
            std::thread::spawn(move || writer(i, addr, rate, start_at, until, &sent, &lat))
        })
        .collect();
    for h in handles {
        h.join().expect("a writer");
    }
    let _ = server.kill();
    let _ = server.wait();

    let lat = lat.lock().expect("not poisoned");
    let commit = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    println!("## Cross-region edit latency: the document's home is region A\n");
    println!(
        "Commit {commit}, {} CPUs; one-way delays (ms) A-B {}, A-C {}, B-C {}; {rate} edits/s per writer, {seconds} s; `tandem serve --cores 1`, local op log (fsync always).\n",
        std::thread::available_parallelism().map_or(1, usize::from),
        one_way[0][1],
        one_way[0][2],
        one_way[1][2]
    );
    println!("| writer | reader | edits | p50 ms | p99 ms | max ms | path | within 140 ms |");
    println!("|---|---|---:|---:|---:|---:|---|---|");
    for w in 0..REGIONS.len() {
        for r in 0..REGIONS.len() {
            let Some(h) = lat.get(&(w, r)) else { continue };
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let path = if w == r {
                format!("ack: {0}->A->{0} ({1} ms of links)", REGIONS[w], 2 * one_way[0][w])
            } else {
                format!("{}->A->{} ({} ms of links)", REGIONS[w], REGIONS[r], one_way[0][w] + one_way[0][r])
            };
            let ok = if ms(0.99) <= BUDGET_MS { "yes" } else { "no" };
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {path} | {ok} |",
                REGIONS[w],
                if w == r { "(its ack)".to_owned() } else { REGIONS[r].to_owned() },
                h.len(),
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0
            );
        }
    }
}

/// `A-B=30,...`: one-way milliseconds between regions (symmetric; 0 within a region).
fn parse_delays(s: &str) -> [[u64; 3]; 3] {
    let mut d = [[0u64; 3]; 3];
    for part in s.split(',') {
        let (pair, ms) = part.split_once('=').unwrap_or_else(|| panic!("{part}: expected X-Y=MS"));
        let (x, y) = pair.split_once('-').unwrap_or_else(|| panic!("{pair}: expected X-Y"));
        let idx = |r: &str| REGIONS.iter().position(|n| *n == r).unwrap_or_else(|| panic!("no region {r}"));
        let ms: u64 = ms.parse().unwrap_or_else(|_| panic!("{ms}: milliseconds"));
        d[idx(x)][idx(y)] = ms;
        d[idx(y)][idx(x)] = ms;
    }
    d
}

fn start(bin: &str, addr: SocketAddr, data: &std::path::Path) -> Child {
    let child = Command::new(bin)
        .args(["serve", "--auth", "dev", "--cores", "1", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{bin} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// A link to `to` that delays every byte by `delay` in each direction; returns its address.
async fn link(to: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(to).await else { continue };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(delayed(ri, wo, delay));
            tokio::spawn(delayed(ro, wi, delay));
        }
    });
    addr
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (in order).
async fn delayed(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Region `i`'s writer: edits at `rate` (one in flight), records its acks and its receipts
/// of the others' edits.
fn writer(i: usize, addr: SocketAddr, rate: f64, start_at: Instant, until: Instant, sent: &Sent, lat: &Latencies) {
    let me = 1 + i as u64;
    let options = ClientOptions { name: format!("writer-{}", REGIONS[i]), ..ClientOptions::default() };
    let mut c = Client::connect(addr, ClientId(me), options).expect("connects");
    c.open(DOC).expect("opens");
    std::thread::sleep(start_at.saturating_duration_since(Instant::now()));
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    let mut inflight: Option<(u64, Instant)> = None;
    let record = |w: usize, r: usize, from: Instant, at: Instant| {
        let mut l = lat.lock().expect("not poisoned");
        let h = l.entry((w, r)).or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"));
        let _ = h.record(at.saturating_duration_since(from).as_micros() as u64);
    };
    while Instant::now() < until || inflight.is_some() {
        let now = Instant::now();
        if inflight.is_none() && now >= next && now < until {
            let ds = c.session().doc_state(DOC).expect("open");
            let seq = ds.next_seq();
            let d = Delta::new().insert(REGIONS[i], Attributes::NONE);
            let t = Instant::now();
            sent.lock().expect("not poisoned").insert((me, seq), t);
            c.edit(DOC, d).expect("edits");
            inflight = Some((seq, t));
            next += every;
        }
        // Short reads: `pump` hands its events out at its deadline, and their times are
        // taken then (1 ms of error at most).
        for e in c.pump(Duration::from_millis(1)).expect("pumps") {
            let at = Instant::now();
            match e {
                Event::Acked { client_seq, .. } => {
                    if let Some((seq, t)) = inflight
                        && client_seq >= seq
                    {
                        record(i, i, t, at);
                        inflight = None;
                    }
                }
                Event::Remote { author, client_seq, .. } => {
                    let w = author.0.wrapping_sub(1) as usize;
                    if w < REGIONS.len()
                        && let Some(t) = sent.lock().expect("not poisoned").get(&(author.0, client_seq))
                    {
                        record(w, i, *t, at);
                    }
                }
                _ => {}
            }
        }
        if Instant::now() > until + Duration::from_secs(10) {
            break;
        }
    }
    let _ = c.close();
}
