//! Untrusted JSON → Delta (the JSON subprotocol's decoder): never panics; whatever decodes
//! is canonical and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_engine::Delta;

fuzz_target!(|data: &[u8]| {
    if let Ok(delta) = serde_json::from_slice::<Delta>(data) {
        assert!(delta.is_canonical(), "decoded delta is not canonical: {delta:?}");
        let json = serde_json::to_vec(&delta).expect("encoding a delta cannot fail");
        let again: Delta = serde_json::from_slice(&json).expect("re-decoding our own JSON");
        assert_eq!(again, delta);
    }
});
