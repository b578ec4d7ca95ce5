//! `tandem serve` as one node of a cluster (`[cluster] enabled = true`): the lease loop
//! (`tandem-cluster`'s `Membership`) on a thread of its own, and its `Ownership`
//! handed to the data plane's cores as their placement.
//!
//! A cluster needs shared state: the op log in PostgreSQL or ScyllaDB (every node loads any
//! document), the leases in PostgreSQL, and with accounts the metadata in PostgreSQL too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tandem_cluster::{DEFAULT_SHARDS, FeedCursors, LeaseStore, Membership, Ownership, Pace, Settings};
use tandem_net::placement::Placement;
use tracing::{info, warn};

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClusterConfig {
    /// Run as a node of a cluster.
    pub(crate) enabled: bool,
    /// This node's id: unique in the cluster, the same across its restarts (default: the
    /// advertised address).
    pub(crate) node: Option<String>,
    /// The WebSocket URL clients are sent to for documents this node serves
    /// (`ws://host:port/ws`; default: the listen address, which must then not be 0.0.0.0).
    pub(crate) advertise: Option<String>,
    /// Where the other nodes reach this one (`http://host:port`: forwarded REST calls;
    /// `https://` when the node terminates TLS itself), when not at the advertised URL (a
    /// `wss://` one, through TLS in front of the node).
    pub(crate) internal_url: Option<String>,
    /// With TLS on the nodes' ports: the certificate authorities (PEM) whose certificates
    /// this node accepts from the others when forwarding (default: only the certificate
    /// this node serves itself, for nodes that share one).
    pub(crate) internal_ca_file: Option<std::path::PathBuf>,
    /// The leases' PostgreSQL database (`--cluster-database-url`,
    /// `TANDEM_CLUSTER_DATABASE_URL`; default: the op log's with `oplog = "postgres"`, else
    /// the metadata database).
    pub(crate) database_url: Option<String>,
    /// Virtual shards: fixed for the cluster's life.
    pub(crate) shards: u16,
    /// How long a lease lasts unless renewed.
    pub(crate) lease_ttl_ms: u64,
    /// How long before a lease could expire the node stops serving its documents.
    pub(crate) margin_ms: u64,
    /// How often leases are renewed and shards rebalanced.
    pub(crate) poll_ms: u64,
    /// Most shards handed to a joining node per round.
    pub(crate) rebalance_per_round: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node: None,
            advertise: None,
            internal_url: None,
            internal_ca_file: None,
            database_url: None,
            shards: DEFAULT_SHARDS,
            lease_ttl_ms: 3000,
            margin_ms: 500,
            poll_ms: 500,
            rebalance_per_round: 32,
        }
    }
}

/// The running node: its ownership (the cores' placement) and the lease loop.
pub(crate) struct Node {
    pub(crate) ownership: Arc<Ownership>,
    stop: tokio::sync::watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

/// The cores' view of the ownership.
#[derive(Debug)]
struct Cores(Arc<Ownership>);

impl Placement for Cores {
    fn serves(&self, doc: &str, now: Instant) -> bool {
        self.0.serves_doc(doc, now)
    }

    fn owner(&self, doc: &str) -> Option<Arc<str>> {
        let shard = self.0.shard_of(doc);
        let owner = self.0.owner(shard)?;
        // The table may still name this node for a shard whose deadline passed: nobody
        // serves it until another node takes it.
        (*owner != *self.0.address() || self.0.serves(shard, Instant::now())).then_some(owner)
    }

