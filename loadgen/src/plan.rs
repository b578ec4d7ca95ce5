//! Capacity planning from measurements (`tandem-loadgen plan`): per-core figures read off
//! result directories, scaled linearly (with headroom) to a stated target, priced with a table
//! of machine shapes.
//!
//! The arithmetic is sans I/O ([`Figures::from_reports`], [`plan`]); the command reads the
//! reports and prints [`Plan::markdown`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::report::Report;

/// Hours in a month, for monthly cost (365.25 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.5;

/// The reference design's own estimate, printed beside ours.
pub const REFERENCE: Reference =
    Reference { websocket_servers: 200, connections_per_server: 50_000, app_servers: 65, usd_per_month: 170_651.0 };

/// A published estimate to compare with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reference {
    /// WebSocket servers.
    pub websocket_servers: u32,
    /// Connections each holds.
    pub connections_per_server: u32,
    /// Application (OT) servers.
    pub app_servers: u32,
    /// Total monthly cost, USD.
    pub usd_per_month: f64,
}

/// A machine shape with its price.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Its name (e.g. `c5.2xlarge`).
    pub name: String,
    /// vCPUs (one Tandem core each).
    pub vcpu: u32,
    /// Memory, GiB.
    pub ram_gib: f64,
    /// Network bandwidth, Gbit/s.
    pub nic_gbps: f64,
    /// On-demand price, USD per hour.
    pub usd_per_hour: f64,
    /// Local (instance) storage, GB, for the stores' shapes that have it.
    #[serde(default)]
    pub disk_gb: Option<f64>,
    /// A shape for the stores around Tandem (op log, metadata, Kafka), not for its nodes.
    #[serde(default)]
    pub for_stores: bool,
}

/// The price table (a TOML file of `[[machine]]` entries).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Where the prices come from.
    #[serde(default)]
    pub source: String,
    /// The shapes.
    pub machine: Vec<Machine>,
}

/// The default price table: the reference design's prices (AWS us-east-1 on-demand, Linux).
pub const DEFAULT_PRICES: &str = include_str!("../prices.toml");

impl Prices {
    /// Parses and checks a price table.
    pub fn parse(text: &str) -> Result<Self> {
        let p: Self = toml::from_str(text).context("parsing the price table")?;
        if p.machine.is_empty() {
            bail!("the price table names no machine");
        }
        for m in &p.machine {
            if m.vcpu == 0 || m.ram_gib <= 0.0 || m.nic_gbps <= 0.0 || m.usd_per_hour <= 0.0 {
                bail!("machine {}: vcpu, ram_gib, nic_gbps and usd_per_hour must be positive", m.name);
            }
        }
        Ok(p)
    }

    /// The shape called `name`.
    pub fn get(&self, name: &str) -> Result<&Machine> {
        self.machine.iter().find(|m| m.name == name).with_context(|| {
            let names: Vec<&str> = self.machine.iter().map(|m| m.name.as_str()).collect();
            format!("no machine {name:?} in the price table ({})", names.join(", "))
        })
    }
}

/// What to plan for.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Concurrent connections.
    pub connections: f64,
    /// WebSocket messages per second (in and out).
    pub messages_per_s: f64,
    /// Edits (durable ops) per second.
    pub edits_per_s: f64,
    /// Documents stored.
    pub documents: f64,
    /// Of the connections, the share in an open, active document (the rest idle).
    pub active_share: f64,
    /// Average bytes on the wire per message (frame header included).
    pub message_bytes: f64,
    /// Average stored bytes per document (snapshot plus retained history).
    pub document_bytes: f64,
    /// Use at most this share of any resource (cores, memory, network).
    pub headroom: f64,
    /// The ack latency SLO the per-core figures must have been measured under, ms (p99).
    pub slo_p99_ms: f64,
    /// Document opens per second (the analytics worker counts each).
    pub opens_per_s: f64,
    /// Notification emails per second (shares; each one email).
    pub emails_per_s: f64,
    /// Edits per change-feed event (the feed publishes one event per document per round, so
    /// typing at a few ops a second gives one op per event; bursts and catch-ups give more).
    pub ops_per_event: f64,
}

/// The workers' measured costs per core (the JSON `workers_bench` writes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerCosts {
    /// Change-feed events the search worker indexes per core-second (its cost is mostly per
    /// event: a lookup, a document update, JSON; more ops per event cost little more).
    pub search_events_per_core_s: f64,
    /// Change-feed events the analytics worker counts per core-second.
    pub analytics_events_per_core_s: f64,
    /// Opens the analytics worker counts per core-second.
    pub opens_per_core_s: f64,
    /// Emails the notification worker builds and hands over per core-second.
    pub emails_per_core_s: f64,
    /// The file they came from.
    pub from: String,
}

impl WorkerCosts {
    /// Reads `workers_bench`'s JSON (`from` names it in the plan).
    pub fn parse(text: &str, from: &str) -> Result<Self> {
        let doc: serde_json::Value = serde_json::from_str(text).with_context(|| format!("{from}: not JSON"))?;
        let get = |worker: &str, field: &str| -> Result<f64> {
            doc.pointer(&format!("/workers/{worker}/{field}"))
                .and_then(serde_json::Value::as_f64)
                .filter(|v| v.is_finite() && *v > 0.0)
                .with_context(|| format!("{from}: no positive workers.{worker}.{field} (written by workers_bench?)"))
        };
        Ok(Self {
            search_events_per_core_s: get("search", "events_per_core_s")?,
            analytics_events_per_core_s: get("analytics-edits", "events_per_core_s")?,
            opens_per_core_s: get("analytics-usage", "events_per_core_s")?,
            emails_per_core_s: get("notifications", "events_per_core_s")?,
            from: from.to_owned(),
        })
    }
}

