//! Every class of bad input gets its documented error or close code, and the server keeps
//! serving everyone else.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{RawWs, raw_json_hello};
use tandem_engine::{Attributes, Delta};
use tandem_net::client::Client;
use tandem_net::protocol::{ClientMsg, Encoding, close};
use tandem_net::{ServerConfig, ServerHandle};

const SECOND: Duration = Duration::from_secs(1);

fn strict(c: &mut ServerConfig) {
    c.max_message_bytes = 64 * 1024;
    c.max_frame_bytes = 64 * 1024;
    c.send_queue_bytes = 64 * 1024;
    c.max_messages_per_s = 50;
    c.handshake_timeout_ms = 300;
    c.idle_timeout_ms = 300;
    c.limits.history_ops = 5;
}

/// A client that edits and gets its ack: proof the server still serves others.
fn healthy(addr: SocketAddr, id: u64) -> Client {
    let mut c = support::client(addr, id, Encoding::Binary);
    c.open("healthy").unwrap();
    c.edit("healthy", Delta::new().insert("ok", Attributes::NONE)).unwrap();
    c.wait_until(Duration::from_secs(5), "ack", |s| s.is_synced()).unwrap();
    c
}

fn still_serving(server: &ServerHandle, healthy: &mut Client) {
    healthy.edit("healthy", Delta::new().insert("!", Attributes::NONE)).unwrap();
    healthy.wait_until(Duration::from_secs(5), "ack after bad input", |s| s.is_synced()).unwrap();
    let _ = server;
}

fn close_code(ws: &mut RawWs) -> Option<u16> {
    ws.read_until_close(Duration::from_secs(5)).0
}

#[test]
fn websocket_protocol_violations_get_rfc_close_codes() {
    let server = support::server(2, strict);
    let addr = server.local_addr();
    let mut ok = healthy(addr, 1);

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_frame(1, br#"{"type":"open","doc":"x"}"#, false);
    assert_eq!(close_code(&mut ws), Some(close::PROTOCOL_ERROR), "unmasked frame");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_frame(0x3, b"x", true);
    assert_eq!(close_code(&mut ws), Some(close::PROTOCOL_ERROR), "reserved opcode");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_bytes(&[0xf1, 0x80, 0, 0, 0, 0]);
    assert_eq!(close_code(&mut ws), Some(close::PROTOCOL_ERROR), "reserved bits set");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_frame(1, &[0xc3, 0x28], true);
    assert_eq!(close_code(&mut ws), Some(close::INVALID_PAYLOAD), "invalid UTF-8");

    let mut ws = RawWs::connect(addr, "tandem.v1.bin");
    ws.send_frame(2, &vec![0u8; 100 * 1024], true);
    assert_eq!(close_code(&mut ws), Some(close::MESSAGE_TOO_BIG), "oversized message");

    let mut ws = RawWs::connect(addr, "tandem.v1.bin");
    ws.send_frame(1, br#"{"type":"hello"}"#, true);
    assert_eq!(close_code(&mut ws), Some(close::UNSUPPORTED_DATA), "text on the binary subprotocol");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_frame(2, b"\x01\x02", true);
    assert_eq!(close_code(&mut ws), Some(close::UNSUPPORTED_DATA), "binary on the JSON subprotocol");

    still_serving(&server, &mut ok);
}

#[test]
fn undecodable_messages_get_bad_message() {
    let server = support::server(2, strict);
    let addr = server.local_addr();
    let mut ok = healthy(addr, 1);

    let mut ws = raw_json_hello(addr, 10);
    ws.send_json("{not json");
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::BAD_MESSAGE));
    assert!(texts.iter().any(|t| t.contains(r#""code":"bad_message""#)), "{texts:?}");

    let mut ws = raw_json_hello(addr, 11);
    ws.send_json(r#"{"type":"explode"}"#);
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::BAD_MESSAGE));
    assert!(texts.iter().any(|t| t.contains("unknown variant")), "{texts:?}");

    // Garbage bytes on the binary subprotocol (after a valid binary hello).
    let mut ws = RawWs::connect(addr, "tandem.v1.bin");
    let hello = ClientMsg::Hello {
        protocol: 1,
        client: tandem_engine::ClientId(12),
        token: String::new(),
        name: "raw".into(),
        color: String::new(),
    };
    ws.send_frame(2, &tandem_net::codec::encode_client(&hello, Encoding::Binary), true);
    assert_eq!(ws.read_frame(SECOND).map(|f| f.opcode), Some(2), "binary welcome");
    ws.send_frame(2, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], true);
    assert_eq!(close_code(&mut ws), Some(close::BAD_MESSAGE), "garbage archive");

    still_serving(&server, &mut ok);
}

#[test]
fn hello_is_required_and_checked() {
    let server = support::server(1, |c| {
        strict(c);
        c.dev_secret = Some("s3cret".into());
    });
    let addr = server.local_addr();

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_json(r#"{"type":"open","doc":"x"}"#);
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::BAD_HELLO));
    assert!(texts.iter().any(|t| t.contains("bad_hello")), "{texts:?}");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_json(r#"{"type":"hello","protocol":9,"client":"1","token":"s3cret","name":"n"}"#);
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::BAD_HELLO));
    assert!(texts.iter().any(|t| t.contains("unsupported_protocol")), "{texts:?}");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_json(r#"{"type":"hello","protocol":1,"client":"1","token":"wrong","name":"n"}"#);
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::UNAUTHORIZED));
    assert!(texts.iter().any(|t| t.contains("unauthorized")), "{texts:?}");

    // No hello at all: closed once the handshake timeout passes.
    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    assert_eq!(close_code(&mut ws), Some(close::BAD_HELLO), "hello timeout");

    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_json(r#"{"type":"hello","protocol":1,"client":"1","token":"s3cret","name":"n"}"#);
    assert!(ws.read_text_containing("welcome", SECOND).is_some());
}

