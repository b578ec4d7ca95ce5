//! Replays editing traces through Tandem's engine and its peers, in one run.
//!
//! ```text
//! trace-replay [--json] [--engines a,b,...] [--runs N] [--timeout SECS] [TRACE.json.gz ...]
//! ```
//!
//! With no trace named, every trace in `traces/sequential/` is replayed. Each (trace, engine)
//! runs in a child process (so a stuck engine can be stopped at `--timeout`, default 120 s,
//! and reported with `"timeout": true`); it replays up to `--runs` times (default 5, fewer
//! once 10 s are spent) and reports the median. `--json` prints one JSON line per pair:
//! `{"trace","engine","ops","ms","ops_per_s","final_ok","runs"}`. `--markdown FILE` renders
//! such lines (from a previous `--json` run) as the tables of a report, with each engine's
//! time as a ratio to Tandem's in the same run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tandem_benches::replay::{ENGINES, replay, unit};
use tandem_benches::trace::{Trace, sequential_traces};

struct Args {
    json: bool,
    markdown: Option<PathBuf>,
    engines: Vec<String>,
    runs: usize,
    timeout: Duration,
    traces: Vec<PathBuf>,
    child: Option<(String, PathBuf)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: trace-replay [--json] [--engines {}] [--runs N] [--timeout SECS] [TRACE.json.gz ...]\n       trace-replay --markdown RESULTS.jsonl",
        ENGINES.join(",")
    );
    std::process::exit(2);
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        json: false,
        markdown: None,
        engines: ENGINES.iter().map(|s| (*s).to_owned()).collect(),
        runs: 5,
        timeout: Duration::from_secs(120),
        traces: Vec::new(),
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = true,
            "--markdown" => args.markdown = Some(it.next().unwrap_or_else(|| usage()).into()),
            "--engines" => {
                let list = it.next().unwrap_or_else(|| usage());
                args.engines = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = args.engines.iter().find(|e| !ENGINES.contains(&e.as_str())) {
                    bail!("unknown engine {bad:?}; known: {}", ENGINES.join(", "));
                }
            }
            "--runs" => args.runs = it.next().unwrap_or_else(|| usage()).parse().context("--runs takes a number")?,
            "--timeout" => {
                let secs = it.next().unwrap_or_else(|| usage()).parse().context("--timeout takes seconds")?;
                args.timeout = Duration::from_secs(secs);
            }
            "--child" => {
                let engine = it.next().unwrap_or_else(|| usage());
                let trace = it.next().unwrap_or_else(|| usage());
                args.child = Some((engine, trace.into()));
            }
            "-h" | "--help" => usage(),
            s if s.starts_with('-') => bail!("unknown option {s}"),
            path => args.traces.push(path.into()),
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(args)
}

