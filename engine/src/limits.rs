//! Every bound the engine enforces, in one place.

/// Per-document limits. Defaults are safe for a public server; each can be raised in config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most chars in a document (64 Mi: a 10 MB document fits with room to grow).
    pub max_document_chars: usize,
    /// Most chars one op may insert (1 Mi: a large paste).
    pub max_insert_chars: usize,
    /// Most ops in one delta.
    pub max_delta_ops: usize,
    /// Ops kept in memory for transforming late submissions; a base revision older than
    /// this window is refused with [`crate::Error::BaseRevisionTooOld`].
    pub history_ops: usize,
    /// Bytes of ops kept in that window, whichever bound is hit first.
    pub history_bytes: usize,
    /// Clients whose last `client_seq` is remembered for exactly-once resubmission; the
    /// least recently active is forgotten first.
    pub max_tracked_clients: usize,
    /// Most ranges in one selection.
    pub max_selection_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_chars: 64 * 1024 * 1024,
            max_insert_chars: 1024 * 1024,
            max_delta_ops: 10_000,
            history_ops: 10_000,
            history_bytes: 64 * 1024 * 1024,
            max_tracked_clients: 100_000,
            max_selection_ranges: 32,
        }
    }
}
