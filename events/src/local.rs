//! The in-process backend: a durable log per topic in a SQLite file (`events.db` in the
//! data directory), consumer groups' offsets beside it.
//!
//! Kafka's model on one machine: a topic is one ordered log (one partition, so per-key
//! order holds trivially), a message is durable when `publish` returns (WAL, `synchronous =
//! FULL`), a group reads from its committed offset and commits after its work is done, so a
//! crash redelivers what was not committed. It is bounded: a publish waits while the slowest
//! group that ever subscribed to a topic is `capacity` messages behind (backpressure), and
//! messages every group has committed are deleted. A topic no group ever subscribed to keeps
//! its newest `capacity` messages.
//!
//! SQLite and not a file format of our own: the rates here (outbox events, one change-feed
//! event per durable batch of ops) are far below what one SQLite writer sustains with a
//! transaction per publish, and recovery, checksums and compaction come with it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::Notify;

use crate::schema::Topic;
use crate::{Delivery, Error, Message, Result};

/// Rows per INSERT statement (4 parameters each, well under SQLite's limit).
const INSERT_ROWS: usize = 200;

/// Messages a topic holds for its slowest group before a publish waits.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// Consumed messages are deleted this many at a time.
const PRUNE_STEP: i64 = 256;

#[derive(Debug, Default)]
struct TopicState {
    /// The offset the next message gets.
    next: i64,
    /// Committed offsets (next to read) of the groups that subscribed, by group.
    groups: HashMap<String, i64>,
    /// Groups with a live consumer.
    live: Vec<String>,
    /// Messages below this offset have been deleted.
    pruned: i64,
}

impl TopicState {
    fn slowest(&self) -> Option<i64> {
        self.groups.values().copied().min()
    }
}

#[derive(Debug)]
struct Shared {
    pool: SqlitePool,
    capacity: u64,
    topics: Mutex<HashMap<Topic, TopicState>>,
    /// Wakes consumers waiting for messages.
    published: Notify,
    /// Wakes publishers waiting for room.
    committed: Notify,
    /// One publish at a time: offsets are given out in commit order.
    write: tokio::sync::Mutex<()>,
}

/// The in-process bus.
#[derive(Clone, Debug)]
pub struct LocalBus {
    shared: Arc<Shared>,
}

