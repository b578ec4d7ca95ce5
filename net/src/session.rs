//! The connection side of a session: who the client is, which documents it has open, and
//! how fast it may send. Lives on the core that accepted the connection.

use std::collections::HashSet;
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
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst), tokens: f64::from(burst), last: now }
    }

    /// Takes a token; false when none is left.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection's state on its own core.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) encoding: Encoding,
    /// Set by a successful `hello`.
    pub(crate) info: Option<Arc<SessionInfo>>,
    /// Documents this connection opened (and has not closed).
    pub(crate) open: HashSet<DocId>,
    pub(crate) rate: RateLimit,
    pub(crate) connected_at: Instant,
    /// The shard asked for the connection to be closed: further messages are ignored.
    pub(crate) closed: bool,
}

impl Session {
    pub(crate) fn new(encoding: Encoding, rate: u32, now: Instant) -> Self {
        Self {
            encoding,
            info: None,
            open: HashSet::new(),
            rate: RateLimit::new(rate, rate.saturating_mul(2), now),
            connected_at: now,
            closed: false,
        }
    }

    /// How long the connection has been up.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connected_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 20, t0);
        assert_eq!((0..25).filter(|_| r.take(t0)).count(), 20);
        assert!(!r.take(t0));
        // 0.5 s later, 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| r.take(t1)).count(), 5);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| r.take(t2)).count(), 20);
    }
}
