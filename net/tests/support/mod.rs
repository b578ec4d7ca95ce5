//! Shared helpers for the data-plane scenario tests: an in-process server on 127.0.0.1, the
//! blocking client, and a raw WebSocket connection for sending what a well-behaved client
//! never would.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tandem_engine::ClientId;
use tandem_net::client::{Client, ClientOptions};
use tandem_net::protocol::Encoding;
use tandem_net::{ServerConfig, ServerHandle};

/// A server for a test, with its data directory (removed after the server stops).
pub struct TestServer {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

/// Starts a server on an ephemeral port with `cores` cores, the op log in a fresh
/// directory, after `tweak`.
pub fn server(cores: usize, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::Builder::new().prefix("tandem-test-").tempdir().unwrap();
    let mut config = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), cores, ..ServerConfig::default() };
    config.storage.data_dir = dir.path().to_path_buf();
    tweak(&mut config);
    TestServer { handle: tandem_net::start(config).expect("server starts"), dir }
}

/// Connects a client.
pub fn client(addr: SocketAddr, id: u64, encoding: Encoding) -> Client {
    let options =
        ClientOptions { encoding, name: format!("user-{id}"), color: "#123456".into(), ..ClientOptions::default() };
    Client::connect(addr, ClientId(id), options).expect("client connects")
}

/// A WebSocket connection driven by hand.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame read from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Upgrades with `subprotocol`; panics unless the server switches protocols.
    pub fn connect(addr: SocketAddr, subprotocol: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        )
        .unwrap();
        let mut ws = Self { stream, buf: Vec::new() };
        let head = ws.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        ws
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed during the handshake");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Writes one frame, masked as a client must (or not, to test the server).
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        let mut out = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let mask = [0x37u8, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        self.send_bytes(&out);
    }

    /// Sends a JSON text message.
    pub fn send_json(&mut self, json: &str) {
        self.send_frame(1, json.as_bytes(), true);
    }

    /// Reads the next frame, or None on EOF or timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let len7 = (self.buf[1] & 0x7f) as usize;
                let (len, header) = match len7 {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some(RawFrame { opcode, payload });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (None: the connection ended or
    /// timed out without one). Text frames seen on the way are collected.
    pub fn read_until_close(&mut self, timeout: Duration) -> (Option<u16>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut texts = Vec::new();
        while let Some(f) = self.read_frame(deadline.saturating_duration_since(Instant::now())) {
            match f.opcode {
                8 => {
                    let code = (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return (code, texts);
                }
                1 => texts.push(String::from_utf8_lossy(&f.payload).into_owned()),
                _ => {}
            }
        }
        (None, texts)
    }

    /// Reads text frames until one contains `needle` (or times out).
    pub fn read_text_containing(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(f) = self.read_frame(deadline.saturating_duration_since(Instant::now())) {
            if f.opcode == 1 {
                let t = String::from_utf8_lossy(&f.payload).into_owned();
                if t.contains(needle) {
                    return Some(t);
                }
            }
        }
        None
    }
}

/// Says hello over a raw JSON connection and waits for the welcome.
pub fn raw_json_hello(addr: SocketAddr, client: u64) -> RawWs {
    let mut ws = RawWs::connect(addr, "tandem.v1.json");
    ws.send_json(&format!(r#"{{"type":"hello","protocol":1,"client":"{client:x}","token":"","name":"raw"}}"#));
    assert!(ws.read_text_containing("welcome", Duration::from_secs(5)).is_some(), "no welcome");
    ws
}

/// The payload of an unmasked server frame (as a shard queues it, header included).
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    match frame[1] & 0x7f {
        126 => &frame[4..],
        127 => &frame[10..],
        _ => &frame[2..],
    }
}

/// Waits until every client has `doc` synced at the same revision, checks they all have the
/// same text and notes, and returns the text.
pub fn synced(clients: &mut [&mut Client], doc: &str) -> String {
    for c in clients.iter_mut() {
        c.wait_until(Duration::from_secs(30), "synced", |s| s.is_synced()).unwrap();
    }
    let want = clients.iter().map(|c| c.session().doc_state(doc).unwrap().rev()).max().unwrap();
    for c in clients.iter_mut() {
        c.wait_until(Duration::from_secs(30), "caught up", |s| s.doc_state(doc).is_some_and(|d| d.rev() == want))
            .unwrap();
    }
    let text = |c: &Client| c.session().document(doc).unwrap().text();
    let first = text(clients[0]);
    for c in clients.iter() {
        assert_eq!(text(c), first, "clients diverged");
        assert_eq!(c.session().notes(doc), clients[0].session().notes(doc), "notes diverged");
    }
    first
}
