//! Rate limits (GCRA, `governor`): per client IP on every request, per user on writes, and
//! stricter ones on signing in and up (per IP, and per email address against guessing one
//! account's password from many addresses).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;

/// The limits, per minute (bursts of the same size).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per client IP.
    pub requests_per_ip: u32,
    /// Writes (POST, PATCH, PUT, DELETE) per signed-in user.
    pub writes_per_user: u32,
    /// Sign-ins, sign-ups and refreshes per client IP.
    pub auth_per_ip: u32,
    /// Sign-in attempts per email address.
    pub logins_per_email: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { requests_per_ip: 1000, writes_per_user: 100, auth_per_ip: 30, logins_per_email: 10 }
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"))
}

/// One keyed limiter.
struct Limiter<K: Hash + Eq + Clone>(DefaultKeyedRateLimiter<K>);

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(per_min: u32) -> Self {
        Self(governor::RateLimiter::keyed(per_minute(per_min)))
    }

    /// `Err(wait)` when over the limit.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.0.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn prune(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// All the control plane's limiters.
pub struct Limiters {
    requests: Limiter<IpAddr>,
    writes: Limiter<String>,
    auth: Limiter<IpAddr>,
    logins: Limiter<String>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiters")
    }
}

impl Limiters {
    /// Limiters for `limits`.
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            requests: Limiter::new(limits.requests_per_ip),
            writes: Limiter::new(limits.writes_per_user),
            auth: Limiter::new(limits.auth_per_ip),
            logins: Limiter::new(limits.logins_per_email),
        }
    }

    /// Any request from `ip`.
    pub fn request(&self, ip: IpAddr) -> Result<(), Duration> {
        self.requests.check(&ip)
    }

    /// A write by `user`.
    pub fn write(&self, user: &str) -> Result<(), Duration> {
        self.writes.check(&user.to_owned())
    }

    /// A sign-in, sign-up or refresh from `ip`.
    pub fn auth(&self, ip: IpAddr) -> Result<(), Duration> {
        self.auth.check(&ip)
    }

    /// A sign-in attempt for `email`.
    pub fn login(&self, email: &str) -> Result<(), Duration> {
        self.logins.check(&email.to_owned())
    }

    /// Forgets keys whose limits are full again (call every few seconds: memory stays
    /// proportional to recent clients).
    pub fn prune(&self) {
        self.requests.prune();
        self.writes.prune();
        self.auth.prune();
        self.logins.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_waits() {
        let l = Limiters::new(&RateLimits { logins_per_email: 3, ..RateLimits::default() });
        for _ in 0..3 {
            l.login("a@x").unwrap();
        }
        let wait = l.login("a@x").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
        l.login("b@x").unwrap();
    }
}
