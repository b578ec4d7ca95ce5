//! Untrusted bytes → an HTTP request head and its routing: never panics, and an upgrade is
//! only ever granted with a negotiated subprotocol.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_net::http::{Context, Route, parse, route};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, len))) = parse(data) {
        assert!(len <= data.len());
        let metrics = || String::from("m");
        for handoff in [false, true] {
            let ctx = Context { ready: true, allowed_origins: &[], metrics: &metrics, handoff };
            match route(&req, &ctx) {
                Route::Upgrade { response, cookie_token, .. } => {
                    assert!(response.contains("Sec-WebSocket-Protocol: tandem.v1."));
                    assert!(req.method == "GET" && req.path == "/ws");
                    if let Some(t) = cookie_token {
                        assert!(req.header("cookie").is_some_and(|c| c.contains(t.as_str())));
                    }
                }
                Route::Handoff => assert!(handoff, "a handoff without a control plane"),
                Route::Respond(_) => {}
            }
        }
    }
});
