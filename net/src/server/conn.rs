//! One connection: the HTTP handshake, then a reader task and a writer task.
//!
//! The reader decodes every frame a socket read produced and hands each message to the shard
//! before the effects go out, so replies to a burst leave in one write. The writer drains the
//! connection's queue into one buffer per wake-up (write coalescing); a queue over its byte
//! limit closes the connection as a slow reader without slowing anyone else.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use super::core::Core;
use super::notify::Notify;
use crate::codec::decode_client;
use crate::http::{self, Context, Route};
use crate::metrics::CoreStats;
use crate::protocol::{Encoding, close};
use crate::session::ConnId;
use crate::wsconn::{Incoming, WsConn, close_frame};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Most bytes gathered into one socket write.
const WRITE_BATCH: usize = 256 * 1024;
/// How long a closing connection may take to finish the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// A connection's state shared by its reader, its writer and the core.
pub(crate) struct ConnState {
    pub(crate) id: ConnId,
    out: RefCell<VecDeque<Bytes>>,
    queued: Cell<usize>,
    /// Set once the connection is closing: the close frame to send after the queue.
    closing: RefCell<Option<Bytes>>,
    closing_since: Cell<Option<Instant>>,
    /// The reader is done; the writer flushes and exits.
    finished: Cell<bool>,
    killed: Cell<bool>,
    wake_writer: Notify,
    stop_reader: Notify,
    stop_writer: Notify,
    last_rx: Cell<Instant>,
    pinged: Cell<bool>,
    connected: Instant,
}

impl ConnState {
    fn new(id: ConnId, now: Instant) -> Self {
        Self {
            id,
            out: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            closing: RefCell::new(None),
            closing_since: Cell::new(None),
            finished: Cell::new(false),
            killed: Cell::new(false),
            wake_writer: Notify::default(),
            stop_reader: Notify::default(),
            stop_writer: Notify::default(),
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
            self.out.borrow_mut().clear();
            self.queued.set(0);
            self.close(close::SLOW_READER, "send queue overflow: reading too slowly");
            return false;
        }
        self.queued.set(queued);
        self.out.borrow_mut().push_back(frame);
        self.wake_writer.notify();
        true
    }

    /// Queues protocol bytes (pongs, close replies) regardless of the limit.
    fn queue_control(&self, bytes: Bytes) {
        self.queued.set(self.queued.get() + bytes.len());
        self.out.borrow_mut().push_back(bytes);
        self.wake_writer.notify();
    }

