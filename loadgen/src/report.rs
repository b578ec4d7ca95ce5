//! Reports: `report.json` (schema in `docs/report-schema.md`), `report.md`, and one `.hgrm`
//! percentile distribution per latency.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::run::{Convergence, RunResult, Usage};
use crate::scenario::Scenario;
use crate::stats::Second;

/// The report's schema version.
pub const SCHEMA: u32 = 1;

/// Latency percentiles, milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
        }
    }
}

/// Where and when a run happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// The command line.
    pub command: String,
    /// `git describe --always --dirty` of the generator's source tree when the run started
    /// ("-dirty": with uncommitted changes), if known.
    pub commit: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// CPU model.
    pub cpu: String,
    /// CPUs online on the machine.
    pub cores: usize,
    /// CPUs the generator was allowed to run on (its affinity mask).
    #[serde(default)]
    pub generator_cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Physical memory.
    pub memory_bytes: u64,
}

impl Provenance {
    /// Reads the machine's facts.
    pub fn here(command: String) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let memory_kb: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=7"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            command,
            commit,
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            cpu,
            cores: cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1),
            generator_cpus: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_bytes: memory_kb * 1024,
        }
    }
}

/// The server's side of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    /// Its pid, when it was local and found.
    pub pid: Option<u32>,
    /// Its cores (from its `/metrics`), when it exported them; a cluster's all together.
    #[serde(default)]
    pub cores: Option<usize>,
    /// Cluster nodes the users were spread over (1: a single server). CPU, memory and
    /// counters are the nodes' sums.
    #[serde(default = "one")]
    pub nodes: usize,
    /// CPU seconds over the steady stage.
    pub cpu_s: f64,
    /// CPU use, in cores.
    pub cpu_util: f64,
    /// Of the CPU seconds, those in the server's own code (user time).
    pub user_s: f64,
    /// Resident memory before any user connected.
    pub rss_before_bytes: u64,
    /// Resident memory at the start of the steady stage.
    pub rss_start_bytes: u64,
    /// Resident memory the users added, per connected user (start of the steady stage
    /// against before the run).
    pub rss_per_connection_bytes: Option<f64>,
    /// Resident memory at its end.
    pub rss_end_bytes: u64,
    /// Op messages delivered per server CPU-second (the efficiency figure).
    pub delivered_per_cpu_s: Option<f64>,
    /// Op messages delivered per second of the server's own (user) CPU time.
    pub delivered_per_user_cpu_s: Option<f64>,
    /// Counter rates from the server's `/metrics`, per second.
    pub metrics_per_s: std::collections::BTreeMap<String, f64>,
}

fn one() -> usize {
    1
}

