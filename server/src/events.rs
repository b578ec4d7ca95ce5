//! The asynchronous half: the event bus (in process, a durable log in `events.db` in the data
//! directory; or Kafka), the outbox relay, the change feed and the workers (notifications,
//! analytics, search). `tandem serve` runs them on the control plane's runtime; `tandem
//! worker` runs chosen workers in a process of their own (Kafka only).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tandem_events::feed::{FeedPublisher, FeedTask};
use tandem_events::relay::{Relay, RelayStats};
use tandem_events::{Bus, local::LocalBus};
use tandem_workers::analytics::{self, AnalyticsStats};
use tandem_workers::notify::{MailConfig, Mailer, Notifications};
use tandem_workers::search::{self, SearchIndex, SearchStats};
use tandem_workers::{RetryPolicy, WorkerStats};
use tracing::info;

/// `[events]` in the configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EventsConfig {
    /// `in-process` (a durable log in the data directory) or `kafka` (`[events.kafka]`; a
    /// build with the `kafka` feature).
    pub(crate) backend: Backend,
    /// The Kafka backend.
    pub(crate) kafka: tandem_events::KafkaConfig,
    /// In process: messages a topic holds for its slowest consumer group before publishers wait.
    pub(crate) capacity: u64,
    /// How often the relay looks for outbox rows when nothing woke it, ms.
    pub(crate) relay_poll_ms: u64,
    /// Publish every durable batch of ops to `document-edits` (the change feed).
    pub(crate) change_feed: bool,
    /// The workers `tandem serve` runs itself (leave out the ones `tandem worker` processes
    /// run).
    pub(crate) workers: Vec<WorkerKind>,
}

/// A worker.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum WorkerKind {
    /// Emails (`notifications`).
    Notifications,
    /// Activity aggregates (`document-edits` and `analytics`).
    Analytics,
    /// The full-text index (`document-edits`).
    Search,
    /// PDF and DOCX files (`exports`).
    Exports,
}

impl WorkerKind {
    pub(crate) const ALL: [Self; 4] = [Self::Notifications, Self::Analytics, Self::Search, Self::Exports];

    fn name(self) -> &'static str {
        match self {
            Self::Notifications => "notifications",
            Self::Analytics => "analytics",
            Self::Search => "search",
            Self::Exports => "exports",
        }
    }
}

/// What the export worker needs: the files (blob store, links), the token keys it reads
/// documents with, and the server it reads them from.
pub(crate) struct ExportDeps {
    pub(crate) files: Arc<tandem_control::files::Files>,
    pub(crate) keys: Arc<tandem_control::tokens::Keys>,
    pub(crate) server: std::net::SocketAddr,
    /// The cores, when the worker runs inside `tandem serve` (requesters' sessions are told).
    pub(crate) data: Option<tandem_net::DataPlane>,
    /// With TLS on the port: how to reach it (trusting the certificate it serves).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: Backend::InProcess,
            kafka: tandem_events::KafkaConfig::default(),
            capacity: tandem_events::local::DEFAULT_CAPACITY,
            relay_poll_ms: 250,
            change_feed: true,
            workers: WorkerKind::ALL.to_vec(),
        }
    }
}

/// Which bus.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Backend {
    /// The durable in-process log.
    #[default]
    InProcess,
    /// Kafka.
    Kafka,
}

/// The workers' counters.
#[derive(Clone)]
pub(crate) struct WorkerMetrics {
    workers: Vec<Arc<WorkerStats>>,
    analytics: Arc<AnalyticsStats>,
    search: Arc<SearchStats>,
    index: Option<Arc<SearchIndex>>,
    /// The search worker's consumer group (see [`search_group`]).
    search_group: &'static str,
}

/// The search worker's consumer group: `search`, or in a cluster `search.<node>`: every node
/// keeps an index of its own that must see the whole change feed (the other workers' effects
/// are in the shared database and blob store, so a cluster's nodes share their groups).
pub(crate) fn search_group(config: &crate::config::FileConfig) -> &'static str {
    match crate::cluster::node_id(config) {
        // Once per process: the group lives as long as the worker.
        Some(node) => Box::leak(format!("{}.{node}", search::GROUP).into_boxed_str()),
        None => search::GROUP,
    }
}

