//! `tandem serve`'s configuration: defaults, then a TOML file, then `TANDEM_*` environment
//! variables, then flags (each later source overrides the earlier).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use tandem_net::ServerConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Where Tandem keeps its data (a lock file guards it against a second server).
    pub(crate) data_dir: PathBuf,
    /// Log filter (`info`, `debug`, `tandem_net=debug`, ...).
    pub(crate) log: String,
    /// How clients sign in: `accounts` (tokens from the REST API, roles checked on every
    /// message) or `dev` (the `dev_secret` or any token, no roles: benchmarks only).
    pub(crate) auth: AuthMode,
    /// The data plane.
    pub(crate) server: ServerConfig,
    /// The control plane: accounts, documents, roles, the REST API.
    pub(crate) control: tandem_control::ControlConfig,
    /// The event bus and the outbox relay.
    pub(crate) events: crate::events::EventsConfig,
    /// Email (the notification worker).
    pub(crate) mail: tandem_workers::notify::MailConfig,
    /// Running as one node of a cluster.
    pub(crate) cluster: crate::cluster::ClusterConfig,
    /// OpenTelemetry spans over OTLP.
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
}

/// How clients sign in.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    /// Accounts and access tokens; every message checked against the document's roles.
    #[default]
    Accounts,
    /// The dev secret (or any token when none is set); nobody's roles are checked.
    Dev,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tandem-data"),
            log: "info".into(),
            auth: AuthMode::Accounts,
            server: ServerConfig::default(),
            control: tandem_control::ControlConfig::default(),
            events: crate::events::EventsConfig::default(),
            mail: tandem_workers::notify::MailConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
        }
    }
}

