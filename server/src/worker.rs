//! `tandem worker` (workers in a process of their own) and `tandem reindex` (the search index
//! rebuilt from the op log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tandem_net::OplogKind;
use tandem_net::protocol::DocId;
use tandem_storage::OpLog;
use tandem_workers::search::{self, IndexedDoc, SearchIndex};
use tracing::info;

use crate::config::ServeArgs;
use crate::events::{self, Backend, WorkerKind, WorkerMetrics};

/// Connects to the configured metadata database and migrates it.
fn connect_store(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::FileConfig,
) -> Result<tandem_control::Store> {
    let url =
        config.control.database_url.clone().unwrap_or_else(|| tandem_control::default_database_url(&config.data_dir));
    runtime
        .block_on(async {
            let store = tandem_control::Store::connect(&url).await?;
            store.migrate().await?;
            Ok::<_, tandem_control::Error>(store)
        })
        .context("connecting to the metadata database")
}

/// Runs `kinds` until SIGINT or SIGTERM.
pub(crate) fn run(args: &ServeArgs, kinds: &[WorkerKind], metrics_listen: SocketAddr) -> Result<()> {
    let config = args.resolve()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).context("invalid log filter")?)
        .with_writer(std::io::stderr)
        .init();
    if config.events.backend != Backend::Kafka {
        bail!(
            "tandem worker needs [events] backend = \"kafka\": the in-process bus lives inside `tandem serve`, \
             which runs every worker itself (see [events] workers)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("tandem-worker")
        .enable_all()
        .build()
        .context("starting the worker runtime")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store = connect_store(&runtime, &config)?;
    let bus = events::open_bus(runtime.handle(), &config.events, &config.data_dir)?;
    let mut metrics = WorkerMetrics::new(kinds, None, events::search_group(&config));
    let link_base = format!("{}://{}", crate::config::http_scheme(&config), config.server.listen);
    let exports = if kinds.contains(&WorkerKind::Exports) { Some(export_deps(&config, &link_base)?) } else { None };
    let emails = events::spawn_workers(
        runtime.handle(),
        kinds,
        &bus,
        &store,
        &config.mail,
        &config.data_dir,
        &link_base,
        exports.as_ref(),
        &mut metrics,
    )?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(metrics_listen))
        .with_context(|| format!("listening for /metrics on {metrics_listen}"))?;
    let render = {
        let bus = bus.clone();
        Arc::new(move || metrics.render(&bus, None))
    };
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" })).route(
        "/metrics",
        axum::routing::get(move || {
            let render = Arc::clone(&render);
            async move { ([("content-type", "text/plain; version=0.0.4")], render()) }
        }),
    );
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("serving /metrics: {e}");
        }
    });
    let names: Vec<String> = kinds.iter().map(|k| format!("{k:?}").to_lowercase()).collect();
    let emails = emails.map(|e| format!("; emails go to {e}")).unwrap_or_default();
    info!("tandem worker: {} on {} bus; /metrics on http://{metrics_listen}{emails}", names.join(", "), bus.backend());
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    if let Some(signal) = signals.forever().next() {
        info!("signal {signal}: stopping (uncommitted events are read again by the next worker)");
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

/// The export worker's files and keys: the blob store, and the server's link and token keys
/// from its data directory (made by `tandem serve`, never here: a key of the worker's own
/// would sign tokens and links the server refuses).
fn export_deps(config: &crate::config::FileConfig, link_base: &str) -> Result<events::ExportDeps> {
    let keys_path = config.control.keys_file.clone().unwrap_or_else(|| config.data_dir.join("keys.json"));
    let link_key = config.control.link_key_path(&config.data_dir);
    for path in [&keys_path, &link_key] {
        if !path.exists() {
            bail!(
                "the export worker needs the server's {}: start `tandem serve` on this data directory first",
                path.display()
            );
        }
    }
    let ttl = std::time::Duration::from_secs(config.control.access_token_ttl_s);
    let keys = tandem_control::tokens::Keys::load_or_create(&keys_path, ttl).context("reading the token keys")?;
    let files = tandem_control::files::Files {
        blobs: tandem_net::open_blobs(&config.server.storage).context("opening the blob store")?,
        signer: tandem_control::files::LinkSigner::load_or_create(&link_key).context("reading the link key")?,
        config: config.control.files.clone(),
        link_base: link_base.to_owned(),
    };
    Ok(events::ExportDeps {
        files: Arc::new(files),
        keys: Arc::new(keys),
        server: events::loopback(config.server.listen),
        // Another process holds the cores: the requester learns it from the email and the API.
        data: None,
        tls: loopback_tls(&config.server.tls)?,
    })
}

/// With TLS on the server's port: a client configuration trusting the certificate its files
/// hold (watched, like the server watches them).
fn loopback_tls(cfg: &tandem_net::tls::TlsConfig) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else { return Ok(None) };
    let certs = tandem_net::tls::Certs::load(cert, key).map_err(anyhow::Error::msg)?;
    certs.watch(std::time::Duration::from_secs(cfg.reload_interval_s.max(1)));
    Ok(Some(tandem_net::tls::pinned_client_config(&certs)))
}

/// Rebuilds the search index from the op log.
pub(crate) fn reindex(args: &ServeArgs) -> Result<()> {
    let config = args.resolve()?;
    if config.server.storage.oplog != OplogKind::Local {
        bail!("tandem reindex reads the local op log in the data directory; this configuration uses another op log");
    }
    let _lock = crate::lock_data_dir(&config.data_dir)?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = connect_store(&runtime, &config)?;
    let cores = config.server.resolved_cores();
    let blobs = tandem_net::open_blobs(&config.server.storage).context("opening the blob store")?;
    let mut logs = Vec::with_capacity(cores);
    for core in 0..cores {
        logs.push(
            tandem_net::open_core_log(&config.server.storage, cores, core, false, Arc::clone(&blobs))
                .with_context(|| format!("opening the op log of core {core}"))?,
        );
    }
    let index = SearchIndex::open(&search::index_dir(&config.data_dir)).map_err(anyhow::Error::msg)?;
    let writer = index.writer().map_err(anyhow::Error::msg)?;
    writer.delete_all_documents().context("clearing the search index")?;
    let (mut indexed, mut failed, mut after) = (0u64, 0u64, String::new());
    loop {
        let page = runtime.block_on(store.live_documents(&after, 1000)).context("listing documents")?;
        let Some(last) = page.last() else { break };
        after.clone_from(&last.0);
        for (id, title) in page {
            let Ok(doc) = DocId::new(&id) else { continue };
            let log = &mut logs[doc.owner(cores)];
            let read = log.latest_rev(&id).and_then(|rev| {
                let text = if rev == 0 { String::new() } else { log.document_at(&id, rev)?.text() };
                Ok((rev, text))
            });
            match read {
                Ok((rev, text)) => {
                    index.put(&writer, &id, Some(&IndexedDoc { title, text, rev })).map_err(anyhow::Error::msg)?;
                    indexed += 1;
                }
                Err(e) => {
                    eprintln!("{id}: not indexed: {e}");
                    failed += 1;
                }
            }
        }
        eprint!("\r{indexed} documents indexed");
    }
    let mut writer = writer;
    writer.commit().context("committing the search index")?;
    eprintln!();
    println!(
        "reindexed {indexed} documents in {:.1} s into {}{}",
        started.elapsed().as_secs_f64(),
        search::index_dir(&config.data_dir).display(),
        if failed > 0 { format!("; {failed} could not be read (see above)") } else { String::new() }
    );
    if failed > 0 {
        bail!("{failed} documents could not be reindexed");
    }
    Ok(())
}
