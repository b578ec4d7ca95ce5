//! Accounts, roles and sharing end to end through a real `tandem serve` (one port for REST
//! and WebSocket): roles checked on every message with live changes, deletion, forged
//! tokens, IDOR, cross-site requests, cookie flags, refresh-token reuse, brute force, and
//! token expiry with refresh over the open connection.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;

const DEFAULT_CONFIG: &str = "";

#[test]
fn roles_are_checked_on_every_message_and_changes_apply_at_once() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (ada, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let (bob, bob_t, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada_t, "Plan");
    let auth_a = bearer(&ada_t);
    let share = http(
        addr,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &auth_a)],
        Some(&json!({"email": "BOB@example.com", "role": "viewer"})),
    );
    assert_eq!((share.status, share.body["status"].as_str()), (200, Some("granted")), "{}", share.raw);

    let (mut a, welcome) = Ws::hello(addr, &ada_t, &[], 1);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user"], ada.as_str());
    assert!(welcome["expires_at"].as_u64().unwrap() > 0);
    let opened = a.open(&doc);
    assert_eq!((opened["type"].as_str(), opened["role"].as_str()), (Some("opened"), Some("owner")), "{opened}");

    let (mut b, _) = Ws::hello(addr, &bob_t, &[], 2);
    let opened = b.open(&doc);
    assert_eq!((opened["type"].as_str(), opened["role"].as_str()), (Some("opened"), Some("viewer")), "{opened}");
    a.until("joined");

    // The viewer sees the others' presence...
    a.send(json!({"type": "presence", "doc": doc, "rev": 0, "ranges": [{"anchor": 0, "head": 0}]}));
    let p = b.until("presence");
    assert_eq!(p["peers"][0]["client"], "0000000000000001");
    // ...and reads their edits, but cannot edit.
    let seq = b.submit(&doc, 0, "nope");
    let refused = b.recv();
    assert_eq!((refused["code"].as_str(), refused["client_seq"].as_u64()), (Some("read_only"), Some(seq)), "{refused}");
    a.submit(&doc, 0, "hi");
    assert_eq!(a.until("ack")["rev"], 1);
    let op = b.until("op");
    assert_eq!(op["delta"], json!({"ops": [{"insert": "hi"}]}));

    // Upgraded mid-session: the very next submit is accepted.
    let up = http(
        addr,
        "PUT",
        &format!("/api/documents/{doc}/permissions/{bob}"),
        &[("Authorization", &auth_a)],
        Some(&json!({"role": "editor"})),
    );
    assert_eq!(up.status, 200, "{}", up.raw);
    let role = b.recv();
    assert_eq!((role["type"].as_str(), role["role"].as_str()), (Some("role"), Some("editor")), "{role}");
    b.submit(&doc, 1, "B");
    assert_eq!(b.until("ack")["rev"], 2);

    // Revoked mid-session: told within one message, and the next submit is refused.
    let down =
        http(addr, "DELETE", &format!("/api/documents/{doc}/permissions/{bob}"), &[("Authorization", &auth_a)], None);
    assert_eq!(down.status, 204, "{}", down.raw);
    let revoked = b.recv();
    assert_eq!(
        (revoked["type"].as_str(), revoked["code"].as_str()),
        (Some("error"), Some("access_revoked")),
        "{revoked}"
    );
    let seq = b.submit(&doc, 2, "late");
    let refused = b.recv();
    assert_eq!((refused["code"].as_str(), refused["client_seq"].as_u64()), (Some("not_open"), Some(seq)), "{refused}");
    let again = b.open(&doc);
    assert_eq!(again["code"], "forbidden", "{again}");
    // Over REST too: 404, no content.
    let get = http(addr, "GET", &format!("/api/documents/{doc}"), &[("Authorization", &bearer(&bob_t))], None);
    assert_eq!((get.status, get.body["error"]["code"].as_str()), (404, Some("not_found")));
    assert!(!get.raw.contains("Plan"));

    // Deleted: every session on it is closed, and it never opens again.
    let del = http(addr, "DELETE", &format!("/api/documents/{doc}"), &[("Authorization", &auth_a)], None);
    assert_eq!(del.status, 204, "{}", del.raw);
    let gone = a.until("error");
    assert_eq!(gone["code"], "document_deleted", "{gone}");
    let reopen = a.open(&doc);
    assert_eq!(reopen["code"], "forbidden", "{reopen}");
    assert_eq!(http(addr, "GET", &format!("/api/documents/{doc}"), &[("Authorization", &auth_a)], None).status, 404);
}

