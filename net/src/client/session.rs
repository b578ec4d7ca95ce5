//! A client's session, sans I/O: its documents (each an engine [`ClientDoc`]), presence,
//! and the protocol around them.
//!
//! Feed it every server message ([`ClientSession::handle`]); take what to send
//! ([`ClientSession::poll_outgoing`]) and what happened ([`ClientSession::poll_event`]). On
//! a lost connection call [`ClientSession::on_disconnect`]; on the next one,
//! [`ClientSession::on_connect`] says hello again and re-opens every document from its last
//! known revision, and unacknowledged ops are resent with their original sequence numbers,
//! so each is applied exactly once.

use std::collections::{HashMap, VecDeque};

use tandem_engine::notes::transform_anchor;
use tandem_engine::{ClientDoc, ClientId, Delta, Document, Note, NoteChange, Notes, Remote, SelectionRange};

use crate::protocol::{
    ClientMsg, ErrorCode, Json, OpRecord, PROTOCOL_VERSION, Peer, Range, RevisionRecord, ServerMsg, WireLimits,
};

/// Something that happened, for the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The user's role on an open document changed.
    Role {
        /// The document.
        doc: String,
        /// The new role.
        role: crate::protocol::Role,
    },
    /// An export this user asked for finished (`status` `done`, with `url`) or failed.
    ExportFinished {
        /// The document.
        doc: String,
        /// The export's id.
        export: String,
        /// `done` or `failed`.
        status: String,
        /// The file's link.
        url: Option<String>,
        /// Why it failed.
        error: Option<String>,
    },
    /// The access token expires soon (send `refresh`), or a refresh took effect.
    TokenExpires {
        /// When, ms since the Unix epoch.
        expires_at: u64,
        /// True for the answer to a `refresh`.
        refreshed: bool,
    },
    /// The server accepted `hello`.
    Welcome {
        /// The session id.
        session: u64,
        /// The server's limits.
        limits: WireLimits,
    },
    /// A document is open and its content known (first open, reconnect or resync).
    Opened {
        /// The document.
        doc: String,
    },
    /// Someone else's change, already applied to the local copy.
    Remote {
        /// The document.
        doc: String,
        /// The change, transformed for the local copy.
        delta: Delta,
        /// The revision it made.
        rev: u64,
        /// Who made it.
        author: ClientId,
        /// The author's sequence number for it.
        client_seq: u64,
    },
    /// An own op was acknowledged.
    Acked {
        /// The document.
        doc: String,
        /// The revision it produced.
        rev: u64,
        /// Its sequence number.
        client_seq: u64,
    },
    /// Another user's selection, in local positions.
    Presence {
        /// The document.
        doc: String,
        /// Whose.
        client: ClientId,
        /// The ranges (empty: none).
        ranges: Vec<SelectionRange>,
    },
    /// Someone opened the document.
    Joined {
        /// The document.
        doc: String,
        /// Who.
        peer: Peer,
    },
    /// Someone left the document.
    Left {
        /// The document.
        doc: String,
        /// Who.
        client: ClientId,
    },
    /// The document was closed (at the client's request).
    Closed {
        /// The document.
        doc: String,
    },
    /// In a cluster: the node does not serve the document (any more). It is kept here, with
    /// its unacknowledged edits; connect to `to` (empty: retry shortly, through any node) and
    /// it is opened there, resuming.
    Moved {
        /// The document.
        doc: String,
        /// Where it is served, if known.
        to: String,
    },
    /// The local copy was rolled back to the server's: the server refused the op in flight.
    /// `undo` is what the editor must apply.
    RolledBack {
        /// The document.
        doc: String,
        /// The change that undoes the refused local edits.
        undo: Delta,
    },
    /// The document at an earlier revision (the answer to [`ClientSession::get_revision`]).
    Revision {
        /// The document.
        doc: String,
        /// The revision.
        rev: u64,
        /// Its content, as a delta of inserts.
        content: Delta,
    },
    /// Part of a document's history (the answer to [`ClientSession::list_revisions`]).
    Revisions {
        /// The document.
        doc: String,
        /// The oldest revision [`ClientSession::get_revision`] can still fetch.
        oldest: u64,
        /// The latest durable revision.
        latest: u64,
        /// The revisions, oldest first.
        revisions: Vec<RevisionRecord>,
    },
    /// The changes between two revisions, attributed (the answer to
    /// [`ClientSession::get_changes`]).
    Changes {
        /// The document.
        doc: String,
        /// The first revision.
        from_rev: u64,
        /// The last.
        to_rev: u64,
        /// The document at `from_rev` with the changes marked (see `ServerMsg::Changes`).
        content: Delta,
    },
    /// A change to the document's comments or named versions (this client's too), applied
    /// to [`ClientSession::notes`].
    Noted {
        /// The document.
        doc: String,
        /// The revision it took.
        rev: u64,
        /// Who made it.
        author: ClientId,
        /// The author's sequence number for it.
        client_seq: u64,
        /// The change.
        note: Note,
    },
    /// The document's notes were replaced by the server's (after an open).
    Notes {
        /// The document.
        doc: String,
    },
    /// The server reported an error.
    Error {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// The document, if any.
        doc: Option<String>,
        /// The `client_seq` of the op it refused, if it answers a submit.
        client_seq: Option<u64>,
    },
}

