//! Restore on one shard, sans I/O, with the op log's answers delivered by hand: the change
//! is made against the document as it is when the revision arrives, a restore whose session
//! left meanwhile is dropped, and one sent again after it was applied is acknowledged.

mod support;

use std::sync::Arc;
use std::time::Instant;

use tandem_engine::{Attributes, ClientId, Delta, DocState, Document, Limits};
use tandem_net::codec::decode_server;
use tandem_net::protocol::{ClientMsg, Encoding, PROTOCOL_VERSION, ServerMsg};
use tandem_net::session::{ConnId, SessionInfo};
use tandem_net::shard::{Effect, HistoryAnswer, HistoryQuery, Shard, ShardConfig};

/// A durable shard whose op log is a list of the documents' contents by revision.
struct Sim {
    shard: Shard,
    now: Instant,
    sent: Vec<(ConnId, ServerMsg)>,
    /// History reads asked for, not answered yet.
    reads: Vec<(Arc<SessionInfo>, HistoryQuery)>,
    /// The document at each revision.
    revisions: Vec<Delta>,
}

impl Sim {
    fn new() -> Self {
        let config = ShardConfig { durable: true, max_messages_per_s: 100_000, ..ShardConfig::default() };
        Self {
            shard: Shard::new(0, Arc::new(config)),
            now: Instant::now(),
            sent: Vec::new(),
            reads: Vec::new(),
            revisions: vec![Delta::new()],
        }
    }

    fn drain(&mut self) {
        for e in self.shard.take_effects() {
            match e {
                Effect::Send { conn, frame } => {
                    self.sent.push((conn, decode_server(support::frame_payload(&frame), Encoding::Json).unwrap()));
                }
                Effect::Load { doc } => {
                    let state = DocState::restore(0, Document::new(), Limits::default());
                    self.shard.on_loaded(doc, Ok(state), self.now);
                    self.drain();
                }
                Effect::History { from, query, .. } => self.reads.push((from, query)),
                Effect::Append { commit, .. } => {
                    let mut doc = Document::from_delta(self.revisions.last().unwrap()).unwrap();
                    doc.apply(&commit.delta).unwrap();
                    self.revisions.push(doc.to_delta());
                }
                _ => {}
            }
        }
    }

    fn connect(&mut self, client: u64) -> ConnId {
        let conn = self.shard.connect(Encoding::Json, self.now, None);
        let hello = ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            client: ClientId(client),
            token: String::new(),
            name: format!("user{client}"),
            color: String::new(),
        };
        self.send(conn, hello);
        self.send(conn, ClientMsg::Open { doc: "d".into(), from_rev: None });
        conn
    }

    fn send(&mut self, conn: ConnId, msg: ClientMsg) {
        self.shard.on_message(conn, msg, self.now);
        self.drain();
    }

    /// Answers the history reads asked for, from the revisions appended.
    fn answer_reads(&mut self) {
        for (from, query) in std::mem::take(&mut self.reads) {
            let HistoryQuery::Restore { rev, .. } = query else { panic!("unexpected read {query:?}") };
            let answer = HistoryAnswer::At { rev, content: self.revisions[rev as usize].clone() };
            self.shard.on_history(&tandem_net::protocol::DocId::new("d").unwrap(), &from, query, Ok(answer));
            self.drain();
        }
    }

    fn take(&mut self, conn: ConnId) -> Vec<ServerMsg> {
        let (mine, rest) = std::mem::take(&mut self.sent).into_iter().partition(|(c, _)| *c == conn);
        self.sent = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
}

fn insert_at(at: usize, s: &str) -> Delta {
    Delta::new().retain(at, Attributes::NONE).insert(s, Attributes::NONE)
}

