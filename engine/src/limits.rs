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
    /// Most bytes of attributes and embeds in one delta (as [`crate::Delta::format_bytes`]
    /// counts them: each attribute key and value, plus 48 bytes per key).
    pub max_op_format_bytes: usize,
    /// Most bytes of attributes and embeds in a document, counted per formatting run as
    /// [`crate::Document::format_bytes`] does (a run's attributes are written out with every
    /// run, so this bounds what a snapshot of the document costs beyond its text).
    pub max_document_format_bytes: usize,
    /// Most transform steps one submission may cost: transforming an op of `d` ops over `k`
    /// later commits of `c_i` ops costs about `sum(d + c_i)` steps. A submission over the
    /// bound is refused before any work ([`crate::Error::TransformTooCostly`]); the client
    /// catches up and rebases locally instead. About 17 ns a step on this project's
    /// reference machine, so the default bounds one submission to ~17 ms of a core.
    pub max_transform_steps: u64,
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
            max_op_format_bytes: 1024 * 1024,
            max_document_format_bytes: 32 * 1024 * 1024,
            max_transform_steps: 1_000_000,
            history_ops: 10_000,
            history_bytes: 64 * 1024 * 1024,
            max_tracked_clients: 100_000,
            max_selection_ranges: 32,
        }
    }
}
