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
    /// Whether `doc` is on its way to this node at `now`: another node is handing it over,
    /// and sends its clients here before the hand-over completes. Their requests wait for
    /// [`Placement::serves`] instead of being sent back.
    fn coming(&self, _doc: &str, _now: Instant) -> bool {
        false
    }
    /// Raised whenever documents stop being this node's: a core that sees it move drops
    /// them, then reports [`Placement::swept`] once its appends before the drop are durable.
    fn generation(&self) -> u64;
    /// Core `core` dropped every document this node stopped serving up to `generation`.
    fn swept(&self, core: u16, generation: u64);
    /// Where the other nodes reach the node advertised at `owner` (an [`Placement::owner`]):
    /// its internal URL when it announced one (its advertised URL may be a `wss://` one that
    /// only clients use), else `owner`.
    fn internal(&self, owner: &str) -> Arc<str> {
        Arc::from(owner)
    }
}

/// The `host:port` of a node's URL the other nodes reach it at over plain HTTP: an
/// `http://host:port` internal URL or a `ws://host:port/...` advertised one; None for
/// anything else.
pub fn plain_authority(url: &str) -> Option<&str> {
    match node_authority(url)? {
        (false, authority) => Some(authority),
        (true, _) => None,
    }
}

/// Whether a node's URL speaks TLS, and its `host:port`: `http://` and `ws://` plain,
/// `https://` and `wss://` with TLS (a node terminating TLS itself); None for anything else
/// (no port, another scheme).
pub fn node_authority(url: &str) -> Option<(bool, &str)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://").or_else(|| url.strip_prefix("ws://")) {
        (false, r)
    } else {
        (true, url.strip_prefix("https://").or_else(|| url.strip_prefix("wss://"))?)
    };
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then_some((tls, authority))
}

#[cfg(test)]
mod tests {
    use super::{node_authority, plain_authority};

    #[test]
    fn plain_authorities() {
        assert_eq!(plain_authority("ws://10.0.0.1:8080/ws"), Some("10.0.0.1:8080"));
        assert_eq!(plain_authority("http://tandem-0.tandem-nodes:8080"), Some("tandem-0.tandem-nodes:8080"));
        assert_eq!(plain_authority("http://[::1]:8080/"), Some("[::1]:8080"));
        for bad in ["wss://a:1/ws", "https://a:1", "http://a", "http://:80", "http://a:0", "http://a:x", "a:1", ""] {
            assert_eq!(plain_authority(bad), None, "{bad}");
        }
        assert_eq!(node_authority("wss://a.example.com:443/ws"), Some((true, "a.example.com:443")));
        assert_eq!(node_authority("https://10.0.0.5:8443"), Some((true, "10.0.0.5:8443")));
        assert_eq!(node_authority("ws://10.0.0.5:8080/ws"), Some((false, "10.0.0.5:8080")));
        for bad in ["wss://a/ws", "ftp://a:1", "https://:1"] {
            assert_eq!(node_authority(bad), None, "{bad}");
        }
    }
}
