//! Max-throughput search: the scenario is run again and again, every editor's rate multiplied
//! by `factor` each step, until a step breaks the latency SLO (or errs, diverges, or falls
//! behind its offered load). The knee, the last step within the SLO, is the server's
//! throughput at that SLO. Each step is a whole run with its own report in
//! `OUT/step-<k>/`; `OUT/report.json` is the knee's (so `compare` and `plan` read it) and
//! `OUT/search.md` / `search.json` list every step.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::plots;
use crate::report::{Provenance, Report};
use crate::run::{RunOptions, run};
use crate::scenario::{Role, Scenario, Search};

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The rate multiplier.
    pub multiplier: f64,
    /// Edits offered per second (the scenario's rates times the multiplier).
    pub offered_per_s: f64,
    /// Edits sent, acked, ops delivered per second.
    pub sent_per_s: f64,
    /// Acked per second.
    pub acked_per_s: f64,
    /// Delivered per second.
    pub delivered_per_s: f64,
    /// The SLO's latency: ack p99 (propagation p99 without acks), ms.
    pub p99_ms: f64,
    /// Server cores busy.
    pub server_cores_used: f64,
    /// Converged.
    pub converged: bool,
    /// Errors.
    pub errors: u64,
    /// Within the SLO and keeping up.
    pub passed: bool,
    /// The step was run a second time (its first run broke the SLO); these are the second's.
    pub retried: bool,
    /// Generator cores busy.
    pub generator_cores_used: f64,
    /// The generator used over 90% of its CPU: the server may have had more to give.
    pub generator_saturated: bool,
}

/// The SLO latency of a report: ack p99, or propagation p99 when nothing was acked.
fn slo_p99(r: &Report) -> f64 {
    if r.ack_latency_ms.count > 0 { r.ack_latency_ms.p99 } else { r.propagation_latency_ms.p99 }
}

/// Runs the search and writes its reports under `out`; returns the knee's report.
pub fn search(base: &Scenario, x: &Search, opts: &RunOptions, target: &str, label: &str, out: &Path) -> Result<Report> {
    let mut steps: Vec<Step> = Vec::new();
    let mut knee: Option<(usize, Report, usize)> = None;
    for k in 0..x.max_steps {
        let mut sc = base.clone();
        let m = x.multiplier(k);
        for g in &mut sc.groups {
            if g.role == Role::Editor {
                g.edit_rate *= m;
            }
        }
        sc.validate().with_context(|| format!("step {k} (rates x{m:.2})"))?;
        // A step that breaks the SLO runs once more before the search stops: one bad second
        // on a shared machine is not the knee.
        let mut attempt = 0;
        let (report, passed) = loop {
            let (report, passed) = step(&sc, x, opts, target, label, &step_dir(out, k, attempt))?;
            if passed || attempt > 0 {
                break (report, passed);
            }
            eprintln!("step {k} broke the SLO; running it once more");
            attempt += 1;
        };
        let offered = offered(&sc);
        let p99 = slo_p99(&report);
        steps.push(Step {
            multiplier: m,
            offered_per_s: offered,
            sent_per_s: report.sent_per_s,
            acked_per_s: report.acked_per_s,
            delivered_per_s: report.delivered_per_s,
            p99_ms: p99,
            server_cores_used: report.server.cpu_util,
            converged: report.converged,
            errors: report.errors,
            passed,
            retried: attempt > 0,
            generator_cores_used: report.generator.cpu_util,
            generator_saturated: report.generator.saturated,
        });
        if !passed {
            break;
        }
        knee = Some((k, report, attempt));
    }
    let summary = markdown(base, x, label, target, &steps, knee.as_ref().map(|k| k.0));
    std::fs::write(out.join("search.md"), &summary)?;
    std::fs::write(out.join("search.json"), serde_json::to_string_pretty(&steps)?)?;
    print!("{summary}");
    let Some((k, report, attempt)) = knee else {
        bail!("even the first step broke the SLO (p99 <= {} ms); see {}", x.p99_ms, out.display());
    };
    // The knee's files at the top, for `compare`, `plan` and `report`.
    let knee_dir = step_dir(out, k, attempt);
    for f in std::fs::read_dir(knee_dir)? {
        let f = f?;
        std::fs::copy(f.path(), out.join(f.file_name()))?;
    }
    Ok(report)
}

