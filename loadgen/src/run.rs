//! Running a scenario: users spread over generator threads (each a monoio runtime), the
//! stages on one clock, server and generator usage sampled at the edges of the steady stage,
//! and a convergence check at the end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tandem_engine::{ClientId, Document};
use tandem_net::client::ClientSession;
use tandem_net::codec::{decode_server, encode_client};
use tandem_net::protocol::{Encoding, ErrorCode, ServerMsg};
use tungstenite::Message;

use crate::peers::{self, Protocol};
use crate::procstat::{self, Sample};
use crate::replay::{self, ReplayDoc};
use crate::scenario::{Role, Scenario};
use crate::stats::{Clock, Stats};
use crate::user::{self, Thread, UserSpec};
use crate::worker;
use crate::wsclient::WsClient;

/// The live progress line: stage, elapsed time and current rates, redrawn every 500 ms on
/// stderr (hidden when stderr is not a terminal).
struct Progress {
    bar: indicatif::ProgressBar,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(
        scenario: &Scenario,
        clock: Clock,
        ramp_down: Duration,
        read: impl Fn() -> [u64; 4] + Send + 'static,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let total = (clock.steady_to + ramp_down).saturating_duration_since(clock.start);
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed:>4} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(scenario.name.clone());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, st) = (bar.clone(), std::sync::Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut last = (Instant::now(), read());
            while !st.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let now = Instant::now();
                let cur = read();
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let rate = |i: usize| (cur[i] - last.1[i]) as f64 / dt;
                let stage = if now < clock.steady_from {
                    "ramp-up"
                } else if now < clock.steady_to {
                    "steady"
                } else {
                    "ramp-down"
                };
                b.set_position(now.saturating_duration_since(clock.start).as_millis() as u64);
                b.set_message(format!(
                    "{stage}: sent {:.0}/s acked {:.0}/s delivered {:.0}/s errors {}",
                    rate(0),
                    rate(1),
                    rate(2),
                    cur[3]
                ));
                last = (now, cur);
            }
        });
        Self { bar, stop, thread: Some(thread) }
    }

    fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// Users per generator process by default: this machine caps file descriptors at 20,000 per
/// process.
pub const DEFAULT_CONNECTIONS_PER_PROCESS: usize = 18_000;
/// File descriptors kept for everything but users' connections (checkers, /proc, pipes,
/// io_uring, the server-view connections).
const FD_RESERVE: usize = 1_000;

/// Connections per source address before moving to the next 127.x.y.z.
const PER_SOURCE: usize = 10_000;
/// Documents one checker connection opens (the server's default per-connection limit).
const DOCS_PER_CHECKER: usize = 64;

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The server's address (from `ws://host:port/ws`): the first node of a cluster.
    pub target: SocketAddr,
    /// Every node users connect to (users spread over them in turn; a node that does not
    /// serve a user's document sends it on with `moved`). `target` alone when empty.
    pub targets: Vec<SocketAddr>,
    /// Replaces the scenario's steady-stage length.
    pub duration: Option<f64>,
    /// The server's pid, if known (else looked up from the listening port when local).
    pub server_pid: Option<u32>,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Most users one generator process holds (0: as many as its file-descriptor limit
    /// allows, at most [`DEFAULT_CONNECTIONS_PER_PROCESS`]); more start worker processes.
    pub connections_per_process: usize,
    /// TLS, for `wss://` targets (see [`crate::tls::spec_for`]).
    pub tls: Option<crate::tls::TlsSpec>,
}

/// What the convergence check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Convergence {
    /// Documents checked against the server.
    pub documents: usize,
    /// Users' final views compared (full copies and light readers).
    pub views_checked: usize,
    /// Of which full copies (content compared, not just the revision).
    pub full_copies: usize,
    /// What did not match (the first 20).
    pub mismatches: Vec<String>,
    /// Mismatches in all.
    pub mismatch_count: usize,
    /// Replayed documents whose text was checked against their traces.
    #[serde(default)]
    pub replayed_texts: usize,
    /// Trace transactions the replaying authors sent.
    #[serde(default)]
    pub replayed_txns: u64,
}

impl Convergence {
    /// Adds another thread's (or process's) findings, keeping the first 20 mismatches.
    fn merge(&mut self, o: Self) {
        self.documents += o.documents;
        self.views_checked += o.views_checked;
        self.full_copies += o.full_copies;
        self.mismatch_count += o.mismatch_count;
        self.replayed_texts += o.replayed_texts;
        self.replayed_txns += o.replayed_txns;
        let room = 20usize.saturating_sub(self.mismatches.len());
        self.mismatches.extend(o.mismatches.into_iter().take(room));
    }
}

