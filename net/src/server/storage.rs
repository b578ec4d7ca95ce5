//! Each core's storage thread: the core's op log, its snapshots and compaction, off the event
//! loop.
//!
//! A core never touches a file. It hands requests to its own storage thread over a bounded
//! queue and the thread answers over another, waking the core. Appends go one batch at a
//! time: while a batch is being written and synced, the core gathers the next one, so under
//! load a single `fdatasync` covers everything committed during the previous one (group
//! commit). The core holds every effect that follows an append (acks, broadcasts, replies)
//! until the storage thread says that append is durable.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;
use serde::Deserialize;
use tandem_engine::{DocState, Limits};
use tandem_storage::{
    BlobStore, FsyncPolicy, LocalBlobs, LocalLog, LocalOptions, LogOp, OpLog, RealFs, RecoveryReport, Snapshot,
    StorageError, now_ms,
};
use tracing::{error, info, warn};

use crate::feed::{FeedSink, FeedSource};
use crate::protocol::{DocId, ErrorCode, RevisionRecord};
use crate::session::SessionInfo;
use crate::shard::{HistoryAnswer, HistoryQuery};

/// Which op log documents are kept in.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OplogKind {
    /// The embedded per-core log in the data directory (the default).
    Local,
    /// A ScyllaDB (or Cassandra) cluster, `[server.storage.scylla]`; needs a build with the
    /// `scylla` feature and a keyspace made by `tandem migrate`.
    Scylla,
    /// A PostgreSQL database, `[server.storage.postgres]`; needs a build with the `postgres`
    /// feature (on by default in `tandem`) and a schema made by `tandem migrate`.
    Postgres,
    /// None: documents live in memory only and are lost when the server stops (tests and
    /// data-plane benchmarks).
    None,
}

impl OplogKind {
    /// Whether the log is a database every node of a cluster reads and writes (and a
    /// refused append leaves nothing behind to recover locally).
    pub fn is_shared(self) -> bool {
        matches!(self, Self::Scylla | Self::Postgres)
    }
}

/// The ScyllaDB backend's settings (`[server.storage.scylla]`). They mirror
/// `tandem_storage::scylla::ScyllaOptions` (defaults included) because a build without the
/// `scylla` feature must still parse them and refuse `oplog = "scylla"` by name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace `tandem migrate` creates and the server uses.
    pub keyspace: String,
    /// Consistency of reads and writes: `QUORUM` (default), `LOCAL_QUORUM`, ...
    pub consistency: String,
    /// Consistency of the Paxos round fencing appends: `SERIAL` (default) or `LOCAL_SERIAL`.
    pub serial_consistency: String,
    /// Client-side timeout of one request, ms.
    pub request_timeout_ms: u64,
    /// The datacenter to prefer.
    pub local_dc: Option<String>,
    /// User name, if the cluster requires authentication (the password comes from
    /// `password` or the `TANDEM_SCYLLA_PASSWORD` environment variable).
    pub username: Option<String>,
    /// Password (prefer the environment variable).
    pub password: Option<String>,
    /// `tandem migrate`: the keyspace's replication map, as CQL.
    pub replication: String,
    /// `tandem migrate`: create the keyspace with tablets off (ScyllaDB before 2025.4 refuses
    /// lightweight transactions in tablet keyspaces); false for Apache Cassandra.
    pub disable_tablets: bool,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "tandem".into(),
            consistency: "QUORUM".into(),
            serial_consistency: "SERIAL".into(),
            request_timeout_ms: 5000,
            local_dc: None,
            username: None,
            password: None,
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            disable_tablets: true,
        }
    }
}

#[cfg(feature = "scylla")]
impl ScyllaConfig {
    /// The backend's options.
    pub fn options(&self, retention: Duration) -> tandem_storage::scylla::ScyllaOptions {
        let password = std::env::var("TANDEM_SCYLLA_PASSWORD").ok().or_else(|| self.password.clone());
        tandem_storage::scylla::ScyllaOptions {
            nodes: self.nodes.clone(),
            keyspace: self.keyspace.clone(),
            consistency: self.consistency.clone(),
            serial_consistency: self.serial_consistency.clone(),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            local_dc: self.local_dc.clone(),
            credentials: self.username.clone().map(|u| (u, password.unwrap_or_default())),
            retention,
        }
    }

