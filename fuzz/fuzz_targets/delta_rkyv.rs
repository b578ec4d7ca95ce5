//! Untrusted bytes → rkyv archive of a Delta (the binary subprotocol's and op log's decoder):
//! validation never panics or reads out of bounds; whatever passes is canonical and survives
//! a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use tandem_engine::Delta;

fuzz_target!(|data: &[u8]| {
    // Frames are read into aligned buffers, as the server does.
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    if let Ok(delta) = Delta::from_archive(&aligned) {
        assert!(delta.is_canonical(), "decoded delta is not canonical: {delta:?}");
        let again = Delta::from_archive(&delta.to_archive()).expect("re-decoding our own archive");
        assert_eq!(again, delta);
    }
});