#[test]
fn another_users_document_is_not_found_over_rest_and_websocket() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (_, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let (bob, bob_t, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada_t, "Secret plans");
    let (mut a, _) = Ws::hello(addr, &ada_t, &[], 1);
    a.open(&doc);
    a.submit(&doc, 0, "the secret");
    a.until("ack");
    let auth_b = bearer(&bob_t);
    for (method, path, body) in [
        ("GET", format!("/api/documents/{doc}"), None),
        ("PATCH", format!("/api/documents/{doc}"), Some(json!({"title": "mine"}))),
        ("DELETE", format!("/api/documents/{doc}"), None),
        ("GET", format!("/api/documents/{doc}/permissions"), None),
        ("POST", format!("/api/documents/{doc}/share"), Some(json!({"email": "bob@example.com", "role": "editor"}))),
        ("PUT", format!("/api/documents/{doc}/permissions/{bob}"), Some(json!({"role": "editor"}))),
        ("POST", format!("/api/documents/{doc}/transfer"), Some(json!({"user": bob}))),
    ] {
        let a = http(addr, method, &path, &[("Authorization", &auth_b)], body.as_ref());
        assert_eq!(a.status, 404, "{method} {path}: {}", a.raw);
        assert!(!a.raw.contains("Secret") && !a.raw.contains("secret"), "{}", a.raw);
    }
    let list = http(addr, "GET", "/api/documents", &[("Authorization", &auth_b)], None);
    assert_eq!(list.body["documents"], json!([]));
    let (mut b, _) = Ws::hello(addr, &bob_t, &[], 2);
    let opened = b.open(&doc);
    assert_eq!((opened["type"].as_str(), opened["code"].as_str()), (Some("error"), Some("forbidden")), "{opened}");
    for ask in [json!({"type": "get_revision", "doc": doc, "rev": 1}), json!({"type": "list_revisions", "doc": doc})] {
        b.send(ask);
        let m = b.recv();
        assert_eq!(m["code"], "not_open", "{m}");
        assert!(!m.to_string().contains("secret"));
    }
    // A document id that does not exist reads the same as one without access.
    assert_eq!(b.open("no-such-document")["code"], "forbidden");
}

fn keys(server: &Server) -> Vec<u8> {
    let path = server.root.join("data/keys.json");
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    URL_SAFE_NO_PAD.decode(file["keys"][0]["secret"].as_str().unwrap()).unwrap()
}

fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use jsonwebtoken::crypto::sign as raw_sign;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let msg = format!("{h}.{c}");
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    let sig = raw_sign(msg.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{msg}.{sig}")
}

#[test]
fn forged_tokens_are_refused_over_rest_and_websocket() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (ada, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let secret = keys(&server);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": "tandem", "aud": "tandem", "sub": ada, "name": "Ada", "exp": now + 600, "iat": now, "nbf": now, "jti": "j"});
        f(&mut c);
        c
    };
    let hs = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    // The genuine article, as a control.
    let good = sign(&hs, &claims(&|_| {}), &secret);
    assert_eq!(http(addr, "GET", "/api/me", &[("Authorization", &bearer(&good))], None).status, 200);
    let tampered = {
        let mut parts: Vec<String> = ada_t.split('.').map(str::to_owned).collect();
        let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("someone-else");
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        parts.join(".")
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "k1"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(&|_| {}).to_string())
    );
    let forged = [
        ("alg none", none),
        ("wrong key", sign(&hs, &claims(&|_| {}), &[7u8; 32])),
        (
            "EdDSA header, HMAC signature",
            sign(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}), &claims(&|_| {}), &secret),
        ),
        ("expired", sign(&hs, &claims(&|c| c["exp"] = json!(now - 10)), &secret)),
        ("not yet valid", sign(&hs, &claims(&|c| c["nbf"] = json!(now + 300)), &secret)),
        ("wrong audience", sign(&hs, &claims(&|c| c["aud"] = json!("other")), &secret)),
        ("wrong issuer", sign(&hs, &claims(&|c| c["iss"] = json!("evil")), &secret)),
        ("tampered payload", tampered),
        ("unknown kid", sign(&json!({"alg": "HS256", "typ": "JWT", "kid": "k9"}), &claims(&|_| {}), &secret)),
        ("no kid", sign(&json!({"alg": "HS256", "typ": "JWT"}), &claims(&|_| {}), &secret)),
        ("garbage", "not.a.token".to_owned()),
        ("empty", String::new()),
    ];
    for (what, token) in &forged {
        let a = http(addr, "GET", "/api/me", &[("Authorization", &bearer(token))], None);
        assert_eq!(a.status, 401, "{what}: {}", a.raw);
        let (mut ws, first) = Ws::hello(addr, token, &[], 5);
        assert_eq!(
            (first["type"].as_str(), first["code"].as_str()),
            (Some("error"), Some("unauthorized")),
            "{what}: {first}"
        );
        assert_eq!(ws.recv()["closed"], 4003, "{what}");
    }
}