impl WorkerMetrics {
    /// Counters for the workers `kinds` (made before they start, so that `/metrics` can be
    /// wired first); the search worker reads in `search_group`.
    pub(crate) fn new(kinds: &[WorkerKind], index: Option<Arc<SearchIndex>>, search_group: &'static str) -> Self {
        let groups = |k: &WorkerKind| match k {
            WorkerKind::Notifications => vec![tandem_workers::notify::GROUP],
            WorkerKind::Analytics => vec![analytics::EDITS_GROUP, analytics::USAGE_GROUP],
            WorkerKind::Search => vec![search_group],
            WorkerKind::Exports => vec![tandem_workers::export::GROUP],
        };
        let mut kinds = kinds.to_vec();
        kinds.sort_by_key(|k| WorkerKind::ALL.iter().position(|a| a == k));
        kinds.dedup();
        Self {
            workers: kinds.iter().flat_map(groups).map(WorkerStats::new).collect(),
            analytics: Arc::default(),
            search: Arc::default(),
            index,
            search_group,
        }
    }

    fn stats(&self, group: &str) -> Arc<WorkerStats> {
        let found = self.workers.iter().find(|w| w.group == group);
        Arc::clone(found.expect("counters are made for every configured worker"))
    }

    /// The workers' and the bus's numbers in Prometheus's text format.
    pub(crate) fn render(&self, bus: &Bus, relayed: Option<u64>) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = tandem_workers::render_metrics(&self.workers, bus, relayed);
        if self.workers.iter().any(|w| w.group == analytics::EDITS_GROUP) {
            out.push_str(&self.analytics.render());
        }
        if let Some(index) = &self.index {
            let _ = write!(
                out,
                "# HELP tandem_search_documents Documents in the search index.\n\
                 # TYPE tandem_search_documents gauge\ntandem_search_documents {}\n\
                 # HELP tandem_search_commits_total Commits to the search index.\n\
                 # TYPE tandem_search_commits_total counter\ntandem_search_commits_total {}\n",
                index.documents(),
                self.search.commits.load(Relaxed),
            );
            let (p50, p99, max, n) = self.search.lag();
            let _ = write!(
                out,
                "# HELP tandem_search_lag_ms Time from an op's commit to searchable, ms (since start).\n\
                 # TYPE tandem_search_lag_ms summary\ntandem_search_lag_ms{{quantile=\"0.5\"}} {p50}\n\
                 tandem_search_lag_ms{{quantile=\"0.99\"}} {p99}\ntandem_search_lag_ms{{quantile=\"1\"}} {max}\n\
                 tandem_search_lag_ms_count {n}\n"
            );
        }
        out
    }
}