/// Where step `k`'s run (its retry, after the first attempt) writes its report.
fn step_dir(out: &Path, k: usize, attempt: usize) -> std::path::PathBuf {
    out.join(format!("step-{k}{}", if attempt > 0 { "-retry" } else { "" }))
}

/// Edits per second a scenario's editors offer.
fn offered(sc: &Scenario) -> f64 {
    sc.groups.iter().filter(|g| g.role == Role::Editor).map(|g| g.edit_rate * (g.docs * g.users_per_doc) as f64).sum()
}

/// Runs one step and writes its report to `dir`: the report, and whether it passed.
fn step(sc: &Scenario, x: &Search, opts: &RunOptions, target: &str, label: &str, dir: &Path) -> Result<(Report, bool)> {
    let offered = offered(sc);
    eprintln!("{}: {offered:.0} edits/s offered", dir.display());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let result = run(sc, opts)?;
    let report = Report::new(sc, target, label, Provenance::here(command), &result);
    report.write(dir, &result.stats).with_context(|| format!("writing {}", dir.display()))?;
    plots::render(dir, &report)?;
    let p99 = slo_p99(&report);
    let done = report.acked + report.untraced;
    let passed = x.passed(report.converged, report.errors, p99, report.sent, done);
    eprintln!(
        "  acked {:.0}/s, delivered {:.0}/s, p99 {p99:.2} ms: {}",
        report.acked_per_s,
        report.delivered_per_s,
        if passed { "within the SLO" } else { "over" }
    );
    Ok((report, passed))
}

fn markdown(sc: &Scenario, x: &Search, label: &str, target: &str, steps: &[Step], knee: Option<usize>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Max-throughput search: {} against {label} ({target})\n", sc.name);
    let _ = writeln!(
        o,
        "SLO: p99 <= {} ms (ack; propagation on servers without acks), converged, no errors, at least 95% of \
         edits acked. Rates x{} per step, at most {} steps; each step a whole run (`step-<k>/`), run once more (`step-<k>-retry/`) if it breaks the SLO.\n",
        x.p99_ms, x.factor, x.max_steps
    );
    let _ = writeln!(
        o,
        "| step | rates | offered edits/s | acked/s | delivered/s | p99 ms | server cores | generator cores | converged | errors | within |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"
    );
    for (k, s) in steps.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {k} | x{:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            s.multiplier,
            s.offered_per_s,
            s.acked_per_s,
            s.delivered_per_s,
            s.p99_ms,
            s.server_cores_used,
            s.generator_cores_used,
            s.converged,
            s.errors,
            match (s.passed, s.retried) {
                (true, false) => "yes",
                (true, true) => "yes (on its retry)",
                (false, _) => "**no** (twice)",
            }
        );
    }
    match knee {
        Some(k) => {
            let s = &steps[k];
            let _ = writeln!(
                o,
                "\n**Knee: step {k}**: {:.0} edits acked/s and {:.0} ops delivered/s with p99 {:.2} ms.",
                s.acked_per_s, s.delivered_per_s, s.p99_ms
            );
            if k + 1 == steps.len() {
                let _ = writeln!(o, "\nThe search ran out of steps before the SLO broke: the knee is higher still.");
            }
            if let Some(first) = steps.iter().position(|s| s.generator_saturated)
                && first <= k + 1
            {
                let _ = writeln!(
                    o,
                    "\n**The generator was saturated from step {first}**: the SLO may have broken in the generator, \
                     not the server, so the knee is a lower bound for the server. Give the generator more cores."
                );
            }
        }
        None => {
            let _ = writeln!(o, "\nNo step stayed within the SLO.");
        }
    }
    o
}
