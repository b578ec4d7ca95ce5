//! The baseline Tandem's data plane is measured against: the same protocol v1 and the same
//! OT engine, served the classic way with tokio and tokio-tungstenite.
//!
//! A work-stealing runtime with one task per connection, a shared map of documents, a mutex
//! per document, and an unbounded channel per connection drained by a writer task that
//! batches what is queued (`feed` every message, one `flush`). Broadcasts are encoded once
//! per encoding and the bytes shared, as in Tandem. What differs is the architecture: any
//! thread may touch any document (locks, cache-line traffic), where Tandem gives each
//! document to one core. It implements what the load generator's scenarios use (hello, open,
//! close, submit, presence, join/leave); no auth, limits or persistence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tandem_engine::{ClientId, DocState, Limits, Submitted};
use tandem_net::codec::{decode_client, encode_server_payload};
use tandem_net::protocol::{
    ClientMsg, Encoding, ErrorCode, OpRecord, PROTOCOL_VERSION, Peer, PeerSelection, Range, ServerMsg, WireLimits,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// Serve protocol v1 on tokio (the baseline for Tandem's benchmarks).
#[derive(Parser, Debug)]
#[command(name = "tandem-tokio-baseline", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Worker threads (0: one per available core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

struct Sub {
    encoding: Encoding,
    tx: UnboundedSender<Message>,
    client: ClientId,
    peer: Peer,
}

struct Room {
    state: DocState,
    subs: HashMap<u64, Sub>,
}

#[derive(Default)]
struct Server {
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    next_conn: AtomicU64,
}

/// A message encoded once per encoding, shared by every subscriber.
struct Encoded<'a> {
    msg: &'a ServerMsg,
    bytes: [Option<Message>; 2],
}

impl<'a> Encoded<'a> {
    fn new(msg: &'a ServerMsg) -> Self {
        Self { msg, bytes: [None, None] }
    }

    fn get(&mut self, encoding: Encoding) -> Message {
        let slot = usize::from(encoding == Encoding::Json);
        self.bytes[slot].get_or_insert_with(|| message(self.msg, encoding)).clone()
    }
}

fn message(msg: &ServerMsg, encoding: Encoding) -> Message {
    let payload: Bytes = encode_server_payload(msg, encoding);
    match encoding {
        Encoding::Binary => Message::Binary(payload),
        Encoding::Json => Message::Text(payload.try_into().expect("JSON is UTF-8")),
    }
}

fn broadcast(room: &Room, msg: &ServerMsg, except: Option<u64>) {
    let mut enc = Encoded::new(msg);
    for (id, sub) in &room.subs {
        if Some(*id) != except {
            let _ = sub.tx.send(enc.get(sub.encoding));
        }
    }
}

struct Conn {
    id: u64,
    encoding: Encoding,
    tx: UnboundedSender<Message>,
    hello: Option<(ClientId, Peer)>,
    open: HashMap<String, Arc<Mutex<Room>>>,
}

impl Conn {
    fn reply(&self, msg: &ServerMsg) {
        let _ = self.tx.send(message(msg, self.encoding));
    }

    fn error(&self, code: ErrorCode, message: String, doc: Option<String>) {
        self.reply(&ServerMsg::Error { code, message, doc, client_seq: None });
    }

    fn leave(&mut self, doc: &str) {
        if let Some(room) = self.open.remove(doc) {
            let mut room = room.lock().expect("room lock");
            if let Some(sub) = room.subs.remove(&self.id) {
                let client = sub.client;
                if !room.subs.values().any(|s| s.client == client) {
                    room.state.remove_selection(client);
                    broadcast(&room, &ServerMsg::Left { doc: doc.to_owned(), client }, None);
                }
            }
        }
    }

