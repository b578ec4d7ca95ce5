//! The control plane under load, against a running `tandem serve`:
//!
//! - `rest-bench seed --data-dir D --docs N [--search-text] [--shared K]`: before the server
//!   starts, one account (`bench@example.com`, password `bench-password`) and N documents in
//!   D's SQLite store; with `--search-text`, each document's title and a 500-3,000 character
//!   window of the editing traces' text in D's search index (as the search worker would have
//!   indexed them), and a second account (`reader@example.com`) that may read the first K
//!   documents (default 1,000);
//! - `rest-bench list --target HOST:PORT --rate R --duration S [--path P] [--as reader]`:
//!   `GET P` (default `/api/documents`, the first page of 50 documents; e.g.
//!   `/api/search?q=word`) at R requests/s, open loop (latency counted from when each request
//!   was due, so a stall is not hidden), over keep-alive connections; prints p50, p99, p99.9
//!   and max;
//! - `rest-bench login --target HOST:PORT --duration S --concurrency C`: C clients logging in
//!   back to back; prints logins/s (Argon2 bounds it) and how many were turned away busy.
//!
//! The server needs rate limits above the load (`[control.rate_limits]`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tandem_workers::search::{self, IndexedDoc, SearchIndex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EMAIL: &str = "bench@example.com";
const READER: &str = "reader@example.com";
const PASSWORD: &str = "bench-password";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

/// One HTTP/1.1 exchange on a kept-alive connection; returns the status and body.
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> Result<(u16, Vec<u8>)> {
    stream.write_all(request).await?;
    buf.clear();
    loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("status")?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("content-length")?;
        let total = end + 4 + len;
        while buf.len() < total {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok((status, buf[end + 4..total].to_vec()));
    }
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn login(addr: SocketAddr, email: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut buf = Vec::new();
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let (status, body) = exchange(&mut s, &mut buf, &post(addr, "/api/auth/login", &body)).await?;
    if status != 200 {
        bail!("login: HTTP {status} {}", String::from_utf8_lossy(&body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["access_token"].as_str().context("no token")?.to_owned())
}

async fn seed(args: &[String]) -> Result<()> {
    let dir = std::path::PathBuf::from(arg(args, "--data-dir", "./tandem-data"));
    let docs: usize = arg(args, "--docs", "100000").parse()?;
    std::fs::create_dir_all(&dir)?;
    let store = tandem_control::Store::connect(&tandem_control::default_database_url(&dir)).await?;
    store.migrate().await?;
    let hash = tandem_control::password::Passwords::new(1, 4)
        .hash(PASSWORD.into())
        .await
        .map_err(|_| anyhow::anyhow!("busy"))?;
    let user = store.create_user(EMAIL, "Bench", &hash).await?.user;
    let started = Instant::now();
    let mut created = Vec::with_capacity(docs);
    for i in 0..docs {
        created.push(store.create_document(&user.id, &format!("Document {i}")).await?);
    }
    println!("seeded {docs} documents for {EMAIL} in {:.1} s", started.elapsed().as_secs_f64());
    if args.iter().any(|a| a == "--search-text") {
        let shared: usize = arg(args, "--shared", "1000").parse()?;
        store.create_user(READER, "Reader", &hash).await?;
        for doc in created.iter().take(shared) {
            store.share(doc, &user, READER, tandem_net::protocol::Role::Viewer).await?;
        }
        let started = Instant::now();
        let bytes = index_text(&dir, &created)?;
        println!(
            "indexed {docs} documents ({:.0} MB of text) in {:.1} s; {READER} may read {shared}",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    store.close().await;
    Ok(())
}

/// Puts every document in the search index, with its title and a window of the traces' text;
/// returns the text's bytes.
fn index_text(dir: &std::path::Path, docs: &[tandem_control::store::Document]) -> Result<usize> {
    use rand::{Rng, SeedableRng};
    let mut corpus = String::new();
    for path in tandem_traces::sequential_traces()? {
        corpus.push_str(&tandem_traces::Trace::load(&path)?.end);
        corpus.push('\n');
    }
    let chars: Vec<char> = corpus.chars().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let index = SearchIndex::open(&search::index_dir(dir)).map_err(anyhow::Error::msg)?;
    let writer = index.writer().map_err(anyhow::Error::msg)?;
    let mut bytes = 0;
    for doc in docs {
        let len = rng.random_range(500..3000).min(chars.len() - 1);
        let at = rng.random_range(0..chars.len() - len);
        let text: String = chars[at..at + len].iter().collect();
        bytes += text.len();
        let indexed = IndexedDoc { title: doc.title.clone(), text, rev: 0 };
        index.put(&writer, &doc.id, Some(&indexed)).map_err(anyhow::Error::msg)?;
    }
    let mut writer = writer;
    writer.commit().map_err(|e| anyhow::anyhow!("committing the index: {e}"))?;
    Ok(bytes)
}

async fn list(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, "--target", "127.0.0.1:8080").parse()?;
    let rate: f64 = arg(args, "--rate", "1000").parse()?;
    let duration = Duration::from_secs_f64(arg(args, "--duration", "30").parse()?);
    let conns: usize = arg(args, "--connections", "16").parse()?;
    let path = arg(args, "--path", "/api/documents");
    let email = if arg(args, "--as", "owner") == "reader" { READER } else { EMAIL };
    let token = login(addr, email).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes();
    let request = Arc::new(request);
    // Warm up: one request per connection.
    let start = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (duration.as_secs_f64() * rate) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (request, next, errors) = (Arc::clone(&request), Arc::clone(&next), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + interval * u32::try_from(i).unwrap();
                tokio::time::sleep_until(due.into()).await;
                match exchange(&mut s, &mut buf, &request).await {
                    Ok((200, _)) => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        s = TcpStream::connect(addr).await.unwrap();
                    }
                }
                hist.record(due.elapsed().as_micros() as u64).unwrap();
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        hist.add(t.await?).unwrap();
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "GET {path} as {email} at {rate} req/s for {:.0} s over {conns} connections: {} requests, {} errors; \
         latency ms p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        duration.as_secs_f64(),
        hist.len(),
        errors.load(Ordering::Relaxed),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}

async fn logins(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, "--target", "127.0.0.1:8080").parse()?;
    let duration = Duration::from_secs_f64(arg(args, "--duration", "10").parse()?);
    let concurrency: usize = arg(args, "--concurrency", "4").parse()?;
    let ok = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ok, busy) = (Arc::clone(&ok), Arc::clone(&busy));
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
            let request = post(addr, "/api/auth/login", &body);
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            while Instant::now() < end {
                match exchange(&mut s, &mut buf, &request).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => busy.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        s = TcpStream::connect(addr).await.unwrap();
                        busy.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = duration.as_secs_f64();
    println!(
        "logins: {:.1}/s ({} in {secs:.0} s, {concurrency} concurrent), {} refused (busy or limited)",
        ok.load(Ordering::Relaxed) as f64 / secs,
        ok.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        match args.get(1).map(String::as_str) {
            Some("seed") => seed(&args).await,
            Some("list") => list(&args).await,
            Some("login") => logins(&args).await,
            _ => bail!("usage: rest-bench seed|list|login [--target HOST:PORT] ..."),
        }
    })
}