#[test]
fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (_, _, r1) = signup(addr, "ada@example.com", "Ada");
    let a = http(addr, "POST", "/api/auth/refresh", &[], Some(&json!({"refresh_token": r1})));
    assert_eq!(a.status, 200, "{}", a.raw);
    let r2 = a.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let access = a.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(http(addr, "GET", "/api/me", &[("Authorization", &bearer(&access))], None).status, 200);
    // r1 again: stolen, or a race. The family is revoked: r2 no longer works either.
    let reused = http(addr, "POST", "/api/auth/refresh", &[], Some(&json!({"refresh_token": r1})));
    assert_eq!((reused.status, reused.body["error"]["code"].as_str()), (401, Some("refresh_reused")), "{}", reused.raw);
    let after = http(addr, "POST", "/api/auth/refresh", &[], Some(&json!({"refresh_token": r2})));
    assert_eq!((after.status, after.body["error"]["code"].as_str()), (401, Some("invalid_refresh")));
    // Log out revokes; the token then refreshes nothing.
    let login = http(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": "ada@example.com", "password": "pw-long-enough"})),
    );
    let r3 = login.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(http(addr, "POST", "/api/auth/logout", &[], Some(&json!({"refresh_token": r3}))).status, 204);
    assert_eq!(http(addr, "POST", "/api/auth/refresh", &[], Some(&json!({"refresh_token": r3}))).status, 401);
}

#[test]
fn browsers_get_httponly_cookies_and_other_sites_are_refused() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let me = format!("http://{addr}");
    let a = http(
        addr,
        "POST",
        "/api/auth/signup",
        &[("Origin", &me)],
        Some(&json!({"email": "ada@example.com", "password": "pw-long-enough", "name": "Ada"})),
    );
    assert_eq!(a.status, 201, "{}", a.raw);
    assert!(a.body.get("refresh_token").is_none(), "a browser's refresh token stays in its cookie: {}", a.raw);
    let cookies = a.header_all("set-cookie");
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let access_cookie = cookies.iter().find(|c| c.starts_with("tandem_access=")).unwrap();
    let refresh_cookie = cookies.iter().find(|c| c.starts_with("tandem_refresh=")).unwrap();
    for c in [access_cookie, refresh_cookie] {
        assert!(c.contains("; HttpOnly") && c.contains("; SameSite=Lax"), "{c}");
        assert!(!c.contains("Secure"), "plain HTTP, not configured: {c}");
    }
    assert!(access_cookie.contains("Path=/;") && access_cookie.contains("Max-Age=3600"), "{access_cookie}");
    assert!(refresh_cookie.contains("Path=/api/auth;"), "{refresh_cookie}");
    let token = access_cookie.split(';').next().unwrap().trim_start_matches("tandem_access=");
    let cookie = format!("tandem_access={token}");

    // Signed in by cookie: reads work; writes need this server's Origin.
    assert_eq!(http(addr, "GET", "/api/me", &[("Cookie", &cookie)], None).status, 200);
    let body = json!({"title": "t"});
    let cross =
        http(addr, "POST", "/api/documents", &[("Cookie", &cookie), ("Origin", "https://evil.example")], Some(&body));
    assert_eq!((cross.status, cross.body["error"]["code"].as_str()), (403, Some("bad_origin")));
    let bare = http(addr, "POST", "/api/documents", &[("Cookie", &cookie)], Some(&body));
    assert_eq!((bare.status, bare.body["error"]["code"].as_str()), (403, Some("bad_origin")));
    let same = http(addr, "POST", "/api/documents", &[("Cookie", &cookie), ("Origin", &me)], Some(&body));
    assert_eq!(same.status, 201, "{}", same.raw);
    let doc = same.body["id"].as_str().unwrap().to_owned();
    // Cross-site login attempts too.
    let login = http(
        addr,
        "POST",
        "/api/auth/login",
        &[("Origin", "https://evil.example")],
        Some(&json!({"email": "ada@example.com", "password": "pw-long-enough"})),
    );
    assert_eq!(login.status, 403);

    // The WebSocket takes the cookie from this server's page, not from another site's.
    let (mut ok, first) = Ws::hello(addr, "", &[("Cookie", &cookie), ("Origin", &me)], 1);
    assert_eq!(first["type"], "welcome", "{first}");
    assert_eq!(ok.open(&doc)["type"], "opened");
    let (mut evil, first) = Ws::hello(addr, "", &[("Cookie", &cookie), ("Origin", "https://evil.example")], 2);
    assert_eq!(first["code"], "unauthorized", "{first}");
    assert_eq!(evil.recv()["closed"], 4003);
}