/// Runs in the child: replays one trace through one engine and prints a JSON line.
fn child(engine: &str, path: &Path, runs: usize) -> Result<()> {
    let trace = Trace::load(path)?;
    let patches = trace.patches_in(unit(engine)).unwrap_or_else(|| trace.patches());
    let mut times = Vec::new();
    let mut final_ok = true;
    let budget = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        let text = replay(engine, &trace.start, &patches).context("unknown engine")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        final_ok &= text == trace.end;
        if budget.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let ops = patches.len();
    println!(
        "{}",
        json!({"trace": trace.name, "engine": engine, "ops": ops, "ms": round3(ms), "ops_per_s": (ops as f64 / (ms / 1000.0)).round(), "final_ok": final_ok, "runs": times.len()})
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs one (trace, engine) pair in a child process with a timeout.
fn measure(engine: &str, path: &Path, args: &Args) -> Result<Value> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", engine, path.to_str().context("trace path is not UTF-8")?, "--runs", &args.runs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the replay child")?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let stdout = child.stdout.take().context("child stdout")?;
            let line = BufReader::new(stdout).lines().next().transpose()?.unwrap_or_default();
            if !status.success() {
                bail!("{engine} on {} failed: {status}", path.display());
            }
            return serde_json::from_str(&line).with_context(|| format!("child printed {line:?}"));
        }
        if start.elapsed() > args.timeout {
            child.kill()?;
            child.wait()?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").trim_end_matches(".json.gz");
            let ops = Trace::load(path).map(|t| t.patches().len()).unwrap_or(0);
            return Ok(
                json!({"trace": name, "engine": engine, "ops": ops, "timeout": true, "timeout_s": args.timeout.as_secs()}),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some((engine, path)) = &args.child {
        return child(engine, path, args.runs);
    }
    if let Some(path) = &args.markdown {
        return markdown(path);
    }
    let traces = if args.traces.is_empty() { sequential_traces()? } else { args.traces.clone() };
    if !args.json {
        println!("{:<22} {:<22} {:>9} {:>12} {:>14}  final", "trace", "engine", "ops", "ms", "ops/s");
    }
    let mut all_ok = true;
    for path in &traces {
        for engine in &args.engines {
            let r = measure(engine, path, &args)?;
            all_ok &= r["final_ok"].as_bool().unwrap_or(true);
            if args.json {
                println!("{r}");
            } else if r["timeout"] == true {
                println!(
                    "{:<22} {:<22} {:>9} {:>12} {:>14}  timeout",
                    r["trace"].as_str().unwrap_or(""),
                    engine,
                    r["ops"],
                    format!(">{}s", args.timeout.as_secs()),
                    "-"
                );
            } else {
                println!(
                    "{:<22} {:<22} {:>9} {:>12.3} {:>14}  {}",
                    r["trace"].as_str().unwrap_or(""),
                    engine,
                    r["ops"],
                    r["ms"].as_f64().unwrap_or(0.0),
                    r["ops_per_s"],
                    if r["final_ok"] == true { "ok" } else { "WRONG" }
                );
            }
        }
    }
    if !all_ok {
        bail!("an engine's final text did not match the trace's endContent");
    }
    Ok(())
}

/// Renders `--json` output as markdown tables: one per trace, and a summary of ratios.
fn markdown(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?;
    let mut traces: Vec<&str> = Vec::new();
    for r in &rows {
        let t = r["trace"].as_str().unwrap_or("");
        if !traces.contains(&t) {
            traces.push(t);
        }
    }
    let ms = |trace: &str, engine: &str| {
        rows.iter().find(|r| r["trace"] == trace && r["engine"] == engine).and_then(|r| r["ms"].as_f64())
    };
    println!("| trace | ops | engine | median ms | ops/s | time vs tandem | final text |");
    println!("|---|---:|---|---:|---:|---:|---|");
    for trace in &traces {
        let base = ms(trace, "tandem");
        for r in rows.iter().filter(|r| r["trace"] == *trace) {
            let engine = r["engine"].as_str().unwrap_or("");
            if r["timeout"] == true {
                println!("| {trace} | {} | {engine} | timeout (>{} s) | - | - | - |", r["ops"], r["timeout_s"]);
                continue;
            }
            let t = r["ms"].as_f64().unwrap_or(f64::NAN);
            let ratio = base.map_or("-".to_owned(), |b| format!("{:.2}x", t / b));
            let ok = if r["final_ok"] == true { "exact" } else { "WRONG" };
            println!(
                "| {trace} | {} | {engine} | {t:.2} | {:.0} | {ratio} | {ok} |",
                r["ops"],
                r["ops_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!();
    println!("Time relative to Tandem's `Document` replay in the same run (higher is slower than Tandem):");
    println!();
    let engines: Vec<&str> = ENGINES.iter().copied().filter(|e| *e != "tandem").collect();
    println!("| trace | {} |", engines.join(" | "));
    println!("|---|{}|", engines.iter().map(|_| "---:").collect::<Vec<_>>().join("|"));
    for trace in &traces {
        let cells: Vec<String> = engines
            .iter()
            .map(|e| match (ms(trace, e), ms(trace, "tandem")) {
                (Some(t), Some(b)) => format!("{:.2}x", t / b),
                _ => "timeout".to_owned(),
            })
            .collect();
        println!("| {trace} | {} |", cells.join(" | "));
    }
    Ok(())
}
