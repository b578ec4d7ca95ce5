//! HTTP connections handed over by the cores, served by hyper on the control runtime.
//!
//! A core reads a request head, sees it is not the data plane's (`/api/*`, `/`), and hands
//! the socket and the bytes it read to [`Handoff`] (a bounded queue). Here each connection
//! gets a hyper HTTP/1.1 server over a stream that first replays those bytes (and, with TLS
//! on the port, goes on with the session the core began: [`TlsIo`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming as Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

use crate::api::ClientIp;

use std::io::{Read, Write};

use tandem_net::HandedConn as Conn;

/// Connections waiting to be picked up by the control runtime.
const HANDOFF_QUEUE: usize = 1024;

/// The data plane's end of the handoff queue.
pub(crate) struct Handoff {
    tx: mpsc::Sender<Conn>,
}

/// The control runtime's end.
pub(crate) struct Incoming(mpsc::Receiver<Conn>);

#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Handoff {
    pub(crate) fn new(_max_connections: usize) -> (Self, Incoming) {
        let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
        (Self { tx }, Incoming(rx))
    }
}

impl tandem_net::HttpHandoff for Handoff {
    fn handoff(&self, conn: Conn) -> Result<(), Conn> {
        self.tx.try_send(conn).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        })
    }
}

/// Serves handed-off connections until the queue closes.
pub(crate) async fn serve(mut incoming: Incoming, router: Router, settings: HttpSettings) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    while let Some(conn) = incoming.0.recv().await {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the limit: a short answer, written without waiting.
            let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 71\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"too many HTTP connections\"}}\n";
            match conn.tls {
                None => {
                    let _ = (&conn.stream).write(answer);
                }
                Some(mut tls) => {
                    let _ = tls.writer().write_all(answer);
                    tls.send_close_notify();
                    let _ = tls.write_tls(&mut &conn.stream);
                }
            }
            continue;
        };
        let router = router.clone();
        let timeout = settings.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_one(conn, router, timeout).await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

async fn serve_one(conn: Conn, router: Router, header_timeout: Duration) -> io::Result<()> {
    let Conn { stream, read, peer, tls } = conn;
    stream.set_nonblocking(true)?;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    let ip = ClientIp(peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip()));
    let replay = Replay { read, pos: 0, inner: stream };
    match tls {
        None => serve_io(replay, ip, router, header_timeout).await,
        Some(session) => serve_io(TlsIo { io: replay, tls: session }, ip, router, header_timeout).await,
    }
}

async fn serve_io<I>(io: I, ip: ClientIp, router: Router, header_timeout: Duration) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Body>| {
        req.extensions_mut().insert(ip);
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(io, service)
        .await
        .map_err(io::Error::other)
}

/// A stream that first gives back bytes already read from it.
struct Replay {
    read: Vec<u8>,
    pos: usize,
    inner: tokio::net::TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.read.len() {
            let n = buf.remaining().min(self.read.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.read[start..start + n]);
            self.pos += n;
            if self.pos == self.read.len() {
                self.read = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// HTTP through the TLS session a core began (handshake done, the request head already
/// decrypted and replayed by the inner [`Replay`], whose bytes are plaintext; everything
/// after them arrives as records).
///
/// Not tokio-rustls: its stream cannot be built around a session already under way.
struct TlsIo {
    io: Replay,
    tls: Box<rustls::ServerConnection>,
}

impl TlsIo {
    /// Writes pending records; Ready once there are none.
    fn poll_write_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SyncWrite { io: &mut self.io.inner, cx }) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A tokio stream as `io::Read`/`io::Write` for rustls: `Pending` becomes `WouldBlock` (the
/// waker is registered by then).
struct SyncWrite<'a, 'b> {
    io: &'a mut tokio::net::TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SyncWrite<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for SyncWrite<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut read) {
            Poll::Ready(Ok(())) => Ok(read.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The plaintext the core already decrypted comes first.
        if this.io.pos < this.io.read.len() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        loop {
            match this.tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The client went away without close_notify: the end, as hyper expects it.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Alerts and tickets go out before waiting for more.
            if let Poll::Ready(Err(e)) = this.poll_write_records(cx) {
                return Poll::Ready(Err(e));
            }
            let read = this.tls.read_tls(&mut SyncWrite { io: &mut this.io.inner, cx });
            match read {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {
                    if let Err(e) = this.tls.process_new_packets() {
                        let _ = this.poll_write_records(cx);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // At most one buffer's records wait in the session: the caller is held back until
        // the socket took the previous ones.
        if let Poll::Ready(Err(e)) = this.poll_write_records(cx) {
            return Poll::Ready(Err(e));
        }
        if this.tls.wants_write() {
            return Poll::Pending;
        }
        let n = this.tls.writer().write(buf)?;
        if let Poll::Ready(Err(e)) = this.poll_write_records(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_records(cx))?;
        Pin::new(&mut this.io.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        std::task::ready!(this.poll_write_records(cx))?;
        Pin::new(&mut this.io.inner).poll_shutdown(cx)
    }
}