/// The generator's side of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GeneratorReport {
    /// Threads.
    pub threads: usize,
    /// Processes they ran in (worker processes past one process's file-descriptor limit).
    #[serde(default = "one")]
    pub processes: usize,
    /// CPU seconds over the steady stage.
    pub cpu_s: f64,
    /// CPU use, in cores.
    pub cpu_util: f64,
    /// Resident memory at the end of the steady stage.
    pub rss_bytes: u64,
    /// True when the generator used over 90% of its threads' CPU: then it, not the server,
    /// may be the limit, and the numbers understate the server.
    pub saturated: bool,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Schema version.
    pub schema: u32,
    /// The scenario as run.
    pub scenario: Scenario,
    /// The target URL.
    pub target: String,
    /// What the target is (`tandem`, `tokio-baseline`, ...).
    pub label: String,
    /// Where and when.
    pub provenance: Provenance,
    /// Users in the scenario.
    pub users: usize,
    /// Users connected at the end of the steady stage.
    pub live_users: usize,
    /// Steady-stage length, seconds.
    pub duration_s: f64,
    /// Every client's final view matched the server.
    pub converged: bool,
    /// The convergence check.
    pub convergence: Convergence,
    /// Edits made in the steady stage.
    pub sent: u64,
    /// Per second.
    pub sent_per_s: f64,
    /// Edits (made in the steady stage) acknowledged.
    pub acked: u64,
    /// Per second.
    pub acked_per_s: f64,
    /// Ops delivered to users in the steady stage.
    pub delivered: u64,
    /// Per second.
    pub delivered_per_s: f64,
    /// Cursor moves sent in the steady stage.
    pub presence_sent: u64,
    /// Presence updates received in the steady stage.
    pub presence_received: u64,
    /// Errors over the whole run.
    pub errors: u64,
    /// Connections lost over the whole run.
    pub disconnects: u64,
    /// Revisions out of order (must be 0).
    pub gaps: u64,
    /// Connections a cluster node sent on to the document's owner (`moved`), whole run.
    #[serde(default)]
    pub moves: u64,
    /// Edits (steady stage) whose ack the protocol cannot show (y-websocket deletes).
    #[serde(default)]
    pub untraced: u64,
    /// Edit to ack.
    pub ack_latency_ms: Percentiles,
    /// Edit to receipt by other users.
    pub propagation_latency_ms: Percentiles,
    /// Cursor move to receipt by other users.
    pub presence_latency_ms: Percentiles,
    /// Connect to welcome.
    pub connect_ms: Percentiles,
    /// Open to opened.
    pub join_ms: Percentiles,
    /// The server.
    pub server: ServerReport,
    /// The generator.
    pub generator: GeneratorReport,
    /// Per second of the run (ramp-up included; t is seconds from the start).
    pub series: Vec<SeriesPoint>,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds from the start.
    pub t: usize,
    /// Edits made.
    pub sent: u64,
    /// Edits acknowledged.
    pub acked: u64,
    /// Ops delivered.
    pub delivered: u64,
    /// Errors.
    pub errors: u64,
    /// Mean ack latency, ms.
    pub ack_mean_ms: f64,
    /// Largest ack latency, ms.
    pub ack_max_ms: f64,
}

impl From<(usize, &Second)> for SeriesPoint {
    fn from((t, s): (usize, &Second)) -> Self {
        Self {
            t,
            sent: s.sent,
            acked: s.acked,
            delivered: s.delivered,
            errors: s.errors,
            ack_mean_ms: if s.acked > 0 { s.ack_sum_us as f64 / s.acked as f64 / 1000.0 } else { 0.0 },
            ack_max_ms: s.ack_max_us as f64 / 1000.0,
        }
    }
}

