//! y-websocket users: the Yjs sync protocol (sync step 1 and 2, then updates; awareness is
//! ignored) over one WebSocket per document (`ws://host:port/<document>`), each user a `yrs`
//! document editing one shared text. A CRDT server acknowledges nothing, but y-websocket
//! sends each update back to its author with everyone else's: that echo counts as the ack.
//! An update is traced to the edit that made it by the (client, clock) its first block
//! starts at; deletes make no blocks and are not traced (their acks and propagation go
//! unmeasured, about 15% of keystrokes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tandem_engine::{Attributes, ClientId, Delta, Document, Op};
use tungstenite::Message;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Text, TextRef, Transact, Update};

use super::Editor;
use crate::stats::Latency;
use crate::user::{Final, Thread, UserSpec};
use crate::wsclient::{Sender, WsClient};

/// The shared text's name (y-quill's).
const TEXT: &str = "quill";

fn send(sender: &Sender, m: &YMessage) {
    sender.send(Message::binary(m.encode_v1()));
}

pub(crate) struct User {
    client: ClientId,
    doc: yrs::Doc,
    text: TextRef,
    sender: Rc<Sender>,
    synced: bool,
    connect_start: Instant,
}

impl User {
    fn new(client: ClientId, sender: Rc<Sender>, connect_start: Instant) -> Self {
        let doc = yrs::Doc::with_client_id(client.0);
        let text = doc.get_or_insert_text(TEXT);
        Self { client, doc, text, sender, synced: false, connect_start }
    }

    fn string(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    fn on_message(&mut self, thread: &Thread, bytes: &[u8]) {
        let now = Instant::now();
        let Ok(msg) = YMessage::decode_v1(bytes) else {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        };
        let YMessage::Sync(sync) = msg else { return };
        match sync {
            SyncMessage::SyncStep1(sv) => {
                let diff = self.doc.transact().encode_diff_v1(&sv);
                send(&self.sender, &YMessage::Sync(SyncMessage::SyncStep2(diff)));
            }
            SyncMessage::SyncStep2(update) => {
                self.apply(thread, &update, now, false);
                if !self.synced {
                    self.synced = true;
                    thread.stats.borrow_mut().setup_latency(Latency::Join, self.connect_start, now);
                }
            }
            SyncMessage::Update(update) => self.apply(thread, &update, now, true),
        }
    }

    fn apply(&mut self, thread: &Thread, bytes: &[u8], now: Instant, delivered: bool) {
        let Ok(update) = Update::decode_v1(bytes) else {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        };
        let starts: Vec<(u64, u32)> = update.state_vector_lower().iter().map(|(c, k)| (c.get(), *k)).collect();
        if self.doc.transact_mut().apply_update(update).is_err() {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        }
        if delivered {
            let mut stats = thread.stats.borrow_mut();
            // The server sends every update to every connection of the room, its author's
            // too: that echo is the closest thing to an ack a CRDT server gives.
            let own = starts.iter().any(|&(c, _)| c == self.client.0);
            if !own {
                stats.delivered(&thread.clock, now);
            }
            for (c, k) in starts {
                if let Some(due) = thread.sent_ops.borrow().get(&(ClientId(c), u64::from(k))) {
                    let which = if c == self.client.0 { Latency::Ack } else { Latency::Propagation };
                    stats.latency(&thread.clock, which, *due, now);
                }
            }
        }
    }
}

impl Editor for User {
    fn ready(&self) -> bool {
        self.synced
    }

    fn len(&self) -> usize {
        self.text.len(&self.doc.transact()) as usize
    }

