//! Helpers the sequencer's property tests share.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use tandem_engine::{Attributes, Commit, Delta, Error, Submitted};

/// No transform budget.
pub const MAX: u64 = u64::MAX;

/// The seeds to run: `TANDEM_SEED=n` replays one, `TANDEM_SEEDS=n` runs more than `default`.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("TANDEM_SEED") {
        return vec![s.parse().expect("TANDEM_SEED is a number")];
    }
    let n = std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    (0..n).collect()
}

/// Inserts `s` at `pos`.
pub fn ins(pos: usize, s: &str) -> Delta {
    Delta::new().retain(pos, Attributes::NONE).insert(s, Attributes::NONE)
}

/// Deletes `n` chars at `pos`.
pub fn del(pos: usize, n: usize) -> Delta {
    Delta::new().retain(pos, Attributes::NONE).delete(n)
}

/// The commit a submission made (it must have been applied).
pub fn applied(r: Result<(Submitted, u64), Error>) -> Arc<Commit> {
    match r.unwrap().0 {
        Submitted::Applied(c) => c,
        other => panic!("expected Applied, got {other:?}"),
    }
}