    /// What `tandem migrate` creates.
    pub fn migration(&self) -> tandem_storage::scylla::Migration {
        tandem_storage::scylla::Migration {
            replication: self.replication.clone(),
            disable_tablets: self.disable_tablets,
        }
    }
}

/// The PostgreSQL backend's settings (`[server.storage.postgres]`); like [`ScyllaConfig`],
/// parsed whatever the build.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`; the `TANDEM_OPLOG_DATABASE_URL` environment
    /// variable overrides it (put the password there, not in the file).
    pub url: String,
    /// The PostgreSQL schema of the op log's tables (`tandem migrate` creates it).
    pub schema: String,
    /// Longest wait for a connection, ms.
    pub connect_timeout_ms: u64,
    /// Longest a statement may run, ms.
    pub statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/tandem".into(),
            schema: "tandem_oplog".into(),
            connect_timeout_ms: 5000,
            statement_timeout_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// The database's URL: `TANDEM_OPLOG_DATABASE_URL` when set, else `url`.
    pub fn resolved_url(&self) -> String {
        std::env::var("TANDEM_OPLOG_DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| self.url.clone())
    }
}

#[cfg(feature = "postgres")]
impl PostgresConfig {
    /// The backend's options.
    pub fn options(&self, retention: Duration) -> tandem_storage::postgres::PostgresOptions {
        tandem_storage::postgres::PostgresOptions {
            url: self.resolved_url(),
            schema: self.schema.clone(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            retention,
        }
    }
}

/// Where blobs (snapshots, exports, uploads) are kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BlobsKind {
    /// Files under `<data_dir>/blobs` (the default).
    #[default]
    Local,
    /// An S3 bucket (`[server.storage.s3]`; a build with the `s3` feature): snapshots, exports
    /// and uploads off the node's disk, so any node can load any document.
    S3,
}

/// The S3 blob store (`[server.storage.s3]`). Credentials not given here come from the AWS
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, instance
/// roles); `TANDEM_S3_SECRET_ACCESS_KEY` overrides the file's secret.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (`us-east-1` when empty and the environment names none).
    pub region: String,
    /// An S3-compatible store's URL (`http://127.0.0.1:8014`); AWS when empty.
    pub endpoint: String,
    /// Keys go under this prefix, so one bucket can hold several clusters' blobs.
    pub prefix: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (prefer the environment). Never logged.
    pub secret_access_key: String,
    /// `bucket.endpoint` host names instead of `endpoint/bucket` paths.
    pub virtual_hosted_style: bool,
    /// Time allowed for one request, ms.
    pub request_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: String::new(),
            endpoint: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            virtual_hosted_style: false,
            request_timeout_ms: 30_000,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "<redacted>" })
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// When the op log makes appends durable.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// `fdatasync` every write batch before acking its ops (group commit). The default.
    Always,
    /// Ack once written; `fdatasync` every `fsync_interval_ms`.
    Interval,
    /// Ack once written; never sync (benchmarks only).
    Never,
}

/// Storage configuration (`[server.storage]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the data lives (set from the top-level `data_dir`).
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// The op log: `local` (default), `scylla`, `postgres` or `none`.
    pub oplog: OplogKind,
    /// With `oplog = "scylla"`: the cluster.
    pub scylla: ScyllaConfig,
    /// With `oplog = "postgres"`: the database.
    pub postgres: PostgresConfig,
    /// When appends are made durable: `always` (default), `interval`, `never`.
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: how often, ms.
    pub fsync_interval_ms: u64,
    /// Bytes per log segment file.
    pub segment_bytes: u32,
    /// A snapshot of a document is taken after this many ops...
    pub snapshot_every_ops: u64,
    /// ...or this many bytes of ops, since its last one.
    pub snapshot_every_bytes: u64,
    /// History younger than this is kept, days.
    pub history_retention_days: u64,
    /// How often compaction runs, seconds.
    pub compact_interval_s: u64,
    /// Where blobs go: `local` (default) or `s3`.
    pub blobs: BlobsKind,
    /// With `blobs = "s3"`: the bucket.
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tandem-data"),
            oplog: OplogKind::Local,
            scylla: ScyllaConfig::default(),
            postgres: PostgresConfig::default(),
            fsync: FsyncMode::Always,
            fsync_interval_ms: 10,
            segment_bytes: 64 << 20,
            snapshot_every_ops: 1000,
            snapshot_every_bytes: 1 << 20,
            history_retention_days: 30,
            compact_interval_s: 3600,
            blobs: BlobsKind::Local,
            s3: S3Config::default(),
        }
    }
}

