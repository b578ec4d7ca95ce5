//! A server-side WebSocket connection over in-memory buffers, sans I/O.
//!
//! tungstenite's protocol core ([`WebSocketContext`]) does the RFC 6455 work: unmasking,
//! fragmentation, control frames, UTF-8 checks, size limits, the close handshake. The I/O
//! shell hands it whatever the socket produced and collects what it wants written; this type
//! turns tungstenite's errors into the right close codes. Frames the server broadcasts do not
//! pass through here: they are built once by [`crate::codec`] and queued as they are.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::protocol::close;

/// What the client sent, once framing is dealt with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A complete text message (valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// The client started or answered the close handshake.
    Closed,
}

/// Why the connection must be closed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fatal {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

/// Bytes to parse and bytes to write, as tungstenite's stream.
struct Buffers<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Buffers<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Buffers<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One WebSocket connection's protocol state.
pub(crate) struct WsConn {
    ctx: WebSocketContext,
    /// Bytes for the socket (control frames tungstenite produced).
    output: Vec<u8>,
    closed: bool,
}

impl WsConn {
    /// A server-side connection; `max_frame` and `max_message` bound what the client sends.
    pub(crate) fn new(max_frame: usize, max_message: usize) -> Self {
        // A small initial input buffer (tungstenite grows it for larger frames): idle
        // connections must stay cheap.
        let config = WebSocketConfig::default()
            .read_buffer_size(64)
            .max_frame_size(Some(max_frame))
            .max_message_size(Some(max_message))
            .accept_unmasked_frames(false);
        Self { ctx: WebSocketContext::new(Role::Server, Some(config)), output: Vec::new(), closed: false }
    }

    /// Parses `input` (bytes just read from the socket), calling `on` for every complete
    /// message. Returns the fatal error that ends the connection, if any; after one, or after
    /// [`Incoming::Closed`], nothing more is read.
    pub(crate) fn receive(&mut self, input: &[u8], mut on: impl FnMut(Incoming)) -> Result<(), Fatal> {
        if self.closed {
            return Ok(());
        }
        let mut stream = Buffers { input, output: &mut self.output };
        loop {
            match self.ctx.read(&mut stream) {
                Ok(Message::Text(t)) => on(Incoming::Text(Bytes::from(t))),
                Ok(Message::Binary(b)) => on(Incoming::Binary(b)),
                // tungstenite answers pings itself; pongs only prove the client is alive.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {
                    // tungstenite queued the close reply.
                    let _ = self.ctx.flush(&mut stream);
                    self.closed = true;
                    on(Incoming::Closed);
                    return Ok(());
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Out of input: push out any pong or close reply.
                    let _ = self.ctx.flush(&mut stream);
                    return Ok(());
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.closed = true;
                    on(Incoming::Closed);
                    return Ok(());
                }
                Err(e) => {
                    self.closed = true;
                    return Err(fatal_for(&e));
                }
            }
        }
    }

    /// Bytes tungstenite wants written (pongs, close replies), in order.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        if self.output.is_empty() { None } else { Some(Bytes::from(std::mem::take(&mut self.output))) }
    }

    /// True once the close handshake started or the protocol failed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

/// A close frame with `code` and `reason` (cut to the 123 bytes a close frame holds).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = Frame::close(Some(CloseFrame { code: CloseCode::from(code), reason: reason[..end].to_owned().into() }));
    let mut out = Vec::with_capacity(2 + 2 + end);
    frame.format(&mut out).expect("formatting into memory cannot fail");
    Bytes::from(out)
}

/// The close code and reason for a tungstenite error.
fn fatal_for(e: &WsError) -> Fatal {
    let code = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => close::MESSAGE_TOO_BIG,
        WsError::Capacity(_) => close::MESSAGE_TOO_BIG,
        WsError::Utf8(_) => close::INVALID_PAYLOAD,
        WsError::Protocol(ProtocolError::InvalidCloseSequence) => close::PROTOCOL_ERROR,
        WsError::Protocol(_) => close::PROTOCOL_ERROR,
        _ => close::INTERNAL_ERROR,
    };
    Fatal { code, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (as browsers send).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn receive_all(ws: &mut WsConn, input: &[u8]) -> (Vec<Incoming>, Result<(), Fatal>) {
        let mut got = Vec::new();
        let r = ws.receive(input, |m| got.push(m));
        (got, r)
    }

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let mut bytes = client_frame(1, b"hello");
        bytes.extend(client_frame(2, &[1, 2, 3]));
        let (a, b) = bytes.split_at(4);
        assert_eq!(receive_all(&mut ws, a).0, vec![]);
        let (got, r) = receive_all(&mut ws, b);
        assert!(r.is_ok());
        assert_eq!(
            got,
            vec![Incoming::Text(Bytes::from_static(b"hello")), Incoming::Binary(Bytes::from_static(&[1, 2, 3]))]
        );
    }

    #[test]
    fn pings_are_answered() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let (got, r) = receive_all(&mut ws, &client_frame(9, b"p"));
        assert!(got.is_empty() && r.is_ok());
        let out = ws.take_output().unwrap();
        assert_eq!(&out[..], &[0x8a, 1, b'p']);
    }

    #[test]
    fn unmasked_frames_are_a_protocol_error() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let (_, r) = receive_all(&mut ws, &[0x81, 2, b'h', b'i']);
        assert_eq!(r.unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn bad_opcodes_are_a_protocol_error() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let (_, r) = receive_all(&mut ws, &client_frame(3, b"x"));
        assert_eq!(r.unwrap_err().code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn invalid_utf8_text_is_refused() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let (_, r) = receive_all(&mut ws, &client_frame(1, &[0xff, 0xfe]));
        assert_eq!(r.unwrap_err().code, close::INVALID_PAYLOAD);
    }

    #[test]
    fn oversized_messages_are_refused() {
        let mut ws = WsConn::new(100, 100);
        let (_, r) = receive_all(&mut ws, &client_frame(2, &[0; 200]));
        assert_eq!(r.unwrap_err().code, close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn a_client_close_is_answered() {
        let mut ws = WsConn::new(1 << 20, 1 << 20);
        let (got, r) = receive_all(&mut ws, &client_frame(8, &1000u16.to_be_bytes()));
        assert!(r.is_ok());
        assert_eq!(got, vec![Incoming::Closed]);
        assert!(ws.is_closed());
        let out = ws.take_output().unwrap();
        assert_eq!(out[0], 0x88);
    }

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        let f = close_frame(4000, &"é".repeat(100));
        assert!(f.len() <= 2 + 125);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 4000);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