/// Why a server message could not be handled: the server broke the protocol (or the
/// session's state is not what the server thinks). The caller should reconnect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The engine refused what the server sent.
    #[error("document {doc}: {error}")]
    Engine {
        /// The document.
        doc: String,
        /// The engine's error.
        error: tandem_engine::Error,
    },
    /// The server sent something out of order.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// The local editing surface refused an edit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    /// The document is not open (or not yet opened).
    #[error("document {0} is not open")]
    NotOpen(String),
    /// The delta does not apply to the local copy.
    #[error(transparent)]
    Engine(#[from] tandem_engine::Error),
}

#[derive(Debug)]
struct OpenDoc {
    /// None until the first `opened`.
    state: Option<ClientDoc>,
    /// Waiting for `opened` (ops are held, not sent, meanwhile).
    opening: bool,
    peers: HashMap<ClientId, Peer>,
    selections: HashMap<ClientId, Vec<SelectionRange>>,
    /// What the last request asked for (undo, redo, restore, a note): while the `ClientDoc`
    /// still awaits its answer, it is asked again after a reconnect the catch-up did not
    /// answer.
    request: Option<Request>,
    /// The comment threads and named versions at the server revision the client knows.
    notes: Notes,
    /// Between `opened` and the `notes` that follows it.
    awaiting_notes: bool,
    /// In a cluster: the connection's node does not serve it; where it is (empty: unknown).
    moved_to: Option<String>,
}

/// A client's session.
#[derive(Debug)]
pub struct ClientSession {
    client: ClientId,
    token: String,
    name: String,
    color: String,
    connected: bool,
    welcomed: bool,
    docs: HashMap<String, OpenDoc>,
    outgoing: VecDeque<ClientMsg>,
    events: VecDeque<Event>,
}

