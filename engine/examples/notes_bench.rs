//! What comment anchors cost the sequencer: a sequential trace (default `automerge-paper`,
//! 259,778 patches) submitted as one user to a document with 0, 100 and 1,000 comment threads
//! spread over its text, in alternating rounds of the same run; every op moves every anchor.
//!
//! ```text
//! cargo run --release -p tandem-engine --example notes_bench -- [--trace NAME] [--threads 0,100,1000]
//! ```
//!
//! Markdown to stdout.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tandem_engine::{Attributes, ClientId, Delta, DocState, Document, Limits, NoteChange, Submitted};

#[path = "support/trace.rs"]
mod trace;

const ROUNDS: usize = 5;

/// The trace's start with `threads` threads on one char each, spread evenly.
fn setup(start: &str, threads: usize) -> Result<DocState> {
    let mut state = DocState::restore(0, Document::from_text(start), Limits::default());
    let len = state.document().len();
    if threads > 0 && len < threads {
        bail!("the trace's start has {len} chars, fewer than {threads} threads");
    }
    for k in 0..threads {
        let at = k * len / threads;
        let change = NoteChange::Comment { start: at, end: at + 1, text: format!("thread {k}"), mentions: vec![] };
        let rev = state.rev();
        state.submit_note(ClientId(9), "c", "C", rev, k as u64 + 1, change, false, u64::MAX, 0)?;
    }
    Ok(state)
}

fn replay(state: &DocState, patches: &[Delta]) -> Duration {
    let mut state = state.clone();
    let me = ClientId(1);
    let t = Instant::now();
    for (i, delta) in patches.iter().enumerate() {
        let (rev, seq) = (state.rev(), i as u64 + 1);
        let r = state.submit_by(me, "u", rev, seq, delta.clone(), u64::MAX, seq * 100).map(|(s, _)| s);
        assert!(matches!(r, Ok(Submitted::Applied(_))), "patch {i}: {r:?}");
    }
    t.elapsed()
}

fn main() -> Result<()> {
    let (mut name, mut counts) = ("automerge-paper".to_owned(), vec![0, 100, 1_000]);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--trace" => name = value()?,
            "--threads" => {
                counts = value()?.split(',').map(str::parse).collect::<Result<_, _>>().context("--threads N,N")?;
            }
            other => bail!("unknown argument {other:?} (--trace NAME, --threads N,N)"),
        }
    }
    let (trace, patches) = trace::load(&name)?;
    // A start long enough to spread the threads over: the trace's final text, typed over
    // again (the patches apply to the trace's start, so they are replayed on it).
    let start = if trace.start.chars().count() >= counts.iter().copied().max().unwrap_or(0) {
        trace.start.clone()
    } else {
        format!("{}{}", trace.end, trace.start)
    };
    let offset = start.chars().count() - trace.start.chars().count();
    let patches: Vec<Delta> =
        patches.into_iter().map(|d| Delta::new().retain(offset, Attributes::NONE).compose(&d)).collect();
    let states: Vec<DocState> = counts.iter().map(|&n| setup(&start, n)).collect::<Result<_>>()?;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); counts.len()];
    for _ in 0..ROUNDS {
        for (i, s) in states.iter().enumerate() {
            times[i].push(replay(s, &patches));
        }
    }
    println!("# Comment anchors on the hot path: `{}` ({} ops) as one user\n", trace.name, patches.len());
    println!("| threads | median of {ROUNDS} | per op | / no threads |\n|---|---|---|---|");
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|mut v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    for (n, d) in counts.iter().zip(&medians) {
        let per_op = d.as_nanos() as f64 / patches.len() as f64;
        println!(
            "| {n} | {:.1} ms | {per_op:.0} ns | {:.2}x |",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    Ok(())
}
