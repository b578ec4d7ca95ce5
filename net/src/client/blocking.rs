//! A blocking client: a [`ClientSession`] over a `std` TCP socket (with TLS when asked) and
//! tungstenite's client.
//!
//! Good for tests, tools and simple integrations; the load generator drives the same session
//! over its own async sockets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use tandem_engine::{ClientId, Delta, SelectionRange};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::session::{ClientSession, EditError, Event, SessionError};
use crate::codec::{DecodeError, decode_server, encode_client};
use crate::protocol::{Encoding, ErrorCode, RevisionRecord};

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The WebSocket failed (handshake refused, protocol error, closed).
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// The server sent a message that does not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The server broke the protocol.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A local edit was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The server closed the connection, with this code and reason.
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Not connected.
    #[error("not connected")]
    NotConnected,
    /// A wait ran out of time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server answered a request with an error.
    #[error("refused: {}: {message}", code.as_str())]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The subprotocol.
    pub encoding: Encoding,
    /// The token for `hello`.
    pub token: String,
    /// Display name.
    pub name: String,
    /// Display color.
    pub color: String,
    /// `Origin` header to send, if any.
    pub origin: Option<String>,
    /// Connect over TLS (`wss://`) with this configuration (which says whom to trust).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry [default: the host connected to].
    pub server_name: Option<String>,
}

/// The socket under the WebSocket: plain, or TLS over it.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            encoding: Encoding::Binary,
            token: String::new(),
            name: "tandem".into(),
            color: String::new(),
            origin: None,
            tls: None,
            server_name: None,
        }
    }
}

/// A connected (or reconnectable) client.
pub struct Client {
    addr: SocketAddr,
    options: ClientOptions,
    session: ClientSession,
    ws: Option<WebSocket<Stream>>,
    closed: Option<(u16, String)>,
    /// Events read while waiting for a particular answer, for [`Client::events`].
    stashed: Vec<Event>,
}

impl Client {
    /// Connects to `addr` (`/ws`) and says hello; returns once welcomed.
    pub fn connect(addr: SocketAddr, client: ClientId, options: ClientOptions) -> Result<Self, ClientError> {
        let session = ClientSession::new(client, &options.token, &options.name, &options.color);
        let mut c = Self { addr, options, session, ws: None, closed: None, stashed: Vec::new() };
        c.reconnect()?;
        Ok(c)
    }

    /// The session (documents, peers, selections).
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The close code and reason, once the server closed the connection.
    pub fn close_reason(&self) -> Option<&(u16, String)> {
        self.closed.as_ref()
    }

