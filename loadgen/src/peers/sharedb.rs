//! ShareDB users: its JSON protocol (`hs`, `s` subscribe, `op` submit/ack/broadcast, `f`
//! fetch) with documents of the `rich-text` type in collection `docs`. ShareDB's client keeps
//! one op in flight per document and transforms incoming ops against it exactly as Tandem's
//! does, so the engine's `ClientDoc` is the client state machine. Versions map to revisions
//! as `rev = v - 1` (ShareDB counts the `create` as version 1).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_engine::{ClientDoc, ClientId, Delta, Document, Outgoing, Remote};
use tungstenite::Message;

use super::Editor;
use crate::stats::Latency;
use crate::user::{Final, Thread, UserSpec};
use crate::wsclient::{Sender, WsClient};

/// The collection every document lives in.
const COLLECTION: &str = "docs";
/// The rich-text type's URI.
const RICH_TEXT: &str = "http://sharejs.org/types/rich-text/v1";

fn src_of(client: ClientId) -> String {
    format!("u{:x}", client.0)
}

fn client_of(src: &str) -> Option<ClientId> {
    src.strip_prefix('u').and_then(|h| u64::from_str_radix(h, 16).ok()).map(ClientId)
}

fn send(sender: &Sender, v: &Value) {
    sender.send(Message::text(v.to_string()));
}

pub(crate) struct User {
    client: ClientId,
    src: String,
    doc: String,
    creator: bool,
    state: Option<ClientDoc>,
    sender: Rc<Sender>,
    /// Edits not yet acknowledged: (client_seq, due).
    pending: VecDeque<(u64, Instant)>,
    connect_start: Instant,
    create_sent: bool,
}

impl User {
    fn submit(&mut self, thread: &Thread, out: &Outgoing) {
        if let Some(&(_, due)) = self.pending.iter().find(|p| p.0 == out.client_seq) {
            thread.sent_ops.borrow_mut().insert((self.client, out.client_seq), due);
        }
        send(
            &self.sender,
            &json!({"a": "op", "c": COLLECTION, "d": self.doc, "v": out.base_rev + 1, "src": self.src,
                    "seq": out.client_seq + 1, "op": out.delta}),
        );
    }

    fn on_message(&mut self, thread: &Thread, msg: &Value) {
        let now = Instant::now();
        if msg.get("error").is_some() {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        }
        match msg["a"].as_str() {
            Some("hs") => {
                thread.stats.borrow_mut().setup_latency(Latency::Connect, self.connect_start, now);
                thread.live.set(thread.live.get() + 1);
            }
            Some("s") => {
                let data = &msg["data"];
                if data["type"].is_null() {
                    if self.creator && !self.create_sent {
                        self.create_sent = true;
                        send(
                            &self.sender,
                            &json!({"a": "op", "c": COLLECTION, "d": self.doc, "v": 0, "src": self.src, "seq": 1,
                                    "create": {"type": RICH_TEXT, "data": {"ops": []}}}),
                        );
                    }
                    return;
                }
                let v = data["v"].as_u64().unwrap_or(0);
                let doc = serde_json::from_value::<Delta>(data["data"].clone())
                    .ok()
                    .and_then(|d| Document::from_delta(&d).ok());
                match doc {
                    Some(doc) if v >= 1 => self.loaded(thread, v - 1, doc, now),
                    _ => thread.stats.borrow_mut().error(&thread.clock, now),
                }
            }
            Some("op") => self.on_op(thread, msg, now),
            _ => {}
        }
    }

    fn loaded(&mut self, thread: &Thread, rev: u64, doc: Document, now: Instant) {
        if self.state.is_none() {
            self.state = Some(ClientDoc::new(self.client, rev, doc));
            thread.stats.borrow_mut().setup_latency(Latency::Join, self.connect_start, now);
        }
    }

    fn on_op(&mut self, thread: &Thread, msg: &Value, now: Instant) {
        let (Some(v), Some(src), Some(seq)) = (msg["v"].as_u64(), msg["src"].as_str(), msg["seq"].as_u64()) else {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        };
        let own_create_acked = self.create_sent && src == self.src && seq == 1;
        if msg.get("create").is_some() || own_create_acked {
            // Someone's create seen, or ours acknowledged: the document exists, empty, at v 1.
            self.loaded(thread, 0, Document::new(), now);
            return;
        }
        let Some(state) = self.state.as_mut() else { return };
        // An op applied at version v makes version v + 1: revision v.
        let rev = v;
        if msg.get("op").is_none() {
            // An ack: our op `seq - 1` applied at version v, so it made revision v.
            if src != self.src {
                return;
            }
            let client_seq = seq.saturating_sub(1);
            match state.ack(client_seq, rev) {
                Ok(next) => {
                    let mut stats = thread.stats.borrow_mut();
                    while self.pending.front().is_some_and(|p| p.0 <= client_seq) {
                        let (_, due) = self.pending.pop_front().expect("checked");
                        stats.latency(&thread.clock, Latency::Ack, due, now);
                    }
                    drop(stats);
                    if let Some(out) = next {
                        self.submit(thread, &out);
                    }
                }
                Err(_) => thread.stats.borrow_mut().error(&thread.clock, now),
            }
            return;
        }
        if rev <= state.rev() {
            // Sent twice (the reply to a submit and the subscription both carry it).
            return;
        }
        if rev != state.rev() + 1 {
            let mut stats = thread.stats.borrow_mut();
            stats.gaps += 1;
            stats.error(&thread.clock, now);
            return;
        }
        let Ok(delta) = serde_json::from_value::<Delta>(msg["op"].clone()) else {
            thread.stats.borrow_mut().error(&thread.clock, now);
            return;
        };
        let author = client_of(src).unwrap_or(ClientId(0));
        match state.remote(rev, &delta, author, seq.saturating_sub(1)) {
            Ok(Remote::Applied(_)) => {
                let mut stats = thread.stats.borrow_mut();
                stats.delivered(&thread.clock, now);
                if let Some(due) = thread.sent_ops.borrow().get(&(author, seq.saturating_sub(1))) {
                    stats.latency(&thread.clock, Latency::Propagation, *due, now);
                }
            }
            Ok(Remote::Acked(next)) => {
                if let Some(out) = next {
                    self.submit(thread, &out);
                }
            }
            Err(_) => thread.stats.borrow_mut().error(&thread.clock, now),
        }
    }
}

