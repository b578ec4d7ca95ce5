//! The Rust client library.
//!
//! [`ClientSession`] is the protocol, sans I/O, over the engine's client-side OT state
//! machine: open documents, edit, receive remote ops and presence, reconnect and resume with
//! exactly-once resubmission. [`Client`] drives it over a blocking socket.

mod blocking;
mod session;

pub use blocking::{Client, ClientError, ClientOptions, Stream};
pub use session::{ClientSession, EditError, Event, SessionError};
