//! Untrusted REST request bodies, for every route's request type (the first byte picks the
//! route), and email addresses: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    tandem_control::fuzzing::rest_body(kind, body);
    if let Ok(s) = std::str::from_utf8(body) {
        tandem_control::fuzzing::email(s);
    }
});
