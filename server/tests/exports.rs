//! Exports and uploads end to end through a real `tandem serve`: a document with every
//! feature, edited over WebSocket, exported as PDF and DOCX at a revision and read back with
//! poppler and LibreOffice; the links' expiry and tamper refusal (Tandem's own signature on
//! the local blob store, S3's on a real s3s-fs); the email at a real SMTP sink; a kill -9
//! mid-export; uploads typed by content and served to readers only; and the lifecycle sweep.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

#[path = "../../workers/tests/support/smtp.rs"]
mod smtp;

#[path = "../../storage/tests/support/s3.rs"]
mod s3;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../render/tests/data").join(name)).unwrap()
}

fn auth(token: &str) -> (&'static str, String) {
    ("Authorization", bearer(token))
}

fn upload(addr: std::net::SocketAddr, token: &str, doc: &str, bytes: &[u8], content_type: &str) -> (u16, Value) {
    let (n, v) = auth(token);
    let mut headers = vec![(n, v.as_str())];
    if !content_type.is_empty() {
        headers.push(("Content-Type", content_type));
    }
    let (status, _, body) = http_bytes(addr, "POST", &format!("/api/documents/{doc}/uploads"), &headers, bytes);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Submits `ops` at `base` and waits for the ack; the new revision.
fn submit(ws: &mut Ws, doc: &str, base: u64, ops: Value) -> u64 {
    ws.seq += 1;
    ws.send(json!({"type": "submit", "doc": doc, "base_rev": base, "client_seq": ws.seq, "delta": {"ops": ops}}));
    ws.until("ack")["rev"].as_u64().unwrap()
}

fn export(addr: std::net::SocketAddr, token: &str, doc: &str, body: Value) -> Answer {
    http(addr, "POST", &format!("/api/documents/{doc}/export"), &[(auth(token).0, &bearer(token))], Some(&body))
}

fn status(addr: std::net::SocketAddr, token: &str, id: &str) -> Answer {
    http(addr, "GET", &format!("/api/exports/{id}"), &[("Authorization", &bearer(token))], None)
}

fn wait_done(addr: std::net::SocketAddr, token: &str, id: &str) -> Value {
    eventually(60, "the export to finish", || {
        let a = status(addr, token, id);
        assert_eq!(a.status, 200, "{}", a.raw);
        match a.body["status"].as_str() {
            Some("done") => Some(a.body),
            Some("failed") => panic!("the export failed: {}", a.raw),
            _ => None,
        }
    })
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pdf_text(dir: &Path, pdf: &[u8]) -> (String, usize) {
    let path = dir.join("x.pdf");
    std::fs::write(&path, pdf).unwrap();
    let text = tool("pdftotext", &["-layout", path.to_str().unwrap(), "-"]);
    let info = tool("pdfinfo", &[path.to_str().unwrap()]);
    let pages = info.lines().find_map(|l| l.strip_prefix("Pages:")).unwrap().trim().parse().unwrap();
    (text, pages)
}

fn docx_text(dir: &Path, docx: &[u8]) -> String {
    let path = dir.join("x.docx");
    std::fs::write(&path, docx).unwrap();
    let profile = format!("-env:UserInstallation=file://{}", dir.join("lo-profile").display());
    tool(
        "soffice",
        &[&profile, "--headless", "--convert-to", "pdf", "--outdir", dir.to_str().unwrap(), path.to_str().unwrap()],
    );
    tool("pdftotext", &["-layout", dir.join("x.pdf").to_str().unwrap(), "-"])
}

/// The whole export path on a server with `config` (an SMTP sink's settings are added).
fn exports_round_trip(config: &str, s3_links: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp::smtp_sink(dir.path());
    let config = format!(
        "{config}\n[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n\n[control.files]\nlink_ttl_s = 3\n",
        sink.port
    );
    let server = start_at(dir.path(), &config, &[]);
    let addr = server.addr;
    let (_, ada, _) = signup(addr, "ada@example.com", "Ada");
    let (_, bob, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada, "Quarterly plan");
    let (code, up) = upload(addr, &ada, &doc, &data("logo.png"), "image/png");
    assert_eq!(code, 201, "{up}");
    let image = up["url"].as_str().unwrap().to_owned();

    let (mut ws, _) = Ws::hello(addr, &ada, &[], 0xada);
    ws.open(&doc);
    let every = json!([
        {"insert": "Quarterly plan"}, {"insert": "\n", "attributes": {"header": 1}},
        {"insert": "Bold", "attributes": {"bold": true}}, {"insert": " and "},
        {"insert": "linked", "attributes": {"link": "https://example.com"}}, {"insert": " text.\n"},
        {"insert": "First"}, {"insert": "\n", "attributes": {"list": "ordered"}},
        {"insert": "Nested"}, {"insert": "\n", "attributes": {"list": "bullet", "indent": 1}},
        {"insert": "Quoted"}, {"insert": "\n", "attributes": {"blockquote": true}},
        {"insert": "let x = 1;"}, {"insert": "\n", "attributes": {"code-block": true}},
        {"insert": "Привет 你好 مرحبا"}, {"insert": "\n", "attributes": {"align": "center"}},
        {"insert": {"image": image}}, {"insert": "\n"}
    ]);
    let rev = submit(&mut ws, &doc, 0, every);
    let later = submit(&mut ws, &doc, rev, json!([{"insert": "Added after the export's revision. "}]));
    assert_eq!(later, rev + 1);

    // A PDF at `rev`: the later edit is not in it.
    let a = export(addr, &ada, &doc, json!({"format": "pdf", "rev": rev}));
    assert_eq!(a.status, 202, "{}", a.raw);
    let id = a.body["export_id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["status"], "queued");
    let done = wait_done(addr, &ada, &id);
    assert_eq!(done["rev"], rev);
    let url = done["url"].as_str().unwrap().to_owned();
    if s3_links {
        assert!(url.contains("X-Amz-Signature="), "{url}");
    } else {
        assert!(url.starts_with(&format!("http://{addr}/api/exports/{id}/file?expires=")), "{url}");
    }
    let (code, headers, pdf) = get_url(&url);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&pdf));
    assert_eq!(header(&headers, "content-type"), Some("application/pdf"));
    assert!(header(&headers, "content-disposition").unwrap().contains("Quarterly plan.pdf"));
    let (text, pages) = pdf_text(dir.path(), &pdf);
    for expected in
        ["Quarterly plan", "Bold and linked text.", "First", "Nested", "Quoted", "let x = 1;", "Привет", "你好"]
    {
        assert!(text.contains(expected), "{expected:?} missing from the PDF:\n{text}");
    }
    assert!(!text.contains("Added after"), "the PDF is of revision {rev}");
    assert_eq!(pages, 1);
    let images = {
        let p = dir.path().join("x.pdf");
        tool("pdfimages", &["-list", p.to_str().unwrap()])
    };
    assert_eq!(images.lines().skip(2).count(), 1, "the uploaded image is in the PDF:\n{images}");

    // Tampered links are refused; an expired one too.
    let other = url.replace(&id, &"0".repeat(32));
    assert!(matches!(get_url(&other).0, 403 | 404), "another export's file under this signature");
    let sig_at = url.find(if s3_links { "X-Amz-Signature=" } else { "sig=" }).unwrap();
    let sig_at = url[sig_at..].find('=').unwrap() + sig_at + 1;
    let mut forged = url.clone();
    forged.replace_range(sig_at..=sig_at, if &url[sig_at..=sig_at] == "0" { "1" } else { "0" });
    assert_eq!(get_url(&forged).0, 403, "a forged signature");
    std::thread::sleep(Duration::from_secs(4));
    assert!(matches!(get_url(&url).0, 403 | 410), "an expired link");
    // A fresh status gives a fresh link.
    let again = status(addr, &ada, &id);
    assert_eq!(get_url(again.body["url"].as_str().unwrap()).0, 200);

    // Nobody else sees the export, or may ask for one of a document they cannot read.
    assert_eq!(status(addr, &bob, &id).status, 404);
    assert_eq!(export(addr, &bob, &doc, json!({"format": "pdf"})).status, 404);
    assert_eq!(export(addr, &ada, &doc, json!({"format": "odt"})).status, 400);
    let bad = export(addr, &ada, &doc, json!({"format": "pdf", "rev": 99}));
    assert_eq!(bad.status, 202, "the revision is checked by the worker: {}", bad.raw);
    let bad = bad.body["export_id"].as_str().unwrap().to_owned();

    // Ada has the document open: her session hears of the export too.
    let notice = ws.until("export_finished");
    assert_eq!((notice["export"].as_str(), notice["status"].as_str()), (Some(id.as_str()), Some("done")), "{notice}");
    assert!(notice["url"].as_str().is_some_and(|u| u.contains(&id)), "{notice}");

    // DOCX of the latest revision, opened by LibreOffice.
    let a = export(addr, &ada, &doc, json!({"format": "docx"}));
    assert_eq!(a.status, 202, "{}", a.raw);
    let docx_id = a.body["export_id"].as_str().unwrap().to_owned();
    let done = wait_done(addr, &ada, &docx_id);
    assert_eq!(done["rev"], later, "the latest revision when asked");
    let (code, _, docx) = get_url(done["url"].as_str().unwrap());
    assert_eq!(code, 200);
    let text = docx_text(dir.path(), &docx);
    for expected in ["Quarterly plan", "Added after the export", "First", "Nested", "Quoted", "let x = 1;"] {
        assert!(text.contains(expected), "{expected:?} missing from the DOCX:\n{text}");
    }

    // A revision that does not exist fails with the reason.
    let failed = eventually(30, "the bad revision's export to fail", || {
        let a = status(addr, &ada, &bad);
        (a.body["status"] == "failed").then_some(a.body)
    });
    assert!(failed["error"].as_str().unwrap().contains("revision"), "{failed}");
    assert!(failed.get("url").is_none());

    // One email per export, to the requester, with the link.
    eventually(30, "three export emails", || (smtp::mails(&sink.maildir).len() >= 3).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    let mails = smtp::mails(&sink.maildir);
    assert_eq!(mails.len(), 3, "one email per export");
    assert!(mails.iter().all(|m| m.contains("To: ada@example.com")));
    assert!(mails.iter().any(|m| m.contains("is ready") && m.contains(id.as_str())), "the PDF's email has its link");
    assert!(mails.iter().any(|m| m.contains("failed: ")), "the failed export is reported too: {mails:?}");
    drop(server);
}

#[test]
fn exports_render_at_a_revision_with_expiring_links_on_the_local_blob_store() {
    exports_round_trip("", false);
}

#[test]
fn exports_work_the_same_on_s3() {
    let s3 = s3::start();
    s3.bucket("tandem");
    let config = format!(
        "[server.storage]\nblobs = \"s3\"\n\n[server.storage.s3]\nbucket = \"tandem\"\nendpoint = \"{}\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nprefix = \"node-a\"\n",
        s3.endpoint,
        s3::ACCESS_KEY,
        s3::SECRET_KEY
    );
    exports_round_trip(&config, true);
    // The files, and the uploads, went to the bucket.
    let bucket = s3.dir.path().join("tandem/node-a");
    assert!(bucket.join("exports").read_dir().unwrap().count() >= 2);
    assert_eq!(bucket.join("uploads").read_dir().unwrap().count(), 1);
}

#[test]
fn snapshots_go_to_s3_and_a_restart_loads_from_there() {
    let s3 = s3::start();
    s3.bucket("tandem");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server.storage]\nblobs = \"s3\"\nsnapshot_every_ops = 2\n\n[server.storage.s3]\nbucket = \"tandem\"\n\
         endpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        s3.endpoint,
        s3::ACCESS_KEY,
        s3::SECRET_KEY
    );
    let server = start_at(dir.path(), &config, &[]);
    let (_, ada, _) = signup(server.addr, "ada@example.com", "Ada");
    let doc = create_doc(server.addr, &ada, "Snapshots");
    let (mut ws, _) = Ws::hello(server.addr, &ada, &[], 1);
    ws.open(&doc);
    let mut rev = 0;
    for i in 0..7 {
        rev = submit(&mut ws, &doc, rev, json!([{"insert": format!("line {i}\n")}]));
    }
    let snapshots = s3.dir.path().join("tandem/snapshots");
    eventually(10, "a snapshot in the bucket", || snapshots.exists().then_some(()));
    assert!(!server.root.join("data/blobs/snapshots").exists(), "nothing on the local disk");
    drop(ws);
    drop(server);
    let server = start_at(dir.path(), &config, &[]);
    let (mut ws, _) = Ws::hello(server.addr, &ada, &[], 2);
    let opened = ws.open(&doc);
    assert_eq!(opened["rev"], rev, "{opened}");
    let text: String =
        opened["snapshot"]["ops"].as_array().unwrap().iter().filter_map(|o| o["insert"].as_str()).collect();
    // Each insert went in at the start.
    assert_eq!(text, (0..7).rev().map(|i| format!("line {i}\n")).collect::<String>());
    // A wrong secret stops the server at start, with the reason.
    let bad = config.replace(s3::SECRET_KEY, "wrong");
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg({
            let p = dir.path().join("bad.toml");
            std::fs::write(&p, bad).unwrap();
            p
        })
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("blob store") && !err.contains("wrong"), "{err}");
}