#[test]
fn a_login_brute_force_is_limited_and_passwords_never_show() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let password = "pw-long-enough";
    signup(addr, "ada@example.com", "Ada");
    let mut statuses = Vec::new();
    for i in 0..12 {
        let a = http(
            addr,
            "POST",
            "/api/auth/login",
            &[],
            Some(&json!({"email": "ada@example.com", "password": format!("guess-{i}")})),
        );
        statuses.push(a.status);
        if a.status == 429 {
            let retry: u64 = a.header_all("retry-after")[0].parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            assert_eq!(a.body["error"]["code"], "rate_limited");
        } else {
            assert_eq!((a.status, a.body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
    // Unknown addresses get the same answer as wrong passwords.
    let unknown = http(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": "nobody@example.com", "password": "whatever1"})),
    );
    assert_eq!((unknown.status, unknown.body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    // Bad input: clear 4xx answers, never 500.
    for (body, code) in [
        (json!({"email": "x", "password": password, "name": "n"}), "invalid_email"),
        (json!({"email": "c@example.com", "password": "short", "name": "n"}), "weak_password"),
        (json!({"email": "c@example.com", "password": password}), "invalid_json"),
        (json!({"email": "c@example.com", "password": password, "name": "n", "admin": true}), "invalid_json"),
        (json!({"email": "ada@example.com", "password": password, "name": "again"}), "email_taken"),
    ] {
        let a = http(addr, "POST", "/api/auth/signup", &[], Some(&body));
        assert_eq!(a.body["error"]["code"], code, "{body}: {}", a.raw);
        assert!((400..500).contains(&a.status));
    }
    let huge = json!({"email": "h@example.com", "password": "p".repeat(100_000), "name": "n"});
    assert_eq!(http(addr, "POST", "/api/auth/signup", &[], Some(&huge)).status, 413);
    // The password is in no answer and in no log line (the server logs at debug here).
    let me = http(
        addr,
        "POST",
        "/api/auth/login",
        &[("X-Forwarded-For", "1.2.3.4")],
        Some(&json!({"email": "ADA@example.com ", "password": password})),
    );
    assert!(me.status == 200 || me.status == 429, "{}", me.raw);
    assert!(!me.raw.contains(password));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!server.log.lock().unwrap().contains(password), "a password reached the log");
}

#[test]
fn an_expiring_session_is_warned_refreshes_in_place_or_is_closed() {
    let config = "[server]\ntoken_warning_s = 2\n[control]\naccess_token_ttl_s = 3\n";
    let server = start(config, &[]);
    let addr = server.addr;
    let (_, t1, _) = signup(addr, "ada@example.com", "Ada");
    let (mut kept, welcome) = Ws::hello(addr, &t1, &[], 1);
    let expires = welcome["expires_at"].as_u64().unwrap();
    let (mut dropped, _) = Ws::hello(addr, &t1, &[], 2);
    let warn = kept.until("token_expiring");
    assert_eq!(warn["expires_at"].as_u64(), Some(expires));
    // A fresh token over the open connection: the session goes on.
    std::thread::sleep(Duration::from_millis(1100));
    let login = http(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": "ada@example.com", "password": "pw-long-enough"})),
    );
    let t2 = login.body["access_token"].as_str().unwrap();
    kept.send(json!({"type": "refresh", "token": t2}));
    let refreshed = kept.until("refreshed");
    assert!(refreshed["expires_at"].as_u64().unwrap() > expires, "{refreshed}");
    // Another user's token is refused (and closes the connection).
    let (_, other, _) = signup(addr, "bob@example.com", "Bob");
    let (mut swap, _) = Ws::hello(addr, t2, &[], 3);
    swap.send(json!({"type": "refresh", "token": other}));
    // Its own expiry warning may come first on a slow machine (tokens live 3 s here).
    let refused = loop {
        let m = swap.recv();
        if m["type"] != "token_expiring" {
            break m;
        }
    };
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert_eq!(swap.recv()["closed"], 4003);
    // Without a refresh: closed with 4010 at expiry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = dropped.recv();
        if let Some(code) = m.get("closed") {
            assert_eq!(code, 4010, "{m}");
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // The refreshed one is still open: it answers.
    kept.send(json!({"type": "open", "doc": "nope"}));
    assert_eq!(kept.until("error")["code"], "forbidden");
}

#[test]
fn a_role_through_the_link_shares_nothing() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (_, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let (bob, bob_t, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada_t, "Open plan");
    let auth_a = bearer(&ada_t);
    let on = json!({"link_sharing": "editor", "editors_can_share": true});
    assert_eq!(
        http(addr, "PATCH", &format!("/api/documents/{doc}"), &[("Authorization", &auth_a)], Some(&on)).status,
        200
    );
    let auth_b = bearer(&bob_t);
    let seen = http(addr, "GET", &format!("/api/documents/{doc}"), &[("Authorization", &auth_b)], None);
    assert_eq!((seen.status, seen.body["role"].as_str()), (200, Some("editor")), "{}", seen.raw);
    // Editing through the link: yes. Making that access permanent, or managing others: no.
    for (method, path, body) in [
        ("POST", format!("/api/documents/{doc}/share"), Some(json!({"email": "bob@example.com", "role": "editor"}))),
        ("PUT", format!("/api/documents/{doc}/permissions/{bob}"), Some(json!({"role": "editor"}))),
        ("GET", format!("/api/documents/{doc}/permissions"), None),
        ("PATCH", format!("/api/documents/{doc}"), Some(json!({"link_sharing": "off"}))),
        ("DELETE", format!("/api/documents/{doc}"), None),
    ] {
        let a = http(addr, method, &path, &[("Authorization", &auth_b)], body.as_ref());
        assert_eq!(a.status, 403, "{method} {path}: {}", a.raw);
    }
    let (mut b, _) = Ws::hello(addr, &bob_t, &[], 2);
    assert_eq!(b.open(&doc)["role"], "editor");
    b.submit(&doc, 0, "via link");
    assert_eq!(b.until("ack")["rev"], 1);
}

#[test]
fn a_share_emails_the_address_a_link_and_metrics_count_it() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (_, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let doc = create_doc(addr, &ada_t, "Plan <B>");
    let share = http(
        addr,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &bearer(&ada_t))],
        Some(&json!({"email": "newcomer@example.com", "role": "editor"})),
    );
    assert_eq!(share.status, 200, "{}", share.raw);
    assert!(server.log.lock().unwrap().contains("no SMTP server configured"), "the start-up log says where emails go");
    // No SMTP server configured: the email is a file in the data directory.
    let mail_dir = server.root.join("data/mail");
    let started = Instant::now();
    let mail = loop {
        let found = std::fs::read_dir(&mail_dir)
            .ok()
            .and_then(|d| d.flatten().find(|e| e.path().extension().is_some_and(|x| x == "eml")));
        if let Some(e) = found {
            break std::fs::read_to_string(e.path()).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no email within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(mail.contains("To: newcomer@example.com"), "{mail}");
    assert!(mail.contains(&format!("http://{addr}/d/{doc}")), "{mail}");
    assert!(mail.contains("Plan &lt;B&gt;"), "{mail}");
    // The worker counts the event once the email is written: the file can show first.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(addr, "GET", "/metrics", &[], None).raw;
        if metrics.contains("tandem_worker_processed_total{worker=\"notifications\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metrics.contains("tandem_worker_processed_total{worker=\"notifications\"} 1"), "{metrics}");
    assert!(metrics.contains("tandem_outbox_relayed_total"), "{metrics}");
}

#[test]
fn every_acknowledged_edit_reaches_the_change_feed_even_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_at(dir.path(), DEFAULT_CONFIG, &[]);
    let (_, token, _) = signup(server.addr, "ada@example.com", "Ada");
    let doc = create_doc(server.addr, &token, "Feed");
    let (mut ws, _) = Ws::hello(server.addr, &token, &[], 1);
    assert_eq!(ws.open(&doc)["type"], "opened");
    for rev in 0..20 {
        ws.submit(&doc, rev, "x");
        assert_eq!(ws.until("ack")["rev"], rev + 1);
    }
    // Killed right after the acks: feed batches still queued in memory are lost.
    drop(ws);
    drop(server);
    let server = start_at(dir.path(), DEFAULT_CONFIG, &[]);
    let (mut ws, _) = Ws::hello(server.addr, &token, &[], 2);
    assert_eq!(ws.open(&doc)["type"], "opened", "loading it catches the feed up from the op log");
    ws.submit(&doc, 20, "y");
    assert_eq!(ws.until("ack")["rev"], 21);

    // Read document-edits as a consumer group of our own, beside the running server.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let revs = runtime.block_on(async {
        let bus = tandem_events::local::LocalBus::open(&dir.path().join("data/events.db"), 100_000).await.unwrap();
        let mut consumer = bus.subscribe("test", tandem_events::Topic::DocumentEdits).await.unwrap();
        let mut revs = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while revs.len() < 21 {
            assert!(Instant::now() < deadline, "the feed has revisions {revs:?}, not 1..=21");
            let Ok(batch) = tokio::time::timeout(Duration::from_millis(200), consumer.next_batch(100)).await else {
                continue;
            };
            for d in batch.unwrap() {
                if let tandem_events::Event::Edited { doc: d_doc, from_rev, to_rev, changes, .. } =
                    d.event.unwrap().event
                {
                    assert_eq!(d_doc, doc);
                    assert_eq!(changes.map(|c| c.len() as u64), Some(to_rev - from_rev + 1), "the deltas ride along");
                    revs.extend(from_rev..=to_rev);
                }
            }
        }
        revs
    });
    assert_eq!(revs.into_iter().collect::<Vec<_>>(), (1..=21).collect::<Vec<_>>());
}

#[test]
fn edits_are_searchable_by_readers_only_and_activity_counts_them() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (ada, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let (_, bob_t, _) = signup(addr, "bob@example.com", "Bob");
    let doc = create_doc(addr, &ada_t, "Quarterly plan");
    let (mut ws, _) = Ws::hello(addr, &ada_t, &[], 7);
    assert_eq!(ws.open(&doc)["type"], "opened");
    let words = ["zebra ", "crossing ", "naïve ", "café "];
    for (rev, w) in words.iter().enumerate() {
        ws.submit(&doc, rev as u64, w);
        assert_eq!(ws.until("ack")["rev"], rev as u64 + 1);
    }
    // Searchable by its owner within moments, with the words marked in the snippet.
    let hit = eventually(10, "the owner finds the new words", || {
        let a = search(addr, &ada_t, "zebra%20cafe");
        assert_eq!(a.status, 200, "{}", a.raw);
        a.body["results"].as_array().unwrap().first().cloned()
    });
    assert_eq!(hit["id"], doc.as_str());
    assert_eq!(hit["title"], "Quarterly plan");
    let snippet = hit["snippet"].as_str().unwrap();
    let marked: Vec<String> = hit["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            snippet
                .chars()
                .skip(r[0].as_u64().unwrap() as usize)
                .take((r[1].as_u64().unwrap() - r[0].as_u64().unwrap()) as usize)
                .collect()
        })
        .collect();
    assert!(marked.contains(&"zebra".to_owned()) && marked.contains(&"café".to_owned()), "{hit}");
    eventually(10, "titles are searched", || {
        (hit_ids(&search(addr, &ada_t, "quarterly")) == vec![doc.clone()]).then_some(())
    });
    // Someone without access never finds it; sharing shows it and revoking hides it at once.
    assert!(hit_ids(&search(addr, &bob_t, "zebra")).is_empty());
    let bob_id = {
        let a = http(addr, "GET", "/api/me", &[("Authorization", &bearer(&bob_t))], None);
        a.body["user"]["id"].as_str().or(a.body["id"].as_str()).unwrap().to_owned()
    };
    let share = http(
        addr,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &bearer(&ada_t))],
        Some(&json!({"email": "bob@example.com", "role": "viewer"})),
    );
    assert_eq!(share.status, 200, "{}", share.raw);
    assert_eq!(hit_ids(&search(addr, &bob_t, "zebra")), vec![doc.clone()]);
    let revoke = http(
        addr,
        "DELETE",
        &format!("/api/documents/{doc}/permissions/{bob_id}"),
        &[("Authorization", &bearer(&ada_t))],
        None,
    );
    assert!(revoke.status < 300, "{}", revoke.raw);
    assert!(hit_ids(&search(addr, &bob_t, "zebra")).is_empty(), "a revoked reader's search never shows it");
    // Bad queries are clear errors.
    assert_eq!(search(addr, &ada_t, "").status, 400);
    assert_eq!(search(addr, &ada_t, &"a".repeat(300)).status, 400);
    assert_eq!(http(addr, "GET", "/api/search?q=zebra", &[], None).status, 401);

    // Activity: the four edits, their characters, one editor, the open, the share.
    let day = eventually(10, "activity counts the edits", || {
        let a = activity(addr, &ada_t, &doc);
        assert_eq!(a.status, 200, "{}", a.raw);
        let day = a.body["days"][0].clone();
        (day["edits"] == 4 && day["opens"] == 1 && day["shares"] == 1).then_some(day)
    });
    let chars: usize = words.iter().map(|w| w.chars().count()).sum();
    assert_eq!(day["chars_added"], chars as u64, "{day}");
    assert_eq!(day["chars_removed"], 0);
    assert_eq!(day["active_editors"], 1);
    assert_eq!(day["users"][0]["user"], ada.as_str(), "edits are counted for the user behind the client id");
    assert_eq!(day["users"][0]["name"], "Ada");
    assert_eq!(activity(addr, &bob_t, &doc).status, 404, "no access: not found");
    let metrics = http(addr, "GET", "/metrics", &[], None).raw;
    assert!(metrics.contains("tandem_analytics_edits_total 4"), "{metrics}");
    assert!(metrics.contains("tandem_worker_processed_total{worker=\"search\"}"), "{metrics}");

    // A deleted document leaves everyone's results at once.
    let del = http(addr, "DELETE", &format!("/api/documents/{doc}"), &[("Authorization", &bearer(&ada_t))], None);
    assert!(del.status < 300, "{}", del.raw);
    assert!(hit_ids(&search(addr, &ada_t, "zebra")).is_empty());
}

