//! The ScyllaDB backend (cargo feature `scylla`): the op log for a cluster of servers.
//!
//! Schema (created by [`migrate`], `tandem migrate`), in one keyspace:
//!
//! - `ops`: partition `doc`, clustering `rev` ascending; one row per op (`author`,
//!   `client_seq`, `time_ms`, `delta` = the op's rkyv archive, as in the embedded log), and two
//!   static (per-document) cells: `head`, the latest revision, and `floor`, the first revision
//!   whose op is kept.
//! - `snapshots`: partition `doc`, clustering `rev` descending: an index row per snapshot.
//! - `snapshot_chunks`: partition `(doc, rev)`, clustering `chunk`: the snapshot's bytes (the
//!   embedded log's snapshot encoding, checksummed) in chunks, so a large document never makes
//!   a large cell. The index row is written after every chunk, so a snapshot is whole or absent.
//! - `schema_version`: the version [`migrate`] applied; [`ScyllaLog::connect`] checks it.
//!
//! **The fenced append.** Every append of a document's ops is one conditional batch on the
//! document's partition: the first statement moves `head` from the revision before the ops
//! to the last of them `IF head = <expected>` (or `IF head = null` for a new document), the
//! others insert the op rows. A Paxos round (a lightweight transaction) decides it, so two
//! sequencers can never both write revision N: the one whose condition no longer holds gets
//! `[applied] = false`, reads the head at SERIAL consistency, and either finds its own ops
//! there (a retried append: duplicates), a different op (a [`StorageError::Conflict`]: another
//! sequencer owns the document) or a gap. ARCHITECTURE.md ("Fencing appends in ScyllaDB")
//! gives the cost.
//!
//! The driver is async; the backend runs it on its own current-thread Tokio runtime, and its
//! calls block, like every [`OpLog`]: only a storage thread calls them.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use tandem_engine::ClientId;
use tracing::info;

use crate::db::{backend, by_document, check_doc, i64_of, runtime, u64_of};
use crate::error::StorageError;
use crate::format::LogOp;
use crate::oplog::{Appended, Compacted, OpLog};
use crate::snapshot::Snapshot;

/// The schema version [`migrate`] creates and [`ScyllaLog::connect`] requires.
pub const SCHEMA_VERSION: i32 = 2;

/// Bytes per snapshot chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Most op rows in one conditional batch...
const BATCH_OPS: usize = 64;
/// ...and most delta bytes (ScyllaDB refuses batches over `batch_size_fail_threshold_in_kb`,
/// 1024 KiB by default; one larger op goes alone, as a single statement).
const BATCH_BYTES: usize = 256 * 1024;
/// Rows per page when reading ops.
const PAGE_ROWS: i32 = 2000;
/// Times an append re-reads the head and tries again before giving up.
const CAS_ATTEMPTS: usize = 16;
/// Documents whose head the backend remembers (to skip a read before an append).
const HEAD_CACHE: usize = 100_000;

/// How to reach the cluster and what to ask of it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace (created by [`migrate`]).
    pub keyspace: String,
    /// Consistency of reads and writes (and of a lightweight transaction's commit): `QUORUM`
    /// by default; `LOCAL_QUORUM` for several datacenters.
    pub consistency: String,
    /// Consistency of the Paxos round that fences appends: `SERIAL` or `LOCAL_SERIAL`.
    pub serial_consistency: String,
    /// Client-side timeout of one request.
    pub request_timeout: Duration,
    /// The datacenter to prefer, if any.
    pub local_dc: Option<String>,
    /// User name and password, if the cluster requires them.
    pub credentials: Option<(String, String)>,
    /// History younger than this is kept by [`OpLog::compact`].
    pub retention: Duration,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "tandem".into(),
            consistency: "QUORUM".into(),
            serial_consistency: "SERIAL".into(),
            request_timeout: Duration::from_secs(5),
            local_dc: None,
            credentials: None,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl ScyllaOptions {
    /// Options for the nodes in a `TANDEM_SCYLLA_URI`-style string: `host:port[,host:port...]`,
    /// with or without a `scylla://` prefix.
    pub fn from_uri(uri: &str) -> Result<Self, StorageError> {
        let rest = uri.strip_prefix("scylla://").unwrap_or(uri);
        let nodes: Vec<String> = rest.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if nodes.is_empty() {
            return Err(StorageError::Invalid(format!("{uri:?}: expected host:port[,host:port...]")));
        }
        Ok(Self { nodes, ..Self::default() })
    }

    /// Checks every value, so a bad configuration fails at start-up with its name.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("scylla.nodes is empty".into());
        }
        check_keyspace(&self.keyspace)?;
        parse_consistency(&self.consistency)?;
        parse_serial(&self.serial_consistency)?;
        if self.request_timeout.is_zero() {
            return Err("scylla.request_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

fn check_keyspace(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.len() <= 48
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(format!("scylla.keyspace {k:?}: letters, digits and _, a letter first, at most 48")) }
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(format!(
                "scylla.consistency {s:?}: expected ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM or LOCAL_ONE"
            ));
        }
    })
}