/// One run the CPU model was fitted on.
#[derive(Clone, Debug, PartialEq)]
pub struct FitRun {
    /// The run.
    pub name: String,
    /// WebSocket messages per second.
    pub messages_per_s: f64,
    /// Acked edits per second.
    pub edits_per_s: f64,
    /// Op-log commits (group-commit batches, one `fdatasync` each) per second, for servers
    /// that count them.
    pub commits_per_s: Option<f64>,
    /// Server cores busy (CPU-seconds per second).
    pub cores_used: f64,
    /// The server's core count, when the report has it (a cluster's: all its nodes').
    pub server_cores: Option<usize>,
    /// Cluster nodes the run spread its users over (1: a single server).
    pub nodes: usize,
}

/// Per-core figures, and the runs they came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Server CPU-seconds per WebSocket message (the model's `a`).
    pub cpu_s_per_message: f64,
    /// Server CPU-seconds per acked edit on top of its messages: transform, apply and the
    /// durable append (the model's `b`; 0 when the runs cannot tell it apart).
    pub cpu_s_per_edit: f64,
    /// Whether `b` was fitted (runs with different edit/message mixes) or set to 0.
    pub edit_cost_fitted: bool,
    /// Server CPU-seconds per op-log commit: the `fdatasync`, the storage thread's wake-ups
    /// and the disk queue's kernel path (the model's `c`; 0 when the runs cannot tell it
    /// apart).
    pub cpu_s_per_commit: f64,
    /// Whether `c` was fitted (every run counted its commits, at different batch sizes).
    pub commit_cost_fitted: bool,
    /// The most commits per second one server core made in a run (group commit bounds it:
    /// one `fdatasync` in flight per core), and the run.
    pub commits_per_core_s: f64,
    /// The run it came from.
    pub commits_from: String,
    /// The largest measured / predicted cores among the runs (at least 1): the model's worst
    /// underestimate, which the plan applies so that no measured mix is undersized.
    pub worst_fit: f64,
    /// The runs the model was fitted on (converged, within the SLO).
    pub fit: Vec<FitRun>,
    /// Server memory per idle connection, bytes.
    pub idle_bytes: f64,
    /// The run it came from.
    pub idle_from: String,
    /// Server memory per connection in an active document, bytes.
    pub active_bytes: f64,
    /// The run it came from.
    pub active_from: String,
    /// Runs read (of the label), runs at the SLO.
    pub runs: (usize, usize),
    /// The workers' costs, when measured (`--workers`).
    pub workers: Option<WorkerCosts>,
}

impl Figures {
    /// WebSocket messages one core handles per second (edits aside).
    pub fn messages_per_core_s(&self) -> f64 {
        1.0 / self.cpu_s_per_message
    }

    /// The model's prediction of busy cores.
    pub fn predict(&self, messages_per_s: f64, edits_per_s: f64, commits_per_s: f64) -> f64 {
        self.cpu_s_per_message * messages_per_s
            + self.cpu_s_per_edit * edits_per_s
            + self.cpu_s_per_commit * commits_per_s
    }

    /// The model's prediction of a run's busy cores.
    pub fn predict_run(&self, r: &FitRun) -> f64 {
        self.predict(r.messages_per_s, r.edits_per_s, r.commits_per_s.unwrap_or(0.0))
    }
}

/// The CPU model's coefficients.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Coefficients {
    /// Per message.
    pub a: f64,
    /// Per edit (0 unless fitted).
    pub b: f64,
    /// Per op-log commit (0 unless fitted).
    pub c: f64,
    /// Whether `b` was fitted.
    pub edits: bool,
    /// Whether `c` was fitted.
    pub commits: bool,
}