#[test]
fn document_errors_close_only_that_document() {
    let server = support::server(2, strict);
    let addr = server.local_addr();
    let mut ok = healthy(addr, 1);
    let mut ws = raw_json_hello(addr, 20);

    ws.send_json(
        r#"{"type":"submit","doc":"never-opened","base_rev":0,"client_seq":1,"delta":{"ops":[{"insert":"x"}]}}"#,
    );
    let t = ws.read_text_containing("error", SECOND).unwrap();
    assert!(t.contains(r#""code":"not_open""#) && t.contains(r#""doc":"never-opened""#), "{t}");

    ws.send_json(r#"{"type":"open","doc":""}"#);
    assert!(ws.read_text_containing("error", SECOND).unwrap().contains("invalid_doc_id"));

    ws.send_json(r#"{"type":"open","doc":"d"}"#);
    assert!(ws.read_text_containing("opened", SECOND).is_some());
    ws.send_json(
        r#"{"type":"submit","doc":"d","base_rev":0,"client_seq":1,"delta":{"ops":[{"retain":5},{"insert":"x"}]}}"#,
    );
    let t = ws.read_text_containing("error", SECOND).unwrap();
    assert!(t.contains("invalid_delta") && t.contains("spans 5 chars"), "{t}");

    // The document was closed for us; re-open it and continue.
    ws.send_json(r#"{"type":"open","doc":"d"}"#);
    assert!(ws.read_text_containing("opened", SECOND).is_some());
    ws.send_json(r#"{"type":"submit","doc":"d","base_rev":7,"client_seq":1,"delta":{"ops":[{"insert":"x"}]}}"#);
    assert!(ws.read_text_containing("error", SECOND).unwrap().contains("base_in_future"));

    ws.send_json(r#"{"type":"open","doc":"d"}"#);
    assert!(ws.read_text_containing("opened", SECOND).is_some());
    for seq in 1..=8 {
        ws.send_json(&format!(
            r#"{{"type":"submit","doc":"d","base_rev":{},"client_seq":{seq},"delta":{{"ops":[{{"insert":"y"}}]}}}}"#,
            seq - 1
        ));
        assert!(ws.read_text_containing("ack", SECOND).is_some());
    }
    // History keeps 5 ops: base revision 1 is too old now.
    ws.send_json(r#"{"type":"submit","doc":"d","base_rev":1,"client_seq":9,"delta":{"ops":[{"insert":"z"}]}}"#);
    assert!(ws.read_text_containing("error", SECOND).unwrap().contains("base_too_old"));
    // A selection past the end.
    ws.send_json(r#"{"type":"open","doc":"d"}"#);
    assert!(ws.read_text_containing("opened", SECOND).is_some());
    ws.send_json(r#"{"type":"presence","doc":"d","rev":8,"ranges":[{"anchor":0,"head":99}]}"#);
    assert!(ws.read_text_containing("error", SECOND).unwrap().contains("bad_selection"));

    still_serving(&server, &mut ok);
}

#[test]
fn a_flood_over_the_rate_limit_is_closed() {
    let server = support::server(2, strict);
    let addr = server.local_addr();
    let mut ok = healthy(addr, 1);
    let mut ws = raw_json_hello(addr, 30);
    ws.send_json(r#"{"type":"open","doc":"flood"}"#);
    for _ in 0..500 {
        ws.send_json(r#"{"type":"presence","doc":"flood","rev":0,"ranges":[]}"#);
    }
    let (code, texts) = ws.read_until_close(Duration::from_secs(5));
    assert_eq!(code, Some(close::RATE_LIMITED));
    assert!(texts.iter().any(|t| t.contains("rate_limited")), "{texts:?}");
    let closes: u64 = server.stats().iter().map(|s| s.rate_limited_closes.load(Ordering::Relaxed)).sum();
    assert_eq!(closes, 1);
    still_serving(&server, &mut ok);
}

#[test]
fn a_slow_reader_is_closed_and_nobody_else_slows_down() {
    let server = support::server(2, |c| {
        strict(c);
        c.max_messages_per_s = 100_000;
        // Kernel buffers take megabytes before the send queue fills: not an idle close first.
        c.idle_timeout_ms = 60_000;
    });
    let addr = server.local_addr();
    // The slow reader opens the document, then never reads again.
    let mut slow = RawWs::connect(addr, "tandem.v1.json");
    slow.stream.set_nonblocking(false).unwrap();
    slow.send_json(r#"{"type":"hello","protocol":1,"client":"99","token":"","name":"slow"}"#);
    slow.send_json(r#"{"type":"open","doc":"busy"}"#);
    std::thread::sleep(Duration::from_millis(100));
    let mut writer = support::client(addr, 2, Encoding::Binary);
    writer.open("busy").unwrap();
    let chunk = "x".repeat(16 * 1024);
    let mut closed = false;
    for i in 0..2000 {
        let len = writer.session().document("busy").unwrap().len();
        writer.edit("busy", Delta::new().retain(len, Attributes::NONE).insert(&chunk, Attributes::NONE)).unwrap();
        writer.wait_until(Duration::from_secs(5), "ack while a reader is stuck", |s| s.is_synced()).unwrap();
        if server.stats().iter().map(|s| s.slow_reader_closes.load(Ordering::Relaxed)).sum::<u64>() == 1 {
            closed = true;
            assert!(i > 3, "closed too early, after {i} ops");
            break;
        }
    }
    assert!(closed, "the slow reader was never closed");
    // Its connection really ends: drain what it was sent until the close frame or EOF.
    // What it was sent is whole frames, then the close frame: a frame cut short by the close
    // would make the rest of the stream garbage.
    let (mut frames, mut code) = (0, None);
    while let Some(f) = slow.read_frame(Duration::from_secs(5)) {
        match f.opcode {
            1 => {
                let text = String::from_utf8(f.payload).expect("text frames are UTF-8");
                assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "a cut frame: {:.80}", text);
                frames += 1;
            }
            8 => {
                code = Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
                break;
            }
            9 => {}
            op => panic!("unexpected opcode {op} after {frames} frames"),
        }
    }
    assert!(frames > 0);
    assert_eq!(code, Some(close::SLOW_READER));
}

#[test]
fn slowloris_idle_and_connection_limits() {
    let server = support::server(1, |c| {
        strict(c);
        c.max_connections = 3;
    });
    let addr = server.local_addr();
    // A request head that never finishes: hung up on after the handshake timeout.
    let mut slowloris = TcpStream::connect(addr).unwrap();
    slowloris.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    slowloris.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(slowloris.read(&mut buf), Ok(0)), "slowloris connection still open");

    // A silent client is pinged, and closed when it does not answer.
    let mut idle = raw_json_hello(addr, 40);
    let mut saw_ping = false;
    let code = loop {
        match idle.read_frame(Duration::from_secs(3)) {
            Some(f) if f.opcode == 9 => saw_ping = true,
            Some(f) if f.opcode == 8 => break Some(u16::from_be_bytes([f.payload[0], f.payload[1]])),
            Some(_) => {}
            None => break None,
        }
    };
    assert!(saw_ping, "no ping before the idle close");
    assert_eq!(code, Some(close::IDLE_TIMEOUT));

    // At the connection limit, the next one gets 503 (once the earlier ones are gone).
    drop(idle);
    drop(slowloris);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().iter().map(|s| s.connections.load(Ordering::Relaxed)).sum::<u64>() > 0 {
        assert!(std::time::Instant::now() < deadline, "earlier connections never went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _a = raw_json_hello(addr, 41);
    let _b = raw_json_hello(addr, 42);
    let _c = raw_json_hello(addr, 43);
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut response = String::new();
    let _ = extra.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
}

#[test]
fn origins_outside_the_allowlist_are_refused() {
    let server = support::server(1, |c| c.allowed_origins = vec!["https://app.example".into()]);
    let addr = server.local_addr();
    // Refused: another site's page, even one whose origin matches the Host it sent (a
    // DNS-rebound page). Let through: a listed origin, and a client that sends no Origin
    // (not a browser page: a native app, a server).
    for (origin, expect) in [
        (Some("https://evil.example"), "HTTP/1.1 403"),
        (Some("http://h"), "HTTP/1.1 403"),
        (Some("null"), "HTTP/1.1 403"),
        (Some("https://app.example"), "HTTP/1.1 101"),
        (None, "HTTP/1.1 101"),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        let header = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        write!(s, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tandem.v1.bin\r\n{header}\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with(expect), "{origin:?}");
    }
}
