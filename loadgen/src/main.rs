//! `tandem-loadgen`: run a scenario against a server and write a report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tandem_loadgen::report::{Provenance, Report};
use tandem_loadgen::run::{RunOptions, parse_target, run};
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
        /// The server: ws://host:port/ws.
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        target: String,
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
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { scenario, target, duration, out, label, server_pid } => {
            let sc = Scenario::load(&scenario)?;
            let opts = RunOptions { target: parse_target(&target)?, duration, server_pid };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let provenance = Provenance::here(command);
            eprintln!("running {} ({} users) against {target} ...", sc.name, sc.users());
            let result = run(&sc, &opts)?;
            let mut sc = sc;
            if let Some(d) = duration {
                sc.stages.steady_s = d;
            }
            let report = Report::new(&sc, &target, &label, provenance, &result);
            let dir = out.unwrap_or_else(|| {
                let date = report.provenance.started_at.get(..10).unwrap_or("run").to_owned();
                PathBuf::from("results").join(format!("{date}-{}-{label}", sc.name))
            });
            report.write(&dir, &result.stats).with_context(|| format!("writing {}", dir.display()))?;
            print!("{}", report.markdown());
            eprintln!("report written to {}", dir.display());
            if !report.converged {
                anyhow::bail!("clients did not converge with the server");
            }
            Ok(())
        }
    }
}
