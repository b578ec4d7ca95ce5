//! The editor's files as `tandem serve` serves them (`--web-dir`): the page at every app
//! route with its CSP and `no-cache`, hashed assets immutable and gzipped, a missing file a
//! 404, the API still the API, the features the page reads, the names behind client ids, and
//! a `--web-dir` without a build refused at start.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::json;
use support::*;

fn web_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>Tandem</title><script type=module src=/assets/index-AbC123.js></script>\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/index-AbC123.js"), "export const tandem = 'editor';\n".repeat(200)).unwrap();
    dir
}

/// The status line and headers of a GET (the body may be gzip: not read as text).
fn head_of(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned())).collect();
    (status, headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_editor_is_served_as_a_cdn_expects() {
    let web = web_dir();
    let server = start("", &["--web-dir", web.path().to_str().unwrap()]);
    // Logged right after "listening on": wait for the line.
    for _ in 0..100 {
        if server.log.lock().unwrap().contains("the editor: open http://127.0.0.1:") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("the editor: open http://127.0.0.1:"), "{log}");
    for path in ["/", "/login", "/signup", "/d/cXrjYD7W3Bep_CKFPIX8OQ"] {
        let (status, headers, body) = head_of(server.addr, path, "");
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "cache-control"), Some("no-cache"), "{path}");
        let csp = header(&headers, "content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
        assert!(String::from_utf8(body).unwrap().contains("/assets/index-AbC123.js"));
    }
    let (status, headers, body) = head_of(server.addr, "/assets/index-AbC123.js", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
    let etag = header(&headers, "etag").unwrap().to_owned();
    let (status, _, _) = head_of(server.addr, "/assets/index-AbC123.js", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 304);
    let (status, _, _) = head_of(server.addr, "/assets/nope-1.js", "");
    assert_eq!(status, 404);
    // The API is still the API, and the page learns what the server offers.
    let a = http(server.addr, "GET", "/api/nope", &[], None);
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (404, Some("no_route")));
    let f = http(server.addr, "GET", "/api/features", &[], None);
    assert_eq!(f.status, 200);
    assert_eq!(f.body["exports"], json!(true));
    assert_eq!(f.body["search"], json!(true));
}

#[test]
fn authors_name_the_clients_of_a_documents_history_to_its_readers() {
    let server = start("", &[]);
    let (_, ada, _) = signup(server.addr, "ada@example.com", "Ada");
    let (_, eve, _) = signup(server.addr, "eve@example.com", "Eve");
    let doc = create_doc(server.addr, &ada, "Plan");
    // Ada opens it with client 0xa1: the server learns that client is Ada (written within a
    // second).
    let (mut ws, _) = Ws::hello(server.addr, &ada, &[], 0xa1);
    ws.send(json!({"type": "open", "doc": doc}));
    assert_eq!(ws.recv()["type"], "opened");
    let path = format!("/api/documents/{doc}/authors?clients=a1,00000000000000b2");
    let mut found = serde_json::Value::Null;
    for _ in 0..100 {
        let a = http(server.addr, "GET", &path, &[("authorization", &bearer(&ada))], None);
        assert_eq!(a.status, 200, "{}", a.raw);
        found = a.body["authors"].clone();
        if found.get("00000000000000a1").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(found["00000000000000a1"]["name"], "Ada");
    assert!(found.get("00000000000000b2").is_none(), "unknown clients are left out");
    // Not for someone who may not read the document, and not for junk.
    let a = http(server.addr, "GET", &path, &[("authorization", &bearer(&eve))], None);
    assert_eq!(a.status, 404);
    let a = http(
        server.addr,
        "GET",
        &format!("/api/documents/{doc}/authors?clients=zz"),
        &[("authorization", &bearer(&ada))],
        None,
    );
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (400, Some("bad_request")));
    let many: Vec<String> = (0..101).map(|i| format!("{i:x}")).collect();
    let a = http(
        server.addr,
        "GET",
        &format!("/api/documents/{doc}/authors?clients={}", many.join(",")),
        &[("authorization", &bearer(&ada))],
        None,
    );
    assert_eq!(a.status, 400);
}

#[test]
fn a_web_dir_without_a_build_stops_the_server_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
        .arg(data.path())
        .arg("--web-dir")
        .arg(empty.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("web_dir") && err.contains("no index.html"), "{err}");
}
