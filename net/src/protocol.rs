//! Protocol v1: the messages, error codes and close codes (see `docs/protocol.md`).
//!
//! Every message exists in two encodings with the same content: an rkyv archive in a binary
//! frame (`tandem.v1.bin`) and JSON in a text frame (`tandem.v1.json`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tandem_engine::{ClientId, Delta, SelectionRange};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The binary subprotocol (rkyv archives in binary frames).
pub const SUBPROTOCOL_BIN: &str = "tandem.v1.bin";
/// The JSON subprotocol (JSON in text frames), for browsers.
pub const SUBPROTOCOL_JSON: &str = "tandem.v1.json";

/// Which encoding a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `tandem.v1.bin`.
    Binary,
    /// `tandem.v1.json`.
    Json,
}

impl Encoding {
    /// The subprotocol name negotiated in the handshake.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Binary => SUBPROTOCOL_BIN,
            Self::Json => SUBPROTOCOL_JSON,
        }
    }

    /// The encoding for a subprotocol name.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name {
            SUBPROTOCOL_BIN => Some(Self::Binary),
            SUBPROTOCOL_JSON => Some(Self::Json),
            _ => None,
        }
    }
}

/// Most bytes in a document id.
pub const MAX_DOC_ID_BYTES: usize = 256;
/// Most bytes in a user name or color.
pub const MAX_NAME_BYTES: usize = 128;
/// Revisions in a `revisions` reply when `list_revisions` names no `limit`...
pub const DEFAULT_REVISIONS_PER_REPLY: u32 = 100;
/// ...and at most, whatever it names.
pub const MAX_REVISIONS_PER_REPLY: u32 = 1000;

/// Most revisions one `get_changes` spans (the history a server keeps in memory by default).
pub const MAX_CHANGES_REVISIONS: u64 = 10_000;
/// Most bytes in an auth token.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// A document's id: 1 to 256 bytes of UTF-8 without control characters. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(Arc<str>);

