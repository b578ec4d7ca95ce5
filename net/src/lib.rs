//! Tandem's data plane: protocol v1, the thread-per-core WebSocket server, and the client
//! library.
//!
//! The sans-IO parts decide: [`protocol`] (messages, error and close codes), [`codec`]
//! (both subprotocols; frames encoded once and shared), [`http`] (the handshake and the
//! plain endpoints), [`shard`] (one core's documents and sessions: routing, fan-out,
//! presence batching) and [`client`] (a client session over the engine's OT state machine).
//! [`server`] is the thin I/O shell (monoio, one runtime per core) and the blocking client in
//! [`client`] another; neither holds protocol logic. Only this crate knows the wire format.

pub mod access;
pub mod client;
pub mod codec;
pub mod feed;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod placement;
pub mod protocol;
mod room;
pub mod server;
pub mod session;
pub mod shard;
pub mod tls;
mod wsconn;

pub use server::{
    BlobsKind, DataPlane, FsyncMode, HandedConn, Hooks, HttpHandoff, LimitsConfig, OplogKind, S3Config, ScyllaConfig,
    ServerConfig, ServerHandle, StorageConfig, open_blobs, open_core_log, start, start_with,
};