/// Starts `kinds` on `runtime`, reading `bus` and writing to `store`; returns how emails go.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_workers(
    runtime: &tokio::runtime::Handle,
    kinds: &[WorkerKind],
    bus: &Bus,
    store: &tandem_control::Store,
    mail: &MailConfig,
    data_dir: &Path,
    link_base: &str,
    exports: Option<&ExportDeps>,
    metrics: &mut WorkerMetrics,
) -> Result<Option<String>> {
    // The SMTP pool spawns its tasks when built: inside the runtime it will run on.
    let _runtime = runtime.enter();
    let mut mailer_said = None;
    let policy = RetryPolicy::default();
    for kind in WorkerKind::ALL.into_iter().filter(|k| kinds.contains(k)) {
        match kind {
            WorkerKind::Notifications => {
                let mailer = Mailer::new(mail, data_dir).map_err(anyhow::Error::msg).context("[mail]")?;
                mailer_said = Some(mailer.describe());
                let worker = Notifications::new(mailer, store.clone(), mail, link_base).map_err(anyhow::Error::msg)?;
                let stats = metrics.stats(tandem_workers::notify::GROUP);
                runtime.spawn(tandem_workers::run(worker, bus.clone(), store.clone(), stats, policy));
            }
            WorkerKind::Analytics => {
                let edits = analytics::Edits::new(store.clone(), Arc::clone(&metrics.analytics));
                let stats = metrics.stats(analytics::EDITS_GROUP);
                runtime.spawn(tandem_workers::run(edits, bus.clone(), store.clone(), stats, policy));
                let usage = analytics::Usage::new(store.clone(), Arc::clone(&metrics.analytics));
                let stats = metrics.stats(analytics::USAGE_GROUP);
                runtime.spawn(tandem_workers::run(usage, bus.clone(), store.clone(), stats, policy));
            }
            WorkerKind::Search => {
                let index = match &metrics.index {
                    Some(index) => Arc::clone(index),
                    None => {
                        let index = SearchIndex::open(&search::index_dir(data_dir)).map_err(anyhow::Error::msg)?;
                        metrics.index = Some(Arc::clone(&index));
                        index
                    }
                };
                let worker = search::Search::new(index, Arc::clone(&metrics.search))
                    .map_err(anyhow::Error::msg)?
                    .in_group(metrics.search_group);
                let stats = metrics.stats(metrics.search_group);
                runtime.spawn(tandem_workers::run(worker, bus.clone(), store.clone(), stats, policy));
            }
            WorkerKind::Exports => {
                let deps = exports.context("the export worker needs the blob store and the token keys")?;
                let worker = tandem_workers::export::Exporter::new(
                    store.clone(),
                    Arc::clone(&deps.files),
                    Arc::clone(&deps.keys),
                    deps.server,
                    deps.data.clone(),
                )
                .with_tls(deps.tls.clone());
                let stats = metrics.stats(tandem_workers::export::GROUP);
                runtime.spawn(tandem_workers::run(worker, bus.clone(), store.clone(), stats, policy));
            }
        }
    }
    Ok(mailer_said)
}

/// The address to reach a server listening on `addr` from this machine (`0.0.0.0` and
/// `::` mean every interface: loopback is one).
pub(crate) fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Opens the configured bus.
pub(crate) fn open_bus(runtime: &tokio::runtime::Handle, config: &EventsConfig, data_dir: &Path) -> Result<Bus> {
    let path = data_dir.join("events.db");
    Ok(match config.backend {
        Backend::InProcess => Bus::Local(
            runtime
                .block_on(LocalBus::open(&path, config.capacity))
                .with_context(|| format!("opening the event log {}", path.display()))?,
        ),
        #[cfg(feature = "kafka")]
        Backend::Kafka => Bus::Kafka(
            runtime
                .block_on(tandem_events::kafka::KafkaBus::connect(config.kafka.clone()))
                .with_context(|| format!("connecting to Kafka at {}", config.kafka.brokers))?,
        ),
        #[cfg(not(feature = "kafka"))]
        Backend::Kafka => anyhow::bail!("[events] backend = \"kafka\" needs a build with the `kafka` feature"),
    })
}

/// The bus and the workers' counters; the tasks start with [`Events::start`].
pub(crate) struct Events {
    bus: Bus,
    relay: Arc<RelayStats>,
    metrics: WorkerMetrics,
    feed: Option<(FeedPublisher, Option<FeedTask>)>,
    /// Where the feed's cursors are kept on a cluster's node (else in the metadata store).
    cursors: Option<crate::cluster::SharedCursors>,
}

impl Events {
    /// Opens the bus and the search index (queries are served from it whichever process
    /// writes it). `cursors`: on a cluster's node, the feed's cursors, which are the
    /// cluster's.
    pub(crate) fn open(
        control: &tandem_control::ControlPlane,
        config: &EventsConfig,
        data_dir: &Path,
        search_group: &'static str,
        cursors: Option<crate::cluster::SharedCursors>,
    ) -> Result<Self> {
        let runtime = control.runtime();
        let bus = open_bus(runtime, config, data_dir)?;
        let feed = if config.change_feed && cursors.is_some() {
            // A cluster's nodes share the cursors: each document's is looked up when it is
            // loaded here (see `tandem_events::feed`).
            let (publisher, task) = FeedPublisher::shared();
            Some((publisher, Some(task)))
        } else if config.change_feed {
            let cursors =
                runtime.block_on(control.app().store.feed_cursors()).context("reading the change feed's cursors")?;
            let (publisher, task) = FeedPublisher::new(cursors);
            Some((publisher, Some(task)))
        } else {
            None
        };
        let index = SearchIndex::open(&search::index_dir(data_dir)).map_err(anyhow::Error::msg)?;
        control.app().set_search(Arc::clone(&index) as Arc<dyn tandem_control::search::SearchIndex>);
        let metrics = WorkerMetrics::new(&config.workers, Some(index), search_group);
        Ok(Self { bus, relay: Arc::default(), metrics, feed, cursors })
    }

