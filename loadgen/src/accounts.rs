//! Signing the load generator's users in, for servers that check accounts: before the run,
//! a pool of accounts signs up over the REST API, one of them creates every document the
//! scenario names and turns link sharing on for it (editor), and each simulated user says
//! `hello` with one of the pool's access tokens. Documents then get server-made ids; the
//! scenario carries the name-to-id map and the tokens to the worker processes.
//!
//! Setup talks HTTP/1.1 (over TLS for `wss://` targets) with `Connection: close` (a few hundred requests, none timed).
//! The server must allow that many writes from one user (`[control.rate_limits]`), and the
//! tokens last an hour (`access_token_ttl_s`): longer runs need a longer TTL.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::scenario::{Role, Scenario};

/// One request on a fresh connection; the status and the JSON body.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &Value) -> Result<(u16, Value)> {
    let mut s =
        crate::tls::http_stream(addr, Duration::from_secs(30)).with_context(|| format!("connecting to {addr}"))?;
    let body = body.to_string();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    crate::tls::read_to_end(&mut *s, &mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw.split_once("\r\n\r\n").context("no HTTP response")?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let text = if chunked { dechunk(rest) } else { rest.to_owned() };
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// Every document name the scenario's users and preload open.
pub fn doc_names(scenario: &Scenario) -> Vec<String> {
    let mut names: Vec<String> = scenario
        .groups
        .iter()
        .filter(|g| g.role != Role::Idle)
        .flat_map(|g| (0..g.docs).map(move |d| g.doc_name(d)))
        .collect();
    if let Some(p) = &scenario.preload {
        names.extend((0..p.docs).map(|d| format!("{}-{d}", p.doc_prefix)));
    }
    names.sort();
    names.dedup();
    names
}

/// Signs up `accounts` users, creates and shares every document; fills the scenario's
/// `tokens` and `doc_ids`.
pub fn sign_up(scenario: &mut Scenario, addr: SocketAddr, accounts: usize) -> Result<()> {
    let run = format!(
        "{:x}",
        std::process::id() ^ (std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos() as u32))
    );
    let nonce = format!("{run}{:x}", rand::random::<u32>());
    let password = format!("loadgen-{}", rand::random::<u64>());
    let started = std::time::Instant::now();
    let mut tokens = Vec::with_capacity(accounts);
    for i in 0..accounts.max(1) {
        let email = format!("loadgen-{nonce}-{i}@loadgen.invalid");
        let body = json!({"email": email, "password": password, "name": format!("loadgen {i}")});
        let (status, answer) = request(addr, "POST", "/api/auth/signup", None, &body)?;
        if status != 201 {
            bail!("signing up {email}: HTTP {status} {answer} (is the server running with --auth accounts?)");
        }
        tokens.push(answer["access_token"].as_str().context("no access_token")?.to_owned());
    }
    let owner = tokens[0].clone();
    let mut ids = BTreeMap::new();
    for name in doc_names(scenario) {
        let (status, answer) = request(addr, "POST", "/api/documents", Some(&owner), &json!({"title": name}))?;
        if status != 201 {
            bail!("creating document {name}: HTTP {status} {answer} (raise [control.rate_limits] writes_per_user?)");
        }
        let id = answer["id"].as_str().context("no document id")?.to_owned();
        let path = format!("/api/documents/{id}");
        let (status, answer) = request(addr, "PATCH", &path, Some(&owner), &json!({"link_sharing": "editor"}))?;
        if status != 200 {
            bail!("sharing document {name}: HTTP {status} {answer}");
        }
        ids.insert(name, id);
    }
    eprintln!(
        "signed up {} accounts and created {} documents in {:.1} s",
        tokens.len(),
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    scenario.tokens = tokens;
    scenario.doc_ids = ids;
    Ok(())
}