/// `tandem serve` options. Each flag can also be set with the `TANDEM_*` variable shown, or
/// in the TOML file given with `--config` (the `[server]` table, `[server.limits]` for the
/// document limits).
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "TANDEM_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TANDEM_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./tandem-data].
    #[arg(long, env = "TANDEM_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Worker threads, one per core; 0 for one per available core [default: 0].
    #[arg(long, env = "TANDEM_CORES", value_name = "N")]
    cores: Option<usize>,
    /// Pin each worker thread to its core [default: false].
    #[arg(long, env = "TANDEM_PIN_CORES", value_name = "BOOL")]
    pin_cores: Option<bool>,
    /// Log filter, e.g. info or tandem_net=debug [default: info].
    #[arg(long, env = "TANDEM_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Most connections at once [default: 100000].
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Largest WebSocket frame accepted, bytes [default: 4194304].
    #[arg(long, env = "TANDEM_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: Option<usize>,
    /// Largest WebSocket message accepted, bytes [default: 4194304].
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// Bytes queued per connection before it is closed as a slow reader (4030) [default: 8388608].
    #[arg(long, env = "TANDEM_SEND_QUEUE_BYTES", value_name = "BYTES")]
    send_queue_bytes: Option<usize>,
    /// Time for the HTTP handshake, and then for hello, ms [default: 10000].
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    handshake_timeout_ms: Option<u64>,
    /// Ping after this long without a frame; close after twice this (4008), ms [default: 30000].
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT_MS", value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Messages per second per connection, bursts of twice that; over it: close 4029 [default: 200].
    #[arg(long, env = "TANDEM_MAX_MESSAGES_PER_S", value_name = "N")]
    max_messages_per_s: Option<u32>,
    /// Documents open at once per connection [default: 64].
    #[arg(long, env = "TANDEM_MAX_OPEN_DOCS", value_name = "N")]
    max_open_docs: Option<usize>,
    /// Documents in memory per core; at the bound the one idle longest is evicted [default: 100000].
    #[arg(long, env = "TANDEM_MAX_DOCS_PER_CORE", value_name = "N")]
    max_docs_per_core: Option<usize>,
    /// Evict a document nobody has had open for this long (it reloads from the op log), seconds [default: 60].
    #[arg(long, env = "TANDEM_EVICT_IDLE_S", value_name = "SECONDS")]
    evict_idle_s: Option<u64>,
    /// Transform steps per second one connection may spend on one core's documents, bursts of twice that [default: 1000000].
    #[arg(long, env = "TANDEM_MAX_TRANSFORM_STEPS_PER_S", value_name = "N")]
    max_transform_steps_per_s: Option<u32>,
    /// Presence reaches each subscriber at most once per this many ms per document [default: 50].
    #[arg(long, env = "TANDEM_PRESENCE_INTERVAL_MS", value_name = "MS")]
    presence_interval_ms: Option<u64>,
    /// Allowed Origin values for the WebSocket upgrade, comma-separated; empty allows any.
    #[arg(long, env = "TANDEM_ALLOWED_ORIGINS", value_name = "LIST", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// How clients sign in: accounts (REST sign-in, roles checked on every message) or dev (benchmarks: --dev-secret or any token, no roles) [default: accounts].
    #[arg(long, env = "TANDEM_AUTH", value_name = "MODE", value_parser = parse_auth)]
    auth: Option<AuthMode>,
    /// With --auth dev: the secret hello tokens must equal; unset accepts any token.
    #[arg(long, env = "TANDEM_DEV_SECRET", value_name = "SECRET")]
    dev_secret: Option<String>,
    /// Run as one node of a cluster (leases in PostgreSQL; needs --oplog postgres or scylla) [default: false].
    #[arg(long, env = "TANDEM_CLUSTER", value_name = "BOOL")]
    cluster: Option<bool>,
    /// With --cluster: this node's id, unique and stable across restarts [default: the advertised URL].
    #[arg(long, env = "TANDEM_NODE", value_name = "ID")]
    node: Option<String>,
    /// With --cluster: the WebSocket URL clients are sent to for this node's documents [default: ws://LISTEN/ws].
    #[arg(long, env = "TANDEM_ADVERTISE", value_name = "URL")]
    advertise: Option<String>,
    /// With --cluster: where the other nodes reach this one, http://HOST:PORT [default: the advertised URL's host when it is ws://, else http://LISTEN].
    #[arg(long, env = "TANDEM_INTERNAL_URL", value_name = "URL")]
    internal_url: Option<String>,
    /// With --cluster: the leases' PostgreSQL database [default: the op log's, else the metadata database].
    #[arg(long, env = "TANDEM_CLUSTER_DATABASE_URL", value_name = "URL")]
    cluster_database_url: Option<String>,
    /// With --cluster: how long a shard's lease lasts unless renewed, ms [default: 3000].
    #[arg(long, env = "TANDEM_LEASE_TTL_MS", value_name = "MS")]
    lease_ttl_ms: Option<u64>,
    /// With --cluster: stop serving a shard this long before its lease could expire, ms [default: 500].
    #[arg(long, env = "TANDEM_LEASE_MARGIN_MS", value_name = "MS")]
    lease_margin_ms: Option<u64>,
    /// With --cluster: renew leases and rebalance this often, ms [default: 500].
    #[arg(long, env = "TANDEM_LEASE_POLL_MS", value_name = "MS")]
    lease_poll_ms: Option<u64>,
    /// Export spans of REST requests across nodes over OTLP/HTTP to this collector, http://HOST:PORT [default: OTEL_EXPORTER_OTLP_ENDPOINT, else none].
    #[arg(long, env = "TANDEM_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Metadata database: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB [default: sqlite://DATA_DIR/tandem.db].
    #[arg(long, env = "TANDEM_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Serve HTTPS and WSS on the port with this certificate chain (PEM; with --tls-key), reloaded when the file changes.
    #[arg(long, env = "TANDEM_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TANDEM_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Mark cookies Secure (clients reach Tandem over HTTPS; always with --tls-cert) [default: false].
    #[arg(long, env = "TANDEM_SECURE_COOKIES", value_name = "BOOL")]
    secure_cookies: Option<bool>,
    /// The browser editor's build, served at / [default: web/app/dist when it is there].
    #[arg(long, env = "TANDEM_WEB_DIR", value_name = "DIR")]
    web_dir: Option<std::path::PathBuf>,
    /// Messages each core's inbox holds [default: 65536].
    #[arg(long, env = "TANDEM_INBOX_CAPACITY", value_name = "N")]
    inbox_capacity: Option<usize>,
    /// Messages held for another core's full inbox before its connections are closed (1013) [default: 1000000].
    #[arg(long, env = "TANDEM_BACKLOG_LIMIT", value_name = "N")]
    backlog_limit: Option<usize>,
    /// Time given to connections to close on shutdown, ms [default: 5000].
    #[arg(long, env = "TANDEM_SHUTDOWN_GRACE_MS", value_name = "MS")]
    shutdown_grace_ms: Option<u64>,
    /// Most chars in a document [default: 67108864].
    #[arg(long, env = "TANDEM_MAX_DOCUMENT_CHARS", value_name = "N")]
    max_document_chars: Option<usize>,
    /// Most chars one op may insert [default: 1048576].
    #[arg(long, env = "TANDEM_MAX_INSERT_CHARS", value_name = "N")]
    max_insert_chars: Option<usize>,
    /// Most ops in one delta [default: 10000].
    #[arg(long, env = "TANDEM_MAX_DELTA_OPS", value_name = "N")]
    max_delta_ops: Option<usize>,
    /// Most bytes of attributes and embeds in one delta [default: 1048576].
    #[arg(long, env = "TANDEM_MAX_OP_FORMAT_BYTES", value_name = "BYTES")]
    max_op_format_bytes: Option<usize>,
    /// Most bytes of attributes and embeds in a document, counted per formatting run [default: 33554432].
    #[arg(long, env = "TANDEM_MAX_DOCUMENT_FORMAT_BYTES", value_name = "BYTES")]
    max_document_format_bytes: Option<usize>,
    /// Most transform steps one submission may cost (~17 ns each); over it: base_too_old [default: 1000000].
    #[arg(long, env = "TANDEM_MAX_TRANSFORM_STEPS", value_name = "N")]
    max_transform_steps: Option<u64>,
    /// Ops of history kept in memory per document for late ops and catch-up [default: 10000].
    #[arg(long, env = "TANDEM_HISTORY_OPS", value_name = "N")]
    history_ops: Option<usize>,
    /// Bytes of that history per document [default: 67108864].
    #[arg(long, env = "TANDEM_HISTORY_BYTES", value_name = "BYTES")]
    history_bytes: Option<usize>,
    /// Clients remembered per document for exactly-once resubmission [default: 100000].
    #[arg(long, env = "TANDEM_MAX_TRACKED_CLIENTS", value_name = "N")]
    max_tracked_clients: Option<usize>,
    /// Op log: local (the default, in the data directory), scylla (a ScyllaDB cluster; builds with --features scylla), postgres (a PostgreSQL database: TANDEM_OPLOG_DATABASE_URL or [server.storage.postgres]) or none (memory only, nothing survives a restart).
    #[arg(long, env = "TANDEM_OPLOG", value_name = "KIND", value_parser = parse_oplog)]
    oplog: Option<tandem_net::OplogKind>,
    /// With --oplog scylla: contact points, host:port, comma-separated [default: 127.0.0.1:9042].
    #[arg(long, env = "TANDEM_SCYLLA_NODES", value_name = "HOST:PORT,...", value_delimiter = ',')]
    scylla_nodes: Option<Vec<String>>,
    /// With --oplog scylla: the keyspace [default: tandem].
    #[arg(long, env = "TANDEM_SCYLLA_KEYSPACE", value_name = "NAME")]
    scylla_keyspace: Option<String>,
    /// With --oplog scylla: consistency of reads and writes [default: QUORUM].
    #[arg(long, env = "TANDEM_SCYLLA_CONSISTENCY", value_name = "LEVEL")]
    scylla_consistency: Option<String>,
    /// When appends are made durable: always (fdatasync before acking; default), interval, never.
    #[arg(long, env = "TANDEM_FSYNC", value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<tandem_net::FsyncMode>,
    /// With --fsync interval: how often to fdatasync, ms [default: 10].
    #[arg(long, env = "TANDEM_FSYNC_INTERVAL_MS", value_name = "MS")]
    fsync_interval_ms: Option<u64>,
    /// Bytes per op-log segment file [default: 67108864].
    #[arg(long, env = "TANDEM_SEGMENT_BYTES", value_name = "BYTES")]
    segment_bytes: Option<u32>,
    /// Snapshot a document after this many ops [default: 1000].
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY_OPS", value_name = "N")]
    snapshot_every_ops: Option<u64>,
    /// ...or after this many bytes of ops [default: 1048576].
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY_BYTES", value_name = "BYTES")]
    snapshot_every_bytes: Option<u64>,
    /// Days of history kept before compaction may drop it [default: 30].
    #[arg(long, env = "TANDEM_HISTORY_RETENTION_DAYS", value_name = "DAYS")]
    history_retention_days: Option<u64>,
    /// How often compaction runs, seconds [default: 3600].
    #[arg(long, env = "TANDEM_COMPACT_INTERVAL_S", value_name = "SECONDS")]
    compact_interval_s: Option<u64>,
    /// Most ranges in one selection [default: 32].
    #[arg(long, env = "TANDEM_MAX_SELECTION_RANGES", value_name = "N")]
    max_selection_ranges: Option<usize>,
}

