//! The PostgreSQL backend (cargo feature `postgres`): the op log for a cluster that runs
//! PostgreSQL rather than ScyllaDB.
//!
//! Schema (created by [`migrate`], `tandem migrate`), in a PostgreSQL schema of its own
//! (`tandem_oplog` by default, so it can share a database with the metadata):
//!
//! - `oplog_docs`: one row per document: `head`, the latest revision, and `floor`, the first
//!   revision whose op is kept.
//! - `oplog_ops`: primary key `(doc, rev)`; one row per op (`author`, `client_seq`, `time_ms`,
//!   `delta` = the op's rkyv archive, as in the embedded log, `note` = a note's JSON or empty).
//! - `oplog_snapshots`: primary key `(doc, rev)`: the snapshot's bytes (the embedded log's
//!   snapshot encoding, checksummed) and when it was taken.
//! - `oplog_schema`: the version [`migrate`] applied; [`PostgresLog::connect`] checks it.
//!
//! **The fenced append.** One call to [`OpLog::append`] is one transaction, so one commit (one
//! WAL flush) covers every document in the batch: group commit. It takes the same handful of
//! statements whatever the number of documents (arrays bound with `UNNEST`): lock the
//! documents' head rows `FOR UPDATE` in document order (two servers' batches lock in the same
//! order and cannot deadlock) and read the heads; create the rows of new documents `ON
//! CONFLICT DO NOTHING`; move each head from the revision before its ops to the last of them;
//! insert the ops. The row lock serialises rival sequencers: the second waits for the first
//! to commit, then reads a head that is no longer where its ops continue, and looks at the
//! revisions taken: its own ops (a retried append: duplicates), a different op (a
//! [`StorageError::Conflict`]: another sequencer owns the document, and nothing of this batch
//! is written) or a gap. The op rows' primary key is a second fence: no revision can be
//! written twice whatever the head says.
//!
//! Author ids are stored as `bigint` bit for bit (a client id may use all 64 bits).
//!
//! The driver (sqlx) is async; the backend runs it on its own current-thread Tokio runtime,
//! and its calls block, like every [`OpLog`]: only a storage thread calls them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tandem_engine::ClientId;
use tracing::info;

use crate::db::{backend, by_document, check_doc, i64_of, runtime, u64_of};
use crate::error::StorageError;
use crate::format::LogOp;
use crate::oplog::{Appended, Compacted, OpLog};
pub use crate::redacted;
use crate::snapshot::Snapshot;

/// The schema version [`migrate`] creates and [`PostgresLog::connect`] requires.
pub const SCHEMA_VERSION: i32 = 1;

/// How to reach the database and what to ask of it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database[?sslmode=...]`.
    pub url: String,
    /// The PostgreSQL schema holding the op log's tables.
    pub schema: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run (the server's `statement_timeout`).
    pub statement_timeout: Duration,
    /// History younger than this is kept by [`OpLog::compact`].
    pub retention: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/tandem".into(),
            schema: "tandem_oplog".into(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redacted(&self.url))
            .field("schema", &self.schema)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("retention", &self.retention)
            .finish()
    }
}

impl PostgresOptions {
    /// Options for a database URL, the rest default.
    pub fn from_url(url: &str) -> Self {
        Self { url: url.to_owned(), ..Self::default() }
    }

    /// Checks every value, so a bad configuration fails at start-up with its name.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(format!("postgres.url {}: expected postgres://...", redacted(&self.url)));
        }
        PgConnectOptions::from_str(&self.url).map_err(|e| format!("postgres.url {}: {e}", redacted(&self.url)))?;
        check_schema(&self.schema)?;
        if self.connect_timeout.is_zero() || self.statement_timeout.is_zero() {
            return Err("postgres.connect_timeout_ms and statement_timeout_ms must be positive".into());
        }
        Ok(())
    }

    fn connect_options(&self) -> Result<PgConnectOptions, StorageError> {
        self.validate().map_err(StorageError::Invalid)?;
        let statement_timeout = self.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(&self.url)
            .map_err(|e| StorageError::Invalid(format!("postgres.url: {e}")))?
            .application_name("tandem-oplog")
            .options([("search_path", self.schema.as_str()), ("statement_timeout", statement_timeout.as_str())]))
    }
}

