//! The HTTP side of the port, sans I/O: parsing a request head and deciding what to answer.
//!
//! `GET /ws` upgrades to WebSocket (RFC 6455 section 4.2); `GET /healthz`, `/readyz` and
//! `/metrics` answer and close. With a control plane, every other request is handed to it
//! (the REST API and the page share the port); without one, it is a clear 4xx.

use crate::protocol::{Encoding, SUBPROTOCOL_BIN, SUBPROTOCOL_JSON};

/// The cookie that carries a browser's access token.
pub const ACCESS_COOKIE: &str = "tandem_access";

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), without quotes.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        Some(v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
    })
}

/// True when `origin` (`scheme://host[:port]`) names the host a request was sent to.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !host.is_empty() && rest.eq_ignore_ascii_case(host)
}

/// Most bytes in a request head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses a request head from `buf`: `Ok(None)` when more bytes are needed, otherwise the
/// request and the length of its head (bytes after it belong to the WebSocket).
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let path = req.path.unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path).to_owned();
            let headers = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_owned()))
                .collect();
            Ok(Some((Request { method: req.method.unwrap_or("").to_owned(), path, headers }, len)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            Err(format!("request head over {MAX_HEAD_BYTES} bytes"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed request: {e}")),
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Switch to WebSocket: write `response` and speak `encoding`.
    Upgrade {
        /// The `101 Switching Protocols` response.
        response: String,
        /// The negotiated subprotocol's encoding.
        encoding: Encoding,
        /// The access token in the request's cookie, when the request may use it (its
        /// `Origin` is allowed, or absent).
        cookie_token: Option<String>,
    },
    /// Answer and close.
    Respond(String),
    /// Not the data plane's: hand the connection (with the bytes read so far) to the
    /// control plane.
    Handoff,
}

/// The server's state as the HTTP endpoints report it.
pub struct Context<'a> {
    /// Ready to serve (not starting, not shutting down).
    pub ready: bool,
    /// Allowed `Origin` values; empty allows any.
    pub allowed_origins: &'a [String],
    /// Renders `/metrics`.
    pub metrics: &'a dyn Fn() -> String,
    /// A control plane takes the requests the data plane does not serve.
    pub handoff: bool,
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn response(status: &str, content_type: &str, body: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn text(status: &str, body: &str) -> Route {
    Route::Respond(response(status, "text/plain; charset=utf-8", &format!("{body}\n"), ""))
}

/// Decides what to answer.
pub fn route(req: &Request, ctx: &Context<'_>) -> Route {
    let ours = matches!(req.path.as_str(), "/ws" | "/healthz" | "/readyz" | "/metrics");
    if ctx.handoff && (!ours || req.method != "GET") {
        return Route::Handoff;
    }
    if req.method != "GET" {
        return Route::Respond(response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n",
            "Allow: GET\r\n",
        ));
    }
    match req.path.as_str() {
        "/healthz" => text("200 OK", "ok"),
        "/readyz" if ctx.ready => text("200 OK", "ready"),
        "/readyz" => text("503 Service Unavailable", "not ready"),
        "/metrics" => {
            Route::Respond(response("200 OK", "text/plain; version=0.0.4; charset=utf-8", &(ctx.metrics)(), ""))
        }
        "/ws" => upgrade(req, ctx),
        _ => text("404 Not Found", "not found; the WebSocket endpoint is /ws"),
    }
}

fn upgrade(req: &Request, ctx: &Context<'_>) -> Route {
    let has_token = |name: &str, token: &str| {
        req.header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return text("426 Upgrade Required", "GET /ws needs Upgrade: websocket and Connection: Upgrade");
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Route::Respond(response(
            "426 Upgrade Required",
            "text/plain; charset=utf-8",
            "only WebSocket version 13 is supported\n",
            "Sec-WebSocket-Version: 13\r\n",
        ));
    }
    let Some(key) = req.header("sec-websocket-key").filter(|k| !k.is_empty()) else {
        return text("400 Bad Request", "missing Sec-WebSocket-Key");
    };
    // The allowlist keeps other sites' pages from opening WebSockets here (browsers always
    // send `Origin` on an upgrade). Clients that send none are not browser pages (native
    // apps, the load generator, servers) and pass. The `Host` is not trusted to say what
    // this server's own origin is: a DNS-rebound page would match it.
    if !ctx.allowed_origins.is_empty()
        && let Some(origin) = req.header("origin")
        && !ctx.allowed_origins.iter().any(|o| o == origin)
    {
        return text("403 Forbidden", &format!("origin {origin:?} is not allowed"));
    }
    // A browser sends the cookie with any page's WebSocket: it counts only when the page is
    // this server's (or an allowed origin), so another site cannot use a visitor's session.
    let cookie_token =
        req.header("cookie").and_then(|h| cookie(h, ACCESS_COOKIE)).filter(|_| match req.header("origin") {
            None => true,
            Some(origin) => {
                ctx.allowed_origins.iter().any(|o| o == origin) || same_origin(origin, req.header("host").unwrap_or(""))
            }
        });
    let offered = req.header("sec-websocket-protocol").unwrap_or("");
    let Some(encoding) = offered.split(',').map(str::trim).find_map(Encoding::from_subprotocol) else {
        return text(
            "400 Bad Request",
            &format!("Sec-WebSocket-Protocol must offer {SUBPROTOCOL_BIN} or {SUBPROTOCOL_JSON}; got {offered:?}"),
        );
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        encoding.subprotocol()
    );
    Route::Upgrade { response, encoding, cookie_token: cookie_token.map(str::to_owned) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str) -> Request {
        parse(head.as_bytes()).unwrap().unwrap().0
    }

    fn ctx<'a>(origins: &'a [String], metrics: &'a dyn Fn() -> String) -> Context<'a> {
        Context { ready: true, allowed_origins: origins, metrics, handoff: false }
    }

    const UPGRADE: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, tandem.v1.json\r\nOrigin: https://app.example\r\n\r\n";

    #[test]
    fn upgrade_negotiates_a_subprotocol() {
        let m = || String::new();
        match route(&req(UPGRADE), &ctx(&[], &m)) {
            Route::Upgrade { response, encoding, .. } => {
                assert_eq!(encoding, Encoding::Json);
                // RFC 6455's own example key and accept value.
                assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
                assert!(response.contains("Sec-WebSocket-Protocol: tandem.v1.json\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_clear() {
        let m = || String::new();
        let allowed = vec!["https://ok.example".to_owned()];
        let status = |r: Route| match r {
            Route::Respond(s) => s.lines().next().unwrap().to_owned(),
            Route::Upgrade { .. } => "upgrade".to_owned(),
            Route::Handoff => "handoff".to_owned(),
        };
        assert_eq!(status(route(&req(UPGRADE), &ctx(&allowed, &m))), "HTTP/1.1 403 Forbidden");
        assert_eq!(
            status(route(&req(&UPGRADE.replace("chat, tandem.v1.json", "chat")), &ctx(&[], &m))),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(route(&req(&UPGRADE.replace("Version: 13", "Version: 8")), &ctx(&[], &m))),
            "HTTP/1.1 426 Upgrade Required"
        );
        assert_eq!(status(route(&req("GET /nope HTTP/1.1\r\n\r\n"), &ctx(&[], &m))), "HTTP/1.1 404 Not Found");
        assert_eq!(status(route(&req("POST /ws HTTP/1.1\r\n\r\n"), &ctx(&[], &m))), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(status(route(&req("GET /ws HTTP/1.1\r\n\r\n"), &ctx(&[], &m))), "HTTP/1.1 426 Upgrade Required");
    }

    #[test]
    fn health_and_metrics() {
        let m = || "tandem_up 1\n".to_owned();
        let body = |r: Route| match r {
            Route::Respond(s) => s,
            _ => panic!(),
        };
        assert!(body(route(&req("GET /healthz HTTP/1.1\r\n\r\n"), &ctx(&[], &m))).ends_with("\r\n\r\nok\n"));
        assert!(body(route(&req("GET /metrics HTTP/1.1\r\n\r\n"), &ctx(&[], &m))).ends_with("tandem_up 1\n"));
        let not_ready = Context { ready: false, allowed_origins: &[], metrics: &m, handoff: false };
        assert!(body(route(&req("GET /readyz HTTP/1.1\r\n\r\n"), &not_ready)).starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn the_control_plane_gets_what_is_not_the_data_planes() {
        let m = || String::new();
        let with = Context { ready: true, allowed_origins: &[], metrics: &m, handoff: true };
        assert_eq!(route(&req("GET /api/me HTTP/1.1\r\n\r\n"), &with), Route::Handoff);
        assert_eq!(route(&req("POST /ws HTTP/1.1\r\n\r\n"), &with), Route::Handoff);
        assert_eq!(route(&req("GET / HTTP/1.1\r\n\r\n"), &with), Route::Handoff);
        assert!(matches!(route(&req("GET /healthz HTTP/1.1\r\n\r\n"), &with), Route::Respond(_)));
        assert!(matches!(route(&req(UPGRADE), &with), Route::Upgrade { .. }));
    }

    #[test]
    fn the_access_cookie_counts_only_from_this_origin() {
        let m = || String::new();
        let token = |head: &str| match route(&req(head), &ctx(&[], &m)) {
            Route::Upgrade { cookie_token, .. } => cookie_token,
            other => panic!("{other:?}"),
        };
        let with_cookie =
            UPGRADE.replace("Host: h\r\n", "Host: app.example\r\nCookie: a=1; tandem_access=\"tok\"; b=2\r\n");
        assert_eq!(token(&with_cookie).as_deref(), Some("tok"));
        let cross_site = with_cookie.replace("Origin: https://app.example", "Origin: https://evil.example");
        assert_eq!(token(&cross_site), None);
        let native = with_cookie.replace("Origin: https://app.example\r\n", "");
        assert_eq!(token(&native).as_deref(), Some("tok"));
        assert_eq!(cookie("tandem_access_x=1; tandem_access=2", ACCESS_COOKIE), Some("2"));
        assert_eq!(cookie("novalue; x", ACCESS_COOKIE), None);
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:8080.evil", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert_eq!(parse(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        assert!(parse(b"\x00\x01 bad\r\n\r\n").is_err());
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(parse(huge.as_bytes()).unwrap_err().contains("over"));
        let (_, len) = parse(b"GET / HTTP/1.1\r\n\r\nrest").unwrap().unwrap();
        assert_eq!(len, 18);
    }
}
