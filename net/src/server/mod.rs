//! The I/O shell: one monoio runtime per core, each with its own listener on the shared port
//! (`SO_REUSEPORT`), its own connections and its own [`Shard`].
//!
//! Everything here moves bytes and time: accepting, the HTTP handshake, reading and writing
//! sockets, timers, and carrying a shard's effects to connections and to other cores. The
//! decisions are the shard's.

mod conn;
mod core;
mod mailbox;
pub mod notify;
pub mod runtime;
mod storage;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use tandem_engine::Limits;

use crate::access::{AccessUpdate, Auth, ControlLink};
use crate::metrics::{CoreStats, Driver};
use crate::placement::Placement;
use crate::protocol::{DocId, ServerMsg};
use crate::shard::{CoreMsg, ShardConfig};
use mailbox::Mailbox;
pub use notify::Notify;
pub use storage::{
    BlobsKind, FsyncMode, OplogKind, PostgresConfig, S3Config, ScyllaConfig, StorageConfig, open_blobs, open_core_log,
};

/// Everything the server can be told. Every field has a safe default; the `tandem` binary
/// loads this from TOML, flags and `TANDEM_*` variables.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker threads, one per core (0: one per available core).
    pub cores: usize,
    /// Pin each worker thread to its core.
    pub pin_cores: bool,
    /// Most connections at once, over all cores.
    pub max_connections: usize,
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Bytes a connection may have queued for writing; a slower reader is closed (4030).
    pub send_queue_bytes: usize,
    /// Time allowed for the HTTP handshake, and then for `hello` (slowloris protection).
    pub handshake_timeout_ms: u64,
    /// After this long without a frame the server pings; after twice this long it closes
    /// the connection (4008).
    pub idle_timeout_ms: u64,
    /// Sustained messages per second per connection (bursts of twice that); over it the
    /// connection is closed (4029).
    pub max_messages_per_s: u32,
    /// Most documents open at once per connection.
    pub max_open_docs: usize,
    /// Most documents in memory per core. At the bound, the document nobody has had open
    /// for longest is evicted to make room; when every one is open, `open` is refused
    /// (`too_many_docs`).
    pub max_docs_per_core: usize,
    /// A document nobody has had open for this many seconds is evicted from memory (it
    /// loads again from the op log; with `oplog = "none"` documents are never evicted).
    pub evict_idle_s: u64,
    /// Transform steps per second one connection may spend on one core's documents (bursts
    /// of twice that); a submission over what is left is refused with `base_too_old`.
    pub max_transform_steps_per_s: u32,
    /// Presence reaches each subscriber at most once per this many milliseconds per document.
    pub presence_interval_ms: u64,
    /// Allowed `Origin` header values for the WebSocket upgrade (list the editor's own);
    /// empty allows any. Upgrades without an `Origin` (not from a browser page) pass.
    pub allowed_origins: Vec<String>,
    /// When set (and no control plane checks accounts), `hello` tokens must equal this
    /// secret; when unset, any token is accepted.
    pub dev_secret: Option<String>,
    /// A session is told its access token expires this many seconds before it does.
    pub token_warning_s: u64,
    /// Messages each core's inbox holds.
    pub inbox_capacity: usize,
    /// Messages a core holds back for another core's full inbox before it drops frames and
    /// closes the connections they were for (1013).
    pub backlog_limit: usize,
    /// Time given to connections to close on shutdown.
    pub shutdown_grace_ms: u64,
    /// Per-document engine limits.
    pub limits: LimitsConfig,
    /// The op log and snapshots.
    pub storage: StorageConfig,
    /// TLS on the port (HTTPS and WSS), when a certificate and key are given.
    pub tls: crate::tls::TlsConfig,
}

