//! The search worker's benchmark (not a test): query latency over a large index of real
//! text, and the worker's indexing cost per core.
//!
//! `cargo run --release -p tandem-workers --example search_bench -- [DOCS] [EVENTS]`
//! (defaults 100000 and 20000). Documents are windows of 500 to 3,000 characters cut from the
//! final texts of the editing traces in `shared/traces/sequential`; queries are one or two
//! words drawn from the same text. It prints:
//! - the time to build the index (the `tandem reindex` path);
//! - query p50/p99/max through `SearchIndex::search` (what `GET /api/search` calls), over the
//!   whole index and restricted to 4,096 documents (the API's path for most users);
//! - the worker's rate: change-feed events (typing bursts on 2,000 documents) applied and
//!   committed per second on one thread, with flushes of 512 events, as `tandem serve` runs it.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_control::search::SearchIndex as _;
use tandem_events::schema::Change;
use tandem_events::{Envelope, Event};
use tandem_workers::Worker;
use tandem_workers::search::{IndexedDoc, Search, SearchIndex, SearchStats};

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let docs = args.first().copied().unwrap_or(100_000);
    let events = args.get(1).copied().unwrap_or(20_000);
    let mut corpus = String::new();
    for path in tandem_traces::sequential_traces()? {
        corpus.push_str(&tandem_traces::Trace::load(&path)?.end);
        corpus.push('\n');
    }
    let chars: Vec<char> = corpus.chars().collect();
    let words: Vec<String> = corpus
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4 && w.chars().all(char::is_alphabetic))
        .map(str::to_lowercase)
        .collect();
    println!("corpus: {} characters, {} words of 4+ letters", chars.len(), words.len());
    let mut rng = StdRng::seed_from_u64(7);
    let dir = tempfile::tempdir()?;
    let index = SearchIndex::open(dir.path())?;

    // Build.
    let started = Instant::now();
    let mut writer = index.writer()?;
    let mut bytes = 0usize;
    for i in 0..docs {
        let len = rng.random_range(500..3000).min(chars.len() - 1);
        let at = rng.random_range(0..chars.len() - len);
        let text: String = chars[at..at + len].iter().collect();
        bytes += text.len();
        let title = format!("{} {}", words[rng.random_range(0..words.len())], words[rng.random_range(0..words.len())]);
        index.put(&writer, &format!("doc{i}"), Some(&IndexedDoc { title, text, rev: 1 }))?;
    }
    writer.commit()?;
    drop(writer);
    index.reload()?;
    let build_s = started.elapsed().as_secs_f64();
    println!(
        "built: {docs} documents ({:.0} MB of text) in {build_s:.1} s ({:.0} documents/s)",
        bytes as f64 / 1e6,
        docs as f64 / build_s
    );

    // Queries.
    let only: Vec<String> = (0..4096).map(|_| format!("doc{}", rng.random_range(0..docs))).collect();
    for (label, restrict, n_words) in
        [("1 word, whole index", false, 1), ("2 words, whole index", false, 2), ("2 words, 4,096 readable", true, 2)]
    {
        let mut times = Vec::new();
        let mut hits = 0usize;
        for _ in 0..2000 {
            let q: Vec<&str> = (0..n_words).map(|_| words[rng.random_range(0..words.len())].as_str()).collect();
            let q = q.join(" ");
            let t = Instant::now();
            let found = index.search(&q, restrict.then_some(only.as_slice()), 0, 21)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            hits += found.len();
        }
        let (p50, p99, max) = percentiles(times);
        println!(
            "query ({label}, 20 hits + snippets): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; {:.1} hits/query",
            hits as f64 / 2000.0
        );
    }

    // The worker: typing bursts on 2,000 documents that start empty.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stats = Arc::new(SearchStats::default());
    let mut worker = Search::new(Arc::clone(&index), Arc::clone(&stats))?;
    let mut revs = vec![0u64; 2000];
    let mut envelopes = Vec::with_capacity(events);
    for i in 0..events {
        let d = rng.random_range(0..revs.len());
        // A burst of 1 to 8 keystrokes at the start of the text.
        let changes: Vec<Change> = (0..rng.random_range(1..=8))
            .map(|_| {
                revs[d] += 1;
                let c = chars[rng.random_range(0..chars.len())];
                Change {
                    rev: revs[d],
                    author: "0000000000000001".into(),
                    at_ms: 0,
                    delta: serde_json::json!({"ops": [{"insert": c.to_string()}]}),
                }
            })
            .collect();
        let (from_rev, to_rev) = (changes[0].rev, revs[d]);
        let event = Event::Edited {
            doc: format!("typed{d}"),
            from_rev,
            to_rev,
            authors: vec!["0000000000000001".into()],
            ops: changes.len() as u64,
            inserted: changes.len() as u64,
            deleted: 0,
            changes: Some(changes),
        };
        envelopes.push(Envelope::new(format!("e{i}"), 0, event));
    }
    let started = Instant::now();
    runtime.block_on(async {
        for chunk in envelopes.chunks(worker.batch()) {
            for e in chunk {
                worker.handle(e).await.map_err(|f| format!("{f:?}"))?;
            }
            worker.flush().await?;
        }
        Ok::<_, String>(())
    })?;
    let s = started.elapsed().as_secs_f64();
    println!(
        "worker: {events} events in {s:.2} s: {:.0} events/s on one thread ({} commits)",
        events as f64 / s,
        stats.commits.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