fn check_schema(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 48
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("postgres.schema {s:?}: lowercase letters, digits and _, not a digit first, at most 48"))
    }
}

/// The statements [`migrate`] runs, in order (all idempotent).
pub fn migration_statements(schema: &str) -> Vec<String> {
    let s = schema;
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.oplog_docs (doc text PRIMARY KEY, head bigint NOT NULL CHECK (head > 0), \
             floor bigint NOT NULL DEFAULT 1)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.oplog_ops (doc text NOT NULL, rev bigint NOT NULL, author bigint NOT NULL, \
             client_seq bigint NOT NULL, time_ms bigint NOT NULL, delta bytea NOT NULL, note text NOT NULL DEFAULT '', \
             PRIMARY KEY (doc, rev))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.oplog_snapshots (doc text NOT NULL, rev bigint NOT NULL, \
             time_ms bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (doc, rev))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.oplog_schema (id int PRIMARY KEY, version int NOT NULL, \
             applied_ms bigint NOT NULL)"
        ),
    ]
}

/// Creates the schema and tables (`tandem migrate`); safe to run again, and from several
/// servers at once (an advisory lock serialises them). Returns the statements run.
pub fn migrate(opts: &PostgresOptions) -> Result<Vec<String>, StorageError> {
    let connect = opts.connect_options()?;
    let rt = runtime("PostgreSQL")?;
    rt.block_on(async {
        let mut c = PgConnection::connect_with(&connect)
            .await
            .map_err(|e| backend(&format!("connecting to {}", redacted(&opts.url)), e))?;
        let mut tx = c.begin().await.map_err(|e| backend("beginning the migration", e))?;
        // A fixed key of Tandem's own (no underscores: PostgreSQL 15 does not read them).
        sqlx::query("SELECT pg_advisory_xact_lock(7449366040391724)")
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("taking the migration lock", e))?;
        let statements = migration_statements(&opts.schema);
        for st in &statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(st.clone())).execute(&mut *tx).await.map_err(|e| backend(st, e))?;
        }
        sqlx::query(
            "INSERT INTO oplog_schema (id, version, applied_ms) VALUES (0, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, applied_ms = excluded.applied_ms",
        )
        .bind(SCHEMA_VERSION)
        .bind(crate::now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("recording the schema version", e))?;
        tx.commit().await.map_err(|e| backend("committing the migration", e))?;
        Ok(statements)
    })
}

/// Drops the schema and everything in it (tests).
pub fn drop_schema(opts: &PostgresOptions) -> Result<(), StorageError> {
    let connect = opts.connect_options()?;
    let rt = runtime("PostgreSQL")?;
    rt.block_on(async {
        let mut c = PgConnection::connect_with(&connect).await.map_err(|e| backend("connecting", e))?;
        let st = format!("DROP SCHEMA IF EXISTS {} CASCADE", opts.schema);
        sqlx::raw_sql(sqlx::AssertSqlSafe(st.clone())).execute(&mut c).await.map_err(|e| backend(&st, e))?;
        Ok(())
    })
}

/// A document's row.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    head: u64,
    floor: u64,
}

/// Reads a document's head and floor (0 and 1 for a document never written); `lock` takes the
/// row's lock for the rest of the transaction.
async fn meta(c: &mut PgConnection, doc: &str, lock: bool) -> Result<Meta, StorageError> {
    let sql = if lock {
        "SELECT head, floor FROM oplog_docs WHERE doc = $1 FOR UPDATE"
    } else {
        "SELECT head, floor FROM oplog_docs WHERE doc = $1"
    };
    let row: Option<(i64, i64)> =
        sqlx::query_as(sql).bind(doc).fetch_optional(c).await.map_err(|e| backend("reading a document's head", e))?;
    Ok(match row {
        Some((head, floor)) => Meta { head: u64_of(head, "head")?, floor: u64_of(floor, "floor")?.max(1) },
        None => Meta { head: 0, floor: 1 },
    })
}

