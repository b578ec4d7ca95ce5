//! `tandem`: the server binary. It wires the data plane (`tandem-net`) to its configuration,
//! its data directory and the process's signals; it holds no protocol logic.

mod cluster;
mod config;
mod events;
#[cfg(feature = "heap-stats")]
mod heap;
mod telemetry;
mod worker;

#[cfg(feature = "heap-stats")]
#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use config::{AuthMode, ServeArgs};

/// Tandem: a real-time collaboration engine.
#[derive(Parser, Debug)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve clients on one port: the REST API (/api/*), WebSocket (GET /ws), /healthz, /readyz
    /// and /metrics.
    Serve(ServeArgs),
    /// Check the op log and truncate it after the last good record where it is corrupt,
    /// reporting what was dropped. Run it when `tandem serve` refuses to start on corruption
    /// (with the same --data-dir and --cores); the server must not be running.
    Repair(ServeArgs),
    /// Apply the metadata database's migrations (SQLite in the data directory, or
    /// --database-url), with --oplog scylla create the ScyllaDB keyspace and tables
    /// (`[server.storage.scylla]`), and with --oplog postgres the op log's PostgreSQL schema
    /// and tables (`[server.storage.postgres]`); safe to run again, from several nodes at once. `tandem serve` migrates the metadata
    /// database itself at start.
    Migrate(ServeArgs),
    /// Run workers in a process of their own (at scale; needs `[events] backend = "kafka"`):
    /// `--topics notifications,analytics,search`. Several processes may run the same worker:
    /// they share its Kafka consumer group. Serves /metrics on --metrics-listen. Leave these
    /// workers out of `[events] workers` for `tandem serve`.
    Worker(WorkerArgs),
    /// Rebuild the full-text index (<data_dir>/search) from the op log and the metadata
    /// database: every live document's title and latest text. The server (and any search
    /// worker) must be stopped.
    Reindex(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// The workers to run, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "WORKERS")]
    topics: Vec<events::WorkerKind>,
    /// Where to serve /metrics (and /healthz).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    metrics_listen: std::net::SocketAddr,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Repair(args) => repair(&args),
        Command::Migrate(args) => migrate(&args),
        Command::Worker(args) => worker::run(&args.serve, &args.topics, args.metrics_listen),
        Command::Reindex(args) => worker::reindex(&args),
    }
}

/// Takes the data directory's lock, so two servers never share one.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("{} is in use by another tandem server", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

fn migrate(args: &ServeArgs) -> Result<()> {
    let config = args.resolve()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (engine, applied) =
        tandem_control::migrate(&config.control, &config.data_dir).context("migrating the metadata database")?;
    println!("metadata database ({engine:?}): {applied} migrations applied, schema up to date");
    match config.server.storage.oplog {
        tandem_net::OplogKind::Scylla => migrate_scylla(&config)?,
        tandem_net::OplogKind::Postgres => migrate_postgres(&config)?,
        _ => {}
    }
    Ok(())
}

#[cfg(feature = "scylla")]
fn migrate_scylla(config: &config::FileConfig) -> Result<()> {
    let st = &config.server.storage;
    let opts = st.scylla.options(std::time::Duration::ZERO);
    let statements = tandem_storage::scylla::migrate(&opts, &st.scylla.migration())
        .with_context(|| format!("migrating keyspace {} on {}", opts.keyspace, opts.nodes.join(",")))?;
    for s in statements {
        println!("{s};");
    }
    println!("keyspace {} is at schema version {}", opts.keyspace, tandem_storage::scylla::SCHEMA_VERSION);
    Ok(())
}

#[cfg(not(feature = "scylla"))]
fn migrate_scylla(_config: &config::FileConfig) -> Result<()> {
    bail!(
        "this tandem was built without ScyllaDB support: build it with `cargo build --release -p tandem --features scylla`"
    )
}

