//! Seeded simulation of many clients editing one document through the sequencer.
//!
//! Each client has a FIFO link to the server in each direction (TCP's guarantee); the
//! simulation delivers messages from random links in random order, makes random rich-text
//! edits (also while offline), and drops connections at random. A dropped connection loses
//! everything the server had not yet read, except a random prefix the server did read: those
//! frames are still processed later, as a connection the server has not yet noticed is dead
//! would be ("zombie" frames: their acks go nowhere). Clients reconnect, catch up (or resync
//! from a snapshot when the server's history window no longer reaches back) and resend.
//!
//! After quiescence every client must hold the server's document, and every op a client sent
//! must have been committed exactly once.
//!
//! Replay one seed: `TANDEM_SEED=n cargo test -p tandem-engine --test simulation`.
//! The soak test: `cargo test --release -p tandem-engine --test simulation -- --ignored`
//! (`TANDEM_SOAK_SEEDS`, default 1,000,000).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{
    ClientDoc, ClientId, Commit, Delta, DocState, Document, Error, Limits, Outgoing, Remote, Submitted,
};

enum ToServer {
    Submit(Outgoing),
    Open { from_rev: u64 },
}

enum ToClient {
    Ack {
        client_seq: u64,
        rev: u64,
    },
    Op(Arc<Commit>),
    /// Catch-up done (after the ops since the client's revision).
    Opened,
    /// History no longer reaches back: start over from this document.
    Snapshot {
        rev: u64,
        doc: Box<Document>,
        last_seq: Option<u64>,
    },
    /// The submit's base revision was too old: re-open.
    TooOld,
}

struct Client {
    doc: ClientDoc,
    session: u64,
    connected: bool,
    /// Between sending open and receiving its answer.
    opening: bool,
    up: VecDeque<(u64, ToServer)>,
    down: VecDeque<ToClient>,
}