fn parse_serial(s: &str) -> Result<SerialConsistency, String> {
    match s.to_ascii_uppercase().as_str() {
        "SERIAL" => Ok(SerialConsistency::Serial),
        "LOCAL_SERIAL" => Ok(SerialConsistency::LocalSerial),
        _ => Err(format!("scylla.serial_consistency {s:?}: expected SERIAL or LOCAL_SERIAL")),
    }
}

async fn session(opts: &ScyllaOptions) -> Result<Session, StorageError> {
    opts.validate().map_err(StorageError::Invalid)?;
    let profile = ExecutionProfile::builder()
        .consistency(parse_consistency(&opts.consistency).map_err(StorageError::Invalid)?)
        .serial_consistency(Some(parse_serial(&opts.serial_consistency).map_err(StorageError::Invalid)?))
        .request_timeout(Some(opts.request_timeout))
        .build();
    let mut b = SessionBuilder::new()
        .known_nodes(&opts.nodes)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(opts.request_timeout);
    if let Some(dc) = &opts.local_dc {
        b = b.prefer_datacenter(dc.clone());
    }
    if let Some((user, password)) = &opts.credentials {
        b = b.user(user, password);
    }
    b.build().await.map_err(|e| backend(&format!("connecting to {}", opts.nodes.join(",")), e))
}

/// What [`migrate`] creates: the keyspace's replication and whether to turn tablets off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The keyspace's replication map, as CQL (e.g.
    /// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`).
    pub replication: String,
    /// Add `AND tablets = {'enabled': false}`: ScyllaDB releases before 2025.4 refuse
    /// lightweight transactions in tablet keyspaces, which newer releases create by default.
    /// Off for Apache Cassandra, which does not know the option.
    pub disable_tablets: bool,
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            disable_tablets: true,
        }
    }
}

/// The statements [`migrate`] runs, in order (all idempotent).
pub fn migration_statements(keyspace: &str, m: &Migration) -> Vec<String> {
    let k = keyspace;
    let tablets = if m.disable_tablets { " AND tablets = {'enabled': false}" } else { "" };
    vec![
        format!("CREATE KEYSPACE IF NOT EXISTS {k} WITH replication = {}{tablets}", m.replication),
        format!(
            "CREATE TABLE IF NOT EXISTS {k}.ops (doc text, rev bigint, head bigint static, floor bigint static, \
             author bigint, client_seq bigint, time_ms bigint, delta blob, note text, PRIMARY KEY ((doc), rev)) \
             WITH CLUSTERING ORDER BY (rev ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {k}.snapshots (doc text, rev bigint, time_ms bigint, bytes bigint, chunks int, \
             PRIMARY KEY ((doc), rev)) WITH CLUSTERING ORDER BY (rev DESC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {k}.snapshot_chunks (doc text, rev bigint, chunk int, data blob, \
             PRIMARY KEY ((doc, rev), chunk))"
        ),
        format!("CREATE TABLE IF NOT EXISTS {k}.schema_version (id int PRIMARY KEY, version int, applied_ms bigint)"),
    ]
}

/// Creates the keyspace and tables (`tandem migrate`); safe to run again. Returns the
/// statements run.
pub fn migrate(opts: &ScyllaOptions, m: &Migration) -> Result<Vec<String>, StorageError> {
    check_keyspace(&opts.keyspace).map_err(StorageError::Invalid)?;
    let rt = runtime("ScyllaDB")?;
    rt.block_on(async {
        let s = session(opts).await?;
        let statements = migration_statements(&opts.keyspace, m);
        for st in &statements {
            s.query_unpaged(st.as_str(), ()).await.map_err(|e| backend(st, e))?;
        }
        // Version 2 added the ops' `note` column (comments, named versions): added to a
        // version 1 table here, once (ALTER TABLE ... ADD is not idempotent).
        let has_note = s
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = 'ops' \
                 AND column_name = 'note'",
                (opts.keyspace.as_str(),),
            )
            .await
            .map_err(|e| backend("reading the ops table's columns", e))?
            .into_rows_result()
            .map_err(|e| backend("reading the ops table's columns", e))?
            .rows_num()
            > 0;
        if !has_note {
            let st = format!("ALTER TABLE {}.ops ADD note text", opts.keyspace);
            s.query_unpaged(st.as_str(), ()).await.map_err(|e| backend(&st, e))?;
        }
        s.await_schema_agreement().await.map_err(|e| backend("waiting for schema agreement", e))?;
        let version =
            format!("INSERT INTO {}.schema_version (id, version, applied_ms) VALUES (0, ?, ?)", opts.keyspace);
        s.query_unpaged(version.as_str(), (SCHEMA_VERSION, crate::now_ms() as i64))
            .await
            .map_err(|e| backend("recording the schema version", e))?;
        Ok(statements)
    })
}