    /// The change feed's sink for the storage threads (none when it is off).
    pub(crate) fn feed_sink(&self) -> Option<Arc<dyn tandem_net::feed::FeedSink>> {
        self.feed.as_ref().map(|(p, _)| Arc::new(p.clone()) as Arc<dyn tandem_net::feed::FeedSink>)
    }

    /// What `/metrics` adds for the bus and the workers (call after [`Events::start`]).
    pub(crate) fn metrics(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let (bus, relay, metrics) = (self.bus.clone(), Arc::clone(&self.relay), self.metrics.clone());
        let feed = self.feed.as_ref().map(|(p, _)| p.stats());
        Arc::new(move || {
            use std::fmt::Write as _;
            use std::sync::atomic::Ordering::Relaxed;
            let mut out = metrics.render(&bus, Some(relay.published.load(Relaxed)));
            if let Some(f) = &feed {
                let _ = write!(
                    out,
                    "# HELP tandem_feed_ops_published_total Ops published to document-edits.\n\
                     # TYPE tandem_feed_ops_published_total counter\ntandem_feed_ops_published_total {}\n\
                     # HELP tandem_feed_events_published_total Events published to document-edits.\n\
                     # TYPE tandem_feed_events_published_total counter\ntandem_feed_events_published_total {}\n\
                     # HELP tandem_feed_refused_total Feed offers refused (queue full: caught up from the op log).\n\
                     # TYPE tandem_feed_refused_total counter\ntandem_feed_refused_total {}\n",
                    f.ops.load(Relaxed),
                    f.events.load(Relaxed),
                    f.refused.load(Relaxed)
                );
            }
            out
        })
    }

    /// Starts the relay, the change feed and the configured workers; `link_base` starts the
    /// links in emails.
    pub(crate) fn start(
        &mut self,
        control: &tandem_control::ControlPlane,
        config: &crate::config::FileConfig,
        link_base: &str,
        exports: &ExportDeps,
    ) -> Result<()> {
        let (events, mail, data_dir) = (&config.events, &config.mail, config.data_dir.as_path());
        let store = control.app().store.clone();
        let runtime = control.runtime();
        let relay = Relay::with_stats(
            store.clone(),
            self.bus.clone(),
            Arc::default(),
            Duration::from_millis(events.relay_poll_ms.max(10)),
            Arc::clone(&self.relay),
        );
        runtime.spawn(relay.run());
        if let Some(task) = self.feed.as_mut().and_then(|(_, task)| task.take()) {
            match self.cursors.take() {
                Some(shared) => runtime.spawn(task.run(self.bus.clone(), shared)),
                None => runtime.spawn(task.run(self.bus.clone(), store.clone())),
            };
        }
        let emails = spawn_workers(
            runtime,
            &events.workers,
            &self.bus,
            &store,
            mail,
            data_dir,
            link_base,
            Some(exports),
            &mut self.metrics,
        )?;
        let bus = match &self.bus {
            Bus::Local(_) => format!("in-process bus in {}", data_dir.join("events.db").display()),
            other => format!("{} bus", other.backend()),
        };
        let feed = if self.feed.is_some() { "on" } else { "off" };
        let workers: Vec<&str> = events.workers.iter().map(|w| w.name()).collect();
        let workers = if workers.is_empty() { "none (run `tandem worker`)".to_owned() } else { workers.join(", ") };
        let emails = emails.map(|e| format!("; emails go to {e}")).unwrap_or_default();
        info!("events: {bus}, change feed {feed}; workers here: {workers}{emails}");
        Ok(())
    }
}