/// The engine's per-document limits, as configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most chars in a document.
    pub max_document_chars: usize,
    /// Most chars one op may insert.
    pub max_insert_chars: usize,
    /// Most ops in one delta.
    pub max_delta_ops: usize,
    /// Most bytes of attributes and embeds in one delta.
    pub max_op_format_bytes: usize,
    /// Most bytes of attributes and embeds in a document (counted per formatting run).
    pub max_document_format_bytes: usize,
    /// Most transform steps one submission may cost (about 17 ns each here); over it the
    /// client is told to catch up and rebase (`base_too_old`).
    pub max_transform_steps: u64,
    /// Ops kept in memory for transforming late submissions and catching up.
    pub history_ops: usize,
    /// Bytes of ops kept in that window.
    pub history_bytes: usize,
    /// Clients remembered per document for exactly-once resubmission.
    pub max_tracked_clients: usize,
    /// Most ranges in one selection.
    pub max_selection_ranges: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_document_chars: l.max_document_chars,
            max_insert_chars: l.max_insert_chars,
            max_delta_ops: l.max_delta_ops,
            max_op_format_bytes: l.max_op_format_bytes,
            max_document_format_bytes: l.max_document_format_bytes,
            max_transform_steps: l.max_transform_steps,
            history_ops: l.history_ops,
            history_bytes: l.history_bytes,
            max_tracked_clients: l.max_tracked_clients,
            max_selection_ranges: l.max_selection_ranges,
        }
    }
}

impl From<&LimitsConfig> for Limits {
    fn from(c: &LimitsConfig) -> Self {
        Self {
            max_document_chars: c.max_document_chars,
            max_insert_chars: c.max_insert_chars,
            max_delta_ops: c.max_delta_ops,
            max_op_format_bytes: c.max_op_format_bytes,
            max_document_format_bytes: c.max_document_format_bytes,
            max_transform_steps: c.max_transform_steps,
            history_ops: c.history_ops,
            history_bytes: c.history_bytes,
            max_tracked_clients: c.max_tracked_clients,
            max_selection_ranges: c.max_selection_ranges,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cores: 0,
            pin_cores: false,
            max_connections: 100_000,
            max_frame_bytes: 4 * 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            send_queue_bytes: 8 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_messages_per_s: 200,
            max_open_docs: 64,
            max_docs_per_core: 100_000,
            evict_idle_s: 60,
            max_transform_steps_per_s: 1_000_000,
            presence_interval_ms: 50,
            allowed_origins: Vec::new(),
            dev_secret: None,
            token_warning_s: 60,
            inbox_capacity: 65_536,
            backlog_limit: 1_000_000,
            shutdown_grace_ms: 5_000,
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The number of worker threads this config asks for.
    pub fn resolved_cores(&self) -> usize {
        if self.cores == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { self.cores }
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        self.tls.enabled()?;
        let cores = self.resolved_cores();
        if cores > 1024 {
            return Err(format!("cores = {cores}: at most 1024"));
        }
        if self.max_frame_bytes == 0 || self.max_message_bytes < self.max_frame_bytes.min(self.max_message_bytes) {
            return Err("max_frame_bytes and max_message_bytes must be positive".into());
        }
        if self.max_message_bytes < 1024 {
            return Err(format!("max_message_bytes = {}: at least 1024", self.max_message_bytes));
        }
        if self.send_queue_bytes < self.max_message_bytes.min(64 * 1024) {
            return Err("send_queue_bytes must hold at least one message (or 64 KiB)".into());
        }
        if self.handshake_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return Err("timeouts must be positive".into());
        }
        if self.max_transform_steps_per_s == 0 || self.limits.max_transform_steps == 0 {
            return Err("max_transform_steps_per_s and limits.max_transform_steps must be positive".into());
        }
        if self.max_messages_per_s == 0 || self.max_open_docs == 0 || self.max_docs_per_core == 0 {
            return Err("max_messages_per_s, max_open_docs and max_docs_per_core must be positive".into());
        }
        if self.inbox_capacity == 0 || self.backlog_limit == 0 {
            return Err("inbox_capacity and backlog_limit must be positive".into());
        }
        self.storage.validate()
    }

    fn shard_config(&self, auth: Auth, placement: Option<Arc<dyn Placement>>) -> ShardConfig {
        ShardConfig {
            cores: u16::try_from(self.resolved_cores()).expect("validated: at most 1024 cores"),
            limits: Limits::from(&self.limits),
            max_docs_per_core: self.max_docs_per_core,
            max_open_docs: self.max_open_docs,
            max_messages_per_s: self.max_messages_per_s,
            presence_interval: Duration::from_millis(self.presence_interval_ms),
            max_message_bytes: self.max_message_bytes,
            auth,
            token_warning: Duration::from_secs(self.token_warning_s),
            edit_report_interval: Duration::from_secs(5),
            durable: self.storage.oplog != OplogKind::None,
            snapshot_every_ops: self.storage.snapshot_every_ops,
            snapshot_every_bytes: self.storage.snapshot_every_bytes,
            max_transform_steps_per_s: self.max_transform_steps_per_s,
            evict_idle_after: Duration::from_secs(self.evict_idle_s),
            placement,
        }
    }
}

/// A connection the data plane does not serve (the REST API, the page), handed over.
pub struct HandedConn {
    /// The socket (non-blocking).
    pub stream: std::net::TcpStream,
    /// The bytes already read from it (the request head and maybe more), decrypted.
    pub read: Vec<u8>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// With TLS on the port: the session, handshake done, to go on with.
    pub tls: Option<Box<rustls::ServerConnection>>,
}

/// Receives the connections the data plane does not serve. Called on a core: it must queue
/// and return at once.
pub trait HttpHandoff: Send + Sync {
    /// Takes a connection, or gives it back when its queue is full (it is then answered
    /// 503).
    fn handoff(&self, conn: HandedConn) -> Result<(), HandedConn>;
}

/// What the control plane plugs into the data plane.
#[derive(Clone, Default)]
pub struct Hooks {
    /// How tokens are checked. [`Auth::Open`] here means: use `dev_secret` from the config
    /// when it is set.
    pub auth: Auth,
    /// Where access lists are asked for (needed with [`Auth::Accounts`]).
    pub control: Option<Arc<dyn ControlLink>>,
    /// Who serves the other HTTP requests on the port.
    pub http: Option<Arc<dyn HttpHandoff>>,
    /// Where the change feed goes: every durable batch of ops, offered by the storage
    /// threads after the ack (none: no feed).
    pub feed: Option<Arc<dyn crate::feed::FeedSink>>,
    /// More Prometheus text appended to `/metrics` (the workers' and the bus's counters).
    /// Called on a core: it must only read counters, never block.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Where snapshots go (none: the configured store, opened here).
    pub blobs: Option<Arc<dyn tandem_storage::BlobStore>>,
    /// In a cluster: which documents this node serves (none: every document).
    pub placement: Option<Arc<dyn Placement>>,
}

/// A handle the control plane keeps to reach the cores (cheap to clone, any thread).
#[derive(Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
}

