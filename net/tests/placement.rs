//! A shard in a cluster, stepped in memory with a placement the test controls: a document
//! this node does not serve is refused with `moved` and where it is served; when the node
//! stops serving one (a lease moved: the generation rises, or a deadline passes unnoticed)
//! its subscribers are told, the next commit is refused, the client keeps its unacknowledged
//! edit for the next node, and the sweep is reported. A document on its way here (the node
//! handing it over sent its clients ahead) holds their requests until it is served, or, when
//! the hand-over does not come, sends them where the table says.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::client::{ClientSession, Event};
use tandem_net::codec::{decode_server, encode_client};
use tandem_net::placement::Placement;
use tandem_net::protocol::{Encoding, ServerMsg};
use tandem_net::session::ConnId;
use tandem_net::shard::{Effect, Shard, ShardConfig};

#[derive(Debug, Default)]
struct Fake {
    served: Mutex<HashSet<String>>,
    /// Documents on their way here (another node is handing them over).
    coming: Mutex<HashSet<String>>,
    generation: AtomicU64,
    swept: Mutex<Vec<(u16, u64)>>,
}

impl Placement for Fake {
    fn serves(&self, doc: &str, _now: Instant) -> bool {
        self.served.lock().unwrap().contains(doc)
    }
    fn owner(&self, doc: &str) -> Option<Arc<str>> {
        (!self.served.lock().unwrap().contains(doc)).then(|| Arc::from("ws://node-b:8080/ws"))
    }
    fn coming(&self, doc: &str, _now: Instant) -> bool {
        self.coming.lock().unwrap().contains(doc)
    }
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    fn swept(&self, core: u16, generation: u64) {
        self.swept.lock().unwrap().push((core, generation));
    }
}

struct Node {
    shard: Shard,
    conn: ConnId,
    client: ClientSession,
    swept: Vec<u64>,
}

impl Node {
    /// One core placed by `fake`, and a client connected to it.
    fn new(fake: &Arc<Fake>, t0: Instant) -> Self {
        let placement: Arc<dyn Placement> = Arc::clone(fake) as Arc<dyn Placement>;
        let config = Arc::new(ShardConfig { placement: Some(placement), ..ShardConfig::default() });
        let mut shard = Shard::new(0, config);
        let conn = shard.connect(Encoding::Json, t0, None);
        let mut client = ClientSession::new(ClientId(7), "", "seven", "");
        client.on_connect();
        Self { shard, conn, client, swept: Vec::new() }
    }

    /// Delivers the client's messages and the shard's frames until both are quiet; returns
    /// the server messages the client got.
    fn pump(&mut self, now: Instant) -> Vec<ServerMsg> {
        let mut got = Vec::new();
        loop {
            let mut moved = false;
            while let Some(msg) = self.client.poll_outgoing() {
                let bytes = encode_client(&msg, Encoding::Json);
                let msg = tandem_net::codec::decode_client(&bytes, Encoding::Json).unwrap();
                self.shard.on_message(self.conn, msg, now);
                moved = true;
            }
            for e in self.shard.take_effects() {
                match e {
                    Effect::Send { frame, .. } => {
                        let msg = decode_server(support::frame_payload(&frame), Encoding::Json).unwrap();
                        self.client.handle(msg.clone()).unwrap();
                        got.push(msg);
                        moved = true;
                    }
                    Effect::Swept { generation } => self.swept.push(generation),
                    _ => {}
                }
            }
            if !moved {
                return got;
            }
        }
    }
}

