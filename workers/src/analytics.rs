//! The analytics worker: per-document and per-user daily aggregates in the metadata store
//! (edits, characters added and removed, time active, opens, shares), served by
//! `GET /api/documents/{id}/activity`, and Prometheus counters.
//!
//! Two consumer groups: [`Edits`] reads `document-edits` (the change feed; each op counted
//! once by its revision, however often the feed delivers it) and [`Usage`] reads `analytics`
//! (opens and role grants; each counted once by its event id). Both write one transaction
//! per batch, and a batch collects events for up to a second. Edits' authors are client
//! ids; the store maps them to users through the opens the cores report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_control::Store;
use tandem_control::store::{EditRecord, UsageRecord};
use tandem_events::{Envelope, Event, Topic};

use crate::{Failure, Worker};

/// The group that reads `document-edits`.
pub const EDITS_GROUP: &str = "analytics-edits";
/// The group that reads `analytics`.
pub const USAGE_GROUP: &str = "analytics-usage";

/// What analytics has counted since the process started (for `/metrics`).
#[derive(Debug, Default)]
pub struct AnalyticsStats {
    /// Ops.
    pub edits: AtomicU64,
    /// Characters inserted.
    pub inserted: AtomicU64,
    /// Characters deleted.
    pub deleted: AtomicU64,
    /// Document opens.
    pub opens: AtomicU64,
    /// Roles granted.
    pub shares: AtomicU64,
}