    fn edit(&mut self, thread: &Thread, delta: &Delta, due: Instant) -> bool {
        // A keystroke: retain to the caret, then insert a char or delete one.
        let mut at = 0u32;
        let me = yrs::block::ClientID::new(self.client.0);
        let start = self.doc.transact().state_vector().get(&me);
        let update = {
            let mut txn = self.doc.transact_mut();
            for op in delta.ops() {
                match op {
                    Op::Retain { retain, .. } => at += *retain as u32,
                    Op::Insert { insert, .. } => {
                        let tandem_engine::Insert::Text(s) = insert else { return false };
                        self.text.insert(&mut txn, at, s.as_str());
                    }
                    Op::Delete { delete } => self.text.remove_range(&mut txn, at, *delete as u32),
                }
            }
            txn.encode_update_v1()
        };
        let end = self.doc.transact().state_vector().get(&me);
        if end > start {
            // Traced by the clock its first new block starts at.
            thread.sent_ops.borrow_mut().insert((self.client, u64::from(start)), due);
        } else if thread.clock.measured(due) {
            // A delete makes no blocks: nothing to trace its ack or receipt by.
            thread.stats.borrow_mut().untraced += 1;
        }
        send(&self.sender, &YMessage::Sync(SyncMessage::Update(update)));
        true
    }
}

fn path(doc: &str) -> String {
    let mut p = String::from("/");
    for b in doc.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            p.push(char::from(b));
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

/// Runs one y-websocket user from its start time to the end of the run.
pub(crate) async fn run(thread: Rc<Thread>, spec: UserSpec) {
    monoio::time::sleep_until(monoio::time::Instant::from_std(spec.start_at)).await;
    let connect_start = Instant::now();
    let Some(doc) = spec.docs.first().cloned() else {
        // Idle users: a connection to a room of their own, nothing more.
        idle(thread, spec, connect_start).await;
        return;
    };
    let Ok(ws) = WsClient::connect(thread.target, &path(&doc), "", spec.source).await else {
        thread.stats.borrow_mut().error(&thread.clock, Instant::now());
        return;
    };
    {
        let mut stats = thread.stats.borrow_mut();
        stats.setup_latency(Latency::Connect, connect_start, Instant::now());
        thread.live.set(thread.live.get() + 1);
    }
    let sender = Rc::clone(&ws.sender);
    let user = Rc::new(RefCell::new(User::new(spec.client, Rc::clone(&sender), connect_start)));
    {
        let u = user.borrow();
        let sv = u.doc.transact().state_vector();
        send(&sender, &YMessage::Sync(SyncMessage::SyncStep1(sv)));
    }
    monoio::spawn(super::act(Rc::clone(&thread), Rc::clone(&user), Rc::clone(&sender), spec.clone()));
    monoio::spawn(super::close_at_finish(Rc::clone(&thread), Rc::clone(&sender)));
    let (t, u) = (Rc::clone(&thread), Rc::clone(&user));
    ws.run(move |bytes| u.borrow_mut().on_message(&t, &bytes)).await;
    if !thread.finish.get() {
        let mut stats = thread.stats.borrow_mut();
        stats.disconnects += 1;
        stats.error(&thread.clock, Instant::now());
    }
    let u = user.borrow();
    let content = spec.full_copy.then(|| text_document(&u.string()));
    thread.finals.borrow_mut().push(Final {
        doc,
        client: spec.client,
        rev: 0,
        content,
        pending: !u.synced,
        replay: None,
    });
}

async fn idle(thread: Rc<Thread>, spec: UserSpec, connect_start: Instant) {
    let room = format!("idle-{}", spec.client.0);
    let Ok(ws) = WsClient::connect(thread.target, &path(&room), "", spec.source).await else {
        thread.stats.borrow_mut().error(&thread.clock, Instant::now());
        return;
    };
    thread.stats.borrow_mut().setup_latency(Latency::Connect, connect_start, Instant::now());
    thread.live.set(thread.live.get() + 1);
    monoio::spawn(super::close_at_finish(Rc::clone(&thread), Rc::clone(&ws.sender)));
    ws.run(|_| {}).await;
}

fn text_document(s: &str) -> Document {
    let mut d = Document::new();
    if !s.is_empty() {
        d.apply(&Delta::new().insert(s, Attributes::NONE)).expect("an insert into an empty document applies");
    }
    d
}

/// Reads `docs` from the server, each on a fresh connection (sync step 1 and 2): revision 0
/// (a CRDT has none) and content.
pub(crate) async fn server_view(thread: &Thread, docs: &[String]) -> HashMap<String, (u64, Document)> {
    let mut out = HashMap::new();
    for d in docs {
        let Ok(ws) = WsClient::connect(thread.target, &path(d), "", None).await else { continue };
        let sender = Rc::clone(&ws.sender);
        let user = Rc::new(RefCell::new(User::new(ClientId(u64::from(u32::MAX)), Rc::clone(&sender), Instant::now())));
        let sv = user.borrow().doc.transact().state_vector();
        send(&sender, &YMessage::Sync(SyncMessage::SyncStep1(sv)));
        let u = Rc::clone(&user);
        let reader = monoio::spawn(ws.run(move |bytes| {
            let mut u = u.borrow_mut();
            // Not counted as deliveries: the checker is not a user.
            if let Ok(YMessage::Sync(SyncMessage::SyncStep2(update))) = YMessage::decode_v1(&bytes)
                && let Ok(update) = Update::decode_v1(&update)
            {
                let _ = u.doc.transact_mut().apply_update(update);
                u.synced = true;
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !user.borrow().synced {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        sender.close();
        let _ = reader.await;
        let u = user.borrow();
        if u.synced {
            out.insert(d.clone(), (0, text_document(&u.string())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_url_paths() {
        assert_eq!(path("office-12"), "/office-12");
        assert_eq!(path("a b/c"), "/a%20b%2Fc");
    }
}