/// The op rows of `doc` in `from..=to` (whatever the floor), in order.
async fn read_rows(c: &mut PgConnection, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError> {
    let rows: Vec<(i64, i64, i64, i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT rev, author, client_seq, time_ms, delta, note FROM oplog_ops \
         WHERE doc = $1 AND rev >= $2 AND rev <= $3 ORDER BY rev",
    )
    .bind(doc)
    .bind(i64_of(from)?)
    .bind(i64_of(to)?)
    .fetch_all(c)
    .await
    .map_err(|e| backend("reading ops", e))?;
    let doc: Arc<str> = doc.into();
    rows.into_iter()
        .map(|(rev, author, seq, time, delta, note)| {
            let cells = (ClientId(author as u64), u64_of(seq, "client_seq")?, u64_of(time, "time")?);
            LogOp::from_row(&doc, u64_of(rev, "revision")?, cells, &delta, Some(&note))
        })
        .collect()
}

/// Inserts op rows in one statement.
async fn insert_rows(c: &mut PgConnection, ops: &[&LogOp]) -> Result<(), StorageError> {
    let n = ops.len();
    if n == 0 {
        return Ok(());
    }
    let (mut docs, mut revs, mut authors, mut seqs, mut times, mut deltas, mut notes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for op in ops {
        docs.push(op.doc.to_string());
        revs.push(i64_of(op.rev())?);
        authors.push(op.commit.author.0 as i64);
        seqs.push(i64_of(op.commit.client_seq)?);
        times.push(i64_of(op.time_ms)?);
        deltas.push(op.commit.delta.to_archive().to_vec());
        notes.push(op.note_json()?);
    }
    sqlx::query(
        "INSERT INTO oplog_ops (doc, rev, author, client_seq, time_ms, delta, note) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[], $7::text[])",
    )
    .bind(docs)
    .bind(revs)
    .bind(authors)
    .bind(seqs)
    .bind(times)
    .bind(deltas)
    .bind(notes)
    .execute(c)
    .await
    .map_err(|e| backend("writing ops", e))?;
    Ok(())
}

/// Moves the head of `doc` from `expected` to `to`; false when it is not at `expected`.
async fn move_head(c: &mut PgConnection, doc: &str, expected: u64, to: u64) -> Result<bool, StorageError> {
    let r = if expected == 0 {
        sqlx::query("INSERT INTO oplog_docs (doc, head, floor) VALUES ($1, $2, 1) ON CONFLICT (doc) DO NOTHING")
            .bind(doc)
            .bind(i64_of(to)?)
            .execute(c)
            .await
    } else {
        sqlx::query("UPDATE oplog_docs SET head = $2 WHERE doc = $1 AND head = $3")
            .bind(doc)
            .bind(i64_of(to)?)
            .bind(i64_of(expected)?)
            .execute(c)
            .await
    };
    Ok(r.map_err(|e| backend("moving a document's head", e))?.rows_affected() == 1)
}

/// Appends every document's ops inside the append's transaction, in a fixed number of
/// statements whatever the number of documents: lock the documents' rows in document order and
/// read their heads; insert the rows of new documents; move the heads that are where the ops
/// continue; insert those ops. A document whose head is elsewhere (a retry, a rival, a gap)
/// goes through [`append_doc`] alone.
async fn append_all(c: &mut PgConnection, groups: &BTreeMap<&str, Vec<LogOp>>) -> Result<Appended, StorageError> {
    let docs: Vec<&str> = groups.keys().copied().collect();
    let locked: Vec<(String, i64)> =
        sqlx::query_as("SELECT doc, head FROM oplog_docs WHERE doc = ANY($1) ORDER BY doc FOR UPDATE")
            .bind(&docs)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| backend("locking documents' heads", e))?;
    let heads: HashMap<String, i64> = locked.into_iter().collect();
    let (mut fresh, mut fresh_heads) = (Vec::new(), Vec::new());
    let (mut moved, mut expected, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
    let mut slow = Vec::new();
    for (&doc, ops) in groups {
        let head = match heads.get(doc) {
            Some(&h) => u64_of(h, "head")?,
            None => 0,
        };
        let last = i64_of(ops[ops.len() - 1].rev())?;
        if ops[0].rev() != head + 1 {
            slow.push(doc);
        } else if head == 0 {
            fresh.push(doc);
            fresh_heads.push(last);
        } else {
            moved.push(doc);
            expected.push(i64_of(head)?);
            lasts.push(last);
        }
    }
    let mut rows: Vec<&LogOp> = Vec::new();
    if !fresh.is_empty() {
        // A rival may have created one of them since the lock above found none: those wait
        // for it here, are skipped, and go the slow way.
        let created: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO oplog_docs (doc, head) SELECT * FROM UNNEST($1::text[], $2::bigint[])              ON CONFLICT (doc) DO NOTHING RETURNING doc",
        )
        .bind(&fresh)
        .bind(&fresh_heads)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| backend("creating documents' heads", e))?;
        let created: HashSet<String> = created.into_iter().map(|(d,)| d).collect();
        for doc in fresh {
            if created.contains(doc) {
                rows.extend(&groups[doc]);
            } else {
                slow.push(doc);
            }
        }
    }
    if !moved.is_empty() {
        let r = sqlx::query(
            "UPDATE oplog_docs d SET head = v.last FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])              AS v(doc, expected, last) WHERE d.doc = v.doc AND d.head = v.expected",
        )
        .bind(&moved)
        .bind(&expected)
        .bind(&lasts)
        .execute(&mut *c)
        .await
        .map_err(|e| backend("moving documents' heads", e))?;
        if r.rows_affected() != moved.len() as u64 {
            return Err(StorageError::Backend("documents' heads moved under their row locks".into()));
        }
        for doc in moved {
            rows.extend(&groups[doc]);
        }
    }
    insert_rows(c, &rows).await?;
    let mut out = Appended { written: rows.len(), duplicates: 0 };
    for doc in slow {
        let a = append_doc(c, &groups[doc]).await?;
        out.written += a.written;
        out.duplicates += a.duplicates;
    }
    Ok(out)
}