impl DataPlane {
    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        crate::metrics::render(&self.shared.stats)
    }

    /// True while the cores serve (started, not shutting down).
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire) && !self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// Delivers an access update to the core that owns `doc`; gives it back when that
    /// core's inbox is full (retry shortly).
    pub fn access(&self, doc: DocId, update: AccessUpdate) -> Result<(), AccessUpdate> {
        let core = doc.owner(self.shared.inboxes.len());
        match self.shared.inboxes[core].push(CoreMsg::Access { doc, update }) {
            Ok(()) => Ok(()),
            Err(CoreMsg::Access { update, .. }) => Err(update),
            Err(_) => unreachable!("the message given back is the one pushed"),
        }
    }
}

impl DataPlane {
    /// Hands a REST call about `doc`'s notes to its owner core (the answer comes through the
    /// call's `reply`); gives it back when that core's inbox is full (retry shortly, or
    /// answer "overloaded").
    pub fn notes(&self, doc: DocId, call: Box<crate::shard::NotesCall>) -> Result<(), Box<crate::shard::NotesCall>> {
        let core = doc.owner(self.shared.inboxes.len());
        match self.shared.inboxes[core].push(CoreMsg::Notes { doc, call }) {
            Ok(()) => Ok(()),
            Err(CoreMsg::Notes { call, .. }) => Err(call),
            Err(_) => unreachable!("the message given back is the one pushed"),
        }
    }

    /// Tells every core the placement changed (see [`CoreMsg::Placement`]). Best effort: a
    /// core whose inbox is full looks at its next tick anyway.
    pub fn placement_changed(&self) {
        for inbox in &self.shared.inboxes {
            let _ = inbox.push(CoreMsg::Placement);
        }
    }

