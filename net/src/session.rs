//! The connection side of a session: who the client is, which documents it has open, and
//! how fast it may send. Lives on the core that accepted the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_engine::ClientId;

use crate::protocol::{DocId, Encoding, Peer};

/// Identifies a connection: the core it lives on and its number there (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The core the connection lives on.
    pub core: u16,
    /// Its number on that core.
    pub seq: u64,
}

/// What other cores need to know about a connection that opened one of their documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection.
    pub conn: ConnId,
    /// The session id told to the client in `welcome`.
    pub session: u64,
    /// The client's id.
    pub client: ClientId,
    /// The connection's encoding.
    pub encoding: Encoding,
    /// How others see this user.
    pub peer: Peer,
    /// When the connection was accepted: of two sessions of one client id on a document, the
    /// newer one stays.
    pub connected_at: Instant,
}

impl SessionInfo {
    /// Whose undo stack the session's changes go on: the user's (shared by their tabs and
    /// devices, and kept across reloads): the signed-in account, or under `--auth dev` the
    /// name the client gave; the client id's if that is empty.
    pub fn undo_key(&self) -> std::borrow::Cow<'_, str> {
        if self.peer.user.is_empty() {
            std::borrow::Cow::Owned(self.client.to_string())
        } else {
            std::borrow::Cow::Borrowed(&self.peer.user)
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most twice that. The rate lives in
/// the shard's config, not here: every connection carries a bucket.
#[derive(Clone, Debug)]
pub(crate) struct RateLimit {
    tokens: f32,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        Self { tokens: Self::burst(rate), last: now }
    }

    fn burst(rate: u32) -> f32 {
        2.0 * rate as f32
    }

    /// Takes a token; false when none is left.
    pub(crate) fn take(&mut self, rate: u32, now: Instant) -> bool {
        if self.available(rate, now) >= 1 {
            self.spend(1);
            true
        } else {
            false
        }
    }

    /// Refills for the time since last asked and returns the whole tokens there are.
    pub(crate) fn available(&mut self, rate: u32, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f32() * rate as f32).min(Self::burst(rate));
        self.tokens as u64
    }

    /// Spends `n` tokens (going below zero is debt, paid back by the refill).
    pub(crate) fn spend(&mut self, n: u64) {
        self.tokens -= n as f32;
    }

    /// True when the bucket has refilled to its burst: it is then no different from a new one.
    pub(crate) fn is_full(&mut self, rate: u32, now: Instant) -> bool {
        self.available(rate, now) as f32 >= Self::burst(rate)
    }
}

/// A connection's state on its own core. Kept small: one per connection, stored inline in
/// the shard's table.
#[derive(Debug)]
pub(crate) struct Session {
    /// Set by a successful `hello`.
    pub(crate) info: Option<Arc<SessionInfo>>,
    /// Documents this connection opened (and has not closed); at most `max_open_docs`.
    pub(crate) open: Vec<DocId>,
    pub(crate) rate: RateLimit,
    pub(crate) connected_at: Instant,
    pub(crate) encoding: Encoding,
    /// The shard asked for the connection to be closed: further messages are ignored.
    pub(crate) closed: bool,
    /// The access token in the upgrade's cookie, used when `hello` carries none (kept
    /// only until `hello`).
    pub(crate) cookie_token: Option<Box<str>>,
    /// When the session's access token expires, and the same in ms since the Unix epoch
    /// (none: never).
    pub(crate) expires: Option<(Instant, u64)>,
    /// The session was told its token expires soon.
    pub(crate) warned: bool,
}

impl Session {
    pub(crate) fn new(encoding: Encoding, rate: u32, now: Instant, cookie_token: Option<Box<str>>) -> Self {
        Self {
            encoding,
            info: None,
            open: Vec::new(),
            rate: RateLimit::new(rate, now),
            connected_at: now,
            closed: false,
            cookie_token,
            expires: None,
            warned: false,
        }
    }

    /// How long the connection has been up.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connected_at)
    }

    /// True when `doc` is open on this connection.
    pub(crate) fn is_open(&self, doc: &DocId) -> bool {
        self.open.contains(doc)
    }

    /// Marks `doc` closed; false when it was not open.
    pub(crate) fn forget(&mut self, doc: &DocId) -> bool {
        let before = self.open.len();
        self.open.retain(|d| d != doc);
        self.open.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, t0);
        assert_eq!((0..25).filter(|_| r.take(10, t0)).count(), 20);
        assert!(!r.take(10, t0));
        // 0.5 s later, 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| r.take(10, t1)).count(), 5);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| r.take(10, t2)).count(), 20);
    }
}