impl Report {
    /// Builds the report of a run.
    pub fn new(scenario: &Scenario, target: &str, label: &str, provenance: Provenance, r: &RunResult) -> Self {
        let s = &r.stats;
        let generator_cpus = provenance.generator_cpus;
        let per_s = |n: u64| n as f64 / r.steady_s;
        let usage = |u: &Usage| (u.cpu_s, u.cpu_util);
        let (server_cpu, server_util) = usage(&r.server);
        let converged = r.convergence.mismatch_count == 0 && s.gaps == 0;
        Self {
            schema: SCHEMA,
            scenario: scenario.redacted(),
            target: target.to_owned(),
            label: label.to_owned(),
            provenance,
            users: scenario.users(),
            live_users: r.live_users,
            duration_s: r.steady_s,
            converged,
            convergence: r.convergence.clone(),
            sent: s.sent,
            sent_per_s: per_s(s.sent),
            acked: s.acked,
            acked_per_s: per_s(s.acked),
            delivered: s.delivered,
            delivered_per_s: per_s(s.delivered),
            presence_sent: s.presence_sent,
            presence_received: s.presence_received,
            errors: s.errors,
            disconnects: s.disconnects,
            gaps: s.gaps,
            moves: s.moves,
            untraced: s.untraced,
            ack_latency_ms: Percentiles::of(&s.ack),
            propagation_latency_ms: Percentiles::of(&s.propagation),
            presence_latency_ms: Percentiles::of(&s.presence),
            connect_ms: Percentiles::of(&s.connect),
            join_ms: Percentiles::of(&s.join),
            server: ServerReport {
                pid: r.server.pid,
                cores: r.server_cores,
                nodes: r.server_nodes,
                cpu_s: server_cpu,
                cpu_util: server_util,
                user_s: r.server.user_s,
                rss_before_bytes: r.server.rss_before_bytes,
                rss_start_bytes: r.server.rss_start_bytes,
                rss_per_connection_bytes: (r.server.rss_before_bytes > 0 && r.live_users > 0).then(|| {
                    (r.server.rss_start_bytes as f64 - r.server.rss_before_bytes as f64) / r.live_users as f64
                }),
                rss_end_bytes: r.server.rss_end_bytes,
                // Rates over rates: the counts cover the steady stage, usage its sampling.
                delivered_per_cpu_s: (server_cpu > 0.0).then(|| per_s(s.delivered) / (server_cpu / r.sampled_s)),
                delivered_per_user_cpu_s: (r.server.user_s > 0.0)
                    .then(|| per_s(s.delivered) / (r.server.user_s / r.sampled_s)),
                metrics_per_s: r.server_rates.iter().cloned().collect(),
            },
            generator: GeneratorReport {
                threads: r.threads,
                processes: r.processes,
                cpu_s: r.generator.cpu_s,
                cpu_util: r.generator.cpu_util,
                rss_bytes: r.generator.rss_end_bytes,
                // Of the CPUs it could use: its threads, or the machine's when it has more.
                saturated: r.generator.cpu_util > 0.9 * r.threads.min(generator_cpus) as f64,
            },
            series: s.series.iter().enumerate().map(SeriesPoint::from).collect(),
        }
    }

