//! Client sessions and two shards, stepped in memory (no sockets, no threads): every frame is
//! really encoded and decoded, links are FIFO but delivered in random order, cross-core
//! messages travel their own FIFO queues, and clients drop and reconnect (to a random core)
//! at random. After quiescence every client holds its documents exactly as their owner
//! shards do. `TANDEM_SEED=n` replays one seed; `TANDEM_SEEDS=n` runs more.

mod support;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{ClientId, SelectionRange};
use tandem_net::client::ClientSession;
use tandem_net::codec::{decode_client, decode_server, encode_client};
use tandem_net::protocol::{DocId, Encoding};
use tandem_net::session::ConnId;
use tandem_net::shard::{CoreMsg, Effect, Shard, ShardConfig};

const DOCS: [&str; 3] = ["a", "b", "c"];

struct SimClient {
    session: ClientSession,
    encoding: Encoding,
    conn: Option<ConnId>,
    /// Encoded messages on their way to the server.
    up: VecDeque<Vec<u8>>,
    /// Frames on their way to the client.
    down: VecDeque<bytes::Bytes>,
}

struct Sim {
    rng: ChaCha8Rng,
    shards: Vec<Shard>,
    clients: Vec<SimClient>,
    /// One FIFO queue per (from, to) pair of cores.
    core_links: Vec<VecDeque<CoreMsg>>,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let config = Arc::new(ShardConfig {
            cores: 2,
            max_messages_per_s: 1_000_000,
            limits: tandem_engine::Limits {
                history_ops: if rng.random_bool(0.3) { 4 } else { 10_000 },
                ..tandem_engine::Limits::default()
            },
            ..ShardConfig::default()
        });
        let shards = (0..2).map(|i| Shard::new(i, Arc::clone(&config))).collect();
        let n = rng.random_range(3..=6);
        let clients = (0..n)
            .map(|i| SimClient {
                session: ClientSession::new(ClientId(i as u64 + 1), "", &format!("c{i}"), ""),
                encoding: if i % 2 == 0 { Encoding::Binary } else { Encoding::Json },
                conn: None,
                up: VecDeque::new(),
                down: VecDeque::new(),
            })
            .collect();
        let mut sim = Self { rng, shards, clients, core_links: (0..4).map(|_| VecDeque::new()).collect(), seed };
        for i in 0..n {
            sim.connect(i);
            for doc in DOCS {
                sim.clients[i].session.open(doc);
            }
            sim.pull_outgoing(i);
        }
        sim
    }

    fn connect(&mut self, i: usize) {
        let core = self.rng.random_range(0..2);
        let c = &mut self.clients[i];
        c.conn = Some(self.shards[core].connect(c.encoding, Instant::now(), None));
        c.session.on_connect();
        self.pull_outgoing(i);
    }

    fn disconnect(&mut self, i: usize) {
        let Some(conn) = self.clients[i].conn.take() else { return };
        // The server read a random prefix of what was in flight.
        let keep = self.rng.random_range(0..=self.clients[i].up.len());
        let read: Vec<Vec<u8>> = self.clients[i].up.drain(..).take(keep).collect();
        for bytes in read {
            self.server_receive(conn, &bytes, self.clients[i].encoding);
        }
        self.clients[i].down.clear();
        self.clients[i].session.on_disconnect();
        self.shards[usize::from(conn.core)].disconnect(conn);
        self.drain_effects(usize::from(conn.core));
    }

    fn pull_outgoing(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.conn.is_none() {
            while c.session.poll_outgoing().is_some() {}
            return;
        }
        while let Some(msg) = c.session.poll_outgoing() {
            c.up.push_back(encode_client(&msg, c.encoding));
        }
    }

    fn server_receive(&mut self, conn: ConnId, bytes: &[u8], encoding: Encoding) {
        let core = usize::from(conn.core);
        match decode_client(bytes, encoding) {
            Ok(msg) => self.shards[core].on_message(conn, msg, Instant::now()),
            Err(e) => panic!("seed {}: our own message did not decode: {e}", self.seed),
        }
        self.drain_effects(core);
    }

    fn drain_effects(&mut self, core: usize) {
        for effect in self.shards[core].take_effects() {
            match effect {
                Effect::Send { conn, frame } => {
                    if let Some(c) = self.clients.iter_mut().find(|c| c.conn == Some(conn)) {
                        c.down.push_back(frame);
                    }
                }
                Effect::Close { conn, code, reason } => {
                    panic!("seed {}: {conn:?} closed with {code} {reason}", self.seed)
                }
                Effect::ToCore { core: to, msg } => self.core_links[core * 2 + usize::from(to)].push_back(msg),
                e
                @ (Effect::Append { .. } | Effect::Load { .. } | Effect::Snapshot { .. } | Effect::History { .. }) => {
                    panic!("seed {}: a storage effect with durability off: {e:?}", self.seed)
                }
                e @ (Effect::LoadAccess { .. }
                | Effect::Edited { .. }
                | Effect::Opened { .. }
                | Effect::Mentioned(_)
                | Effect::Answer(_)) => {
                    panic!("seed {}: a control-plane effect without accounts: {e:?}", self.seed)
                }
                e @ Effect::Swept { .. } => panic!("seed {}: a sweep outside a cluster: {e:?}", self.seed),
            }
        }
    }

    fn step(&mut self) -> bool {
        let n = self.clients.len();
        let mut choices: Vec<usize> = Vec::new();
        for i in 0..n {
            if !self.clients[i].up.is_empty() {
                choices.push(i);
            }
            if !self.clients[i].down.is_empty() {
                choices.push(n + i);
            }
        }
        for l in 0..4 {
            if !self.core_links[l].is_empty() {
                choices.push(2 * n + l);
            }
        }
        if choices.is_empty() {
            return false;
        }
        let k = choices[self.rng.random_range(0..choices.len())];
        if k < n {
            let bytes = self.clients[k].up.pop_front().expect("non-empty");
            let conn = self.clients[k].conn.expect("connected clients have a queue");
            self.server_receive(conn, &bytes, self.clients[k].encoding);
        } else if k < 2 * n {
            let i = k - n;
            let frame = self.clients[i].down.pop_front().expect("non-empty");
            let msg =
                decode_server(support::frame_payload(&frame), self.clients[i].encoding).expect("server frames decode");
            self.clients[i].session.handle(msg).unwrap_or_else(|e| panic!("seed {}: client {i}: {e}", self.seed));
            while self.clients[i].session.poll_event().is_some() {}
            self.pull_outgoing(i);
        } else {
            let l = k - 2 * n;
            let msg = self.core_links[l].pop_front().expect("non-empty");
            let to = l % 2;
            self.shards[to].on_core_msg(msg, Instant::now());
            self.drain_effects(to);
        }
        true
    }

    fn run(&mut self, steps: usize) {
        let n = self.clients.len();
        for _ in 0..steps {
            let i = self.rng.random_range(0..n);
            match self.rng.random_range(0..100) {
                0..=19 => {
                    let doc = DOCS[self.rng.random_range(0..DOCS.len())];
                    if let Some(len) = self.clients[i].session.document(doc).map(tandem_engine::Document::len) {
                        let d = random::delta(&mut self.rng, len, Shape::RICH);
                        self.clients[i].session.edit(doc, d).expect("local edit applies");
                        if self.rng.random_bool(0.3) {
                            let len = self.clients[i].session.document(doc).expect("open").len();
                            let caret = SelectionRange::caret(self.rng.random_range(0..=len));
                            self.clients[i].session.set_selection(doc, &[caret]).expect("open");
                        }
                        self.pull_outgoing(i);
                    }
                }
                20..=21 if self.clients[i].conn.is_some() => self.disconnect(i),
                22..=27 if self.clients[i].conn.is_none() => self.connect(i),
                28..=30 => {
                    let core = self.rng.random_range(0..2);
                    self.shards[core].tick(Instant::now() + std::time::Duration::from_secs(1));
                    self.drain_effects(core);
                }
                _ => {
                    self.step();
                }
            }
        }
        for i in 0..n {
            if self.clients[i].conn.is_none() {
                self.connect(i);
            }
        }
        let mut rounds = 0;
        while self.step() {
            rounds += 1;
            assert!(rounds < 1_000_000, "seed {}: no quiescence", self.seed);
        }
    }

    fn check(&self) {
        for doc in DOCS {
            let id = DocId::new(doc).unwrap();
            let owner = &self.shards[id.owner(2)];
            let state = owner.document(&id).unwrap_or_else(|| panic!("seed {}: {doc} not on its owner", self.seed));
            for (i, c) in self.clients.iter().enumerate() {
                assert!(c.session.is_synced(), "seed {}: client {i} not synced", self.seed);
                let mine = c.session.doc_state(doc).expect("open");
                assert_eq!(mine.rev(), state.rev(), "seed {}: client {i} {doc} revision", self.seed);
                assert_eq!(mine.document(), state.document(), "seed {}: client {i} diverged on {doc}", self.seed);
            }
        }
    }
}

#[test]
fn sessions_converge_through_two_shards() {
    let seeds: Vec<u64> = match std::env::var("TANDEM_SEED") {
        Ok(s) => vec![s.parse().expect("TANDEM_SEED is a number")],
        Err(_) => (0..std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)).collect(),
    };
    for seed in seeds {
        let mut sim = Sim::new(seed);
        sim.run(300);
        sim.check();
    }
}
