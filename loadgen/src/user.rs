//! Simulated users.
//!
//! An editor or a full-copy reader runs the real client library ([`ClientSession`], the
//! engine's OT state machine) over its own WebSocket. A light reader decodes what it receives
//! and checks that revisions arrive in order, without keeping the document (so that a
//! thousand readers do not cost the generator a thousand documents). Each acting user
//! follows an open-model schedule: its k-th edit is due at `start + phase + k / rate`, and
//! latency is measured from that due time, so a generator that falls behind shows up in the
//! numbers instead of hiding them (coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::{Attributes, ClientId, Delta, Document, SelectionRange};
use tandem_net::client::{ClientSession, Event};
use tandem_net::codec::{decode_server, encode_client};
use tandem_net::protocol::{ClientMsg, Encoding, PROTOCOL_VERSION, ServerMsg};
use tungstenite::Message;

use crate::peers::Protocol;
use crate::replay::{self, Author, AuthorState};
use crate::scenario::{Role, Wire};
use crate::stats::{Clock, Latency, Stats};
use crate::wsclient::{Sender, WsClient};

/// What one generator thread shares among its users.
pub(crate) struct Thread {
    pub(crate) clock: Clock,
    pub(crate) target: SocketAddr,
    pub(crate) token: String,
    pub(crate) stats: RefCell<Stats>,
    /// (author, client_seq) → due time of the op's first edit, for propagation latency.
    pub(crate) sent_ops: RefCell<HashMap<(ClientId, u64), Instant>>,
    /// (doc, client) → due time of the client's latest cursor move.
    cursor_moves: RefCell<HashMap<(Rc<str>, ClientId), Instant>>,
    /// Set at the end of the steady stage: users stop acting.
    pub(crate) stop_acting: Cell<bool>,
    /// Set when the run is over: users close their connections.
    pub(crate) finish: Cell<bool>,
    /// Users connected and welcomed.
    pub(crate) live: Cell<usize>,
    /// What each user holds at the end, for the convergence check.
    pub(crate) finals: RefCell<Vec<Final>>,
    /// The server's protocol.
    pub(crate) protocol: Protocol,
}

impl Thread {
    pub(crate) fn new(clock: Clock, target: SocketAddr, token: String, protocol: Protocol) -> Self {
        Self {
            clock,
            target,
            token,
            stats: RefCell::new(Stats::default()),
            sent_ops: RefCell::new(HashMap::new()),
            cursor_moves: RefCell::new(HashMap::new()),
            stop_acting: Cell::new(false),
            finish: Cell::new(false),
            live: Cell::new(0),
            finals: RefCell::new(Vec::new()),
            protocol,
        }
    }

    /// Drops send records old enough that no receipt can still be on its way.
    pub(crate) fn forget_old(&self, now: Instant) {
        let horizon = Duration::from_secs(60);
        self.sent_ops.borrow_mut().retain(|_, t| now.saturating_duration_since(*t) < horizon);
        self.cursor_moves.borrow_mut().retain(|_, t| now.saturating_duration_since(*t) < horizon);
    }
}

/// One user's final view of one document.
#[derive(Debug)]
pub(crate) struct Final {
    pub(crate) doc: String,
    pub(crate) client: ClientId,
    pub(crate) rev: u64,
    /// None for light readers (they check revision order only).
    pub(crate) content: Option<Document>,
    /// Edits still unacknowledged at the end (must be 0).
    pub(crate) pending: bool,
    /// A replaying author's progress (and what stopped it, if anything).
    pub(crate) replay: Option<AuthorState>,
}

/// One user to simulate.
#[derive(Clone, Debug)]
pub(crate) struct UserSpec {
    pub(crate) client: ClientId,
    pub(crate) role: Role,
    pub(crate) docs: Vec<String>,
    pub(crate) edit_rate: f64,
    pub(crate) cursor_rate: f64,
    pub(crate) wire: Wire,
    pub(crate) full_copy: bool,
    pub(crate) start_at: Instant,
    pub(crate) source: Option<IpAddr>,
    pub(crate) seed: u64,
    /// The first user of its document (on ShareDB, the one that creates it).
    pub(crate) first_of_doc: bool,
    /// A replaying author: its document and section.
    pub(crate) author: Option<Author>,
    /// The token it says hello with.
    pub(crate) token: String,
    /// The node it connects to first (a cluster node may send it on to another).
    pub(crate) target: SocketAddr,
    /// Every node of the target (one unless a cluster): a user of a cluster whose
    /// connection drops (its node died) reconnects through the next one.
    pub(crate) nodes: std::sync::Arc<[SocketAddr]>,
}

