//! Tandem's load generator: scenarios of simulated users against a real server, measured as
//! clients see it (open model, coordinated omission corrected, HDR histograms), checked for
//! convergence, and reported in `results/`.
//!
//! It is thread-per-core like the server (one monoio runtime per thread) so that it is not the
//! bottleneck it measures, and it reports its own CPU use to show when it is. It never
//! embeds the server: it talks to one over sockets, as any client would.

pub mod accounts;
pub mod peers;
pub mod plan;
pub mod plots;
pub mod procstat;
mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod search;
pub mod stats;
pub mod system;
pub mod tls;
mod user;
pub mod worker;
mod wsclient;