impl ClientSession {
    /// A session for `client` (keep the same id across reconnects and restarts).
    pub fn new(client: ClientId, token: &str, name: &str, color: &str) -> Self {
        Self {
            client,
            token: token.to_owned(),
            name: name.to_owned(),
            color: color.to_owned(),
            connected: false,
            welcomed: false,
            docs: HashMap::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The client's id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// True once the server accepted `hello` on the current connection.
    pub fn is_welcomed(&self) -> bool {
        self.welcomed
    }

    /// A connection is up: say hello and re-open every document.
    pub fn on_connect(&mut self) {
        self.connected = true;
        self.welcomed = false;
        self.outgoing.clear();
        self.outgoing.push_back(ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            client: self.client,
            token: self.token.clone(),
            name: self.name.clone(),
            color: self.color.clone(),
        });
        for (name, doc) in &mut self.docs {
            doc.opening = true;
            doc.moved_to = None;
            doc.peers.clear();
            doc.selections.clear();
            let from_rev = doc.state.as_ref().map(ClientDoc::rev);
            self.outgoing.push_back(ClientMsg::Open { doc: name.clone(), from_rev });
        }
    }

    /// The connection is gone; whatever was not sent is dropped (it is resent on reconnect).
    pub fn on_disconnect(&mut self) {
        self.connected = false;
        self.welcomed = false;
        self.outgoing.clear();
    }

    /// Opens a document (sent now if connected, else on connect).
    pub fn open(&mut self, doc: &str) {
        if self.docs.contains_key(doc) {
            return;
        }
        self.docs.insert(
            doc.to_owned(),
            OpenDoc {
                state: None,
                opening: true,
                peers: HashMap::new(),
                selections: HashMap::new(),
                request: None,
                notes: Notes::new(),
                awaiting_notes: true,
                moved_to: None,
            },
        );
        if self.connected {
            self.outgoing.push_back(ClientMsg::Open { doc: doc.to_owned(), from_rev: None });
        }
    }

    /// Closes a document.
    pub fn close(&mut self, doc: &str) {
        if self.docs.remove(doc).is_some() && self.connected {
            self.outgoing.push_back(ClientMsg::Close { doc: doc.to_owned() });
        }
    }

    /// Applies a local edit and sends it when nothing else is in flight.
    pub fn edit(&mut self, doc: &str, delta: Delta) -> Result<(), EditError> {
        let entry = self.docs.get_mut(doc).ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        let state = entry.state.as_mut().ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        let out = state.edit(delta.clone())?;
        // Other users' carets stay before text typed exactly at them, as on the server.
        move_selections(&mut entry.selections, &delta, None);
        if let Some(out) = out
            && self.connected
            && !entry.opening
        {
            self.outgoing.push_back(ClientMsg::Submit {
                doc: doc.to_owned(),
                base_rev: out.base_rev,
                client_seq: out.client_seq,
                delta: out.delta,
            });
        }
        Ok(())
    }

    /// Asks the server to undo (or redo, `redo`) the user's most recent change to `doc`.
    /// Returns the request's `client_seq`, or `None`, sending nothing, while an op or
    /// another request is in flight (ask again once synced). The answer is an [`Event::Remote`] authored by this client with
    /// the request's `client_seq`, or an [`Event::Error`] `nothing_to_undo`; edits made
    /// meanwhile wait for it.
    pub fn undo(&mut self, doc: &str, redo: bool) -> Result<Option<u64>, EditError> {
        self.request(doc, if redo { Request::Redo } else { Request::Undo })
    }

    /// Asks the server to make `doc` what it was at revision `rev`, as a new op by this client
    /// (as [`ClientSession::undo`]; the answer is an [`Event::Remote`], an
    /// [`Event::Acked`] when nothing changes, or an [`Event::Error`] such as
    /// `history_unavailable` that leaves the document open).
    pub fn restore(&mut self, doc: &str, rev: u64) -> Result<Option<u64>, EditError> {
        self.request(doc, Request::Restore(rev))
    }

    /// Asks the server to change the document's comments or named versions (a comment's
    /// range in the document as it is, with no edits in flight). Returns the request's
    /// `client_seq`, or `None`, sending nothing, while an op or another request is in flight
    /// (as [`ClientSession::undo`]). The answer is an [`Event::Noted`] authored by this client
    /// with the request's `client_seq`, or an [`Event::Error`] (`not_found`, `forbidden`,
    /// `invalid_note`, `read_only`) that leaves the document open.
    pub fn note(&mut self, doc: &str, change: NoteChange) -> Result<Option<u64>, EditError> {
        self.request(doc, Request::Note(Box::new(change)))
    }

    /// The document's comment threads and named versions, at the server revision the client
    /// knows ([`ClientDoc::rev`]).
    pub fn notes(&self, doc: &str) -> Option<&Notes> {
        self.docs.get(doc).map(|d| &d.notes)
    }

    fn request(&mut self, doc: &str, request: Request) -> Result<Option<u64>, EditError> {
        let entry = self.docs.get_mut(doc).ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        let state = entry.state.as_mut().ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        if !self.connected || entry.opening {
            return Err(EditError::NotOpen(doc.to_owned()));
        }
        let Some(client_seq) = state.request() else { return Ok(None) };
        self.outgoing.push_back(request.msg(doc, client_seq, state.rev()));
        entry.request = Some(request);
        Ok(Some(client_seq))
    }

    /// Asks for the document as it was at revision `rev` (answered with [`Event::Revision`],
    /// or an [`Event::Error`] `history_unavailable` / `no_such_revision` that leaves the
    /// document open). The document must be open.
    pub fn get_revision(&mut self, doc: &str, rev: u64) -> Result<(), EditError> {
        self.history_request(doc, ClientMsg::GetRevision { doc: doc.to_owned(), rev })
    }

    /// Asks for up to `limit` revisions from `from_rev` on, with author and time (answered
    /// with [`Event::Revisions`]). The document must be open.
    pub fn list_revisions(&mut self, doc: &str, from_rev: u64, limit: u32) -> Result<(), EditError> {
        self.history_request(doc, ClientMsg::ListRevisions { doc: doc.to_owned(), from_rev, limit })
    }

    /// Asks for the changes from `from_rev` to `to_rev`, attributed to their authors
    /// (answered with [`Event::Changes`]). The document must be open.
    pub fn get_changes(&mut self, doc: &str, from_rev: u64, to_rev: u64) -> Result<(), EditError> {
        self.history_request(doc, ClientMsg::GetChanges { doc: doc.to_owned(), from_rev, to_rev })
    }

    fn history_request(&mut self, doc: &str, msg: ClientMsg) -> Result<(), EditError> {
        let entry = self.docs.get(doc).ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        if !self.connected || entry.opening {
            return Err(EditError::NotOpen(doc.to_owned()));
        }
        self.outgoing.push_back(msg);
        Ok(())
    }

    /// Sends the local selection (in local positions).
    pub fn set_selection(&mut self, doc: &str, ranges: &[SelectionRange]) -> Result<(), EditError> {
        let entry = self.docs.get(doc).ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        let state = entry.state.as_ref().ok_or_else(|| EditError::NotOpen(doc.to_owned()))?;
        if self.connected && !entry.opening {
            let (rev, ranges) = state.selection_for_server(ranges);
            let ranges = ranges.into_iter().map(Range::from_engine).collect();
            self.outgoing.push_back(ClientMsg::Presence { doc: doc.to_owned(), rev, ranges });
        }
        Ok(())
    }

    /// The next message to send.
    pub fn poll_outgoing(&mut self) -> Option<ClientMsg> {
        self.outgoing.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A document's local copy (with unacknowledged edits).
    pub fn document(&self, doc: &str) -> Option<&Document> {
        self.docs.get(doc)?.state.as_ref().map(ClientDoc::document)
    }

    /// A document's OT state.
    pub fn doc_state(&self, doc: &str) -> Option<&ClientDoc> {
        self.docs.get(doc)?.state.as_ref()
    }

    /// True when the document is open and caught up on the current connection (its notes
    /// included).
    pub fn is_open(&self, doc: &str) -> bool {
        self.docs.get(doc).is_some_and(|d| d.state.is_some() && !d.opening && !d.awaiting_notes)
    }

    /// In a cluster: where the document is served, when the connection's node said it does
    /// not serve it (empty: no node serves it yet; retry shortly). Cleared when it opens.
    pub fn moved_to(&self, doc: &str) -> Option<&str> {
        self.docs.get(doc)?.moved_to.as_deref()
    }

    /// Who else has the document open.
    pub fn peers(&self, doc: &str) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.docs.get(doc).map(|d| d.peers.values().cloned().collect()).unwrap_or_default();
        peers.sort_by_key(|p| p.client);
        peers
    }

    /// Another user's selection, in local positions.
    pub fn selection_of(&self, doc: &str, client: ClientId) -> Option<&[SelectionRange]> {
        self.docs.get(doc)?.selections.get(&client).map(Vec::as_slice)
    }

    /// True when no document has edits waiting for an ack.
    pub fn is_synced(&self) -> bool {
        self.docs
            .values()
            .all(|d| !d.opening && !d.awaiting_notes && d.state.as_ref().is_some_and(|s| !s.has_pending()))
    }

    /// Handles a message from the server.
    pub fn handle(&mut self, msg: ServerMsg) -> Result<(), SessionError> {
        match msg {
            ServerMsg::Welcome { session, limits, .. } => {
                self.welcomed = true;
                self.events.push_back(Event::Welcome { session, limits });
            }
            ServerMsg::Opened { doc, rev, snapshot, ops, online, last_seq, .. } => {
                self.opened(doc, rev, snapshot, ops, online, last_seq)?;
            }
            ServerMsg::Ack { doc, client_seq, rev } => {
                let Some(entry) = self.docs.get_mut(&doc) else { return Ok(()) };
                let Some(state) = entry.state.as_mut() else { return Ok(()) };
                // The op as the server applied it: anchors move through it.
                if let Some(out) = state.inflight().filter(|o| o.client_seq == client_seq && rev == state.rev() + 1) {
                    entry.notes.transform(&out.delta);
                }
                let next =
                    state.ack(client_seq, rev).map_err(|error| SessionError::Engine { doc: doc.clone(), error })?;
                self.events.push_back(Event::Acked { doc: doc.clone(), rev, client_seq });
                self.submit(&doc, next);
            }
            ServerMsg::Op { doc, rev, author, client_seq, delta } => {
                let record = OpRecord { rev, author, client_seq, delta };
                self.remote(&doc, record)?;
            }
            ServerMsg::Noted { doc, rev, author, client_seq, note: Json(note) } => {
                let record = OpRecord { rev, author, client_seq, delta: Delta::new() };
                if self.remote(&doc, record)?
                    && let Some(entry) = self.docs.get_mut(&doc)
                {
                    entry.notes.apply(&note, rev);
                    self.events.push_back(Event::Noted { doc, rev, author, client_seq, note });
                }
            }
            ServerMsg::Notes { doc, rev, notes: Json(notes) } => {
                let Some(entry) = self.docs.get_mut(&doc) else { return Ok(()) };
                if entry.state.as_ref().map(ClientDoc::rev) != Some(rev) {
                    return Err(SessionError::Protocol(format!("notes of {doc} at {rev}, not the revision known")));
                }
                entry.notes = notes;
                entry.awaiting_notes = false;
                self.events.push_back(Event::Notes { doc });
            }
            ServerMsg::Presence { doc, peers, .. } => {
                let Some(entry) = self.docs.get_mut(&doc) else { return Ok(()) };
                let Some(state) = entry.state.as_ref() else { return Ok(()) };
                for p in peers {
                    let ranges: Vec<SelectionRange> = p.ranges.into_iter().filter_map(Range::to_engine).collect();
                    let local = state.remote_selection(&ranges);
                    entry.selections.insert(p.client, local.clone());
                    self.events.push_back(Event::Presence { doc: doc.clone(), client: p.client, ranges: local });
                }
            }
            ServerMsg::Joined { doc, peer } => {
                if let Some(entry) = self.docs.get_mut(&doc) {
                    entry.peers.insert(peer.client, peer.clone());
                    self.events.push_back(Event::Joined { doc, peer });
                }
            }
            ServerMsg::Left { doc, client } => {
                if let Some(entry) = self.docs.get_mut(&doc) {
                    entry.peers.remove(&client);
                    entry.selections.remove(&client);
                    self.events.push_back(Event::Left { doc, client });
                }
            }
            ServerMsg::Closed { doc } => self.events.push_back(Event::Closed { doc }),
            ServerMsg::Moved { doc, to } => {
                if let Some(entry) = self.docs.get_mut(&doc) {
                    // Not open on this connection any more; opened again on the next one.
                    entry.opening = true;
                    entry.peers.clear();
                    entry.selections.clear();
                    entry.moved_to = Some(to.clone());
                    self.events.push_back(Event::Moved { doc, to });
                }
            }
            ServerMsg::Revision { doc, rev, snapshot } => {
                self.events.push_back(Event::Revision { doc, rev, content: snapshot });
            }
            ServerMsg::Changes { doc, from_rev, to_rev, content } => {
                self.events.push_back(Event::Changes { doc, from_rev, to_rev, content });
            }
            ServerMsg::Revisions { doc, oldest, latest, revisions } => {
                self.events.push_back(Event::Revisions { doc, oldest, latest, revisions });
            }
            ServerMsg::Error { code, message, doc, client_seq } => {
                // History errors answer a read and leave the document open.
                // (and a read-only refusal leaves the document open too: the op was dropped, and
                // the caller reverts it by re-opening).
                let keeps_doc_open = matches!(
                    code,
                    ErrorCode::HistoryUnavailable
                        | ErrorCode::NoSuchRevision
                        | ErrorCode::ReadOnly
                        | ErrorCode::NothingToUndo
                        | ErrorCode::NotFound
                        | ErrorCode::InvalidNote
                ) || (code == ErrorCode::Forbidden && client_seq.is_some());
                if let (true, Some(name), Some(seq)) = (keeps_doc_open, doc.as_ref(), client_seq) {
                    self.request_refused(name, seq);
                }
                if let Some(name) = doc.as_ref().filter(|_| !keeps_doc_open) {
                    self.doc_refused(name, code);
                }
                self.events.push_back(Event::Error { code, message, doc, client_seq });
            }
            ServerMsg::Role { doc, role } => self.events.push_back(Event::Role { doc, role }),
            ServerMsg::TokenExpiring { expires_at } => {
                self.events.push_back(Event::TokenExpires { expires_at, refreshed: false });
            }
            ServerMsg::Refreshed { expires_at } => {
                self.events.push_back(Event::TokenExpires { expires_at, refreshed: true });
            }
            ServerMsg::ExportFinished { doc, export, status, url, error, .. } => {
                self.events.push_back(Event::ExportFinished { doc, export, status, url, error });
            }
        }
        Ok(())
    }

    fn opened(
        &mut self,
        doc: String,
        rev: u64,
        snapshot: Option<Delta>,
        ops: Option<Vec<OpRecord>>,
        online: Vec<Peer>,
        last_seq: Option<u64>,
    ) -> Result<(), SessionError> {
        let client = self.client;
        let Some(entry) = self.docs.get_mut(&doc) else { return Ok(()) };
        entry.peers = online.into_iter().filter(|p| p.client != client).map(|p| (p.client, p)).collect();
        entry.opening = false;
        entry.moved_to = None;
        entry.awaiting_notes = true;
        let engine = |error| SessionError::Engine { doc: doc.clone(), error };
        let next = match (&mut entry.state, snapshot) {
            (None, Some(snapshot)) => {
                let content = Document::from_delta(&snapshot).map_err(engine)?;
                entry.notes = Notes::new();
                let next_seq = last_seq.map_or(1, |s| s + 1);
                entry.state = Some(ClientDoc::with_next_seq(client, rev, content, next_seq));
                None
            }
            (None, None) => return Err(SessionError::Protocol(format!("first open of {doc} came without a snapshot"))),
            (Some(state), Some(snapshot)) => {
                let content = Document::from_delta(&snapshot).map_err(engine)?;
                // The server's notes follow (`notes`).
                entry.notes = Notes::new();
                state.resync(rev, content, last_seq).map_err(engine)?
            }
            (Some(_), None) => {
                for op in ops.unwrap_or_default() {
                    self.remote(&doc, op)?;
                }
                let entry = self.docs.get_mut(&doc).expect("checked above");
                let state = entry.state.as_mut().expect("checked above");
                if state.rev() != rev {
                    return Err(SessionError::Protocol(format!(
                        "catch-up of {doc} ended at {} not {rev}",
                        state.rev()
                    )));
                }
                // An undo the catch-up did not answer never reached the server: ask again.
                if let (Some(seq), Some(request)) = (state.request_seq(), entry.request.as_ref())
                    && self.connected
                {
                    self.outgoing.push_back(request.msg(&doc, seq, state.rev()));
                }
                state.resend()
            }
        };
        self.events.push_back(Event::Opened { doc: doc.clone() });
        self.submit(&doc, next);
        Ok(())
    }

    /// A committed op (or note, with an empty delta) from the server; false when the
    /// document is not open here.
    fn remote(&mut self, doc: &str, op: OpRecord) -> Result<bool, SessionError> {
        let Some(entry) = self.docs.get_mut(doc) else { return Ok(false) };
        let Some(state) = entry.state.as_mut() else { return Ok(false) };
        let waiting = state.has_request();
        if op.rev == state.rev() + 1 {
            entry.notes.transform(&op.delta);
            // A comment not sent yet, or to be sent again, moves too.
            if let Some(Request::Note(change)) = &mut entry.request
                && let NoteChange::Comment { start, end, .. } = &mut **change
            {
                (*start, *end) = transform_anchor(*start, *end, false, &op.delta);
            }
        }
        match state.remote(op.rev, &op.delta, op.author, op.client_seq) {
            Ok(Remote::Applied(delta)) => {
                move_selections(&mut entry.selections, &delta, Some(op.author));
                // The answer to an undo: the edits made while waiting may go now.
                let next = if waiting && !state.has_request() && !entry.opening { state.resend() } else { None };
                self.events.push_back(Event::Remote {
                    doc: doc.to_owned(),
                    delta,
                    rev: op.rev,
                    author: op.author,
                    client_seq: op.client_seq,
                });
                self.submit(doc, next);
                Ok(true)
            }
            Ok(Remote::Acked(next)) => {
                self.events.push_back(Event::Acked { doc: doc.to_owned(), rev: op.rev, client_seq: op.client_seq });
                self.submit(doc, next);
                Ok(true)
            }
            Err(error) => Err(SessionError::Engine { doc: doc.to_owned(), error }),
        }
    }

    /// The server closed `doc` for this session after an error: re-open it. An op it refused
    /// is dropped first (it would be refused again).
    fn doc_refused(&mut self, doc: &str, code: ErrorCode) {
        let Some(entry) = self.docs.get_mut(doc) else { return };
        let refused_op = matches!(
            code,
            ErrorCode::InvalidDelta | ErrorCode::TooLarge | ErrorCode::SeqReused | ErrorCode::BaseInFuture
        );
        if refused_op && let Some(state) = entry.state.as_mut() {
            let undo = state.discard_pending();
            self.events.push_back(Event::RolledBack { doc: doc.to_owned(), undo });
        }
        if matches!(code, ErrorCode::InvalidDocId | ErrorCode::TooManyDocs) {
            // Re-opening would fail the same way.
            self.docs.remove(doc);
            return;
        }
        // One open at a time: a second one, answered after the first re-subscribed us, would
        // replay ops already received. (Errors for messages sent before the first error can
        // follow it; they need no second open.)
        if entry.opening {
            return;
        }
        entry.opening = true;
        // After a seq_conflict, ask for a snapshot: its last_seq says whether the op in flight
        // is the one applied (then it is dropped), and resync rebases everything after it.
        let from_rev = entry.state.as_ref().map(ClientDoc::rev).filter(|_| code != ErrorCode::SeqConflict);
        if self.connected {
            self.outgoing.push_back(ClientMsg::Open { doc: doc.to_owned(), from_rev });
        }
    }

    /// The server had nothing to undo for request `client_seq`: the edits made while waiting
    /// may go.
    fn request_refused(&mut self, doc: &str, client_seq: u64) {
        let Some(entry) = self.docs.get_mut(doc) else { return };
        let Some(state) = entry.state.as_mut() else { return };
        // Not the request in flight (a refused submit, which stays in flight: sending it
        // again would be refused again), or another one.
        if state.request_seq() != Some(client_seq) {
            return;
        }
        state.request_refused(client_seq);
        let next = if entry.opening { None } else { state.resend() };
        self.submit(doc, next);
    }

    fn submit(&mut self, doc: &str, out: Option<tandem_engine::Outgoing>) {
        if let Some(out) = out
            && self.connected
        {
            self.outgoing.push_back(ClientMsg::Submit {
                doc: doc.to_owned(),
                base_rev: out.base_rev,
                client_seq: out.client_seq,
                delta: out.delta,
            });
        }
    }
}

/// A change the client asks the server to compute.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request {
    Undo,
    Redo,
    Restore(u64),
    /// A note (a comment's range kept up to date with the ops received while it waits: it
    /// is sent at the revision the client has).
    Note(Box<NoteChange>),
}

