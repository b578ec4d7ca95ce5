//! What the end-to-end suites share: a real `tandem serve` process, HTTP/1.1 and WebSocket
//! clients, sign-up, documents, search and activity calls.
#![allow(dead_code)] // each suite uses some of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<String>>,
    /// Where its data directory is.
    pub(crate) root: std::path::PathBuf,
    pub(crate) dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(config: &str, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_at(dir.path(), config, extra);
    server.dir = Some(dir);
    server
}

/// A server whose data directory is `root/data` (kept after it stops).
pub(crate) fn start_at(root: &std::path::Path, config: &str, extra: &[&str]) -> Server {
    let cfg = root.join("tandem.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cores", "2", "--log", "debug", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tandem starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.lock().unwrap().push_str(&line);
        log.lock().unwrap().push('\n');
        if let Some(rest) =
            line.split("listening on http://").nth(1).or_else(|| line.split("listening on https://").nth(1))
        {
            let addr = rest.split(' ').next().unwrap().parse().unwrap();
            let log2 = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
            return Server { child, addr, log, root: root.to_owned(), dir: None };
        }
    }
    let status = child.wait();
    panic!("tandem exited ({status:?}) before listening:\n{}", log.lock().unwrap());
}

/// An HTTP answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
    pub(crate) raw: String,
}

impl Answer {
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let text = if chunked { dechunk(rest) } else { rest.to_owned() };
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, headers, body, raw }
}

pub(crate) fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Signs up; returns (user id, access token, refresh token).
pub(crate) fn signup(addr: SocketAddr, email: &str, name: &str) -> (String, String, String) {
    let a = http(
        addr,
        "POST",
        "/api/auth/signup",
        &[],
        Some(&json!({"email": email, "password": "pw-long-enough", "name": name})),
    );
    assert_eq!(a.status, 201, "{}", a.raw);
    (
        a.body["user"]["id"].as_str().unwrap().to_owned(),
        a.body["access_token"].as_str().unwrap().to_owned(),
        a.body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

pub(crate) fn create_doc(addr: SocketAddr, token: &str, title: &str) -> String {
    let a = http(addr, "POST", "/api/documents", &[("Authorization", &bearer(token))], Some(&json!({"title": title})));
    assert_eq!(a.status, 201, "{}", a.raw);
    a.body["id"].as_str().unwrap().to_owned()
}

pub(crate) struct Ws {
    pub(crate) ws: WebSocket<TcpStream>,
    pub(crate) seq: u64,
}

impl Ws {
    pub(crate) fn upgrade(addr: SocketAddr, headers: &[(&str, &str)]) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("tandem.v1.json"));
        for (n, v) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap();
            req.headers_mut().insert(name, HeaderValue::from_str(v).unwrap());
        }
        let (ws, _) = tungstenite::client(req, stream).unwrap();
        Self { ws, seq: 0 }
    }

    /// Connects and says hello with `token`; returns the socket and the first answer.
    pub(crate) fn hello(addr: SocketAddr, token: &str, headers: &[(&str, &str)], client: u64) -> (Self, Value) {
        let mut ws = Self::upgrade(addr, headers);
        ws.send(
            json!({"type": "hello", "protocol": 1, "client": format!("{client:016x}"), "token": token, "name": "x"}),
        );
        let first = ws.recv();
        (ws, first)
    }

    pub(crate) fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    /// The next message (Null once closed; the close code is then in `closed_with`).
    pub(crate) fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
                Ok(Message::Close(f)) => return json!({"closed": f.map(|f| u16::from(f.code))}),
                Ok(_) => {}
                Err(e) => return json!({"closed": null, "error": e.to_string()}),
            }
        }
    }

    /// Messages until one of type `ty` (panics on a close first).
    pub(crate) fn until(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no {ty} in time");
            let m = self.recv();
            assert!(m.get("closed").is_none(), "closed while waiting for {ty}: {m}");
            if m["type"] == ty {
                return m;
            }
        }
    }

    /// Opens `doc`: the `opened` (or the error), after which the document's `notes` are read.
    pub(crate) fn open(&mut self, doc: &str) -> Value {
        self.send(json!({"type": "open", "doc": doc}));
        let opened = self.recv();
        if opened["type"] == "opened" {
            let notes = self.recv();
            assert_eq!(notes["type"], "notes", "{notes}");
        }
        opened
    }

    pub(crate) fn submit(&mut self, doc: &str, base_rev: u64, text: &str) -> u64 {
        self.seq += 1;
        self.send(json!({"type": "submit", "doc": doc, "base_rev": base_rev, "client_seq": self.seq, "delta": {"ops": [{"insert": text}]}}));
        self.seq
    }
}

/// Polls `f` until it gives `Some`, for at most `secs`.
pub(crate) fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn search(addr: SocketAddr, token: &str, q: &str) -> Answer {
    http(addr, "GET", &format!("/api/search?q={q}"), &[("Authorization", &bearer(token))], None)
}

pub(crate) fn hit_ids(a: &Answer) -> Vec<String> {
    a.body["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

pub(crate) fn activity(addr: SocketAddr, token: &str, doc: &str) -> Answer {
    http(addr, "GET", &format!("/api/documents/{doc}/activity"), &[("Authorization", &bearer(token))], None)
}

/// One HTTP/1.1 request with a raw body; the answer's status, headers and raw body.
pub(crate) fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    exchange(&mut s, &addr.to_string(), method, path, headers, body)
}

/// One HTTP/1.1 request with a raw body over `s` (plain or TLS), `Connection: close`; the
/// answer's status, headers and raw body.
pub(crate) fn exchange(
    s: &mut (impl Read + Write),
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading it all.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = raw[end..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut b = &body[..];
        while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
            b = &b[nl + 4 + n..];
        }
        body = out;
    }
    (status, headers, body)
}

/// A GET of an absolute `http://host:port/path` URL (a link from an answer or an email).
pub(crate) fn get_url(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host
        .parse()
        .unwrap_or_else(|_| std::net::ToSocketAddrs::to_socket_addrs(host).unwrap().next().expect("a resolvable host"));
    http_bytes(addr, "GET", &path, &[], &[])
}

/// The value of header `name` in `headers`.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub(crate) fn tls_stream(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::clone(config),
        rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One HTTPS request, the certificate checked for `localhost`.
pub(crate) fn https(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = tls_stream(addr, config, "localhost");
    exchange(&mut s, &format!("localhost:{}", addr.port()), method, path, headers, body)
}

pub(crate) fn https_json(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, raw) = https(addr, config, method, path, &headers, body.as_bytes());
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}