    /// [`DataPlane::placement_changed`] as a callback for the placement to keep: it holds
    /// the cores weakly (the placement is theirs; no cycle keeps either alive).
    pub fn placement_hook(&self) -> Box<dyn Fn() + Send + Sync> {
        let shared = Arc::downgrade(&self.shared);
        Box::new(move || {
            if let Some(shared) = shared.upgrade() {
                Self { shared }.placement_changed();
            }
        })
    }

    /// Sends `msg` to `user`'s sessions that have `doc` open (through its owner core).
    /// Best effort: false when that core's inbox is full.
    pub fn notify(&self, doc: DocId, user: &str, msg: ServerMsg) -> bool {
        let core = doc.owner(self.shared.inboxes.len());
        let notice = Box::new((user.to_owned(), msg));
        self.shared.inboxes[core].push(CoreMsg::Notify { doc, notice }).is_ok()
    }
}

/// What the cores share: read-only config, the inboxes, published stats, lifecycle flags.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) shard: Arc<ShardConfig>,
    pub(crate) inboxes: Vec<Mailbox>,
    pub(crate) stats: Vec<Arc<CoreStats>>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) ready: AtomicBool,
    pub(crate) connections: AtomicUsize,
    pub(crate) control: Option<Arc<dyn ControlLink>>,
    pub(crate) http: Option<Arc<dyn HttpHandoff>>,
    pub(crate) extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// TLS on the port (none: plain HTTP and WebSocket).
    pub(crate) tls: Option<crate::tls::Tls>,
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    drivers: Vec<Driver>,
}

impl ServerHandle {
    /// The address it listens on (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port's TLS (its certificate, for this machine's own clients), when it has TLS.
    pub fn tls(&self) -> Option<&crate::tls::Tls> {
        self.shared.tls.as_ref()
    }

    /// The I/O driver each core runs.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// Every core's published numbers.
    pub fn stats(&self) -> &[Arc<CoreStats>] {
        &self.shared.stats
    }

    /// A handle for the control plane to reach the cores.
    pub fn data_plane(&self) -> DataPlane {
        DataPlane { shared: Arc::clone(&self.shared) }
    }

    /// The `/metrics` text (for a control plane that serves it on a kept-alive connection).
    pub fn metrics(&self) -> String {
        crate::metrics::render(&self.shared.stats)
    }

    /// Starts a graceful shutdown: stop accepting, flush, close every client with 1001.
    pub fn shutdown(&self) {
        if !self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            self.shared.ready.store(false, Ordering::Release);
            for inbox in &self.shared.inboxes {
                inbox.poke();
            }
        }
    }

    /// Waits for every core to finish (after [`ServerHandle::shutdown`]).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// How long a port in use is retried before start-up fails: a server killed with SIGKILL
/// holds its port for a few milliseconds more (5-20 ms measured), and a supervisor that
/// restarts it at once should succeed the first time.
const BIND_RETRY: Duration = Duration::from_secs(2);

/// Binds one listener per core on the same address (`SO_REUSEPORT`).
///
/// `SO_REUSEPORT` would also let a second server of the same user join the port and silently
/// take a share of the connections (two servers, each with its own documents), so a port that
/// something else already listens on is refused first, with a socket that does not share
/// (after retrying for `retry`, with a log line).
fn bind_listeners(
    addr: SocketAddr,
    n: usize,
    retry: Duration,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    if addr.port() != 0 {
        let started = std::time::Instant::now();
        let mut logged = false;
        loop {
            let probe = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
            // Connections of an earlier run in TIME_WAIT do not count.
            probe.set_reuse_address(true)?;
            match probe.bind(&addr.into()) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < retry => {
                    if !logged {
                        logged = true;
                        tracing::info!("{addr} is in use; retrying for up to {retry:?} (a server just killed?)");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!("{addr} is already in use (another server listening there?)")
                    } else {
                        format!("cannot bind {addr}: {e}")
                    };
                    return Err(std::io::Error::new(e.kind(), why));
                }
            }
        }
    }
    let mut listeners = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let l: std::net::TcpListener = socket.into();
        // Port 0 picks a port once; every other core joins that one.
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok((addr, listeners))
}

/// Starts the server and returns once every core is listening.
pub fn start(config: ServerConfig) -> std::io::Result<ServerHandle> {
    start_with(config, Hooks::default())
}