impl DocId {
    /// Validates and wraps an id.
    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() || id.len() > MAX_DOC_ID_BYTES {
            return Err(format!("document id must be 1 to {MAX_DOC_ID_BYTES} bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err("document id must not contain control characters".to_owned());
        }
        Ok(Self(id.into()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, shared.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// The core that owns this document among `cores`: FNV-1a of the id, modulo `cores`.
    ///
    /// FNV-1a is fixed here (not `std`'s hasher, which may change between Rust releases), so
    /// a document keeps its owner core, and its op log, across builds.
    pub fn owner(&self, cores: usize) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.0.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        usize::try_from(h % cores as u64).expect("core index fits usize")
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A selection range on the wire: `{"anchor": 3, "head": 7}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Where the selection started.
    pub anchor: u64,
    /// Where it ends (the caret).
    pub head: u64,
}

impl Range {
    /// Converts to the engine's range, refusing positions that do not fit memory.
    pub fn to_engine(self) -> Option<SelectionRange> {
        Some(SelectionRange { anchor: usize::try_from(self.anchor).ok()?, head: usize::try_from(self.head).ok()? })
    }

    /// Converts from the engine's range.
    pub fn from_engine(r: SelectionRange) -> Self {
        Self { anchor: r.anchor as u64, head: r.head as u64 }
    }
}

/// Another user on a document.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Their client id.
    pub client: ClientId,
    /// Their authenticated user id.
    pub user: String,
    /// Their display name.
    pub name: String,
    /// Their display color; in JSON omitted when the client gave none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub color: String,
}

/// What a user may do with a document. Ordered: each role may do what the ones before it may.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum Role {
    /// Reads the document and sees the others' presence.
    Viewer,
    /// A viewer who may also comment.
    Commenter,
    /// Edits the document.
    Editor,
    /// Edits, shares, renames and deletes it.
    Owner,
}

impl Role {
    /// The role's name, as written in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Commenter => "commenter",
            Self::Editor => "editor",
            Self::Owner => "owner",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "viewer" => Self::Viewer,
            "commenter" => Self::Commenter,
            "editor" => Self::Editor,
            "owner" => Self::Owner,
            _ => return None,
        })
    }

    /// May submit ops.
    pub fn can_edit(self) -> bool {
        self >= Self::Editor
    }
}

impl From<&ArchivedRole> for Role {
    fn from(r: &ArchivedRole) -> Self {
        match r {
            ArchivedRole::Viewer => Self::Viewer,
            ArchivedRole::Commenter => Self::Commenter,
            ArchivedRole::Editor => Self::Editor,
            ArchivedRole::Owner => Self::Owner,
        }
    }
}

/// One committed op, in a catch-up list.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRecord {
    /// The revision it produced.
    pub rev: u64,
    /// Who made it.
    pub author: ClientId,
    /// The author's sequence number for it.
    pub client_seq: u64,
    /// The change, as applied.
    pub delta: Delta,
}

impl From<&tandem_engine::Commit> for OpRecord {
    fn from(c: &tandem_engine::Commit) -> Self {
        Self { rev: c.rev, author: c.author, client_seq: c.client_seq, delta: c.delta.clone() }
    }
}

/// One revision in a document's history (`revisions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionRecord {
    /// The revision.
    pub rev: u64,
    /// Who made it.
    pub author: ClientId,
    /// The author's sequence number for it.
    pub client_seq: u64,
    /// When it was committed, ms since the Unix epoch.
    pub time_ms: u64,
}

/// One user's selection.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSelection {
    /// Whose.
    pub client: ClientId,
    /// The ranges at the message's revision (empty: no selection).
    pub ranges: Vec<Range>,
}

/// The server's limits, told to the client in `welcome`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLimits {
    /// Largest message the server accepts, in bytes.
    pub max_message_bytes: u64,
    /// Most documents open at once per connection.
    pub max_open_docs: u32,
    /// Most messages per second per connection (sustained; bursts up to twice that).
    pub max_messages_per_s: u32,
    /// Presence updates reach each subscriber at most once per this many milliseconds per
    /// document.
    pub presence_interval_ms: u32,
    /// Most chars one op may insert.
    pub max_insert_chars: u64,
    /// Most ops in one delta.
    pub max_delta_ops: u64,
    /// Most chars in a document.
    pub max_document_chars: u64,
    /// Ops of history kept for catching up; older base revisions need a snapshot.
    pub history_ops: u64,
}

/// A stable error code, sent in `error` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum ErrorCode {
    /// The message could not be decoded (bad JSON, bad archive, unknown type or field).
    BadMessage,
    /// `hello` was missing, repeated, or had a bad field.
    BadHello,
    /// The protocol version is not supported.
    UnsupportedProtocol,
    /// The token was refused.
    Unauthorized,
    /// The document id is invalid.
    InvalidDocId,
    /// The document is not open on this connection.
    NotOpen,
    /// Too many documents open on this connection, or on the server.
    TooManyDocs,
    /// The base revision is newer than the document.
    BaseInFuture,
    /// The base revision is older than the history kept: re-open the document.
    BaseTooOld,
    /// The delta does not apply to the document (spans past its end, or is malformed).
    InvalidDelta,
    /// The op or the document would be over a size limit.
    TooLarge,
    /// A `client_seq` went backwards.
    SeqReused,
    /// An op with this `client_seq` was already applied, and this is a different one (or
    /// one the server can no longer check): the client id is in use by another session.
    SeqConflict,
    /// The selection is out of bounds or has too many ranges.
    BadSelection,
    /// Too many messages: the connection is closed.
    RateLimited,
    /// The server is overloaded; try again later.
    Overloaded,
    /// An internal error.
    Internal,
    /// A history request for a revision whose history is no longer kept (the document
    /// stays open).
    HistoryUnavailable,
    /// A history request for a revision the document does not have yet (the document stays
    /// open).
    NoSuchRevision,
    /// No such document, or no access to it (the two are not told apart).
    Forbidden,
    /// A submit from a session whose role may not edit (viewer, commenter): the op is
    /// dropped, the document stays open (read-only).
    ReadOnly,
    /// The user's access to an open document was revoked: the document is closed for them.
    AccessRevoked,
    /// An open document was deleted: it is closed for everyone.
    DocumentDeleted,
    /// An `undo` (or `redo`) with nothing left to undo (or redo) for the user: nothing
    /// happened, the document stays open.
    NothingToUndo,
    /// A `note` about a thread, message or named version that does not exist (any more), or
    /// a comment on text deleted meanwhile: nothing happened, the document stays open.
    NotFound,
    /// A `note` that is malformed or over a limit (an empty or too long message, too many
    /// threads): nothing happened, the document stays open.
    InvalidNote,
}

impl ErrorCode {
    /// The code's name, as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::BadHello => "bad_hello",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::Unauthorized => "unauthorized",
            Self::InvalidDocId => "invalid_doc_id",
            Self::NotOpen => "not_open",
            Self::TooManyDocs => "too_many_docs",
            Self::BaseInFuture => "base_in_future",
            Self::BaseTooOld => "base_too_old",
            Self::InvalidDelta => "invalid_delta",
            Self::TooLarge => "too_large",
            Self::SeqReused => "seq_reused",
            Self::SeqConflict => "seq_conflict",
            Self::BadSelection => "bad_selection",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
            Self::HistoryUnavailable => "history_unavailable",
            Self::NoSuchRevision => "no_such_revision",
            Self::Forbidden => "forbidden",
            Self::ReadOnly => "read_only",
            Self::AccessRevoked => "access_revoked",
            Self::DocumentDeleted => "document_deleted",
            Self::NothingToUndo => "nothing_to_undo",
            Self::NotFound => "not_found",
            Self::InvalidNote => "invalid_note",
        }
    }