/// A user's current connection, which a cluster node may replace by sending the user to
/// the document's owner.
type Link = Rc<RefCell<Rc<Sender>>>;

fn current(link: &Link) -> Rc<Sender> {
    Rc::clone(&link.borrow())
}

/// Where a `moved` points: the owner's address, or None while nobody serves the document
/// (a failover in progress: ask the same node again shortly).
fn moved_addr(to: &str) -> Option<SocketAddr> {
    if to.is_empty() { None } else { crate::run::parse_target(to).ok() }
}

/// Follows a cluster's `moved` (or reconnects after a lost connection) at most this many
/// times in a row without the document opening before counting the user as failed.
const MAX_MOVES_IN_A_ROW: u32 = 50;

/// Why a user's connection ended while the run goes on.
enum Ended {
    /// A node said the document is served at this address (None: nobody serves it yet).
    Moved(Option<SocketAddr>),
    /// The connection dropped.
    Lost,
}

/// Where a user goes next, and counts it: the owner a `moved` named, the same node again
/// shortly while nobody serves the document, or (in a cluster) the next node after a lost
/// connection. None when it should give up: a single server dropped it, or it moved too
/// often without opening its document.
async fn next_node(
    thread: &Thread,
    spec: &UserSpec,
    at: SocketAddr,
    ended: Ended,
    in_a_row: u32,
) -> Option<SocketAddr> {
    {
        let mut stats = thread.stats.borrow_mut();
        if matches!(ended, Ended::Lost) {
            stats.disconnects += 1;
        }
        if in_a_row > MAX_MOVES_IN_A_ROW || (matches!(ended, Ended::Lost) && spec.nodes.len() < 2) {
            stats.error(&thread.clock, Instant::now());
            return None;
        }
    }
    match ended {
        Ended::Moved(Some(addr)) => {
            thread.stats.borrow_mut().moves += 1;
            // Sent round in circles (the owner named just died, and the others still see its
            // lease): back off until the lease passes on.
            if in_a_row > 1 {
                monoio::time::sleep(Duration::from_millis(50 * u64::from(in_a_row.min(10)))).await;
            }
            Some(addr)
        }
        Ended::Moved(None) => {
            thread.stats.borrow_mut().moves += 1;
            monoio::time::sleep(Duration::from_millis(200)).await;
            Some(at)
        }
        Ended::Lost => {
            monoio::time::sleep(Duration::from_millis(100)).await;
            Some(next_of(&spec.nodes, at))
        }
    }
}

/// The node after `at` in the list (the first if `at` is not one: an owner it was sent to).
fn next_of(nodes: &[SocketAddr], at: SocketAddr) -> SocketAddr {
    nodes.iter().position(|n| *n == at).map_or(nodes[0], |i| nodes[(i + 1) % nodes.len()])
}

