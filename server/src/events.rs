//! The asynchronous half inside `tandem serve`: the event bus (in process, a durable log in
//! `events.db` in the data directory), the outbox relay, and the workers, all on the control
//! plane's runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tandem_events::feed::{FeedPublisher, FeedTask};
use tandem_events::relay::{Relay, RelayStats};
use tandem_events::{Bus, local::LocalBus};
use tandem_workers::notify::{MailConfig, Mailer, Notifications};
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: Backend::InProcess,
            kafka: tandem_events::KafkaConfig::default(),
            capacity: tandem_events::local::DEFAULT_CAPACITY,
            relay_poll_ms: 250,
            change_feed: true,
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

/// The bus and the workers' counters; the tasks start with [`Events::start`].
pub(crate) struct Events {
    bus: Bus,
    relay: Arc<RelayStats>,
    notifications: Arc<WorkerStats>,
    feed: Option<(FeedPublisher, Option<FeedTask>)>,
}

impl Events {
    /// Opens the bus.
    pub(crate) fn open(control: &tandem_control::ControlPlane, config: &EventsConfig, data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("events.db");
        let runtime = control.runtime();
        let bus = match config.backend {
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
        };
        let feed = if config.change_feed {
            let cursors =
                runtime.block_on(control.app().store.feed_cursors()).context("reading the change feed's cursors")?;
            let (publisher, task) = FeedPublisher::new(cursors);
            Some((publisher, Some(task)))
        } else {
            None
        };
        Ok(Self { bus, relay: Arc::default(), notifications: WorkerStats::new(tandem_workers::notify::GROUP), feed })
    }

    /// The change feed's sink for the storage threads (none when it is off).
    pub(crate) fn feed_sink(&self) -> Option<Arc<dyn tandem_net::feed::FeedSink>> {
        self.feed.as_ref().map(|(p, _)| Arc::new(p.clone()) as Arc<dyn tandem_net::feed::FeedSink>)
    }

    /// What `/metrics` adds for the bus and the workers.
    pub(crate) fn metrics(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let (bus, relay, workers) = (self.bus.clone(), Arc::clone(&self.relay), vec![Arc::clone(&self.notifications)]);
        let feed = self.feed.as_ref().map(|(p, _)| p.stats());
        Arc::new(move || {
            use std::fmt::Write as _;
            use std::sync::atomic::Ordering::Relaxed;
            let mut out = tandem_workers::render_metrics(&workers, &bus, Some(relay.published.load(Relaxed)));
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

    /// Starts the relay and the workers; `link_base` starts the links in emails.
    pub(crate) fn start(
        &mut self,
        control: &tandem_control::ControlPlane,
        events: &EventsConfig,
        mail: &MailConfig,
        data_dir: &Path,
        link_base: &str,
    ) -> Result<()> {
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
            runtime.spawn(task.run(self.bus.clone(), store.clone()));
        }
        let mailer = Mailer::new(mail, data_dir).map_err(anyhow::Error::msg).context("[mail]")?;
        let bus = match &self.bus {
            Bus::Local(_) => format!("in-process bus in {}", data_dir.join("events.db").display()),
            other => format!("{} bus", other.backend()),
        };
        let feed = if self.feed.is_some() { "on" } else { "off" };
        info!("events: {bus}, change feed {feed}; emails go to {}", mailer.describe());
        let worker = Notifications::new(mailer, store.clone(), mail, link_base).map_err(anyhow::Error::msg)?;
        runtime.spawn(tandem_workers::run(
            worker,
            self.bus.clone(),
            store,
            Arc::clone(&self.notifications),
            RetryPolicy::default(),
        ));
        Ok(())
    }
}