impl StorageConfig {
    /// The fsync policy, as the log takes it.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        match self.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms.max(1))),
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 64 * 1024 || !self.segment_bytes.is_multiple_of(4096) {
            return Err(format!("storage.segment_bytes = {}: a multiple of 4096, at least 65536", self.segment_bytes));
        }
        if self.snapshot_every_ops == 0 || self.snapshot_every_bytes == 0 {
            return Err("storage.snapshot_every_ops and snapshot_every_bytes must be positive".into());
        }
        if self.compact_interval_s == 0 {
            return Err("storage.compact_interval_s must be positive".into());
        }
        if self.blobs == BlobsKind::S3 && self.s3.bucket.is_empty() {
            return Err("storage.blobs = \"s3\" needs storage.s3.bucket".into());
        }
        #[cfg(not(feature = "s3"))]
        if self.blobs == BlobsKind::S3 {
            return Err(
                "storage.blobs = \"s3\": this tandem was built without S3 support (build with --features s3)".into()
            );
        }
        if self.oplog == OplogKind::Scylla {
            #[cfg(feature = "scylla")]
            self.scylla.options(self.retention()).validate()?;
            #[cfg(not(feature = "scylla"))]
            return Err("storage.oplog = \"scylla\": this tandem was built without ScyllaDB support (build with --features scylla)".into());
        }
        if self.oplog == OplogKind::Postgres {
            #[cfg(feature = "postgres")]
            self.postgres.options(self.retention()).validate()?;
            #[cfg(not(feature = "postgres"))]
            return Err("storage.oplog = \"postgres\": this tandem was built without PostgreSQL op-log support (build with --features postgres)".into());
        }
        Ok(())
    }

    /// The directory of core `core`'s op log.
    pub fn oplog_dir(&self, core: usize) -> PathBuf {
        self.data_dir.join("oplog").join(format!("core-{core}"))
    }

    /// The blob store's directory.
    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(self.history_retention_days.saturating_mul(24 * 3600))
    }

    fn options(&self, repair: bool) -> LocalOptions {
        LocalOptions {
            segment_bytes: self.segment_bytes,
            fsync: self.fsync_policy(),
            retention: self.retention(),
            repair,
            snapshot_replay_ops: self.snapshot_every_ops,
        }
    }
}