    /// The code for an engine refusal.
    pub fn for_engine(e: &tandem_engine::Error) -> Self {
        use tandem_engine::Error as E;
        match e {
            E::BaseRevisionInFuture { .. } => Self::BaseInFuture,
            // Too costly to transform means the same to a client as too old: catch up (re-open
            // from its revision), rebase the op locally, resubmit.
            E::BaseRevisionTooOld { .. } | E::TransformTooCostly { .. } => Self::BaseTooOld,
            E::DocumentTooLarge { .. } | E::OpTooLarge { .. } | E::DocumentFormatTooLarge { .. } => Self::TooLarge,
            E::ClientSeqReused { .. } => Self::SeqReused,
            E::SeqConflict { .. } => Self::SeqConflict,
            E::SelectionOutOfBounds { .. } | E::TooManyRanges { .. } => Self::BadSelection,
            E::NothingToUndo { .. } => Self::NothingToUndo,
            E::Note(tandem_engine::notes::NoteError::NotFound(_)) => Self::NotFound,
            E::Note(tandem_engine::notes::NoteError::Forbidden(_)) => Self::Forbidden,
            E::Note(tandem_engine::notes::NoteError::Invalid(_)) => Self::InvalidNote,
            _ => Self::InvalidDelta,
        }
    }
}

pub use messages::{ArchivedClientMsg, ArchivedServerMsg, ClientMsg, ServerMsg};

/// A value carried as JSON: as itself in the JSON subprotocol, as its JSON text (an archived
/// string) in the binary one. Notes use it: they are rare and small next to ops, and a new
/// kind of note then needs no new binary layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json<T>(pub T);

impl<T: Serialize> Json<T> {
    fn text(&self) -> String {
        serde_json::to_string(&self.0).expect("protocol values always encode as JSON")
    }
}

impl<T: Serialize> rkyv::Archive for Json<T> {
    type Archived = rkyv::string::ArchivedString;
    type Resolver = rkyv::string::StringResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::string::ArchivedString::resolve_from_str(&self.text(), resolver, out);
    }
}

impl<T: Serialize, S> rkyv::Serialize<S> for Json<T>
where
    S: rkyv::rancor::Fallible + ?Sized,
    S::Error: rkyv::rancor::Source,
    str: rkyv::SerializeUnsized<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::string::ArchivedString::serialize_from_str(&self.text(), serializer)
    }
}

impl<T: for<'de> Deserialize<'de>> Json<T> {
    /// The value from its archived JSON text.
    pub fn from_archived(text: &rkyv::string::ArchivedString) -> Result<Self, String> {
        serde_json::from_str(text.as_str()).map(Self).map_err(|e| e.to_string())
    }
}

/// A `u64` written in JSON as 16 hex digits (like client ids): JavaScript numbers hold only
/// 53 bits.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:016x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() || s.len() > 16 {
            return Err(serde::de::Error::custom("expected 1 to 16 hex digits"));
        }
        u64::from_str_radix(&s, 16).map_err(|_| serde::de::Error::custom("expected 1 to 16 hex digits"))
    }
}

/// Decoding a client message from JSON.
///
/// Every field of every message is read into one flat record, then checked against the
/// message's type: unlike serde's derived decoder for an internally tagged enum, nothing is
/// buffered, so a delta is decoded (and refused at its limits) as it is read, whatever the
/// order of the keys.
mod json {
    use serde::Deserialize;
    use tandem_engine::{ClientId, Delta, NoteChange};

    use super::{ClientMsg, DEFAULT_REVISIONS_PER_REPLY, Json, Range};

