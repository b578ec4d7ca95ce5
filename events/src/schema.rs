//! The bus's topics and typed, versioned event schemas.
//!
//! On the wire every event is one JSON object, an [`Envelope`]: `schema` (the version of the
//! envelope and of every event in it), `id` (unique; consumers deduplicate by it), `topic`,
//! `key` (the document id: the partition key, so one document's events stay in order),
//! `at_ms`, and `event`, tagged by `kind`. A consumer that meets a schema it does not know
//! dead-letters the message instead of guessing.

use serde::{Deserialize, Serialize};
use tandem_net::protocol::Role;

/// The version of every event's schema; bumped when a field changes meaning or goes away
/// (adding an optional field does not bump it).
pub const SCHEMA_VERSION: u32 = 1;

/// A topic of the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topic {
    /// Every durable batch of ops, and document creation, renames and deletions (the change
    /// feed: search and analytics follow it).
    DocumentEdits,
    /// What someone should be told (emails).
    Notifications,
    /// Export requests.
    Exports,
    /// Usage events (opens, joins, shares, role changes).
    Analytics,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Self; 4] = [Self::DocumentEdits, Self::Notifications, Self::Exports, Self::Analytics];

    /// Its name (the Kafka topic).
    pub fn name(self) -> &'static str {
        match self {
            Self::DocumentEdits => "document-edits",
            Self::Notifications => "notifications",
            Self::Exports => "exports",
            Self::Analytics => "analytics",
        }
    }

    /// The topic called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed event. JSON with `kind` naming the variant.
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
    /// Ops of a document became durable (the change feed: one event per document per
    /// batch; revisions `from_rev..=to_rev`, which consumers deduplicate by).
    Edited {
        /// The document.
        doc: String,
        /// The first revision.
        from_rev: u64,
        /// The last revision.
        to_rev: u64,
        /// The clients that wrote them.
        authors: Vec<String>,
        /// How many ops.
        ops: u64,
        /// Characters inserted (embeds count 1).
        inserted: u64,
        /// Characters deleted.
        deleted: u64,
        /// The ops themselves (the feed always sends them; an event is split so that they
        /// fit).
        changes: Option<Vec<Change>>,
    },
    /// A session opened a document (analytics: opens; and which user a client id is, so
    /// edits, whose authors are client ids, are counted per user).
    Opened {
        /// The document.
        doc: String,
        /// The signed-in user.
        user: String,
        /// The session's client id (as in `Edited::authors`).
        client: String,
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
    /// Someone asked for a document as a file (the export worker renders it).
    ExportRequested {
        /// The export's id.
        export: String,
        /// The document.
        doc: String,
        /// Who asked (the file is rendered with their access).
        user: String,
        /// `pdf` or `docx`.
        format: String,
        /// The revision asked for; `None`: the latest when asked (`at_ms`).
        rev: Option<u64>,
    },
    /// A comment mentions a user who has access to the document (the notification worker
    /// emails them).
    Mentioned {
        /// The document.
        doc: String,
        /// Its title.
        title: String,
        /// Who wrote the comment.
        by: String,
        /// Their display name.
        by_name: String,
        /// The user mentioned.
        user: String,
        /// Their address.
        email: String,
        /// The thread (its id: the revision that started it).
        thread: u64,
        /// The comment's text (at most 500 chars of it).
        excerpt: String,
    },
    /// An export finished or failed (the notification worker emails the requester).
    ExportFinished {
        /// The export's id.
        export: String,
        /// The document.
        doc: String,
        /// Its title.
        title: String,
        /// Who asked.
        user: String,
        /// Their address (where the notification goes).
        email: String,
        /// `pdf` or `docx`.
        format: String,
        /// The revision rendered.
        rev: Option<u64>,
        /// A link to the file, valid until `expires_ms` (none when it failed).
        link: Option<String>,
        /// When the link stops working, ms since the Unix epoch.
        expires_ms: Option<i64>,
        /// Why it failed.
        error: Option<String>,
    },
}