struct Sim {
    rng: ChaCha8Rng,
    server: DocState,
    /// The session each client's current connection has on the server (None: none).
    sessions: Vec<Option<u64>>,
    /// Whether that session has opened the document (receives its ops).
    subscribed: Vec<bool>,
    /// The session that last opened the document, per client: the server keeps one session
    /// per client id and document, so frames from an older one are refused (not open).
    opened_by: Vec<u64>,
    clients: Vec<Client>,
    /// Frames the server read from connections that have since died.
    zombies: VecDeque<(usize, u64, ToServer)>,
    committed: HashSet<(ClientId, u64)>,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.random_range(8..=12);
        let history_ops = if rng.random_bool(0.3) { rng.random_range(2..12) } else { 10_000 };
        let limits = Limits { history_ops, ..Limits::default() };
        let start = Document::from_delta(&random::document(&mut rng, 20, Shape::RICH)).unwrap();
        let server = DocState::restore(0, start.clone(), limits);
        let clients = (0..n)
            .map(|i| Client {
                doc: ClientDoc::new(ClientId(i as u64 + 1), 0, start.clone()),
                session: 0,
                connected: true,
                opening: false,
                up: VecDeque::new(),
                down: VecDeque::new(),
            })
            .collect();
        Self {
            rng,
            server,
            sessions: vec![Some(0); n],
            subscribed: vec![true; n],
            opened_by: vec![0; n],
            clients,
            zombies: VecDeque::new(),
            committed: HashSet::new(),
            seed,
        }
    }

    fn send(&mut self, i: usize, out: Option<Outgoing>) {
        let c = &mut self.clients[i];
        if let Some(out) = out
            && c.connected
            && !c.opening
        {
            c.up.push_back((c.session, ToServer::Submit(out)));
        }
    }

    fn edit(&mut self, i: usize) {
        let len = self.clients[i].doc.document().len();
        let d = random::delta(&mut self.rng, len, Shape::RICH);
        let out = self.clients[i].doc.edit(d).unwrap_or_else(|e| panic!("seed {}: local edit: {e}", self.seed));
        self.send(i, out);
    }

    fn disconnect(&mut self, i: usize) {
        let keep = self.rng.random_range(0..=self.clients[i].up.len());
        let c = &mut self.clients[i];
        for (session, msg) in c.up.drain(..).take(keep) {
            self.zombies.push_back((i, session, msg));
        }
        c.down.clear();
        c.connected = false;
        c.opening = false;
        self.sessions[i] = None;
        self.subscribed[i] = false;
    }

    fn reconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.session += 1;
        c.connected = true;
        c.opening = true;
        c.up.push_back((c.session, ToServer::Open { from_rev: c.doc.rev() }));
        self.sessions[i] = Some(c.session);
    }

    fn server_receive(&mut self, i: usize, session: u64, msg: ToServer) {
        let live = self.sessions[i] == Some(session);
        match msg {
            ToServer::Open { from_rev } => {
                if !live {
                    return;
                }
                // Subscribing and catching up happen in one step on the document's core; an
                // older session of the same client is superseded.
                self.subscribed[i] = true;
                self.opened_by[i] = session;
                let me = self.clients[i].doc.client();
                let down = &mut self.clients[i].down;
                match self.server.ops_since(from_rev) {
                    Ok(ops) => {
                        down.extend(ops.map(|c| ToClient::Op(Arc::clone(c))));
                        down.push_back(ToClient::Opened);
                    }
                    Err(Error::BaseRevisionTooOld { .. }) => {
                        let last_seq = self.server.last_client_seq(me);
                        down.push_back(ToClient::Snapshot {
                            rev: self.server.rev(),
                            doc: Box::new(self.server.document().clone()),
                            last_seq,
                        });
                    }
                    Err(e) => panic!("seed {}: open from {from_rev}: {e}", self.seed),
                }
            }
            // A superseded session's op is refused as not open (to a dead connection).
            ToServer::Submit(_) if self.opened_by[i] != session => {}
            ToServer::Submit(out) => {
                let author = self.clients[i].doc.client();
                match self.server.submit(author, out.base_rev, out.client_seq, out.delta) {
                    Ok(Submitted::Applied(commit)) => {
                        assert!(
                            self.committed.insert((author, commit.client_seq)),
                            "seed {}: committed twice",
                            self.seed
                        );
                        for (j, c) in self.clients.iter_mut().enumerate() {
                            let subscribed = self.subscribed[j];
                            if j == i && live {
                                c.down.push_back(ToClient::Ack { client_seq: commit.client_seq, rev: commit.rev });
                            } else if subscribed {
                                c.down.push_back(ToClient::Op(Arc::clone(&commit)));
                            }
                        }
                    }
                    Ok(Submitted::Duplicate { rev }) => {
                        if live {
                            self.clients[i].down.push_back(ToClient::Ack { client_seq: out.client_seq, rev });
                        }
                    }
                    Err(Error::BaseRevisionTooOld { .. }) => {
                        // The protocol closes the document for that session; the client
                        // re-opens it.
                        if live {
                            self.subscribed[i] = false;
                            self.clients[i].down.push_back(ToClient::TooOld);
                        }
                    }
                    // A stale frame from a dead connection: its op was applied earlier (its
                    // successor was only sent after its ack), and nobody hears the refusal.
                    Err(Error::ClientSeqReused { .. }) if !live => {}
                    Err(e) => panic!("seed {}: server refused client {i}: {e}", self.seed),
                }
            }
        }
    }

    fn client_receive(&mut self, i: usize, msg: ToClient) {
        let seed = self.seed;
        let c = &mut self.clients[i];
        let out = match msg {
            ToClient::Ack { client_seq, rev } => {
                c.doc.ack(client_seq, rev).unwrap_or_else(|e| panic!("seed {seed}: ack: {e}"))
            }
            ToClient::Op(commit) => match c.doc.remote(commit.rev, &commit.delta, commit.author, commit.client_seq) {
                Ok(Remote::Acked(next)) => next,
                Ok(Remote::Applied(_)) => None,
                Err(e) => panic!("seed {seed}: client {i} remote op: {e}"),
            },
            ToClient::Opened => {
                c.opening = false;
                c.doc.resend()
            }
            ToClient::Snapshot { rev, doc, last_seq } => {
                c.opening = false;
                c.doc.resync(rev, *doc, last_seq).unwrap_or_else(|e| panic!("seed {seed}: resync: {e}"))
            }
            ToClient::TooOld => {
                // Re-open from where we are; the answer will be a snapshot.
                c.opening = true;
                c.up.push_back((c.session, ToServer::Open { from_rev: c.doc.rev() }));
                None
            }
        };
        self.send(i, out);
    }

    /// Delivers one message from a random non-empty link; false when all are empty.
    fn deliver(&mut self) -> bool {
        let n = self.clients.len();
        let mut links: Vec<usize> = (0..2 * n)
            .filter(|&k| if k < n { !self.clients[k].up.is_empty() } else { !self.clients[k - n].down.is_empty() })
            .collect();
        if !self.zombies.is_empty() {
            links.push(2 * n);
        }
        if links.is_empty() {
            return false;
        }
        let k = links[self.rng.random_range(0..links.len())];
        if k == 2 * n {
            let (i, session, msg) = self.zombies.pop_front().expect("non-empty");
            self.server_receive(i, session, msg);
        } else if k < n {
            let (session, msg) = self.clients[k].up.pop_front().expect("non-empty");
            self.server_receive(k, session, msg);
        } else {
            let msg = self.clients[k - n].down.pop_front().expect("non-empty");
            self.client_receive(k - n, msg);
        }
        true
    }

    fn run(&mut self, steps: usize) {
        let n = self.clients.len();
        for _ in 0..steps {
            let i = self.rng.random_range(0..n);
            match self.rng.random_range(0..100) {
                0..=24 => self.edit(i),
                25..=27 if self.clients[i].connected => self.disconnect(i),
                28..=35 if !self.clients[i].connected => self.reconnect(i),
                _ => {
                    self.deliver();
                }
            }
        }
        // Quiesce: everyone back online, every message delivered.
        for i in 0..n {
            if !self.clients[i].connected {
                self.reconnect(i);
            }
        }
        let mut rounds = 0;
        while self.deliver() {
            rounds += 1;
            assert!(rounds < 1_000_000, "seed {}: no quiescence", self.seed);
        }
    }

    fn check(&self) {
        let seed = self.seed;
        let mut sent: HashMap<ClientId, u64> = HashMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            assert!(!c.doc.has_pending(), "seed {seed}: client {i} still has pending edits");
            assert_eq!(c.doc.rev(), self.server.rev(), "seed {seed}: client {i} revision");
            assert_eq!(c.doc.document(), self.server.document(), "seed {seed}: client {i} diverged");
            assert_eq!(c.doc.server_document(), self.server.document(), "seed {seed}: client {i} shadow");
            sent.insert(c.doc.client(), c.doc.next_seq() - 1);
        }
        for (client, last) in sent {
            for seq in 1..=last {
                assert!(self.committed.contains(&(client, seq)), "seed {seed}: {client} op {seq} never committed");
            }
        }
    }
}