    #[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Hello,
        Open,
        Close,
        Submit,
        Presence,
        GetRevision,
        ListRevisions,
        Refresh,
        Undo,
        Redo,
        Restore,
        GetChanges,
        Note,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Flat {
        #[serde(rename = "type")]
        kind: Kind,
        protocol: Option<u32>,
        client: Option<ClientId>,
        token: Option<String>,
        name: Option<String>,
        color: Option<String>,
        doc: Option<String>,
        from_rev: Option<u64>,
        to_rev: Option<u64>,
        base_rev: Option<u64>,
        client_seq: Option<u64>,
        delta: Option<Delta>,
        rev: Option<u64>,
        ranges: Option<Vec<Range>>,
        limit: Option<u32>,
        change: Option<NoteChange>,
    }

    /// Takes a required field.
    fn need<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("missing field `{name}`"))
    }

    impl TryFrom<Flat> for ClientMsg {
        type Error = String;

        fn try_from(f: Flat) -> Result<Self, String> {
            let present = [
                ("protocol", f.protocol.is_some()),
                ("client", f.client.is_some()),
                ("token", f.token.is_some()),
                ("name", f.name.is_some()),
                ("color", f.color.is_some()),
                ("doc", f.doc.is_some()),
                ("from_rev", f.from_rev.is_some()),
                ("to_rev", f.to_rev.is_some()),
                ("base_rev", f.base_rev.is_some()),
                ("client_seq", f.client_seq.is_some()),
                ("delta", f.delta.is_some()),
                ("rev", f.rev.is_some()),
                ("ranges", f.ranges.is_some()),
                ("limit", f.limit.is_some()),
                ("change", f.change.is_some()),
            ];
            let allowed: &[&str] = match f.kind {
                Kind::Hello => &["protocol", "client", "token", "name", "color"],
                Kind::Open => &["doc", "from_rev"],
                Kind::Close => &["doc"],
                Kind::Submit => &["doc", "base_rev", "client_seq", "delta"],
                Kind::Presence => &["doc", "rev", "ranges"],
                Kind::GetRevision => &["doc", "rev"],
                Kind::ListRevisions => &["doc", "from_rev", "limit"],
                Kind::Refresh => &["token"],
                Kind::Undo | Kind::Redo => &["doc", "client_seq"],
                Kind::Restore => &["doc", "rev", "client_seq"],
                Kind::GetChanges => &["doc", "from_rev", "to_rev"],
                Kind::Note => &["doc", "rev", "client_seq", "change"],
            };
            if let Some((name, _)) = present.iter().find(|(name, here)| *here && !allowed.contains(name)) {
                return Err(format!("unknown field `{name}` for a {:?} message", f.kind));
            }
            Ok(match f.kind {
                Kind::Hello => Self::Hello {
                    protocol: need(f.protocol, "protocol")?,
                    client: need(f.client, "client")?,
                    token: need(f.token, "token")?,
                    name: need(f.name, "name")?,
                    color: f.color.unwrap_or_default(),
                },
                Kind::Open => Self::Open { doc: need(f.doc, "doc")?, from_rev: f.from_rev },
                Kind::Close => Self::Close { doc: need(f.doc, "doc")? },
                Kind::Submit => Self::Submit {
                    doc: need(f.doc, "doc")?,
                    base_rev: need(f.base_rev, "base_rev")?,
                    client_seq: need(f.client_seq, "client_seq")?,
                    delta: need(f.delta, "delta")?,
                },
                Kind::Presence => Self::Presence {
                    doc: need(f.doc, "doc")?,
                    rev: need(f.rev, "rev")?,
                    ranges: need(f.ranges, "ranges")?,
                },
                Kind::GetRevision => Self::GetRevision { doc: need(f.doc, "doc")?, rev: need(f.rev, "rev")? },
                Kind::ListRevisions => Self::ListRevisions {
                    doc: need(f.doc, "doc")?,
                    from_rev: f.from_rev.unwrap_or(0),
                    limit: f.limit.unwrap_or(DEFAULT_REVISIONS_PER_REPLY),
                },
                Kind::Refresh => Self::Refresh { token: need(f.token, "token")? },
                Kind::Undo => Self::Undo { doc: need(f.doc, "doc")?, client_seq: need(f.client_seq, "client_seq")? },
                Kind::Redo => Self::Redo { doc: need(f.doc, "doc")?, client_seq: need(f.client_seq, "client_seq")? },
                Kind::GetChanges => Self::GetChanges {
                    doc: need(f.doc, "doc")?,
                    from_rev: need(f.from_rev, "from_rev")?,
                    to_rev: need(f.to_rev, "to_rev")?,
                },
                Kind::Restore => Self::Restore {
                    doc: need(f.doc, "doc")?,
                    rev: need(f.rev, "rev")?,
                    client_seq: need(f.client_seq, "client_seq")?,
                },
                Kind::Note => Self::Note {
                    doc: need(f.doc, "doc")?,
                    rev: need(f.rev, "rev")?,
                    client_seq: need(f.client_seq, "client_seq")?,
                    change: Json(need(f.change, "change")?),
                },
            })
        }
    }

    impl<'de> Deserialize<'de> for ClientMsg {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Flat::deserialize(d)?.try_into().map_err(serde::de::Error::custom)
        }
    }

    /// A submit whose delta is not read: when a submit fails to decode but this succeeds,
    /// the delta was at fault, and the error is the document's, not the connection's.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SubmitEnvelope {
        #[serde(rename = "type")]
        kind: Kind,
        doc: String,
        #[serde(rename = "base_rev")]
        _base_rev: u64,
        client_seq: u64,
        #[serde(rename = "delta")]
        _delta: serde::de::IgnoredAny,
    }

    /// The document and `client_seq` of a JSON submit whose delta (only) is bad.
    pub(crate) fn submit_with_bad_delta(payload: &[u8]) -> Option<(String, u64)> {
        let e: SubmitEnvelope = serde_json::from_slice(payload).ok()?;
        (e.kind == Kind::Submit).then_some((e.doc, e.client_seq))
    }
}