impl Event {
    /// The topic it goes to.
    pub fn topic(&self) -> Topic {
        match self {
            Self::DocumentShared { .. } | Self::ExportFinished { .. } | Self::Mentioned { .. } => Topic::Notifications,
            Self::ExportRequested { .. } => Topic::Exports,
            // Search follows titles and deletions with the edits.
            Self::DocumentCreated { .. } | Self::DocumentRenamed { .. } | Self::DocumentDeleted { .. } => {
                Topic::DocumentEdits
            }
            Self::RoleChanged { .. } | Self::Opened { .. } => Topic::Analytics,
            Self::Edited { .. } => Topic::DocumentEdits,
        }
    }

    /// The variant's name (the `kind` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DocumentCreated { .. } => "document_created",
            Self::DocumentRenamed { .. } => "document_renamed",
            Self::DocumentDeleted { .. } => "document_deleted",
            Self::DocumentShared { .. } => "document_shared",
            Self::RoleChanged { .. } => "role_changed",
            Self::Edited { .. } => "edited",
            Self::Opened { .. } => "opened",
            Self::ExportRequested { .. } => "export_requested",
            Self::ExportFinished { .. } => "export_finished",
            Self::Mentioned { .. } => "mentioned",
        }
    }

    /// The document it is about (the partition key).
    pub fn doc(&self) -> &str {
        match self {
            Self::DocumentCreated { doc, .. }
            | Self::DocumentRenamed { doc, .. }
            | Self::DocumentDeleted { doc, .. }
            | Self::DocumentShared { doc, .. }
            | Self::RoleChanged { doc, .. }
            | Self::Edited { doc, .. }
            | Self::Opened { doc, .. }
            | Self::ExportRequested { doc, .. }
            | Self::ExportFinished { doc, .. }
            | Self::Mentioned { doc, .. } => doc,
        }
    }
}

/// One op in an [`Event::Edited`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The revision it made.
    pub rev: u64,
    /// The client that wrote it.
    pub author: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The delta as applied (quill-delta JSON).
    pub delta: serde_json::Value,
}

/// One event as the bus carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The schema version it was written with.
    pub schema: u32,
    /// Unique: consumers deduplicate by it (a redelivered event has the same id).
    pub id: String,
    /// Its topic.
    pub topic: Topic,
    /// The partition key: the document id.
    pub key: String,
    /// When the change happened, ms since the Unix epoch.
    pub at_ms: i64,
    /// The event.
    pub event: Event,
}

impl Envelope {
    /// An envelope for `event` with the current schema, on the event's own topic.
    pub fn new(id: String, at_ms: i64, event: Event) -> Self {
        Self { schema: SCHEMA_VERSION, id, topic: event.topic(), key: event.doc().to_owned(), at_ms, event }
    }

    /// Its JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes serialize")
    }

    /// Reads one from JSON: an unknown schema version or a malformed event is an error whose
    /// text says why (the consumer dead-letters it).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            schema: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(|e| format!("not an event envelope: {e}"))?;
        if v.schema != SCHEMA_VERSION {
            return Err(format!("schema version {} (this build reads {SCHEMA_VERSION})", v.schema));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("malformed event: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_other_schemas() {
        let e = Envelope::new(
            "id1".into(),
            5,
            Event::DocumentShared {
                doc: "d".into(),
                title: "T".into(),
                by: "u".into(),
                by_name: "U".into(),
                email: "a@b.c".into(),
                role: Role::Editor,
                user: None,
            },
        );
        assert_eq!(e.topic, Topic::Notifications);
        assert_eq!(e.key, "d");
        let json = e.to_json();
        assert_eq!(Envelope::from_json(&json), Ok(e));
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""topic":"notifications""#) && text.contains(r#""kind":"document_shared""#));
        let v2 = text.replace(r#""schema":1"#, r#""schema":2"#);
        assert!(Envelope::from_json(v2.as_bytes()).unwrap_err().contains("schema version 2"));
        assert!(Envelope::from_json(b"{}").unwrap_err().contains("not an event envelope"));
        let bad = text.replace("document_shared", "document_exploded");
        assert!(Envelope::from_json(bad.as_bytes()).unwrap_err().contains("malformed event"));
    }

    #[test]
    fn topics_have_their_kafka_names() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.name()), Some(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.name()));
        }
    }
}