macro_rules! apply {
    ($args:ident, $target:expr, $($field:ident),*) => {
        $(if let Some(v) = $args.$field.clone() { $target.$field = v; })*
    };
}

impl ServeArgs {
    /// Builds the configuration: defaults, the file, then environment and flags.
    pub(crate) fn resolve(&self) -> Result<FileConfig> {
        let mut config = match &self.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = &self.log {
            config.log = l.clone();
        }
        let s = &mut config.server;
        apply!(
            self,
            s,
            listen,
            cores,
            pin_cores,
            max_connections,
            max_frame_bytes,
            max_message_bytes,
            send_queue_bytes
        );
        apply!(self, s, handshake_timeout_ms, idle_timeout_ms, max_messages_per_s, max_open_docs, max_docs_per_core);
        apply!(self, s, presence_interval_ms, allowed_origins, inbox_capacity, backlog_limit, shutdown_grace_ms);
        apply!(self, s, evict_idle_s, max_transform_steps_per_s);
        if let Some(secret) = &self.dev_secret {
            s.dev_secret = Some(secret.clone());
        }
        if let Some(auth) = self.auth {
            config.auth = auth;
        }
        let s = &mut config.server;
        let l = &mut s.limits;
        apply!(self, l, max_document_chars, max_insert_chars, max_delta_ops, history_ops, history_bytes);
        apply!(self, l, max_tracked_clients, max_selection_ranges, max_op_format_bytes, max_document_format_bytes);
        apply!(self, l, max_transform_steps);
        let st = &mut s.storage;
        apply!(self, st, oplog, fsync, fsync_interval_ms, segment_bytes, snapshot_every_ops, snapshot_every_bytes);
        apply!(self, st, history_retention_days, compact_interval_s);
        if let Some(n) = &self.scylla_nodes {
            st.scylla.nodes = n.clone();
        }
        if let Some(k) = &self.scylla_keyspace {
            st.scylla.keyspace = k.clone();
        }
        if let Some(c) = &self.scylla_consistency {
            st.scylla.consistency = c.clone();
        }
        st.data_dir = config.data_dir.clone();
        if let Some(cert) = &self.tls_cert {
            s.tls.cert_file = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            s.tls.key_file = Some(key.clone());
        }
        s.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if config.auth == AuthMode::Accounts && config.server.dev_secret.is_some() {
            anyhow::bail!("--dev-secret is for --auth dev; with accounts, clients sign in through /api/auth");
        }
        let c = &mut config.control;
        if let Some(url) = &self.database_url {
            c.database_url = Some(url.clone());
        }
        if let Some(secure) = self.secure_cookies {
            c.secure_cookies = secure;
        }
        if let Some(dir) = &self.web_dir {
            c.web_dir = Some(dir.clone());
        }
        if config.server.tls.cert_file.is_some() {
            // Served over HTTPS only: a cookie without Secure would be a mistake.
            c.secure_cookies = true;
        }
        c.allowed_origins = config.server.allowed_origins.clone();
        let k = &mut config.cluster;
        if let Some(on) = self.cluster {
            k.enabled = on;
        }
        for (flag, slot) in [
            (&self.node, &mut k.node),
            (&self.advertise, &mut k.advertise),
            (&self.internal_url, &mut k.internal_url),
            (&self.cluster_database_url, &mut k.database_url),
        ] {
            if let Some(v) = flag {
                *slot = Some(v.clone());
            }
        }
        for (flag, slot) in [
            (self.lease_ttl_ms, &mut k.lease_ttl_ms),
            (self.lease_margin_ms, &mut k.margin_ms),
            (self.lease_poll_ms, &mut k.poll_ms),
        ] {
            if let Some(v) = flag {
                *slot = v;
            }
        }
        c.files.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if let Some(e) = &self.otlp_endpoint {
            config.telemetry.otlp_endpoint = Some(e.clone());
        }
        crate::telemetry::validate(&config.telemetry).context("invalid configuration")?;
        Ok(config)
    }
}