#[test]
fn a_server_killed_mid_export_finishes_it_after_restart_with_one_file_and_one_email() {
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp::smtp_sink(dir.path());
    let config = format!("[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n", sink.port);
    let server = start_at(dir.path(), &config, &[]);
    let (_, ada, _) = signup(server.addr, "ada@example.com", "Ada");
    let doc = create_doc(server.addr, &ada, "Long");
    let (mut ws, _) = Ws::hello(server.addr, &ada, &[], 3);
    ws.open(&doc);
    // Long enough (about 150 pages) that rendering takes a while.
    let para = "A paragraph long enough to wrap over a few lines of the page, written again and again. ";
    let mut rev = 0;
    for _ in 0..30 {
        let ops: Vec<Value> = (0..20).map(|_| json!({"insert": format!("{para}{para}{para}\n")})).collect();
        rev = submit(&mut ws, &doc, rev, Value::Array(ops));
    }
    drop(ws);
    let a = export(server.addr, &ada, &doc, json!({"format": "pdf"}));
    assert_eq!(a.status, 202, "{}", a.raw);
    let id = a.body["export_id"].as_str().unwrap().to_owned();
    eventually(30, "the export to start rendering", || {
        (status(server.addr, &ada, &id).body["status"] == "rendering").then_some(())
    });
    drop(server); // SIGKILL
    let server = start_at(dir.path(), &config, &[]);
    let done = wait_done(server.addr, &ada, &id);
    assert_eq!(done["rev"], rev);
    let (code, _, pdf) = get_url(done["url"].as_str().unwrap());
    assert_eq!(code, 200);
    let (_, pages) = pdf_text(dir.path(), &pdf);
    assert!(pages > 30, "{pages} pages");
    eventually(30, "the export email", || (!smtp::mails(&sink.maildir).is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp::mails(&sink.maildir).len(), 1, "one email");
    let files: Vec<_> = std::fs::read_dir(server.root.join("data/blobs/exports")).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one file (no temporaries left): {files:?}");
}

#[test]
fn uploads_are_typed_by_content_bounded_and_served_to_readers_only() {
    let config = "[control.files]\nmax_upload_bytes = 8000\nsweep_interval_s = 1\n";
    let server = start(config, &[]);
    let addr = server.addr;
    let (_, ada, _) = signup(addr, "ada@example.com", "Ada");
    let (_, bob, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada, "Pictures");
    let png = data("logo.png");
    // Wrong types, whatever the name or the header says.
    let (s, e) = upload(addr, &ada, &doc, b"<html><script>alert(1)</script></html>", "image/png");
    assert_eq!((s, e["error"]["code"].as_str()), (415, Some("unsupported_image")));
    let (s, e) = upload(addr, &ada, &doc, b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", "image/svg+xml");
    assert_eq!(s, 415, "{e}");
    let (s, e) = upload(addr, &ada, &doc, &png, "image/jpeg");
    assert_eq!((s, e["error"]["code"].as_str()), (415, Some("type_mismatch")), "a PNG named a JPEG");
    let mut big = png.clone();
    big.resize(9000, 0);
    let (s, e) = upload(addr, &ada, &doc, &big, "image/png");
    assert_eq!((s, e["error"]["code"].as_str()), (413, Some("too_large")));
    let (s, _) = upload(addr, &ada, &doc, &[], "image/png");
    assert_eq!(s, 400);
    // Only editors upload; only readers read.
    let (s, _) = upload(addr, &bob, &doc, &png, "image/png");
    assert_eq!(s, 404, "bob cannot see the document");
    let (s, up) = upload(addr, &ada, &doc, &data("photo.jpg"), "");
    assert_eq!(s, 201, "{up}");
    assert_eq!(up["content_type"], "image/jpeg", "typed by its content");
    let url = up["url"].as_str().unwrap().to_owned();
    let get = |token: &str| http_bytes(addr, "GET", &url, &[("Authorization", &bearer(token))], &[]);
    assert_eq!(get(&bob).0, 404);
    assert_eq!(http_bytes(addr, "GET", &url, &[], &[]).0, 401);
    let share = http(
        addr,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &bearer(&ada))],
        Some(&json!({"email": "bob@example.com", "role": "viewer"})),
    );
    assert_eq!(share.status, 200, "{}", share.raw);
    let (s, headers, body) = get(&bob);
    assert_eq!(s, 200);
    assert_eq!(body, data("photo.jpg"));
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert!(header(&headers, "content-disposition").unwrap().starts_with("inline; filename="));
    let (s, _) = upload(addr, &bob, &doc, &png, "image/png");
    assert_eq!(s, 403, "viewers may not upload");
    // Deleting the document deletes its uploads.
    let stored = server.root.join("data/blobs/uploads");
    assert_eq!(stored.read_dir().unwrap().count(), 1);
    let del = http(addr, "DELETE", &format!("/api/documents/{doc}"), &[("Authorization", &bearer(&ada))], None);
    assert_eq!(del.status, 204);
    eventually(10, "the upload swept", || (stored.read_dir().unwrap().count() == 0).then_some(()));
    assert_eq!(get(&ada).0, 404);
}
