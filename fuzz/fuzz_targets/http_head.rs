//! Untrusted bytes → an HTTP request head and its routing: never panics, and an upgrade is
//! only ever granted with a negotiated subprotocol.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_net::http::{Context, Route, parse, route};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, len))) = parse(data) {
        assert!(len <= data.len());
        let metrics = || String::from("m");
        let ctx = Context { ready: true, allowed_origins: &[], metrics: &metrics };
        if let Route::Upgrade { response, .. } = route(&req, &ctx) {
            assert!(response.contains("Sec-WebSocket-Protocol: tandem.v1."));
        }
    }
});
