//! A WebSocket client connection on monoio, for the generator.
//!
//! The upgrade request is written and its response checked here; framing (masking, control
//! frames, fragmentation) is tungstenite's protocol core over in-memory buffers, as on the
//! server. A connection is split into a reader (which hands each message to a callback) and a
//! writer task (which drains a queue in one socket write per wake-up).
//!
//! For a `wss://` target ([`crate::tls`]) the connection shakes hands first; then the reader
//! decrypts what it reads and the writer encrypts what it drains, through one rustls session
//! they share (never borrowed across an await).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use tandem_net::server::Notify;

use crate::tls::{self, Session};

/// The TLS session of a `wss://` connection, shared by its reader and writer.
type Tls = Option<Rc<RefCell<Session>>>;

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

/// The sending side of a connection, shared by every task of one user.
pub(crate) struct Sender {
    ctx: Rc<RefCell<WebSocketContext>>,
    out: RefCell<Vec<u8>>,
    wake: Notify,
    closed: Cell<bool>,
    tls: Tls,
}

impl Sender {
    /// Queues a message (framed and masked now).
    pub(crate) fn send(&self, msg: Message) {
        if self.closed.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let mut stream = Buffers { input: &[], output: &mut out };
        let mut ctx = self.ctx.borrow_mut();
        if ctx.write(&mut stream, msg).is_err() || ctx.flush(&mut stream).is_err() {
            self.closed.set(true);
        }
        drop(out);
        self.wake.notify();
    }

    /// True once the connection failed or closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Stops the writer.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }
}

/// A connected WebSocket.
pub(crate) struct WsClient {
    rd: OwnedReadHalf<TcpStream>,
    ctx: Rc<RefCell<WebSocketContext>>,
    /// Plaintext read past the upgrade response.
    leftover: Vec<u8>,
    pub(crate) sender: Rc<Sender>,
}

/// Opens a TCP connection, from `source` when given (to spread connections over
/// 127.x.y.z: loopback connect rates collapse past ~10K connections per address pair).
///
/// The connect never blocks the generator thread (a dropped SYN would stall every user on it
/// for a second), and the source port is picked at connect time for the whole 4-tuple
/// (`IP_BIND_ADDRESS_NO_PORT`), so sockets of earlier runs in TIME_WAIT on the same source
/// address do not use up its ports.
async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect_addr(addr).await };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if source.is_ipv4() {
        bind_address_no_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    monoio::time::timeout(Duration::from_secs(10), stream.writable(false))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out after 10 s"))??;
    let fd = {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the fd belongs to `stream`, which outlives this borrow.
        #[allow(unsafe_code)]
        unsafe {
            BorrowedFd::borrow_raw(stream.as_raw_fd())
        }
    };
    if let Some(e) = socket2::SockRef::from(&fd).take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2): `bind` takes the address and leaves the port
