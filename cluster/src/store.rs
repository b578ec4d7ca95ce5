//! The lease table in PostgreSQL: the only shared state a cluster's membership needs.
//!
//! - `cluster_nodes`: one row per node (`node`, `address`, `heartbeat_at`, `draining`); a
//!   node is live while its heartbeat is younger than the liveness window.
//! - `cluster_leases`: one row per shard (`owner`, `epoch`, `expires_at`), made by
//!   [`LeaseStore::migrate`] for the configured shard count, which `cluster_config` records
//!   (a node configured with another count is refused).
//!
//! Times are the database's (`now()`), so nodes' clocks never compare with one another; a
//! node keeps its own deadline on its monotonic clock from when it *sent* the request (see
//! `node.rs`). Taking a shard is a compare-and-set on its epoch; renewing one needs the epoch
//! and the owner to be unchanged and the lease unexpired. Every release notifies channel
//! `tandem_leases`, so takers act at once instead of at their next poll.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::plan::{Lease, Member, View};
use crate::shard::Shard;

/// What went wrong talking to the lease table.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The database refused or failed.
    #[error("lease table: {what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The table disagrees with this node's configuration.
    #[error("lease table: {0}")]
    Config(String),
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> LeaseError {
    move |source| LeaseError::Db { what, source }
}

/// The channel releases are announced on.
pub const CHANNEL: &str = "tandem_leases";

/// Shards named in one announcement at most (PostgreSQL refuses payloads of 8,000 bytes or
/// more; a shard and its epoch take at most 26).
const PER_ANNOUNCEMENT: usize = 250;

/// A release as announced on [`CHANNEL`]: who released, and, when it named one, the node it
/// handed shards to and which (with their epochs, for that node to take them without reading
/// the table first). Or, sent just before a node stops serving shards it will hand over, a
/// notice that they are **coming**: their clients are about to be sent to that node, which
/// holds their requests for the release instead of sending them back. Payload: `from` alone,
/// `from to shard:epoch,shard:epoch,...`, or that followed by ` coming`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The releasing node.
    pub from: String,
    /// The node the shards go to, and the shards with their epochs.
    pub handoff: Option<(String, Vec<(Shard, u64)>)>,
    /// Not released yet: about to be.
    pub coming: bool,
}

impl Announcement {
    /// The payloads announcing a release by `from` (or, `coming`, one about to happen): one
    /// per [`PER_ANNOUNCEMENT`] shards of each hand-off, or `from` alone when it names none
    /// (nothing when `coming`).
    pub fn payloads(from: &str, handoffs: &[(String, Vec<(Shard, u64)>)], coming: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (to, leases) in handoffs {
            for chunk in leases.chunks(PER_ANNOUNCEMENT) {
                let list: Vec<String> = chunk.iter().map(|(k, e)| format!("{k}:{e}")).collect();
                let tail = if coming { " coming" } else { "" };
                out.push(format!("{from} {to} {}{tail}", list.join(",")));
            }
        }
        if out.is_empty() && !coming {
            out.push(from.to_owned());
        }
        out
    }

    /// Reads a payload; None when it is not one (node ids have no spaces).
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let from = parts.next().filter(|f| !f.is_empty())?.to_owned();
        let Some(to) = parts.next() else { return Some(Self { from, handoff: None, coming: false }) };
        let list = parts.next()?;
        let coming = match parts.next() {
            None => false,
            Some("coming") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() || to.is_empty() {
            return None;
        }
        let leases = list
            .split(',')
            .map(|pair| {
                let (k, e) = pair.split_once(':')?;
                Some((k.parse().ok()?, e.parse().ok()?))
            })
            .collect::<Option<Vec<(Shard, u64)>>>()?;
        Some(Self { from, handoff: Some((to.to_owned(), leases)), coming })
    }
}

/// The lease table of one cluster.
#[derive(Clone, Debug)]
pub struct LeaseStore {
    pool: PgPool,
    shards: u16,
}