/// Connects to `at`, or in a cluster to the nodes after it in turn while they refuse (a
/// dead node's port), for a few seconds at most.
async fn connect_to(thread: &Thread, spec: &UserSpec, enc: Encoding, at: SocketAddr) -> Option<(WsClient, SocketAddr)> {
    let mut at = at;
    for attempt in 0..20 {
        if thread.finish.get() {
            return None;
        }
        if let Ok(ws) = WsClient::connect(at, "/ws", enc.subprotocol(), spec.source).await {
            return Some((ws, at));
        }
        if spec.nodes.len() < 2 {
            break;
        }
        at = next_of(&spec.nodes, at);
        if attempt % spec.nodes.len() == spec.nodes.len() - 1 {
            monoio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    thread.stats.borrow_mut().error(&thread.clock, Instant::now());
    None
}

fn encoding(w: Wire) -> Encoding {
    match w {
        Wire::Binary => Encoding::Binary,
        Wire::Json => Encoding::Json,
    }
}

fn send(sender: &Sender, msg: &ClientMsg, enc: Encoding) {
    let payload = encode_client(msg, enc);
    sender.send(match enc {
        Encoding::Binary => Message::binary(payload),
        Encoding::Json => Message::text(String::from_utf8(payload).expect("JSON is UTF-8")),
    });
}

/// An edit made but not yet acknowledged: its sequence number and due time.
struct PendingEdit {
    seq: u64,
    due: Instant,
}

/// A full user's state, shared by its reader and its actor.
struct Full {
    session: ClientSession,
    /// Per document: edits waiting for their ack, in order.
    pending: HashMap<String, VecDeque<PendingEdit>>,
    /// Per document: this user's caret.
    caret: HashMap<String, usize>,
    docs: Vec<Rc<str>>,
    opened_at: HashMap<String, Instant>,
    welcomed_at: Option<Instant>,
    /// A replaying author's state.
    replay: Option<AuthorState>,
    /// Set when a cluster node said the document is served elsewhere (its `to`).
    moving: Option<String>,
    /// Set when the user's last connection ended: its tasks stop.
    ended: bool,
    /// A document opened on the current connection (a user that keeps being sent on
    /// without ever opening one gives up after [`MAX_MOVES_IN_A_ROW`]).
    opened_here: bool,
}

impl Full {
    /// Makes an edit due at `due`, noting its sequence number for the ack; false if the
    /// session refused it.
    fn submit(&mut self, thread: &Thread, doc: &str, delta: Delta, due: Instant) -> bool {
        let before = self.session.doc_state(doc).and_then(|s| s.inflight().map(|o| o.client_seq));
        if self.session.edit(doc, delta).is_err() {
            return false;
        }
        let ds = self.session.doc_state(doc).expect("open");
        // Sent now, or buffered: then it goes out with the next sequence number.
        let after = ds.inflight().map(|o| o.client_seq);
        let seq = if after == before { ds.next_seq() } else { after.expect("just sent") };
        self.pending.entry(doc.to_owned()).or_default().push_back(PendingEdit { seq, due });
        thread.stats.borrow_mut().edit(&thread.clock, due);
        true
    }

    /// Sends transaction `i` of the replaying author's trace, due at `due`; what went wrong
    /// if it could not.
    fn replay_txn(&mut self, thread: &Thread, doc: &str, i: usize, due: Instant) -> Result<(), String> {
        let d = self.replay.as_mut().expect("a replaying author").delta(i)?;
        if !self.submit(thread, doc, d, due) {
            return Err(format!("{doc}: the session refused transaction {i}"));
        }
        let r = self.replay.as_mut().expect("a replaying author");
        r.sent = i + 1;
        // The caret (for cursor moves) follows the typing.
        let at = r.section.unwrap_or(0) + r.last_edit_at;
        self.caret.insert(doc.to_owned(), at);
        Ok(())
    }
}

/// Runs one user from its start time to the end of the run.
pub(crate) async fn run(thread: Rc<Thread>, spec: UserSpec) {
    match thread.protocol {
        Protocol::Tandem => {}
        Protocol::ShareDb => {
            let creator = spec.first_of_doc;
            return crate::peers::sharedb::run(thread, spec, creator).await;
        }
        Protocol::Yjs => return crate::peers::yjs::run(thread, spec).await,
    }
    monoio::time::sleep_until(monoio::time::Instant::from_std(spec.start_at)).await;
    let enc = encoding(spec.wire);
    let connect_start = Instant::now();
    let Ok(ws) = WsClient::connect(spec.target, "/ws", enc.subprotocol(), spec.source).await else {
        thread.stats.borrow_mut().error(&thread.clock, Instant::now());
        return;
    };
    if spec.role == Role::Reader && !spec.full_copy {
        light_reader(thread, spec, ws, enc, connect_start).await;
    } else {
        full_user(thread, spec, ws, enc, connect_start).await;
    }
}

async fn full_user(thread: Rc<Thread>, spec: UserSpec, ws: WsClient, enc: Encoding, connect_start: Instant) {
    let link: Link = Rc::new(RefCell::new(Rc::clone(&ws.sender)));
    let mut session = ClientSession::new(spec.client, &spec.token, &format!("user-{}", spec.client), "");
    session.on_connect();
    for doc in &spec.docs {
        session.open(doc);
    }
    let state = Rc::new(RefCell::new(Full {
        session,
        pending: HashMap::new(),
        caret: HashMap::new(),
        docs: spec.docs.iter().map(|d| Rc::from(d.as_str())).collect(),
        opened_at: spec.docs.iter().map(|d| (d.clone(), connect_start)).collect(),
        welcomed_at: None,
        replay: spec.author.clone().map(AuthorState::new),
        moving: None,
        ended: false,
        opened_here: false,
    }));
    flush(&thread, &state, &current(&link), enc, &spec);
    if spec.role == Role::Editor || spec.cursor_rate > 0.0 {
        monoio::spawn(actor(Rc::clone(&thread), Rc::clone(&state), Rc::clone(&link), enc, spec.clone()));
    }
    if spec.author.is_some() {
        monoio::spawn(replayer(Rc::clone(&thread), Rc::clone(&state), Rc::clone(&link), enc, spec.clone()));
    }
    // Detached: it ends once the run finishes.
    monoio::spawn(close_at_finish(Rc::clone(&thread), Rc::clone(&link)));
    let mut ws = ws;
    let mut at = spec.target;
    let mut in_a_row = 0;
    loop {
        let t = Rc::clone(&thread);
        let st = Rc::clone(&state);
        let lk = Rc::clone(&link);
        let sp = spec.clone();
        ws.run(move |bytes| {
            let Ok(msg) = decode_server(&bytes, enc) else {
                t.stats.borrow_mut().error(&t.clock, Instant::now());
                return;
            };
            on_message(&t, &st, msg, connect_start);
            if st.borrow().moving.is_some() {
                // Served elsewhere: this connection ends and the user follows.
                lk.borrow().close();
                return;
            }
            flush(&t, &st, &current(&lk), enc, &sp);
        })
        .await;
        if thread.finish.get() {
            break;
        }
        let ended = state.borrow_mut().moving.take().map_or(Ended::Lost, |to| Ended::Moved(moved_addr(&to)));
        in_a_row = if std::mem::take(&mut state.borrow_mut().opened_here) { 0 } else { in_a_row + 1 };
        state.borrow_mut().session.on_disconnect();
        let Some(to) = next_node(&thread, &spec, at, ended, in_a_row).await else { break };
        let Some((next, to)) = connect_to(&thread, &spec, enc, to).await else { break };
        at = to;
        *link.borrow_mut() = Rc::clone(&next.sender);
        state.borrow_mut().session.on_connect();
        flush(&thread, &state, &current(&link), enc, &spec);
        ws = next;
    }
    let mut st = state.borrow_mut();
    st.ended = true;
    let mut replay = st.replay.take();
    for doc in &spec.docs {
        let ds = st.session.doc_state(doc);
        thread.finals.borrow_mut().push(Final {
            doc: doc.clone(),
            client: spec.client,
            rev: ds.map_or(0, tandem_engine::ClientDoc::rev),
            content: ds.map(|d| d.document().clone()),
            pending: ds.is_none_or(tandem_engine::ClientDoc::has_pending),
            replay: replay.take(),
        });
    }
    drop(st);
}

/// Sends what the session wants sent, noting when each op's first edit was due.
fn flush(thread: &Thread, state: &RefCell<Full>, sender: &Sender, enc: Encoding, spec: &UserSpec) {
    let mut st = state.borrow_mut();
    while let Some(msg) = st.session.poll_outgoing() {
        if let ClientMsg::Submit { doc, client_seq, .. } = &msg
            && let Some(first) = st.pending.get(doc).and_then(|q| q.iter().find(|p| p.seq == *client_seq))
        {
            thread.sent_ops.borrow_mut().insert((spec.client, *client_seq), first.due);
        }
        send(sender, &msg, enc);
    }
}

fn on_message(thread: &Thread, state: &RefCell<Full>, msg: ServerMsg, connect_start: Instant) {
    let now = Instant::now();
    let mut st = state.borrow_mut();
    let st = &mut *st;
    if let Err(_e) = st.session.handle(msg) {
        thread.stats.borrow_mut().error(&thread.clock, now);
        return;
    }
    let mut stats = thread.stats.borrow_mut();
    while let Some(event) = st.session.poll_event() {
        match event {
            // The first welcome only: later ones follow a `moved`.
            Event::Welcome { .. } if st.welcomed_at.is_none() => {
                st.welcomed_at = Some(now);
                stats.setup_latency(Latency::Connect, connect_start, now);
                thread.live.set(thread.live.get() + 1);
            }
            Event::Opened { doc } => {
                st.opened_here = true;
                if let Some(t) = st.opened_at.remove(&doc) {
                    stats.setup_latency(Latency::Join, t, now);
                }
                let len = st.session.document(&doc).map_or(0, Document::len);
                if let Some(r) = &mut st.replay
                    && r.author.doc.name == doc
                    && let Err(e) = r.opened(st.session.doc_state(&doc).map_or(0, tandem_engine::ClientDoc::rev))
                {
                    r.broken = Some(e);
                    stats.error(&thread.clock, now);
                }
                let caret = st.caret.entry(doc).or_insert(len);
                *caret = (*caret).min(len);
            }
            Event::Acked { doc, client_seq, .. } => {
                if let Some(q) = st.pending.get_mut(&doc) {
                    while q.front().is_some_and(|p| p.seq <= client_seq) {
                        let p = q.pop_front().expect("checked");
                        stats.latency(&thread.clock, Latency::Ack, p.due, now);
                    }
                }
            }
            Event::Remote { doc, delta, author, client_seq, .. } => {
                stats.delivered(&thread.clock, now);
                if let Some(due) = thread.sent_ops.borrow().get(&(author, client_seq)) {
                    stats.latency(&thread.clock, Latency::Propagation, *due, now);
                }
                if let Some(c) = st.caret.get_mut(&doc) {
                    *c = delta.transform_position(*c, true);
                }
                if let Some(r) = &mut st.replay
                    && r.author.doc.name == doc
                {
                    r.remote(&delta);
                }
            }
            Event::Presence { doc, client, .. } => {
                let key = (Rc::from(doc.as_str()), client);
                if let Some(due) = thread.cursor_moves.borrow().get(&key) {
                    stats.latency(&thread.clock, Latency::Presence, *due, now);
                }
            }
            Event::RolledBack { doc, .. } => {
                st.pending.remove(&doc);
                stats.error(&thread.clock, now);
            }
            Event::Error { code, message, doc, .. } => {
                say_first_error(code, &message, doc.as_deref());
                stats.error(&thread.clock, now);
            }
            // A cluster node that does not serve the document: the user follows it there
            // (see `full_user`).
            Event::Moved { to, .. } => st.moving = Some(to),
            Event::Welcome { .. }
            | Event::Joined { .. }
            | Event::Left { .. }
            | Event::Noted { .. }
            | Event::Notes { .. }
            | Event::Closed { .. }
            | Event::Revision { .. }
            | Event::Revisions { .. }
            | Event::Changes { .. }
            | Event::Role { .. }
            | Event::TokenExpires { .. }
            | Event::ExportFinished { .. } => {}
        }
    }
}

/// A keystroke at the caret: mostly a char, sometimes a backspace or a newline.
pub(crate) fn keystroke(rng: &mut ChaCha8Rng, caret: &mut usize, len: usize) -> Delta {
    *caret = (*caret).min(len);
    let roll = rng.random_range(0..100);
    if roll < 15 && *caret > 0 {
        *caret -= 1;
        return Delta::new().retain(*caret, Attributes::NONE).delete(1).chop();
    }
    let text =
        if roll < 20 { "\n" } else { ["e", "t", "a", "o", "i", "n", " ", "s", "h", "r"][rng.random_range(0..10)] };
    let d = Delta::new().retain(*caret, Attributes::NONE).insert(text, Attributes::NONE);
    *caret += 1;
    d
}

/// Edits and cursor moves on schedule, until the steady stage ends.
async fn actor(thread: Rc<Thread>, state: Rc<RefCell<Full>>, link: Link, enc: Encoding, spec: UserSpec) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let edit_every = (spec.role == Role::Editor).then(|| Duration::from_secs_f64(1.0 / spec.edit_rate));
    let cursor_every = (spec.cursor_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.cursor_rate));
    // A random phase per user, so users do not act in lockstep.
    let mut next_edit = edit_every.map(|e| spec.start_at + e.mul_f64(rng.random_range(0.0..1.0)));
    let mut next_cursor = cursor_every.map(|e| spec.start_at + e.mul_f64(rng.random_range(0.0..1.0)));
    while !thread.stop_acting.get() && !gone(&state) {
        let Some(due) = [next_edit, next_cursor].into_iter().flatten().min() else { return };
        monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
        if thread.stop_acting.get() {
            return;
        }
        let now = Instant::now();
        {
            let mut st = state.borrow_mut();
            let st = &mut *st;
            let doc = Rc::clone(&st.docs[rng.random_range(0..st.docs.len())]);
            // Until the document is open (ramp-up, re-opens) due actions are skipped.
            let open = st.session.is_open(&doc);
            // Every edit due by now, each charged to its own due time.
            while let (Some(every), Some(t)) = (edit_every, next_edit)
                && t <= now
            {
                if open {
                    let len = st.session.document(&doc).map_or(0, Document::len);
                    let caret = st.caret.entry(doc.to_string()).or_insert(len);
                    let d = keystroke(&mut rng, caret, len);
                    st.submit(&thread, &doc, d, t);
                }
                next_edit = Some(t + every);
            }
            if let (Some(every), Some(t)) = (cursor_every, next_cursor)
                && t <= now
            {
                if open {
                    let len = st.session.document(&doc).map_or(0, Document::len);
                    let caret = st.caret.entry(doc.to_string()).or_insert(0);
                    *caret = (*caret + rng.random_range(0..40)).saturating_sub(20).min(len);
                    if st.session.set_selection(&doc, &[SelectionRange::caret(*caret)]).is_ok() {
                        thread.cursor_moves.borrow_mut().insert((Rc::clone(&doc), spec.client), t);
                        if thread.clock.measured(t) {
                            thread.stats.borrow_mut().presence_sent += 1;
                        }
                    }
                }
                // Missed cursor moves are not made up for: only the latest position matters.
                let mut next = t + every;
                while next <= now {
                    next += every;
                }
                next_cursor = Some(next);
            }
        }
        flush(&thread, &state, &current(&link), enc, &spec);
    }
}

