//! One connection: the HTTP handshake, then one task that reads, writes and waits.
//!
//! An idle connection holds no buffer and no read in flight: the task waits for the socket to
//! become readable (a poll, not a read), then reads everything available into the core's one
//! read buffer, decodes every frame and hands each message to the shard before the effects
//! go out, so replies to a burst leave together. Writes go straight from the queued frames
//! (the shared broadcast bytes, no copy) in one vectored, non-blocking send per wake-up
//! (write coalescing); only a full socket buffer makes the task wait for writability. A
//! queue over its byte limit closes the connection as a slow reader without slowing anyone
//! else. This keeps an idle connection under 2 KiB; on this VM it measured no slower than
//! io_uring reads and writes (`results/2026-11-25-data-plane/`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use smallvec::SmallVec;
use socket2::{SockRef, Socket};

use super::core::Core;
use super::notify::Notify;
use crate::codec::{DecodeError, decode_client_within};
use crate::http::{self, Context, Route};
use crate::metrics::CoreStats;
use crate::protocol::{Encoding, close};
use crate::session::ConnId;
use crate::tls::{ENCRYPT_BATCH, Received, SendTo, TlsSession, looks_like_tls};
use crate::wsconn::{Incoming, WsConn, close_frame};

/// The core's read buffer: every connection of the core reads into it in turn.
const READ_BUFFER: usize = 64 * 1024;
/// Most bytes read from one connection per wake-up, so one busy client cannot starve others.
const READ_PER_WAKEUP: usize = 4 * READ_BUFFER;
/// Most frames in one vectored send.
const IOV_MAX: usize = 128;
/// How long a closing connection may take to finish the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// Runs `f` on the socket behind a monoio stream, for plain non-blocking syscalls.
fn with_socket<R>(stream: &TcpStream, f: impl FnOnce(&Socket) -> R) -> R {
    // SAFETY: the fd belongs to `stream`, which is borrowed for the whole call, so it stays
    // open while `fd` (and the `SockRef` made from it) exist.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    f(&SockRef::from(&fd))
}

/// A connection's state shared by its task and the core.
pub(crate) struct ConnState {
    pub(crate) id: ConnId,
    out: RefCell<VecDeque<Bytes>>,
    queued: Cell<usize>,
    /// The front frame is partly written: it must be finished before anything else, or the
    /// client would read the rest of the stream as the middle of that frame.
    front_partial: Cell<bool>,
    /// Set once the connection is closing (its close frame is the last one queued), in
    /// milliseconds since the core started (4-byte times: a connection's state is kept small).
    closing_since: Cell<Option<u32>>,
    killed: Cell<bool>,
    /// Wakes the connection's task: output queued, closing, or killed.
    wake: Notify,
    last_rx: Cell<u32>,
    pinged: Cell<bool>,
    connected: u32,
}

impl ConnState {
    fn new(id: ConnId, now: u32) -> Self {
        Self {
            id,
            out: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            front_partial: Cell::new(false),
            closing_since: Cell::new(None),
            killed: Cell::new(false),
            wake: Notify::default(),
            last_rx: Cell::new(now),
            pinged: Cell::new(false),
            connected: now,
        }
    }

    /// Queues a frame. Over `limit` bytes, the queue is dropped and the connection closed
    /// as a slow reader; returns false then.
    pub(crate) fn queue(&self, frame: Bytes, limit: usize) -> bool {
        if self.closing_since.get().is_some() {
            return true;
        }
        let queued = self.queued.get() + frame.len();
        if queued > limit {
            // Drop what is queued, but finish a frame already partly written: the close
            // frame must follow whole frames only.
            let mut out = self.out.borrow_mut();
            let partial = if self.front_partial.get() { out.pop_front() } else { None };
            out.clear();
            self.queued.set(partial.as_ref().map_or(0, Bytes::len));
            out.extend(partial);
            drop(out);
            self.close(close::SLOW_READER, "send queue overflow: reading too slowly");
            return false;
        }
        self.push(frame);
        true
    }

