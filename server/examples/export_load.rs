//! Keeps a running `tandem serve` exporting: signs up, writes a 50-page document with 20
//! uploaded images over WebSocket, then asks for PDF and DOCX exports in turn, `in_flight`
//! at a time, for `secs` seconds; prints how many finished and their end-to-end times (request
//! to done, p50 / p99 / max, from the status route). For measuring the data plane while
//! exports render (results/2026-11-30-exports/).
//!
//!   cargo run --release -p tandem --example export_load -- 127.0.0.1:8080 60 2

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_engine::{ClientId, Delta};
use tandem_net::client::{Client, ClientOptions};

fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, ty: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !ty.is_empty() {
        head.push_str(&format!("Content-Type: {ty}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().expect("the server's address").parse().unwrap();
    let secs: u64 = args.next().map_or(60, |s| s.parse().unwrap());
    let in_flight: usize = args.next().map_or(2, |s| s.parse().unwrap());
    let email = format!("exporter-{}@example.com", std::process::id());
    let (code, me) = request(
        addr,
        "POST",
        "/api/auth/signup",
        None,
        "application/json",
        json!({"email": email, "password": "pw-long-enough", "name": "Exporter"}).to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{me}");
    let token = me["access_token"].as_str().unwrap().to_owned();
    let (_, doc) = request(addr, "POST", "/api/documents", Some(&token), "application/json", br#"{"title": "Report"}"#);
    let doc = doc["id"].as_str().unwrap().to_owned();
    let images = [
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../render/tests/data/photo.jpg")).unwrap(),
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../render/tests/data/logo.png")).unwrap(),
    ];
    let mut urls = Vec::new();
    for i in 0..20 {
        let (code, up) =
            request(addr, "POST", &format!("/api/documents/{doc}/uploads"), Some(&token), "", &images[i % 2]);
        assert_eq!(code, 201, "{up}");
        urls.push(up["url"].as_str().unwrap().to_owned());
    }
    let options = ClientOptions { token: token.clone(), ..ClientOptions::default() };
    let mut client = Client::connect(addr, ClientId(0xe5_0000 + u64::from(std::process::id())), options).unwrap();
    client.open(&doc).unwrap();
    let words = "the quick brown fox jumps over the lazy dog while the team writes the plan together";
    for (section, url) in urls.iter().enumerate() {
        let mut ops = vec![
            json!({"insert": format!("Section {section}: planning notes")}),
            json!({"insert": "\n", "attributes": {"header": 2}}),
        ];
        for p in 0..4 {
            ops.push(json!({"insert": "Bold lead-in, ", "attributes": {"bold": true}}));
            ops.push(json!({"insert": format!("paragraph {p}: {words}, {words}, {words}, {words}, {words}.\n")}));
        }
        for item in 0..3 {
            ops.push(json!({"insert": format!("Item {item}")}));
            ops.push(json!({"insert": "\n", "attributes": {"list": "ordered"}}));
        }
        ops.push(json!({"insert": {"image": url}}));
        ops.push(json!({"insert": "\n", "attributes": {"align": "center"}}));
        let len = client.session().document(&doc).map_or(0, |d| d.len());
        let mut all = vec![json!({"retain": len.saturating_sub(1)})];
        all.extend(ops);
        let delta: Delta = serde_json::from_value(json!({"ops": all})).unwrap();
        client.edit(&doc, delta).unwrap();
        client.wait_until(Duration::from_secs(10), "the ack", |s| s.is_synced()).unwrap();
    }
    drop(client);
    let started = Instant::now();
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut done: Vec<(String, f64)> = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) || !pending.is_empty() {
        while pending.len() < in_flight && started.elapsed() < Duration::from_secs(secs) {
            let format = if n.is_multiple_of(2) { "pdf" } else { "docx" };
            n += 1;
            let body = json!({"format": format}).to_string();
            let (code, a) = request(
                addr,
                "POST",
                &format!("/api/documents/{doc}/export"),
                Some(&token),
                "application/json",
                body.as_bytes(),
            );
            if code != 202 {
                eprintln!("export refused: {code} {a}");
                break;
            }
            pending.push((format.to_owned(), Instant::now()));
            pending.last_mut().unwrap().0 = format!("{format} {}", a["export_id"].as_str().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
        pending.retain(|(key, at)| {
            let id = key.split(' ').nth(1).unwrap();
            let (_, s) = request(addr, "GET", &format!("/api/exports/{id}"), Some(&token), "", b"");
            match s["status"].as_str() {
                Some("done") => {
                    done.push((key.split(' ').next().unwrap().to_owned(), at.elapsed().as_secs_f64() * 1e3));
                    false
                }
                Some("failed") => panic!("an export failed: {s}"),
                _ => true,
            }
        });
    }
    for format in ["pdf", "docx"] {
        let mut t: Vec<f64> = done.iter().filter(|(f, _)| f == format).map(|(_, ms)| *ms).collect();
        t.sort_by(f64::total_cmp);
        if t.is_empty() {
            continue;
        }
        let pct = |p: f64| t[((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1];
        println!(
            "format={format} exports={} request_to_done_ms p50={:.0} p99={:.0} max={:.0}",
            t.len(),
            pct(0.5),
            pct(0.99),
            t[t.len() - 1]
        );
    }
}