/// Appends one document's ops (consecutive revisions) whose head is not where they continue,
/// inside the append's transaction: duplicates of a retried append, a rival's ops, or a gap.
async fn append_doc(c: &mut PgConnection, ops: &[LogOp]) -> Result<Appended, StorageError> {
    let doc: &str = &ops[0].doc;
    let first = ops[0].rev();
    let last = ops[ops.len() - 1].rev();
    // Hold the row while looking (rival sequencers wait here).
    let head = meta(c, doc, true).await?.head;
    if first > head + 1 {
        return Err(StorageError::RevisionGap { doc: doc.to_owned(), expected: head + 1, got: first });
    }
    // Revisions first..=upto are taken: by these very ops (a retry), or by another's.
    let upto = last.min(head);
    let existing = if first <= upto { read_rows(c, doc, first, upto).await? } else { Vec::new() };
    if first <= upto {
        if existing.first().is_none_or(|e| e.rev() != first) {
            let oldest = existing.first().map_or(upto + 1, LogOp::rev);
            return Err(StorageError::HistoryUnavailable { doc: doc.to_owned(), rev: first, oldest });
        }
        if existing.len() as u64 != upto + 1 - first {
            return Err(StorageError::Invalid(format!(
                "{doc:?}: revisions {first}..={upto} read back {} ops under head {head}",
                existing.len()
            )));
        }
    }
    for (e, mine) in existing.iter().zip(ops) {
        if e.commit.author != mine.commit.author || e.commit.client_seq != mine.commit.client_seq {
            return Err(StorageError::Conflict {
                doc: doc.to_owned(),
                rev: mine.rev(),
                existing_author: e.commit.author.0,
                existing_seq: e.commit.client_seq,
            });
        }
    }
    let mut out = Appended { written: 0, duplicates: existing.len() };
    let rest = &ops[existing.len()..];
    if !rest.is_empty() {
        // The row is locked: the head is still `head`.
        if !move_head(c, doc, head, last).await? {
            return Err(StorageError::Backend(format!("{doc:?}: the head moved under a row lock")));
        }
        insert_rows(c, &rest.iter().collect::<Vec<_>>()).await?;
        out.written = rest.len();
    }
    Ok(out)
}

