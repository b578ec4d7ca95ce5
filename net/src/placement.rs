//! Which documents this node serves, when it is one node of a cluster.
//!
//! The cores ask a [`Placement`] before every request for a document (an open, a submit:
//! every commit), and sweep their documents when its generation moves. `tandem-cluster`'s
//! `Ownership` is the real one (leases in PostgreSQL, deadlines on the monotonic clock);
//! without a cluster there is none and a node serves everything.

use std::sync::Arc;
use std::time::Instant;

/// What a core needs to know of the cluster's leases. Reads must be cheap and lock free:
/// they are on the commit path.
pub trait Placement: Send + Sync + std::fmt::Debug {
    /// Whether this node may serve (commit to) `doc` at `now`.
    fn serves(&self, doc: &str, now: Instant) -> bool;
    /// Where the node serving `doc` is reached (a WebSocket URL), if any serves it now.
    fn owner(&self, doc: &str) -> Option<Arc<str>>;
    /// Raised whenever documents stop being this node's: a core that sees it move drops
    /// them, then reports [`Placement::swept`] once its appends before the drop are durable.
    fn generation(&self) -> u64;
    /// Core `core` dropped every document this node stopped serving up to `generation`.
    fn swept(&self, core: u16, generation: u64);
}
