//! Benchmarks of Tandem's engine against peers, over real editing traces.
//!
//! [`trace`] loads the public editing traces in `traces/`; [`replay`] replays one through
//! Tandem's engine or a peer (diamond-types, yrs, operational-transform, quill-delta-rs), the
//! same way for all, so the `trace-replay` binary and the criterion benches measure like with
//! like. This crate never ships in the server.

pub mod replay;
/// The trace loader (the `tandem-traces` crate, shared with the load generator).
pub mod trace {
    pub use tandem_traces::*;
}
