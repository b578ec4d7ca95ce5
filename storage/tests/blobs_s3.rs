//! The blob store's conformance suite on S3: a real S3-API server (s3s-fs) started by the
//! test, plus what only S3 has (presigned links, refused when tampered with or expired).

#![cfg(feature = "s3")]

use std::sync::Arc;
use std::time::Duration;

use tandem_storage::s3::{S3Blobs, S3Options};
use tandem_storage::{BlobMeta, BlobStore, blob_conformance};

#[path = "support/s3.rs"]
mod s3;

fn options(server: &s3::S3Server, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        endpoint: server.endpoint.clone(),
        prefix: prefix.into(),
        access_key_id: s3::ACCESS_KEY.into(),
        secret_access_key: s3::SECRET_KEY.into(),
        ..S3Options::default()
    }
}

/// A GET with a plain HTTP/1.1 request over a socket (no HTTP client crate in the tests).
fn http_get(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = buf[head_end..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 4 + n..];
    }
}

#[test]
fn s3_blobs_pass_the_conformance_suite() {
    let server = s3::start();
    server.bucket("tandem");
    let blobs: Arc<dyn BlobStore> = Arc::new(S3Blobs::open(&options(&server, "tandem", "cluster-a")).unwrap());
    blob_conformance::run(&blobs, "suite");
    // The prefix is where the keys went.
    blobs.put("suite/where", b"x").unwrap();
    assert!(server.dir.path().join("tandem/cluster-a/suite/where").exists());
}

#[test]
fn presigned_links_read_until_they_expire_and_refuse_tampering() {
    let server = s3::start();
    server.bucket("tandem");
    let blobs = S3Blobs::open(&options(&server, "tandem", "")).unwrap();
    let meta = BlobMeta { content_type: Some("application/pdf".into()), content_disposition: None };
    blobs.put_with("exports/e1.pdf", b"%PDF-1.7 body", &meta).unwrap();
    blobs.put("exports/e2.pdf", b"other").unwrap();
    let url = blobs.presigned_get("exports/e1.pdf", Duration::from_secs(3600)).unwrap().expect("S3 signs links");
    assert!(url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=3600"), "{url}");
    assert_eq!(http_get(&url), (200, b"%PDF-1.7 body".to_vec()));
    // Another key under the same signature, or a changed signature: refused.
    assert_eq!(http_get(&url.replace("e1.pdf", "e2.pdf")).0, 403);
    let sig_at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut forged = url.clone();
    let flipped = if &url[sig_at..=sig_at] == "0" { "1" } else { "0" };
    forged.replace_range(sig_at..=sig_at, flipped);
    assert_eq!(http_get(&forged).0, 403);
    // A longer validity written into a signed link: refused.
    assert_eq!(http_get(&url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")).0, 403);
    // Expired: refused.
    let short = blobs.presigned_get("exports/e1.pdf", Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(http_get(&short).0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(http_get(&short).0, 403);
}

#[test]
fn a_wrong_endpoint_or_secret_fails_the_start_check() {
    let server = s3::start();
    server.bucket("tandem");
    assert!(S3Blobs::open(&options(&server, "tandem", "")).unwrap().check().is_ok());
    // (s3s-fs makes a missing bucket on the first PUT, so a wrong bucket name is only caught
    // by a real S3; a closed endpoint is.)
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut nowhere = options(&server, "tandem", "");
    nowhere.endpoint = format!("http://127.0.0.1:{closed}");
    let err = S3Blobs::open(&nowhere).unwrap().check().unwrap_err();
    assert!(err.to_string().contains(&format!("127.0.0.1:{closed}")), "{err}");
    let mut bad = options(&server, "tandem", "");
    bad.secret_access_key = "wrong".into();
    assert!(S3Blobs::open(&bad).unwrap().check().is_err());
    // The secret never shows in the options' Debug.
    assert!(!format!("{bad:?}").contains("wrong"));
    assert!(S3Blobs::open(&S3Options::default()).is_err(), "no bucket");
}