pub(crate) use json::submit_with_bad_delta;

/// The two message enums, in a private module: rkyv generates a helper struct per variant,
/// which must not become public API.
mod messages {
    use serde::{Deserialize, Serialize};
    use tandem_engine::{ClientId, Delta, Note, NoteChange, Notes};

    #[allow(unused_imports)]
    use super::PROTOCOL_VERSION;
    use super::{ErrorCode, Json, OpRecord, Peer, PeerSelection, Range, RevisionRecord, Role, WireLimits};

    /// A message from a client. (JSON decoding is written out in `super::json`: serde's
    /// derived decoder for a tagged enum buffers the whole message before reading it.)
    #[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum ClientMsg {
        /// First message on a connection.
        Hello {
            /// Must be [`PROTOCOL_VERSION`].
            protocol: u32,
            /// The client's id, kept across reconnects (exactly-once depends on it).
            client: ClientId,
            /// Credentials: the configured dev secret, until accounts land.
            token: String,
            /// Display name shown to others.
            name: String,
            /// Display color shown to others (any CSS color string; empty: none).
            #[serde(skip_serializing_if = "String::is_empty")]
            color: String,
        },
        /// Open (subscribe to) a document.
        Open {
            /// The document.
            doc: String,
            /// The revision the client already has; the reply then carries only the ops since.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            from_rev: Option<u64>,
        },
        /// Close (unsubscribe from) a document.
        Close {
            /// The document.
            doc: String,
        },
        /// Submit an op.
        Submit {
            /// The document.
            doc: String,
            /// The revision the delta applies to.
            base_rev: u64,
            /// The client's sequence number for this op (strictly increasing per client).
            client_seq: u64,
            /// The change.
            delta: Delta,
        },
        /// The client's selection, at revision `rev`.
        Presence {
            /// The document.
            doc: String,
            /// The revision the ranges refer to.
            rev: u64,
            /// The selection ranges (empty: no selection).
            ranges: Vec<Range>,
        },
        /// Ask for the document as it was at revision `rev` (reply: `revision`). The
        /// document must be open.
        GetRevision {
            /// The document.
            doc: String,
            /// The revision (0: the empty document before the first op).
            rev: u64,
        },
        /// Ask for up to `limit` revisions from `from_rev` on, with author and time (reply:
        /// `revisions`). The document must be open.
        ListRevisions {
            /// The document.
            doc: String,
            /// The first revision wanted (older ones no longer kept are skipped).
            from_rev: u64,
            /// Most revisions in the reply (the server caps it at
            /// [`super::MAX_REVISIONS_PER_REPLY`]).
            limit: u32,
        },
        /// A fresh access token for the open connection, before the one it has expires; it
        /// must name the same user. Answered with `refreshed` (or `unauthorized` and a close).
        Refresh {
            /// The new access token.
            token: String,
        },
        /// Undo the user's most recent change to the document not undone yet (the server
        /// keeps the user's undo stack, across reloads and devices). The answer is an `op`
        /// with this `client_seq`, sent to everyone (the sender too), or `nothing_to_undo`.
        Undo {
            /// The document.
            doc: String,
            /// A sequence number from the client's op sequence (the undo is applied exactly
            /// once, like a submit).
            client_seq: u64,
        },
        /// Redo the user's most recently undone change (as [`ClientMsg::Undo`]).
        Redo {
            /// The document.
            doc: String,
            /// A sequence number from the client's op sequence.
            client_seq: u64,
        },
        /// Make the document what it was at revision `rev`, as a new op by this client (the
        /// change from now to then; history is kept). Answered like [`ClientMsg::Undo`]: an
        /// `op` with this `client_seq` to everyone, or an `ack` when nothing changes.
        Restore {
            /// The document.
            doc: String,
            /// The revision to restore.
            rev: u64,
            /// A sequence number from the client's op sequence.
            client_seq: u64,
        },
        /// Ask for the changes from revision `from_rev` to `to_rev`, attributed to their
        /// authors (reply: `changes`). The document must be open.
        GetChanges {
            /// The document.
            doc: String,
            /// The revision the changes start from.
            from_rev: u64,
            /// The revision they end at (at most [`super::MAX_CHANGES_REVISIONS`] after).
            to_rev: u64,
        },
        /// A change to the document's comments or named versions, made at revision `rev` (a
        /// comment's range is in the document as of `rev`). Sequenced like an op: the answer
        /// is a `noted` with this `client_seq`, sent to everyone (the sender too), or an error
        /// with it (`not_found`, `forbidden`, `invalid_note`, `read_only`; the document stays
        /// open).
        Note {
            /// The document.
            doc: String,
            /// The revision the change was made at.
            rev: u64,
            /// A sequence number from the client's op sequence.
            client_seq: u64,
            /// The change.
            change: Json<NoteChange>,
        },
    }

    /// A message from the server.
    #[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    pub enum ServerMsg {
        /// Reply to `hello`.
        Welcome {
            /// Must equal the client's.
            protocol: u32,
            /// This connection's session id (for logs and support); in JSON 16 hex digits.
            #[serde(with = "super::hex_u64")]
            session: u64,
            /// The client's id in its canonical form, as the server writes it in `author`,
            /// `online` and `presence`.
            client: ClientId,
            /// The server's limits (archived out of line: every archived message is as long
            /// as the longest variant's inline part, and this one is sent once).
            #[rkyv(with = rkyv::with::AsBox)]
            limits: WireLimits,
            /// The signed-in user's id (absent when the server checks no accounts).
            #[serde(default, skip_serializing_if = "String::is_empty")]
            user: String,
            /// When the access token expires, ms since the Unix epoch (absent when it never
            /// does): send `refresh` before then, or the connection is closed with 4010.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            expires_at: Option<u64>,
        },
        /// Reply to `open`: the document, as a snapshot or as the ops since `from_rev`.
        Opened {
            /// The document.
            doc: String,
            /// Its current revision.
            rev: u64,
            /// The whole content at `rev` (when `from_rev` was absent or too old).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            snapshot: Option<Delta>,
            /// The ops after `from_rev`, in order (when `from_rev` was given and is retained;
            /// empty when the client is up to date). Exactly one of `snapshot` and `ops` is
            /// present.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            ops: Option<Vec<OpRecord>>,
            /// Who else has the document open (not the client itself).
            online: Vec<Peer>,
            /// The last `client_seq` the server applied from this client, if it remembers one.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            last_seq: Option<u64>,
            /// The user's role (absent when the server checks no roles: anyone may edit). A
            /// viewer or commenter reads and sends presence; its submits are refused.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            role: Option<Role>,
        },
        /// The sender's op was applied (or had been applied before) as `rev`.
        Ack {
            /// The document.
            doc: String,
            /// The op's sequence number.
            client_seq: u64,
            /// The revision it produced.
            rev: u64,
        },
        /// Someone else's op.
        Op {
            /// The document.
            doc: String,
            /// The revision it produced.
            rev: u64,
            /// Who made it.
            author: ClientId,
            /// The author's sequence number for it.
            client_seq: u64,
            /// The change, as applied.
            delta: Delta,
        },
        /// Selections that changed since the last `presence` for this document.
        Presence {
            /// The document.
            doc: String,
            /// The revision the ranges refer to.
            rev: u64,
            /// The changed selections.
            peers: Vec<PeerSelection>,
        },
        /// Someone opened the document.
        Joined {
            /// The document.
            doc: String,
            /// Who.
            peer: Peer,
        },
        /// Someone closed the document or disconnected.
        Left {
            /// The document.
            doc: String,
            /// Who.
            client: ClientId,
        },
        /// The document is closed for this connection (reply to `close`, or after an error).
        Closed {
            /// The document.
            doc: String,
        },
        /// Something was refused. With `doc`, that document is closed for this connection
        /// (re-open it to continue); without, the connection is closed after this message when
        /// the error is fatal.
        Error {
            /// Stable code.
            code: ErrorCode,
            /// Human-readable explanation.
            message: String,
            /// The document concerned, if any.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            doc: Option<String>,
            /// The `client_seq` of the submitted op the error refused, if it answers a submit.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            client_seq: Option<u64>,
        },
        /// Reply to `get_revision`: the document at `rev`, as a delta of inserts.
        Revision {
            /// The document.
            doc: String,
            /// The revision.
            rev: u64,
            /// Its content.
            snapshot: Delta,
        },
        /// Reply to `list_revisions`.
        Revisions {
            /// The document.
            doc: String,
            /// The oldest revision `get_revision` can still build (older history was dropped).
            oldest: u64,
            /// The document's latest durable revision.
            latest: u64,
            /// The revisions, oldest first (empty past `latest`).
            revisions: Vec<RevisionRecord>,
        },
        /// The user's role on an open document changed (it takes effect from the next
        /// message; a revoked user gets `error` `access_revoked` instead).
        Role {
            /// The document.
            doc: String,
            /// The new role.
            role: Role,
        },
        /// The access token expires soon: send `refresh` with a fresh one.
        TokenExpiring {
            /// When it expires, ms since the Unix epoch.
            expires_at: u64,
        },
        /// Reply to `refresh`: the new token is in force.
        Refreshed {
            /// When it expires, ms since the Unix epoch.
            expires_at: u64,
        },
        /// An export this user asked for (`POST /api/documents/{id}/export`) finished or
        /// failed; sent to their sessions that have the document open.
        ExportFinished {
            /// The document.
            doc: String,
            /// The export's id.
            export: String,
            /// `pdf` or `docx`.
            format: String,
            /// `done` or `failed`.
            status: String,
            /// A link to the file (done), valid for an hour.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            url: Option<String>,
            /// Why it failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        },
        /// Reply to `get_changes`: the document at `from_rev` with every change made up to
        /// `to_rev` marked (inserts only): inserted text has the attribute `tandem_inserted`,
        /// text deleted is kept with `tandem_deleted`, text formatted has
        /// `tandem_formatted`, each set to the author's client id.
        Changes {
            /// The document.
            doc: String,
            /// The first revision.
            from_rev: u64,
            /// The last revision.
            to_rev: u64,
            /// The marked document.
            content: Delta,
        },
        /// A change to the document's comments or named versions, committed as revision `rev`
        /// (the text is unchanged); sent to everyone, its sender too. Every client applies it
        /// and moves its anchors through every op after, as the server does.
        Noted {
            /// The document.
            doc: String,
            /// The revision it took.
            rev: u64,
            /// Who made it.
            author: ClientId,
            /// The author's sequence number for it.
            client_seq: u64,
            /// The change, with who made it and when (a comment's range as of `rev - 1`).
            note: Json<Note>,
        },
        /// The document's comment threads and named versions at revision `rev`: sent right
        /// after every `opened` (the ops caught up carry notes as empty ops). It replaces what
        /// the client had.
        Notes {
            /// The document.
            doc: String,
            /// The revision the anchors are at.
            rev: u64,
            /// The threads and named versions.
            notes: Json<Notes>,
        },
        /// In a cluster: this node does not serve the document (it never did, or it stopped:
        /// another node took it over). The document is closed for the session; the client
        /// connects to `to` (a WebSocket URL) and opens it there, resuming as after any
        /// reconnect (same client id, unacked ops resent). `to` is empty while no node serves
        /// it (a failover in progress): retry shortly, through any node.
        Moved {
            /// The document.
            doc: String,
            /// Where it is served now, if known.
            to: String,
        },
    }
}