/// `https` when the port has TLS, else `http`.
pub(crate) fn http_scheme(config: &FileConfig) -> &'static str {
    if config.server.tls.cert_file.is_some() { "https" } else { "http" }
}

fn parse_auth(s: &str) -> Result<AuthMode, String> {
    match s {
        "accounts" => Ok(AuthMode::Accounts),
        "dev" => Ok(AuthMode::Dev),
        _ => Err(format!("{s:?}: expected accounts or dev")),
    }
}

fn parse_oplog(s: &str) -> Result<tandem_net::OplogKind, String> {
    match s {
        "local" => Ok(tandem_net::OplogKind::Local),
        "scylla" => Ok(tandem_net::OplogKind::Scylla),
        "postgres" => Ok(tandem_net::OplogKind::Postgres),
        "none" => Ok(tandem_net::OplogKind::None),
        _ => Err(format!("{s:?}: expected local, scylla, postgres or none")),
    }
}

fn parse_fsync(s: &str) -> Result<tandem_net::FsyncMode, String> {
    match s {
        "always" => Ok(tandem_net::FsyncMode::Always),
        "interval" => Ok(tandem_net::FsyncMode::Interval),
        "never" => Ok(tandem_net::FsyncMode::Never),
        _ => Err(format!("{s:?}: expected always, interval or never")),
    }
}

fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("tandem-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tandem.toml");
        std::fs::write(
            &path,
            "data_dir = \"/tmp/x\"\n[server]\nlisten = \"0.0.0.0:9000\"\ncores = 3\n[server.limits]\nhistory_ops = 77\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path.clone()), cores: Some(2), ..ServeArgs::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.server.listen, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.server.cores, 2);
        assert_eq!(c.server.limits.history_ops, 77);
        std::fs::write(&path, "[server]\nlisten_typo = 1\n").unwrap();
        let err = ServeArgs { config: Some(path), ..ServeArgs::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tandem.example.toml");
        let mut defaults = FileConfig::default();
        let loaded = load(&path).unwrap();
        // The data directory reaches storage when the configuration is resolved.
        defaults.server.storage.data_dir = loaded.server.storage.data_dir.clone();
        assert_eq!(loaded, defaults);
    }

    /// The configurations `deploy/` mounts (Docker Compose, its ScyllaDB variant, and the
    /// Kubernetes ConfigMap) load as `tandem serve` loads them: no unknown key, every value
    /// valid, a cluster on shared stores.
    #[test]
    fn the_deploy_configurations_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let dir = tempfile::tempdir().unwrap();
        let manifests = std::fs::read_to_string(deploy.join("kubernetes/tandem.yaml")).unwrap();
        let mut config_map = None;
        for doc in serde_yaml::Deserializer::from_str(&manifests) {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            if v["kind"] == "ConfigMap" {
                config_map = v["data"]["tandem.toml"].as_str().map(str::to_owned);
            }
        }
        let kubernetes = dir.path().join("kubernetes.toml");
        std::fs::write(&kubernetes, config_map.expect("the manifests' ConfigMap has tandem.toml")).unwrap();
        for (path, oplog) in [
            (deploy.join("cluster/tandem.toml"), tandem_net::OplogKind::Postgres),
            (deploy.join("cluster/tandem.scylla.toml"), tandem_net::OplogKind::Scylla),
            (kubernetes, tandem_net::OplogKind::Postgres),
        ] {
            let resolved = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() }.resolve();
            if oplog == tandem_net::OplogKind::Scylla && !cfg!(feature = "scylla") {
                // Parsed, and refused by this build only (the README's test command has it).
                let e = format!("{:#}", resolved.unwrap_err());
                assert!(e.contains("built without ScyllaDB support"), "{}: {e}", path.display());
                continue;
            }
            let c = resolved.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(c.cluster.enabled, "{}", path.display());
            assert_eq!(c.server.storage.oplog, oplog, "{}", path.display());
            assert_eq!(c.server.storage.blobs, tandem_net::BlobsKind::S3, "{}", path.display());
            assert_eq!(c.events.backend, crate::events::Backend::Kafka, "{}", path.display());
            assert_eq!(c.auth, AuthMode::Accounts, "{}", path.display());
        }
        // A single node on ScyllaDB (deploy/scylla).
        let single = ServeArgs { config: Some(deploy.join("scylla/tandem.toml")), ..ServeArgs::default() };
        match single.resolve() {
            Ok(c) => assert_eq!(c.server.storage.oplog, tandem_net::OplogKind::Scylla),
            Err(e) => {
                assert!(!cfg!(feature = "scylla") && format!("{e:#}").contains("without ScyllaDB support"), "{e:#}")
            }
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let args = ServeArgs { max_messages_per_s: Some(0), ..ServeArgs::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("invalid configuration"));
    }
}
