//! Every example in `docs/protocol.md` is exact: each JSON message decodes and encodes back
//! to the same bytes, and each binary (hex) example decodes to its JSON twin and encodes back
//! to the same bytes.

use tandem_net::codec::{decode_client, decode_server, encode_client, encode_server};
use tandem_net::protocol::{ClientMsg, Encoding, ServerMsg};

fn blocks<'a>(doc: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    doc.split(&fence).skip(1).map(|rest| rest.split("```").next().unwrap()).collect()
}

#[test]
fn protocol_doc_examples_are_byte_exact() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let mut json_examples = 0;
    for block in blocks(&doc, "json") {
        for line in block.lines().filter(|l| l.starts_with("{\"type\"")) {
            let again = if let Ok(m) = serde_json::from_str::<ClientMsg>(line) {
                serde_json::to_string(&m).unwrap()
            } else {
                let m: ServerMsg =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}\n  does not decode: {e}"));
                serde_json::to_string(&m).unwrap()
            };
            assert_eq!(again, line, "re-encoding changed the example");
            json_examples += 1;
        }
    }
    assert!(json_examples >= 22, "only {json_examples} JSON examples found");

    let mut hex_examples = 0;
    for block in blocks(&doc, "hex") {
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (hex, json) = line.split_once("  = ").expect("hex example is `bytes  = json`");
            let bytes: Vec<u8> = hex.split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
            if let Ok(expected) = serde_json::from_str::<ClientMsg>(json) {
                assert_eq!(decode_client(&bytes, Encoding::Binary).unwrap(), expected);
                assert_eq!(encode_client(&expected, Encoding::Binary), bytes);
            } else {
                let expected: ServerMsg = serde_json::from_str(json).unwrap();
                assert_eq!(decode_server(&bytes, Encoding::Binary).unwrap(), expected);
                let frame = encode_server(&expected, Encoding::Binary);
                assert_eq!(&frame[2..], &bytes[..]);
            }
            hex_examples += 1;
        }
    }
    assert_eq!(hex_examples, 3);
}
