//! Untrusted bytes → an access token's verification: never panics, and a genuine token with
//! any bytes changed never verifies as anything but what it said (no forgery by mutation).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tandem_control::tokens::Keys;

fn keys() -> &'static (Keys, String) {
    static KEYS: OnceLock<(Keys, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = Keys::from_secrets(
            "k1",
            vec![("k1".into(), vec![7; 32]), ("k0".into(), vec![9; 40])],
            Duration::from_secs(3600),
        )
        .expect("valid keys");
        let (token, _) = keys.sign("ada", "Ada");
        (keys, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, genuine) = keys();
    // Arbitrary text as a token.
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(claims) = keys.verify_claims(s) {
            // Only a token we signed verifies; nothing else was signed here.
            assert_eq!(claims.sub, "ada", "a token we never signed verified: {s:?}");
        }
    }
    // The genuine token with bytes overwritten at chosen places.
    let mut bytes = genuine.clone().into_bytes();
    for pair in data.chunks_exact(2) {
        let i = usize::from(pair[0]) * bytes.len() / 256;
        bytes[i] = pair[1];
    }
    if let Ok(s) = std::str::from_utf8(&bytes)
        && let Ok(claims) = keys.verify_claims(s)
    {
        let original = keys.verify_claims(genuine).expect("genuine");
        assert_eq!(claims, original, "a mutated token verified with other claims");
    }
});