impl Request {
    /// The request as sent, with the client at revision `at`.
    fn msg(&self, doc: &str, client_seq: u64, at: u64) -> ClientMsg {
        let doc = doc.to_owned();
        match self {
            Self::Undo => ClientMsg::Undo { doc, client_seq },
            Self::Redo => ClientMsg::Redo { doc, client_seq },
            Self::Restore(rev) => ClientMsg::Restore { doc, rev: *rev, client_seq },
            Self::Note(change) => ClientMsg::Note { doc, rev: at, client_seq, change: Json((**change).clone()) },
        }
    }
}

/// Moves the stored selections of other users through a change made by `author` (`None`:
/// this client): the author's own caret moves past its insert, everyone else's stays before
/// an insert made exactly at it (the server's rule, `Presence::transform`).
fn move_selections(selections: &mut HashMap<ClientId, Vec<SelectionRange>>, delta: &Delta, author: Option<ClientId>) {
    for (client, ranges) in selections.iter_mut() {
        let priority = Some(*client) != author;
        for r in ranges.iter_mut() {
            *r = r.transform(delta, priority);
        }
    }
}

#[cfg(test)]
mod tests {
    use tandem_engine::{Attributes, ClientId, Delta};

    use super::*;
    use crate::protocol::Role;

    fn opened(s: &mut ClientSession) {
        s.on_connect();
        s.open("d");
        let opened = ServerMsg::Opened {
            doc: "d".into(),
            rev: 0,
            snapshot: Some(Delta::new()),
            ops: None,
            online: Vec::new(),
            last_seq: None,
            role: Some(Role::Editor),
        };
        s.handle(opened).unwrap();
        while s.poll_outgoing().is_some() {}
    }