impl AnalyticsStats {
    /// Its counters in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("edits", "Ops counted by analytics.", &self.edits),
            ("chars_added", "Characters inserted, counted by analytics.", &self.inserted),
            ("chars_removed", "Characters deleted, counted by analytics.", &self.deleted),
            ("opens", "Document opens.", &self.opens),
            ("shares", "Roles granted on documents.", &self.shares),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP tandem_analytics_{name}_total {help}\n# TYPE tandem_analytics_{name}_total counter\n\
                 tandem_analytics_{name}_total {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Characters a quill-delta (JSON) inserts and deletes (an embed counts 1; lengths in
/// Unicode scalar values, as Tandem counts).
pub fn delta_lengths(delta: &serde_json::Value) -> (u64, u64) {
    let (mut inserted, mut deleted) = (0u64, 0u64);
    // `{"ops": [...]}` as Tandem writes it, or the bare array.
    let ops = delta.get("ops").unwrap_or(delta);
    for op in ops.as_array().into_iter().flatten() {
        match (op.get("insert"), op.get("delete")) {
            (Some(serde_json::Value::String(s)), _) => inserted += s.chars().count() as u64,
            (Some(_), _) => inserted += 1,
            (None, Some(n)) => deleted += n.as_u64().unwrap_or(0),
            (None, None) => {}
        }
    }
    (inserted, deleted)
}

/// Events per batch: one transaction writes a batch.
const BATCH: usize = 4096;
/// How long a batch collects events: at most one transaction a second, whatever the rate.
const LINGER: Duration = Duration::from_secs(1);

/// Counts edits from `document-edits`, one transaction per batch of events.
pub struct Edits {
    store: Store,
    stats: Arc<AnalyticsStats>,
    /// Ops handled since the last flush, per document in arrival order.
    pending: Vec<(String, Vec<EditRecord>)>,
    /// Where each document is in `pending`.
    slots: HashMap<String, usize>,
}

impl Edits {
    /// A worker writing to `store`.
    pub fn new(store: Store, stats: Arc<AnalyticsStats>) -> Self {
        Self { store, stats, pending: Vec::new(), slots: HashMap::new() }
    }
}

impl Worker for Edits {
    fn group(&self) -> &'static str {
        EDITS_GROUP
    }

    fn topic(&self) -> Topic {
        Topic::DocumentEdits
    }

    fn batch(&self) -> usize {
        BATCH
    }

    fn linger(&self) -> Duration {
        LINGER
    }

    fn handle(&mut self, event: &Envelope) -> impl Future<Output = Result<(), Failure>> + Send {
        let edits: Vec<EditRecord> = match &event.event {
            Event::Edited { changes: Some(changes), .. } => changes
                .iter()
                .map(|c| {
                    let (inserted, deleted) = delta_lengths(&c.delta);
                    EditRecord {
                        rev: c.rev,
                        client: c.author.clone(),
                        at_ms: i64::try_from(c.at_ms).unwrap_or(i64::MAX),
                        inserted,
                        deleted,
                    }
                })
                .collect(),
            // Without the ops (an older feed): the batch counts as its last revision's, by
            // its first author.
            Event::Edited { changes: None, to_rev, authors, ops, inserted, deleted, .. } if *ops > 0 => {
                vec![EditRecord {
                    rev: *to_rev,
                    client: authors.first().cloned().unwrap_or_default(),
                    at_ms: event.at_ms,
                    inserted: *inserted,
                    deleted: *deleted,
                }]
            }
            _ => Vec::new(),
        };
        if !edits.is_empty() {
            let doc = event.event.doc();
            match self.slots.get(doc) {
                Some(&i) => self.pending[i].1.extend(edits),
                None => {
                    self.slots.insert(doc.to_owned(), self.pending.len());
                    self.pending.push((doc.to_owned(), edits));
                }
            }
        }
        std::future::ready(Ok(()))
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Kept until written: a failed flush is retried with the same ops.
        let counted = self.store.record_edits(&self.pending).await.map_err(|e| format!("the metadata store: {e}"))?;
        self.pending.clear();
        self.slots.clear();
        self.stats.edits.fetch_add(counted.edits, Ordering::Relaxed);
        self.stats.inserted.fetch_add(counted.inserted, Ordering::Relaxed);
        self.stats.deleted.fetch_add(counted.deleted, Ordering::Relaxed);
        Ok(())
    }
}

/// Counts usage events from `analytics`, one transaction per batch of events.
pub struct Usage {
    store: Store,
    stats: Arc<AnalyticsStats>,
    /// Events handled since the last flush.
    pending: Vec<UsageRecord>,
}

impl Usage {
    /// A worker writing to `store`.
    pub fn new(store: Store, stats: Arc<AnalyticsStats>) -> Self {
        Self { store, stats, pending: Vec::new() }
    }
}

impl Worker for Usage {
    fn group(&self) -> &'static str {
        USAGE_GROUP
    }

    fn topic(&self) -> Topic {
        Topic::Analytics
    }

    fn batch(&self) -> usize {
        BATCH
    }

    fn linger(&self) -> Duration {
        LINGER
    }

    fn handle(&mut self, event: &Envelope) -> impl Future<Output = Result<(), Failure>> + Send {
        let usage = match &event.event {
            Event::Opened { doc, user, .. } => Some((doc, user, "opened")),
            // A role given by someone else: a share, counted for the one who shared.
            Event::RoleChanged { doc, user, role: Some(_), by } if by != user => Some((doc, by, "shared")),
            _ => None,
        };
        if let Some((doc, user, kind)) = usage {
            self.pending.push(UsageRecord {
                event_id: event.id.clone(),
                doc: doc.clone(),
                user: user.clone(),
                kind: kind.to_owned(),
                at_ms: event.at_ms,
            });
        }
        std::future::ready(Ok(()))
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Kept until written: a failed flush is retried with the same events.
        let fresh = self.store.record_usages(&self.pending).await.map_err(|e| format!("the metadata store: {e}"))?;
        self.pending.clear();
        for (kind, n) in fresh {
            let counter = if kind == "opened" { &self.stats.opens } else { &self.stats.shares };
            counter.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::delta_lengths;

    #[test]
    fn lengths_count_scalars_and_embeds() {
        let d = serde_json::json!([{"retain": 3}, {"insert": "héllo 👍"}, {"insert": {"image": "x"}}, {"delete": 4}]);
        assert_eq!(delta_lengths(&d), (8, 4));
        assert_eq!(delta_lengths(&serde_json::json!({"ops": d})), (8, 4));
        assert_eq!(delta_lengths(&serde_json::json!({})), (0, 0));
    }
}