/// Documents are placed on cores by hash, so a data directory written with N cores must be
/// served with N cores: the layout file records N, and a mismatch is refused.
pub(crate) fn check_layout(cfg: &StorageConfig, cores: usize) -> Result<(), StorageError> {
    let dir = cfg.data_dir.join("oplog");
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::Invalid(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("LAYOUT");
    let want = format!("cores = {cores}\n");
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => Err(StorageError::Invalid(format!(
            "{} holds documents placed on {} cores; start with --cores {} (moving documents between core counts is not supported yet)",
            cfg.data_dir.display(),
            have.trim().trim_start_matches("cores = "),
            have.trim().trim_start_matches("cores = "),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("LAYOUT.tmp");
            let write = || -> std::io::Result<()> {
                std::fs::write(&tmp, &want)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&dir)?.sync_all()
            };
            write().map_err(|e| StorageError::Invalid(format!("writing {}: {e}", path.display())))
        }
        Err(e) => Err(StorageError::Invalid(format!("reading {}: {e}", path.display()))),
    }
}

/// Opens the configured blob store: the data directory's `blobs/`, or the S3 bucket
/// (reached once here, so a wrong endpoint, bucket or key fails at start).
pub fn open_blobs(cfg: &StorageConfig) -> Result<Arc<dyn BlobStore>, StorageError> {
    match cfg.blobs {
        BlobsKind::Local => Ok(Arc::new(LocalBlobs::open(cfg.blob_dir(), Arc::new(RealFs))?)),
        #[cfg(feature = "s3")]
        BlobsKind::S3 => {
            let secret =
                std::env::var("TANDEM_S3_SECRET_ACCESS_KEY").unwrap_or_else(|_| cfg.s3.secret_access_key.clone());
            let opts = tandem_storage::s3::S3Options {
                bucket: cfg.s3.bucket.clone(),
                region: cfg.s3.region.clone(),
                endpoint: cfg.s3.endpoint.clone(),
                prefix: cfg.s3.prefix.clone(),
                access_key_id: cfg.s3.access_key_id.clone(),
                secret_access_key: secret,
                virtual_hosted_style: cfg.s3.virtual_hosted_style,
                request_timeout: Duration::from_millis(cfg.s3.request_timeout_ms),
            };
            let blobs = tandem_storage::s3::S3Blobs::open(&opts)?;
            blobs.check()?;
            info!("blobs (snapshots, exports, uploads) in {blobs:?}");
            Ok(Arc::new(blobs))
        }
        #[cfg(not(feature = "s3"))]
        BlobsKind::S3 => Err(StorageError::Invalid("this tandem was built without S3 support".into())),
    }
}

/// Opens core `core`'s log (recovering it), as `tandem serve` and `tandem repair` do.
pub fn open_core_log(
    cfg: &StorageConfig,
    cores: usize,
    core: usize,
    repair: bool,
    blobs: Arc<dyn BlobStore>,
) -> Result<LocalLog, StorageError> {
    check_layout(cfg, cores)?;
    open_local(cfg, core, repair, blobs)
}

/// Opens core `core`'s log, the layout already checked.
fn open_local(
    cfg: &StorageConfig,
    core: usize,
    repair: bool,
    blobs: Arc<dyn BlobStore>,
) -> Result<LocalLog, StorageError> {
    LocalLog::open(cfg.oplog_dir(core), blobs, Arc::new(RealFs), cfg.options(repair))
}

fn describe(core: usize, r: &RecoveryReport) -> String {
    let mut s = format!(
        "core {core}: op log recovered in {:.1} ms: {} segments, {} records, {:.1} MB, {} documents",
        r.elapsed.as_secs_f64() * 1e3,
        r.segments,
        r.records,
        r.bytes as f64 / 1e6,
        r.documents
    );
    if let Some((file, offset, bytes)) = &r.torn_tail {
        s.push_str(&format!("; truncated a torn last write ({bytes} bytes at {} offset {offset})", file.display()));
    }
    s
}

pub(crate) enum StorageReq {
    Append(Vec<LogOp>),
    Load(DocId),
    Snapshot(DocId, Box<Snapshot>),
    History(DocId, Arc<SessionInfo>, HistoryQuery),
}

pub(crate) enum StorageReply {
    /// The oldest batch not yet answered is durable, or the log failed.
    Appended(Result<usize, String>),
    Loaded(DocId, Result<Box<DocState>, String>),
    History(DocId, Arc<SessionInfo>, HistoryQuery, Result<HistoryAnswer, (ErrorCode, String)>),
}

/// Answers a history request from the log.
fn answer_history(log: &mut dyn OpLog, doc: &str, query: HistoryQuery) -> Result<HistoryAnswer, (ErrorCode, String)> {
    let refused = |e: StorageError| match e {
        StorageError::HistoryUnavailable { .. } => (ErrorCode::HistoryUnavailable, e.to_string()),
        StorageError::FutureRevision { .. } => (ErrorCode::NoSuchRevision, e.to_string()),
        e => (ErrorCode::Internal, format!("reading the document's history failed: {e}")),
    };
    match query {
        HistoryQuery::At(rev) | HistoryQuery::Restore { rev, .. } => {
            let d = log.document_at(doc, rev).map_err(refused)?;
            Ok(HistoryAnswer::At { rev, content: d.to_delta() })
        }
        HistoryQuery::Changes { from_rev, to_rev } => {
            let base = log.document_at(doc, from_rev).map_err(refused)?;
            let mut redline = tandem_engine::redline::Redline::new(&base);
            if to_rev > from_rev {
                for op in log.read(doc, from_rev + 1, to_rev).map_err(refused)? {
                    let author = op.commit.author.to_string();
                    redline.apply(&author, &op.commit.delta).map_err(|e| {
                        (ErrorCode::Internal, format!("revision {} does not apply to the one before: {e}", op.rev()))
                    })?;
                }
            }
            Ok(HistoryAnswer::Changes { from_rev, to_rev, content: redline.into_delta() })
        }
        HistoryQuery::List { from_rev, limit } => {
            let latest = log.latest_rev(doc).map_err(refused)?;
            let oldest = log.oldest_readable(doc).map_err(refused)?;
            let from = from_rev.max(oldest + 1);
            let revisions = log
                .revisions(doc, from, limit as usize)
                .map_err(refused)?
                .into_iter()
                .map(|r| RevisionRecord { rev: r.rev, author: r.author, client_seq: r.client_seq, time_ms: r.time_ms })
                .collect();
            Ok(HistoryAnswer::List { oldest, latest, revisions })
        }
    }
}

/// Requests a core may have queued at once (appends: one; loads: one per document loading;
/// snapshots: one per document due; history requests: refused as `overloaded` past this).
const QUEUE: usize = 8192;

/// A core's end of its storage thread.
pub(crate) struct StorageLink {
    reqs: ArrayQueue<StorageReq>,
    replies: ArrayQueue<StorageReply>,
    waker: AtomicWaker,
    thread: std::sync::OnceLock<Thread>,
    stop: AtomicBool,
}

impl StorageLink {
    /// Queues a request; gives it back when the queue is full.
    pub(crate) fn send(&self, req: StorageReq) -> Result<(), StorageReq> {
        self.reqs.push(req)?;
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
        Ok(())
    }

    pub(crate) fn try_reply(&self) -> Option<StorageReply> {
        self.replies.pop()
    }

    /// Waits for a reply.
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if !self.replies.is_empty() {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.replies.is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await;
    }

    fn reply(&self, reply: StorageReply) {
        // Never full: every request has at most one reply and requests are bounded alike.
        if self.replies.push(reply).is_err() {
            error!("storage reply queue full: a reply was lost");
        }
        self.waker.wake();
    }

    /// Asks the thread to sync and stop once its queue is empty.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// A running storage thread.
pub(crate) struct StorageThread {
    pub(crate) link: Arc<StorageLink>,
    pub(crate) handle: JoinHandle<()>,
}

/// Opens core `core`'s log and starts its storage thread (with the local log, after
/// [`check_layout`]).
pub(crate) fn start(
    cfg: &StorageConfig,
    core: usize,
    limits: Limits,
    feed: Option<Arc<dyn FeedSink>>,
    blobs: Arc<dyn BlobStore>,
) -> std::io::Result<StorageThread> {
    let opening = |e: StorageError| std::io::Error::other(format!("opening the op log of core {core}: {e}"));
    let log: Box<dyn OpLog + Send> = match cfg.oplog {
        OplogKind::Local => {
            let log = open_local(cfg, core, false, blobs).map_err(opening)?;
            info!("{}", describe(core, log.recovery()));
            if core == 0 {
                info!("op log fsync policy: {}", cfg.fsync_policy());
            }
            Box::new(log)
        }
        #[cfg(feature = "scylla")]
        OplogKind::Scylla => {
            Box::new(tandem_storage::scylla::ScyllaLog::connect(cfg.scylla.options(cfg.retention())).map_err(opening)?)
        }
        #[cfg(not(feature = "scylla"))]
        OplogKind::Scylla => return Err(opening(StorageError::Invalid("built without the `scylla` feature".into()))),
        #[cfg(feature = "postgres")]
        OplogKind::Postgres => Box::new(
            tandem_storage::postgres::PostgresLog::connect(cfg.postgres.options(cfg.retention())).map_err(opening)?,
        ),
        #[cfg(not(feature = "postgres"))]
        OplogKind::Postgres => {
            return Err(opening(StorageError::Invalid("built without the `postgres` feature".into())));
        }
        OplogKind::None => return Err(opening(StorageError::Invalid("storage.oplog = \"none\"".into()))),
    };
    let link = Arc::new(StorageLink {
        reqs: ArrayQueue::new(QUEUE),
        replies: ArrayQueue::new(QUEUE + 1),
        waker: AtomicWaker::new(),
        thread: std::sync::OnceLock::new(),
        stop: AtomicBool::new(false),
    });
    let compact_every = Duration::from_secs(cfg.compact_interval_s);
    let sync_every = match cfg.fsync_policy() {
        FsyncPolicy::Interval(d) => Some(d),
        _ => None,
    };
    let thread_link = Arc::clone(&link);
    let handle = std::thread::Builder::new().name(format!("tandem-storage-{core}")).spawn(move || {
        let feed = feed.map(FeedSource::new);
        run(core, log, &thread_link, limits, compact_every, sync_every, feed);
    })?;
    let _ = link.thread.set(handle.thread().clone());
    Ok(StorageThread { link, handle })
}

fn run(
    core: usize,
    mut log: Box<dyn OpLog + Send>,
    link: &StorageLink,
    limits: Limits,
    compact_every: Duration,
    sync_every: Option<Duration>,
    mut feed: Option<FeedSource>,
) {
    let mut next_compaction = Instant::now() + compact_every;
    let mut feed_behind = false;
    let mut last_sync = Instant::now();
    loop {
        while let Some(req) = link.reqs.pop() {
            match req {
                StorageReq::Append(ops) => {
                    let result = log.append(&ops).map(|a| a.written + a.duplicates).map_err(|e| e.to_string());
                    let durable = result.is_ok();
                    link.reply(StorageReply::Appended(result));
                    // After the reply: the feed never delays an ack.
                    if durable && let Some(feed) = &mut feed {
                        feed.durable(&ops);
                        feed_behind = feed.behind() > 0;
                    }
                }
                StorageReq::Load(doc) => {
                    let loaded = log
                        .load(doc.as_str())
                        .and_then(|l| l.into_state(limits.clone()).map(Box::new))
                        .map_err(|e| e.to_string());
                    if let Err(e) = &loaded {
                        error!(core, doc = %doc, "loading a document failed: {e}");
                    }
                    if let (Ok(state), Some(feed)) = (&loaded, &mut feed) {
                        feed.loaded(doc.as_str(), state.rev());
                        feed_behind = feed.behind() > 0;
                    }
                    link.reply(StorageReply::Loaded(doc, loaded));
                }
                StorageReq::History(doc, from, query) => {
                    let answer = answer_history(log.as_mut(), doc.as_str(), query);
                    link.reply(StorageReply::History(doc, from, query, answer));
                }
                StorageReq::Snapshot(doc, mut snapshot) => {
                    snapshot.time_ms = now_ms();
                    if let Err(e) = log.put_snapshot(doc.as_str(), &snapshot) {
                        warn!(core, doc = %doc, rev = snapshot.rev, "snapshot failed: {e}");
                    }
                }
            }
        }
        // Between requests, never before one: a bounded amount of the feed's catching up.
        if feed_behind
            && link.reqs.is_empty()
            && let Some(feed) = &mut feed
        {
            feed_behind = feed.catch_up(log.as_mut());
        }
        if link.stop.load(Ordering::Acquire) && link.reqs.is_empty() {
            if let Err(e) = log.sync() {
                error!(core, "final op log sync failed: {e}");
            }
            return;
        }
        if Instant::now() >= next_compaction {
            next_compaction = Instant::now() + compact_every;
            match log.compact(now_ms()) {
                Ok(c) if c.segments_deleted > 0 => info!(core, "compaction: {c:?}"),
                Ok(_) => {}
                Err(e) => warn!(core, "compaction failed: {e}"),
            }
        }
        // With fsync = interval, appends sync themselves once the interval has passed; this
        // covers a quiet log whose last writes would otherwise wait for the next append.
        if let Some(every) = sync_every
            && last_sync.elapsed() >= every
        {
            last_sync = Instant::now();
            if let Err(e) = log.sync() {
                error!(core, "op log sync failed: {e}");
            }
        }
        let mut wait =
            sync_every.unwrap_or(compact_every).min(next_compaction.saturating_duration_since(Instant::now()));
        if feed_behind {
            wait = wait.min(Duration::from_millis(10));
        }
        if link.reqs.is_empty() {
            std::thread::park_timeout(wait.max(Duration::from_millis(1)));
        }
    }
}
