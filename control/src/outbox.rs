//! The events the control plane's changes cause, written to the `outbox` table in the same
//! SQL transaction as the change (so a crash can never keep one and lose the other). The
//! event relay (the events crate) publishes them to the bus in `seq` order.

use serde::{Deserialize, Serialize};
use tandem_net::protocol::Role;

/// The version of every event's schema; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: i64 = 1;

/// A typed event. On the wire (and in `outbox.payload`): JSON with `kind` naming the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A document was created.
    DocumentCreated {
        /// The document.
        doc: String,
        /// Its title.
        title: String,
        /// Its owner.
        owner: String,
    },
    /// A document was renamed.
    DocumentRenamed {
        /// The document.
        doc: String,
        /// The new title.
        title: String,
        /// Who renamed it.
        by: String,
    },
    /// A document was deleted (tombstoned: its id never opens again).
    DocumentDeleted {
        /// The document.
        doc: String,
        /// Who deleted it.
        by: String,
    },
    /// A document was shared with someone (the notification worker emails them).
    DocumentShared {
        /// The document.
        doc: String,
        /// Its title.
        title: String,
        /// Who shared it.
        by: String,
        /// Their display name.
        by_name: String,
        /// The address it was shared with.
        email: String,
        /// The role given.
        role: Role,
        /// The user, when the address has an account (otherwise an invitation waits).
        user: Option<String>,
    },
    /// A user's role changed (`None`: revoked).
    RoleChanged {
        /// The document.
        doc: String,
        /// Whose role.
        user: String,
        /// The new role.
        role: Option<Role>,
        /// Who changed it.
        by: String,
    },
}

impl Event {
    /// The bus topic it goes to.
    pub fn topic(&self) -> &'static str {
        match self {
            Self::DocumentShared { .. } => "notifications",
            // The search index follows titles and deletions with the edits.
            Self::DocumentCreated { .. } | Self::DocumentRenamed { .. } | Self::DocumentDeleted { .. } => {
                "document-edits"
            }
            Self::RoleChanged { .. } => "analytics",
        }
    }

    /// The variant's name (the `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DocumentCreated { .. } => "document_created",
            Self::DocumentRenamed { .. } => "document_renamed",
            Self::DocumentDeleted { .. } => "document_deleted",
            Self::DocumentShared { .. } => "document_shared",
            Self::RoleChanged { .. } => "role_changed",
        }
    }

    /// The document it is about (the bus's partition key).
    pub fn doc(&self) -> &str {
        match self {
            Self::DocumentCreated { doc, .. }
            | Self::DocumentRenamed { doc, .. }
            | Self::DocumentDeleted { doc, .. }
            | Self::DocumentShared { doc, .. }
            | Self::RoleChanged { doc, .. } => doc,
        }
    }
}

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