#[cfg(feature = "postgres")]
fn migrate_postgres(config: &config::FileConfig) -> Result<()> {
    use tandem_storage::postgres;
    let opts = config.server.storage.postgres.options(std::time::Duration::ZERO);
    let statements = postgres::migrate(&opts).with_context(|| {
        format!("migrating the op log in {} (schema {})", postgres::redacted(&opts.url), opts.schema)
    })?;
    for s in statements {
        println!("{s};");
    }
    println!("op-log schema {} is at version {}", opts.schema, postgres::SCHEMA_VERSION);
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn migrate_postgres(_config: &config::FileConfig) -> Result<()> {
    bail!("this tandem was built without the PostgreSQL op log: build it with `--features postgres`")
}

fn repair(args: &ServeArgs) -> Result<()> {
    let config = args.resolve()?;
    if config.server.storage.oplog != tandem_net::OplogKind::Local {
        bail!("tandem repair checks the local op log in the data directory; this configuration uses another op log");
    }
    let _lock = lock_data_dir(&config.data_dir)?;
    let cores = config.server.resolved_cores();
    let blobs = tandem_net::open_blobs(&config.server.storage).context("opening the blob store")?;
    let mut dropped = false;
    for core in 0..cores {
        let log = tandem_net::open_core_log(&config.server.storage, cores, core, true, Arc::clone(&blobs))
            .with_context(|| format!("repairing the op log of core {core}"))?;
        let r = log.recovery();
        match &r.repaired {
            Some(rep) => {
                dropped = true;
                println!(
                    "core {core}: {}: truncated {} at offset {} ({} bytes dropped); removed {} later segment files{}",
                    rep.reason,
                    rep.file.display(),
                    rep.offset,
                    rep.bytes_dropped,
                    rep.segments_removed.len(),
                    rep.segments_removed.iter().map(|p| format!("\n  removed {}", p.display())).collect::<String>()
                );
            }
            None => println!("core {core}: op log is sound ({} records in {} segments)", r.records, r.segments),
        }
        if let Some((file, offset, bytes)) = &r.torn_tail {
            println!("core {core}: cleared a torn last write: {bytes} bytes at {} offset {offset}", file.display());
        }
    }
    if dropped {
        println!("repaired: records after the corruption are gone; documents end at their last good revision");
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let config = args.resolve()?;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::EnvFilter::try_new(&config.log).context("invalid log filter")?);
    // This node among the others, in its spans.
    let instance = config.cluster.node.clone().unwrap_or_else(|| config.server.listen.to_string());
    let (spans, _telemetry) = match telemetry::start(&config.telemetry, &instance)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry().with(log).with(spans).init();
    if let Some(t) = &_telemetry {
        info!("exporting spans over OTLP to {}", t.url());
    }
    let _lock = lock_data_dir(&config.data_dir)?;
    if let (Some(cert), Some(key)) = (&config.server.tls.cert_file, &config.server.tls.key_file) {
        // Before anything starts: a bad file is the whole answer.
        tandem_net::tls::load_certified(cert, key).map_err(anyhow::Error::msg).context("TLS on the port")?;
    }
    #[cfg(feature = "heap-stats")]
    heap::report_periodically();
    // A cluster's node: its configuration checked before anything connects.
    let plan = config.cluster.enabled.then(|| cluster::Node::plan(&config.cluster, &config)).transpose()?;
    let metadata =
        config.control.database_url.clone().unwrap_or_else(|| tandem_control::default_database_url(&config.data_dir));
    let mut control = tandem_control::ControlPlane::start(&config.control, &config.data_dir)
        .with_context(|| format!("starting the control plane (metadata in {})", tandem_storage::redacted(&metadata)))?;
    // The nodes of a cluster share the change feed's cursors.
    let cursors = plan.as_ref().map(|p| p.cursors(control.runtime())).transpose()?;
    let mut events =
        events::Events::open(&control, &config.events, &config.data_dir, events::search_group(&config), cursors)?;
    let blobs = tandem_net::open_blobs(&config.server.storage).context("opening the blob store")?;
    let mut hooks = control.hooks();
    hooks.blobs = Some(Arc::clone(&blobs));
    hooks.metrics = Some(events.metrics());
    hooks.feed = events.feed_sink();
    if config.auth == AuthMode::Dev {
        // Benchmarks: the data plane checks no accounts (the REST API still runs).
        hooks.auth = tandem_net::access::Auth::Open;
        hooks.control = None;
        match &config.server.dev_secret {
            Some(_) => warn!("AUTH IS IN DEV MODE: any client with the dev secret may open and edit any document"),
            None => warn!("AUTH IS IN DEV MODE WITHOUT A SECRET: anyone may open and edit any document"),
        }
    }
    let node = plan.map(cluster::Plan::join).transpose()?;
    if let Some(node) = &node {
        hooks.placement = Some(node.placement());
        control.set_placement(node.placement());
        let (events_metrics, own) = (events.metrics(), Arc::clone(&node.ownership));
        hooks.metrics = Some(Arc::new(move || events_metrics() + &cluster::metrics(&own)));
    }
    let server = tandem_net::start_with(config.server.clone(), hooks)
        .with_context(|| format!("starting the server on {}", config.server.listen))?;
    control.attach(server.data_plane());
    if let Some(node) = &node {
        // The cores look at a hand-over at once, not at their next tick.
        node.ownership.on_change(server.data_plane().placement_hook());
    }
    if let (Some(_), Some(tls)) = (&node, server.tls()) {
        // REST calls forwarded to the other nodes go over TLS, trusting what they present.
        let trust = match &config.cluster.internal_ca_file {
            Some(ca) => tandem_net::tls::client_config_trusting(ca)
                .map_err(anyhow::Error::msg)
                .context("cluster.internal_ca_file")?,
            None => tandem_net::tls::pinned_client_config(&tls.certs),
        };
        control.set_forward_tls(trust);
    }
    let (http, ws) = if server.tls().is_some() { ("https", "wss") } else { ("http", "ws") };
    let link_base = format!("{http}://{}", server.local_addr());
    let link_key = config.control.link_key_path(&config.data_dir);
    let files = control.attach_files(blobs, &link_key, &link_base).context("starting exports and uploads")?;
    let exports = events::ExportDeps {
        files,
        keys: Arc::clone(&control.app().keys),
        server: events::loopback(server.local_addr()),
        data: Some(server.data_plane()),
        tls: server.tls().map(|t| tandem_net::tls::pinned_client_config(&t.certs)),
    };
    events.start(&control, &config, &link_base, &exports)?;
    let drivers: Vec<&str> = server.drivers().iter().map(|d| d.name()).collect();
    info!(
        "tandem listening on {http}://{addr} (REST /api, WebSocket {ws}://{addr}/ws) with {} cores ({}); data in {}",
        drivers.len(),
        drivers.join(", "),
        config.data_dir.display(),
        addr = server.local_addr(),
    );
    if control.app().web().is_some() {
        let addr = server.local_addr();
        let host = if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
        info!("the editor: open {http}://{host}/ in a browser");
    }
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    if let Some(signal) = signals.forever().next() {
        info!("signal {signal}: shutting down (closing clients with 1001)");
    }
    if let Some(node) = node {
        // Before the cores stop: they drop the documents, then the leases go back.
        info!("leaving the cluster: handing every shard over");
        node.leave();
        // The next owners are taking over: this process's teardown waits until they have.
        std::thread::sleep(cluster::LINGER);
    }
    server.shutdown();
    server.join();
    control.shutdown();
    info!("stopped");
    Ok(())
}
