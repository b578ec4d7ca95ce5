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
mod op;
mod presence;
#[cfg(feature = "random")]
pub mod random;
mod runs;
mod sequencer;
mod transform;
mod value;

pub use archive::{AsU64, JsonBytes, JsonBytesResolver};
pub use attributes::Attributes;
pub use client::{ClientDoc, Outgoing, Remote};
pub use delta::{ArchivedDelta, Delta};
pub use document::{Document, EMBED_CHAR};
pub use error::Error;
pub use limits::Limits;
pub use op::{ArchivedInsert, ArchivedOp, Embed, Insert, Op, OpKind, Text};
pub use presence::{Presence, SelectionRange};
pub use sequencer::{Commit, DocState, Submitted};
pub use value::{Object, Value};

/// A client's identity: chosen by the client and kept across reconnects, so that a
/// resubmitted op is recognized and applied once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