    fn refused(code: ErrorCode, client_seq: u64) -> ServerMsg {
        ServerMsg::Error { code, message: "no".into(), doc: Some("d".into()), client_seq: Some(client_seq) }
    }

    #[test]
    fn a_refused_submit_is_not_sent_again_but_a_refused_undo_lets_the_edits_go() {
        let mut s = ClientSession::new(ClientId(1), "", "n", "");
        opened(&mut s);
        s.edit("d", Delta::new().insert("a", Attributes::NONE)).unwrap();
        assert!(matches!(s.poll_outgoing(), Some(ClientMsg::Submit { client_seq: 1, .. })));
        // Read-only: the op stays in flight for the caller to revert, and is not resent.
        s.handle(refused(ErrorCode::ReadOnly, 1)).unwrap();
        assert_eq!(s.poll_outgoing(), None);

        let mut s = ClientSession::new(ClientId(1), "", "n", "");
        opened(&mut s);
        assert_eq!(s.undo("d", false).unwrap(), Some(1));
        assert!(matches!(s.poll_outgoing(), Some(ClientMsg::Undo { client_seq: 1, .. })));
        s.edit("d", Delta::new().insert("a", Attributes::NONE)).unwrap();
        assert_eq!(s.poll_outgoing(), None, "edits wait for the undo's answer");
        s.handle(refused(ErrorCode::NothingToUndo, 1)).unwrap();
        assert!(matches!(s.poll_outgoing(), Some(ClientMsg::Submit { client_seq: 2, .. })));
    }
}