/// Starts the server with a control plane's hooks.
pub fn start_with(config: ServerConfig, hooks: Hooks) -> std::io::Result<ServerHandle> {
    config.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let auth = match (hooks.auth, &config.dev_secret) {
        (Auth::Open, Some(secret)) => Auth::Dev(secret.clone()),
        (auth, _) => auth,
    };
    if auth.checks_access() && hooks.control.is_none() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "checking accounts needs a control plane"));
    }
    let cores = config.resolved_cores();
    let tls =
        crate::tls::Tls::start(&config.tls).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (addr, listeners) = bind_listeners(config.listen, cores, BIND_RETRY)?;
    let shared = Arc::new(Shared {
        shard: Arc::new(config.shard_config(auth, hooks.placement)),
        inboxes: (0..cores).map(|_| Mailbox::new(config.inbox_capacity)).collect(),
        stats: (0..cores).map(|_| Arc::new(CoreStats::default())).collect(),
        config,
        shutting_down: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        control: hooks.control,
        http: hooks.http,
        extra_metrics: hooks.metrics,
        tls,
    });
    let hooks_feed = hooks.feed;
    let hooks_blobs = hooks.blobs;
    // Every core's op log is recovered before any core serves.
    let mut storage = Vec::with_capacity(cores);
    if shared.config.storage.oplog != OplogKind::None {
        // Each core's log is independent: recover them all at once.
        let (cfg, limits) = (&shared.config.storage, Limits::from(&shared.config.limits));
        if cfg.oplog == OplogKind::Local {
            storage::check_layout(cfg, cores).map_err(|e| std::io::Error::other(format!("opening the op log: {e}")))?;
        }
        let blobs = match hooks_blobs {
            Some(b) => b,
            None => {
                storage::open_blobs(cfg).map_err(|e| std::io::Error::other(format!("opening the blob store: {e}")))?
            }
        };
        let started: Vec<std::io::Result<storage::StorageThread>> = std::thread::scope(|scope| {
            let opening: Vec<_> = (0..cores)
                .map(|i| {
                    let limits = limits.clone();
                    let (feed, blobs) = (hooks_feed.clone(), Arc::clone(&blobs));
                    scope.spawn(move || storage::start(cfg, i, limits, feed, blobs))
                })
                .collect();
            opening.into_iter().map(|h| h.join().expect("opening an op log panicked")).collect()
        });
        for s in started {
            storage.push(Some(s?));
        }
    } else {
        tracing::warn!("oplog = \"none\": documents live in memory only and are lost when the server stops");
        storage.resize_with(cores, || None);
    }
    let (started_tx, started_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(cores);
    for ((i, listener), storage) in listeners.into_iter().enumerate().zip(storage) {
        let shared = Arc::clone(&shared);
        let started = started_tx.clone();
        let id = u16::try_from(i).expect("validated: at most 1024 cores");
        threads.push(
            std::thread::Builder::new()
                .name(format!("tandem-core-{i}"))
                .spawn(move || core::run(id, shared, listener, storage, &started))?,
        );
    }
    drop(started_tx);
    let mut drivers = vec![Driver::Epoll; cores];
    for _ in 0..cores {
        match started_rx.recv() {
            Ok(Ok((core, driver))) => drivers[usize::from(core)] = driver,
            Ok(Err(e)) => {
                shared.shutting_down.store(true, Ordering::Release);
                for inbox in &shared.inboxes {
                    inbox.poke();
                }
                return Err(e);
            }
            Err(_) => return Err(std::io::Error::other("a core thread exited during start-up")),
        }
    }
    shared.ready.store(true, Ordering::Release);
    Ok(ServerHandle { addr, shared, threads, drivers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_not_shared() {
        let first = bind_listeners("127.0.0.1:0".parse().unwrap(), 2, Duration::ZERO).unwrap();
        let err = bind_listeners(first.0, 2, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("already in use"), "{err}");
        drop(first);
    }

    #[test]
    fn a_port_freed_while_retrying_is_taken() {
        let first = bind_listeners("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        let addr = first.0;
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        let second = bind_listeners(addr, 2, Duration::from_secs(5));
        release.join().unwrap();
        assert_eq!(second.unwrap().0, addr);
    }
}