    fn coming(&self, doc: &str, now: Instant) -> bool {
        self.0.coming_doc(doc, now)
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn swept(&self, core: u16, generation: u64) {
        self.0.swept(usize::from(core), generation);
    }

    fn internal(&self, owner: &str) -> Arc<str> {
        self.0.internal(owner)
    }
}

/// The URL clients are sent to for this node's documents.
fn advertised(cfg: &ClusterConfig, config: &crate::config::FileConfig) -> Result<String> {
    let listen = config.server.listen;
    Ok(match &cfg.advertise {
        Some(a) => a.clone(),
        None if listen.ip().is_unspecified() => {
            bail!("cluster.advertise is needed when listening on {listen}: the URL other nodes send clients to")
        }
        None if config.server.tls.cert_file.is_some() => format!("wss://{listen}/ws"),
        None => format!("ws://{listen}/ws"),
    })
}

/// This node's id when it runs as a cluster's node (`--node`, else its advertised URL).
pub(crate) fn node_id(config: &crate::config::FileConfig) -> Option<String> {
    let cfg = &config.cluster;
    if !cfg.enabled {
        return None;
    }
    cfg.node.clone().or_else(|| advertised(cfg, config).ok())
}

/// Where the other nodes reach this one: `internal_url` when given (`http://host:port`, or
/// `https://` when the node terminates TLS itself), else the advertised URL when it speaks
/// what the port speaks (`ws://` plain, `wss://` with TLS), else the listen address.
fn internal_url(
    internal: Option<&str>,
    advertise: &str,
    listen: std::net::SocketAddr,
    tls: bool,
) -> Result<Option<String>, String> {
    use tandem_net::placement::node_authority;
    let scheme = if tls { "https" } else { "http" };
    let why = if tls { "this node serves TLS on its port" } else { "the nodes speak plain HTTP to each other" };
    match internal {
        Some(u) if node_authority(u).is_some_and(|(t, _)| t == tls) && u.starts_with(scheme) => Ok(Some(u.to_owned())),
        Some(u) => Err(format!("cluster.internal_url {u:?}: expected {scheme}://host:port ({why})")),
        None if node_authority(advertise).is_some_and(|(t, _)| t == tls) => Ok(None),
        None if !listen.ip().is_unspecified() => Ok(Some(format!("{scheme}://{listen}"))),
        None => Err(format!(
            "cluster.internal_url is needed when advertising {advertise} and listening on {listen}: where the other nodes reach this one ({scheme}://host:port)"
        )),
    }
}

impl Node {
    /// The placement the cores ask.
    pub(crate) fn placement(&self) -> Arc<dyn Placement> {
        Arc::new(Cores(Arc::clone(&self.ownership)))
    }

    /// Checks the configuration of a node (before anything connects) and says what it
    /// lacks; [`Plan::join`] then joins.
    pub(crate) fn plan(cfg: &ClusterConfig, config: &crate::config::FileConfig) -> Result<Plan> {
        if cfg.shards == 0 {
            bail!("cluster.shards must be at least 1 (1024 by default, fixed for the cluster's life)");
        }
        let (listen, tls) = (config.server.listen, config.server.tls.cert_file.is_some());
        let advertise = advertised(cfg, config)?;
        let internal =
            internal_url(cfg.internal_url.as_deref(), &advertise, listen, tls).map_err(anyhow::Error::msg)?;
        let node = cfg.node.clone().unwrap_or_else(|| advertise.clone());
        let url = database_url(cfg, config)?;
        warn_about_sharing(config);
        let settings = Settings {
            lease_ttl: Duration::from_millis(cfg.lease_ttl_ms),
            margin: Duration::from_millis(cfg.margin_ms),
            poll: Duration::from_millis(cfg.poll_ms),
            pace: Pace { release: cfg.rebalance_per_round.max(1), ..Pace::default() },
            internal,
            ..Settings::new(&node, &advertise)
        };
        settings.validate().map_err(anyhow::Error::msg)?;
        let ownership = Ownership::new(&node, &advertise, cfg.shards, config.server.resolved_cores());
        Ok(Plan { ownership, settings, url, shards: cfg.shards })
    }

    /// Leaves: stops serving, waits for the cores to drop every document (their appends
    /// durable), hands every lease back and leaves the table. Call before the data plane
    /// stops: the cores do the dropping.
    pub(crate) fn leave(self) {
        let _ = self.stop.send(true);
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(Duration::from_secs(15)) {
            warn!("leaving the cluster took over 15 s: the remaining leases expire instead");
        }
    }
}

/// A node whose configuration was checked, before it joins.
pub(crate) struct Plan {
    ownership: Arc<Ownership>,
    settings: Settings,
    /// The leases' database.
    url: String,
    shards: u16,
}

impl Plan {
    /// The change feed's cursors in the cluster's database (connected on `runtime`, where the
    /// feed's publisher runs).
    pub(crate) fn cursors(&self, runtime: &tokio::runtime::Handle) -> Result<SharedCursors> {
        let cursors = runtime
            .block_on(LeaseStore::feed_cursors(&self.url, Duration::from_secs(10)))
            .with_context(|| format!("joining the cluster (the change feed's cursors, in {})", redact(&self.url)))?;
        Ok(SharedCursors(cursors))
    }