/// WebSocket close codes Tandem uses (RFC 6455 section 7.4, and 4000-4999 for the
/// application).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// WebSocket protocol error (an unmasked client frame, a bad opcode, a bad frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame on the JSON subprotocol, or a text frame on the binary one.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame with invalid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame or message over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal server error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is overloaded; reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A message could not be decoded (garbage archive, invalid JSON, unknown type).
    pub const BAD_MESSAGE: u16 = 4000;
    /// `hello` was missing, repeated, malformed or refused.
    pub const BAD_HELLO: u16 = 4001;
    /// The token was refused.
    pub const UNAUTHORIZED: u16 = 4003;
    /// No frame (not even a pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4008;
    /// The access token expired and no `refresh` came: sign in again (or refresh over
    /// REST) and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4010;
    /// More messages than the per-connection rate limit allows.
    pub const RATE_LIMITED: u16 = 4029;
    /// The connection's send queue overflowed: the client reads too slowly.
    pub const SLOW_READER: u16 = 4030;
    /// Another connection with the same client id opened a document this one had open: this
    /// (older) session is superseded. Do not reconnect automatically with that client id.
    pub const SUPERSEDED: u16 = 4009;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::Attributes;

    #[test]
    fn json_shapes() {
        let m = ClientMsg::Submit {
            doc: "d".into(),
            base_rev: 3,
            client_seq: 7,
            delta: Delta::new().retain(1, Attributes::NONE).insert("a", Attributes::NONE),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"submit","doc":"d","base_rev":3,"client_seq":7,"delta":{"ops":[{"retain":1},{"insert":"a"}]}}"#
        );
        let hello: ClientMsg = serde_json::from_str(
            r#"{"type":"hello","protocol":1,"client":"00000000000000ff","token":"t","name":"Ada"}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            ClientMsg::Hello {
                protocol: 1,
                client: ClientId(255),
                token: "t".into(),
                name: "Ada".into(),
                color: String::new()
            }
        );
        let e = ServerMsg::Error {
            code: ErrorCode::BaseTooOld,
            message: "m".into(),
            doc: Some("d".into()),
            client_seq: Some(7),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"base_too_old","message":"m","doc":"d","client_seq":7}"#
        );
        // Keys in any order; the type need not come first.
        let open: ClientMsg = serde_json::from_str(r#"{"from_rev":3,"doc":"d","type":"open"}"#).unwrap();
        assert_eq!(open, ClientMsg::Open { doc: "d".into(), from_rev: Some(3) });
        let list: ClientMsg = serde_json::from_str(r#"{"type":"list_revisions","doc":"d"}"#).unwrap();
        assert_eq!(list, ClientMsg::ListRevisions { doc: "d".into(), from_rev: 0, limit: DEFAULT_REVISIONS_PER_REPLY });
        // A session id and a client id as 16 hex digits, a peer without a color without one.
        let w = ServerMsg::Welcome {
            protocol: 1,
            session: (33 << 48) | 5,
            client: ClientId(0xa1),
            limits: WireLimits {
                max_message_bytes: 1,
                max_open_docs: 1,
                max_messages_per_s: 1,
                presence_interval_ms: 1,
                max_insert_chars: 1,
                max_delta_ops: 1,
                max_document_chars: 1,
                history_ops: 1,
            },
            user: String::new(),
            expires_at: None,
        };
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.contains(r#""session":"0021000000000005","client":"00000000000000a1""#), "{json}");
        let p = Peer { client: ClientId(1), user: "u".into(), name: "n".into(), color: String::new() };
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"client":"0000000000000001","user":"u","name":"n"}"#);
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"close","doc":"d","x":1}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"close"}"#).is_err());
        let wrong = serde_json::from_str::<ClientMsg>(r#"{"type":"close","doc":"d","rev":1}"#).unwrap_err();
        assert!(wrong.to_string().contains("unknown field `rev`"), "{wrong}");
        assert!(serde_json::from_str::<ClientMsg>(r#"{"doc":"d"}"#).unwrap_err().to_string().contains("`type`"));
        assert!(
            serde_json::from_str::<ClientMsg>(r#"{"type":"hello","protocol":1,"client":"xyz","token":"","name":""}"#)
                .is_err()
        );
    }

    #[test]
    fn doc_ids_are_validated_and_sharded_stably() {
        assert!(DocId::new("").is_err());
        assert!(DocId::new(&"x".repeat(257)).is_err());
        assert!(DocId::new("a\nb").is_err());
        let d = DocId::new("notes/2026 plan ✓").unwrap();
        // FNV-1a is fixed: these values must never change, or documents move cores.
        assert_eq!(DocId::new("a").unwrap().owner(1000), 0xaf63_dc4c_8601_ec8c % 1000);
        assert!(d.owner(2) < 2);
        let spread: std::collections::HashSet<usize> =
            (0..100).map(|i| DocId::new(&format!("doc-{i}")).unwrap().owner(4)).collect();
        assert_eq!(spread.len(), 4);
    }
}
