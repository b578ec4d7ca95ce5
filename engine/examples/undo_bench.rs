//! What per-user undo costs the server.
//!
//! ```text
//! cargo run --release -p tandem-engine --example undo_bench -- \
//!     [--trace NAME] [--tails 0,100,1000,10000] [--setups 20] [--reps 25]
//! ```
//!
//! (An example of the engine's rather than a `benches/` binary: it needs only the engine,
//! so its release build takes a minute, not the whole workspace's.)
//!
//! 1. **Tracking**, on every op: a sequential trace (default `automerge-paper`, 259,778
//!    patches) submitted to the sequencer as one user, with undo tracking (`submit_by`: the
//!    op's inverse, keystroke grouping, the stack) and without (`submit`), in alternating
//!    rounds of the same run; the ratio of the medians.
//! 2. **Undo latency** with a tail of N ops by others after the undone change (the inverse
//!    transformed through all of them): the user inserts a word at a random place of the
//!    trace's final text, another user types N random keystrokes all over it, then one undo
//!    is timed (each setup cloned `--reps` times; the clone is not timed). p50, p99 and max
//!    per tail, in microseconds.
//!
//! Markdown to stdout.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::{Attributes, ClientId, Delta, DocState, Document, Limits, Submitted};

#[path = "support/trace.rs"]
mod trace;

const ROUNDS: usize = 5;

struct Args {
    trace: String,
    tails: Vec<usize>,
    setups: usize,
    reps: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { trace: "automerge-paper".into(), tails: vec![0, 100, 1_000, 10_000], setups: 20, reps: 25 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--trace" => a.trace = value()?,
            "--tails" => {
                a.tails = value()?.split(',').map(str::parse).collect::<Result<_, _>>().context("--tails N,N,...")?
            }
            "--setups" => a.setups = value()?.parse().context("--setups N")?,
            "--reps" => a.reps = value()?.parse().context("--reps N")?,
            other => bail!("unknown argument {other:?} (--trace NAME, --tails N,N, --setups N, --reps N)"),
        }
    }
    Ok(a)
}

/// Replays `patches` as one user; with `tracked`, each op goes on the user's undo stack.
fn replay(start: &str, patches: &[Delta], tracked: bool) -> Duration {
    let mut state = DocState::restore(0, Document::from_text(start), Limits::default());
    let me = ClientId(1);
    let t = Instant::now();
    for (i, delta) in patches.iter().enumerate() {
        let (rev, seq) = (state.rev(), i as u64 + 1);
        let r = if tracked {
            // A keystroke every 100 ms: runs of typing group into steps, as in an editor.
            state.submit_by(me, "u", rev, seq, delta.clone(), u64::MAX, seq * 100).map(|(s, _)| s)
        } else {
            state.submit(me, rev, seq, delta.clone())
        };
        assert!(matches!(r, Ok(Submitted::Applied(_))), "patch {i}: {r:?}");
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() -> Result<()> {
    let args = args()?;
    let (trace, patches) = trace::load(&args.trace)?;

    println!("# Undo costs\n");
    println!("## Tracking on the hot path: `{}` ({} ops) as one user\n", trace.name, patches.len());
    let (mut plain, mut tracked) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(replay(&trace.start, &patches, false));
        tracked.push(replay(&trace.start, &patches, true));
    }
    let (p, t) = (median(plain), median(tracked));
    let per_op = |d: Duration| d.as_nanos() as f64 / patches.len() as f64;
    println!("| | median of {ROUNDS} | per op |\n|---|---|---|");
    println!("| `submit` (no undo) | {:.1} ms | {:.0} ns |", p.as_secs_f64() * 1e3, per_op(p));
    println!("| `submit_by` (undo tracked) | {:.1} ms | {:.0} ns |", t.as_secs_f64() * 1e3, per_op(t));
    println!("\nTracked / plain: **{:.2}x**\n", t.as_secs_f64() / p.as_secs_f64());

    let base_text = trace.end.clone();
    println!(
        "## Undo latency after a tail of ops by others ({} chars of `{}`'s final text)\n",
        base_text.chars().count(),
        trace.name
    );
    println!("| tail (ops) | samples | p50 | p99 | max |\n|---|---|---|---|---|");
    let (user, other) = (ClientId(1), ClientId(2));
    for &tail in &args.tails {
        let limits = Limits { history_ops: tail + 16, history_bytes: usize::MAX, ..Limits::default() };
        let mut h = Histogram::<u64>::new(3)?;
        for setup in 0..args.setups {
            let mut rng = ChaCha8Rng::seed_from_u64(setup as u64);
            let mut state = DocState::restore(0, Document::from_text(&base_text), limits.clone());
            let at = rng.random_range(0..=state.document().len());
            let word = Delta::new().retain(at, Attributes::NONE).insert("undone ", Attributes::NONE).chop();
            state.submit_by(user, "u", 0, 1, word, u64::MAX, 0).context("the user's change")?;
            for i in 0..tail {
                let k = tandem_engine::random::keystroke(&mut rng, state.document().len());
                let rev = state.rev();
                state.submit_by(other, "o", rev, i as u64 + 1, k, u64::MAX, 1).context("a tail op")?;
            }
            for _ in 0..args.reps {
                let mut s = state.clone();
                let t = Instant::now();
                let r = s.undo(user, "u", 2, u64::MAX, 2);
                let ns = t.elapsed().as_nanos() as u64;
                assert!(matches!(r, Ok((Submitted::Applied(_), _))), "undo: {r:?}");
                h.record(ns.max(1))?;
            }
        }
        println!(
            "| {tail} | {} | {:.1} µs | {:.1} µs | {:.1} µs |",
            h.len(),
            us(&h, 0.5),
            us(&h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