/// Drops the keyspace and everything in it (tests).
pub fn drop_keyspace(opts: &ScyllaOptions) -> Result<(), StorageError> {
    check_keyspace(&opts.keyspace).map_err(StorageError::Invalid)?;
    let rt = runtime("ScyllaDB")?;
    rt.block_on(async {
        let s = session(opts).await?;
        let st = format!("DROP KEYSPACE IF EXISTS {}", opts.keyspace);
        s.query_unpaged(st.as_str(), ()).await.map_err(|e| backend(&st, e))?;
        Ok(())
    })
}

struct Statements {
    cas_first: PreparedStatement,
    cas_next: PreparedStatement,
    insert_op: PreparedStatement,
    meta: PreparedStatement,
    meta_serial: PreparedStatement,
    read_ops: PreparedStatement,
    set_floor: PreparedStatement,
    delete_ops_before: PreparedStatement,
    put_chunk: PreparedStatement,
    put_snapshot: PreparedStatement,
    snapshot_at_or_before: PreparedStatement,
    snapshot_at_or_after: PreparedStatement,
    snapshots_of: PreparedStatement,
    chunks: PreparedStatement,
    delete_snapshot: PreparedStatement,
    delete_chunks: PreparedStatement,
}

impl Statements {
    async fn prepare(s: &Session, k: &str) -> Result<Self, StorageError> {
        let p = |cql: String| async move {
            s.prepare(cql.clone()).await.map_err(|e| backend(&format!("preparing {cql}"), e))
        };
        let set = "author = ?, client_seq = ?, time_ms = ?, delta = ?, note = ? WHERE doc = ? AND rev = ?";
        let mut meta_serial = p(format!("SELECT head, floor FROM {k}.ops WHERE doc = ? LIMIT 1")).await?;
        meta_serial.set_consistency(Consistency::Serial);
        let mut read_ops = p(format!(
            "SELECT rev, author, client_seq, time_ms, delta, note FROM {k}.ops WHERE doc = ? AND rev >= ? AND rev <= ?"
        ))
        .await?;
        read_ops.set_page_size(PAGE_ROWS);
        let mut chunks = p(format!("SELECT chunk, data FROM {k}.snapshot_chunks WHERE doc = ? AND rev = ?")).await?;
        chunks.set_page_size(8);
        Ok(Self {
            cas_first: p(format!("UPDATE {k}.ops SET head = ?, {set} IF head = null")).await?,
            cas_next: p(format!("UPDATE {k}.ops SET head = ?, {set} IF head = ?")).await?,
            insert_op: p(format!("UPDATE {k}.ops SET {set}")).await?,
            meta: p(format!("SELECT head, floor FROM {k}.ops WHERE doc = ? LIMIT 1")).await?,
            meta_serial,
            read_ops,
            set_floor: p(format!("UPDATE {k}.ops SET floor = ? WHERE doc = ?")).await?,
            delete_ops_before: p(format!("DELETE FROM {k}.ops WHERE doc = ? AND rev < ?")).await?,
            put_chunk: p(format!("INSERT INTO {k}.snapshot_chunks (doc, rev, chunk, data) VALUES (?, ?, ?, ?)"))
                .await?,
            put_snapshot: p(format!(
                "INSERT INTO {k}.snapshots (doc, rev, time_ms, bytes, chunks) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            snapshot_at_or_before: p(format!(
                "SELECT rev, chunks, bytes FROM {k}.snapshots WHERE doc = ? AND rev <= ? LIMIT 1"
            ))
            .await?,
            snapshot_at_or_after: p(format!(
                "SELECT rev FROM {k}.snapshots WHERE doc = ? AND rev >= ? ORDER BY rev ASC LIMIT 1"
            ))
            .await?,
            snapshots_of: p(format!("SELECT rev, time_ms FROM {k}.snapshots WHERE doc = ?")).await?,
            chunks,
            delete_snapshot: p(format!("DELETE FROM {k}.snapshots WHERE doc = ? AND rev = ?")).await?,
            delete_chunks: p(format!("DELETE FROM {k}.snapshot_chunks WHERE doc = ? AND rev = ?")).await?,
        })
    }
}