    /// Joins the cluster and starts renewing, on a thread of its own. The node serves nothing
    /// until its first round takes shards.
    pub(crate) fn join(self) -> Result<Node> {
        let Self { ownership, settings, url, shards } = self;
        let (node, advertise) = (settings.node.clone(), settings.address.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let (joined_tx, joined) = std::sync::mpsc::sync_channel(1);
        let own = Arc::clone(&ownership);
        // The lease loop gets a thread and a runtime of its own, at the normal priority: the
        // control plane's threads run at nice +19 beside whatever else it runs (the
        // in-process workers), and every hand-over and renewal waits on this loop.
        std::thread::Builder::new()
            .name("tandem-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = joined_tx.send(Err(anyhow::Error::new(e).context("the lease loop's runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let joined = async {
                        let store = LeaseStore::connect(&url, shards, Duration::from_secs(10)).await?;
                        Membership::join(store, settings, own).await
                    };
                    match joined.await {
                        Ok(membership) => {
                            let _ = joined_tx.send(Ok(()));
                            membership.run(stop_rx).await;
                            let _ = done_tx.send(());
                        }
                        Err(e) => {
                            let why = format!("joining the cluster (leases in {})", redact(&url));
                            let _ = joined_tx.send(Err(anyhow::Error::new(e).context(why)));
                        }
                    }
                });
            })
            .context("starting the lease loop's thread")?;
        joined.recv().context("the lease loop's thread stopped")??;
        info!(node = %node, advertise = %advertise, shards, "cluster node started");
        Ok(Node { ownership, stop, done })
    }
}

/// How long a node that left waits before it stops. Its teardown (its memory, its
/// connections, and the database's server processes that exit with them) took a third of
/// the CPU in the 60 ms after a SIGTERM on the 2-CPU machine of results/2026-11-30-cluster,
/// while the next owners were taking its documents over; after this pause the hand-over is
/// done (the next owners hold the leases within tens of milliseconds). Meanwhile the node
/// sends whoever connects to the documents' owners.
pub(crate) const LINGER: Duration = Duration::from_millis(500);

/// The cluster's `/metrics` lines.
pub(crate) fn metrics(own: &Ownership) -> String {
    {
        let served = own.served(Instant::now());
        format!(
            "# HELP tandem_cluster_shards_served Shards this node serves now.\n# TYPE tandem_cluster_shards_served gauge\n\
             tandem_cluster_shards_served {served}\n\
             # HELP tandem_cluster_shards Virtual shards in the cluster.\n# TYPE tandem_cluster_shards gauge\n\
             tandem_cluster_shards {}\n\
             # HELP tandem_cluster_generation Times this node stopped serving shards.\n# TYPE tandem_cluster_generation counter\n\
             tandem_cluster_generation {}\n",
            own.shards(),
            own.generation()
        )
    }
}

fn redact(url: &str) -> String {
    tandem_storage::redacted(url)
}

/// What a cluster's node shares only partly with the configuration given.
fn warn_about_sharing(config: &crate::config::FileConfig) {
    if config.server.storage.blobs != tandem_net::BlobsKind::S3 {
        warn!(
            "cluster with blobs = \"local\": uploads and exports are on the node that made them (use blobs = \"s3\")"
        );
    }
    if config.events.backend != crate::events::Backend::Kafka && !config.events.workers.is_empty() {
        warn!(
            "cluster with the in-process bus: each node's workers see only the edits of the documents it served and the events its relay took, so search on a node misses the others' documents (use [events] backend = \"kafka\")"
        );
    }
}

