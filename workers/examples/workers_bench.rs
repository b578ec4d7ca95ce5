//! The workers' cost per core (a benchmark, not a test): what the capacity planner reads to
//! size the workers (`tandem-loadgen plan --workers FILE`).
//!
//! `cargo run --release -p tandem-workers --example workers_bench -- [OUT.json] [EVENTS]`
//! (default 20000 events per worker). Each worker runs in the real runtime
//! ([`tandem_workers::run`]: batches, lingering, flushes, offset commits) on an in-process bus
//! and a SQLite metadata store in a temporary directory, on a current-thread tokio runtime,
//! after its events were published; the bench measures the process's CPU time (every thread:
//! tokio, sqlx's SQLite thread, tantivy's writer threads) until the worker's lag is 0. Events:
//! - `search` and `analytics-edits`: change-feed events of typing bursts (1 to 8 keystrokes
//!   of the editing traces' text) on 2,000 documents, as the office scenario makes them;
//! - `analytics-usage`: document opens;
//! - `notifications`: shares, written as `.eml` files (the CPU's part of an email; through
//!   SMTP the rate is the server's round trip, measured in `results/2026-11-29-workers`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_control::Store;
use tandem_events::local::LocalBus;
use tandem_events::schema::Change;
use tandem_events::{Bus, Envelope, Event, Message};
use tandem_net::protocol::Role;
use tandem_workers::analytics::{AnalyticsStats, Edits, Usage};
use tandem_workers::notify::{MailConfig, Mailer, Notifications};
use tandem_workers::search::{Search, SearchIndex, SearchStats};
use tandem_workers::{RetryPolicy, Worker, WorkerStats};

/// CPU seconds this process used so far (all threads).
fn cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which is valid and
    // large enough; it is read only after that.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Typing bursts on 2,000 documents: (events, ops).
fn edits(n: usize, text: &[char], rng: &mut StdRng) -> (Vec<Envelope>, u64) {
    let mut revs = vec![0u64; 2000];
    let mut ops = 0;
    let now = u64::try_from(tandem_control::now_ms()).unwrap_or(0);
    let events = (0..n)
        .map(|i| {
            let d = rng.random_range(0..revs.len());
            let changes: Vec<Change> = (0..rng.random_range(1..=8))
                .map(|k| {
                    revs[d] += 1;
                    Change {
                        rev: revs[d],
                        author: format!("{:016x}", d * 5 + 1),
                        at_ms: now + k,
                        delta: serde_json::json!({"ops": [{"insert": text[rng.random_range(0..text.len())].to_string()}]}),
                    }
                })
                .collect();
            ops += changes.len() as u64;
            let event = Event::Edited {
                doc: format!("office{d}"),
                from_rev: changes[0].rev,
                to_rev: revs[d],
                authors: vec![changes[0].author.clone()],
                ops: changes.len() as u64,
                inserted: changes.len() as u64,
                deleted: 0,
                changes: Some(changes),
            };
            Envelope::new(format!("e{i}"), i64::try_from(now).unwrap_or(0), event)
        })
        .collect();
    (events, ops)
}

struct Measured {
    worker: &'static str,
    events: usize,
    /// Ops (edits) the events carried; 0 for workers of other events.
    ops: u64,
    cpu_s: f64,
    wall_s: f64,
}

