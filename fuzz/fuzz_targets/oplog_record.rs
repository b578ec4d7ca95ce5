//! Untrusted bytes → op-log record, segment header and snapshot decoders (what recovery reads
//! from a damaged disk): never a panic or an out-of-bounds read; whatever decodes re-encodes
//! to a record that decodes the same. The first byte chooses whether to fix up the record's
//! checksum, so the body parser is reached too and not only the checksum test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_storage::Snapshot;
use tandem_storage::format::{SegmentHeader, decode_header, decode_record};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 8 {
        // Make the length and checksum consistent with whatever body follows.
        let len = (bytes.len() - 8) as u32;
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(d) = decode_record(&bytes) {
        assert!(d.total % 8 == 0 && d.total >= 8);
        let mut again = Vec::new();
        d.record.encode_into(d.batch_start, &mut again).expect("a decoded record re-encodes");
        let back = decode_record(&again).expect("our own record decodes");
        assert_eq!(back.record, d.record);
        assert_eq!(back.batch_start, d.batch_start);
    }
    if let Ok(h) = decode_header(&bytes) {
        assert!(h.total % 8 == 0 && !h.doc.is_empty());
    }
    let _ = SegmentHeader::decode(&bytes);
    let _ = Snapshot::decode(&bytes, "doc", "fuzz");
});