impl LeaseStore {
    /// Connects (a small pool: a node makes a few statements a poll).
    pub async fn connect(url: &str, shards: u16, timeout: Duration) -> Result<Self, LeaseError> {
        let opts: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| LeaseError::Config(format!("cluster database URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(timeout)
            .connect_with(opts.application_name("tandem-cluster"))
            .await
            .map_err(db("connecting"))?;
        Ok(Self { pool, shards })
    }

    /// The shard count.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// Creates the tables and one lease row per shard (safe to run again, and from several
    /// nodes at once); refuses a table made for another shard count.
    pub async fn migrate(&self) -> Result<(), LeaseError> {
        let mut c = self.pool.acquire().await.map_err(db("connecting"))?;
        let mut tx = c.begin().await.map_err(db("beginning the migration"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(7449366040391725)")
            .execute(&mut *tx)
            .await
            .map_err(db("taking the migration lock"))?;
        for st in [
            "CREATE TABLE IF NOT EXISTS cluster_config (id int PRIMARY KEY, shards int NOT NULL)",
            "CREATE TABLE IF NOT EXISTS cluster_nodes (node text PRIMARY KEY, address text NOT NULL, \
             heartbeat_at timestamptz NOT NULL, draining boolean NOT NULL DEFAULT false)",
            "CREATE TABLE IF NOT EXISTS cluster_leases (shard int PRIMARY KEY, owner text, \
             epoch bigint NOT NULL DEFAULT 0, expires_at timestamptz NOT NULL DEFAULT 'epoch')",
            // Added after the first release: where the other nodes reach a node.
            "ALTER TABLE cluster_nodes ADD COLUMN IF NOT EXISTS internal text",
            // The change feed's cursors, shared ([`FeedCursors`]).
            "CREATE TABLE IF NOT EXISTS cluster_feed_cursors (doc text PRIMARY KEY, rev bigint NOT NULL)",
        ] {
            sqlx::query(st).execute(&mut *tx).await.map_err(db("creating the lease tables"))?;
        }
        sqlx::query("INSERT INTO cluster_config (id, shards) VALUES (0, $1) ON CONFLICT (id) DO NOTHING")
            .bind(i32::from(self.shards))
            .execute(&mut *tx)
            .await
            .map_err(db("recording the shard count"))?;
        let (shards,): (i32,) = sqlx::query_as("SELECT shards FROM cluster_config WHERE id = 0")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the shard count"))?;
        if shards != i32::from(self.shards) {
            return Err(LeaseError::Config(format!(
                "the cluster was made with {shards} shards; this node is configured with {} (a document's shard \
                 depends on it: use the cluster's)",
                self.shards
            )));
        }
        sqlx::query(
            "INSERT INTO cluster_leases (shard) SELECT generate_series(0, $1 - 1) ON CONFLICT (shard) DO NOTHING",
        )
        .bind(i32::from(self.shards))
        .execute(&mut *tx)
        .await
        .map_err(db("creating the leases"))?;
        tx.commit().await.map_err(db("committing the migration"))?;
        Ok(())
    }

    /// The change feed's shared cursors, in the same database (a pool of their own: their
    /// statements never wait behind, nor hold up, a round's).
    pub async fn feed_cursors(url: &str, timeout: Duration) -> Result<FeedCursors, LeaseError> {
        let opts: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| LeaseError::Config(format!("cluster database URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(timeout)
            .connect_with(opts.application_name("tandem-feed-cursors"))
            .await
            .map_err(db("connecting"))?;
        Ok(FeedCursors { pool })
    }

    /// Says this node is alive (where clients are sent for its documents, where the other
    /// nodes reach it if elsewhere, and whether it is leaving).
    pub async fn heartbeat(
        &self,
        node: &str,
        address: &str,
        internal: Option<&str>,
        draining: bool,
    ) -> Result<(), LeaseError> {
        sqlx::query(
            "INSERT INTO cluster_nodes (node, address, internal, heartbeat_at, draining) \
             VALUES ($1, $2, $3, now(), $4) \
             ON CONFLICT (node) DO UPDATE SET address = excluded.address, internal = excluded.internal, \
             heartbeat_at = now(), draining = excluded.draining",
        )
        .bind(node)
        .bind(address)
        .bind(internal)
        .bind(draining)
        .execute(&self.pool)
        .await
        .map_err(db("heartbeat"))?;
        Ok(())
    }

    /// Removes this node's row (a graceful leave, once it holds nothing).
    pub async fn leave(&self, node: &str) -> Result<(), LeaseError> {
        sqlx::query("DELETE FROM cluster_nodes WHERE node = $1")
            .bind(node)
            .execute(&self.pool)
            .await
            .map_err(db("leaving"))?;
        Ok(())
    }

    /// Every lease, and the nodes heard from within `alive`.
    pub async fn view(&self, alive: Duration) -> Result<View, LeaseError> {
        let rows: Vec<(i32, Option<String>, i64, bool)> = sqlx::query_as(
            "SELECT shard, owner, epoch, owner IS NOT NULL AND expires_at > now() FROM cluster_leases ORDER BY shard",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the leases"))?;
        let members: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT node, address, internal, draining FROM cluster_nodes \
             WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY node",
        )
        .bind(alive.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the nodes"))?;
        Ok(View {
            leases: rows
                .into_iter()
                .map(|(shard, owner, epoch, live)| Lease { shard: shard as Shard, owner, epoch: epoch as u64, live })
                .collect(),
            members: members
                .into_iter()
                .map(|(node, address, internal, draining)| Member { node, address, internal, draining })
                .collect(),
        })
    }

    /// Takes the shards whose epochs are still as given and which are free or expired, for
    /// `ttl`; returns those taken, with their new epochs.
    pub async fn acquire(
        &self,
        node: &str,
        wanted: &[(Shard, u64)],
        ttl: Duration,
    ) -> Result<Vec<(Shard, u64)>, LeaseError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (shards, epochs) = split(wanted);
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "UPDATE cluster_leases l SET owner = $1, epoch = l.epoch + 1, \
             expires_at = now() + make_interval(secs => $4) \
             FROM UNNEST($2::int[], $3::bigint[]) AS w(shard, epoch) \
             WHERE l.shard = w.shard AND l.epoch = w.epoch AND (l.owner IS NULL OR l.expires_at <= now()) \
             RETURNING l.shard, l.epoch",
        )
        .bind(node)
        .bind(shards)
        .bind(epochs)
        .bind(ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(db("taking leases"))?;
        Ok(rows.into_iter().map(|(s, e)| (s as Shard, e as u64)).collect())
    }

    /// Extends the leases this node holds (shard and epoch) by `ttl`; returns those renewed
    /// (the others were lost: expired, or taken).
    pub async fn renew(&self, node: &str, held: &[(Shard, u64)], ttl: Duration) -> Result<Vec<Shard>, LeaseError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (shards, epochs) = split(held);
        let rows: Vec<(i32,)> = sqlx::query_as(
            "UPDATE cluster_leases l SET expires_at = now() + make_interval(secs => $4) \
             FROM UNNEST($2::int[], $3::bigint[]) AS h(shard, epoch) \
             WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1 AND l.expires_at > now() \
             RETURNING l.shard",
        )
        .bind(node)
        .bind(shards)
        .bind(epochs)
        .bind(ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(db("renewing leases"))?;
        Ok(rows.into_iter().map(|(s,)| s as Shard).collect())
    }

    /// Gives shards back (the node stopped serving them) and tells the other nodes, naming
    /// for each the node it should go to (`handoffs`, a subset of `held`): that node takes
    /// them on the announcement without reading the table first.
    pub async fn release(
        &self,
        node: &str,
        held: &[(Shard, u64)],
        handoffs: &[(String, Vec<(Shard, u64)>)],
    ) -> Result<usize, LeaseError> {
        if held.is_empty() {
            return Ok(0);
        }
        let (shards, epochs) = split(held);
        let mut c = self.pool.acquire().await.map_err(db("connecting"))?;
        let mut tx = c.begin().await.map_err(db("beginning a release"))?;
        let r = sqlx::query(
            "UPDATE cluster_leases l SET owner = NULL, expires_at = 'epoch' \
             FROM UNNEST($2::int[], $3::bigint[]) AS h(shard, epoch) \
             WHERE l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1",
        )
        .bind(node)
        .bind(shards)
        .bind(epochs)
        .execute(&mut *tx)
        .await
        .map_err(db("releasing leases"))?;
        // Delivered at commit.
        for payload in Announcement::payloads(node, handoffs, false) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut *tx)
                .await
                .map_err(db("announcing a release"))?;
        }
        tx.commit().await.map_err(db("committing a release"))?;
        Ok(r.rows_affected() as usize)
    }

    /// Tells the nodes named in `handoffs` that `node` is about to hand them those shards
    /// (see [`Announcement`]), and, `leaving`, marks `node` as leaving in the same statement
    /// (so that a node that takes its shards does not count it among those to balance
    /// towards and hand shards back to it). Nothing else changes in the table.
    pub async fn announce_coming(
        &self,
        node: &str,
        handoffs: &[(String, Vec<(Shard, u64)>)],
        leaving: bool,
    ) -> Result<(), LeaseError> {
        let payloads = Announcement::payloads(node, handoffs, true);
        if payloads.is_empty() && !leaving {
            return Ok(());
        }
        sqlx::query(
            "WITH d AS (UPDATE cluster_nodes SET draining = true WHERE node = $3 AND $4)              SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p",
        )
        .bind(CHANNEL)
        .bind(payloads)
        .bind(node)
        .bind(leaving)
        .execute(&self.pool)
        .await
        .map_err(db("announcing a hand-over"))?;
        Ok(())
    }

    /// A listener on the release channel (its own connection).
    pub async fn listen(&self) -> Result<PgListener, LeaseError> {
        let mut l = PgListener::connect_with(&self.pool).await.map_err(db("listening"))?;
        l.listen(CHANNEL).await.map_err(db("listening"))?;
        Ok(l)
    }
}

fn split(pairs: &[(Shard, u64)]) -> (Vec<i32>, Vec<i64>) {
    pairs.iter().map(|&(s, e)| (i32::from(s), e as i64)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_fit_a_payload() {
        assert_eq!(Announcement::payloads("a", &[], false), vec!["a".to_owned()]);
        assert!(Announcement::payloads("a", &[], true).is_empty());
        assert_eq!(Announcement::parse("a"), Some(Announcement { from: "a".into(), handoff: None, coming: false }));
        let leases: Vec<(Shard, u64)> = (0..1024).map(|k| (k, u64::MAX - u64::from(k))).collect();
        let handoffs = vec![("b".to_owned(), leases[..600].to_vec()), ("c".to_owned(), leases[600..].to_vec())];
        for coming in [false, true] {
            let payloads = Announcement::payloads("node-with-a-long-id", &handoffs, coming);
            // 600 and 424 shards: three and two announcements.
            assert_eq!(payloads.len(), 5);
            let mut back: Vec<(String, Vec<(Shard, u64)>)> = Vec::new();
            for p in &payloads {
                assert!(p.len() < 8000, "{} bytes", p.len());
                let a = Announcement::parse(p).unwrap();
                assert_eq!(a.from, "node-with-a-long-id");
                assert_eq!(a.coming, coming);
                let (to, l) = a.handoff.unwrap();
                match back.last_mut() {
                    Some((t, all)) if *t == to => all.extend(l),
                    _ => back.push((to, l)),
                }
            }
            assert_eq!(back, handoffs);
        }
    }

    #[test]
    fn malformed_announcements_are_none() {
        let bad = ["", " b 1:2", "a b", "a b 1", "a b 1:x", "a b 1:2,", "a b 70000:1", "a b 1:2 extra", "a  1:2"];
        for bad in bad.into_iter().chain(["a b 1:2 coming extra", "a b 1:2 coming ", "a b coming"]) {
            assert_eq!(Announcement::parse(bad), None, "{bad:?}");
        }
    }
}

/// The change feed's cursors shared by a cluster's nodes (`cluster_feed_cursors`, made by
/// [`LeaseStore::migrate`]): each document's last revision published to `document-edits` by
/// whichever node served it, so that the node a document moves to publishes only what the one
/// before had not.
#[derive(Clone, Debug)]
pub struct FeedCursors {
    pool: PgPool,
}

impl FeedCursors {
    /// The cursors of `docs` (a document never published is left out).
    pub async fn get(&self, docs: &[String]) -> Result<Vec<(String, u64)>, LeaseError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT doc, rev FROM cluster_feed_cursors WHERE doc = ANY($1)")
            .bind(docs)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the feed's cursors"))?;
        Ok(rows.into_iter().map(|(doc, rev)| (doc, u64::try_from(rev).unwrap_or(0))).collect())
    }

    /// Raises the cursors given (a lower revision never replaces a higher one).
    pub async fn save(&self, cursors: &[(String, u64)]) -> Result<(), LeaseError> {
        if cursors.is_empty() {
            return Ok(());
        }
        // One row per document (a statement may not update a row twice).
        let mut highest: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (doc, rev) in cursors {
            let r = highest.entry(doc.as_str()).or_default();
            *r = (*r).max(*rev);
        }
        let docs: Vec<&str> = highest.keys().copied().collect();
        let revs: Vec<i64> = highest.values().map(|r| i64::try_from(*r).unwrap_or(i64::MAX)).collect();
        sqlx::query(
            "INSERT INTO cluster_feed_cursors (doc, rev) SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (doc) DO UPDATE SET rev = excluded.rev WHERE cluster_feed_cursors.rev < excluded.rev",
        )
        .bind(&docs)
        .bind(&revs)
        .execute(&self.pool)
        .await
        .map_err(db("saving the feed's cursors"))?;
        Ok(())
    }
}