/// to `connect`.
fn bind_address_no_port(socket: &socket2::Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own, with a pointer to a live c_int and its size.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl WsClient {
    /// Connects and upgrades to `path` with `subprotocol`. The process's first failure is
    /// printed (why users count errors: a refused certificate, a full backlog); the others
    /// are counted by the callers.
    pub(crate) async fn connect(
        addr: SocketAddr,
        path: &str,
        subprotocol: &str,
        source: Option<IpAddr>,
    ) -> io::Result<Self> {
        static SAID: std::sync::Once = std::sync::Once::new();
        let result = Self::connect_once(addr, path, subprotocol, source).await;
        if let Err(e) = &result {
            SAID.call_once(|| {
                let hint = if e.to_string().contains("CaUsedAsEndEntity") {
                    " (the server presents a CA certificate as its own: give it one made with basicConstraints=CA:FALSE, or one a CA signed)"
                } else {
                    ""
                };
                eprintln!("connecting to {addr}{path} failed: {e}{hint}; further failures are counted, not printed");
            });
        }
        result
    }

    async fn connect_once(addr: SocketAddr, path: &str, subprotocol: &str, source: Option<IpAddr>) -> io::Result<Self> {
        let mut stream = tcp(addr, source).await?;
        stream.set_nodelay(true)?;
        let mut session = match tls::client() {
            Some(c) => Some(handshake(&mut stream, Session::new(c)?).await?),
            None => None,
        };
        let key_bytes: [u8; 16] = rand::random();
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key_bytes);
        // Peers (ShareDB, y-websocket) take no subprotocol: "" leaves the header out.
        let protocol =
            if subprotocol.is_empty() { String::new() } else { format!("Sec-WebSocket-Protocol: {subprotocol}\r\n") };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        let request = match &mut session {
            None => request.into_bytes(),
            Some(tls) => {
                let mut out = Vec::new();
                tls.encrypt(request.as_bytes(), &mut out)?;
                out
            }
        };
        let (res, _) = stream.write_all(request).await;
        res?;
        let mut head = Vec::new();
        let mut chunk = Vec::with_capacity(4096);
        let end = loop {
            let (res, buf) = stream.read(chunk).await;
            chunk = buf;
            let n = res?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the upgrade"));
            }
            match &mut session {
                None => head.extend_from_slice(&chunk[..n]),
                Some(tls) => {
                    tls.receive(&chunk[..n], &mut head)?;
                }
            }
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if head.len() > 16 * 1024 {
                return Err(io::Error::other("upgrade response too long"));
            }
        };
        let text = String::from_utf8_lossy(&head[..end]).to_string();
        if !text.starts_with("HTTP/1.1 101") {
            let status = text.lines().next().unwrap_or("").to_owned();
            return Err(io::Error::other(format!("upgrade refused: {status}")));
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        if !text.to_ascii_lowercase().contains(&format!("sec-websocket-accept: {}", accept.to_ascii_lowercase())) {
            return Err(io::Error::other("bad Sec-WebSocket-Accept"));
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .max_message_size(Some(512 << 20))
            .max_frame_size(Some(512 << 20));
        let ctx = Rc::new(RefCell::new(WebSocketContext::new(Role::Client, Some(config))));
        let (rd, wr) = stream.into_split();
        let sender = Rc::new(Sender {
            ctx: Rc::clone(&ctx),
            out: RefCell::new(Vec::new()),
            wake: Notify::default(),
            closed: Cell::new(false),
            tls: session.map(|s| Rc::new(RefCell::new(s))),
        });
        monoio::spawn(writer(Rc::clone(&sender), wr));
        Ok(Self { rd, ctx, leftover: head.split_off(end), sender })
    }

    /// Reads until the connection ends, calling `on` for every data message. Returns the
    /// close code, if the server sent one.
    pub(crate) async fn run(mut self, mut on: impl FnMut(Bytes)) -> Option<u16> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut input = std::mem::take(&mut self.leftover);
        // A TLS error or close ends the connection once what decrypted before it is handled.
        let mut ended = false;
        loop {
            if !input.is_empty() {
                let mut out = Vec::new();
                let mut closed = None;
                // Messages are handed out after the context is released: handling one may send.
                let mut messages = Vec::new();
                {
                    let mut ctx = self.ctx.borrow_mut();
                    let mut stream = Buffers { input: &input, output: &mut out };
                    loop {
                        match ctx.read(&mut stream) {
                            Ok(Message::Binary(b)) => messages.push(b),
                            Ok(Message::Text(t)) => messages.push(Bytes::from(t)),
                            Ok(Message::Close(frame)) => {
                                closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                                let _ = ctx.flush(&mut stream);
                                break;
                            }
                            Ok(_) => {}
                            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                                let _ = ctx.flush(&mut stream);
                                break;
                            }
                            Err(_) => {
                                closed = Some(1002);
                                break;
                            }
                        }
                    }
                }
                if !out.is_empty() {
                    self.sender.out.borrow_mut().extend_from_slice(&out);
                    self.sender.wake.notify();
                }
                for m in messages {
                    on(m);
                }
                if let Some(code) = closed {
                    self.sender.close();
                    return Some(code);
                }
            }
            if ended {
                self.sender.close();
                return None;
            }
            buf.clear();
            let (res, b) = self.rd.read(buf).await;
            buf = b;
            match res {
                Ok(n) if n > 0 => match &self.sender.tls {
                    None => input = buf[..n].to_vec(),
                    Some(tls) => {
                        input.clear();
                        let mut tls = tls.borrow_mut();
                        // Closed by the server, or a bad record: what came before still counts.
                        ended = !matches!(tls.receive(&buf[..n], &mut input), Ok(false));
                        if tls.wants_write() {
                            self.sender.wake.notify();
                        }
                    }
                },
                _ => {
                    self.sender.close();
                    return None;
                }
            }
        }
    }
}

/// Shakes hands over `stream`, before it is split.
async fn handshake(stream: &mut TcpStream, mut tls: Session) -> io::Result<Session> {
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(16 * 1024);
    let mut plain = Vec::new();
    let deadline = monoio::time::Instant::now() + Duration::from_secs(10);
    while tls.is_handshaking() {
        out.clear();
        tls.pending(&mut out)?;
        if !out.is_empty() {
            let (res, b) = stream.write_all(std::mem::take(&mut out)).await;
            out = b;
            res?;
        }
        if !tls.is_handshaking() {
            break;
        }
        chunk.clear();
        let (res, b) = monoio::time::timeout_at(deadline, stream.read(chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out after 10 s"))?;
        chunk = b;
        match res? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake")),
            n => {
                if let Err(e) = tls.receive(&chunk[..n], &mut plain) {
                    // Tell the server why (a certificate refused), then give up.
                    out.clear();
                    if tls.pending(&mut out).is_ok() && !out.is_empty() {
                        let _ = stream.write_all(out).await;
                    }
                    return Err(e);
                }
            }
        }
    }
    // The client's Finished (TLS 1.3) goes with the upgrade request.
    Ok(tls)
}

async fn writer(sender: Rc<Sender>, mut wr: OwnedWriteHalf<TcpStream>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut records: Vec<u8> = Vec::new();
    let mut close_sent = false;
    loop {
        std::mem::swap(&mut buf, &mut *sender.out.borrow_mut());
        if let Some(tls) = &sender.tls {
            // Encrypted here, a batch at a time; the session may also have records of its own.
            records.clear();
            let mut tls = tls.borrow_mut();
            if sender.closed.get() && buf.is_empty() && !close_sent {
                tls.close();
                close_sent = true;
            }
            if tls.encrypt(&buf, &mut records).is_err() {
                sender.closed.set(true);
                return;
            }
            std::mem::swap(&mut buf, &mut records);
        }
        if !buf.is_empty() {
            let (res, b) = wr.write_all(std::mem::take(&mut buf)).await;
            buf = b;
            buf.clear();
            if res.is_err() {
                sender.closed.set(true);
                return;
            }
            continue;
        }
        if sender.closed.get() {
            let _ = wr.shutdown().await;
            return;
        }
        sender.wake.wait().await;
    }
}