async fn measure<W: Worker>(
    worker: W,
    events: &[Envelope],
    ops: u64,
    dir: &std::path::Path,
    store: &Store,
) -> Measured {
    let name = worker.group();
    let bus = Bus::Local(LocalBus::open(&dir.join(format!("{name}.db")), 10_000_000).await.expect("the bus"));
    // Subscribed before publishing, so the group starts at the first event.
    drop(bus.subscribe(name, worker.topic()).await.expect("subscribe"));
    let messages: Vec<Message> = events.iter().map(Message::from).collect();
    for chunk in messages.chunks(1000) {
        bus.publish(chunk).await.expect("publish");
    }
    let stats = WorkerStats::new(name);
    let (cpu, wall) = (cpu_s(), Instant::now());
    let task = tokio::spawn(tandem_workers::run(worker, bus.clone(), store.clone(), stats, RetryPolicy::default()));
    while bus.lag().iter().any(|(g, _, lag)| g == name && *lag > 0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = Measured {
        worker: name,
        events: events.len(),
        ops,
        cpu_s: cpu_s() - cpu,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    task.abort();
    m
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().cloned();
    let n: usize = args.get(1).map_or(Ok(20_000), |a| a.parse())?;
    let mut text = String::new();
    for path in tandem_traces::sequential_traces()? {
        text.push_str(&tandem_traces::Trace::load(&path)?.end);
    }
    let text: Vec<char> = text.chars().collect();
    let mut rng = StdRng::seed_from_u64(11);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("meta.db").display())).await?;
        store.migrate().await?;
        let (feed, ops) = edits(n, &text, &mut rng);
        let now = tandem_control::now_ms();
        let opens: Vec<Envelope> = (0..n)
            .map(|i| {
                let event = Event::Opened {
                    doc: format!("office{}", i % 2000),
                    user: format!("user{}", i % 10_000),
                    client: format!("{:016x}", i + 1),
                };
                Envelope::new(format!("o{i}"), now, event)
            })
            .collect();
        let shares: Vec<Envelope> = (0..n)
            .map(|i| {
                let event = Event::DocumentShared {
                    doc: format!("office{}", i % 2000),
                    title: "Quarterly plan".into(),
                    by: "user0".into(),
                    by_name: "Ann".into(),
                    email: format!("reader{i}@example.com"),
                    role: Role::Editor,
                    user: None,
                };
                Envelope::new(format!("s{i}"), now, event)
            })
            .collect();
        let analytics = Arc::new(AnalyticsStats::default());
        let index = SearchIndex::open(&dir.path().join("search"))?;
        let search = Search::new(index, Arc::new(SearchStats::default()))?;
        let mail = MailConfig { files_dir: Some(dir.path().join("mail")), ..MailConfig::default() };
        let mailer = Mailer::new(&mail, dir.path())?;
        let notifications = Notifications::new(mailer, store.clone(), &mail, "http://tandem.test")?;
        let results = vec![
            measure(search, &feed, ops, dir.path(), &store).await,
            measure(Edits::new(store.clone(), Arc::clone(&analytics)), &feed, ops, dir.path(), &store).await,
            measure(Usage::new(store.clone(), Arc::clone(&analytics)), &opens, 0, dir.path(), &store).await,
            measure(notifications, &shares, 0, dir.path(), &store).await,
        ];
        Ok::<_, Box<dyn std::error::Error>>(results)
    })?;
    let mut json = serde_json::Map::new();
    println!("| worker | events | ops | CPU s | wall s | events/s per core | ops/s per core |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        let per_core = m.events as f64 / m.cpu_s;
        let ops_per_core = m.ops as f64 / m.cpu_s;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {per_core:.0} | {} |",
            m.worker,
            m.events,
            m.ops,
            m.cpu_s,
            m.wall_s,
            if m.ops > 0 { format!("{ops_per_core:.0}") } else { "-".into() }
        );
        json.insert(
            m.worker.to_owned(),
            serde_json::json!({
                "events": m.events,
                "ops": m.ops,
                "cpu_s": m.cpu_s,
                "wall_s": m.wall_s,
                "events_per_core_s": per_core,
                "ops_per_core_s": if m.ops > 0 { Some(ops_per_core) } else { None },
            }),
        );
    }
    if let Some(out) = out {
        let doc = serde_json::json!({
            "command": format!("cargo run --release -p tandem-workers --example workers_bench -- {}", args.join(" ")),
            "workers": json,
        });
        std::fs::write(&out, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("wrote {out}");
    }
    Ok(())
}
