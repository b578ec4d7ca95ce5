//! HTTP connections handed over by the cores, served by hyper on the control runtime.
//!
//! A core reads a request head, sees it is not the data plane's (`/api/*`, `/`), and hands
//! the socket and the bytes it read to [`Handoff`] (a bounded queue). Here each connection
//! gets a hyper HTTP/1.1 server over a stream that first replays those bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

type Conn = (std::net::TcpStream, Vec<u8>, Option<SocketAddr>);

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
    fn handoff(
        &self,
        stream: std::net::TcpStream,
        read: Vec<u8>,
        peer: Option<SocketAddr>,
    ) -> Result<(), std::net::TcpStream> {
        self.tx.try_send((stream, read, peer)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((s, ..)) | mpsc::error::TrySendError::Closed((s, ..)) => s,
        })
    }
}

/// Serves handed-off connections until the queue closes.
pub(crate) async fn serve(mut incoming: Incoming, router: Router, settings: HttpSettings) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    while let Some((stream, read, peer)) = incoming.0.recv().await {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the limit: a short answer, written without waiting.
            let _ = std::io::Write::write(
                &mut &stream,
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 71\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"too many HTTP connections\"}}\n",
            );
            continue;
        };
        let router = router.clone();
        let timeout = settings.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_one(stream, read, peer, router, timeout).await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

async fn serve_one(
    stream: std::net::TcpStream,
    read: Vec<u8>,
    peer: Option<SocketAddr>,
    router: Router,
    header_timeout: Duration,
) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    let ip = ClientIp(peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip()));
    let io = TokioIo::new(Replay { read, pos: 0, inner: stream });
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