    fn push(&self, bytes: Bytes) {
        self.queued.set(self.queued.get() + bytes.len());
        self.out.borrow_mut().push_back(bytes);
        self.wake.notify();
    }

    /// Closes after what is queued, with a close frame.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        if self.closing_since.get().is_some() {
            return;
        }
        self.push(close_frame(code, reason));
        self.closing_since.set(Some(self.last_rx.get().max(self.connected)));
    }

    /// Ends the connection now, without a close handshake.
    pub(crate) fn kill(&self) {
        self.killed.set(true);
        self.wake.notify();
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// Pings an idle connection, closes a dead one, and enforces the `hello` deadline. `now`
    /// is in milliseconds since the core started.
    pub(crate) fn check_timeouts(&self, now: u32, idle: Duration, handshake: Duration, has_hello: bool) {
        let since = |t: u32| Duration::from_millis(u64::from(now.saturating_sub(t)));
        if let Some(t) = self.closing_since.get() {
            if since(t) > CLOSE_LINGER {
                self.kill();
            }
            return;
        }
        if !has_hello && since(self.connected) > handshake {
            self.close(close::BAD_HELLO, "no hello in time");
            // Linger from now, not from the last frame.
            self.closing_since.set(Some(now));
            return;
        }
        let quiet = since(self.last_rx.get());
        if quiet > idle * 2 {
            self.close(close::IDLE_TIMEOUT, "idle timeout");
            self.closing_since.set(Some(now));
        } else if quiet > idle && !self.pinged.get() {
            self.pinged.set(true);
            // An empty ping: FIN + opcode 9, length 0.
            self.push(Bytes::from_static(&[0x89, 0x00]));
        }
    }

    /// Sends as much of the queue as the socket takes now. `Ok(true)` when it is all sent.
    fn flush(&self, socket: &Socket, stats: &CoreStats) -> std::io::Result<bool> {
        let mut out = self.out.borrow_mut();
        while !out.is_empty() {
            // One frame (the common case under fan-out): send(2), cheaper than sendmsg(2).
            let result = if out.len() == 1 {
                socket.send_with_flags(&out[0], libc::MSG_NOSIGNAL)
            } else {
                let slices: SmallVec<[IoSlice<'_>; 16]> = out.iter().take(IOV_MAX).map(|b| IoSlice::new(b)).collect();
                socket.send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL)
            };
            let mut sent = match result {
                Ok(n) => {
                    CoreStats::bump(&stats.socket_writes);
                    n
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.queued.set(self.queued.get() - sent);
            while sent > 0 {
                let front = out.front_mut().expect("sent bytes come from queued frames");
                if sent >= front.len() {
                    sent -= front.len();
                    out.pop_front();
                    self.front_partial.set(false);
                } else {
                    *front = front.slice(sent..);
                    self.front_partial.set(true);
                    sent = 0;
                }
            }
        }
        // A drained queue gives its memory back: most connections are idle most of the time.
        *out = VecDeque::new();
        Ok(true)
    }

    /// [`ConnState::flush`] through TLS: frames are encrypted a batch at a time, each batch
    /// once the previous one's records are all written, so the session holds at most one.
    /// Closing, the `close_notify` follows the last frame.
    fn flush_tls(&self, tls: &mut TlsSession, socket: &Socket, stats: &CoreStats) -> std::io::Result<bool> {
        loop {
            if !tls.write_to(&mut SendTo(socket), || CoreStats::bump(&stats.socket_writes))? {
                return Ok(false);
            }
            let mut out = self.out.borrow_mut();
            if out.is_empty() {
                *out = VecDeque::new();
                if self.closing_since.get().is_some() {
                    // Sent once (rustls ignores a second call).
                    tls.close();
                    if tls.wants_write() {
                        continue;
                    }
                }
                return Ok(true);
            }
            let mut moved = 0;
            while moved < ENCRYPT_BATCH {
                let Some(frame) = out.pop_front() else { break };
                moved += frame.len();
                tls.send(&frame);
            }
            self.queued.set(self.queued.get() - moved);
        }
    }
}

/// Decrements the server's connection count when a connection ends.
struct Counted(Rc<Core>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers an HTTP error and closes (used before any handshake).
pub(crate) async fn refuse(stream: TcpStream, status: &str, body: &str) {
    let response = http::response(status, "text/plain; charset=utf-8", &format!("{body}\n"), "");
    answer(stream, None, response.into_bytes()).await;
}

/// Sends a whole HTTP answer (through TLS when the connection has it) and closes.
async fn answer(mut stream: TcpStream, tls: Option<&mut TlsSession>, response: Vec<u8>) {
    match tls {
        None => {
            let _ = stream.write_all(response).await;
        }
        Some(tls) => {
            tls.send(&response);
            tls.close();
            let _ = write_tls(&stream, tls).await;
        }
    }
    let _ = stream.shutdown().await;
}

/// Writes a session's pending records, waiting for the socket when it is full. False when
/// the socket failed.
async fn write_tls(stream: &TcpStream, tls: &mut TlsSession) -> bool {
    loop {
        match with_socket(stream, |s| tls.write_to(&mut SendTo(s), || {})) {
            Ok(true) => return true,
            Ok(false) => {
                if stream.writable(false).await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Reads until the session yields plaintext (appended to `plain`), doing the handshake on
/// the way. False when the connection ended or failed (a client that speaks plain HTTP to
/// the TLS port is told so first).
async fn read_tls(stream: &TcpStream, tls: &mut TlsSession, plain: &mut Vec<u8>, seen: &mut bool) -> bool {
    let mut raw = [0u8; 4096];
    loop {
        if !write_tls(stream, tls).await || stream.readable(false).await.is_err() {
            return false;
        }
        let n = match with_socket(stream, |s| (&*s).read(&mut raw)) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => continue,
            Err(_) => return false,
        };
        if !std::mem::replace(seen, true) && !looks_like_tls(&raw[..n]) {
            let response = http::response(
                "400 Bad Request",
                "text/plain; charset=utf-8",
                "this port speaks TLS: use https:// and wss://\n",
                "Connection: close\r\n",
            );
            let _ = with_socket(stream, |s| s.send_with_flags(response.as_bytes(), libc::MSG_NOSIGNAL));
            return false;
        }
        let before = plain.len();
        match tls.receive(&raw[..n], &mut |p| plain.extend_from_slice(p)) {
            Ok(Received::Open) if plain.len() > before => return true,
            Ok(Received::Open) => {}
            Ok(Received::Closed) => return false,
            Err(_) => {
                // The alert tells the client why.
                let _ = write_tls(stream, tls).await;
                return false;
            }
        }
    }
}

/// Serves one accepted connection: the handshake here, then (for WebSocket) its own task.
///
/// Two tasks rather than one: a future keeps its arguments for its whole life, and the
/// connection task, which lives as long as the connection, should hold only what it needs.
pub(crate) async fn serve(core: Rc<Core>, stream: TcpStream) {
    let counted = Counted(Rc::clone(&core));
    let _ = stream.set_nodelay(true);
    let timeout = Duration::from_millis(core.shared.config.handshake_timeout_ms);
    // Boxed: the handshake's state (and its timer, 128-byte aligned) lives only while it runs.
    let (stream, encoding, leftover, cookie, tls) =
        match Box::pin(monoio::time::timeout(timeout, handshake(&core, stream))).await {
            Ok(Some(upgraded)) => upgraded,
            Ok(None) => return,
            Err(_) => {
                // Slowloris: the request head did not arrive in time; just hang up.
                CoreStats::bump(&core.stats.refused);
                return;
            }
        };
    monoio::spawn(connection(counted, stream, encoding, leftover, cookie, tls));
}

/// A WebSocket connection, from the upgrade to the end.
async fn connection(
    counted: Counted,
    stream: TcpStream,
    encoding: Encoding,
    leftover: Vec<u8>,
    cookie: Option<String>,
    tls: Option<TlsSession>,
) {
    let core = &counted.0;
    let conn = core.shard.borrow_mut().connect(encoding, Instant::now(), cookie.as_deref());
    drop(cookie);
    let state = Rc::new(ConnState::new(conn, core.millis()));
    core.conns.borrow_mut().insert(conn, Rc::clone(&state));
    if core.stopping.get() {
        state.close(close::GOING_AWAY, "server shutting down");
    }
    run(core, &state, stream, encoding, leftover, tls).await;
    core.conns.borrow_mut().remove(&conn);
    core.shard.borrow_mut().disconnect(conn);
    core.apply_effects();
}

/// An upgraded connection: the stream, its subprotocol, bytes read past the request head,
/// the session cookie's token, and the TLS session when the port has TLS.
type Upgraded = (TcpStream, Encoding, Vec<u8>, Option<String>, Option<TlsSession>);

/// Reads the request head (after the TLS handshake, with TLS), answers plain HTTP requests,
/// and upgrades `/ws`.
async fn handshake(core: &Rc<Core>, mut stream: TcpStream) -> Option<Upgraded> {
    let mut tls = match &core.shared.tls {
        Some(t) => {
            // The session is driven with non-blocking syscalls, as connections are.
            with_socket(&stream, |s| s.set_nonblocking(true)).ok()?;
            Some(TlsSession::new(&t.config).ok()?)
        }
        None => None,
    };
    let mut head = Vec::new();
    // Request heads are a few hundred bytes; longer ones take more reads.
    let mut chunk = Vec::with_capacity(1024);
    let mut seen = false;
    let (req, len) = loop {
        match &mut tls {
            None => {
                let (res, buf) = stream.read(chunk).await;
                chunk = buf;
                match res {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            Some(session) => {
                if !read_tls(&stream, session, &mut head, &mut seen).await {
                    return None;
                }
            }
        }
        match http::parse(&head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => {
                CoreStats::bump(&core.stats.refused);
                let response = http::response("400 Bad Request", "text/plain; charset=utf-8", &format!("{e}\n"), "");
                answer(stream, tls.as_mut(), response.into_bytes()).await;
                return None;
            }
        }
    };
    let shared = &core.shared;
    let metrics = || {
        let mut text = crate::metrics::render(&shared.stats);
        if let Some(more) = &shared.extra_metrics {
            text.push_str(&more());
        }
        text
    };
    let ctx = Context {
        ready: shared.ready.load(Ordering::Acquire) && !shared.shutting_down.load(Ordering::Acquire),
        allowed_origins: &shared.config.allowed_origins,
        metrics: &metrics,
        handoff: shared.http.is_some(),
    };
    match http::route(&req, &ctx) {
        Route::Handoff => {
            handoff(core, stream, head, tls);
            None
        }
        Route::Respond(response) => {
            if !response.starts_with("HTTP/1.1 200") {
                CoreStats::bump(&core.stats.refused);
            }
            answer(stream, tls.as_mut(), response.into_bytes()).await;
            None
        }
        Route::Upgrade { response, encoding, cookie_token } => {
            if core.stopping.get() {
                let body = "server shutting down\n";
                let response = http::response("503 Service Unavailable", "text/plain; charset=utf-8", body, "");
                answer(stream, tls.as_mut(), response.into_bytes()).await;
                return None;
            }
            match &mut tls {
                None => {
                    let (res, _) = stream.write_all(response.into_bytes()).await;
                    res.ok()?;
                }
                Some(session) => {
                    session.send(response.as_bytes());
                    if !write_tls(&stream, session).await {
                        return None;
                    }
                }
            }
            Some((stream, encoding, head.split_off(len), cookie_token, tls))
        }
    }
}

/// Gives a connection the data plane does not serve to the control plane's runtime (with
/// its TLS session, the handshake done, when the port has TLS).
fn handoff(core: &Rc<Core>, stream: TcpStream, read: Vec<u8>, tls: Option<TlsSession>) {
    let Some(http) = &core.shared.http else { return };
    let peer = stream.peer_addr().ok();
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up the runtime's ownership of this open socket (after
    // deregistering it from the epoll driver, when that one runs); nothing else owns it.
    #[allow(unsafe_code)]
    let std_stream = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let conn = crate::server::HandedConn { stream: std_stream, read, peer, tls: tls.map(TlsSession::into_inner) };
    if let Err(back) = http.handoff(conn) {
        CoreStats::bump(&core.stats.refused);
        let response = http::response(
            "503 Service Unavailable",
            "application/json",
            "{\"error\":{\"code\":\"overloaded\",\"message\":\"the server is busy; try again\"}}",
            "Retry-After: 1\r\n",
        );
        // Non-blocking and small: it fits the socket buffer, or the client gets nothing.
        match back.tls {
            None => {
                let _ = std::io::Write::write(&mut &back.stream, response.as_bytes());
            }
            Some(session) => {
                let mut session = TlsSession::from_inner(session);
                session.send(response.as_bytes());
                session.close();
                let _ = session.write_to(&mut SendTo(&SockRef::from(&back.stream)), || {});
            }
        }
    }
}

/// Waits until the socket has data (or an error, or the end): a poll, not a read.
fn readable(stream: &TcpStream) -> impl Future<Output = std::io::Result<()>> + '_ {
    stream.readable(false)
}

/// Waits until the socket takes more output.
fn writable(stream: &TcpStream) -> impl Future<Output = std::io::Result<()>> + '_ {
    stream.writable(false)
}

enum Wakeup {
    Readable(std::io::Result<()>),
    Writable,
    Notified,
}

/// What reading everything available found.
enum Input {
    /// Read what there was (possibly nothing: a spurious wake-up).
    More,
    /// The client closed its side, or the socket failed.
    End,
}

/// Reads what the socket has (up to a fair share) into the core's buffer, feeding it on
/// (decrypted first, with TLS).
fn read_available(
    core: &Rc<Core>,
    state: &Rc<ConnState>,
    ws: &mut WsConn,
    encoding: Encoding,
    socket: &Socket,
    mut tls: Option<&mut TlsSession>,
) -> Input {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut total = 0;
        while total < READ_PER_WAKEUP {
            match (&*socket).read(&mut buf) {
                Ok(0) => return Input::End,
                Ok(n) => {
                    total += n;
                    CoreStats::bump(&core.stats.socket_reads);
                    match tls.as_deref_mut() {
                        None => {
                            on_bytes(core, state, ws, encoding, &buf[..n]);
                        }
                        Some(session) => {
                            match session.receive(&buf[..n], &mut |plain| {
                                on_bytes(core, state, ws, encoding, plain);
                            }) {
                                Ok(Received::Open) => {}
                                Ok(Received::Closed) => return Input::End,
                                Err(_) => {
                                    // The alert, if the socket takes it.
                                    let _ = session.write_to(&mut SendTo(socket), || {});
                                    return Input::End;
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Input::End,
            }
        }
        Input::More
    })
}

/// The connection's task: reads, writes and closing, until the connection ends.
async fn run(
    core: &Rc<Core>,
    state: &Rc<ConnState>,
    stream: TcpStream,
    encoding: Encoding,
    leftover: Vec<u8>,
    mut tls: Option<TlsSession>,
) {
    let cfg = &core.shared.config;
    if with_socket(&stream, |s| s.set_nonblocking(true)).is_err() {
        return;
    }
    let mut ws = WsConn::new(cfg.max_frame_bytes, cfg.max_message_bytes);
    if !leftover.is_empty() {
        on_bytes(core, state, &mut ws, encoding, &leftover);
    }
    drop(leftover);
    // Boxed: these exist only while waited on.
    let mut waiting_read = Some(Box::pin(readable(&stream)));
    let mut waiting_write = None;
    let mut shut_down = false;
    loop {
        if state.killed.get() {
            return;
        }
        if waiting_write.is_none() {
            let flushed = with_socket(&stream, |s| match &mut tls {
                None => state.flush(s, &core.stats),
                Some(session) => state.flush_tls(session, s, &core.stats),
            });
            match flushed {
                Ok(true) => {
                    // Closing and everything (the close frame last) written: half-close so
                    // the client sees the end; keep reading until it hangs up or time is up.
                    if state.closing_since.get().is_some() && !shut_down {
                        shut_down = true;
                        let _ = with_socket(&stream, |s| s.shutdown(std::net::Shutdown::Write));
                    }
                }
                Ok(false) => waiting_write = Some(Box::pin(writable(&stream))),
                Err(_) => return,
            }
        }
        let Some(read) = waiting_read.as_mut() else { return };
        let event = poll_fn(|cx| {
            if let Some(w) = waiting_write.as_mut()
                && w.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wakeup::Writable);
            }
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(Wakeup::Readable(r));
            }
            if state.wake.poll_wait(cx).is_ready() {
                return Poll::Ready(Wakeup::Notified);
            }
            Poll::Pending
        })
        .await;
        match event {
            Wakeup::Notified => {}
            Wakeup::Writable => waiting_write = None,
            Wakeup::Readable(Err(_)) => return,
            Wakeup::Readable(Ok(())) => {
                // Another core cannot keep up: stop reading (TCP pushes back on the client).
                while core.backlogged() && !state.killed.get() {
                    // Boxed: a timer is large, and idle connections should not carry one.
                    Box::pin(monoio::time::sleep(Duration::from_millis(1))).await;
                }
                match with_socket(&stream, |s| read_available(core, state, &mut ws, encoding, s, tls.as_mut())) {
                    Input::More => waiting_read = Some(Box::pin(readable(&stream))),
                    Input::End => {
                        // The client is gone: send what can still be sent, then end.
                        let _ = with_socket(&stream, |s| match &mut tls {
                            None => state.flush(s, &core.stats),
                            Some(session) => state.flush_tls(session, s, &core.stats),
                        });
                        return;
                    }
                }
            }
        }
    }
}

/// Feeds bytes to the WebSocket and messages to the shard. False once the connection is
/// closing (the remaining input is ignored).
fn on_bytes(core: &Rc<Core>, state: &Rc<ConnState>, ws: &mut WsConn, encoding: Encoding, bytes: &[u8]) -> bool {
    let now = Instant::now();
    state.last_rx.set(core.millis());
    state.pinged.set(false);
    if state.closing_since.get().is_some() {
        return false;
    }
    let conn = state.id;
    let limits = tandem_engine::DecodeLimits::of(&core.shared.shard.limits);
    let mut wrong_type = false;
    let result = {
        let mut shard = core.shard.borrow_mut();
        ws.receive(bytes, |incoming| {
            let payload = match (incoming, encoding) {
                (Incoming::Text(p), Encoding::Json) | (Incoming::Binary(p), Encoding::Binary) => p,
                (Incoming::Closed, _) => return,
                _ => {
                    wrong_type = true;
                    return;
                }
            };
            if wrong_type {
                return;
            }
            match decode_client_within(&payload, encoding, limits) {
                Ok(msg) => shard.on_message(conn, msg, now),
                Err(DecodeError { message, submit: Some(refused) }) => {
                    shard.refused_submit(conn, refused, &message, now)
                }
                Err(e) => shard.bad_message(conn, &e.message),
            }
        })
    };
    // The replies to what was read go out first: a close reply must be the last frame, and
    // frames queued after it would reach a client that already closed ("data frame
    // received after close", as Chromium reports it).
    core.apply_effects();
    // Pongs and close replies count against the send queue like everything else: a client
    // that pings without reading is closed as a slow reader, not buffered without end.
    if let Some(out) = ws.take_output()
        && !state.queue(out, core.shared.config.send_queue_bytes)
    {
        CoreStats::bump(&core.stats.slow_reader_closes);
    }
    if wrong_type {
        let expected =
            if encoding == Encoding::Json { "text frames (tandem.v1.json)" } else { "binary frames (tandem.v1.bin)" };
        state.close(close::UNSUPPORTED_DATA, &format!("this subprotocol takes {expected}"));
    }
    if let Err(fatal) = result {
        state.close(fatal.code, &fatal.reason);
    }
    if ws.is_closed() && state.closing_since.get().is_none() {
        // The client closed; tungstenite queued the reply, the last frame: nothing may follow.
        state.closing_since.set(Some(core.millis()));
        state.wake.notify();
    }
    state.closing_since.get().is_none()
}