/// A document's per-partition cells.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    head: u64,
    floor: u64,
}

/// The op log in a ScyllaDB (or Cassandra) cluster. See the module documentation.
pub struct ScyllaLog {
    rt: tokio::runtime::Runtime,
    session: Session,
    st: Statements,
    opts: ScyllaOptions,
    /// The last head this backend saw per document (a hint: a stale one costs a retry).
    heads: HashMap<Arc<str>, u64>,
    /// Documents with snapshots that compaction should look at.
    candidates: HashSet<String>,
}

impl std::fmt::Debug for ScyllaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaLog").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl ScyllaLog {
    /// Connects and checks the keyspace was migrated to this build's schema.
    pub fn connect(opts: ScyllaOptions) -> Result<Self, StorageError> {
        let rt = runtime("ScyllaDB")?;
        let (session, st) = rt.block_on(async {
            let s = session(&opts).await?;
            let q = format!("SELECT version FROM {}.schema_version WHERE id = 0", opts.keyspace);
            let not_migrated = || {
                StorageError::Invalid(format!(
                    "keyspace {} has no Tandem schema: run `tandem migrate` first",
                    opts.keyspace
                ))
            };
            let rows = s.query_unpaged(q.as_str(), ()).await.map_err(|_| not_migrated())?;
            let version = rows
                .into_rows_result()
                .map_err(|e| backend(&q, e))?
                .maybe_first_row::<(i32,)>()
                .map_err(|e| backend(&q, e))?
                .ok_or_else(not_migrated)?
                .0;
            if version != SCHEMA_VERSION {
                return Err(StorageError::Invalid(format!(
                    "keyspace {} has schema version {version}; this build uses {SCHEMA_VERSION} (run `tandem migrate`)",
                    opts.keyspace
                )));
            }
            let st = Statements::prepare(&s, &opts.keyspace).await?;
            Ok((s, st))
        })?;
        info!(nodes = %opts.nodes.join(","), keyspace = %opts.keyspace, consistency = %opts.consistency, "op log: ScyllaDB");
        Ok(Self { rt, session, st, opts, heads: HashMap::new(), candidates: HashSet::new() })
    }

    /// The options it connected with.
    pub fn options(&self) -> &ScyllaOptions {
        &self.opts
    }

    /// Drops the history of `doc` before `rev` (see [`OpLog::drop_history_before`]), with its
    /// snapshot list when the caller has read it; returns the snapshots deleted.
    fn drop_history(&mut self, doc: &str, rev: u64, snaps: Option<&[(u64, u64)]>) -> Result<usize, StorageError> {
        let (s, st) = (&self.session, &self.st);
        let m = self.rt.block_on(meta(s, &st.meta_serial, doc))?;
        if m.head == 0 {
            return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
        }
        if rev <= m.floor {
            return Ok(0);
        }
        if rev > m.head + 1 {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev, latest: m.head });
        }
        let read;
        let snaps = match snaps {
            Some(v) => v,
            None => {
                read = self.rt.block_on(snapshots_of(s, st, doc))?;
                &read[..]
            }
        };
        if !snaps.iter().any(|&(r, _)| r + 1 >= rev) {
            return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
        }
        self.rt.block_on(async {
            // The floor first: a reader that sees rows gone also sees why.
            s.execute_unpaged(&st.set_floor, (i64_of(rev)?, doc)).await.map_err(|e| backend("raising the floor", e))?;
            s.execute_unpaged(&st.delete_ops_before, (doc, i64_of(rev)?))
                .await
                .map_err(|e| backend("deleting old ops", e))?;
            Ok::<_, StorageError>(())
        })?;
        // Snapshots before the oldest readable revision are of no more use.
        let keep_from = snaps.iter().map(|&(r, _)| r).filter(|&r| r + 1 >= rev).min().unwrap_or(u64::MAX);
        let old: Vec<u64> = snaps.iter().map(|&(r, _)| r).filter(|&r| r < keep_from).collect();
        self.rt.block_on(delete_snapshots(s, st, doc, &old))?;
        Ok(old.len())
    }

    fn remember_head(&mut self, doc: &Arc<str>, head: u64) {
        if self.heads.len() >= HEAD_CACHE && !self.heads.contains_key(doc) {
            self.heads.clear();
        }
        self.heads.insert(Arc::clone(doc), head);
    }
}

