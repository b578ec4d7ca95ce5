//! The engine's one error type.

/// Everything the engine refuses, with the facts needed to act on it.
///
/// These are operating errors (bad input from a client, a document over its limit); broken
/// internal invariants are assertions instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The delta retains or deletes past the end of the document it is applied to.
    #[error("delta spans {base_len} chars but the document has {doc_len}")]
    DeltaTooLong {
        /// Chars the delta retains or deletes.
        base_len: usize,
        /// Chars in the document.
        doc_len: usize,
    },
    /// The delta is malformed (bad JSON shape, bad lengths, an op the engine does not know).
    #[error("invalid delta: {0}")]
    InvalidDelta(String),
    /// A document-only operation got a delta with retains or deletes.
    #[error("not a document: a document delta holds inserts only, found a {found}")]
    NotADocument {
        /// The kind of op found.
        found: &'static str,
    },
    /// The client's base revision is newer than the document.
    #[error("base revision {base} is newer than the document's revision {current}")]
    BaseRevisionInFuture {
        /// The revision the client claimed.
        base: u64,
        /// The document's revision.
        current: u64,
    },
    /// The client's base revision is older than the retained history; it must resync from a
    /// snapshot.
    #[error("base revision {base} is older than the oldest retained revision {oldest}; resync from a snapshot")]
    BaseRevisionTooOld {
        /// The revision the client claimed.
        base: u64,
        /// The oldest revision an op can still be based on.
        oldest: u64,
    },
    /// Applying the op would take the document over its size limit.
    #[error("document would grow to {len} chars; the limit is {max}")]
    DocumentTooLarge {
        /// The length the document would have.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The op itself is over a limit.
    #[error("op has {len} {what}; the limit is {max}")]
    OpTooLarge {
        /// What was counted ("inserted chars", "ops").
        what: &'static str,
        /// How many there were.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The document's attributes and embeds would grow past their byte limit.
    #[error("the document's formatting would grow to {bytes} bytes; the limit is {max}")]
    DocumentFormatTooLarge {
        /// The bytes the formatting could reach (counted conservatively before applying).
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Transforming the op over the revisions since its base would cost more than allowed;
    /// the client should catch up (re-open from its revision), rebase locally and resubmit.
    #[error(
        "transforming this op over the revisions since its base would take {steps} steps; at most {max} are allowed now: re-open the document, rebase the op and resubmit it"
    )]
    TransformTooCostly {
        /// The steps it would take (at least).
        steps: u64,
        /// The steps allowed.
        max: u64,
    },
    /// An op with this client sequence number was already applied, and this one is a
    /// different op (or, after a restart, cannot be shown to be the same): another session
    /// is using the client id, or the client reused a sequence number.
    #[error(
        "client_seq {client_seq} was already applied (revision {rev}) with a different op: is this client id in use by another session?"
    )]
    SeqConflict {
        /// The sequence number sent.
        client_seq: u64,
        /// The revision the earlier op with that number produced.
        rev: u64,
    },
    /// A client sequence number went backwards: an op older than one already applied.
    #[error("client_seq {client_seq} is older than the last applied client_seq {last}")]
    ClientSeqReused {
        /// The sequence number sent.
        client_seq: u64,
        /// The last one applied for this client.
        last: u64,
    },
    /// A selection points outside the document.
    #[error("selection position {pos} is past the document end {len}")]
    SelectionOutOfBounds {
        /// The offending position.
        pos: usize,
        /// The document length.
        len: usize,
    },
    /// A selection has too many ranges.
    #[error("selection has {count} ranges; the limit is {max}")]
    TooManyRanges {
        /// Ranges sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The server sent an op out of order (client side).
    #[error("expected revision {expected} from the server, got {got}")]
    RevisionGap {
        /// The revision the client expected next.
        expected: u64,
        /// The revision it got.
        got: u64,
    },
    /// `undo` or `redo` with nothing left to undo or redo (or only changes older than the
    /// history kept).
    #[error("nothing to {}", if *redo { "redo" } else { "undo" })]
    NothingToUndo {
        /// Whether it was a redo.
        redo: bool,
    },
    /// A change to the document's comments or named versions was refused.
    #[error("{0}")]
    Note(#[from] crate::notes::NoteError),
    /// The server acknowledged an op the client never sent (client side).
    #[error("ack for client_seq {client_seq}, which was never sent")]
    UnexpectedAck {
        /// The sequence number acknowledged.
        client_seq: u64,
    },
}