    fn handle(&mut self, server: &Server, msg: ClientMsg) {
        let Some((client, peer)) = self.hello.clone() else {
            if let ClientMsg::Hello { client, name, color, .. } = msg {
                self.hello = Some((client, Peer { client, user: name.clone(), name, color }));
                let limits = WireLimits {
                    max_message_bytes: 64 << 20,
                    max_open_docs: 1024,
                    max_messages_per_s: u32::MAX,
                    presence_interval_ms: 0,
                    max_insert_chars: 1 << 20,
                    max_delta_ops: 10_000,
                    max_document_chars: 64 << 20,
                    history_ops: 10_000,
                };
                self.reply(&ServerMsg::Welcome {
                    protocol: PROTOCOL_VERSION,
                    session: self.id,
                    client,
                    limits,
                    user: String::new(),
                    expires_at: None,
                });
            } else {
                self.error(ErrorCode::BadHello, "hello first".into(), None);
            }
            return;
        };
        match msg {
            ClientMsg::Hello { .. } => self.error(ErrorCode::BadHello, "hello was already received".into(), None),
            ClientMsg::Open { doc, from_rev } => {
                let room =
                    Arc::clone(server.rooms.lock().expect("rooms lock").entry(doc.clone()).or_insert_with(|| {
                        Arc::new(Mutex::new(Room { state: DocState::new(Limits::default()), subs: HashMap::new() }))
                    }));
                let mut r = room.lock().expect("room lock");
                let joined = !r.subs.values().any(|s| s.client == client);
                r.subs
                    .insert(self.id, Sub { encoding: self.encoding, tx: self.tx.clone(), client, peer: peer.clone() });
                let (snapshot, ops) = match from_rev.map(|f| r.state.ops_since(f)) {
                    Some(Ok(ops)) => (None, Some(ops.map(|c| OpRecord::from(&**c)).collect())),
                    _ => (Some(r.state.document().to_delta()), None),
                };
                let mut online: Vec<Peer> = Vec::new();
                for s in r.subs.values() {
                    if s.client != client && !online.iter().any(|p| p.client == s.client) {
                        online.push(s.peer.clone());
                    }
                }
                self.reply(&ServerMsg::Opened {
                    doc: doc.clone(),
                    rev: r.state.rev(),
                    snapshot,
                    ops,
                    online,
                    last_seq: r.state.last_client_seq(client),
                    role: None,
                });
                // No comments here, but the protocol says what the document's are after every
                // open.
                let notes = tandem_net::protocol::Json(tandem_engine::Notes::new());
                self.reply(&ServerMsg::Notes { doc: doc.clone(), rev: r.state.rev(), notes });
                if joined {
                    broadcast(&r, &ServerMsg::Joined { doc: doc.clone(), peer }, Some(self.id));
                }
                drop(r);
                self.open.insert(doc, room);
            }
            ClientMsg::Refresh { .. } => {
                self.error(ErrorCode::BadMessage, "the baseline checks no tokens".into(), None);
            }
            ClientMsg::GetRevision { doc, .. }
            | ClientMsg::ListRevisions { doc, .. }
            | ClientMsg::GetChanges { doc, .. }
            | ClientMsg::Restore { doc, .. } => {
                // The baseline measures the data plane only: it keeps no history.
                self.error(ErrorCode::HistoryUnavailable, "the baseline keeps no history".into(), Some(doc));
            }
            ClientMsg::Undo { doc, .. } | ClientMsg::Redo { doc, .. } => {
                self.error(ErrorCode::NothingToUndo, "the baseline keeps no undo stacks".into(), Some(doc));
            }
            ClientMsg::Note { doc, .. } => {
                self.error(ErrorCode::InvalidNote, "the baseline keeps no comments".into(), Some(doc));
            }
            ClientMsg::Close { doc } => {
                self.leave(&doc);
                self.reply(&ServerMsg::Closed { doc });
            }
            ClientMsg::Submit { doc, base_rev, client_seq, delta } => {
                let Some(room) = self.open.get(&doc).cloned() else {
                    return self.error(ErrorCode::NotOpen, "not open".into(), Some(doc));
                };
                let mut r = room.lock().expect("room lock");
                match r.state.submit(client, base_rev, client_seq, delta) {
                    Ok(Submitted::Applied(c)) => {
                        self.reply(&ServerMsg::Ack { doc: doc.clone(), client_seq, rev: c.rev });
                        let op =
                            ServerMsg::Op { doc, rev: c.rev, author: c.author, client_seq, delta: c.delta.clone() };
                        broadcast(&r, &op, Some(self.id));
                    }
                    Ok(Submitted::Duplicate { rev }) => self.reply(&ServerMsg::Ack { doc, client_seq, rev }),
                    Err(e) => {
                        drop(r);
                        self.leave(&doc);
                        self.error(ErrorCode::for_engine(&e), e.to_string(), Some(doc));
                    }
                }
            }
            ClientMsg::Presence { doc, rev, ranges } => {
                let Some(room) = self.open.get(&doc).cloned() else {
                    return self.error(ErrorCode::NotOpen, "not open".into(), Some(doc));
                };
                let mut r = room.lock().expect("room lock");
                let ranges = ranges.into_iter().filter_map(Range::to_engine).collect();
                match r.state.set_selection(client, rev, ranges) {
                    Ok(set) => {
                        let peers = vec![PeerSelection {
                            client,
                            ranges: set.iter().map(|s| Range::from_engine(*s)).collect(),
                        }];
                        let rev = r.state.rev();
                        broadcast(&r, &ServerMsg::Presence { doc, rev, peers }, Some(self.id));
                    }
                    Err(e) => self.error(ErrorCode::for_engine(&e), e.to_string(), Some(doc)),
                }
            }
        }
    }
}

async fn serve(server: Arc<Server>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut encoding = Encoding::Binary;
    // tungstenite's callback signature fixes the error type.
    #[allow(clippy::result_large_err)]
    let pick = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(enc) = offered.split(',').map(str::trim).find_map(Encoding::from_subprotocol) else {
            let mut err = ErrorResponse::new(Some("no supported subprotocol".into()));
            *err.status_mut() = StatusCode::BAD_REQUEST;
            return Err(err);
        };
        encoding = enc;
        resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(enc.subprotocol()));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, pick).await else { return };
    let (mut sink, mut incoming) = ws.split();
    let (tx, mut rx) = unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut conn =
        Conn { id: server.next_conn.fetch_add(1, Ordering::Relaxed), encoding, tx, hello: None, open: HashMap::new() };
    while let Some(Ok(frame)) = incoming.next().await {
        let payload: &[u8] = match &frame {
            Message::Binary(b) if encoding == Encoding::Binary => b,
            Message::Text(t) if encoding == Encoding::Json => t.as_bytes(),
            Message::Close(_) => break,
            _ => continue,
        };
        match decode_client(payload, encoding) {
            Ok(msg) => conn.handle(&server, msg),
            Err(e) => {
                conn.error(ErrorCode::BadMessage, e.message, None);
                break;
            }
        }
    }
    let docs: Vec<String> = conn.open.keys().cloned().collect();
    for d in docs {
        conn.leave(&d);
    }
    drop(conn);
    let _ = writer.await;
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("tandem-tokio-baseline listening on ws://{}/ws", listener.local_addr()?);
        let server = Arc::new(Server::default());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve(Arc::clone(&server), stream));
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}