    /// Writes `report.json`, `report.md` and the `.hgrm` files into `dir`.
    pub fn write(&self, dir: &Path, stats: &crate::stats::Stats) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        for (name, h) in [
            ("ack_latency", &stats.ack),
            ("propagation_latency", &stats.propagation),
            ("presence_latency", &stats.presence),
            ("connect", &stats.connect),
            ("join", &stats.join),
        ] {
            if !h.is_empty() {
                std::fs::write(dir.join(format!("{name}.hgrm")), hgrm(h))?;
            }
        }
        Ok(())
    }

    /// The human-readable report.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let p = &self.provenance;
        let _ = writeln!(o, "# {} against {} ({})\n", self.scenario.name, self.label, self.target);
        if !self.scenario.description.is_empty() {
            let _ = writeln!(o, "{}\n", self.scenario.description);
        }
        let _ = writeln!(o, "- **Command**: `{}`", p.command);
        let _ = writeln!(o, "- **Commit**: `{}`", p.commit);
        let _ = writeln!(o, "- **Date**: {}", p.started_at);
        let _ = writeln!(
            o,
            "- **Machine**: {} ({} cores; the generator ran on {}), Linux {}, {:.1} GiB",
            p.cpu,
            p.cores,
            p.generator_cpus,
            p.kernel,
            p.memory_bytes as f64 / (1u64 << 30) as f64
        );
        let _ = writeln!(
            o,
            "- **Users**: {} ({} connected at the end of the steady stage); steady stage {:.1} s",
            self.users, self.live_users, self.duration_s
        );
        let verdict = if self.converged { "yes" } else { "**NO**" };
        let c = &self.convergence;
        let _ = writeln!(
            o,
            "- **Converged**: {verdict} ({} documents, {} client views checked against the server, {} of them full copies; {} revision gaps)",
            c.documents, c.views_checked, c.full_copies, self.gaps
        );
        if c.replayed_texts > 0 {
            let _ = writeln!(
                o,
                "- **Trace replay**: {} transactions replayed; {} documents' text checked against the traces",
                c.replayed_txns, c.replayed_texts
            );
        }
        let _ = writeln!(o);
        for m in &c.mismatches {
            let _ = writeln!(o, "  - {m}");
        }
        let _ = writeln!(o, "| rate | per second | total |\n|---|---:|---:|");
        let _ = writeln!(o, "| edits sent | {:.0} | {} |", self.sent_per_s, self.sent);
        let _ = writeln!(o, "| edits acked | {:.0} | {} |", self.acked_per_s, self.acked);
        let _ = writeln!(o, "| ops delivered | {:.0} | {} |", self.delivered_per_s, self.delivered);
        let _ = writeln!(o, "| errors (whole run) | | {} |", self.errors);
        if self.server.nodes > 1 || self.moves > 0 {
            let _ = writeln!(o, "| connections sent on to another node (whole run) | | {} |", self.moves);
            let _ = writeln!(o, "| connections lost (whole run) | | {} |", self.disconnects);
        }
        let _ = writeln!(
            o,
            "\n| latency (ms) | count | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (name, l) in [
            ("ack", &self.ack_latency_ms),
            ("propagation", &self.propagation_latency_ms),
            ("presence", &self.presence_latency_ms),
            ("connect", &self.connect_ms),
            ("join", &self.join_ms),
        ] {
            let _ = writeln!(
                o,
                "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        let s = &self.server;
        let _ = writeln!(
            o,
            "\n| process | CPU s | of which user | cores used | RSS start | RSS end |\n|---|---:|---:|---:|---:|---:|"
        );
        let _ = writeln!(
            o,
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} MiB | {:.1} MiB |",
            if s.nodes > 1 {
                format!("server ({} nodes, summed)", s.nodes)
            } else {
                format!("server (pid {})", s.pid.map_or("?".to_owned(), |p| p.to_string()))
            },
            s.cpu_s,
            s.user_s,
            s.cpu_util,
            s.rss_start_bytes as f64 / 1048576.0,
            s.rss_end_bytes as f64 / 1048576.0
        );
        let g = &self.generator;
        let _ = writeln!(
            o,
            "| generator ({} threads{}) | {:.2} | | {:.2} | | {:.1} MiB |",
            g.threads,
            if g.processes > 1 { format!(" in {} processes", g.processes) } else { String::new() },
            g.cpu_s,
            g.cpu_util,
            g.rss_bytes as f64 / 1048576.0
        );
        if let Some(per) = s.rss_per_connection_bytes {
            let _ = writeln!(
                o,
                "\nServer memory: {:.1} MiB before the users, {:.1} MiB with them: **{per:.0} bytes per connection**.",
                s.rss_before_bytes as f64 / 1048576.0,
                s.rss_start_bytes as f64 / 1048576.0
            );
        }
        if let (Some(eff), Some(user)) = (s.delivered_per_cpu_s, s.delivered_per_user_cpu_s) {
            let _ = writeln!(
                o,
                "\nOps delivered per server CPU-second: **{eff:.0}** ({user:.0} per second of the server's own user-space CPU)."
            );
        }
        if g.saturated {
            let _ =
                writeln!(o, "\n**Warning**: the generator was saturated; the server may have been able to do more.");
        }
        o
    }
}

/// Reads `report.json` from a result directory.
pub fn load(dir: &Path) -> Result<Report> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r: Report = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if r.schema > SCHEMA {
        anyhow::bail!("{} has report schema {}; this build reads up to {SCHEMA}", path.display(), r.schema);
    }
    Ok(r)
}