/// True once the user's last connection ended (not while it follows a `moved`).
fn gone(state: &RefCell<Full>) -> bool {
    state.borrow().ended
}

/// A replaying author: its trace's transactions at their recorded times (from the start of
/// the steady stage), each charged to its own due time, until the steady stage ends.
async fn replayer(thread: Rc<Thread>, state: Rc<RefCell<Full>>, link: Link, enc: Encoding, spec: UserSpec) {
    let author = spec.author.clone().expect("a replaying author");
    let doc = author.doc.name.clone();
    let n = author.doc.traces[author.index].trace.txns.len();
    let (from, until) = (thread.clock.steady_from, thread.clock.steady_to);
    let mut i = 0;
    while i < n && replay::due(&author, from, i) < until && !thread.stop_acting.get() && !gone(&state) {
        monoio::time::sleep_until(monoio::time::Instant::from_std(replay::due(&author, from, i))).await;
        if thread.stop_acting.get() {
            break;
        }
        let ready = {
            let mut st = state.borrow_mut();
            let st = &mut *st;
            let r = st.replay.as_mut().expect("a replaying author");
            if r.broken.is_some() {
                return;
            }
            let ready = r.section.is_some() && st.session.is_open(&doc);
            let now = Instant::now();
            // Every transaction due by now, each charged to its own due time.
            while ready && i < n {
                let t = replay::due(&author, from, i);
                if t > now || t >= until {
                    break;
                }
                if let Err(e) = st.replay_txn(&thread, &doc, i, t) {
                    st.replay.as_mut().expect("a replaying author").broken = Some(e);
                    thread.stats.borrow_mut().error(&thread.clock, now);
                    break;
                }
                i += 1;
            }
            ready
        };
        flush(&thread, &state, &current(&link), enc, &spec);
        if !ready {
            // Not open yet (the transaction waits; its latency counts from when it was due).
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn close_at_finish(thread: Rc<Thread>, link: Link) {
    while !thread.finish.get() {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    link.borrow().close();
}

async fn light_reader(thread: Rc<Thread>, spec: UserSpec, ws: WsClient, enc: Encoding, connect_start: Instant) {
    let link: Link = Rc::new(RefCell::new(Rc::clone(&ws.sender)));
    let revs: Rc<RefCell<HashMap<String, u64>>> = Rc::new(RefCell::new(HashMap::new()));
    let opened_at = Rc::new(RefCell::new(HashMap::new()));
    let hello = |sender: &Sender, revs: &HashMap<String, u64>| {
        let hello = ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            client: spec.client,
            token: spec.token.clone(),
            name: format!("user-{}", spec.client),
            color: String::new(),
        };
        send(sender, &hello, enc);
        for doc in &spec.docs {
            send(sender, &ClientMsg::Open { doc: doc.clone(), from_rev: revs.get(doc).copied() }, enc);
        }
    };
    hello(&ws.sender, &revs.borrow());
    for doc in &spec.docs {
        opened_at.borrow_mut().insert(doc.clone(), Instant::now());
    }
    // Detached: it ends once the run finishes.
    monoio::spawn(close_at_finish(Rc::clone(&thread), Rc::clone(&link)));
    let moving: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let (mut ws, mut at, mut in_a_row) = (ws, spec.target, 0);
    let live = Rc::new(Cell::new(false));
    loop {
        let t = Rc::clone(&thread);
        let r = Rc::clone(&revs);
        let (opened_at, moving_to, lk) = (Rc::clone(&opened_at), Rc::clone(&moving), Rc::clone(&link));
        let opened = Rc::new(Cell::new(false));
        let (o, live) = (Rc::clone(&opened), Rc::clone(&live));
        ws.run(move |bytes: Bytes| {
            let now = Instant::now();
            let mut stats = t.stats.borrow_mut();
            match decode_server(&bytes, enc) {
                // The first welcome only: later ones follow a `moved`.
                Ok(ServerMsg::Welcome { .. }) if !live.replace(true) => {
                    stats.setup_latency(Latency::Connect, connect_start, now);
                    t.live.set(t.live.get() + 1);
                }
                Ok(ServerMsg::Opened { doc, rev, .. }) => {
                    o.set(true);
                    if let Some(at) = opened_at.borrow_mut().remove(&doc) {
                        stats.setup_latency(Latency::Join, at, now);
                    }
                    r.borrow_mut().insert(doc, rev);
                }
                Ok(ServerMsg::Op { doc, rev, author, client_seq, .. }) => {
                    stats.delivered(&t.clock, now);
                    let mut revs = r.borrow_mut();
                    let last = revs.entry(doc).or_insert(0);
                    if rev != *last + 1 {
                        stats.gaps += 1;
                    }
                    *last = rev;
                    if let Some(due) = t.sent_ops.borrow().get(&(author, client_seq)) {
                        stats.latency(&t.clock, Latency::Propagation, *due, now);
                    }
                }
                Ok(ServerMsg::Presence { doc, peers, .. }) => {
                    let key_doc: Rc<str> = Rc::from(doc.as_str());
                    for p in peers {
                        if let Some(due) = t.cursor_moves.borrow().get(&(Rc::clone(&key_doc), p.client)) {
                            stats.latency(&t.clock, Latency::Presence, *due, now);
                        }
                    }
                }
                // Served elsewhere: this connection ends and the reader follows.
                Ok(ServerMsg::Moved { to, .. }) => {
                    *moving_to.borrow_mut() = Some(to);
                    lk.borrow().close();
                }
                Ok(ServerMsg::Error { code, message, doc, .. }) => {
                    say_first_error(code, &message, doc.as_deref());
                    stats.error(&t.clock, now);
                }
                Err(_) => stats.error(&t.clock, now),
                Ok(_) => {}
            }
        })
        .await;
        if thread.finish.get() {
            break;
        }
        let ended = moving.borrow_mut().take().map_or(Ended::Lost, |to| Ended::Moved(moved_addr(&to)));
        in_a_row = if opened.get() { 0 } else { in_a_row + 1 };
        let Some(to) = next_node(&thread, &spec, at, ended, in_a_row).await else { break };
        let Some((next, to)) = connect_to(&thread, &spec, enc, to).await else { break };
        at = to;
        *link.borrow_mut() = Rc::clone(&next.sender);
        hello(&next.sender, &revs.borrow());
        ws = next;
    }
    for (doc, rev) in revs.borrow().iter() {
        thread.finals.borrow_mut().push(Final {
            doc: doc.clone(),
            client: spec.client,
            rev: *rev,
            content: None,
            pending: false,
            replay: None,
        });
    }
}

/// Prints the process's first error message from the server (why users count errors: a
/// refused token, a role that may not edit, an overloaded server); the others are counted.
fn say_first_error(code: tandem_net::protocol::ErrorCode, message: &str, doc: Option<&str>) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let on = doc.map(|d| format!(" on {d}")).unwrap_or_default();
        eprintln!(
            "the server answered an error{on}: {} ({message}); further errors are counted, not printed",
            code.as_str()
        );
    });
}