    /// Opens a fresh connection (after a drop) and resumes: hello, re-open, resend.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        self.ws = None;
        self.session.on_disconnect();
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        // A server that accepted but does not answer (paused, overloaded) must not hang the
        // handshake; reads set their own timeouts afterwards.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let (scheme, stream) = match &self.options.tls {
            None => ("ws", Stream::Plain(stream)),
            Some(config) => {
                let name = match &self.options.server_name {
                    Some(n) => ServerName::try_from(n.clone()).map_err(|e| io::Error::other(format!("{n:?}: {e}")))?,
                    None => ServerName::IpAddress(self.addr.ip().into()),
                };
                let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
                ("wss", Stream::Tls(Box::new(rustls::StreamOwned::new(conn, stream))))
            }
        };
        let mut request: Request = format!("{scheme}://{}/ws", self.addr).into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(self.options.encoding.subprotocol()));
        if let Some(origin) = &self.options.origin {
            headers.insert("Origin", HeaderValue::from_str(origin).map_err(|e| io::Error::other(e.to_string()))?);
        }
        let config = WebSocketConfig::default().max_message_size(Some(256 << 20)).max_frame_size(Some(256 << 20));
        let (ws, _response) =
            tungstenite::client::client_with_config(request, stream, Some(config)).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => ClientError::from(e),
                tungstenite::HandshakeError::Interrupted(_) => io::Error::other("handshake interrupted").into(),
            })?;
        self.ws = Some(ws);
        self.closed = None;
        self.session.on_connect();
        self.flush()?;
        self.wait_until(Duration::from_secs(10), "welcome", |s| s.is_welcomed())?;
        Ok(())
    }

    /// The server it connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reconnects to another server (a cluster's `moved` names it as a WebSocket URL,
    /// `ws://host:port/ws`, or `wss://` when this client has TLS): every open document is
    /// opened there, resuming.
    pub fn reconnect_to(&mut self, url: &str) -> Result<(), ClientError> {
        let scheme = if self.options.tls.is_some() { "wss://" } else { "ws://" };
        let host = url
            .strip_prefix(scheme)
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| io::Error::other(format!("{url:?}: expected {scheme}host:port/...")))?;
        self.addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
            .next()
            .ok_or_else(|| io::Error::other(format!("{host}: no address")))?;
        if self.options.tls.is_some() {
            // The certificate names the host, not its address.
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
            self.options.server_name = Some(name.to_owned());
        }
        self.reconnect()
    }

    /// Drops the TCP connection without a close handshake (to test resumption).
    pub fn drop_connection(&mut self) {
        if let Some(ws) = self.ws.take() {
            let _ = ws.get_ref().tcp().shutdown(std::net::Shutdown::Both);
        }
        self.session.on_disconnect();
    }

    /// Sends a close frame and waits for the server's.
    pub fn close(&mut self) -> Result<(), ClientError> {
        if let Some(ws) = &mut self.ws {
            ws.close(None)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match ws.read() {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.ws = None;
        self.session.on_disconnect();
        Ok(())
    }

    /// Opens a document and waits until its content is known. In a cluster it follows the
    /// document to the node that serves it (`moved`: the connection moves there, with any
    /// other document open on it), retrying through the first server while none does; at
    /// most 10 s in all.
    pub fn open(&mut self, doc: &str) -> Result<(), ClientError> {
        self.session.open(doc);
        self.flush()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = self.addr;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_until(left, &format!("open {doc}"), |s| s.is_open(doc) || s.moved_to(doc).is_some())?;
            match self.session.moved_to(doc).map(str::to_owned) {
                None => return Ok(()),
                Some(to) if !to.is_empty() => self.reconnect_to(&to)?,
                Some(_) => {
                    // Nobody serves it this instant (a failover): again shortly.
                    std::thread::sleep(Duration::from_millis(50));
                    self.addr = first;
                    self.reconnect()?;
                }
            }
        }
    }

    /// Closes a document.
    pub fn close_doc(&mut self, doc: &str) -> Result<(), ClientError> {
        self.session.close(doc);
        self.flush()
    }

    /// Applies a local edit and sends it (or queues it behind the op in flight).
    pub fn edit(&mut self, doc: &str, delta: Delta) -> Result<(), ClientError> {
        self.session.edit(doc, delta)?;
        self.flush()
    }

    /// Sends the local selection.
    pub fn set_selection(&mut self, doc: &str, ranges: &[SelectionRange]) -> Result<(), ClientError> {
        self.session.set_selection(doc, ranges)?;
        self.flush()
    }

    /// The document as it was at revision `rev` (it must be open).
    pub fn get_revision(&mut self, doc: &str, rev: u64) -> Result<Delta, ClientError> {
        self.session.get_revision(doc, rev)?;
        self.flush()?;
        match self.await_history(doc)? {
            Event::Revision { rev: r, content, .. } if r == rev => Ok(content),
            other => Err(ClientError::Timeout(format!("revision {rev} of {doc} (got {other:?})"))),
        }
    }

    /// Up to `limit` revisions of `doc` from `from_rev` on: (oldest readable, latest,
    /// revisions).
    pub fn list_revisions(
        &mut self,
        doc: &str,
        from_rev: u64,
        limit: u32,
    ) -> Result<(u64, u64, Vec<RevisionRecord>), ClientError> {
        self.session.list_revisions(doc, from_rev, limit)?;
        self.flush()?;
        match self.await_history(doc)? {
            Event::Revisions { oldest, latest, revisions, .. } => Ok((oldest, latest, revisions)),
            other => Err(ClientError::Timeout(format!("revisions of {doc} (got {other:?})"))),
        }
    }

    /// Sends an undo (or redo) without waiting for the answer: the request's `client_seq`,
    /// or `None` while an op or another request is in flight.
    pub fn send_undo(&mut self, doc: &str, redo: bool) -> Result<Option<u64>, ClientError> {
        let seq = self.session.undo(doc, redo)?;
        self.flush()?;
        Ok(seq)
    }

    /// Undoes (or redoes, `redo`) the user's most recent change to `doc` once the ops in
    /// flight are acknowledged; returns the revision the server's answer made. Nothing to
    /// undo is [`ClientError::Refused`] with `nothing_to_undo`.
    pub fn undo(&mut self, doc: &str, redo: bool) -> Result<u64, ClientError> {
        self.ask(doc, |s| s.undo(doc, redo))
    }

    /// Makes `doc` what it was at revision `rev` (a new op by this client, once the ops in
    /// flight are acknowledged); returns the revision the change made, or the current one
    /// when nothing changed.
    pub fn restore(&mut self, doc: &str, rev: u64) -> Result<u64, ClientError> {
        self.ask(doc, |s| s.restore(doc, rev))
    }

    /// Changes the comments or named versions of `doc` (once the ops in flight are
    /// acknowledged); returns the revision the note took. A refusal is
    /// [`ClientError::Refused`] (`not_found`, `forbidden`, `invalid_note`, `read_only`).
    pub fn note(&mut self, doc: &str, change: tandem_engine::NoteChange) -> Result<u64, ClientError> {
        self.ask(doc, |s| s.note(doc, change))
    }

    /// Makes a request of `doc` with `send` once the ops in flight are acknowledged, and
    /// waits for the server's answer: the revision it made.
    fn ask(
        &mut self,
        doc: &str,
        send: impl FnOnce(&mut ClientSession) -> Result<Option<u64>, EditError>,
    ) -> Result<u64, ClientError> {
        self.wait_until(Duration::from_secs(30), "ops in flight acknowledged", |s| {
            s.doc_state(doc).is_some_and(|d| !d.has_pending())
        })?;
        let seq = send(&mut self.session)?.ok_or_else(|| ClientError::Timeout(format!("a free slot in {doc}")))?;
        self.flush()?;
        self.await_change(doc, seq)
    }

    /// Reads until the server's answer to the request `seq`: its op, an ack, or a refusal.
    fn await_change(&mut self, doc: &str, seq: u64) -> Result<u64, ClientError> {
        let me = self.session.client();
        self.await_event(&format!("the answer to request {seq} in {doc}"), |e| match e {
            Event::Remote { doc: d, author, client_seq, rev, .. }
                if d == doc && *author == me && *client_seq == seq =>
            {
                Some((Ok(*rev), true))
            }
            Event::Acked { doc: d, client_seq, rev } if d == doc && *client_seq == seq => Some((Ok(*rev), true)),
            Event::Error { code, message, doc: Some(d), client_seq: Some(s) } if d == doc && *s == seq => {
                Some((Err(ClientError::Refused { code: *code, message: message.clone() }), false))
            }
            _ => None,
        })
    }

    /// The changes from `from_rev` to `to_rev` of `doc` (it must be open): the document at
    /// `from_rev` with every change since marked with its author.
    pub fn get_changes(&mut self, doc: &str, from_rev: u64, to_rev: u64) -> Result<Delta, ClientError> {
        self.session.get_changes(doc, from_rev, to_rev)?;
        self.flush()?;
        match self.await_history(doc)? {
            Event::Changes { content, .. } => Ok(content),
            other => Err(ClientError::Timeout(format!("changes of {doc} (got {other:?})"))),
        }
    }

    /// Reads until the answer to a history request for `doc` (or an error about `doc`)
    /// arrives; other events are kept for [`Client::events`].
    fn await_history(&mut self, doc: &str) -> Result<Event, ClientError> {
        self.await_event(&format!("a history answer for {doc}"), |e| match e {
            Event::Revision { doc: d, .. } | Event::Revisions { doc: d, .. } | Event::Changes { doc: d, .. }
                if d == doc =>
            {
                Some((Ok(e.clone()), false))
            }
            Event::Error { code, message, doc: Some(d), .. } if d == doc => {
                Some((Err(ClientError::Refused { code: *code, message: message.clone() }), false))
            }
            _ => None,
        })
    }

    /// Reads (for 30 s at most) until `pick` answers for an event: its result, and whether
    /// to keep the event for [`Client::events`]; the events it passes over are kept.
    fn await_event<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<(Result<T, ClientError>, bool)>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            while let Some(e) = self.session.poll_event() {
                let picked = pick(&e);
                if picked.as_ref().is_none_or(|(_, keep)| *keep) {
                    self.stashed.push(e);
                }
                if let Some((result, _)) = picked {
                    return result;
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(what.to_owned()));
            }
            self.read_one(deadline)?;
            self.flush()?;
        }
    }

    /// Sends a raw message (for tests of the server's checks).
    pub fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        let ws = self.ws.as_mut().ok_or(ClientError::NotConnected)?;
        ws.send(message)?;
        Ok(())
    }

    /// Writes everything the session wants sent.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let Some(ws) = self.ws.as_mut() else { return Ok(()) };
        let mut wrote = false;
        while let Some(msg) = self.session.poll_outgoing() {
            let payload = encode_client(&msg, self.options.encoding);
            let message = match self.options.encoding {
                Encoding::Json => Message::text(String::from_utf8(payload).expect("JSON is UTF-8")),
                Encoding::Binary => Message::binary(payload),
            };
            ws.write(message)?;
            wrote = true;
        }
        if wrote {
            ws.flush()?;
        }
        Ok(())
    }

    /// Reads and handles messages for up to `timeout`; returns the events that came out.
    pub fn pump(&mut self, timeout: Duration) -> Result<Vec<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut events = std::mem::take(&mut self.stashed);
        loop {
            self.read_one(deadline)?;
            while let Some(e) = self.session.poll_event() {
                events.push(e);
            }
            self.flush()?;
            if Instant::now() >= deadline {
                return Ok(events);
            }
        }
    }

    /// Handles messages until `done(session)` holds or `timeout` passes.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&ClientSession) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        while !done(&self.session) {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(what.to_owned()));
            }
            self.read_one(deadline)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Takes the events gathered so far.
    pub fn events(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.stashed);
        events.extend(std::iter::from_fn(|| self.session.poll_event()));
        events
    }

    /// Reads at most one message (waiting until `deadline`) and hands it to the session.
    fn read_one(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let ws = self.ws.as_mut().ok_or(ClientError::NotConnected)?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        ws.get_ref().tcp().set_read_timeout(Some(left))?;
        match ws.read() {
            Ok(Message::Binary(b)) if self.options.encoding == Encoding::Binary => {
                self.session.handle(decode_server(&b, Encoding::Binary)?)?;
            }
            Ok(Message::Text(t)) if self.options.encoding == Encoding::Json => {
                self.session.handle(decode_server(t.as_bytes(), Encoding::Json)?)?;
            }
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                self.closed = Some((code, reason.clone()));
                self.ws = None;
                self.session.on_disconnect();
                return Err(ClientError::Closed { code, reason });
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => {
                self.ws = None;
                self.session.on_disconnect();
                return Err(e.into());
            }
        }
        Ok(())
    }
}
