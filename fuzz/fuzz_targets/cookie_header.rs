//! Untrusted `Cookie` and `Origin` headers: never panic, and a cookie's value is always a
//! piece of the header it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_net::http::{ACCESS_COOKIE, cookie, same_origin};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for name in [ACCESS_COOKIE, "tandem_refresh", ""] {
        if let Some(v) = cookie(s, name) {
            assert!(s.contains(v));
            assert!(!v.contains(';'));
        }
    }
    let mid = (0..=s.len() / 2).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    let (origin, host) = s.split_at(mid);
    if same_origin(origin, host) {
        assert!(origin.starts_with("http://") || origin.starts_with("https://"));
        assert!(!host.is_empty());
    }
});