#[test]
fn a_restore_applies_to_the_document_as_it_is_when_the_revision_arrives() {
    let mut sim = Sim::new();
    let ada = sim.connect(1);
    let bob = sim.connect(2);
    sim.send(ada, ClientMsg::Submit { doc: "d".into(), base_rev: 0, client_seq: 1, delta: insert_at(0, "one") });
    sim.send(ada, ClientMsg::Submit { doc: "d".into(), base_rev: 1, client_seq: 2, delta: insert_at(3, " two") });
    sim.take(ada);
    sim.take(bob);
    // Ada restores revision 1; before the op log answers, Bob types.
    sim.send(ada, ClientMsg::Restore { doc: "d".into(), rev: 1, client_seq: 3 });
    assert_eq!(sim.reads.len(), 1);
    sim.send(bob, ClientMsg::Submit { doc: "d".into(), base_rev: 2, client_seq: 1, delta: insert_at(0, ">") });
    sim.answer_reads();
    // The restore is the diff from ">one two" to "one": Bob's ">" goes too (it was not in
    // revision 1), and everyone, Ada included, gets the op.
    for conn in [ada, bob] {
        let op = sim.take(conn).into_iter().find_map(|m| match m {
            ServerMsg::Op { rev: 4, author, client_seq: 3, delta, .. } => Some((author, delta)),
            _ => None,
        });
        let (author, delta) = op.unwrap_or_else(|| panic!("{conn:?} got no restore op"));
        assert_eq!(author, ClientId(1));
        let mut doc = Document::from_delta(&sim.revisions[3]).unwrap();
        doc.apply(&delta).unwrap();
        assert_eq!(doc.to_delta(), sim.revisions[1]);
    }
    // Sent again (a reconnect that missed the answer): acknowledged as revision 4.
    sim.send(ada, ClientMsg::Restore { doc: "d".into(), rev: 1, client_seq: 3 });
    assert!(sim.reads.is_empty());
    assert!(matches!(&sim.take(ada)[..], [ServerMsg::Ack { rev: 4, client_seq: 3, .. }]));
}

#[test]
fn a_restore_whose_session_left_before_the_answer_is_dropped() {
    let mut sim = Sim::new();
    let ada = sim.connect(1);
    sim.send(ada, ClientMsg::Submit { doc: "d".into(), base_rev: 0, client_seq: 1, delta: insert_at(0, "one") });
    sim.send(ada, ClientMsg::Submit { doc: "d".into(), base_rev: 1, client_seq: 2, delta: insert_at(3, " two") });
    sim.send(ada, ClientMsg::Restore { doc: "d".into(), rev: 1, client_seq: 3 });
    sim.send(ada, ClientMsg::Close { doc: "d".into() });
    sim.take(ada);
    sim.answer_reads();
    assert!(sim.take(ada).is_empty(), "nothing applied, nothing sent");
    assert_eq!(sim.revisions.len(), 3);
}

/// Every answer to a change (the author's ack, the op or note to everyone) comes after the
/// change's append among the effects: the shell holds what follows an append until it is
/// durable, so nothing is acknowledged that a crash could lose.
#[test]
fn acks_and_broadcasts_follow_the_append() {
    let mut sim = Sim::new();
    let ada = sim.connect(1);
    let bob = sim.connect(2);
    let order = |sim: &mut Sim, msg: ClientMsg| -> Vec<&'static str> {
        sim.shard.on_message(ada, msg, sim.now);
        sim.shard
            .take_effects()
            .into_iter()
            .map(|e| match e {
                Effect::Append { .. } => "append",
                Effect::Send { conn, .. } if conn == ada => "to ada",
                Effect::Send { conn, .. } if conn == bob => "to bob",
                _ => "other",
            })
            .collect()
    };
    let edit = ClientMsg::Submit {
        doc: "d".into(),
        base_rev: 0,
        client_seq: 1,
        delta: Delta::new().insert("hello", Attributes::NONE),
    };
    assert_eq!(order(&mut sim, edit), ["append", "to ada", "to bob"]);
    let note = ClientMsg::Note {
        doc: "d".into(),
        rev: 1,
        client_seq: 2,
        change: tandem_net::protocol::Json(tandem_engine::NoteChange::Comment {
            start: 0,
            end: 5,
            text: "hi".into(),
            mentions: vec![],
        }),
    };
    let got = order(&mut sim, note);
    assert_eq!(got[0], "append", "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    let undo = ClientMsg::Undo { doc: "d".into(), client_seq: 3 };
    let got = order(&mut sim, undo);
    assert_eq!(got[0], "append", "{got:?}");
}
