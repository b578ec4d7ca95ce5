//! The events the control plane's changes cause, written to the `outbox` table in the same
//! SQL transaction as the change (so a crash can never keep one and lose the other). The
//! events crate's relay publishes them to the bus in `seq` order ([`crate::Store`] is its
//! `Outbox`); their schemas are the events crate's.

pub use tandem_events::Event;

/// The version of every event's schema (the events crate's), as the `schema_version` column
/// holds it.
pub const SCHEMA_VERSION: i64 = tandem_events::SCHEMA_VERSION as i64;

/// An outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its position: the relay publishes in this order.
    pub seq: i64,
    /// A unique id consumers deduplicate by.
    pub event_id: String,
    /// The bus topic.
    pub topic: String,
    /// The schema version it was written with.
    pub schema_version: i64,
    /// The event.
    pub event: Event,
    /// When it was written, ms since the Unix epoch.
    pub created_ms: i64,
    /// When the relay published it.
    pub sent_ms: Option<i64>,
}
