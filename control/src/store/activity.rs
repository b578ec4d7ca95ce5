//! What the analytics worker keeps: per-document daily aggregates of edits (per client id,
//! counted per user through `client_users`) and of usage events (opens, shares), and the
//! document activity report built from them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::{AssertSqlSafe, Row};

use super::{Store, outbox_many, value_rows};
use crate::error::Result;
use crate::outbox::Event;

/// A gap between one client's consecutive edits up to this long counts as time active.
pub const ACTIVE_GAP_MS: i64 = 60_000;

/// The worker name under which usage events are deduplicated (`processed_events`).
const USAGE_WORKER: &str = "analytics";

/// A session's open of a document, as the cores report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRecord {
    /// The document.
    pub doc: String,
    /// The session's client id (hex, as in the op log's authors).
    pub client: String,
    /// The signed-in user.
    pub user: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// One op, as analytics counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditRecord {
    /// The revision it made.
    pub rev: u64,
    /// Its author's client id.
    pub client: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Characters inserted.
    pub inserted: u64,
    /// Characters deleted.
    pub deleted: u64,
}

/// A usage event, as analytics counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// The event's id (each is counted once).
    pub event_id: String,
    /// The document.
    pub doc: String,
    /// Who it is counted for.
    pub user: String,
    /// `opened`, `shared`.
    pub kind: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// What one call counted (revisions counted before are not counted again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Ops.
    pub edits: u64,
    /// Characters inserted.
    pub inserted: u64,
    /// Characters deleted.
    pub deleted: u64,
}

/// One user's activity on a document on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserActivity {
    /// The user (empty: edits by a client id no open was recorded for).
    pub user: String,
    /// Their display name (empty when unknown).
    pub name: String,
    /// Ops.
    pub edits: u64,
    /// Characters inserted.
    pub inserted: u64,
    /// Characters deleted.
    pub deleted: u64,
    /// Time active, ms.
    pub active_ms: u64,
    /// Usage events by kind (`opened`, `shared`).
    pub events: BTreeMap<String, u64>,
}

/// A document's activity on one day (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayActivity {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Per user, most edits first.
    pub users: Vec<UserActivity>,
}

impl DayActivity {
    /// Users who edited.
    pub fn active_editors(&self) -> u64 {
        self.users.iter().filter(|u| u.edits > 0).count() as u64
    }
}

