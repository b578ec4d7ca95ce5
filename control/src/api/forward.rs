//! In a cluster, a document's comments and named versions are changed on the node that serves
//! the document (they are sequenced there with the text): a request that reaches another node
//! is forwarded to it, with the caller's credentials, and its answer passed back. The owner
//! checks the caller again (the metadata is shared), so forwarding grants nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::{ApiError, MAX_BODY_BYTES};
use crate::App;

/// Marks a forwarded request: a node that receives one for a document it does not serve
/// either answers 503 instead of forwarding it again (ownership moved meanwhile).
const FORWARDED: &str = "x-tandem-forwarded";

/// How long a forward may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The document of `/api/documents/{id}/...`.
fn doc_of(path: &str) -> Option<&str> {
    path.strip_prefix("/api/documents/")?.split('/').next().filter(|d| !d.is_empty())
}

fn unavailable(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.to_owned()).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Runs the request here when this node serves the document (or is no cluster's node), and
/// on the node that serves it otherwise.
pub(super) async fn to_owner(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(placement) = app.placement.get() else { return next.run(req).await };
    let Some(doc) = doc_of(req.uri().path()).map(str::to_owned) else { return next.run(req).await };
    if placement.serves(&doc, Instant::now()) {
        return next.run(req).await;
    }
    if req.headers().contains_key(FORWARDED) {
        return unavailable("the document moved to another node meanwhile; try again");
    }
    let Some(owner) = placement.owner(&doc) else {
        return unavailable("no node serves this document at this instant (a failover); try again");
    };
    let internal = placement.internal(&owner);
    let Some((tls, authority)) = tandem_net::placement::node_authority(&internal) else {
        return unavailable("the node serving this document announced no URL this node can reach");
    };
    let tls = match (tls, app.forward_tls.get()) {
        (false, _) => None,
        (true, Some(config)) => Some(Arc::clone(config)),
        (true, None) => {
            tracing::warn!(doc, to = %internal, "the document's node speaks TLS and this one has no TLS client configured");
            return unavailable("the node serving this document is not reachable from here");
        }
    };
    let authority = authority.to_owned();
    let span = tracing::info_span!("forward", otel.name = "forward to the document's node", otel.kind = "client", server.address = %authority);
    let forwarded = tracing::Instrument::instrument(forward(&authority, tls, req), span);
    match tokio::time::timeout(TIMEOUT, forwarded).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::warn!(doc, to = %authority, "forwarding a request to the document's node failed: {e}");
            unavailable("the node serving this document did not answer; try again")
        }
        Err(_) => unavailable("the node serving this document did not answer in time; try again"),
    }
}

async fn forward(authority: &str, tls: Option<Arc<rustls::ClientConfig>>, req: Request) -> Result<Response, String> {
    let (mut parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| format!("reading the body: {e}"))?;
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connecting: {e}"))?;
    let mut sender = match tls {
        None => handshake(stream).await?,
        Some(config) => {
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            handshake(stream).await?
        }
    };
    // The client's Host stays (the owner checks a browser's Origin against it).
    parts.headers.insert(FORWARDED, HeaderValue::from_static("1"));
    // The owner's spans join this request's trace.
    crate::trace::inject(&mut parts.headers);
    parts.headers.remove(header::CONNECTION);
    let request = Request::from_parts(parts, Body::from(body));
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let (parts, incoming) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(incoming)))
}

/// An HTTP/1.1 client connection over `io`, driven on its own task.
async fn handshake<I>(io: I) -> Result<hyper::client::conn::http1::SendRequest<Body>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::doc_of;

    #[test]
    fn the_document_is_read_from_the_path() {
        assert_eq!(doc_of("/api/documents/abc/comments"), Some("abc"));
        assert_eq!(doc_of("/api/documents/abc/versions/3"), Some("abc"));
        assert_eq!(doc_of("/api/documents//comments"), None);
        assert_eq!(doc_of("/api/search"), None);
    }
}