/// The op log in a PostgreSQL database. See the module documentation.
pub struct PostgresLog {
    rt: tokio::runtime::Runtime,
    pool: PgPool,
    opts: PostgresOptions,
    /// Documents with snapshots that compaction should look at.
    candidates: HashSet<String>,
}

impl std::fmt::Debug for PostgresLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLog").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl PostgresLog {
    /// Connects and checks the schema was migrated to this build's version.
    pub fn connect(opts: PostgresOptions) -> Result<Self, StorageError> {
        let connect = opts.connect_options()?;
        let rt = runtime("PostgreSQL")?;
        let pool = rt.block_on(async {
            // One storage thread makes one request at a time: one connection (a second while
            // a broken one is replaced).
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .min_connections(1)
                .acquire_timeout(opts.connect_timeout)
                .test_before_acquire(false)
                .connect_with(connect)
                .await
                .map_err(|e| backend(&format!("connecting to {}", redacted(&opts.url)), e))?;
            let not_migrated = || {
                StorageError::Invalid(format!(
                    "schema {} has no Tandem op log: run `tandem migrate` first",
                    opts.schema
                ))
            };
            let version: Option<(i32,)> = sqlx::query_as("SELECT version FROM oplog_schema WHERE id = 0")
                .fetch_optional(&pool)
                .await
                .map_err(|_| not_migrated())?;
            let version = version.ok_or_else(not_migrated)?.0;
            if version != SCHEMA_VERSION {
                return Err(StorageError::Invalid(format!(
                    "schema {} has op-log version {version}; this build uses {SCHEMA_VERSION} (run `tandem migrate`)",
                    opts.schema
                )));
            }
            Ok(pool)
        })?;
        info!(url = %redacted(&opts.url), schema = %opts.schema, "op log: PostgreSQL");
        Ok(Self { rt, pool, opts, candidates: HashSet::new() })
    }

    /// The options it connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.opts
    }

    /// Runs `step` in a transaction: committed when it returns `Ok`, rolled back otherwise.
    fn transaction<T>(
        &mut self,
        what: &str,
        step: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let pool = &self.pool;
        self.rt.block_on(async {
            let mut tx: Transaction<'static, Postgres> =
                pool.begin().await.map_err(|e| backend(&format!("{what}: beginning"), e))?;
            let out = step(&mut tx).await?;
            tx.commit().await.map_err(|e| backend(&format!("{what}: committing"), e))?;
            Ok(out)
        })
    }

    /// Drops the history of `doc` before `rev`; returns the snapshots deleted.
    fn drop_history(&mut self, doc: &str, rev: u64) -> Result<usize, StorageError> {
        self.transaction("dropping history", async |c| drop_history(c, doc, rev).await)
    }
}

/// Drops the history of `doc` before `rev` inside a transaction; returns the snapshots
/// deleted.
async fn drop_history(c: &mut PgConnection, doc: &str, rev: u64) -> Result<usize, StorageError> {
    let m = meta(c, doc, true).await?;
    if m.head == 0 {
        return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
    }
    if rev <= m.floor {
        return Ok(0);
    }
    if rev > m.head + 1 {
        return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev, latest: m.head });
    }
    // The oldest snapshot that can still build revision `rev - 1` or later.
    let (keep_from,): (Option<i64>,) =
        sqlx::query_as("SELECT min(rev) FROM oplog_snapshots WHERE doc = $1 AND rev >= $2")
            .bind(doc)
            .bind(i64_of(rev - 1)?)
            .fetch_one(&mut *c)
            .await
            .map_err(|e| backend("listing snapshots", e))?;
    let Some(keep_from) = keep_from else {
        return Err(StorageError::NoSnapshot { doc: doc.to_owned(), rev });
    };
    let q = |sql: &'static str| sqlx::query(sql).bind(doc);
    q("UPDATE oplog_docs SET floor = $2 WHERE doc = $1")
        .bind(i64_of(rev)?)
        .execute(&mut *c)
        .await
        .map_err(|e| backend("raising the floor", e))?;
    q("DELETE FROM oplog_ops WHERE doc = $1 AND rev < $2")
        .bind(i64_of(rev)?)
        .execute(&mut *c)
        .await
        .map_err(|e| backend("deleting old ops", e))?;
    // Snapshots before the oldest one kept are of no more use.
    let deleted = q("DELETE FROM oplog_snapshots WHERE doc = $1 AND rev < $2")
        .bind(keep_from)
        .execute(&mut *c)
        .await
        .map_err(|e| backend("deleting old snapshots", e))?;
    Ok(deleted.rows_affected() as usize)
}