impl LocalBus {
    /// Opens (creating) the log at `path`.
    pub async fn open(path: &Path, capacity: u64) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(storage)?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS messages (topic TEXT NOT NULL, msg_offset INTEGER NOT NULL, \
             msg_key TEXT NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (topic, msg_offset)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS group_offsets (grp TEXT NOT NULL, topic TEXT NOT NULL, \
             next_offset INTEGER NOT NULL, PRIMARY KEY (grp, topic)) WITHOUT ROWID",
            // The next offset of each topic survives the deletion of consumed messages.
            "CREATE TABLE IF NOT EXISTS topic_heads (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL) WITHOUT ROWID",
        ] {
            sqlx::query(ddl).execute(&pool).await.map_err(storage)?;
        }
        let mut topics: HashMap<Topic, TopicState> =
            Topic::ALL.into_iter().map(|t| (t, TopicState::default())).collect();
        for row in sqlx::query("SELECT topic, next_offset FROM topic_heads").fetch_all(&pool).await.map_err(storage)? {
            if let Some(t) = Topic::parse(row.get::<&str, _>(0)) {
                topics.get_mut(&t).expect("every topic").next = row.get(1);
            }
        }
        for row in
            sqlx::query("SELECT grp, topic, next_offset FROM group_offsets").fetch_all(&pool).await.map_err(storage)?
        {
            if let Some(t) = Topic::parse(row.get::<&str, _>(1)) {
                topics.get_mut(&t).expect("every topic").groups.insert(row.get(0), row.get(2));
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                capacity: capacity.max(1),
                topics: Mutex::new(topics),
                published: Notify::new(),
                committed: Notify::new(),
                write: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, TopicState>> {
        self.shared.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `events` (each to its topic, in the order given) durably; waits while a topic
    /// is full.
    pub async fn publish(&self, events: &[Message]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let _writer = self.shared.write.lock().await;
        // Backpressure: wait until every topic has room for what goes to it.
        let mut wanted: HashMap<Topic, u64> = HashMap::new();
        for e in events {
            *wanted.entry(e.topic).or_default() += 1;
        }
        loop {
            let room = self.shared.committed.notified();
            let full = {
                let topics = self.topics();
                wanted.iter().any(|(t, n)| {
                    let s = &topics[t];
                    s.slowest().is_some_and(|slowest| {
                        let behind = u64::try_from(s.next - slowest).unwrap_or(0);
                        behind > 0 && behind + n > self.shared.capacity
                    })
                })
            };
            if !full {
                break;
            }
            room.await;
        }
        let mut next: HashMap<Topic, i64> = {
            let topics = self.topics();
            wanted.keys().map(|t| (*t, topics[t].next)).collect()
        };
        let mut tx = self.shared.pool.begin().await.map_err(storage)?;
        // Many rows per statement: each statement is a round trip to sqlx's SQLite thread,
        // which cost more than the insert itself (perf, the office scenario's feed).
        for chunk in events.chunks(INSERT_ROWS) {
            let mut sql = String::from("INSERT INTO messages (topic, msg_offset, msg_key, payload) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                let offset = next.get_mut(&e.topic).expect("counted above");
                query = query.bind(e.topic.name()).bind(*offset).bind(&e.key).bind(&e.payload);
                *offset += 1;
            }
            query.execute(&mut *tx).await.map_err(storage)?;
        }
        for (t, n) in &next {
            sqlx::query(
                "INSERT INTO topic_heads (topic, next_offset) VALUES (?, ?) \
                 ON CONFLICT (topic) DO UPDATE SET next_offset = excluded.next_offset",
            )
            .bind(t.name())
            .bind(*n)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        let unconsumed: Vec<(Topic, i64)> = {
            let mut topics = self.topics();
            let mut unconsumed = Vec::new();
            for (t, n) in next {
                let s = topics.get_mut(&t).expect("every topic");
                s.next = n;
                if s.groups.is_empty() && n > i64::try_from(self.shared.capacity).unwrap_or(i64::MAX) {
                    unconsumed.push((t, n - i64::try_from(self.shared.capacity).unwrap_or(i64::MAX)));
                }
            }
            unconsumed
        };
        self.shared.published.notify_waiters();
        // A topic nobody consumes keeps only its newest `capacity` messages.
        for (t, below) in unconsumed {
            self.delete_below(t, below).await?;
        }
        Ok(())
    }

    async fn delete_below(&self, topic: Topic, offset: i64) -> Result<()> {
        {
            let mut topics = self.topics();
            let s = topics.get_mut(&topic).expect("every topic");
            if offset - s.pruned < PRUNE_STEP {
                return Ok(());
            }
            s.pruned = offset;
        }
        sqlx::query("DELETE FROM messages WHERE topic = ? AND msg_offset < ?")
            .bind(topic.name())
            .bind(offset)
            .execute(&self.shared.pool)
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// A consumer of `topic` for `group`, reading from the group's committed offset (from the
    /// oldest message kept, for a new group). One live consumer per group and topic.
    pub async fn subscribe(&self, group: &str, topic: Topic) -> Result<LocalConsumer> {
        let start = {
            let mut topics = self.topics();
            let s = topics.get_mut(&topic).expect("every topic");
            if s.live.iter().any(|g| g == group) {
                return Err(Error::Config(format!("group {group:?} already consumes {topic} in this process")));
            }
            s.live.push(group.to_owned());
            s.groups.get(group).copied()
        };
        let start = match start {
            Some(offset) => offset,
            None => {
                let oldest: Option<i64> = sqlx::query("SELECT MIN(msg_offset) FROM messages WHERE topic = ?")
                    .bind(topic.name())
                    .fetch_one(&self.shared.pool)
                    .await
                    .map_err(storage)?
                    .get(0);
                let start = oldest.unwrap_or_else(|| self.topics()[&topic].next);
                sqlx::query("INSERT OR IGNORE INTO group_offsets (grp, topic, next_offset) VALUES (?, ?, ?)")
                    .bind(group)
                    .bind(topic.name())
                    .bind(start)
                    .execute(&self.shared.pool)
                    .await
                    .map_err(storage)?;
                self.topics().get_mut(&topic).expect("every topic").groups.insert(group.to_owned(), start);
                start
            }
        };
        Ok(LocalConsumer { bus: self.clone(), group: group.to_owned(), topic, position: start })
    }

    /// Committed offsets by (group, topic), and each topic's next offset: what lag metrics read.
    pub fn lag(&self) -> Vec<(String, Topic, u64)> {
        let topics = self.topics();
        let mut out = Vec::new();
        for (t, s) in topics.iter() {
            for (g, o) in &s.groups {
                out.push((g.clone(), *t, u64::try_from(s.next - o).unwrap_or(0)));
            }
        }
        out.sort();
        out
    }

    /// Closes the file.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }
}

/// A group's reader of one topic.
#[derive(Debug)]
pub struct LocalConsumer {
    bus: LocalBus,
    group: String,
    topic: Topic,
    /// The next offset to read (not necessarily committed).
    position: i64,
}

impl LocalConsumer {
    /// Waits for at least one message and returns up to `max`, in order.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        self.read(max, None).await
    }

    /// Like [`LocalConsumer::next_batch`], but returns nothing when no message came by
    /// `deadline`.
    pub async fn next_batch_until(&mut self, max: usize, deadline: tokio::time::Instant) -> Result<Vec<Delivery>> {
        self.read(max, Some(deadline)).await
    }

    async fn read(&mut self, max: usize, deadline: Option<tokio::time::Instant>) -> Result<Vec<Delivery>> {
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        loop {
            let published = self.bus.shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let rows = sqlx::query(
                "SELECT msg_offset, msg_key, payload FROM messages WHERE topic = ? AND msg_offset >= ? \
                 ORDER BY msg_offset LIMIT ?",
            )
            .bind(self.topic.name())
            .bind(self.position)
            .bind(max)
            .fetch_all(&self.bus.shared.pool)
            .await
            .map_err(storage)?;
            if let Some(last) = rows.last() {
                self.position = last.get::<i64, _>(0) + 1;
                return Ok(rows
                    .into_iter()
                    .map(|r| {
                        let payload: Vec<u8> = r.get(2);
                        Delivery::new(self.topic, 0, r.get(0), r.get(1), payload)
                    })
                    .collect());
            }
            // Only the wait is given up at the deadline, never a read in flight.
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, published).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
                None => published.await,
            }
        }
    }

    /// Records that everything up to and including `offset` is done: after a restart the
    /// group reads from `offset + 1`.
    pub async fn commit(&mut self, offset: i64) -> Result<()> {
        let next = offset + 1;
        sqlx::query("UPDATE group_offsets SET next_offset = ? WHERE grp = ? AND topic = ? AND next_offset < ?")
            .bind(next)
            .bind(&self.group)
            .bind(self.topic.name())
            .bind(next)
            .execute(&self.bus.shared.pool)
            .await
            .map_err(storage)?;
        let slowest = {
            let mut topics = self.bus.topics();
            let s = topics.get_mut(&self.topic).expect("every topic");
            let o = s.groups.entry(self.group.clone()).or_insert(next);
            *o = (*o).max(next);
            s.slowest()
        };
        self.bus.shared.committed.notify_waiters();
        // Whatever every group has done goes (in steps, not on every commit).
        if let Some(slowest) = slowest {
            self.bus.delete_below(self.topic, slowest).await?;
        }
        Ok(())
    }

    /// Its topic.
    pub fn topic(&self) -> Topic {
        self.topic
    }
}

impl Drop for LocalConsumer {
    fn drop(&mut self) {
        let mut topics = self.bus.topics();
        if let Some(s) = topics.get_mut(&self.topic) {
            s.live.retain(|g| g != &self.group);
        }
    }
}

fn storage(e: sqlx::Error) -> Error {
    Error::Storage(e.to_string())
}