/// A side-by-side table of two reports, with B/A ratios.
pub fn compare(a: &Report, b: &Report, name_a: &str, name_b: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {name_a} vs {name_b}\n");
    let _ = writeln!(
        o,
        "- A: {} against {} ({}), commit `{}`, {}\n- B: {} against {} ({}), commit `{}`, {}\n",
        a.scenario.name,
        a.label,
        a.target,
        a.provenance.commit,
        a.provenance.started_at,
        b.scenario.name,
        b.label,
        b.target,
        b.provenance.commit,
        b.provenance.started_at
    );
    if a.scenario.name != b.scenario.name {
        let _ = writeln!(o, "**Warning**: different scenarios; the ratios compare unlike runs.\n");
    }
    if a.provenance.cpu != b.provenance.cpu || a.provenance.cores != b.provenance.cores {
        let _ = writeln!(o, "**Warning**: different machines ({} / {}).\n", a.provenance.cpu, b.provenance.cpu);
    }
    let _ = writeln!(o, "| measure | A | B | B / A |\n|---|---:|---:|---:|");
    let _ = writeln!(o, "| converged | {} | {} | |", a.converged, b.converged);
    let mut row = |name: &str, x: f64, y: f64| {
        let ratio = if x != 0.0 { format!("{:.2}x", y / x) } else { "-".to_owned() };
        let _ = writeln!(o, "| {name} | {} | {} | {ratio} |", num(x), num(y));
    };
    row("users connected", a.live_users as f64, b.live_users as f64);
    row("edits sent/s", a.sent_per_s, b.sent_per_s);
    row("edits acked/s", a.acked_per_s, b.acked_per_s);
    row("ops delivered/s", a.delivered_per_s, b.delivered_per_s);
    row("errors", a.errors as f64, b.errors as f64);
    for (what, x, y) in [
        ("ack", &a.ack_latency_ms, &b.ack_latency_ms),
        ("propagation", &a.propagation_latency_ms, &b.propagation_latency_ms),
        ("presence", &a.presence_latency_ms, &b.presence_latency_ms),
        ("connect", &a.connect_ms, &b.connect_ms),
        ("join", &a.join_ms, &b.join_ms),
    ] {
        if x.count == 0 && y.count == 0 {
            continue;
        }
        row(&format!("{what} p50 ms"), x.p50, y.p50);
        row(&format!("{what} p99 ms"), x.p99, y.p99);
        row(&format!("{what} p99.9 ms"), x.p999, y.p999);
        row(&format!("{what} max ms"), x.max, y.max);
    }
    row("server CPU s", a.server.cpu_s, b.server.cpu_s);
    row("server cores used", a.server.cpu_util, b.server.cpu_util);
    row(
        "delivered per server CPU-s",
        a.server.delivered_per_cpu_s.unwrap_or(0.0),
        b.server.delivered_per_cpu_s.unwrap_or(0.0),
    );
    row("server RSS end MiB", a.server.rss_end_bytes as f64 / 1048576.0, b.server.rss_end_bytes as f64 / 1048576.0);
    row(
        "server bytes per connection",
        a.server.rss_per_connection_bytes.unwrap_or(0.0),
        b.server.rss_per_connection_bytes.unwrap_or(0.0),
    );
    row("generator cores used", a.generator.cpu_util, b.generator.cpu_util);
    if a.generator.saturated || b.generator.saturated {
        let _ = writeln!(o, "\n**Warning**: a generator was saturated; its side may understate the server.");
    }
    o
}

fn num(x: f64) -> String {
    if x == 0.0 || x.abs() >= 100.0 { format!("{x:.0}") } else { format!("{x:.3}") }
}

/// A histogram as HdrHistogram's percentile distribution text (values in ms).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut o = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { format!("{:>14}", "inf") };
        let _ = writeln!(
            o,
            "{:>12.3} {:>14.12} {:>10} {inv}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration()
        );
    }
    let _ = writeln!(o, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
    let _ = writeln!(o, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64 / 1000.0, h.len());
    // The sub-bucket count HdrHistogram uses for this precision: 2^ceil(log2(2 * 10^digits)).
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(o, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), sub_buckets);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_standard_shape() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        // 10,000 µs at three significant digits reads back as 10.007 ms.
        assert!(text.contains("#[Max     =       10.007"), "{text}");
        assert!(text.contains("SubBuckets     =         2048"), "{text}");
        assert!(text.contains("Total count    =         1000"));
        let p = Percentiles::of(&h);
        assert!((4.99..=5.01).contains(&p.p50), "{p:?}");
        assert_eq!(p.count, 1000);
    }
}
