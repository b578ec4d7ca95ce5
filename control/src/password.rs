//! Password hashing: Argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), on
//! blocking threads, a bounded number at once, with a bounded queue: a login flood gets
//! "busy" answers instead of starving the rest of the control plane (or the cores, which
//! never run it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Shortest password accepted, in chars.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest, in bytes (hashing cost does not grow much with length, but nobody needs more).
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: m=19456 (19 MiB), t=2, p=1.
    let params = Params::new(19_456, 2, 1, None).expect("valid parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs the calling thread under `SCHED_IDLE` (on) or back under the normal policy (off).
/// A hash then takes only CPU time nobody else wants: a core that wakes up preempts it at
/// once. Measured on a one-CPU server: a login flood raised the data plane's ack p99 by
/// ~29% without this (~25% with the control plane merely niced).
fn idle_priority(on: bool) {
    let policy = if on { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call; pid 0 is the calling
    // thread on Linux. A failure leaves the policy as it was, which is harmless.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::sched_setscheduler(0, policy, &raw const param) };
}

/// The hashing pool is full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Hashes and verifies passwords off the async threads.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// A hash of a random password: verifying an unknown email's login against it takes
    /// as long as a real one, so timing does not tell which emails have accounts.
    dummy: Arc<str>,
}

impl Passwords {
    /// At most `concurrency` hashes at once and `max_waiting` waiting.
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon2().hash_password(b"no account has this password", &salt).expect("hashes").to_string();
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            dummy: dummy.into(),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            idle_priority(true);
            let out = f();
            idle_priority(false);
            out
        })
        .await
        .map_err(|_| Busy)
    }

    /// The PHC string of a new hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2().hash_password(password.as_bytes(), &salt).expect("hashing cannot fail").to_string()
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown account), checks against a
    /// dummy so the answer takes as long, and is false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let ok = self
            .run(move || {
                PasswordHash::new(&hash)
                    .is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(ok && known)
    }
}
