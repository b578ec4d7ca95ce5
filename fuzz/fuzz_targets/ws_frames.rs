//! Untrusted bytes → the server's WebSocket framing, split into arbitrary socket reads:
//! never panics, never lets a message over the limit through.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let cut = if bytes.is_empty() { 0 } else { usize::from(split) % bytes.len() };
    let (a, b) = bytes.split_at(cut);
    tandem_net::fuzzing::ws_receive(&[a, b], 4096);
});