    /// Closes after what is queued, with a close frame.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        if self.closing_since.get().is_some() {
            return;
        }
        *self.closing.borrow_mut() = Some(close_frame(code, reason));
        self.closing_since.set(Some(Instant::now()));
        self.wake_writer.notify();
    }

    /// Stops both tasks now, without a close handshake.
    pub(crate) fn kill(&self) {
        self.killed.set(true);
        self.stop_reader.notify();
        self.stop_writer.notify();
        self.wake_writer.notify();
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// Pings an idle connection, closes a dead one, and enforces the `hello` deadline.
    pub(crate) fn check_timeouts(&self, now: Instant, idle: Duration, handshake: Duration, has_hello: bool) {
        if let Some(since) = self.closing_since.get() {
            if now.duration_since(since) > CLOSE_LINGER {
                self.kill();
            }
            return;
        }
        if !has_hello && now.duration_since(self.connected) > handshake {
            self.close(close::BAD_HELLO, "no hello in time");
            return;
        }
        let quiet = now.duration_since(self.last_rx.get());
        if quiet > idle * 2 {
            self.close(close::IDLE_TIMEOUT, "idle timeout");
        } else if quiet > idle && !self.pinged.get() {
            self.pinged.set(true);
            // An empty ping: FIN + opcode 9, length 0.
            self.queue_control(Bytes::from_static(&[0x89, 0x00]));
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
    let mut stream = stream;
    let _ = stream.write_all(response.into_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves one accepted connection to the end.
pub(crate) async fn serve(core: Rc<Core>, stream: TcpStream) {
    let _counted = Counted(Rc::clone(&core));
    let _ = stream.set_nodelay(true);
    let timeout = Duration::from_millis(core.shared.config.handshake_timeout_ms);
    let (stream, encoding, leftover) = match monoio::time::timeout(timeout, handshake(&core, stream)).await {
        Ok(Some(upgraded)) => upgraded,
        Ok(None) => return,
        Err(_) => {
            // Slowloris: the request head did not arrive in time; just hang up.
            CoreStats::bump(&core.stats.refused);
            return;
        }
    };
    let now = Instant::now();
    let conn = core.shard.borrow_mut().connect(encoding, now);
    let state = Rc::new(ConnState::new(conn, now));
    core.conns.borrow_mut().insert(conn, Rc::clone(&state));
    if core.stopping.get() {
        state.close(close::GOING_AWAY, "server shutting down");
    }
    let (rd, wr) = stream.into_split();
    let writer = monoio::spawn(writer(Rc::clone(&state), wr));
    reader(&core, &state, rd, encoding, &leftover).await;
    core.conns.borrow_mut().remove(&conn);
    core.shard.borrow_mut().disconnect(conn);
    core.apply_effects();
    state.finished.set(true);
    state.wake_writer.notify();
    writer.await;
}

/// Reads the request head, answers plain HTTP requests, and upgrades `/ws`.
async fn handshake(core: &Rc<Core>, mut stream: TcpStream) -> Option<(TcpStream, Encoding, Vec<u8>)> {
    let mut head = Vec::new();
    let mut chunk = Vec::with_capacity(4096);
    let (req, len) = loop {
        let (res, buf) = stream.read(chunk).await;
        chunk = buf;
        match res {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        match http::parse(&head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => {
                CoreStats::bump(&core.stats.refused);
                refuse(stream, "400 Bad Request", &e).await;
                return None;
            }
        }
    };
    let shared = &core.shared;
    let metrics = || crate::metrics::render(&shared.stats);
    let ctx = Context {
        ready: shared.ready.load(Ordering::Acquire) && !shared.shutting_down.load(Ordering::Acquire),
        allowed_origins: &shared.config.allowed_origins,
        metrics: &metrics,
    };
    match http::route(&req, &ctx) {
        Route::Respond(response) => {
            if !response.starts_with("HTTP/1.1 200") {
                CoreStats::bump(&core.stats.refused);
            }
            let _ = stream.write_all(response.into_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
        Route::Upgrade { response, encoding } => {
            if core.stopping.get() {
                refuse(stream, "503 Service Unavailable", "server shutting down").await;
                return None;
            }
            let (res, _) = stream.write_all(response.into_bytes()).await;
            res.ok()?;
            Some((stream, encoding, head.split_off(len)))
        }
    }
}

async fn reader(
    core: &Rc<Core>,
    state: &Rc<ConnState>,
    mut rd: OwnedReadHalf<TcpStream>,
    encoding: Encoding,
    leftover: &[u8],
) {
    let cfg = &core.shared.config;
    let mut ws = WsConn::new(cfg.max_frame_bytes, cfg.max_message_bytes);
    if !leftover.is_empty() && !on_bytes(core, state, &mut ws, encoding, leftover) {
        return;
    }
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        // Another core cannot keep up: stop reading (TCP pushes back on the client).
        while core.backlogged() && !state.killed.get() {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        if state.killed.get() {
            return;
        }
        buf.clear();
        monoio::select! {
            (res, b) = rd.read(buf) => {
                buf = b;
                match res {
                    Ok(0) | Err(_) => return,
                    // Once closing, keep reading (and ignoring) until the client hangs up
                    // or the linger time runs out.
                    Ok(n) => {
                        on_bytes(core, state, &mut ws, encoding, &buf[..n]);
                    }
                }
            },
            () = state.stop_reader.wait() => return,
        }
    }
}

/// Feeds bytes to the WebSocket and messages to the shard. False once the connection is
/// closing (the remaining input is ignored).
fn on_bytes(core: &Rc<Core>, state: &Rc<ConnState>, ws: &mut WsConn, encoding: Encoding, bytes: &[u8]) -> bool {
    let now = Instant::now();
    state.last_rx.set(now);
    state.pinged.set(false);
    if state.closing_since.get().is_some() {
        return false;
    }
    let conn = state.id;
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
            match decode_client(&payload, encoding) {
                Ok(msg) => shard.on_message(conn, msg, now),
                Err(e) => shard.bad_message(conn, &e.0),
            }
        })
    };
    if let Some(out) = ws.take_output() {
        state.queue_control(out);
    }
    core.apply_effects();
    if wrong_type {
        let expected =
            if encoding == Encoding::Json { "text frames (tandem.v1.json)" } else { "binary frames (tandem.v1.bin)" };
        state.close(close::UNSUPPORTED_DATA, &format!("this subprotocol takes {expected}"));
    }
    if let Err(fatal) = result {
        state.close(fatal.code, &fatal.reason);
    }
    if ws.is_closed() && state.closing_since.get().is_none() {
        // The client closed; tungstenite queued the reply. Finish like any other close.
        *state.closing.borrow_mut() = None;
        state.closing_since.set(Some(now));
        state.wake_writer.notify();
    }
    state.closing_since.get().is_none()
}

async fn writer(state: Rc<ConnState>, mut wr: OwnedWriteHalf<TcpStream>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if state.killed.get() {
            break;
        }
        {
            let mut out = state.out.borrow_mut();
            while let Some(frame) = out.front() {
                if !buf.is_empty() && buf.len() + frame.len() > WRITE_BATCH {
                    break;
                }
                buf.extend_from_slice(frame);
                state.queued.set(state.queued.get() - frame.len());
                out.pop_front();
            }
        }
        if buf.is_empty() {
            if let Some(frame) = state.closing.borrow_mut().take() {
                buf.extend_from_slice(&frame);
            } else if state.closing_since.get().is_some() || state.finished.get() {
                // Everything is written: half-close and let the reader see the client go.
                let _ = wr.shutdown().await;
                if state.finished.get() {
                    break;
                }
                monoio::select! {
                    () = state.wake_writer.wait() => {},
                    () = state.stop_writer.wait() => break,
                }
                if state.finished.get() {
                    break;
                }
                continue;
            }
        }
        if !buf.is_empty() {
            let (res, b) = monoio::select! {
                written = wr.write_all(std::mem::take(&mut buf)) => written,
                () = state.stop_writer.wait() => break,
            };
            buf = b;
            buf.clear();
            if res.is_err() {
                state.kill();
                break;
            }
            continue;
        }
        if state.finished.get() {
            break;
        }
        monoio::select! {
            () = state.wake_writer.wait() => {},
            () = state.stop_writer.wait() => break,
        }
    }
}