impl OpLog for PostgresLog {
    fn append(&mut self, ops: &[LogOp]) -> Result<Appended, StorageError> {
        let groups = by_document(ops)?;
        if groups.is_empty() {
            return Ok(Appended::default());
        }
        self.transaction("appending", async |c| append_all(c, &groups).await)
    }

    fn read(&mut self, doc: &str, from: u64, to: u64) -> Result<Vec<LogOp>, StorageError> {
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let pool = &self.pool;
        let (m, ops) = self.rt.block_on(async {
            let mut c = pool.acquire().await.map_err(|e| backend("connecting", e))?;
            let m = meta(&mut c, doc, false).await?;
            if to > m.head || from < m.floor {
                return Ok((m, Vec::new()));
            }
            Ok::<_, StorageError>((m, read_rows(&mut c, doc, from, to).await?))
        })?;
        if to > m.head {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: to, latest: m.head });
        }
        if from < m.floor {
            let oldest = self.oldest_readable(doc)?;
            return Err(StorageError::HistoryUnavailable { doc: doc.to_owned(), rev: from, oldest });
        }
        if ops.len() as u64 != to + 1 - from || ops.iter().enumerate().any(|(i, op)| op.rev() != from + i as u64) {
            return Err(StorageError::Invalid(format!(
                "{doc:?}: revisions {from}..={to} read back {} ops, not the whole range",
                ops.len()
            )));
        }
        Ok(ops)
    }

    fn latest_rev(&mut self, doc: &str) -> Result<u64, StorageError> {
        let pool = &self.pool;
        self.rt.block_on(async {
            let mut c = pool.acquire().await.map_err(|e| backend("connecting", e))?;
            Ok(meta(&mut c, doc, false).await?.head)
        })
    }

    fn put_snapshot(&mut self, doc: &str, snapshot: &Snapshot) -> Result<(), StorageError> {
        check_doc(doc)?;
        let latest = self.latest_rev(doc)?;
        if snapshot.rev > latest {
            return Err(StorageError::FutureRevision { doc: doc.to_owned(), rev: snapshot.rev, latest });
        }
        let bytes = snapshot.encode(doc);
        let pool = &self.pool;
        self.rt.block_on(async {
            sqlx::query(
                "INSERT INTO oplog_snapshots (doc, rev, time_ms, data) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (doc, rev) DO UPDATE SET time_ms = excluded.time_ms, data = excluded.data",
            )
            .bind(doc)
            .bind(i64_of(snapshot.rev)?)
            .bind(i64_of(snapshot.time_ms)?)
            .bind(bytes)
            .execute(pool)
            .await
            .map_err(|e| backend(&format!("writing the snapshot of {doc:?} at {}", snapshot.rev), e))?;
            Ok::<_, StorageError>(())
        })?;
        self.candidates.insert(doc.to_owned());
        Ok(())
    }

    fn snapshot_at_or_before(&mut self, doc: &str, rev: u64) -> Result<Option<Snapshot>, StorageError> {
        let pool = &self.pool;
        let row: Option<(i64, Vec<u8>)> = self.rt.block_on(async {
            sqlx::query_as(
                "SELECT rev, data FROM oplog_snapshots WHERE doc = $1 AND rev <= $2 ORDER BY rev DESC LIMIT 1",
            )
            .bind(doc)
            .bind(i64_of(rev)?)
            .fetch_optional(pool)
            .await
            .map_err(|e| backend("reading a snapshot", e))
        })?;
        let Some((srev, data)) = row else { return Ok(None) };
        let key = format!("{}.oplog_snapshots/{doc}@{srev}", self.opts.schema);
        let snap = Snapshot::decode(&data, doc, &key)?;
        if i64_of(snap.rev)? != srev {
            return Err(StorageError::BadBlob { key, reason: format!("revision {}", snap.rev) });
        }
        Ok(Some(snap))
    }

    fn drop_history_before(&mut self, doc: &str, rev: u64) -> Result<(), StorageError> {
        self.drop_history(doc, rev).map(|_| ())
    }

    fn oldest_readable(&mut self, doc: &str) -> Result<u64, StorageError> {
        let pool = &self.pool;
        self.rt.block_on(async {
            let mut c = pool.acquire().await.map_err(|e| backend("connecting", e))?;
            let m = meta(&mut c, doc, false).await?;
            if m.floor <= 1 {
                return Ok(0);
            }
            let first: Option<(i64,)> =
                sqlx::query_as("SELECT rev FROM oplog_snapshots WHERE doc = $1 AND rev >= $2 ORDER BY rev LIMIT 1")
                    .bind(doc)
                    .bind(i64_of(m.floor - 1)?)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(|e| backend("reading the snapshot index", e))?;
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
            let pool = &self.pool;
            // The newest snapshot older than the retention (every op before it is older too),
            // whether any is younger, and the floor.
            let (old, young, floor): (Option<i64>, bool, i64) = self.rt.block_on(async {
                sqlx::query_as(
                    "SELECT max(rev) FILTER (WHERE time_ms < $2), bool_or(time_ms >= $2), \
                     coalesce((SELECT floor FROM oplog_docs WHERE doc = $1), 1) \
                     FROM oplog_snapshots WHERE doc = $1",
                )
                .bind(doc.as_str())
                .bind(i64_of(cutoff)?)
                .fetch_one(pool)
                .await
                .map(|(old, young, floor): (Option<i64>, Option<bool>, i64)| (old, young.unwrap_or(false), floor))
                .map_err(|e| backend("listing snapshots", e))
            })?;
            if let Some(rev) = old
                && rev + 1 > floor
            {
                out.snapshots_deleted += self.drop_history(&doc, u64_of(rev, "revision")? + 1)?;
                out.segments_deleted += 1;
            }
            // Keep watching documents with snapshots still inside the retention.
            if !young {
                self.candidates.remove(&doc);
            }
        }
        if out.segments_deleted > 0 {
            info!(documents = out.segments_deleted, snapshots = out.snapshots_deleted, "op log compacted");
        }
        Ok(out)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        // Every append's transaction committed (with the server's `synchronous_commit`)
        // before its call returned.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_and_passwords_never_shown() {
        assert!(PostgresOptions::default().validate().is_ok());
        let o = PostgresOptions::from_url("postgres://tandem:s3cret@db:5432/tandem");
        assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
        assert_eq!(redacted(&o.url), "postgres://tandem:***@db:5432/tandem");
        assert_eq!(redacted("postgres://db/x"), "postgres://db/x");
        let bad = |f: fn(&mut PostgresOptions)| {
            let mut o = PostgresOptions::default();
            f(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.schema = "1x".into()).contains("schema"));
        assert!(bad(|o| o.schema = "a;DROP".into()).contains("schema"));
        assert!(bad(|o| o.schema = "Upper".into()).contains("schema"));
        assert!(bad(|o| o.url = "mysql://x".into()).contains("postgres.url"));
        assert!(bad(|o| o.statement_timeout = Duration::ZERO).contains("positive"));
    }

    #[test]
    fn migration_creates_fenced_tables() {
        let st = migration_statements("tandem_oplog");
        assert_eq!(st[0], "CREATE SCHEMA IF NOT EXISTS tandem_oplog");
        assert!(st.iter().all(|s| s.contains("IF NOT EXISTS")));
        assert!(st.iter().any(|s| s.contains("oplog_ops") && s.contains("PRIMARY KEY (doc, rev)")));
    }
}
