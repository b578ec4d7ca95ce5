//! `tandem-loadgen`: run a scenario against a server and write a report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tandem_loadgen::plan;
use tandem_loadgen::plots;
use tandem_loadgen::report::{self, Provenance, Report};
use tandem_loadgen::run::{RunOptions, parse_targets, run};
use tandem_loadgen::scenario::Scenario;

/// Load generator for Tandem (and its peers).
#[derive(Parser, Debug)]
#[command(name = "tandem-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario against a server.
    Run {
        /// The scenario file (see loadgen/scenarios/).
        scenario: PathBuf,
        /// The server: ws://host:port/ws, or wss:// with --ca-file; a cluster's nodes
        /// separated by commas (users connect to them in turn and follow `moved` to their
        /// documents' owners).
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        target: String,
        /// For a wss:// target: the PEM file of the server's certificate or of the authority
        /// that signed it. Certificates are checked against the first URL's host.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Length of the steady (measured) stage, seconds; overrides the scenario.
        #[arg(long)]
        duration: Option<f64>,
        /// Result directory [default: results/<date>-<scenario>-<label>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// What the target is, for the report and the directory name.
        #[arg(long, default_value = "tandem")]
        label: String,
        /// The server's pid, for its CPU and memory (found from the port when local).
        #[arg(long)]
        server_pid: Option<u32>,
        /// The protocol the target speaks: tandem, sharedb (ShareDB with rich-text) or yjs
        /// (a y-websocket server).
        #[arg(long, default_value = "tandem")]
        protocol: tandem_loadgen::peers::Protocol,
        /// Drive no cursor moves (cursor_rate 0 in every group): the peers' runs carry none,
        /// so this makes Tandem's runs like theirs.
        #[arg(long)]
        no_cursors: bool,
        /// Most users (connections) one generator process holds; a scenario with more runs in
        /// worker processes. 0: as many as the file-descriptor limit allows, at most 18,000.
        #[arg(long, default_value_t = 0)]
        connections_per_process: usize,
        /// Sign users in first (servers run with --auth accounts): N accounts sign up over
        /// the REST API, documents are created and link-shared, users hello with the tokens.
        #[arg(long, value_name = "ACCOUNTS")]
        sign_up: Option<usize>,
        /// Give every document N comment threads before the run (on words of a line of N words
        /// written for them), so the run pays for moving N anchors through every op (Tandem
        /// only). 0 writes the line alone: the same documents without threads, to compare.
        #[arg(long, value_name = "N")]
        comment_threads: Option<usize>,
    },
    /// Run one process's share of a run (started by `run`; speaks JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
    /// Re-render a result directory's report.md and plots from its report.json and .hgrm files.
    Report {
        /// The result directory.
        dir: PathBuf,
    },
    /// Print two runs side by side, with B/A ratios.
    Compare {
        /// The first result directory (A).
        a: PathBuf,
        /// The second result directory (B).
        b: PathBuf,
    },
    /// Plan capacity for a target from measured per-core figures.
    Plan {
        /// Concurrent connections (10M, 250K, ...).
        #[arg(long, value_parser = plan::parse_count)]
        connections: f64,
        /// WebSocket messages per second, in and out.
        #[arg(long, value_parser = plan::parse_count)]
        messages_per_s: f64,
        /// Edits (durable ops) per second.
        #[arg(long, value_parser = plan::parse_count, default_value = "0")]
        edits_per_s: f64,
        /// Documents stored.
        #[arg(long, value_parser = plan::parse_count, default_value = "0")]
        documents: f64,
        /// Document opens per second (analytics counts each).
        #[arg(long, value_parser = plan::parse_count, default_value = "0")]
        opens_per_s: f64,
        /// Notification emails per second.
        #[arg(long, value_parser = plan::parse_count, default_value = "0")]
        emails_per_s: f64,
        /// Edits per change-feed event (at least 1): typing gives one op per event (the
        /// default, the workers' costliest case), bursts and catch-ups more.
        #[arg(long, default_value_t = 1.0)]
        ops_per_event: f64,
        /// The workers' costs per core (the JSON from `cargo run --release -p tandem-workers
        /// --example workers_bench -- FILE`); without it the plan leaves the workers out.
        #[arg(long)]
        workers: Option<PathBuf>,
        /// Result directories to read per-core figures from (searched for report.json).
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// Share of connections in active documents (0..1); the rest are idle.
        #[arg(long, default_value_t = 0.2)]
        active_share: f64,
        /// Bytes per message on the wire.
        #[arg(long, default_value_t = 120.0)]
        message_bytes: f64,
        /// Stored bytes per document (snapshot plus retained history).
        #[arg(long, default_value_t = 20_000.0)]
        document_bytes: f64,
        /// Plan every resource at this share of its capacity (0..1).
        #[arg(long, default_value_t = 0.6)]
        headroom: f64,
        /// Only runs with ack p99 at or under this count, ms.
        #[arg(long, default_value_t = 50.0)]
        slo_p99_ms: f64,
        /// A price table (TOML, see loadgen/prices.toml) instead of the built-in one.
        #[arg(long)]
        prices: Option<PathBuf>,
        /// The figures for the system around the nodes (TOML, see loadgen/system.toml)
        /// instead of the built-in ones.
        #[arg(long, conflicts_with = "nodes_only")]
        system: Option<PathBuf>,
        /// Plan Tandem's nodes only, not the op-log store, metadata database, Kafka, S3 and
        /// load balancer around them.
        #[arg(long)]
        nodes_only: bool,
        /// Only runs whose label starts with this (peers' runs are left out).
        #[arg(long, default_value = "tandem")]
        label: String,
        /// Also write the plan to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => tandem_loadgen::worker::main(),
        Command::Run {
            scenario,
            target,
            ca_file,
            duration,
            out,
            label,
            server_pid,
            protocol,
            no_cursors,
            connections_per_process,
            sign_up,
            comment_threads,
        } => {
            let mut sc = Scenario::load(&scenario)?;
            if let Some(n) = sign_up {
                sc.sign_up = Some(n);
            }
            if no_cursors || protocol != tandem_loadgen::peers::Protocol::Tandem {
                for g in &mut sc.groups {
                    g.cursor_rate = 0.0;
                }
            }
            let targets = parse_targets(&target)?;
            let tls = tandem_loadgen::tls::spec_for(&target, ca_file)?;
            tandem_loadgen::tls::init(tls.as_ref())?;
            let opts = RunOptions {
                target: targets[0],
                targets,
                duration,
                server_pid,
                protocol,
                connections_per_process,
                tls,
            };
            if let Some(accounts) = sc.sign_up {
                anyhow::ensure!(
                    protocol == tandem_loadgen::peers::Protocol::Tandem,
                    "signing up is for Tandem servers only"
                );
                tandem_loadgen::accounts::sign_up(&mut sc, opts.target, accounts)?;
            }
            tandem_loadgen::run::preload(&sc, &opts)?;
            if let Some(n) = comment_threads {
                tandem_loadgen::run::seed_comments(&sc, &opts, n)?;
            }
            if let Some(x) = sc.search.clone() {
                let dir = out.unwrap_or_else(|| PathBuf::from("results").join(format!("{}-{label}", sc.name)));
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                tandem_loadgen::search::search(&sc, &x, &opts, &target, &label, &dir)?;
                eprintln!("search written to {}", dir.display());
                return Ok(());
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let provenance = Provenance::here(command);
            eprintln!("running {} ({} users) against {target} ...", sc.name, sc.users());
            let result = run(&sc, &opts)?;
            if let Some(d) = duration {
                sc.stages.steady_s = d;
            }
            let report = Report::new(&sc, &target, &label, provenance, &result);
            let dir = out.unwrap_or_else(|| {
                let date = report.provenance.started_at.get(..10).unwrap_or("run").to_owned();
                PathBuf::from("results").join(format!("{date}-{}-{label}", sc.name))
            });
            report.write(&dir, &result.stats).with_context(|| format!("writing {}", dir.display()))?;
            plots::render(&dir, &report)?;
            print!("{}", report.markdown());
            eprintln!("report written to {}", dir.display());
            if !report.converged {
                anyhow::bail!("clients did not converge with the server");
            }
            Ok(())
        }
        Command::Report { dir } => {
            let r = report::load(&dir)?;
            std::fs::write(dir.join("report.md"), r.markdown())
                .with_context(|| format!("writing {}", dir.display()))?;
            let plots = plots::render(&dir, &r)?;
            print!("{}", r.markdown());
            eprintln!("re-rendered report.md and {} plots in {}", plots.len(), dir.display());
            Ok(())
        }
        Command::Compare { a, b } => {
            let (ra, rb) = (report::load(&a)?, report::load(&b)?);
            print!("{}", report::compare(&ra, &rb, &a.display().to_string(), &b.display().to_string()));
            Ok(())
        }
        Command::Plan {
            connections,
            messages_per_s,
            edits_per_s,
            documents,
            opens_per_s,
            emails_per_s,
            ops_per_event,
            workers,
            from,
            active_share,
            message_bytes,
            document_bytes,
            headroom,
            slo_p99_ms,
            prices,
            system,
            nodes_only,
            label,
            out,
        } => {
            if !((0.0..=1.0).contains(&active_share) && headroom > 0.0 && headroom <= 1.0) {
                anyhow::bail!("--active-share must be in 0..=1 and --headroom in (0, 1]");
            }
            if !(ops_per_event.is_finite() && ops_per_event >= 1.0) {
                anyhow::bail!("--ops-per-event must be at least 1 (a change-feed event carries one op or more)");
            }
            let prices = match prices {
                Some(p) => plan::Prices::parse(
                    &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
                )?,
                None => plan::Prices::parse(plan::DEFAULT_PRICES)?,
            };
            let target = plan::Target {
                connections,
                messages_per_s,
                edits_per_s,
                documents,
                active_share,
                message_bytes,
                document_bytes,
                headroom,
                slo_p99_ms,
                opens_per_s,
                emails_per_s,
                ops_per_event,
            };
            let reports = plan::read_reports(&from)?;
            let mut figures = plan::Figures::from_reports(&reports, &label, slo_p99_ms)?;
            if let Some(path) = &workers {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                figures.workers = Some(plan::WorkerCosts::parse(&text, &path.display().to_string())?);
            }
            let mut p = plan::plan(&target, &figures, &prices);
            if !nodes_only {
                let table = match system {
                    Some(path) => tandem_loadgen::system::System::parse(
                        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                        &prices,
                    )?,
                    None => tandem_loadgen::system::System::parse(tandem_loadgen::system::DEFAULT_SYSTEM, &prices)?,
                };
                p.system = Some((tandem_loadgen::system::size(&target, &table, &prices)?, table));
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let md = p.markdown(&command, &from);
            if let Some(out) = out {
                std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
            }
            print!("{md}");
            Ok(())
        }
    }
}
