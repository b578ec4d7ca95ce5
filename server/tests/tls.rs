//! TLS terminated by `tandem serve` itself: HTTPS and WSS on one port (the cores do the
//! handshake and hand REST connections to the control plane mid-session), a plain request
//! told to use TLS, a renewed certificate served without a restart, the export worker reading
//! over `wss://`, and clear errors for bad files.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::client::{Client, ClientOptions};
use tandem_testkit::pki::Pki;

/// A client trusting `pki`'s authority.
fn trusting(pki: &Pki) -> Arc<rustls::ClientConfig> {
    tandem_net::tls::client_config_trusting(&pki.ca_file).unwrap()
}

/// A server with TLS on its port; the certificate files are `root/cert.pem`, `root/key.pem`.
fn start_tls(pki: &Pki, root: &Path, config: &str) -> Server {
    let (c, k) = pki.leaf_files(root);
    start_at(root, config, &["--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()])
}

/// The certificate the server presents to a new client now (DER): a client of its own, which
/// cannot resume an earlier session (a resumed one carries the certificate it began with).
fn presented(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    let mut s = tls_stream(addr, &trusting(pki), "localhost");
    let (status, ..) = exchange(&mut s, "localhost", "GET", "/healthz", &[], &[]);
    assert_eq!(status, 200);
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

fn signup_tls(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, email: &str) -> String {
    let (status, body) = https_json(
        addr,
        config,
        "POST",
        "/api/auth/signup",
        None,
        Some(json!({"email": email, "password": "correct horse battery staple", "name": email})),
    );
    assert_eq!(status, 201, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn wss_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, token: &str, id: u64) -> Client {
    let options = ClientOptions {
        token: token.to_owned(),
        tls: Some(Arc::clone(config)),
        server_name: Some("localhost".into()),
        ..ClientOptions::default()
    };
    Client::connect(addr, ClientId(id), options).unwrap()
}

#[test]
fn https_and_wss_share_the_port_and_a_plain_request_is_told_to_use_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = start_tls(&pki, dir.path(), "");
    let (addr, tls) = (server.addr, trusting(&pki));
    assert!(server.log.lock().unwrap().contains(&format!("listening on https://{addr}")));

    // REST over HTTPS: sign-up sets Secure cookies (TLS implies them).
    let (status, headers, _) = https(
        addr,
        &tls,
        "POST",
        "/api/auth/signup",
        &[("Content-Type", "application/json")],
        json!({"email": "ada@example.com", "password": "correct horse battery staple", "name": "Ada"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 201);
    let cookies: Vec<_> = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")).collect();
    assert!(!cookies.is_empty() && cookies.iter().all(|(_, v)| v.contains("Secure")), "{cookies:?}");
    let ada = signup_tls(addr, &tls, "ada2@example.com");
    let (status, doc) = https_json(addr, &tls, "POST", "/api/documents", Some(&ada), Some(json!({"title": "Plan"})));
    assert_eq!(status, 201, "{doc}");
    let doc = doc["id"].as_str().unwrap().to_owned();

    // WSS on the same port: two clients edit and converge.
    let mut a = wss_client(addr, &tls, &ada, 1);
    let mut b = wss_client(addr, &tls, &ada, 2);
    a.open(&doc).unwrap();
    b.open(&doc).unwrap();
    a.edit(&doc, Delta::new().insert("over TLS ", Attributes::NONE)).unwrap();
    b.edit(&doc, Delta::new().insert("both ways ", Attributes::NONE)).unwrap();
    for c in [&mut a, &mut b] {
        c.wait_until(Duration::from_secs(10), "acks", |s| {
            s.doc_state(&doc).is_some_and(|d| d.rev() == 2 && !d.has_pending())
        })
        .unwrap();
    }
    let text = |c: &Client| c.session().doc_state(&doc).unwrap().document().to_delta();
    assert_eq!(text(&a), text(&b));

    // A large body each way through the session the core handed over: an upload of ~1 MB
    // comes back byte for byte.
    let mut png = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/app/public/icon.png"))
        .unwrap_or_else(|_| tiny_png());
    png.resize(png.len().max(900_000), 0);
    let auth = bearer(&ada);
    let (status, _, body) = https(
        addr,
        &tls,
        "POST",
        &format!("/api/documents/{doc}/uploads"),
        &[("Authorization", &auth), ("Content-Type", "image/png")],
        &png,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let url = serde_json::from_slice::<Value>(&body).unwrap()["url"].as_str().unwrap().to_owned();
    let path = url.find("/api/").map(|i| &url[i..]).unwrap();
    let (status, _, back) = https(addr, &tls, "GET", path, &[("Authorization", &auth)], &[]);
    assert_eq!(status, 200);
    assert_eq!(back, png);

    // The health endpoints the cores answer themselves.
    let (status, _, body) = https(addr, &tls, "GET", "/readyz", &[], &[]);
    assert_eq!((status, body.as_slice()), (200, &b"ready\n"[..]));

    // Plain HTTP on the TLS port: a plain answer saying so, not a hang or garbage.
    let (status, _, body) = http_bytes(addr, "GET", "/healthz", &[], &[]);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("this port speaks TLS"), "{}", String::from_utf8_lossy(&body));

    // The certificate is checked: a name it does not carry fails the handshake.
    let mut wrong = tls_stream(addr, &tls, "example.org");
    let mut buf = [0u8; 1];
    std::io::Write::write_all(&mut wrong, b"GET /healthz HTTP/1.1\r\n\r\n").unwrap_err();
    assert!(wrong.read(&mut buf).is_err());
    // The server is unharmed by all of it.
    a.edit(&doc, Delta::new().insert("still ", Attributes::NONE)).unwrap();
    a.wait_until(Duration::from_secs(10), "ack", |s| s.doc_state(&doc).is_some_and(|d| d.rev() == 3)).unwrap();
}

/// A 1x1 PNG.
fn tiny_png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
        .unwrap()
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_open_sessions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = start_tls(&pki, dir.path(), "[server.tls]\nreload_interval_s = 1\n");
    let (addr, tls) = (server.addr, trusting(&pki));
    let before = presented(addr, &pki);
    let ada = signup_tls(addr, &tls, "ada@example.com");
    let (_, doc) = https_json(addr, &tls, "POST", "/api/documents", Some(&ada), Some(json!({"title": "Plan"})));
    let doc = doc["id"].as_str().unwrap().to_owned();
    let mut a = wss_client(addr, &tls, &ada, 1);
    a.open(&doc).unwrap();

    // Renewal writes the key first, then the certificate (a moment in between does not fit).
    let (cert, key) = pki.leaf();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let now = presented(addr, &pki);
        if now != before {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served in 15 s:\n{}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(after, before);
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    assert!(log.contains("still serving the previous one"), "the half-written renewal is reported:\n{log}");
    // The session opened under the old certificate goes on.
    a.edit(&doc, Delta::new().insert("after renewal", Attributes::NONE)).unwrap();
    a.wait_until(Duration::from_secs(10), "ack", |s| {
        s.doc_state(&doc).is_some_and(|d| d.rev() == 1 && !d.has_pending())
    })
    .unwrap();
}

#[test]
fn an_export_reads_the_document_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = start_tls(&pki, dir.path(), "");
    let (addr, tls) = (server.addr, trusting(&pki));
    let ada = signup_tls(addr, &tls, "ada@example.com");
    let (_, doc) = https_json(addr, &tls, "POST", "/api/documents", Some(&ada), Some(json!({"title": "Plan"})));
    let doc = doc["id"].as_str().unwrap().to_owned();
    let mut a = wss_client(addr, &tls, &ada, 1);
    a.open(&doc).unwrap();
    a.edit(&doc, Delta::new().insert("Exported through TLS\n", Attributes::NONE)).unwrap();
    a.wait_until(Duration::from_secs(10), "ack", |s| {
        s.doc_state(&doc).is_some_and(|d| d.rev() == 1 && !d.has_pending())
    })
    .unwrap();
    let (status, export) = https_json(
        addr,
        &tls,
        "POST",
        &format!("/api/documents/{doc}/export"),
        Some(&ada),
        Some(json!({"format": "docx"})),
    );
    assert_eq!(status, 202, "{export}");
    let id = export["export_id"].as_str().unwrap().to_owned();
    let done = eventually(60, "the export", || {
        let (_, e) = https_json(addr, &tls, "GET", &format!("/api/exports/{id}"), Some(&ada), None);
        match e["status"].as_str() {
            Some("done") => Some(e),
            Some("failed") => panic!("the export failed: {e}\n{}", server.log.lock().unwrap()),
            _ => None,
        }
    });
    // The link names the HTTPS origin and serves the file over it.
    let url = done["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://{addr}/api/exports/{id}/file?")), "{url}");
    let (status, _, file) = https(addr, &tls, "GET", &url[url.find("/api/").unwrap()..], &[], &[]);
    assert_eq!(status, 200);
    assert_eq!(&file[..2], b"PK", "a DOCX is a zip");
}

#[test]
fn bad_certificate_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n").unwrap();
    let missing = dir.path().join("missing-key.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let (cert_s, key_s, missing_s) = (cert.to_str().unwrap(), key.to_str().unwrap(), missing.to_str().unwrap());
    for (args, expect) in [
        (vec!["--tls-cert", cert_s], "both cert_file and key_file"),
        (vec!["--tls-cert", cert_s, "--tls-key", missing_s], "reading the private key"),
        (vec!["--tls-cert", cert_s, "--tls-key", key_s], "cert.pem"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
    }
}