/// Least squares through the origin of `y = X w` for up to three columns: the normal
/// equations (symmetric, positive semi-definite) by elimination without pivoting. `None` when
/// a column is all but a combination of the ones before it (what is left of it after them
/// is under 1e-9 of its own size): the runs cannot tell that term apart.
fn least_squares(rows: &[([f64; 3], f64)], k: usize) -> Option<[f64; 3]> {
    let mut m = [[0.0f64; 4]; 3];
    for (x, y) in rows {
        for i in 0..k {
            for j in 0..k {
                m[i][j] += x[i] * x[j];
            }
            m[i][3] += x[i] * y;
        }
    }
    let size: [f64; 3] = [m[0][0], m[1][1], m[2][2]];
    for col in 0..k {
        if m[col][col].is_nan() || m[col][col] <= 1e-9 * size[col] {
            return None;
        }
        let pivot = m[col];
        for (r, row) in m.iter_mut().enumerate().take(k) {
            if r != col {
                let f = row[col] / pivot[col];
                for (v, p) in row.iter_mut().zip(pivot).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut w = [0.0; 3];
    for i in 0..k {
        w[i] = m[i][3] / m[i][i];
    }
    Some(w)
}

/// Least squares fit of `cores = a * messages + b * edits + c * commits` through the origin.
/// Terms the runs cannot determine (one mix only, collinear) or that fit negative are left
/// out, richest model first: all three, then messages and commits, messages and edits,
/// messages alone. Commits take part only when every run counted them.
pub fn fit(runs: &[FitRun]) -> Option<Coefficients> {
    if runs.iter().all(|r| r.messages_per_s == 0.0) {
        return None;
    }
    let with_commits = runs.iter().all(|r| r.commits_per_s.is_some());
    // Which terms, in order: (edits, commits).
    let models: &[(bool, bool)] = &[(true, true), (false, true), (true, false), (false, false)];
    for &(edits, commits) in models {
        if commits && !with_commits {
            continue;
        }
        let rows: Vec<([f64; 3], f64)> = runs
            .iter()
            .map(|r| {
                let mut x = [r.messages_per_s, 0.0, 0.0];
                let mut k = 1;
                if edits {
                    x[k] = r.edits_per_s;
                    k += 1;
                }
                if commits {
                    x[k] = r.commits_per_s.unwrap_or(0.0);
                }
                (x, r.cores_used)
            })
            .collect();
        let k = 1 + usize::from(edits) + usize::from(commits);
        if runs.len() < k {
            continue;
        }
        let Some(w) = least_squares(&rows, k) else { continue };
        if w[0] <= 0.0 || w[1..k].iter().any(|&v| v < 0.0) {
            continue;
        }
        let b = if edits { w[1] } else { 0.0 };
        let c = if commits { w[k - 1] } else { 0.0 };
        return Some(Coefficients { a: w[0], b, c, edits, commits });
    }
    None
}

/// A run's WebSocket messages per second: the server's own counters when it exported them,
/// else what the clients counted.
pub fn messages_per_s(r: &Report) -> f64 {
    let m = &r.server.metrics_per_s;
    match (m.get("tandem_messages_in_total"), m.get("tandem_frames_out_total")) {
        (Some(i), Some(o)) => i + o,
        _ => {
            let presence = (r.presence_sent + r.presence_received) as f64 / r.duration_s.max(1e-9);
            r.sent_per_s + r.acked_per_s + r.delivered_per_s + presence
        }
    }
}

impl Figures {
    /// Fits the CPU model on the converged runs of `label` (a prefix of the report's label)
    /// that met the SLO, and takes the largest memory per connection seen.
    pub fn from_reports(reports: &[(String, Report)], label: &str, slo_p99_ms: f64) -> Result<Self> {
        let mine: Vec<&(String, Report)> = reports.iter().filter(|(_, r)| r.label.starts_with(label)).collect();
        let mut f = Self { runs: (mine.len(), 0), ..Self::default() };
        for (name, r) in mine {
            let s = &r.server;
            if r.converged && s.cpu_util > 0.05 && r.sent > 0 && r.ack_latency_ms.p99 <= slo_p99_ms {
                let m = &s.metrics_per_s;
                let commits_per_s = m.get("tandem_oplog_batches_total").copied();
                if let (Some(c), Some(cores)) = (commits_per_s, s.cores)
                    && c / cores as f64 > f.commits_per_core_s
                {
                    (f.commits_per_core_s, f.commits_from) = (c / cores as f64, name.clone());
                }
                f.fit.push(FitRun {
                    name: name.clone(),
                    messages_per_s: messages_per_s(r),
                    edits_per_s: r.acked_per_s,
                    commits_per_s,
                    cores_used: s.cpu_util,
                    server_cores: s.cores,
                    nodes: s.nodes,
                });
            }
            let within_slo = r.converged && r.ack_latency_ms.p99 <= slo_p99_ms;
            if within_slo && r.live_users >= 1000 && s.rss_end_bytes > s.rss_before_bytes && s.rss_before_bytes > 0 {
                let per = (s.rss_end_bytes - s.rss_before_bytes) as f64 / r.live_users as f64;
                if r.sent == 0 && per > f.idle_bytes {
                    (f.idle_bytes, f.idle_from) = (per, name.clone());
                }
                if r.sent > 0 && per > f.active_bytes {
                    (f.active_bytes, f.active_from) = (per, name.clone());
                }
            }
        }
        f.runs.1 = f.fit.len();
        let Some(k) = fit(&f.fit) else {
            bail!(
                "none of the {} {label:?} runs converged with ack p99 <= {slo_p99_ms} ms and a measured server CPU: nothing to plan from",
                f.runs.0
            );
        };
        (f.cpu_s_per_message, f.cpu_s_per_edit, f.edit_cost_fitted) = (k.a, k.b, k.edits);
        (f.cpu_s_per_commit, f.commit_cost_fitted) = (k.c, k.commits);
        f.worst_fit = f.fit.iter().map(|r| r.cores_used / f.predict_run(r)).fold(1.0_f64, f64::max);
        if f.idle_bytes == 0.0 {
            bail!("no {label:?} run measured memory per idle connection (run loadgen/scenarios/idle.toml)");
        }
        if f.active_bytes == 0.0 {
            f.active_bytes = f.idle_bytes;
            f.active_from = format!("{} (no active run measured memory: the idle figure)", f.idle_from);
        }
        Ok(f)
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The target.
    pub target: Target,
    /// The figures used.
    pub figures: Figures,
    /// Cores for the messages.
    pub cores_for_messages: f64,
    /// Cores for the edits' own work (beyond their messages).
    pub cores_for_edits: f64,
    /// Cores for op-log commits: each core commits up to `commits_per_core_s` times a second.
    pub cores_for_commits: f64,
    /// Cores for the workers, by worker (empty when their costs were not given).
    pub cores_for_workers: Vec<(&'static str, f64)>,
    /// Cores (everything, with headroom).
    pub cores: f64,
    /// Server memory, bytes (with headroom).
    pub memory_bytes: f64,
    /// Network, Gbit/s (with headroom).
    pub network_gbps: f64,
    /// Stored bytes for the documents.
    pub storage_bytes: f64,
    /// Per machine shape: (shape, machines, what bounds it, USD per month).
    pub shapes: Vec<(Machine, u64, &'static str, f64)>,
    /// The system around the nodes (op-log store, metadata, Kafka, S3, load balancer) and
    /// the figures it was sized with, when sized.
    pub system: Option<(crate::system::SystemPlan, crate::system::System)>,
}

/// Computes the plan.
pub fn plan(target: &Target, figures: &Figures, prices: &Prices) -> Plan {
    let h = target.headroom;
    let w = figures.worst_fit.max(1.0);
    let cores_for_messages = figures.predict(target.messages_per_s, 0.0, 0.0) * w / h;
    let cores_for_edits = figures.predict(0.0, target.edits_per_s, 0.0) * w / h;
    // Commits: a core that makes edits commits as often as its disk lets it, up to one per
    // edit, and loses `c` of its time per commit.
    let base = cores_for_messages + cores_for_edits;
    let per_core = figures.commits_per_core_s.min(if base > 0.0 { target.edits_per_s / base } else { 0.0 });
    let lost = (figures.cpu_s_per_commit * per_core * w).min(0.9);
    let cores_for_commits = base * lost / (1.0 - lost);
    // Workers: measured rates per core, at the same headroom (they run in `tandem serve` or as
    // `tandem worker` processes on the same machines).
    let events_per_s = target.edits_per_s / target.ops_per_event.max(1.0);
    let cores_for_workers: Vec<(&'static str, f64)> = figures.workers.as_ref().map_or_else(Vec::new, |k| {
        vec![
            ("search (edits indexed)", events_per_s / k.search_events_per_core_s / h),
            ("analytics (edits counted)", events_per_s / k.analytics_events_per_core_s / h),
            ("analytics (opens counted)", target.opens_per_s / k.opens_per_core_s / h),
            ("notifications (emails)", target.emails_per_s / k.emails_per_core_s / h),
        ]
    });
    let cores = base + cores_for_commits + cores_for_workers.iter().map(|(_, c)| c).sum::<f64>();
    let per_conn = target.active_share * figures.active_bytes + (1.0 - target.active_share) * figures.idle_bytes;
    let memory_bytes = target.connections * per_conn / h;
    let network_gbps = target.messages_per_s * target.message_bytes * 8.0 / 1e9 / h;
    let mut shapes = Vec::new();
    for m in prices.machine.iter().filter(|m| !m.for_stores) {
        let by_cpu = (cores / f64::from(m.vcpu)).ceil();
        let by_mem = (memory_bytes / (m.ram_gib * (1u64 << 30) as f64)).ceil();
        let by_net = (network_gbps / m.nic_gbps).ceil();
        let (n, bound) = [(by_cpu, "cores"), (by_mem, "memory"), (by_net, "network")]
            .into_iter()
            .fold((0.0, "cores"), |acc, x| if x.0 > acc.0 { x } else { acc });
        let n = n.max(1.0) as u64;
        shapes.push((m.clone(), n, bound, n as f64 * m.usd_per_hour * HOURS_PER_MONTH));
    }
    Plan {
        target: target.clone(),
        figures: figures.clone(),
        cores_for_messages,
        cores_for_edits,
        cores_for_commits,
        cores_for_workers,
        cores,
        memory_bytes,
        network_gbps,
        storage_bytes: target.documents * target.document_bytes,
        shapes,
        system: None,
    }
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}K", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Parses a count with an optional K/M/G suffix (`10M`, `1.5K`, `16000000`).
pub fn parse_count(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 =
        num.replace('_', "").parse().map_err(|_| format!("{s:?}: expected a number like 10M, 1.5K or 16000000"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: must be a non-negative number"));
    }
    Ok(v * mul)
}

impl Plan {
    /// The plan as a report.
    pub fn markdown(&self, command: &str, sources: &[PathBuf]) -> String {
        let (t, f) = (&self.target, &self.figures);
        let mut o = String::new();
        let _ = writeln!(o, "# Capacity plan\n");
        let _ = writeln!(o, "- **Command**: `{command}`");
        let _ = writeln!(
            o,
            "- **Target**: {} concurrent connections, {} WebSocket messages/s, {} edits/s ({} per change-feed \
             event), {} documents, {} opens/s, {} emails/s",
            si(t.connections),
            si(t.messages_per_s),
            si(t.edits_per_s),
            t.ops_per_event,
            si(t.documents),
            si(t.opens_per_s),
            si(t.emails_per_s)
        );
        let _ = writeln!(
            o,
            "- **Inputs**: {} runs read from {}; {} converged within the SLO (ack p99 <= {} ms)\n",
            f.runs.0,
            sources.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", "),
            f.runs.1,
            t.slo_p99_ms
        );
        let _ = writeln!(o, "## Method and assumptions\n");
        let _ = writeln!(
            o,
            "- CPU is modelled from measurements, not assumed: busy server cores = a x messages/s + b x edits/s \
             + c x commits/s, fitted (least squares) over every run of the label that converged with ack p99 \
             within the SLO; `a` is the cost of a WebSocket message in or out, `b` the extra cost of an edit \
             (transform, apply, append), `c` the cost of an op-log commit (a group-commit batch: one \
             `fdatasync`, the storage thread's wake-ups and the disk queue's kernel path). Many documents with \
             a few edits each make small batches, so commits, not edits, are what such loads pay for. At the \
             target, each core commits as often as the busiest core of the runs did (group commit keeps one \
             `fdatasync` in flight per core), or once per edit if it has fewer, and loses `c` per commit. \
             The model's worst underestimate of a run ({:.2}x) is applied to the cores, so \
             no measured mix is undersized. Memory per connection is the largest seen in a run within the SLO \
             (overloaded runs fill queues).\n\
             - Linear scaling per core: documents are sharded onto cores and a core shares nothing on the hot \
             path, so N cores do N times one core's work (checked below with what the runs have).\n\
             - Headroom: every resource is planned at {:.0}% use, for bursts, failover and rebalancing.\n\
             - One Tandem core per vCPU. {:.0}% of connections are in active documents, the rest idle. \
             A message averages {} bytes on the wire; a stored document {} bytes (snapshot plus retained history).\n\
             - The target's messages include its edits' own messages (submit, ack, deliveries).",
            f.worst_fit,
            t.headroom * 100.0,
            t.active_share * 100.0,
            t.message_bytes,
            t.document_bytes
        );
        let _ = writeln!(o, "\n## Per-core figures\n\n| figure | value | from |\n|---|---:|---|");
        let _ = writeln!(
            o,
            "| a: server CPU per WebSocket message | {:.2} µs ({:.0} messages per core-second) | fit over {} runs |",
            f.cpu_s_per_message * 1e6,
            f.messages_per_core_s(),
            f.fit.len()
        );
        let b_note = if f.edit_cost_fitted { "fit" } else { "not separable in these runs (one edit/message mix): 0" };
        let _ = writeln!(o, "| b: extra server CPU per edit | {:.2} µs | {b_note} |", f.cpu_s_per_edit * 1e6);
        let c_note = if f.commit_cost_fitted {
            "fit"
        } else if f.fit.iter().any(|r| r.commits_per_s.is_none()) {
            "not measured (runs from servers that do not count op-log commits): 0"
        } else {
            "not separable in these runs: 0"
        };
        let _ = writeln!(o, "| c: server CPU per op-log commit | {:.2} µs | {c_note} |", f.cpu_s_per_commit * 1e6);
        if f.commits_per_core_s > 0.0 {
            let _ = writeln!(
                o,
                "| op-log commits per core-second (most seen) | {:.0} | {} |",
                f.commits_per_core_s, f.commits_from
            );
        }
        match &f.workers {
            Some(k) => {
                for (what, rate) in [
                    ("search: change-feed events indexed per core-second", k.search_events_per_core_s),
                    ("analytics: change-feed events counted per core-second", k.analytics_events_per_core_s),
                    ("analytics: opens counted per core-second", k.opens_per_core_s),
                    ("notifications: emails built and handed over per core-second", k.emails_per_core_s),
                ] {
                    let _ = writeln!(o, "| {what} | {rate:.0} | {} |", k.from);
                }
            }
            None => {
                let _ = writeln!(o, "| workers | not sized | no `--workers` figures given |");
            }
        }
        let _ = writeln!(o, "| server memory per idle connection | {:.0} B | {} |", f.idle_bytes, f.idle_from);
        let _ = writeln!(o, "| server memory per active connection | {:.0} B | {} |", f.active_bytes, f.active_from);
        let _ = writeln!(
            o,
            "\nThe fit against its runs (busy server cores, measured and predicted):\n\n| run | messages/s | edits/s | commits/s | cores measured | predicted | error |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for r in &f.fit {
            let p = f.predict_run(r);
            let _ = writeln!(
                o,
                "| {} | {:.0} | {:.0} | {} | {:.3} | {:.3} | {:+.0}% |",
                r.name,
                r.messages_per_s,
                r.edits_per_s,
                r.commits_per_s.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                r.cores_used,
                p,
                (p / r.cores_used - 1.0) * 100.0
            );
        }
        let _ = writeln!(o, "\n## Sizing\n\n| resource | needed (with headroom) |\n|---|---:|");
        let _ = writeln!(o, "| cores for messages | {:.0} |", self.cores_for_messages);
        let _ = writeln!(o, "| cores for edits | {:.0} |", self.cores_for_edits);
        let _ = writeln!(o, "| cores for op-log commits | {:.0} |", self.cores_for_commits);
        for (what, c) in &self.cores_for_workers {
            let _ = writeln!(o, "| cores for the {what} worker | {c:.1} |");
        }
        let _ = writeln!(o, "| **cores** | **{:.0}** |", self.cores);
        let _ = writeln!(o, "| memory | {:.1} GiB |", self.memory_bytes / (1u64 << 30) as f64);
        let _ = writeln!(o, "| network | {:.1} Gbit/s |", self.network_gbps);
        let _ = writeln!(o, "| document storage (op log + snapshots) | {:.1} TB |", self.storage_bytes / 1e12);
        let _ = writeln!(
            o,
            "\n## Machines\n\n| shape | vCPU | RAM GiB | NIC Gbit/s | $/h | machines | bound by | $/month |\n|---|---:|---:|---:|---:|---:|---|---:|"
        );
        for (m, n, bound, cost) in &self.shapes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.3} | {n} | {bound} | {:.0} |",
                m.name, m.vcpu, m.ram_gib, m.nic_gbps, m.usd_per_hour, cost
            );
        }
        let best = self.shapes.iter().min_by(|a, b| a.3.total_cmp(&b.3)).expect("at least one shape");
        if let Some((sys, table)) = &self.system {
            self.system_markdown(&mut o, best, sys, table);
        }
        let r = REFERENCE;
        let _ = writeln!(
            o,
            "\n## Against the reference design\n\nThe reference design estimates {} WebSocket servers at {}K connections each plus {} application servers: \
             **${:.0}/month**. This plan's Tandem nodes: {} x {} = **${:.0}/month**, {:.1}x less ({:.0} machines instead of {}). \
             The reference figure also covers its databases, queues and load balancers: compare it with the whole \
             system above when it was sized.",
            r.websocket_servers,
            r.connections_per_server / 1000,
            r.app_servers,
            r.usd_per_month,
            best.1,
            best.0.name,
            best.3,
            r.usd_per_month / best.3,
            best.1,
            r.websocket_servers + r.app_servers
        );
        let _ = writeln!(o, "\n## Linearity check\n");
        let mut counts: Vec<usize> = f.fit.iter().filter_map(|r| r.server_cores).collect();
        counts.sort_unstable();
        counts.dedup();
        if counts.len() < 2 {
            let _ = writeln!(
                o,
                "Not checked: {}. Run the same scenario against `tandem serve --cores 1` and `--cores N` on a \
                 machine with N free cores and pass both result directories: each core count's runs are then \
                 compared with the model fitted on all of them.",
                if counts.is_empty() {
                    "these runs do not record their server's core count (reports from before `server.cores`)".to_owned()
                } else {
                    format!("every run at the SLO used {} server core(s)", counts[0])
                }
            );
        } else {
            let _ = writeln!(o, "| server cores | runs | measured / predicted cores (mean) |\n|---:|---:|---:|");
            for c in &counts {
                let runs: Vec<&FitRun> = f.fit.iter().filter(|r| r.server_cores == Some(*c)).collect();
                let ratio = runs.iter().map(|r| r.cores_used / f.predict_run(r)).sum::<f64>() / runs.len() as f64;
                let _ = writeln!(o, "| {c} | {} | {ratio:.2} |", runs.len());
            }
            let _ = writeln!(o, "\nLinear scaling shows as the same ratio at every core count.");
        }
        let mut nodes: Vec<usize> = f.fit.iter().map(|r| r.nodes).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.len() < 2 {
            let _ = writeln!(
                o,
                "\nAcross nodes: not checked (every run at the SLO used {} node(s)). Run the same scenario against \
                 clusters of different sizes (`results/2026-11-30-cluster/scaling.sh`) and pass their runs.",
                nodes.first().copied().unwrap_or(1)
            );
        } else {
            let _ = writeln!(
                o,
                "\n| cluster nodes | runs | messages/s | measured / predicted cores (mean) | messages per busy core-second |\n|---:|---:|---:|---:|---:|"
            );
            for n in &nodes {
                let runs: Vec<&FitRun> = f.fit.iter().filter(|r| r.nodes == *n).collect();
                let k = runs.len() as f64;
                let ratio = runs.iter().map(|r| r.cores_used / f.predict_run(r)).sum::<f64>() / k;
                let messages = runs.iter().map(|r| r.messages_per_s).sum::<f64>() / k;
                let per_core = runs.iter().map(|r| r.messages_per_s / r.cores_used).sum::<f64>() / k;
                let _ = writeln!(o, "| {n} | {} | {messages:.0} | {ratio:.2} | {per_core:.0} |", runs.len());
            }
            let _ = writeln!(
                o,
                "\nLinear scaling across nodes shows as the same ratio (and the same messages per core-second) at every \
                 node count: what one node does per core, N nodes do N times."
            );
        }
        o
    }

    /// The whole-system section: every component sized and priced, then every input.
    fn system_markdown(
        &self,
        o: &mut String,
        best: &(Machine, u64, &'static str, f64),
        sys: &crate::system::SystemPlan,
        table: &crate::system::System,
    ) {
        let _ = writeln!(
            o,
            "\n## The whole system\n\nTandem's nodes as above (the cheapest shape), and what they run on, each at {:.0}% use:\n\n\
             | component | sizing | machines | $/month |\n|---|---|---:|---:|",
            self.target.headroom * 100.0
        );
        let _ = writeln!(
            o,
            "| Tandem nodes (workers included) | {:.0} cores, {:.1} GiB, bound by {} | {} x {} | {:.0} |",
            self.cores,
            self.memory_bytes / (1u64 << 30) as f64,
            best.2,
            best.1,
            best.0.name,
            best.3
        );
        for c in &sys.components {
            let machines = match &c.machine {
                Some(m) if c.machines > 0 => format!("{} x {}", c.machines, m.name),
                _ => "managed".to_owned(),
            };
            let _ = writeln!(o, "| {} | {} | {machines} | {:.0} |", c.name, c.sizing, c.usd_per_month);
        }
        let total = best.3 + sys.usd_per_month();
        let _ = writeln!(o, "| **total** | | | **{total:.0}** |");
        let _ = writeln!(
            o,
            "\nEvery input of this section, measured here or assumed:\n\n| figure | value | | source |\n|---|---:|---|---|"
        );
        for (name, f) in &table.figures {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} |",
                f.value,
                if f.measured { "measured" } else { "assumed" },
                f.source.replace('|', "/")
            );
        }
    }
}

/// Reads every `report.json` under the given directories.
pub fn read_reports(dirs: &[PathBuf]) -> Result<Vec<(String, Report)>> {
    let mut out = Vec::new();
    for d in dirs {
        let mut found = Vec::new();
        walk(d, &mut found)?;
        if found.is_empty() {
            bail!("no report.json under {}", d.display());
        }
        for p in found {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let r: Report = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            let name = p.parent().unwrap_or(&p).display().to_string();
            out.push((name, r));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let direct = dir.join("report.json");
    if direct.is_file() {
        out.push(direct);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for e in entries {
        walk(&e, out)?;
    }
    Ok(())
}

#[cfg(test)]
impl Target {
    /// The reference design's target (10M connections, 16M messages/s, 5M edits/s, 1B
    /// documents), for tests.
    pub(crate) fn reference() -> Self {
        Self {
            connections: 10e6,
            messages_per_s: 16e6,
            edits_per_s: 5e6,
            documents: 1e9,
            active_share: 0.25,
            message_bytes: 100.0,
            document_bytes: 10_000.0,
            headroom: 0.5,
            slo_p99_ms: 50.0,
            opens_per_s: 0.0,
            emails_per_s: 0.0,
            ops_per_event: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            cpu_s_per_message: 1e-5,
            cpu_s_per_edit: 5e-5,
            edit_cost_fitted: true,
            idle_bytes: 2_000.0,
            active_bytes: 6_000.0,
            runs: (3, 2),
            worst_fit: 1.0,
            ..Figures::default()
        }
    }

    fn run(m: f64, e: f64, c: f64) -> FitRun {
        FitRun {
            name: format!("{m}/{e}"),
            messages_per_s: m,
            edits_per_s: e,
            commits_per_s: None,
            cores_used: c,
            server_cores: None,
            nodes: 1,
        }
    }

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-9 * y.abs().max(1e-12)
    }

    #[test]
    fn the_fit_recovers_costs() {
        // cores = 1e-5 x messages + 5e-5 x edits, two mixes.
        let runs = [run(100_000.0, 10_000.0, 1.5), run(200_000.0, 1_000.0, 2.05), run(50_000.0, 10_000.0, 1.0)];
        let k = fit(&runs).unwrap();
        assert!(k.edits && !k.commits);
        assert!(close(k.a, 1e-5) && close(k.b, 5e-5), "{k:?}");
        // One mix only: edits are not separable, all cost goes to messages.
        let k = fit(&[run(100_000.0, 10_000.0, 1.5), run(200_000.0, 20_000.0, 3.0)]).unwrap();
        assert!(!k.edits && k.b == 0.0 && close(k.a, 1.5e-5), "{k:?}");
        assert!(fit(&[]).is_none());
    }

    #[test]
    fn the_fit_separates_commits_when_batches_vary() {
        // cores = 4 µs x messages + 20 µs x edits + 100 µs x commits: a room (250 edits in
        // 200 commits), many documents (4,000 edits in 2,000) and a flood (17,000 in 800).
        let mk = |m: f64, e: f64, c: f64| {
            let mut r = run(m, e, 4e-6 * m + 20e-6 * e + 100e-6 * c);
            r.commits_per_s = Some(c);
            r
        };
        let runs = [mk(13_000.0, 250.0, 200.0), mk(24_000.0, 4_000.0, 2_000.0), mk(100_000.0, 17_000.0, 800.0)];
        let k = fit(&runs).unwrap();
        assert!(k.edits && k.commits, "{k:?}");
        assert!(close(k.a, 4e-6) && close(k.b, 20e-6) && close(k.c, 100e-6), "{k:?}");
        let f = Figures { cpu_s_per_message: k.a, cpu_s_per_edit: k.b, cpu_s_per_commit: k.c, ..Figures::default() };
        for r in &runs {
            assert!(close(f.predict_run(r), r.cores_used));
        }
        // A run without commit counts: the model falls back to messages and edits.
        let mut mixed = runs.to_vec();
        mixed.push(run(10_000.0, 100.0, 0.2));
        assert!(!fit(&mixed).unwrap().commits);
    }

    fn target() -> Target {
        Target::reference()
    }

    #[test]
    fn the_arithmetic() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let p = plan(&target(), &figures(), &prices);
        // 16M x 10 µs / 0.5 = 320 cores; 5M x 50 µs / 0.5 = 500 cores more.
        assert!((p.cores_for_messages - 320.0).abs() < 1e-6);
        assert!((p.cores_for_edits - 500.0).abs() < 1e-6);
        assert!((p.cores - 820.0).abs() < 1e-6);
        // 10M x (0.25 x 6000 + 0.75 x 2000) / 0.5 = 60 GB.
        assert!((p.memory_bytes - 60e9).abs() < 1.0);
        // 16M x 100 B x 8 / 0.5 = 25.6 Gbit/s.
        assert!((p.network_gbps - 25.6).abs() < 1e-9);
        assert!((p.storage_bytes - 1e13).abs() < 1.0);
        let c52 = p.shapes.iter().find(|s| s.0.name == "c5.2xlarge").unwrap();
        // 820 cores / 8 vCPU = 102.5 -> 103 machines, at $0.34/h.
        assert_eq!((c52.1, c52.2), (103, "cores"));
        assert!((c52.3 - 103.0 * 0.34 * HOURS_PER_MONTH).abs() < 1e-6);
        let md = p.markdown("plan", &[]);
        assert!(md.contains("$170651/month"), "{md}");
        assert!(md.contains("Not checked"), "{md}");
    }

    #[test]
    fn workers_are_sized_from_their_measured_rates() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let json = r#"{"workers": {
            "search": {"ops_per_core_s": 50000, "events_per_core_s": 10000},
            "analytics-edits": {"ops_per_core_s": 100000, "events_per_core_s": 20000},
            "analytics-usage": {"ops_per_core_s": null, "events_per_core_s": 40000},
            "notifications": {"ops_per_core_s": null, "events_per_core_s": 2000}}}"#;
        let k = WorkerCosts::parse(json, "w.json").unwrap();
        let f = Figures { workers: Some(k), ..figures() };
        let t = Target { opens_per_s: 20_000.0, emails_per_s: 1_000.0, ops_per_event: 5.0, ..target() };
        let p = plan(&t, &f, &prices);
        // 5M edits at 5 per event: 1M events / 10K / 0.5 = 200 cores to index, / 20K / 0.5 =
        // 100 to count; 20K opens / 40K / 0.5 = 1; 1K emails / 2K / 0.5 = 1. On top of the 820
        // of the_arithmetic.
        let by: Vec<f64> = p.cores_for_workers.iter().map(|(_, c)| *c).collect();
        assert_eq!(by, vec![200.0, 100.0, 1.0, 1.0]);
        assert!((p.cores - 1122.0).abs() < 1e-6);
        let md = p.markdown("plan", &[]);
        assert!(md.contains("| cores for the search (edits indexed) worker | 200.0 |"), "{md}");
        assert!(md.contains("| search: change-feed events indexed per core-second | 10000 | w.json |"), "{md}");
        // One op per event (typing): five times the events, five times the cores.
        let typing = plan(&Target { ops_per_event: 1.0, ..t }, &f, &prices);
        assert_eq!(typing.cores_for_workers[0].1, 1000.0);
        // Without the figures the plan says so and sizes none.
        let none = plan(&t, &figures(), &prices);
        assert!(none.cores_for_workers.is_empty() && (none.cores - 820.0).abs() < 1e-6);
        assert!(none.markdown("plan", &[]).contains("| workers | not sized |"));
        let bad = WorkerCosts::parse(r#"{"workers": {"search": {"events_per_core_s": 0}}}"#, "w.json").unwrap_err();
        assert!(bad.to_string().contains("workers.search.events_per_core_s"), "{bad}");
    }

    #[test]
    fn commits_take_their_share_of_each_core() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        // 820 cores before commits (see the_arithmetic), 5M edits over them = 6,098 per core,
        // above the 1,000 commits per core-second seen: each core spends 1,000 x 200 µs = 20%
        // of its time committing, so 820 / 0.8 = 1,025 cores.
        let f =
            Figures { cpu_s_per_commit: 200e-6, commit_cost_fitted: true, commits_per_core_s: 1_000.0, ..figures() };
        let p = plan(&target(), &f, &prices);
        assert!((p.cores_for_commits - 205.0).abs() < 1e-6, "{}", p.cores_for_commits);
        assert!((p.cores - 1_025.0).abs() < 1e-6);
        // Few edits per core: one commit per edit at most.
        let few = Target { edits_per_s: 41_000.0, ..target() };
        let p = plan(&few, &f, &prices);
        let per_core = 41_000.0 / (p.cores_for_messages + p.cores_for_edits);
        assert!(per_core < 1_000.0);
        let lost = 200e-6 * per_core;
        assert!((p.cores_for_commits - (p.cores_for_messages + p.cores_for_edits) * lost / (1.0 - lost)).abs() < 1e-6);
    }

    #[test]
    fn the_worst_fit_scales_the_cores() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let base = plan(&target(), &figures(), &prices).cores;
        let worse = plan(&target(), &Figures { worst_fit: 1.5, ..figures() }, &prices).cores;
        assert!((worse - 1.5 * base).abs() < 1e-6, "{worse} vs {base}");
    }

    #[test]
    fn memory_or_network_can_bound() {
        let prices =
            Prices::parse("[[machine]]\nname = \"tiny\"\nvcpu = 64\nram_gib = 1\nnic_gbps = 100\nusd_per_hour = 1\n")
                .unwrap();
        let p = plan(&target(), &figures(), &prices);
        assert_eq!(p.shapes[0].2, "memory");
        assert_eq!(p.shapes[0].1, (60e9 / (1u64 << 30) as f64).ceil() as u64);
    }

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("10M"), Ok(10e6));
        assert_eq!(parse_count("1.5k"), Ok(1500.0));
        assert_eq!(parse_count("1B"), Ok(1e9));
        assert_eq!(parse_count("16_000_000"), Ok(16e6));
        assert!(parse_count("ten").is_err());
        assert!(parse_count("-1").is_err());
        assert!(Prices::parse("machine = []").is_err());
        assert!(Prices::parse(DEFAULT_PRICES).unwrap().get("nope").unwrap_err().to_string().contains("c5.xlarge"));
    }
}