/// CPU and memory of a process over the steady stage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// The pid, when known.
    pub pid: Option<u32>,
    /// CPU seconds used during the steady stage.
    pub cpu_s: f64,
    /// CPU use as a fraction of one core.
    pub cpu_util: f64,
    /// User (own code) CPU seconds used during the steady stage.
    pub user_s: f64,
    /// Resident memory before any user connected.
    pub rss_before_bytes: u64,
    /// Resident memory at the start of the steady stage.
    pub rss_start_bytes: u64,
    /// Resident memory at its end.
    pub rss_end_bytes: u64,
}

/// The outcome of a run, before it becomes a report.
#[derive(Debug)]
pub struct RunResult {
    /// Everything measured, all threads merged.
    pub stats: Stats,
    /// The convergence check.
    pub convergence: Convergence,
    /// The server's usage (empty when it could not be sampled).
    pub server: Usage,
    /// The generator's own usage.
    pub generator: Usage,
    /// Generator threads, in all processes.
    pub threads: usize,
    /// Generator processes (1 unless the users needed more file descriptors than one has).
    pub processes: usize,
    /// The steady stage's length, seconds (the rates' denominator).
    pub steady_s: f64,
    /// How long server and generator usage were sampled over, seconds (about `steady_s`).
    pub sampled_s: f64,
    /// Server counters over the steady stage, from `/metrics` (name → increase per second).
    pub server_rates: Vec<(String, f64)>,
    /// Users connected at the end of the steady stage.
    pub live_users: usize,
    /// The server's cores, from its `/metrics` (Tandem only), all nodes together.
    pub server_cores: Option<usize>,
    /// The nodes the users were spread over (1 unless a cluster).
    pub server_nodes: usize,
}

impl RunOptions {
    /// The nodes users connect to.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        if self.targets.is_empty() { vec![self.target] } else { self.targets.clone() }
    }
}

/// Parses a comma-separated list of targets (the nodes of a cluster), at least one.
pub fn parse_targets(urls: &str) -> Result<Vec<SocketAddr>> {
    let targets =
        urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(parse_target).collect::<Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("no target in {urls:?}");
    }
    Ok(targets)
}

/// Parses `ws://host:port/ws`, `wss://host:port/ws` (see [`crate::tls`]) or `host:port`.
pub fn parse_target(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://")).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("no address for {hostport}"))
}

fn source_for(index: usize, target: SocketAddr) -> Option<IpAddr> {
    if !target.ip().is_loopback() {
        return None;
    }
    let block = index / PER_SOURCE;
    // 127.0.0.1, 127.0.0.2, ... then 127.0.1.1, ...
    let (hi, lo) = (block / 250, block % 250);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, u8::try_from(hi).unwrap_or(255), u8::try_from(lo + 1).unwrap_or(255))))
}