/// Where the leases live, and whether the rest of the configuration can run as a cluster.
fn database_url(cfg: &ClusterConfig, config: &crate::config::FileConfig) -> Result<String> {
    let st = &config.server.storage;
    if !st.oplog.is_shared() {
        bail!(
            "a cluster needs an op log every node reads: storage.oplog = \"postgres\" or \"scylla\" (not {:?})",
            st.oplog
        );
    }
    let metadata = config.control.database_url.clone().unwrap_or_default();
    if config.auth == crate::config::AuthMode::Accounts && !metadata.starts_with("postgres") {
        bail!(
            "a cluster with accounts needs the metadata in PostgreSQL (--database-url postgres://...), shared by every node"
        );
    }
    let oplog = (st.oplog == tandem_net::OplogKind::Postgres).then(|| st.postgres.resolved_url());
    cfg.database_url
        .clone()
        .or(oplog)
        .or_else(|| metadata.starts_with("postgres").then_some(metadata))
        .context("cluster.database_url (or TANDEM_CLUSTER_DATABASE_URL): the PostgreSQL database of the leases")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, FileConfig};

    #[test]
    fn only_shareable_configurations_make_a_cluster() {
        let cfg = ClusterConfig { enabled: true, ..ClusterConfig::default() };
        let mut config = FileConfig::default();
        let e = database_url(&cfg, &config).unwrap_err().to_string();
        assert!(e.contains("oplog"), "{e}");
        config.server.storage.oplog = tandem_net::OplogKind::Postgres;
        let e = database_url(&cfg, &config).unwrap_err().to_string();
        assert!(e.contains("metadata in PostgreSQL"), "{e}");
        config.auth = AuthMode::Dev;
        // The leases default to the op log's database (or the variable naming it).
        let url = database_url(&cfg, &config).unwrap();
        assert!(url.starts_with("postgres://"), "{url}");
        let named = ClusterConfig { database_url: Some("postgres://leases/x".into()), ..cfg };
        assert_eq!(database_url(&named, &config).unwrap(), "postgres://leases/x");
    }

    #[test]
    fn a_node_is_checked_before_it_connects() {
        // Nothing listens on port 1: a plan that tried to connect would fail on that instead.
        let cfg = ClusterConfig {
            enabled: true,
            database_url: Some("postgres://postgres@127.0.0.1:1/leases".into()),
            ..ClusterConfig::default()
        };
        let mut config = FileConfig { auth: AuthMode::Dev, ..FileConfig::default() };
        config.server.storage.oplog = tandem_net::OplogKind::Postgres;
        config.server.listen = "127.0.0.1:8080".parse().unwrap();
        let plan = Node::plan(&cfg, &config).unwrap();
        assert_eq!(plan.settings.address, "ws://127.0.0.1:8080/ws");
        assert_eq!(plan.url, "postgres://postgres@127.0.0.1:1/leases");
        let e = Node::plan(&ClusterConfig { shards: 0, ..cfg.clone() }, &config).err().unwrap().to_string();
        assert!(e.contains("cluster.shards must be at least 1"), "{e}");
        config.server.listen = "0.0.0.0:8080".parse().unwrap();
        let e = Node::plan(&cfg, &config).err().unwrap().to_string();
        assert!(e.contains("cluster.advertise is needed"), "{e}");
    }

    #[test]
    fn the_other_nodes_reach_a_node_at_its_internal_url() {
        let local: std::net::SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        // A plain ws:// advertised URL is reached as it is.
        assert_eq!(internal_url(None, "ws://tandem-0.internal:8080/ws", any, false), Ok(None));
        // Behind TLS: the listen address, or the URL given.
        assert_eq!(
            internal_url(None, "wss://docs.example.com/ws", local, false),
            Ok(Some("http://10.0.0.5:8080".into()))
        );
        let e = internal_url(None, "wss://docs.example.com/ws", any, false).unwrap_err();
        assert!(e.contains("cluster.internal_url is needed"), "{e}");
        assert_eq!(
            internal_url(Some("http://tandem-0.tandem-nodes:8080"), "wss://a.example.com/ws", any, false),
            Ok(Some("http://tandem-0.tandem-nodes:8080".into()))
        );
        for bad in ["https://a:1", "ws://a:1/ws", "http://a"] {
            let e = internal_url(Some(bad), "wss://a.example.com/ws", any, false).unwrap_err();
            assert!(e.contains("expected http://"), "{e}");
        }
        // Terminating TLS itself: a wss:// advertised URL is reached as it is (https), else
        // an https:// one; plain HTTP is not what the port speaks.
        assert_eq!(internal_url(None, "wss://tandem-0.internal:8443/ws", any, true), Ok(None));
        assert_eq!(
            internal_url(None, "wss://docs.example.com/ws", local, true),
            Ok(Some("https://10.0.0.5:8080".into()))
        );
        assert_eq!(
            internal_url(Some("https://tandem-0.tandem-nodes:8443"), "wss://a.example.com/ws", any, true),
            Ok(Some("https://tandem-0.tandem-nodes:8443".into()))
        );
        let e = internal_url(Some("http://a:1"), "wss://a.example.com/ws", any, true).unwrap_err();
        assert!(e.contains("expected https://") && e.contains("serves TLS"), "{e}");
    }
}

/// The change feed's cursors in the cluster's database, as the feed's publisher keeps them.
#[derive(Clone, Debug)]
pub(crate) struct SharedCursors(FeedCursors);

impl tandem_events::feed::Cursors for SharedCursors {
    async fn save(&self, cursors: &[(String, u64)]) -> std::result::Result<(), String> {
        self.0.save(cursors).await.map_err(|e| e.to_string())
    }

    async fn get(&self, docs: &[String]) -> std::result::Result<Vec<(String, u64)>, String> {
        self.0.get(docs).await.map_err(|e| e.to_string())
    }
}
