//! Untrusted bytes → a client protocol message, in either subprotocol (the first byte picks
//! which): never panics; whatever decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_net::codec::{decode_client, encode_client};
use tandem_net::protocol::Encoding;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else { return };
    let encoding = if pick & 1 == 0 { Encoding::Binary } else { Encoding::Json };
    if let Ok(msg) = decode_client(bytes, encoding) {
        let again = decode_client(&encode_client(&msg, encoding), encoding).expect("our own encoding decodes");
        assert_eq!(again, msg);
    }
});
