//! Who may do what, as the data plane sees it: verified identities, each document's access
//! list, and the seams to the control plane that signs tokens and keeps the lists.
//!
//! The control plane (another runtime, maybe another machine) owns accounts and permissions.
//! The data plane only verifies tokens (no database round trip) and checks every message
//! against the access list its owner core holds for each open document. Lists arrive through
//! [`ControlLink::load_access`] when a document is opened, and as [`AccessUpdate::Changed`]
//! whenever the control plane commits a change; a version number orders the two.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tandem_engine::ClientId;

use crate::protocol::{DocId, Role};

/// A user, as a verified token names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id.
    pub user: String,
    /// Their display name.
    pub name: String,
    /// How long the token is still valid.
    pub valid_for: Duration,
    /// When it expires, ms since the Unix epoch (told to the client).
    pub expires_at_ms: u64,
}

/// Verifies access tokens. Called on a core for every `hello` and `refresh`: it must be
/// quick, and must not block or touch a database.
pub trait Verifier: Send + Sync {
    /// The identity a token proves, or why it proves none (for the client; never the token).
    fn verify(&self, token: &str) -> Result<Identity, String>;
}

/// How `hello` tokens are checked.
#[derive(Clone, Default)]
pub enum Auth {
    /// Any token is accepted and the user is whoever the client says (tests only).
    #[default]
    Open,
    /// Tokens must equal a shared secret, and the user is whoever the client says; nothing
    /// is checked per document (`--auth dev`, for benchmarks).
    Dev(String),
    /// Tokens are verified access tokens, and every message is checked against the
    /// document's access list.
    Accounts(Arc<dyn Verifier>),
}

impl Auth {
    /// True when documents have access lists to check.
    pub fn checks_access(&self) -> bool {
        matches!(self, Self::Accounts(_))
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(match self {
            Self::Open => "Open",
            Self::Dev(_) => "Dev",
            Self::Accounts(_) => "Accounts",
        })
    }
}

/// One document's access list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Increases with every change committed: an older list never replaces a newer one.
    pub version: u64,
    /// Each user's role.
    pub roles: HashMap<Arc<str>, Role>,
    /// The role of anyone signed in who has the link, when link sharing is on.
    pub link: Option<Role>,
}

impl AccessList {
    /// What `user` may do: their own role or the link's, whichever is more.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.roles.get(user).copied().max(self.link)
    }
}

/// Why a document's access list could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// No such document (or it was deleted).
    NotFound,
    /// The control plane could not answer (its database is down, say).
    Unavailable(String),
}

/// Called once an update has taken effect on the owner core (the control plane waits for
/// it before answering the change's request, so the change holds from the next message).
#[derive(Clone)]
pub struct Done(Arc<dyn Fn() + Send + Sync>);

impl Done {
    /// Wraps a callback.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Runs it.
    pub fn call(&self) {
        (self.0)();
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Done")
    }
}

/// What the control plane tells a document's owner core.
#[derive(Clone, Debug)]
pub enum AccessUpdate {
    /// The answer to [`ControlLink::load_access`], with the number the request carried (an
    /// answer to an earlier, abandoned load is ignored: it may predate a change).
    Loaded(u64, Result<Arc<AccessList>, AccessError>),
    /// A change was committed: this is the whole new list.
    Changed(Arc<AccessList>, Option<Done>),
    /// The document was deleted: everyone's session on it ends.
    Deleted(Option<Done>),
}

/// The data plane's requests to the control plane. Implementations queue them (bounded)
/// and return at once: they run on a core.
pub trait ControlLink: Send + Sync {
    /// Asks for `doc`'s access list, to be delivered to its owner core as
    /// [`AccessUpdate::Loaded`] with `load`. False when the queue is full (the open is refused as
    /// overloaded).
    fn load_access(&self, doc: &DocId, load: u64) -> bool;
    /// `doc` was edited (at most every few seconds per document; a hint for "recently
    /// edited" lists, dropped when the queue is full).
    fn edited(&self, doc: &DocId);
    /// A session of `user` with client id `client` opened `doc` (analytics; dropped when the
    /// queue is full).
    fn opened(&self, doc: &DocId, client: ClientId, user: &str);
    /// A comment mentions users: notify those with access (dropped when the queue is full).
    fn mentioned(&self, mention: crate::shard::Mention) {
        let _ = mention;
    }
}