/// The users of a scenario, assigned to threads: users of one document share a thread.
/// Deterministic, so that every worker process computes the same assignment.
///
/// Users go to the least loaded of `processes`, then to its least loaded thread; the lists
/// come back process by process (`processes x threads` of them).
pub(crate) fn assign(
    scenario: &Scenario,
    processes: usize,
    threads: usize,
    clock: &Clock,
    targets: &[SocketAddr],
    replayed: &replay::Replayed,
) -> (Vec<Vec<UserSpec>>, Vec<Vec<String>>) {
    struct Member {
        role: Role,
        group: usize,
    }
    let mut by_doc: Vec<(Option<String>, Vec<Member>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (gi, g) in scenario.groups.iter().enumerate() {
        if g.role == Role::Idle {
            for _ in 0..g.users_per_doc * g.docs.max(1) {
                by_doc.push((None, vec![Member { role: g.role, group: gi }]));
            }
            continue;
        }
        for d in 0..g.docs {
            let name = scenario.doc_id(&g.doc_name(d));
            let slot = *index.entry(name.clone()).or_insert_with(|| {
                by_doc.push((Some(name.clone()), Vec::new()));
                by_doc.len() - 1
            });
            for _ in 0..g.users_per_doc {
                by_doc[slot].1.push(Member { role: g.role, group: gi });
            }
        }
    }
    let total: usize = by_doc.iter().map(|(_, m)| m.len()).sum();
    let ramp = Duration::from_secs_f64(scenario.stages.ramp_up_s);
    let mut process_load = vec![0usize; processes];
    let mut load = vec![0usize; processes * threads];
    let mut users: Vec<Vec<UserSpec>> = vec![Vec::new(); processes * threads];
    let mut docs: Vec<Vec<String>> = vec![Vec::new(); processes * threads];
    let mut n = 0usize;
    let mut full_seen: HashMap<(String, usize), usize> = HashMap::new();
    let nodes: std::sync::Arc<[SocketAddr]> = targets.into();
    for (doc, members) in by_doc {
        let mut authors = 0;
        let p = (0..processes).min_by_key(|&p| process_load[p]).expect("at least one process");
        let t = (p * threads..(p + 1) * threads).min_by_key(|&t| load[t]).expect("at least one thread");
        process_load[p] += members.len();
        load[t] += members.len();
        if let Some(d) = &doc {
            docs[t].push(d.clone());
        }
        for (i, m) in members.into_iter().enumerate() {
            let g = &scenario.groups[m.group];
            let full_copy = match (m.role, g.full_copies_per_doc, &doc) {
                (Role::Reader, Some(k), Some(d)) => {
                    let seen = full_seen.entry((d.clone(), m.group)).or_insert(0);
                    *seen += 1;
                    *seen <= k
                }
                _ => true,
            };
            let start_at = clock.start + ramp.mul_f64(n as f64 / total.max(1) as f64);
            let author = match (m.role, &doc) {
                (Role::Replay, Some(d)) => {
                    authors += 1;
                    replayed.get(d).map(|r| replay::Author { doc: std::sync::Arc::clone(r), index: authors - 1 })
                }
                _ => None,
            };
            users[t].push(UserSpec {
                client: ClientId(scenario.seed.wrapping_mul(1_000_003).wrapping_add(n as u64 + 1)),
                role: m.role,
                docs: doc.iter().cloned().collect(),
                edit_rate: g.edit_rate,
                cursor_rate: g.cursor_rate,
                wire: g.wire,
                full_copy,
                start_at,
                source: source_for(n, targets[n % targets.len()]),
                seed: scenario.seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                first_of_doc: i == 0 && doc.is_some(),
                author,
                token: scenario.token_for(n),
                target: targets[n % targets.len()],
                nodes: std::sync::Arc::clone(&nodes),
            });
            n += 1;
        }
    }
    (users, docs)
}

/// Reads `docs` from the server on fresh connections: each one's revision and content.
async fn server_view(thread: &Thread, docs: &[String]) -> HashMap<String, (u64, Document)> {
    match thread.protocol {
        Protocol::Tandem => tandem_view(thread, docs).await,
        Protocol::ShareDb => peers::sharedb::server_view(thread, docs).await,
        Protocol::Yjs => peers::yjs::server_view(thread, docs).await,
    }
}

/// Opens `docs` on fresh Tandem connections and returns each one's revision and content.
/// In a cluster a document served elsewhere is read where its `moved` points (the same
/// node again, after a pause, while nobody serves it), a few rounds at most.
async fn tandem_view(thread: &Thread, docs: &[String]) -> HashMap<String, (u64, Document)> {
    let mut out = HashMap::new();
    let mut round: Vec<(SocketAddr, Vec<String>)> = vec![(thread.target, docs.to_vec())];
    for _ in 0..10 {
        let mut next: HashMap<SocketAddr, Vec<String>> = HashMap::new();
        let mut wait = false;
        for (addr, docs) in round {
            for (i, chunk) in docs.chunks(DOCS_PER_CHECKER).enumerate() {
                for (d, to) in view_at(thread, addr, i, chunk, &mut out).await {
                    let to = if to.is_empty() { None } else { parse_target(&to).ok() };
                    wait |= to.is_none();
                    next.entry(to.unwrap_or(addr)).or_default().push(d);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        if wait {
            monoio::time::sleep(Duration::from_millis(500)).await;
        }
        round = next.into_iter().collect();
    }
    out
}

/// Reads `docs` (at most [`DOCS_PER_CHECKER`]) from the node at `addr` into `out`; returns
/// those it said are served elsewhere, with where.
async fn view_at(
    thread: &Thread,
    addr: SocketAddr,
    i: usize,
    docs: &[String],
    out: &mut HashMap<String, (u64, Document)>,
) -> Vec<(String, String)> {
    let Ok(ws) = WsClient::connect(addr, "/ws", Encoding::Binary.subprotocol(), None).await else {
        return Vec::new();
    };
    let session =
        Rc::new(RefCell::new(ClientSession::new(ClientId(u64::MAX - i as u64), &thread.token, "checker", "")));
    {
        let mut s = session.borrow_mut();
        s.on_connect();
        for d in docs {
            s.open(d);
        }
        while let Some(m) = s.poll_outgoing() {
            ws.sender.send(Message::binary(encode_client(&m, Encoding::Binary)));
        }
    }
    let sender = Rc::clone(&ws.sender);
    let s2 = Rc::clone(&session);
    // The server refused the checker's hello (its token, the protocol): nothing will open.
    let refused: Rc<RefCell<Option<String>>> = Rc::default();
    let r2 = Rc::clone(&refused);
    let reader = monoio::spawn(ws.run(move |bytes| {
        if let Ok(msg) = decode_server(&bytes, Encoding::Binary) {
            if let ServerMsg::Error { code, message, doc: None, .. } = &msg
                && matches!(code, ErrorCode::Unauthorized | ErrorCode::BadHello | ErrorCode::UnsupportedProtocol)
            {
                r2.borrow_mut().get_or_insert_with(|| format!("{} ({message})", code.as_str()));
            }
            let mut s = s2.borrow_mut();
            let _ = s.handle(msg);
            while s.poll_event().is_some() {}
        }
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |s: &ClientSession, d: &str| s.is_open(d) || s.moved_to(d).is_some();
    while Instant::now() < deadline && refused.borrow().is_none() && !docs.iter().all(|d| settled(&session.borrow(), d))
    {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(why) = refused.borrow().as_ref() {
        eprintln!("reading the server's copy of the documents at {addr} was refused: {why}");
    }
    let mut moved = Vec::new();
    for d in docs {
        let s = session.borrow();
        if let Some(to) = s.moved_to(d) {
            moved.push((d.clone(), to.to_owned()));
        } else if let Some(state) = s.doc_state(d) {
            out.insert(d.clone(), (state.rev(), state.document().clone()));
        }
    }
    sender.close();
    let _ = reader.await;
    moved
}

/// What a generator thread (or, merged, a process) found.
pub(crate) struct ThreadResult {
    stats: Stats,
    convergence: Convergence,
    live: usize,
}

/// [`ThreadResult`] as a worker process sends it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ThreadResultWire {
    stats: crate::stats::StatsWire,
    convergence: Convergence,
    live: usize,
}

impl ThreadResult {
    fn empty() -> Self {
        Self { stats: Stats::default(), convergence: Convergence::default(), live: 0 }
    }

    /// Adds another thread's (or process's) findings.
    fn merge(&mut self, r: Self) {
        self.stats.merge(&r.stats);
        self.live += r.live;
        self.convergence.merge(r.convergence);
    }

    pub(crate) fn to_wire(&self) -> ThreadResultWire {
        ThreadResultWire { stats: self.stats.to_wire(), convergence: self.convergence.clone(), live: self.live }
    }

    pub(crate) fn from_wire(w: ThreadResultWire) -> Result<Self, String> {
        Ok(Self { stats: Stats::from_wire(&w.stats)?, convergence: w.convergence, live: w.live })
    }
}

fn run_thread(
    users: Vec<UserSpec>,
    docs: Vec<String>,
    clock: Clock,
    target: SocketAddr,
    token: String,
    ramp_down: Duration,
    protocol: Protocol,
) -> Result<ThreadResult> {
    // The largest ring: every connection keeps a read in flight (see the server's core.rs).
    // Cooperative task running matters here as much as in the server: without it every op
    // the server sends interrupts this thread, and the server's CPU pays for the interrupt.
    let (mut rt, _) = tandem_net::server::runtime::build(32_768).context("starting a generator runtime")?;
    Ok(rt.block_on(async move {
        let thread = Rc::new(Thread::new(clock, target, token, protocol));
        let expected_finals: usize = users.iter().map(|u| u.docs.len()).sum();
        for spec in users {
            monoio::spawn(user::run(Rc::clone(&thread), spec));
        }
        {
            let t = Rc::clone(&thread);
            // Detached: it ends once the run finishes.
            monoio::spawn(async move {
                while !t.finish.get() {
                    monoio::time::sleep(Duration::from_secs(5)).await;
                    t.forget_old(Instant::now());
                }
            });
        }
        monoio::time::sleep_until(monoio::time::Instant::from_std(clock.steady_to)).await;
        let live = thread.live.get();
        thread.stop_acting.set(true);
        monoio::time::sleep_until(monoio::time::Instant::from_std(clock.steady_to + ramp_down)).await;
        let server = server_view(&thread, &docs).await;
        thread.finish.set(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while thread.finals.borrow().len() < expected_finals && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut c = Convergence { documents: server.len(), ..Convergence::default() };
        let note = |c: &mut Convergence, what: String| {
            c.mismatch_count += 1;
            if c.mismatches.len() < 20 {
                c.mismatches.push(what);
            }
        };
        for d in &docs {
            if !server.contains_key(d) {
                note(&mut c, format!("{d}: the server's copy could not be read"));
            }
        }
        if thread.finals.borrow().len() < expected_finals {
            note(
                &mut c,
                format!(
                    "{} of {expected_finals} views missing at the end",
                    expected_finals - thread.finals.borrow().len()
                ),
            );
        }
        // Replayed documents: each author's sent count, then the text against the traces.
        let mut replayed: HashMap<&str, (&ReplayDoc, Vec<Option<usize>>)> = HashMap::new();
        let finals = thread.finals.borrow();
        for f in finals.iter() {
            let Some(r) = &f.replay else { continue };
            let doc = &*r.author.doc;
            let entry = replayed.entry(doc.name.as_str()).or_insert_with(|| (doc, vec![None; doc.traces.len()]));
            entry.1[r.author.index] = Some(r.sent);
            c.replayed_txns += r.sent as u64;
            if let Some(why) = &r.broken {
                note(&mut c, why.clone());
            }
        }
        for (name, (doc, sent)) in &replayed {
            let Some((_, content)) = server.get(*name) else { continue };
            let Some(sent) = sent.iter().copied().collect::<Option<Vec<usize>>>() else {
                note(&mut c, format!("{name}: an author's view is missing"));
                continue;
            };
            c.replayed_texts += 1;
            if let Some(why) = doc.check(&content.text(), &sent) {
                note(&mut c, why);
            }
        }
        for f in finals.iter() {
            let Some((rev, content)) = server.get(&f.doc) else { continue };
            c.views_checked += 1;
            if f.pending {
                note(&mut c, format!("{}: client {} still had unacknowledged edits", f.doc, f.client));
            } else if f.rev != *rev {
                note(&mut c, format!("{}: client {} at revision {} but the server at {rev}", f.doc, f.client, f.rev));
            }
            if let Some(mine) = &f.content {
                c.full_copies += 1;
                if mine != content {
                    note(
                        &mut c,
                        format!("{}: client {} holds different content at revision {}", f.doc, f.client, f.rev),
                    );
                }
            }
        }
        drop(finals);
        let stats = thread.stats.borrow().clone();
        ThreadResult { stats, convergence: c, live }
    }))
}

/// Server counters worth a rate over the steady stage.
const SERVER_COUNTERS: &[&str] = &[
    "tandem_ops_in_total",
    "tandem_ops_out_total",
    "tandem_frames_out_total",
    "tandem_messages_in_total",
    "tandem_socket_writes_total",
    "tandem_socket_reads_total",
    "tandem_oplog_batches_total",
    "tandem_oplog_ops_total",
    "tandem_feed_ops_published_total",
    "tandem_feed_refused_total",
];

/// Gives the scenario's preload documents their history: `ops` acknowledged ops each, from
/// `writers` clients per document typing at the end of the text, one op in flight each.
pub fn preload(scenario: &Scenario, opts: &RunOptions) -> Result<()> {
    let Some(p) = &scenario.preload else { return Ok(()) };
    if opts.protocol != Protocol::Tandem {
        bail!("preload is only implemented for Tandem's protocol");
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for d in 0..p.docs {
        for w in 0..p.writers {
            let doc = scenario.doc_id(&format!("{}-{d}", p.doc_prefix));
            let (addr, token) = (opts.target, scenario.token_for(d * p.writers + w));
            let n = p.ops / p.writers as u64 + u64::from((w as u64) < p.ops % p.writers as u64);
            let id = ClientId(u64::MAX / 2 + (d * p.writers + w) as u64);
            handles.push(std::thread::spawn(move || -> Result<()> {
                use tandem_net::client::{Client, ClientOptions};
                let options = ClientOptions { token, name: "preload".into(), ..ClientOptions::default() };
                let mut c =
                    Client::connect(addr, id, crate::tls::client_options(options)).context("preload: connecting")?;
                c.open(&doc).context("preload: opening")?;
                for i in 0..n {
                    let len = c.session().document(&doc).map_or(0, Document::len);
                    let text = if i % 50 == 49 { "\n" } else { "p" };
                    let delta = tandem_engine::Delta::new()
                        .retain(len, tandem_engine::Attributes::NONE)
                        .insert(text, tandem_engine::Attributes::NONE);
                    c.edit(&doc, delta).context("preload: editing")?;
                    c.wait_until(Duration::from_secs(60), "preload ack", |s| s.is_synced())
                        .context("preload: waiting for an ack")?;
                }
                Ok(())
            }));
        }
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("a preload writer panicked"))??;
    }
    eprintln!("preloaded {} document(s) with {} ops each in {:.1} s", p.docs, p.ops, started.elapsed().as_secs_f64());
    Ok(())
}

/// Gives every document of the scenario `threads` comment threads before the run: one client
/// per document writes a line of `threads` words (100 when `threads` is 0, to compare with
/// the same text) and comments on each word (one note in flight at a time), 16 documents at
/// once. The anchors then move through every op of the run.
pub fn seed_comments(scenario: &Scenario, opts: &RunOptions, threads: usize) -> Result<()> {
    if opts.protocol != Protocol::Tandem {
        bail!("comment threads are Tandem's only");
    }
    let started = Instant::now();
    let names = crate::accounts::doc_names(scenario);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..16.min(names.len()) {
        let (names, next, scenario) = (names.clone(), std::sync::Arc::clone(&next), scenario.clone());
        let addr = opts.target;
        handles.push(std::thread::spawn(move || -> Result<()> {
            use tandem_net::client::{Client, ClientOptions};
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(name) = names.get(i) else { return Ok(()) };
                let doc = scenario.doc_id(name);
                let options = ClientOptions {
                    token: scenario.token_for(i),
                    name: "commenter".into(),
                    ..ClientOptions::default()
                };
                let mut c =
                    Client::connect(addr, ClientId(u64::MAX / 4 + i as u64), crate::tls::client_options(options))
                        .context("seeding comments: connecting")?;
                c.open(&doc).context("seeding comments: opening")?;
                let words = if threads == 0 { 100 } else { threads };
                let line: String = (0..words).map(|k| format!("w{k} ")).collect::<String>() + "\n";
                let delta = tandem_engine::Delta::new().insert(&line, tandem_engine::Attributes::NONE);
                c.edit(&doc, delta).context("seeding comments: writing the line")?;
                let mut at = 0;
                for k in 0..threads {
                    let word = format!("w{k}").len();
                    let change = tandem_engine::NoteChange::Comment {
                        start: at,
                        end: at + word,
                        text: format!("thread {k}: is this right?"),
                        mentions: Vec::new(),
                    };
                    c.note(&doc, change).context("seeding comments: commenting")?;
                    at += word + 1;
                }
                c.close().context("seeding comments: closing")?;
            }
        }));
    }
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("a comment seeder panicked"))??;
    }
    eprintln!(
        "gave {} document(s) {threads} comment threads each in {:.1} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The users run in this process's threads or in worker processes.
enum Fleet {
    Threads(Vec<std::thread::JoinHandle<Result<ThreadResult>>>),
    Workers(worker::Workers),
}

/// The clock of a run starting at `start`.
pub(crate) fn clock_from(scenario: &Scenario, start: Instant) -> Clock {
    let steady_from = start + Duration::from_secs_f64(scenario.stages.ramp_up_s);
    Clock { start, steady_from, steady_to: steady_from + scenario.steady() }
}

/// How many processes of `threads` threads the scenario needs so that none holds more than
/// `per_process` users (documents are not split, so a process may need room to spare).
fn processes_for(scenario: &Scenario, threads: usize, per_process: usize, targets: &[SocketAddr]) -> Result<usize> {
    let users = scenario.users();
    let mut per_doc: HashMap<String, usize> = HashMap::new();
    for g in scenario.groups.iter().filter(|g| g.role != Role::Idle) {
        for d in 0..g.docs {
            *per_doc.entry(g.doc_name(d)).or_default() += g.users_per_doc;
        }
    }
    if let Some((doc, n)) = per_doc.iter().max_by_key(|(_, n)| **n)
        && *n > per_process
    {
        bail!("{doc}'s {n} users alone are more than {per_process}, the most one process holds");
    }
    let clock = clock_from(scenario, Instant::now());
    let mut p = users.div_ceil(per_process).max(1);
    loop {
        if p == 1 {
            return Ok(1);
        }
        let (assigned, _) = assign(scenario, p, threads, &clock, targets, &HashMap::new());
        let most = assigned.chunks(threads).map(|c| c.iter().map(Vec::len).sum::<usize>()).max().unwrap_or(0);
        // Greedy placement leaves each process under its share plus one document.
        if most <= per_process {
            return Ok(p);
        }
        p += 1;
    }
}

/// Starts one thread per user list.
pub(crate) fn spawn_threads(
    scenario: &Scenario,
    users: Vec<Vec<UserSpec>>,
    docs: Vec<Vec<String>>,
    clock: Clock,
    target: SocketAddr,
    protocol: Protocol,
) -> Result<Vec<std::thread::JoinHandle<Result<ThreadResult>>>> {
    let ramp_down = Duration::from_secs_f64(scenario.stages.ramp_down_s);
    let mut handles = Vec::new();
    for (i, (u, d)) in users.into_iter().zip(docs).enumerate() {
        let token = scenario.token_for(0);
        handles.push(std::thread::Builder::new().name(format!("loadgen-{i}")).spawn(move || {
            crate::stats::use_progress_slot(i);
            run_thread(u, d, clock, target, token, ramp_down, protocol)
        })?);
    }
    Ok(handles)
}

/// Waits for the threads and merges what they found.
pub(crate) fn join_threads(handles: Vec<std::thread::JoinHandle<Result<ThreadResult>>>) -> Result<ThreadResult> {
    let mut total = ThreadResult::empty();
    for h in handles {
        total.merge(h.join().map_err(|_| anyhow::anyhow!("a generator thread panicked"))??);
    }
    Ok(total)
}

/// Runs a scenario against a server.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunResult> {
    crate::tls::init(opts.tls.as_ref())?;
    let mut scenario = scenario.clone();
    if let Some(d) = opts.duration {
        scenario.stages.steady_s = d;
    }
    scenario.validate()?;
    let threads = if scenario.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        scenario.threads
    };
    let fd_limit = usize::try_from(worker::raise_fd_limit()).unwrap_or(usize::MAX);
    let per_process = if opts.connections_per_process == 0 {
        DEFAULT_CONNECTIONS_PER_PROCESS.min(fd_limit.saturating_sub(FD_RESERVE))
    } else {
        opts.connections_per_process
    };
    if per_process == 0 || per_process > fd_limit.saturating_sub(FD_RESERVE) {
        bail!(
            "{per_process} connections per process: this process may open {fd_limit} files, so at most {}",
            fd_limit.saturating_sub(FD_RESERVE)
        );
    }
    let nodes = opts.nodes();
    let processes = processes_for(&scenario, threads, per_process, &nodes)?;
    let (replayed, placements) = replay::setup(&scenario, opts)?;
    // Every node's process, when local: a cluster's usage is their sum.
    let server_pids: Vec<u32> = match opts.server_pid {
        Some(p) if nodes.len() == 1 => vec![p],
        _ => nodes.iter().filter(|a| a.ip().is_loopback()).filter_map(|a| procstat::listener_pid(*a)).collect(),
    };
    let server_pid = server_pids.first().copied();
    let sample_servers = || -> Option<Sample> {
        if server_pids.is_empty() {
            return None;
        }
        server_pids.iter().map(|p| procstat::sample(Some(*p))).try_fold(Sample::default(), |t, s| {
            let s = s?;
            Some(Sample { cpu_s: t.cpu_s + s.cpu_s, user_s: t.user_s + s.user_s, rss_bytes: t.rss_bytes + s.rss_bytes })
        })
    };
    let metrics = || -> Option<Vec<String>> { nodes.iter().map(|a| procstat::http_get(*a, "/metrics")).collect() };
    let server_before = sample_servers();

    // Users run in this process's threads, or in worker processes when one cannot hold them.
    let (fleet, clock) = if processes == 1 {
        let clock = clock_from(&scenario, Instant::now() + Duration::from_millis(300));
        let (users, docs) = assign(&scenario, 1, threads, &clock, &nodes, &replayed);
        (Fleet::Threads(spawn_threads(&scenario, users, docs, clock, opts.target, opts.protocol)?), clock)
    } else {
        eprintln!("{} users: {processes} worker processes of {threads} threads each", scenario.users());
        let mut job = worker::Job {
            scenario: scenario.clone(),
            target: opts.target,
            targets: nodes.clone(),
            protocol: opts.protocol,
            processes,
            threads,
            index: 0,
            placements,
            tls: opts.tls.clone(),
        };
        let mut workers = worker::Workers::spawn(&mut job)?;
        let clock = clock_from(&scenario, Instant::now() + Duration::from_millis(300));
        workers.start(clock.start)?;
        (Fleet::Workers(workers), clock)
    };
    let ramp_down = Duration::from_secs_f64(scenario.stages.ramp_down_s);
    let generator_pids: Vec<Option<u32>> = match &fleet {
        Fleet::Threads(_) => vec![None],
        Fleet::Workers(w) => std::iter::once(None).chain(w.pids().into_iter().map(Some)).collect(),
    };
    let sample_generator = || -> Option<Sample> {
        generator_pids.iter().map(|p| procstat::sample(*p)).try_fold(Sample::default(), |t, s| {
            let s = s?;
            Some(Sample { cpu_s: t.cpu_s + s.cpu_s, user_s: t.user_s + s.user_s, rss_bytes: t.rss_bytes + s.rss_bytes })
        })
    };

    let progress = match &fleet {
        Fleet::Threads(_) => Progress::start(&scenario, clock, ramp_down, crate::stats::progress),
        Fleet::Workers(w) => Progress::start(&scenario, clock, ramp_down, w.progress()),
    };
    let wait_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    wait_until(clock.steady_from);
    // The /proc samples bracket the interval closely; /metrics (an HTTP request a swamped
    // server may answer late) is read after them, its rates over their own interval.
    let t0 = Instant::now();
    let server_start = sample_servers();
    let gen_start = sample_generator();
    let m0 = Instant::now();
    let metrics_start = metrics();
    wait_until(clock.steady_to);
    let server_end = sample_servers();
    let gen_end = sample_generator();
    let sampled_s = t0.elapsed().as_secs_f64().max(1e-3);
    let metrics_end = metrics();
    let metrics_s = m0.elapsed().as_secs_f64().max(1e-3);
    // Server and generator usage are rates over the sampling interval (which starts late if
    // this thread woke late); counts are of actions intended within the steady stage, so
    // their rates are over its nominal length.
    let steady_s = scenario.steady().as_secs_f64();

    let total = match fleet {
        Fleet::Threads(handles) => join_threads(handles),
        Fleet::Workers(w) => w.join().map(|rs| {
            rs.into_iter().fold(ThreadResult::empty(), |mut t, r| {
                t.merge(r);
                t
            })
        }),
    };
    let ThreadResult { stats, convergence, live: live_users } = match total {
        Ok(t) => t,
        Err(e) => {
            progress.finish();
            return Err(e);
        }
    };
    progress.finish();
    let usage = |pid: Option<u32>, before: Option<Sample>, a: Option<Sample>, b: Option<Sample>| match (a, b) {
        (Some(a), Some(b)) => Usage {
            pid,
            rss_before_bytes: before.map_or(0, |s| s.rss_bytes),
            cpu_s: b.cpu_s - a.cpu_s,
            cpu_util: (b.cpu_s - a.cpu_s) / sampled_s,
            user_s: b.user_s - a.user_s,
            rss_start_bytes: a.rss_bytes,
            rss_end_bytes: b.rss_bytes,
        },
        _ => Usage { pid, ..Usage::default() },
    };
    let server_rates = match (&metrics_start, &metrics_end) {
        (Some(a), Some(b)) => SERVER_COUNTERS
            .iter()
            .filter_map(|name| {
                let total = |m: &[String]| m.iter().map(|t| procstat::metric_sum(t, name)).sum::<Option<f64>>();
                Some(((*name).to_owned(), (total(b)? - total(a)?) / metrics_s))
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(RunResult {
        stats,
        convergence,
        server: usage(server_pid, server_before, server_start, server_end),
        generator: usage(Some(std::process::id()), None, gen_start, gen_end),
        threads: threads * processes,
        processes,
        steady_s,
        sampled_s,
        server_rates,
        live_users,
        server_cores: metrics_end.as_deref().and_then(|m| m.iter().map(|t| procstat::metric_cores(t)).sum()),
        server_nodes: nodes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("ws://127.0.0.1:8080/ws").unwrap(), "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_target("127.0.0.1:9").unwrap(), "127.0.0.1:9".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_target("wss://127.0.0.1:1/ws").unwrap(), "127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_targets("127.0.0.1:9,").unwrap().len(), 1);
        assert!(parse_targets(" , ").is_err());
    }

    #[test]
    fn sources_spread_past_ten_thousand() {
        let t: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(source_for(0, t), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_for(9_999, t), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_for(10_000, t), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_for(0, "10.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn processes_split_users_without_splitting_documents() {
        let s: Scenario = toml::from_str(
            r#"
            name = "t"
            [stages]
            ramp_up_s = 1
            steady_s = 1
            [[groups]]
            name = "w"
            role = "editor"
            docs = 10
            users_per_doc = 4
            edit_rate = 1
            [[groups]]
            name = "i"
            role = "idle"
            users_per_doc = 30
            "#,
        )
        .unwrap();
        let t: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(processes_for(&s, 2, 100, &[t]).unwrap(), 1);
        let p = processes_for(&s, 2, 20, &[t]).unwrap();
        assert_eq!(p, 4);
        let now = Instant::now();
        let clock = Clock { start: now, steady_from: now, steady_to: now };
        let (users, docs) = assign(&s, p, 2, &clock, &[t], &HashMap::new());
        assert_eq!(users.len(), 8);
        for (k, chunk) in users.chunks(2).enumerate() {
            let n: usize = chunk.iter().map(Vec::len).sum();
            assert!(n <= 20, "process {k} holds {n}");
        }
        for (t, ds) in docs.iter().enumerate() {
            for d in ds {
                assert_eq!(users[t].iter().filter(|u| u.docs.contains(d)).count(), 4, "{d} on one thread");
            }
        }
        // The same users whatever the split: ids and source addresses are by global index.
        let (one, _) = assign(&s, 1, 2, &clock, &[t], &HashMap::new());
        let key = |v: &[Vec<UserSpec>]| {
            let mut k: Vec<(u64, Option<IpAddr>)> = v.iter().flatten().map(|u| (u.client.0, u.source)).collect();
            k.sort();
            k
        };
        assert_eq!(key(&users), key(&one));
        assert!(processes_for(&s, 2, 3, &[t]).unwrap_err().to_string().contains("4 users alone are more than 3"));
    }

    #[test]
    fn users_of_a_document_share_a_thread() {
        let s: Scenario = toml::from_str(
            r#"
            name = "t"
            [stages]
            ramp_up_s = 1
            steady_s = 1
            [[groups]]
            name = "w"
            role = "editor"
            docs = 10
            users_per_doc = 1
            edit_rate = 1
            [[groups]]
            name = "r"
            role = "reader"
            docs = 10
            users_per_doc = 4
            full_copies_per_doc = 1
            [[groups]]
            name = "i"
            role = "idle"
            users_per_doc = 7
            "#,
        )
        .unwrap();
        let now = Instant::now();
        let clock = Clock { start: now, steady_from: now, steady_to: now };
        let nodes: Vec<SocketAddr> = parse_targets("ws://127.0.0.1:1/ws, 127.0.0.1:2,ws://127.0.0.1:3/ws").unwrap();
        let (users, docs) = assign(&s, 1, 3, &clock, &nodes, &HashMap::new());
        // Users spread over a cluster's nodes in turn.
        for n in &nodes {
            assert_eq!(users.iter().flatten().filter(|u| u.target == *n).count(), 19, "{n}");
        }
        assert_eq!(users.iter().map(Vec::len).sum::<usize>(), 57);
        assert_eq!(docs.iter().map(Vec::len).sum::<usize>(), 10);
        for (t, ds) in docs.iter().enumerate() {
            for d in ds {
                assert!(users[t].iter().filter(|u| u.docs.contains(d)).count() == 5);
                let full = users[t].iter().filter(|u| u.docs.contains(d) && u.full_copy).count();
                assert_eq!(full, 2, "one editor and one full-copy reader on {d}");
            }
        }
        let ids: std::collections::HashSet<u64> = users.iter().flatten().map(|u| u.client.0).collect();
        assert_eq!(ids.len(), 57);
    }
}
