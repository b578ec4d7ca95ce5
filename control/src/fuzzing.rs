//! Entry points for the fuzz targets in `fuzz/` (compiled only with `--cfg fuzzing`).

use crate::api;

/// Parses `bytes` as the body of route `kind` (every request type the API has), and checks
/// the free-text fields the way the handlers do. Never panics; returns whether it parsed.
pub fn rest_body(kind: u8, bytes: &[u8]) -> bool {
    api::fuzz_body(kind, bytes)
}

/// Normalizes an email address the way sign-up and sharing do: never panics, and what it
/// accepts is lowercase, trimmed, with one `@` between non-empty parts.
pub fn email(s: &str) -> Option<String> {
    let e = api::normalize_email(s).ok()?;
    assert_eq!(e, e.trim().to_lowercase());
    let (local, domain) = e.split_once('@').expect("accepted addresses have an @");
    assert!(!local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    Some(e)
}