fn run_seeds(seeds: impl Iterator<Item = u64>, steps: usize) {
    for seed in seeds {
        let mut sim = Sim::new(seed);
        sim.run(steps);
        sim.check();
    }
}

#[test]
fn clients_converge_under_delays_and_disconnects() {
    if let Ok(s) = std::env::var("TANDEM_SEED") {
        return run_seeds(std::iter::once(s.parse().expect("TANDEM_SEED is a number")), 400);
    }
    let n = std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    run_seeds(0..n, 400);
}

#[test]
#[ignore = "soak: millions of seeds; run with --release -- --ignored"]
fn soak_clients_converge() {
    let n = std::env::var("TANDEM_SOAK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000u64);
    run_seeds(1_000_000..1_000_000 + n, 400);
}

/// Two sessions sharing one client id (two browser tabs), each numbering its ops from the
/// same `client_seq`, submitting at random bases, sometimes resending an op exactly: the
/// server never acknowledges an op that is not in the document.
#[test]
fn two_sessions_sharing_an_id_never_get_an_ack_for_an_op_not_applied() {
    let seeds: Vec<u64> = match std::env::var("TANDEM_SEED") {
        Ok(s) => vec![s.parse().expect("TANDEM_SEED is a number")],
        Err(_) => (0..std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)).collect(),
    };
    for seed in seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let limits = Limits { history_ops: rng.random_range(2..20), ..Limits::default() };
        let mut server = DocState::new(limits);
        let id = ClientId(7);
        // Per tab: its next client_seq and its last submission (base, delta, token).
        let mut next = [1u64, 1];
        let mut last: [Option<(u64, Delta, String)>; 2] = [None, None];
        let mut acked: Vec<String> = Vec::new();
        for step in 0..200 {
            let tab = rng.random_range(0..2);
            let (base, delta, token, seq) = match &last[tab] {
                Some((base, delta, token)) if rng.random_bool(0.2) => {
                    (*base, delta.clone(), token.clone(), next[tab] - 1)
                }
                _ => {
                    let token = format!("<{tab}.{step}>");
                    let base = rng.random_range(server.oldest_base()..=server.rev());
                    let delta = Delta::new().insert(&token, tandem_engine::Attributes::NONE);
                    last[tab] = Some((base, delta.clone(), token.clone()));
                    next[tab] += 1;
                    (base, delta, token, next[tab] - 1)
                }
            };
            match server.submit(id, base, seq, delta) {
                Ok(Submitted::Applied(_) | Submitted::Duplicate { .. }) => acked.push(token),
                Err(_) => {}
            }
        }
        let text = server.document().text();
        for token in &acked {
            assert!(text.contains(token.as_str()), "seed {seed}: {token} was acknowledged but is not in {text:?}");
        }
    }
}