#[test]
fn after_a_kill_search_and_activity_converge_and_reindex_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_at(dir.path(), DEFAULT_CONFIG, &[]);
    let (_, token, _) = signup(server.addr, "ada@example.com", "Ada");
    let doc = create_doc(server.addr, &token, "Crash");
    let (mut ws, _) = Ws::hello(server.addr, &token, &[], 3);
    assert_eq!(ws.open(&doc)["type"], "opened");
    for rev in 0..30u64 {
        ws.submit(&doc, rev, &format!("w{rev} "));
        assert_eq!(ws.until("ack")["rev"], rev + 1);
    }
    // kill -9 while the workers are at it.
    drop(ws);
    drop(server);
    let server = start_at(dir.path(), DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (mut ws, _) = Ws::hello(addr, &token, &[], 4);
    assert_eq!(ws.open(&doc)["type"], "opened");
    ws.submit(&doc, 30, "w30 ");
    assert_eq!(ws.until("ack")["rev"], 31);
    eventually(15, "every word is searchable after the restart", || {
        (hit_ids(&search(addr, &token, "w0%20w29%20w30")) == vec![doc.clone()]).then_some(())
    });
    eventually(15, "activity counts each edit once", || {
        let day = activity(addr, &token, &doc).body["days"][0].clone();
        assert!(day["edits"].as_u64().unwrap_or(0) <= 31, "counted twice: {day}");
        (day["edits"] == 31).then_some(())
    });
    drop(ws);
    // `tandem reindex` refuses while the server runs, then rebuilds a lost index.
    let running = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["reindex", "--cores", "2", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!running.status.success());
    assert!(String::from_utf8_lossy(&running.stderr).contains("in use by another tandem server"));
    drop(server);
    std::fs::remove_dir_all(dir.path().join("data/search")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["reindex", "--cores", "2", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reindexed 1 documents"), "{:?}", out);
    let server = start_at(dir.path(), DEFAULT_CONFIG, &[]);
    let hits = search(server.addr, &token, "w0%20w30");
    assert_eq!(hit_ids(&hits), vec![doc.clone()], "{}", hits.raw);
}

#[test]
fn a_worker_process_needs_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["worker", "--topics", "search,analytics", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend = \"kafka\""), "{err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_tandem")).args(["worker", "--topics", "mail"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"), "{bad:?}");
}

#[path = "../../workers/tests/support/smtp.rs"]
mod smtp;

#[test]
fn killed_while_relaying_and_mailing_every_share_is_emailed_once_by_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp::smtp_sink(dir.path());
    let config = format!("[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n", sink.port);
    let server = start_at(dir.path(), &config, &[]);
    let (_, token, _) = signup(server.addr, "ada@example.com", "Ada");
    let doc = create_doc(server.addr, &token, "Shared");
    let share = |addr, i: usize| {
        let body = json!({"email": format!("p{i}@example.com"), "role": "viewer"});
        let a = http(
            addr,
            "POST",
            &format!("/api/documents/{doc}/share"),
            &[("Authorization", &bearer(&token))],
            Some(&body),
        );
        assert_eq!(a.status, 200, "{}", a.raw);
    };
    // kill -9 right after the last share is answered: some rows are not relayed yet, some
    // emails are being sent.
    for i in 0..30 {
        share(server.addr, i);
    }
    drop(server);
    let server = start_at(dir.path(), &config, &[]);
    for i in 30..40 {
        share(server.addr, i);
    }
    eventually(30, "forty emails", || (smtp::mails(&sink.maildir).len() >= 40).then_some(()));
    // Anything sent twice would show up by now.
    std::thread::sleep(Duration::from_secs(2));
    let mails = smtp::mails(&sink.maildir);
    let header = |name: &str| -> Vec<String> {
        let mut v: Vec<String> =
            mails.iter().filter_map(|m| m.lines().find(|l| l.starts_with(name)).map(str::to_owned)).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(header("To: ").len(), 40, "every share is emailed");
    // Exactly once, except the emails in flight at the kill (up to PARALLEL), which the SMTP
    // server may have accepted in the instant before it, their "sent" marks lost: they go
    // again with the same Message-ID, which receiving systems drop (ARCHITECTURE.md, "Events:
    // exactly-once effects").
    assert_eq!(header("Message-ID: ").len(), 40, "one Message-ID per share");
    let parallel = tandem_workers::notify::PARALLEL;
    assert!(mails.len() <= 40 + parallel, "only the emails in flight at the kill may go twice: {}", mails.len());
    drop(server);
}

#[test]
fn comments_over_rest_and_websocket_with_roles_and_a_mention_email() {
    let server = start(DEFAULT_CONFIG, &[]);
    let addr = server.addr;
    let (ada, ada_t, _) = signup(addr, "ada@example.com", "Ada");
    let (bob, bob_t, _) = signup(addr, "bob@example.com", "Bob");
    let (_, cy_t, _) = signup(addr, "cy@example.com", "Cy");
    let doc = create_doc(addr, &ada_t, "Plan");
    let (auth_a, auth_b, auth_c) = (bearer(&ada_t), bearer(&bob_t), bearer(&cy_t));
    for (email, role) in [("bob@example.com", "commenter"), ("cy@example.com", "viewer")] {
        let share = http(
            addr,
            "POST",
            &format!("/api/documents/{doc}/share"),
            &[("Authorization", &auth_a)],
            Some(&json!({"email": email, "role": role})),
        );
        assert_eq!(share.status, 200, "{}", share.raw);
    }
    let (mut a, _) = Ws::hello(addr, &ada_t, &[], 1);
    a.open(&doc);
    a.submit(&doc, 0, "hello world");
    assert_eq!(a.until("ack")["rev"], 1);
    let comments = format!("/api/documents/{doc}/comments");
    let call = |method: &str, path: &str, auth: &str, body: Option<Value>| {
        http(addr, method, path, &[("Authorization", auth)], body.as_ref())
    };

    // Bob (a commenter) comments over REST, mentioning Ada; Ada's editor sees it at once.
    let made = call(
        "POST",
        &comments,
        &auth_b,
        Some(json!({"start": 6, "end": 11, "text": "which world?", "mentions": [ada]})),
    );
    assert_eq!(made.status, 201, "{}", made.raw);
    let thread = made.body["thread"]["id"].as_u64().unwrap();
    assert_eq!(made.body["thread"]["messages"][0]["name"], "Bob");
    let noted = a.until("noted");
    assert_eq!((noted["rev"].as_u64(), noted["note"]["user"].as_str()), (Some(thread), Some(bob.as_str())));
    // Ada types before it over the WebSocket; the anchor moves with the text.
    a.submit(&doc, 2, ">> ");
    a.until("ack");
    let listed = call("GET", &comments, &auth_c, None);
    assert_eq!(listed.status, 200, "{}", listed.raw);
    let t = &listed.body["threads"][0];
    assert_eq!((t["start"].as_u64(), t["end"].as_u64()), (Some(9), Some(14)), "{t}");
    // Cy (a viewer) reads but may not comment; nobody edits another's message.
    let refused = call("POST", &comments, &auth_c, Some(json!({"start": 0, "end": 1, "text": "hi"})));
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (403, Some("read_only")), "{}", refused.raw);
    let message = format!("{comments}/{thread}/messages/{thread}");
    let edit = call("PATCH", &message, &auth_a, Some(json!({"text": "mine"})));
    assert_eq!((edit.status, edit.body["error"]["code"].as_str()), (403, Some("forbidden")), "{}", edit.raw);
    let edit = call("PATCH", &message, &auth_b, Some(json!({"text": "which world, really?"})));
    assert_eq!(edit.status, 200, "{}", edit.raw);
    assert!(edit.body["thread"]["messages"][0]["edited_ms"].as_u64().is_some());
    let reply = call("POST", &format!("{comments}/{thread}/replies"), &auth_a, Some(json!({"text": "this one"})));
    assert_eq!(reply.status, 201, "{}", reply.raw);
    assert_eq!(call("POST", &format!("{comments}/{thread}/resolve"), &auth_b, None).status, 200);
    let again = call("POST", &format!("{comments}/{thread}/resolve"), &auth_b, None);
    assert_eq!((again.status, again.body["error"]["code"].as_str()), (400, Some("invalid_note")), "{}", again.raw);
    // Bad input: a clear JSON error.
    for (method, path, body, status) in [
        ("POST", format!("{comments}/x/replies"), Some(json!({"text": "hi"})), 400),
        ("POST", format!("{comments}/999/replies"), Some(json!({"text": "hi"})), 404),
        ("POST", comments.clone(), Some(json!({"start": 3, "end": 3, "text": "hi"})), 400),
        ("POST", comments.clone(), Some(json!({"start": 0, "end": 1})), 400),
    ] {
        let r = call(method, &path, &auth_a, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.raw);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.raw);
    }
    // Named versions: editors and owners only.
    let version = format!("/api/documents/{doc}/versions/1");
    assert_eq!(call("PUT", &version, &auth_b, Some(json!({"name": "First words"}))).status, 403);
    let named = call("PUT", &version, &auth_a, Some(json!({"name": "First words"})));
    assert_eq!((named.status, named.body["version"]["name"].as_str()), (200, Some("First words")), "{}", named.raw);
    let versions = call("GET", &format!("/api/documents/{doc}/versions"), &auth_c, None);
    assert_eq!(versions.body["versions"][0]["rev"], 1, "{}", versions.raw);
    assert_eq!(
        call("PUT", &format!("/api/documents/{doc}/versions/99"), &auth_a, Some(json!({"name": "x"}))).status,
        404
    );
    // The owner may delete Bob's thread; a stranger cannot see any of it.
    assert_eq!(call("DELETE", &format!("{comments}/{thread}"), &auth_a, None).status, 204);
    assert_eq!(call("GET", &comments, &auth_c, None).body["threads"], json!([]));
    let (_, eve_t, _) = signup(addr, "eve@example.com", "Eve");
    assert_eq!(call("GET", &comments, &bearer(&eve_t), None).status, 404);

    // The mention reached Ada by email, with a link to the thread.
    let mail_dir = server.root.join("data/mail");
    let started = Instant::now();
    let mail = loop {
        let found = std::fs::read_dir(&mail_dir).ok().and_then(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .find(|m| m.contains("mentioned you"))
        });
        if let Some(m) = found {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no mention email within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(mail.contains(&format!("/d/{doc}#thread-{thread}")), "{mail}");
}