impl Editor for User {
    fn ready(&self) -> bool {
        self.state.is_some()
    }

    fn len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.document().len())
    }

    fn edit(&mut self, thread: &Thread, delta: &Delta, due: Instant) -> bool {
        let Some(state) = self.state.as_mut() else { return false };
        let Ok(out) = state.edit(delta.clone()) else { return false };
        // Sent now, or buffered: then it goes out with the next sequence number.
        let seq = out.as_ref().map_or_else(|| state.next_seq(), |o| o.client_seq);
        self.pending.push_back((seq, due));
        if let Some(out) = out {
            self.submit(thread, &out);
        }
        true
    }
}

/// Runs one ShareDB user from its start time to the end of the run.
pub(crate) async fn run(thread: Rc<Thread>, spec: UserSpec, creator: bool) {
    monoio::time::sleep_until(monoio::time::Instant::from_std(spec.start_at)).await;
    let connect_start = Instant::now();
    let Ok(ws) = WsClient::connect(thread.target, "/", "", spec.source).await else {
        thread.stats.borrow_mut().error(&thread.clock, Instant::now());
        return;
    };
    let sender = Rc::clone(&ws.sender);
    let src = src_of(spec.client);
    send(&sender, &json!({"a": "hs", "id": src, "protocol": 1, "protocolMinor": 1}));
    let doc = spec.docs.first().cloned();
    if let Some(d) = &doc {
        send(&sender, &json!({"a": "s", "c": COLLECTION, "d": d}));
    }
    let user = Rc::new(RefCell::new(User {
        client: spec.client,
        src,
        doc: doc.clone().unwrap_or_default(),
        creator,
        state: None,
        sender: Rc::clone(&sender),
        pending: VecDeque::new(),
        connect_start,
        create_sent: false,
    }));
    monoio::spawn(super::act(Rc::clone(&thread), Rc::clone(&user), Rc::clone(&sender), spec.clone()));
    monoio::spawn(super::close_at_finish(Rc::clone(&thread), Rc::clone(&sender)));
    let (t, u) = (Rc::clone(&thread), Rc::clone(&user));
    ws.run(move |bytes| match serde_json::from_slice::<Value>(&bytes) {
        Ok(msg) => u.borrow_mut().on_message(&t, &msg),
        Err(_) => t.stats.borrow_mut().error(&t.clock, Instant::now()),
    })
    .await;
    if !thread.finish.get() {
        let mut stats = thread.stats.borrow_mut();
        stats.disconnects += 1;
        stats.error(&thread.clock, Instant::now());
    }
    let u = user.borrow();
    if let Some(d) = doc {
        thread.finals.borrow_mut().push(Final {
            doc: d,
            client: spec.client,
            rev: u.state.as_ref().map_or(0, ClientDoc::rev),
            content: u.state.as_ref().filter(|_| spec.full_copy).map(|s| s.document().clone()),
            pending: u.state.as_ref().is_none_or(ClientDoc::has_pending),
            replay: None,
        });
    }
}

/// Fetches `docs` from the server on a fresh connection: each one's revision and content.
pub(crate) async fn server_view(thread: &Thread, docs: &[String]) -> HashMap<String, (u64, Document)> {
    let out = Rc::new(RefCell::new(HashMap::new()));
    let Ok(ws) = WsClient::connect(thread.target, "/", "", None).await else { return HashMap::new() };
    send(&ws.sender, &json!({"a": "hs", "id": "checker", "protocol": 1, "protocolMinor": 1}));
    for d in docs {
        send(&ws.sender, &json!({"a": "f", "c": COLLECTION, "d": d}));
    }
    let sender = Rc::clone(&ws.sender);
    let o = Rc::clone(&out);
    let reader = monoio::spawn(ws.run(move |bytes| {
        let Ok(msg) = serde_json::from_slice::<Value>(&bytes) else { return };
        if msg["a"] != "f" {
            return;
        }
        let (Some(d), Some(v)) = (msg["d"].as_str(), msg["data"]["v"].as_u64()) else { return };
        let content = serde_json::from_value::<Delta>(msg["data"]["data"].clone())
            .ok()
            .and_then(|x| Document::from_delta(&x).ok());
        if let Some(c) = content {
            o.borrow_mut().insert(d.to_owned(), (v.saturating_sub(1), c));
        }
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && out.borrow().len() < docs.len() {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    sender.close();
    let _ = reader.await;
    out.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_their_client() {
        assert_eq!(src_of(ClientId(255)), "uff");
        assert_eq!(client_of("uff"), Some(ClientId(255)));
        assert_eq!(client_of("checker"), None);
    }
}
