//! Tandem's engine: rich-text operational transformation, sans I/O.
//!
//! This crate holds everything about documents and their changes that can be decided without
//! a socket, a file, a thread or a clock: [`Delta`] (Quill-Delta semantics: compose,
//! transform, invert, transform_position, diff), [`Document`] (rich text that edits in
//! O(log n) at any position), [`DocState`] (the server's per-document sequencer, with
//! exactly-once resubmission and presence) and [`ClientDoc`] (the client's inflight + buffer
//! state machine). Callers pass inputs in and take outputs out; the engine never does I/O,
//! which is what lets it run in seeded simulations, fuzzers, the server, the client library
//! and the load generator alike.
//!
//! Lengths and positions count Unicode scalar values (an embed counts 1). Browsers count
//! UTF-16 code units; clients convert at the edge.

mod archive;
mod attributes;
mod client;
mod compose;
mod cursor;
mod delta;
mod diff;
mod document;
mod error;
mod invert;
mod limits;
pub mod notes;
mod op;
mod presence;
#[cfg(feature = "random")]
pub mod random;
pub mod redline;
mod runs;
mod sequencer;
mod transform;
pub mod undo;
mod value;

pub use archive::{AsU64, JsonBytes, JsonBytesResolver};
pub use attributes::Attributes;
pub use client::{ClientDoc, Outgoing, Remote};
pub use delta::{ArchivedDelta, DecodeLimits, Delta};
pub use document::{Document, EMBED_CHAR};
pub use error::Error;
pub use limits::Limits;
pub use notes::{Note, NoteChange, Notes};
pub use op::{ArchivedInsert, ArchivedOp, Embed, Insert, Op, OpKind, Text};
pub use presence::{Presence, SelectionRange};
pub use sequencer::{Commit, DocState, Submitted};
pub use undo::UndoStacks;
pub use value::{Object, Value};

/// A client's identity: chosen by the client and kept across reconnects, so that a
/// resubmitted op is recognized and applied once.
///
/// In JSON it is a string of up to 16 hex digits (a `u64` does not fit a JavaScript number);
/// in archives a little-endian `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug))]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 {
            return Err(format!("client id {s:?} must be 1 to 16 hex digits"));
        }
        u64::from_str_radix(s, 16).map(Self).map_err(|_| format!("client id {s:?} must be 1 to 16 hex digits"))
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&ArchivedClientId> for ClientId {
    fn from(a: &ArchivedClientId) -> Self {
        Self(a.0.to_native())
    }
}
