//! Tandem's cluster membership: which node serves which document.
//!
//! Documents hash onto a fixed number of virtual shards ([`shard_of`]); a node serves a shard
//! while it holds the shard's lease, a row in PostgreSQL ([`LeaseStore`]) with an owner, an
//! epoch and an expiry, renewed every poll. Nodes agree on who should hold what without
//! talking to each other ([`plan`]: rendezvous hashing over the live nodes, a node taking
//! free shards it is preferred for and handing back those another node is preferred for), and
//! the database's compare-and-set on the epoch settles any race. [`Membership`] runs that on
//! a Tokio runtime (in `tandem serve`, one of its own); [`Ownership`] is what the data
//! plane's cores read, lock free, before they commit: a node that cannot renew stops serving
//! before its leases can expire. No consensus of our own: PostgreSQL decides.

mod node;
mod plan;
mod shard;
mod store;

pub use node::{Membership, Ownership, Round, Settings};
pub use plan::{Lease, Member, Pace, Step, View, plan};
pub use shard::{DEFAULT_SHARDS, Shard, affinity, shard_of};
pub use store::{Announcement, CHANNEL, FeedCursors, LeaseError, LeaseStore};