/// Reads a document's head and floor (0 and 1 for a document never written).
async fn meta(s: &Session, st: &PreparedStatement, doc: &str) -> Result<Meta, StorageError> {
    let r = s.execute_unpaged(st, (doc,)).await.map_err(|e| backend("reading a document's head", e))?;
    let row = r
        .into_rows_result()
        .map_err(|e| backend("reading a document's head", e))?
        .maybe_first_row::<(Option<i64>, Option<i64>)>()
        .map_err(|e| backend("reading a document's head", e))?;
    let (head, floor) = row.unwrap_or((None, None));
    Ok(Meta {
        head: head.map(|h| u64_of(h, "head")).transpose()?.unwrap_or(0),
        floor: floor.map(|f| u64_of(f, "floor")).transpose()?.unwrap_or(1).max(1),
    })
}

/// Reads the op rows of `doc` in `from..=to` (whatever the floor), in order.
async fn read_rows(s: &Session, st: &Statements, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError> {
    let what = "reading ops";
    let mut out = Vec::new();
    let mut paging = PagingState::start();
    let doc_arc: Arc<str> = doc.into();
    loop {
        let (r, next) = s
            .execute_single_page(&st.read_ops, (doc, i64_of(from)?, i64_of(to)?), paging)
            .await
            .map_err(|e| backend(what, e))?;
        let rows = r.into_rows_result().map_err(|e| backend(what, e))?;
        for row in rows
            .rows::<(i64, Option<i64>, Option<i64>, Option<i64>, Option<Vec<u8>>, Option<String>)>()
            .map_err(|e| backend(what, e))?
        {
            let (rev, author, seq, time, delta, note) = row.map_err(|e| backend(what, e))?;
            let rev = u64_of(rev, "revision")?;
            let (Some(author), Some(seq), Some(time), Some(delta)) = (author, seq, time, delta) else {
                return Err(StorageError::Invalid(format!("{doc:?} revision {rev}: an op row with missing cells")));
            };
            let cells = (ClientId(u64_of(author, "author")?), u64_of(seq, "client_seq")?, u64_of(time, "time")?);
            out.push(LogOp::from_row(&doc_arc, rev, cells, &delta, note.as_deref())?);
        }
        match next.into_paging_control_flow() {
            ControlFlow::Break(()) => return Ok(out),
            ControlFlow::Continue(p) => paging = p,
        }
    }
}

/// About what an op's row weighs in a batch.
fn row_bytes(op: &LogOp) -> usize {
    op.commit.delta.to_archive().len() + op.commit.note.as_ref().map_or(0, |n| n.bytes())
}

fn op_values(op: &LogOp) -> Result<Vec<CqlValue>, StorageError> {
    let c = &op.commit;
    Ok(vec![
        CqlValue::BigInt(i64_of(c.author.0)?),
        CqlValue::BigInt(i64_of(c.client_seq)?),
        CqlValue::BigInt(i64_of(op.time_ms)?),
        CqlValue::Blob(c.delta.to_archive().to_vec()),
        // An op's note is empty, not null: a null cell would be a tombstone.
        CqlValue::Text(op.note_json()?),
        CqlValue::Text(op.doc.to_string()),
        CqlValue::BigInt(i64_of(c.rev)?),
    ])
}

/// Whether a conditional statement or batch was applied (its `[applied]` column).
fn applied(r: scylla::response::query_result::QueryResult) -> Result<bool, StorageError> {
    let what = "reading a conditional write's result";
    let rows = r.into_rows_result().map_err(|e| backend(what, e))?;
    let Some((at, _)) = rows.column_specs().get_by_name("[applied]") else {
        return Err(backend(what, "no [applied] column"));
    };
    let row = rows.maybe_first_row::<Row>().map_err(|e| backend(what, e))?;
    Ok(row.and_then(|r| r.columns.get(at).cloned().flatten()).and_then(|v| v.as_boolean()).unwrap_or(false))
}

/// Appends one document's ops (consecutive revisions): conditional batches that move the
/// head, each fenced on the head before it. `hint` is the head the caller believes.
async fn append_doc(
    s: &Session,
    st: &Statements,
    ops: &[LogOp],
    hint: Option<u64>,
) -> Result<(Appended, u64), StorageError> {
    let doc: &str = &ops[0].doc;
    let mut out = Appended::default();
    let mut head = match hint {
        Some(h) => h,
        None => meta(s, &st.meta_serial, doc).await?.head,
    };
    let mut i = 0;
    let mut attempts = 0;
    while i < ops.len() {
        let first = ops[i].rev();
        if head + 1 == first {
            // Take ops while the batch stays small.
            let mut j = i + 1;
            let mut bytes = row_bytes(&ops[i]);
            while j < ops.len() && j - i < BATCH_OPS {
                bytes += row_bytes(&ops[j]);
                if bytes > BATCH_BYTES {
                    break;
                }
                j += 1;
            }
            let last = ops[j - 1].rev();
            let mut first_values = vec![CqlValue::BigInt(i64_of(last)?)];
            first_values.extend(op_values(&ops[i])?);
            let cas = if head == 0 { &st.cas_first } else { &st.cas_next };
            if head > 0 {
                first_values.push(CqlValue::BigInt(i64_of(head)?));
            }
            let result = if j == i + 1 {
                s.execute_unpaged(cas, first_values).await
            } else {
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.append_statement(cas.clone());
                let mut values = vec![first_values];
                for op in &ops[i + 1..j] {
                    batch.append_statement(st.insert_op.clone());
                    values.push(op_values(op)?);
                }
                s.batch(&batch, values).await
            };
            let result = result.map_err(|e| backend(&format!("appending {doc:?} revisions {first}..={last}"), e))?;
            if applied(result)? {
                out.written += j - i;
                head = last;
                i = j;
                continue;
            }
        } else if head >= first {
            // Ours already (a retried append), or someone else's.
            let upto = head.min(ops[ops.len() - 1].rev());
            let existing = read_rows(s, st, doc, first, upto).await?;
            if existing.first().is_none_or(|e| e.rev() != first) {
                // Dropped history: the revision is taken, but by what cannot be told.
                let oldest = existing.first().map_or(upto + 1, LogOp::rev);
                return Err(StorageError::HistoryUnavailable { doc: doc.to_owned(), rev: first, oldest });
            }
            if existing.len() as u64 != upto + 1 - first {
                return Err(StorageError::Invalid(format!(
                    "{doc:?}: revisions {first}..={upto} read back {} ops (a replica missed writes?)",
                    existing.len()
                )));
            }
            for e in &existing {
                let mine = &ops[i].commit;
                if e.commit.author != mine.author || e.commit.client_seq != mine.client_seq {
                    return Err(StorageError::Conflict {
                        doc: doc.to_owned(),
                        rev: mine.rev,
                        existing_author: e.commit.author.0,
                        existing_seq: e.commit.client_seq,
                    });
                }
                out.duplicates += 1;
                i += 1;
            }
            continue;
        } else if hint.is_none() || attempts > 0 {
            return Err(StorageError::RevisionGap { doc: doc.to_owned(), expected: head + 1, got: first });
        }
        // The head moved (or the hint was stale): read it and look again.
        attempts += 1;
        if attempts > CAS_ATTEMPTS {
            return Err(StorageError::Backend(format!(
                "appending to {doc:?}: the head kept moving ({attempts} attempts); another server is writing it"
            )));
        }
        let m = meta(s, &st.meta_serial, doc).await?;
        if m.head < head {
            return Err(StorageError::Backend(format!("{doc:?}: the head went back from {head} to {}", m.head)));
        }
        head = m.head;
    }
    Ok((out, head))
}

impl OpLog for ScyllaLog {
    fn append(&mut self, ops: &[LogOp]) -> Result<Appended, StorageError> {
        // Each document's ops, in order; a batch is atomic per document (documents are in
        // different partitions), and revisions must run on without gaps within it.
        let groups = by_document(ops)?;
        let (s, st, heads) = (&self.session, &self.st, &self.heads);
        let results = self.rt.block_on(join_all(groups.values().map(|g| {
            let hint = heads.get(&*g[0].doc).copied();
            async move { (Arc::clone(&g[0].doc), append_doc(s, st, g, hint).await) }
        })));
        let mut total = Appended::default();
        let mut first_err = None;
        for (doc, r) in results {
            match r {
                Ok((a, head)) => {
                    total.written += a.written;
                    total.duplicates += a.duplicates;
                    self.remember_head(&doc, head);
                }
                Err(e) => {
                    self.heads.remove(&doc);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn read(&mut self, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError> {
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let (s, st) = (&self.session, &self.st);
        let m = self.rt.block_on(meta(s, &st.meta, doc))?;
        if to > m.head {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: to, latest: m.head });
        }
        if from < m.floor {
            let oldest = self.oldest_readable(doc)?;
            return Err(StorageError::HistoryUnavailable { doc: doc.to_owned(), rev: from, oldest });
        }
        let ops = self.rt.block_on(read_rows(s, st, doc, from, to))?;
        if ops.len() as u64 != to + 1 - from || ops.iter().enumerate().any(|(i, op)| op.rev() != from + i as u64) {
            return Err(StorageError::Invalid(format!(
                "{doc:?}: revisions {from}..={to} read back {} ops, not the whole range (a replica missed writes? read at a stronger consistency)",
                ops.len()
            )));
        }
        Ok(ops)
    }

    fn latest_rev(&mut self, doc: &str) -> Result<u64, StorageError> {
        // At SERIAL: completes any Paxos round a failed sequencer left half done, so the head
        // a new sequencer starts from is the one the next append is fenced on.
        let head = self.rt.block_on(meta(&self.session, &self.st.meta_serial, doc))?.head;
        let doc: Arc<str> = doc.into();
        self.remember_head(&doc, head);
        Ok(head)
    }

    fn put_snapshot(&mut self, doc: &str, snapshot: &Snapshot) -> Result<(), StorageError> {
        check_doc(doc)?;
        let (s, st) = (&self.session, &self.st);
        let latest = self.rt.block_on(meta(s, &st.meta_serial, doc))?.head;
        if snapshot.rev > latest {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: snapshot.rev, latest });
        }
        let bytes = snapshot.encode(doc);
        let rev = i64_of(snapshot.rev)?;
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        let n = i32::try_from(chunks.len()).map_err(|_| StorageError::Invalid("snapshot too large".into()))?;
        self.rt.block_on(async {
            let writes = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| s.execute_unpaged(&st.put_chunk, (doc, rev, i as i32, c.to_vec())));
            for r in join_all(writes).await {
                r.map_err(|e| backend(&format!("writing a snapshot chunk of {doc:?} at {rev}"), e))?;
            }
            // The index row last: a snapshot is listed only once whole.
            s.execute_unpaged(&st.put_snapshot, (doc, rev, i64_of(snapshot.time_ms)?, bytes.len() as i64, n))
                .await
                .map_err(|e| backend(&format!("writing the snapshot index of {doc:?} at {rev}"), e))?;
            Ok::<_, StorageError>(())
        })?;
        self.candidates.insert(doc.to_owned());
        Ok(())
    }

    fn snapshot_at_or_before(&mut self, doc: &str, rev: u64) -> Result<Option<Snapshot>, StorageError> {
        let (s, st) = (&self.session, &self.st);
        let key = |r: i64| format!("{}.snapshot_chunks/{doc}@{r}", self.opts.keyspace);
        self.rt.block_on(async {
            let what = "reading the snapshot index";
            let r = s
                .execute_unpaged(&st.snapshot_at_or_before, (doc, i64_of(rev)?))
                .await
                .map_err(|e| backend(what, e))?;
            let Some((srev, chunks, bytes)) = r
                .into_rows_result()
                .map_err(|e| backend(what, e))?
                .maybe_first_row::<(i64, i32, i64)>()
                .map_err(|e| backend(what, e))?
            else {
                return Ok(None);
            };
            let mut data = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
            let mut next_chunk = 0;
            let mut paging = PagingState::start();
            loop {
                let (r, more) = s
                    .execute_single_page(&st.chunks, (doc, srev), paging)
                    .await
                    .map_err(|e| backend("reading snapshot chunks", e))?;
                let rows = r.into_rows_result().map_err(|e| backend("reading snapshot chunks", e))?;
                for row in rows.rows::<(i32, Vec<u8>)>().map_err(|e| backend("reading snapshot chunks", e))? {
                    let (i, c) = row.map_err(|e| backend("reading snapshot chunks", e))?;
                    if i != next_chunk {
                        return Err(StorageError::BadBlob {
                            key: key(srev),
                            reason: format!("chunk {next_chunk} is missing"),
                        });
                    }
                    next_chunk += 1;
                    data.extend_from_slice(&c);
                }
                match more.into_paging_control_flow() {
                    ControlFlow::Break(()) => break,
                    ControlFlow::Continue(p) => paging = p,
                }
            }
            if next_chunk != chunks || data.len() as i64 != bytes {
                return Err(StorageError::BadBlob {
                    key: key(srev),
                    reason: format!(
                        "{next_chunk} chunks, {} bytes where {chunks} chunks, {bytes} bytes were written",
                        data.len()
                    ),
                });
            }
            let snap = Snapshot::decode(&data, doc, &key(srev))?;
            if i64_of(snap.rev)? != srev {
                return Err(StorageError::BadBlob { key: key(srev), reason: format!("revision {}", snap.rev) });
            }
            Ok(Some(snap))
        })
    }

    fn drop_history_before(&mut self, doc: &str, rev: u64) -> Result<(), StorageError> {
        self.drop_history(doc, rev, None).map(|_| ())
    }

    fn oldest_readable(&mut self, doc: &str) -> Result<u64, StorageError> {
        let (s, st) = (&self.session, &self.st);
        let m = self.rt.block_on(meta(s, &st.meta, doc))?;
        if m.floor <= 1 {
            return Ok(0);
        }
        self.rt.block_on(async {
            let what = "reading the snapshot index";
            let r = s
                .execute_unpaged(&st.snapshot_at_or_after, (doc, i64_of(m.floor - 1)?))
                .await
                .map_err(|e| backend(what, e))?;
            let first = r
                .into_rows_result()
                .map_err(|e| backend(what, e))?
                .maybe_first_row::<(i64,)>()
                .map_err(|e| backend(what, e))?;
            match first {
                Some((r,)) => u64_of(r, "revision"),
                None => Ok(m.head),
            }
        })
    }

    fn compact(&mut self, now_ms: u64) -> Result<Compacted, StorageError> {
        let cutoff = now_ms.saturating_sub(u64::try_from(self.opts.retention.as_millis()).unwrap_or(u64::MAX));
        let mut out = Compacted::default();
        let docs: Vec<String> = self.candidates.iter().cloned().collect();
        for doc in docs {
            let snaps = self.rt.block_on(snapshots_of(&self.session, &self.st, &doc))?;
            // The newest snapshot older than the retention: every op before it is older too.
            if let Some(&(rev, _)) = snaps.iter().filter(|&&(_, t)| t < cutoff).max_by_key(|&&(r, _)| r) {
                let floor = self.rt.block_on(meta(&self.session, &self.st.meta, &doc))?.floor;
                if rev + 1 > floor {
                    out.snapshots_deleted += self.drop_history(&doc, rev + 1, Some(&snaps))?;
                    out.segments_deleted += 1;
                }
            }
            // Keep watching documents with snapshots still inside the retention.
            if !snaps.iter().any(|&(_, t)| t >= cutoff) {
                self.candidates.remove(&doc);
            }
        }
        if out.segments_deleted > 0 {
            info!(documents = out.segments_deleted, snapshots = out.snapshots_deleted, "op log compacted");
        }
        Ok(out)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        // Every write was acknowledged by the cluster at the configured consistency before
        // its call returned (and ScyllaDB commits lightweight transactions to its commit log
        // synchronously).
        Ok(())
    }
}

/// A document's snapshots: (revision, time).
async fn snapshots_of(s: &Session, st: &Statements, doc: &str) -> Result<Vec<(u64, u64)>, StorageError> {
    let what = "listing snapshots";
    let r = s.execute_unpaged(&st.snapshots_of, (doc,)).await.map_err(|e| backend(what, e))?;
    let rows = r.into_rows_result().map_err(|e| backend(what, e))?;
    let mut out = Vec::new();
    for row in rows.rows::<(i64, i64)>().map_err(|e| backend(what, e))? {
        let (rev, time) = row.map_err(|e| backend(what, e))?;
        out.push((u64_of(rev, "revision")?, u64_of(time, "time")?));
    }
    Ok(out)
}

async fn delete_snapshots(s: &Session, st: &Statements, doc: &str, revs: &[u64]) -> Result<(), StorageError> {
    for &rev in revs {
        let rev = i64_of(rev)?;
        // The index row first, so no reader follows it to missing chunks.
        s.execute_unpaged(&st.delete_snapshot, (doc, rev)).await.map_err(|e| backend("deleting a snapshot", e))?;
        s.execute_unpaged(&st.delete_chunks, (doc, rev)).await.map_err(|e| backend("deleting a snapshot", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(ScyllaOptions::default().validate().is_ok());
        let o = ScyllaOptions::from_uri("scylla://a:9042, b:9042").unwrap();
        assert_eq!(o.nodes, vec!["a:9042", "b:9042"]);
        assert!(ScyllaOptions::from_uri(" , ").is_err());
        let bad = |f: fn(&mut ScyllaOptions)| {
            let mut o = ScyllaOptions::default();
            f(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.keyspace = "1x".into()).contains("keyspace"));
        assert!(bad(|o| o.keyspace = "a;DROP".into()).contains("keyspace"));
        assert!(bad(|o| o.consistency = "MOST".into()).contains("QUORUM"));
        assert!(bad(|o| o.serial_consistency = "QUORUM".into()).contains("SERIAL"));
        assert!(bad(|o| o.request_timeout = Duration::ZERO).contains("timeout"));
        assert!(bad(|o| o.nodes.clear()).contains("nodes"));
        assert_eq!(parse_consistency("local_quorum"), Ok(Consistency::LocalQuorum));
    }

    #[test]
    fn migration_creates_fenced_tables() {
        let st = migration_statements("tandem", &Migration::default());
        assert!(st[0].starts_with("CREATE KEYSPACE IF NOT EXISTS tandem WITH replication = {"));
        assert!(st[0].ends_with("AND tablets = {'enabled': false}"));
        assert!(st[1].contains("head bigint static") && st[1].contains("PRIMARY KEY ((doc), rev)"));
        assert!(st.iter().all(|s| s.contains("IF NOT EXISTS")));
        let cassandra = migration_statements("t", &Migration { disable_tablets: false, ..Migration::default() });
        assert!(!cassandra[0].contains("tablets"));
    }
}