/// The UTC day of a time, `YYYY-MM-DD`.
pub fn day_of(ms: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Records sessions' opens: which user each client id is, and an `opened` event in the
    /// outbox for analytics, in one transaction.
    pub async fn record_opens(&self, opens: &[OpenRecord]) -> Result<()> {
        if opens.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        // Many rows per statement: a session opening is frequent (every page load).
        for chunk in opens.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO client_users (client_id, user_id, first_ms) VALUES {} ON CONFLICT (client_id) DO NOTHING",
                value_rows(chunk.len(), 3, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for o in chunk {
                query = query.bind(&o.client).bind(&o.user).bind(o.at_ms);
            }
            query.execute(&mut *tx).await?;
        }
        let events: Vec<(Event, i64)> = opens
            .iter()
            .map(|o| (Event::Opened { doc: o.doc.clone(), user: o.user.clone(), client: o.client.clone() }, o.at_ms))
            .collect();
        outbox_many(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The users behind client ids (the authors the op log names): `(client, user id, user
    /// name)` for those the server has seen open a document.
    pub async fn client_authors(&self, clients: &[String]) -> Result<Vec<(String, String, String)>> {
        if clients.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=clients.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT c.client_id, u.id, u.name FROM client_users c JOIN users u ON u.id = c.user_id \
             WHERE c.client_id IN ({})",
            params.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for c in clients {
            query = query.bind(c);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok((r.try_get("client_id")?, r.try_get("id")?, r.try_get("name")?))).collect()
    }

    /// Counts each document's ops (in revision order), all in one transaction; revisions at
    /// or below the last one counted for a document are skipped, so a redelivered or
    /// overlapping feed event counts nothing twice. A few statements per 200 documents,
    /// whatever the number of ops: a statement is a round trip to the driver, and at the
    /// office scenario's rate one per (document, client) starved the search worker beside it.
    pub async fn record_edits(&self, docs: &[(String, Vec<EditRecord>)]) -> Result<Counted> {
        let mut counted = Counted::default();
        let mut tx = self.write.begin().await?;
        for chunk in docs.chunks(DOCS_PER_STATEMENT) {
            record_chunk(&mut tx, chunk, &mut counted).await?;
        }
        tx.commit().await?;
        Ok(counted)
    }

    /// Counts usage events once per event id (`processed_events`), in one transaction;
    /// returns how many were counted for the first time, by kind.
    pub async fn record_usages(&self, usages: &[UsageRecord]) -> Result<BTreeMap<String, u64>> {
        let mut fresh_by_kind = BTreeMap::new();
        if usages.is_empty() {
            return Ok(fresh_by_kind);
        }
        let now = crate::now_ms();
        let mut tx = self.write.begin().await?;
        // (doc, day, user, kind) -> count
        let mut counts: BTreeMap<(&str, String, &str, &str), i64> = BTreeMap::new();
        for chunk in usages.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO processed_events (worker, event_id, state, attempts, updated_ms) VALUES {} \
                 ON CONFLICT (worker, event_id) DO NOTHING RETURNING event_id",
                value_rows(chunk.len(), 5, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for u in chunk {
                query = query.bind(USAGE_WORKER).bind(&u.event_id).bind("done").bind(1_i64).bind(now);
            }
            let mut fresh: HashSet<String> = HashSet::new();
            for r in query.fetch_all(&mut *tx).await? {
                fresh.insert(r.try_get(0)?);
            }
            // An id twice in one call counts once.
            for u in chunk {
                if fresh.remove(&u.event_id) {
                    *counts.entry((&u.doc, day_of(u.at_ms), &u.user, &u.kind)).or_default() += 1;
                    *fresh_by_kind.entry(u.kind.clone()).or_default() += 1;
                }
            }
        }
        let counts: Vec<_> = counts.into_iter().collect();
        for chunk in counts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO activity_events (doc_id, day, user_id, kind, count) VALUES {} \
                 ON CONFLICT (doc_id, day, user_id, kind) DO UPDATE SET count = activity_events.count + excluded.count",
                value_rows(chunk.len(), 5, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for ((doc, day, user, kind), n) in chunk {
                query = query.bind(*doc).bind(day).bind(*user).bind(*kind).bind(*n);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(fresh_by_kind)
    }

    /// `doc`'s activity from day `since` (`YYYY-MM-DD`) on, newest day first.
    pub async fn activity(&self, doc: &str, since: &str) -> Result<Vec<DayActivity>> {
        let edits = sqlx::query(
            "SELECT e.day, COALESCE(c.user_id, '') AS user_id, COALESCE(u.name, '') AS name, \
             CAST(SUM(e.edits) AS BIGINT) AS edits, CAST(SUM(e.inserted) AS BIGINT) AS inserted, CAST(SUM(e.deleted) AS BIGINT) AS deleted, \
             CAST(SUM(e.active_ms) AS BIGINT) AS active_ms \
             FROM activity_edits e LEFT JOIN client_users c ON c.client_id = e.client_id \
             LEFT JOIN users u ON u.id = c.user_id \
             WHERE e.doc_id = $1 AND e.day >= $2 \
             GROUP BY e.day, COALESCE(c.user_id, ''), COALESCE(u.name, '')",
        )
        .bind(doc)
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        let events = sqlx::query(
            "SELECT a.day, a.user_id, COALESCE(u.name, '') AS name, a.kind, a.count \
             FROM activity_events a LEFT JOIN users u ON u.id = a.user_id \
             WHERE a.doc_id = $1 AND a.day >= $2",
        )
        .bind(doc)
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        let mut days: BTreeMap<String, BTreeMap<String, UserActivity>> = BTreeMap::new();
        fn entry(
            days: &mut BTreeMap<String, BTreeMap<String, UserActivity>>,
            day: String,
            user: String,
            name: String,
        ) -> &mut UserActivity {
            days.entry(day).or_default().entry(user.clone()).or_insert_with(|| UserActivity {
                user,
                name,
                ..UserActivity::default()
            })
        }
        for r in edits {
            let sum = |col: &str| -> Result<u64> { Ok(to_u64(r.try_get::<i64, _>(col)?)) };
            let (edits, inserted, deleted, active) =
                (sum("edits")?, sum("inserted")?, sum("deleted")?, sum("active_ms")?);
            let u = entry(&mut days, r.try_get("day")?, r.try_get("user_id")?, r.try_get("name")?);
            u.edits += edits;
            u.inserted += inserted;
            u.deleted += deleted;
            u.active_ms += active;
        }
        for r in events {
            let (kind, count): (String, i64) = (r.try_get("kind")?, r.try_get("count")?);
            let u = entry(&mut days, r.try_get("day")?, r.try_get("user_id")?, r.try_get("name")?);
            *u.events.entry(kind).or_default() += to_u64(count);
        }
        Ok(days
            .into_iter()
            .rev()
            .map(|(day, users)| {
                let mut users: Vec<UserActivity> = users.into_values().collect();
                users.sort_by(|a, b| b.edits.cmp(&a.edits).then_with(|| a.user.cmp(&b.user)));
                DayActivity { day, users }
            })
            .collect())
    }
}

/// Documents per chunk of [`Store::record_edits`].
const DOCS_PER_STATEMENT: usize = 200;
/// Rows per multi-row INSERT (at most 8 parameters each: well under every engine's limit).
const ROWS_PER_STATEMENT: usize = 100;

/// (doc, day, client) -> [edits, inserted, deleted, active_ms, last_ms]
type EditRows<'a> = HashMap<(&'a str, String, &'a str), [i64; 5]>;

/// One chunk of documents of [`Store::record_edits`]: their marks and the rows the edits
/// add to in two queries, the sums in memory, then multi-row upserts.
async fn record_chunk(
    tx: &mut sqlx::AnyConnection,
    docs: &[(String, Vec<EditRecord>)],
    counted: &mut Counted,
) -> Result<()> {
    let sql = format!("SELECT doc_id, rev FROM activity_revs WHERE doc_id IN ({})", placeholders(docs.len(), 1));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (doc, _) in docs {
        query = query.bind(doc);
    }
    let mut marks: HashMap<String, u64> = HashMap::new();
    for r in query.fetch_all(&mut *tx).await? {
        marks.insert(r.try_get("doc_id")?, to_u64(r.try_get("rev")?));
    }
    // What is new: revisions above each document's mark, once each, in order.
    let mut fresh: Vec<(&str, &EditRecord)> = Vec::new();
    let mut heads: Vec<(&str, u64)> = Vec::new();
    let mut days: BTreeSet<String> = BTreeSet::new();
    for (doc, edits) in docs {
        let mark = marks.get(doc).copied().unwrap_or(0);
        let mut head = mark;
        for e in edits {
            if e.rev > head {
                head = e.rev;
                fresh.push((doc, e));
                days.insert(day_of(e.at_ms));
            }
        }
        if head > mark {
            heads.push((doc, head));
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    // The rows these edits add to, as stored.
    let sql = format!(
        "SELECT doc_id, day, client_id, edits, inserted, deleted, active_ms, last_ms FROM activity_edits \
         WHERE doc_id IN ({}) AND day IN ({})",
        placeholders(heads.len(), 1),
        placeholders(days.len(), heads.len() + 1)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (doc, _) in &heads {
        query = query.bind(*doc);
    }
    for day in &days {
        query = query.bind(day);
    }
    let mut stored: HashMap<(String, String, String), [i64; 5]> = HashMap::new();
    for r in query.fetch_all(&mut *tx).await? {
        stored.insert(
            (r.try_get("doc_id")?, r.try_get("day")?, r.try_get("client_id")?),
            [
                r.try_get("edits")?,
                r.try_get("inserted")?,
                r.try_get("deleted")?,
                r.try_get("active_ms")?,
                r.try_get("last_ms")?,
            ],
        );
    }
    let mut rows: EditRows<'_> = HashMap::new();
    for (doc, e) in fresh {
        let day = day_of(e.at_ms);
        let v = rows
            .entry((doc, day.clone(), e.client.as_str()))
            .or_insert_with(|| stored.get(&(doc.to_owned(), day, e.client.clone())).copied().unwrap_or([0; 5]));
        let gap = e.at_ms - v[4];
        if v[4] > 0 && (0..=ACTIVE_GAP_MS).contains(&gap) {
            v[3] += gap;
        }
        v[0] += 1;
        v[1] += to_i64(e.inserted);
        v[2] += to_i64(e.deleted);
        v[4] = v[4].max(e.at_ms);
        counted.edits += 1;
        counted.inserted += e.inserted;
        counted.deleted += e.deleted;
    }
    let rows: Vec<_> = rows.into_iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO activity_edits (doc_id, day, client_id, edits, inserted, deleted, active_ms, last_ms) \
             VALUES {} ON CONFLICT (doc_id, day, client_id) DO UPDATE SET \
             edits = excluded.edits, inserted = excluded.inserted, deleted = excluded.deleted, \
             active_ms = excluded.active_ms, last_ms = excluded.last_ms",
            value_rows(chunk.len(), 8, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for ((doc, day, client), v) in chunk {
            query = query.bind(*doc).bind(day).bind(*client);
            for n in v {
                query = query.bind(*n);
            }
        }
        query.execute(&mut *tx).await?;
    }
    for chunk in heads.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO activity_revs (doc_id, rev) VALUES {} ON CONFLICT (doc_id) DO UPDATE SET rev = excluded.rev",
            value_rows(chunk.len(), 2, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (doc, head) in chunk {
            query = query.bind(*doc).bind(to_i64(*head));
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// `$first, $first+1, ...`: `count` placeholders for an `IN` list.
fn placeholders(count: usize, first: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399_999), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_795_910_400_000), "2026-11-29");
        assert_eq!(day_of(1_795_910_399_999), "2026-11-28");
        assert_eq!(day_of(-1), "1969-12-31");
    }
}