fn moved_of(got: &[ServerMsg]) -> Vec<(String, String)> {
    got.iter()
        .filter_map(|m| match m {
            ServerMsg::Moved { doc, to } => Some((doc.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_serves_only_its_documents_and_lets_go_of_them() {
    let fake = Arc::new(Fake::default());
    fake.served.lock().unwrap().insert("mine".into());
    let t0 = Instant::now();
    let mut node = Node::new(&fake, t0);
    node.client.open("mine");
    node.client.open("theirs");
    let got = node.pump(t0);
    // Another node's document: refused with where it is.
    assert_eq!(moved_of(&got), vec![("theirs".to_owned(), "ws://node-b:8080/ws".to_owned())]);
    assert!(node.client.is_open("mine") && !node.client.is_open("theirs"));
    let mut events = Vec::new();
    while let Some(e) = node.client.poll_event() {
        events.push(e);
    }
    assert!(events.iter().any(|e| matches!(e, Event::Moved { doc, to } if doc == "theirs" && to.contains("node-b"))));

    node.client.edit("mine", Delta::new().insert("hello", Attributes::NONE)).unwrap();
    node.pump(t0);
    assert!(node.client.doc_state("mine").is_some_and(|s| !s.has_pending()), "acknowledged while served");

    // The lease moves away: the next tick drops the document and tells the client, and the
    // sweep is reported for the new generation.
    fake.served.lock().unwrap().clear();
    fake.generation.store(1, Ordering::Release);
    node.client.edit("mine", Delta::new().retain(5, Attributes::NONE).insert(" world", Attributes::NONE)).unwrap();
    node.shard.tick(t0);
    let got = node.pump(t0);
    // Told by the sweep, and again in answer to the edit sent meanwhile.
    let moved = moved_of(&got);
    assert!(!moved.is_empty() && moved.iter().all(|(d, to)| d == "mine" && to == "ws://node-b:8080/ws"), "{got:?}");
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Ack { .. })), "nothing committed after the lease moved");
    assert_eq!(node.swept, vec![1]);
    // The client keeps its edit for the next node.
    assert!(!node.client.is_open("mine"));
    assert!(node.client.doc_state("mine").is_some_and(|s| s.has_pending()));
    assert_eq!(node.client.document("mine").unwrap().text(), "hello world");

    // Served again (by a lease taken back): re-opened, and the edit goes through.
    // (The client reconnects, as it would to the node named.)
    fake.served.lock().unwrap().insert("mine".into());
    node.shard.disconnect(node.conn);
    node.conn = node.shard.connect(Encoding::Json, t0, None);
    node.client.on_disconnect();
    node.client.on_connect();
    let got = node.pump(t0);
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Opened { .. })), "{got:?}");

    // A deadline passes without the generation moving: the once-a-second check drops it.
    fake.served.lock().unwrap().clear();
    node.shard.tick(t0 + Duration::from_millis(200));
    assert!(moved_of(&node.pump(t0)).is_empty(), "no sweep before a second without a new generation");
    node.shard.tick(t0 + Duration::from_millis(1100));
    assert_eq!(moved_of(&node.pump(t0)).len(), 1);

    // A submit for a document no longer served is refused with `moved`, not committed.
    let stale = tandem_net::protocol::ClientMsg::Submit {
        doc: "mine".into(),
        base_rev: 0,
        client_seq: 99,
        delta: Delta::new().insert("x", Attributes::NONE),
    };
    node.shard.on_message(node.conn, stale, t0);
    let refused: Vec<ServerMsg> = node
        .shard
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send { frame, .. } => Some(decode_server(support::frame_payload(&frame), Encoding::Json).unwrap()),
            _ => None,
        })
        .collect();
    assert!(matches!(refused.as_slice(), [ServerMsg::Moved { doc, .. }] if doc == "mine"), "{refused:?}");
    assert!(fake.swept.lock().unwrap().is_empty(), "the shell reports sweeps, not the shard");
}

#[test]
fn requests_for_a_document_on_its_way_here_wait_for_it() {
    let fake = Arc::new(Fake::default());
    fake.coming.lock().unwrap().extend(["arriving".to_owned(), "late".to_owned()]);
    let t0 = Instant::now();
    let mut node = Node::new(&fake, t0);
    node.client.open("arriving");
    node.client.open("late");
    node.client.open("elsewhere");
    let got = node.pump(t0);
    // Only the document nobody is handing over is sent away; the others wait, unanswered.
    assert_eq!(moved_of(&got), vec![("elsewhere".to_owned(), "ws://node-b:8080/ws".to_owned())]);
    assert!(!got.iter().any(|m| matches!(m, ServerMsg::Opened { .. })), "{got:?}");
    // A tick before the hand-over changes nothing.
    node.shard.tick(t0 + Duration::from_millis(10));
    assert!(node.pump(t0).is_empty());

    // The lease arrives: the placement's nudge lets the held open through, and edits commit.
    fake.served.lock().unwrap().insert("arriving".into());
    fake.coming.lock().unwrap().remove("arriving");
    node.shard.on_core_msg(tandem_net::shard::CoreMsg::Placement, t0 + Duration::from_millis(20));
    let got = node.pump(t0);
    assert!(got.iter().any(|m| matches!(m, ServerMsg::Opened { doc, .. } if doc == "arriving")), "{got:?}");
    assert!(moved_of(&got).is_empty(), "{got:?}");
    node.client.edit("arriving", Delta::new().insert("here", Attributes::NONE)).unwrap();
    node.pump(t0);
    assert!(node.client.doc_state("arriving").is_some_and(|s| !s.has_pending()), "acknowledged here");

    // The other hand-over never comes (the notice lapses): its requests go where the table
    // says, at the next tick.
    fake.coming.lock().unwrap().clear();
    node.shard.tick(t0 + Duration::from_millis(30));
    let got = node.pump(t0);
    assert_eq!(moved_of(&got), vec![("late".to_owned(), "ws://node-b:8080/ws".to_owned())]);
}
