//! One core's share of the server, sans I/O.
//!
//! A [`Shard`] owns the documents that hash to its core ([`DocId::owner`]) and the sessions of
//! the connections its core accepted. It takes events (a decoded client message, a message
//! from another core, a closed connection, a tick of the clock) and produces [`Effect`]s: a
//! frame for one of its connections, a connection to close, or a message for another core.
//! The I/O shell (`crate::server`) carries the effects out; tests drive shards directly.
//!
//! A client message for a document owned elsewhere is forwarded to the owner core, which
//! answers with frames for the connection's core. Broadcasts are encoded once per encoding
//! and reach each other core as one message holding the frame and the connection list.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_engine::{ClientId, Commit, Delta, DocState, Limits, NoteChange, SelectionRange, Submitted};
use tandem_storage::Snapshot;

use crate::access::{AccessError, AccessList, AccessUpdate, Auth};
use crate::codec::{Frame, RefusedSubmit, encode_server};
use crate::placement::Placement;
use crate::protocol::{
    ClientMsg, DocId, Encoding, ErrorCode, Json, MAX_CHANGES_REVISIONS, MAX_NAME_BYTES, MAX_REVISIONS_PER_REPLY,
    MAX_TOKEN_BYTES, OpRecord, PROTOCOL_VERSION, Peer, PeerSelection, Range, RevisionRecord, Role, ServerMsg,
    WireLimits, close,
};
use crate::room::Room;
use crate::session::{ConnId, RateLimit, Session, SessionInfo};

/// What a shard needs to know, shared by all cores.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Number of cores (shards).
    pub cores: u16,
    /// Per-document engine limits.
    pub limits: Limits,
    /// Most documents in memory per core.
    pub max_docs_per_core: usize,
    /// Most documents open at once per connection.
    pub max_open_docs: usize,
    /// Sustained messages per second per connection (bursts of twice that).
    pub max_messages_per_s: u32,
    /// Presence reaches subscribers at most this often per document.
    pub presence_interval: Duration,
    /// Largest message accepted, in bytes (told to clients).
    pub max_message_bytes: usize,
    /// How `hello` tokens are checked, and whether documents have access lists.
    pub auth: Auth,
    /// A session is told its token expires (`token_expiring`) this long before it does.
    pub token_warning: Duration,
    /// The control plane is told a document was edited at most once per this long.
    pub edit_report_interval: Duration,
    /// Documents are durable: committed ops are appended to the op log ([`Effect::Append`]),
    /// documents not in memory are loaded from it ([`Effect::Load`]), and snapshots taken.
    /// When false, documents live in memory only (tests, data-plane benchmarks).
    pub durable: bool,
    /// A snapshot is taken after this many ops...
    pub snapshot_every_ops: u64,
    /// ...or this many bytes of ops since the last one, whichever comes first; both scaled
    /// to the document's size (see [`snapshot_due`]).
    pub snapshot_every_bytes: u64,
    /// Transform steps per second one connection may spend on this core's documents (bursts
    /// of twice that); each submission is also bounded by `limits.max_transform_steps`.
    pub max_transform_steps_per_s: u32,
    /// A durable document nobody has had open for this long is evicted from memory (it
    /// loads again from the op log when next opened). At `max_docs_per_core`, the document
    /// idle longest is evicted at once to make room.
    pub evict_idle_after: Duration,
    /// In a cluster: which documents this node serves (none: all of them).
    pub placement: Option<Arc<dyn Placement>>,
}

/// Whether a document is due for a snapshot, `ops` and `bytes` (approximate) after its last
/// one, its content now taking about `doc_bytes` (chars plus formatting bytes). A snapshot costs the whole document, so it is
/// taken only once the ops since amount to a share of it: half of it in bytes (at least
/// `every_bytes`), or `every_ops` ops that are at least 1/64th of it (then loading replays at
/// most that many), or, however small the ops, 64 times `every_ops`. Disk spent on snapshots
/// then stays proportional to the ops written.
pub fn snapshot_due(ops: u64, bytes: u64, doc_bytes: u64, every_ops: u64, every_bytes: u64) -> bool {
    bytes >= every_bytes.max(doc_bytes / 2)
        || (ops >= every_ops && bytes.saturating_mul(64) >= doc_bytes)
        || ops >= every_ops.saturating_mul(64)
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            cores: 1,
            limits: Limits::default(),
            max_docs_per_core: 100_000,
            max_open_docs: 64,
            max_messages_per_s: 200,
            presence_interval: Duration::from_millis(50),
            max_message_bytes: 4 * 1024 * 1024,
            auth: Auth::Open,
            token_warning: Duration::from_secs(60),
            edit_report_interval: Duration::from_secs(5),
            durable: false,
            snapshot_every_ops: 1000,
            snapshot_every_bytes: 1 << 20,
            max_transform_steps_per_s: 1_000_000,
            evict_idle_after: Duration::from_secs(60),
            placement: None,
        }
    }
}

/// Requests waiting for a document to load, per document.
const MAX_WAITING_PER_DOC: usize = 65_536;

/// Queues `from`'s `req` behind a document that is not ready yet (loading, or on its way
/// here); gives it back when [`MAX_WAITING_PER_DOC`] already wait. A connection's leaving is
/// always kept: an open let through later must not leave a subscriber behind that is gone.
fn wait_behind(
    waiting: &mut Vec<(Arc<SessionInfo>, DocRequest)>,
    from: &Arc<SessionInfo>,
    req: DocRequest,
) -> Result<(), DocRequest> {
    if waiting.len() >= MAX_WAITING_PER_DOC && !matches!(req, DocRequest::Gone | DocRequest::Close) {
        return Err(req);
    }
    waiting.push((Arc::clone(from), req));
    Ok(())
}

/// A document being loaded: its state from the op log and its access list from the control
/// plane (each asked for only when needed), and the requests waiting for both.
#[derive(Debug)]
struct Loading {
    waiting: Vec<(Arc<SessionInfo>, DocRequest)>,
    /// REST calls about the document's notes, answered once it is in.
    calls: Vec<NotesCall>,
    /// The state, once loaded (`None` while the op log is being read).
    state: Option<DocState>,
    /// The access list, once loaded (`None` while the control plane is asked).
    access: Option<Arc<AccessList>>,
    /// Whether each is still awaited.
    needs_state: bool,
    needs_access: bool,
    /// The number of the access-list request this load waits for.
    access_load: u64,
    /// When the load began.
    since: Instant,
}

/// A request from a connection to a document's owner core.
#[derive(Clone, Debug)]
pub enum DocRequest {
    /// Subscribe, catching up from `from_rev`.
    Open {
        /// The revision the client has.
        from_rev: Option<u64>,
    },
    /// Unsubscribe.
    Close,
    /// Submit an op.
    Submit {
        /// Its base revision.
        base_rev: u64,
        /// The client's sequence number.
        client_seq: u64,
        /// The change (boxed: it is most of the message's size, and inbox slots are sized
        /// for the largest message).
        delta: Box<Delta>,
    },
    /// Set the client's selection, given at `rev`.
    Presence {
        /// The revision the ranges refer to.
        rev: u64,
        /// The ranges.
        ranges: Vec<SelectionRange>,
    },
    /// The connection is gone: unsubscribe without a reply.
    Gone,
    /// A submit whose delta was refused while decoding: answer with the error (which closes
    /// the document for the session, like any refused op).
    Refused {
        /// The op's sequence number.
        client_seq: u64,
        /// Why.
        code: ErrorCode,
        /// The explanation.
        message: String,
    },
    /// A history request (the document at a revision, or its list of revisions).
    History(HistoryQuery),
    /// Make the document what it was at `rev`, as the op `client_seq`.
    Restore {
        /// The revision.
        rev: u64,
        /// The op's sequence number.
        client_seq: u64,
    },
    /// Undo (or redo) the user's most recent change, as the op `client_seq`.
    Undo {
        /// The op's sequence number.
        client_seq: u64,
        /// Redo rather than undo.
        redo: bool,
    },
    /// A change to the document's comments or named versions, made at `rev`.
    Note {
        /// The revision it was made at.
        rev: u64,
        /// Its sequence number.
        client_seq: u64,
        /// The change (boxed, like a submit's delta).
        change: Box<NoteChange>,
    },
}

impl DocRequest {
    /// The `client_seq` of the op this request submits, if it submits one.
    pub fn client_seq(&self) -> Option<u64> {
        match self {
            Self::Submit { client_seq, .. }
            | Self::Refused { client_seq, .. }
            | Self::Undo { client_seq, .. }
            | Self::Restore { client_seq, .. }
            | Self::Note { client_seq, .. } => Some(*client_seq),
            _ => None,
        }
    }
}

/// A change submitted to a document.
#[derive(Debug)]
enum Change {
    /// An op made by the client.
    Op {
        /// Its base revision.
        base_rev: u64,
        /// The change.
        delta: Delta,
    },
    /// An undo or redo of the user's, which the document computes.
    Undo {
        /// Redo rather than undo.
        redo: bool,
    },
    /// The change that restores an old revision, made by the server against the current one.
    Restore {
        /// The change.
        delta: Delta,
    },
    /// A change to the notes (comments, named versions).
    Note {
        /// The revision it was made at.
        base_rev: u64,
        /// The change.
        change: NoteChange,
    },
}

/// The close reason sent with [`close::SUPERSEDED`].
const SUPERSEDED_REASON: &str = "another connection with this client id opened the document";

/// The client id notes made over the REST API are committed under (refused in `hello`).
pub const REST_CLIENT: ClientId = ClientId(0x5245_5354_0000_0001); // "REST", 1

/// The answer to a [`NotesCall`]: the document's revision and its notes then (for a change:
/// only the thread or named version it touched, if still there), or an error code and
/// message.
pub type NotesAnswer = Result<(u64, tandem_engine::Notes), (ErrorCode, String)>;

/// A REST call about a document's notes, for its owner core: list them, or change them as
/// `user` with `role` (the control plane checked the role in SQL).
pub struct NotesCall {
    /// Who asks (user id).
    pub user: String,
    /// Their display name.
    pub name: String,
    /// Their role on the document.
    pub role: Role,
    /// The change (a comment's range in the document as it is now); `None` lists.
    pub change: Option<NoteChange>,
    /// Where the answer goes (called once, on the core's thread: it must not block).
    pub reply: Box<dyn FnOnce(NotesAnswer) + Send>,
    /// Told, before the answer, when the op-log batch holding the change was sent and when
    /// it was durable (for tracing; not called when nothing was appended). On the core's
    /// thread: it must not block.
    pub appended: Option<Box<dyn FnOnce(std::time::SystemTime, std::time::SystemTime) + Send>>,
}

impl std::fmt::Debug for NotesCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotesCall").field("user", &self.user).field("change", &self.change).finish_non_exhaustive()
    }
}

/// A REST call's answer, and where it goes.
pub struct Answer {
    /// The call's reply.
    pub reply: Box<dyn FnOnce(NotesAnswer) + Send>,
    /// The answer.
    pub answer: NotesAnswer,
    /// See [`NotesCall::appended`].
    pub appended: Option<Box<dyn FnOnce(std::time::SystemTime, std::time::SystemTime) + Send>>,
}

impl Answer {
    /// Gives the answer.
    pub fn give(self) {
        (self.reply)(self.answer);
    }

    /// Says when the op-log batch this answer waited for was sent and became durable.
    pub fn appended(&mut self, sent: std::time::SystemTime, durable: std::time::SystemTime) {
        if let Some(tell) = self.appended.take() {
            tell(sent, durable);
        }
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer").field("answer", &self.answer.as_ref().map(|(rev, _)| rev)).finish_non_exhaustive()
    }
}

/// Users mentioned in a comment, for the control plane to notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    /// The document.
    pub doc: DocId,
    /// Who wrote the comment (user id).
    pub by: String,
    /// Their display name.
    pub by_name: String,
    /// The users mentioned (newly, for an edit), not the author.
    pub users: Vec<String>,
    /// The thread.
    pub thread: u64,
    /// The message's text.
    pub text: String,
}

/// A history request, answered from the op log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The document at this revision.
    At(u64),
    /// Up to `limit` revisions from `from_rev` on.
    List {
        /// The first revision wanted.
        from_rev: u64,
        /// Most revisions (already capped at [`MAX_REVISIONS_PER_REPLY`]).
        limit: u32,
    },
    /// The changes from `from_rev` to `to_rev`, attributed.
    Changes {
        /// The first revision.
        from_rev: u64,
        /// The last.
        to_rev: u64,
    },
    /// The document at `rev`, to restore it as the op `client_seq`.
    Restore {
        /// The revision.
        rev: u64,
        /// The restoring op's sequence number.
        client_seq: u64,
    },
}

impl HistoryQuery {
    /// The `client_seq` of the op this query is for (a restore), if any.
    pub fn client_seq(self) -> Option<u64> {
        match self {
            Self::Restore { client_seq, .. } => Some(client_seq),
            Self::At(_) | Self::List { .. } | Self::Changes { .. } => None,
        }
    }
}

/// What differs between a document and the revision restored, past this many chars on
/// either side (after their common start and end), is replaced whole rather than diffed: the
/// diff runs on the core, and its cost grows with the product of the lengths.
pub const MAX_RESTORE_DIFF_CHARS: usize = 4096;

/// What the op log answered to a [`HistoryQuery`].
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryAnswer {
    /// The document at a revision.
    At {
        /// The revision.
        rev: u64,
        /// Its content.
        content: Delta,
    },
    /// The changes between two revisions ([`tandem_engine::redline`]).
    Changes {
        /// The first revision.
        from_rev: u64,
        /// The last.
        to_rev: u64,
        /// The document at `from_rev` with the changes marked.
        content: Delta,
    },
    /// Revisions of the document.
    List {
        /// The oldest revision still readable.
        oldest: u64,
        /// The latest revision.
        latest: u64,
        /// The revisions.
        revisions: Vec<RevisionRecord>,
    },
}

/// A message between cores.
#[derive(Debug)]
pub enum CoreMsg {
    /// A connection's request for a document the receiving core owns.
    Doc {
        /// The document.
        doc: DocId,
        /// The connection's session.
        from: Arc<SessionInfo>,
        /// What it asks.
        req: DocRequest,
    },
    /// A frame for connections on the receiving core, except `except`.
    Deliver {
        /// The connections.
        conns: Arc<Vec<ConnId>>,
        /// One to skip (the author of a broadcast op).
        except: Option<ConnId>,
        /// The frame.
        frame: Frame,
    },
    /// A frame for one connection on the receiving core.
    DeliverOne {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// From the cluster: documents stopped or started being this node's (a lease handed
    /// back, lost or taken). The core looks now rather than at its next tick: it drops the
    /// documents it no longer serves and lets through the requests held for arriving ones.
    Placement,
    /// From the control plane: a message for one user's sessions on a document the receiving
    /// core owns (boxed: inbox slots stay small).
    Notify {
        /// The document.
        doc: DocId,
        /// The user, and the message.
        notice: Box<(String, ServerMsg)>,
    },
    /// From the control plane: a document's access list, a change to it, or its deletion.
    Access {
        /// The document (owned by the receiving core).
        doc: DocId,
        /// What changed.
        update: AccessUpdate,
    },
    /// From the control plane (the REST API): read or change a document's notes.
    Notes {
        /// The document (owned by the receiving core).
        doc: DocId,
        /// The call.
        call: Box<NotesCall>,
    },
    /// Close these connections on the receiving core (messages for them were lost).
    Kick {
        /// The connections.
        conns: Vec<ConnId>,
        /// The close code.
        code: u16,
    },
}

/// What a shard asks its I/O shell to do.
#[derive(Debug)]
pub enum Effect {
    /// Queue a frame on a connection of this core.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Close a connection of this core after what is queued, with a close code.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: u16,
        /// The close reason (at most 123 bytes).
        reason: String,
    },
    /// Send a message to another core.
    ToCore {
        /// The core.
        core: u16,
        /// The message.
        msg: CoreMsg,
    },
    /// Append a commit to the op log. Every effect after it waits until it is durable: acks
    /// and broadcasts never run ahead of the log.
    Append {
        /// The document.
        doc: DocId,
        /// The commit.
        commit: Arc<Commit>,
    },
    /// Load a document from storage, then call [`Shard::on_loaded`].
    Load {
        /// The document.
        doc: DocId,
    },
    /// Answer a history request from the op log, then call [`Shard::on_history`]. Like
    /// everything after an append, it waits until the log holds every op committed before it.
    History {
        /// The document.
        doc: DocId,
        /// Who asked.
        from: Arc<SessionInfo>,
        /// What.
        query: HistoryQuery,
    },
    /// Ask the control plane for a document's access list (the answer comes back as
    /// [`CoreMsg::Access`]).
    LoadAccess {
        /// The document.
        doc: DocId,
        /// This load's number, to come back with the answer.
        load: u64,
    },
    /// Tell the control plane a document was edited (best effort).
    Edited {
        /// The document.
        doc: DocId,
    },
    /// Tell the control plane a session opened a document (best effort: analytics, and which
    /// user a client id is).
    Opened {
        /// The document.
        doc: DocId,
        /// The session's client id.
        client: tandem_engine::ClientId,
        /// Its user.
        user: String,
    },
    /// Tell the control plane that a comment mentions users (it notifies those with access).
    Mentioned(Box<Mention>),
    /// Answer a REST call about notes (held, like frames, until what it reports is durable).
    Answer(Box<Answer>),
    /// In a cluster: this core dropped the documents the node stopped serving up to
    /// `generation` (held, like frames, until its earlier appends are durable; then the shell
    /// reports it to the placement, and the membership hands their leases back).
    Swept {
        /// The placement's generation.
        generation: u64,
    },
    /// Store a snapshot (its `time_ms` is for the shell to stamp).
    Snapshot {
        /// The document.
        doc: DocId,
        /// The snapshot.
        snapshot: Box<Snapshot>,
    },
}

/// Counters a shard keeps, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Client messages handled.
    pub messages_in: u64,
    /// Ops applied.
    pub ops_in: u64,
    /// Op messages queued to subscribers (fan-out).
    pub ops_out: u64,
    /// All frames queued to connections of this core.
    pub frames_out: u64,
    /// Presence messages queued to subscribers.
    pub presence_out: u64,
    /// Error messages sent.
    pub errors: u64,
    /// Idle documents evicted from memory.
    pub evicted: u64,
    /// Messages sent to other cores.
    pub core_msgs_out: u64,
    /// Messages received from other cores.
    pub core_msgs_in: u64,
    /// Documents dropped because this node stopped serving them (a cluster's lease moved).
    pub moved: u64,
}

/// One core's documents and sessions.
#[derive(Debug)]
pub struct Shard {
    core: u16,
    config: Arc<ShardConfig>,
    sessions: HashMap<ConnId, Session>,
    rooms: HashMap<DocId, Room>,
    /// Rooms with presence waiting to be sent.
    presence_due: Vec<DocId>,
    /// Documents being loaded, with the requests waiting for them.
    loading: HashMap<DocId, Loading>,
    /// Documents on their way to this node (another node is handing them over: the
    /// placement's `coming`), with the requests holding for them until they are served.
    arriving: HashMap<DocId, Vec<(Arc<SessionInfo>, DocRequest)>>,
    /// When a session's token needs looking at next (to warn, to close, or to reschedule
    /// after a refresh); at most one entry per session.
    expiries: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Storage failed: why. This core serves none of its documents any more.
    failed: Option<String>,
    /// Documents that became idle (nobody has them open), oldest first; an entry is stale
    /// when the room's `idle_since` no longer matches.
    idle: VecDeque<(DocId, Instant)>,
    /// What each connection has left of its transform budget on this core (absent: full).
    work: HashMap<ConnId, RateLimit>,
    /// The latest time the shard was given.
    now: Instant,
    /// The origin of the milliseconds the undo stacks are timed in.
    epoch: Instant,
    /// `epoch` on the wall clock, ms since the Unix epoch (notes are dated from it).
    epoch_wall_ms: u64,
    last_prune: Instant,
    next_conn: u64,
    /// Numbers access-list loads.
    next_load: u64,
    /// The placement's generation this core last swept at, and when it last checked every
    /// document against the placement anyway (deadlines pass without a generation change).
    swept: (u64, Instant),
    effects: Vec<Effect>,
    stats: ShardStats,
}

impl Shard {
    /// The shard of core `core`.
    pub fn new(core: u16, config: Arc<ShardConfig>) -> Self {
        assert!(core < config.cores, "core {core} of {}", config.cores);
        Self {
            core,
            config,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            presence_due: Vec::new(),
            loading: HashMap::new(),
            arriving: HashMap::new(),
            expiries: BinaryHeap::new(),
            failed: None,
            idle: VecDeque::new(),
            work: HashMap::new(),
            now: Instant::now(),
            epoch: Instant::now(),
            epoch_wall_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_prune: Instant::now(),
            next_conn: 1,
            next_load: 1,
            swept: (0, Instant::now()),
            effects: Vec::new(),
            stats: ShardStats::default(),
        }
    }

    /// This shard's core.
    pub fn core(&self) -> u16 {
        self.core
    }

    /// Connections on this core.
    pub fn connections(&self) -> usize {
        self.sessions.len()
    }

    /// Documents in memory on this core.
    pub fn documents(&self) -> usize {
        self.rooms.len()
    }

    /// Counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// The sequencer state of a document this core owns.
    pub fn document(&self, doc: &DocId) -> Option<&DocState> {
        self.rooms.get(doc).map(|r| &r.state)
    }

    /// Takes the effects produced so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Moves the effects produced so far into `out` (reusing its allocation).
    pub fn drain_effects_into(&mut self, out: &mut Vec<Effect>) {
        out.append(&mut self.effects);
    }

    /// A WebSocket connection finished its handshake on this core; `cookie_token` is the
    /// access token its upgrade request carried in a cookie, if any (used when `hello`
    /// names none).
    pub fn connect(&mut self, encoding: Encoding, now: Instant, cookie_token: Option<&str>) -> ConnId {
        let conn = ConnId { core: self.core, seq: self.next_conn };
        self.next_conn += 1;
        let cookie = cookie_token.filter(|t| t.len() <= MAX_TOKEN_BYTES).map(Box::from);
        self.sessions.insert(conn, Session::new(encoding, self.config.max_messages_per_s, now, cookie));
        conn
    }

    /// A connection of this core is gone: its documents are closed for it.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.remove(&conn) else { return };
        let Some(info) = session.info else { return };
        for doc in session.open {
            self.route(doc, &info, DocRequest::Gone);
        }
    }

    /// How long a connection has been up (for handshake-to-hello timeouts).
    pub fn connection_age(&self, conn: ConnId, now: Instant) -> Option<Duration> {
        self.sessions.get(&conn).map(|s| s.age(now))
    }

    /// True when the connection has said `hello`.
    pub fn has_hello(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| s.info.is_some())
    }

    /// A frame payload could not be decoded: tell the client and close.
    pub fn bad_message(&mut self, conn: ConnId, message: &str) {
        let Some(session) = self.sessions.get(&conn) else { return };
        let encoding = session.encoding;
        self.error_to(conn, encoding, ErrorCode::BadMessage, message.to_owned(), None);
        self.close(conn, close::BAD_MESSAGE, "bad message");
    }

    /// A `submit` whose delta was refused while decoding: the error belongs to its document
    /// (which it closes for the session, like any refused op); the connection stays open.
    pub fn refused_submit(&mut self, conn: ConnId, refused: RefusedSubmit, message: &str, now: Instant) {
        let RefusedSubmit { doc, client_seq, code } = refused;
        // Routed as a submit with an empty delta would be, then answered with the error.
        let msg = ClientMsg::Submit { doc, base_rev: 0, client_seq, delta: Delta::new() };
        self.handle(conn, msg, now, Some((code, message)));
    }

    /// Handles a decoded message from a connection of this core.
    pub fn on_message(&mut self, conn: ConnId, msg: ClientMsg, now: Instant) {
        self.handle(conn, msg, now, None);
    }

    fn handle(&mut self, conn: ConnId, msg: ClientMsg, now: Instant, refused: Option<(ErrorCode, &str)>) {
        self.now = now;
        let Some(session) = self.sessions.get_mut(&conn).filter(|s| !s.closed) else { return };
        self.stats.messages_in += 1;
        let encoding = session.encoding;
        if !session.rate.take(self.config.max_messages_per_s, now) {
            let max = self.config.max_messages_per_s;
            self.error_to(conn, encoding, ErrorCode::RateLimited, format!("more than {max} messages/s"), None);
            self.close(conn, close::RATE_LIMITED, "rate limit exceeded");
            return;
        }
        let info = match (&session.info, msg) {
            (None, ClientMsg::Hello { protocol, client, token, name, color }) => {
                self.hello(conn, protocol, client, token, name, color);
                return;
            }
            (None, _) => {
                self.error_to(conn, encoding, ErrorCode::BadHello, "the first message must be hello".into(), None);
                self.close(conn, close::BAD_HELLO, "hello required");
                return;
            }
            (Some(_), ClientMsg::Hello { .. }) => {
                self.error_to(conn, encoding, ErrorCode::BadHello, "hello was already received".into(), None);
                self.close(conn, close::BAD_HELLO, "duplicate hello");
                return;
            }
            (Some(info), ClientMsg::Refresh { token }) => {
                let user = info.peer.user.clone();
                self.refresh(conn, &user, &token, now);
                return;
            }
            (Some(info), msg) => (Arc::clone(info), msg),
        };
        let (info, msg) = info;
        let (doc_name, req) = match msg {
            ClientMsg::Hello { .. } | ClientMsg::Refresh { .. } => unreachable!("handled above"),
            ClientMsg::Open { doc, from_rev } => (doc, DocRequest::Open { from_rev }),
            ClientMsg::Close { doc } => (doc, DocRequest::Close),
            ClientMsg::Submit { doc, base_rev, client_seq, delta } => match refused {
                Some((code, message)) => (doc, DocRequest::Refused { client_seq, code, message: message.to_owned() }),
                None => (doc, DocRequest::Submit { base_rev, client_seq, delta: Box::new(delta) }),
            },
            ClientMsg::Presence { doc, rev, ranges } => {
                let Some(ranges) = ranges.into_iter().map(Range::to_engine).collect::<Option<Vec<_>>>() else {
                    self.error_to(conn, encoding, ErrorCode::BadSelection, "position too large".into(), Some(doc));
                    return;
                };
                (doc, DocRequest::Presence { rev, ranges })
            }
            ClientMsg::GetRevision { doc, rev } => (doc, DocRequest::History(HistoryQuery::At(rev))),
            ClientMsg::ListRevisions { doc, from_rev, limit } => {
                let limit = limit.clamp(1, MAX_REVISIONS_PER_REPLY);
                (doc, DocRequest::History(HistoryQuery::List { from_rev, limit }))
            }
            ClientMsg::Undo { doc, client_seq } => (doc, DocRequest::Undo { client_seq, redo: false }),
            ClientMsg::Redo { doc, client_seq } => (doc, DocRequest::Undo { client_seq, redo: true }),
            ClientMsg::Restore { doc, rev, client_seq } => (doc, DocRequest::Restore { rev, client_seq }),
            ClientMsg::GetChanges { doc, from_rev, to_rev } => {
                (doc, DocRequest::History(HistoryQuery::Changes { from_rev, to_rev }))
            }
            ClientMsg::Note { doc, rev, client_seq, change } => {
                (doc, DocRequest::Note { rev, client_seq, change: Box::new(change.0) })
            }
        };
        let doc = match DocId::new(&doc_name) {
            Ok(d) => d,
            Err(e) => {
                self.error_to(conn, encoding, ErrorCode::InvalidDocId, e, None);
                return;
            }
        };
        let session = self.sessions.get_mut(&conn).expect("checked above");
        match req {
            DocRequest::Open { .. } => {
                if !session.is_open(&doc) && session.open.len() >= self.config.max_open_docs {
                    let max = self.config.max_open_docs;
                    self.error_to(
                        conn,
                        encoding,
                        ErrorCode::TooManyDocs,
                        format!("at most {max} documents open per connection"),
                        Some(doc_name),
                    );
                    return;
                }
                if !session.is_open(&doc) {
                    session.open.push(doc.clone());
                }
            }
            DocRequest::Close => {
                if !session.forget(&doc) {
                    self.error_to(conn, encoding, ErrorCode::NotOpen, "document is not open".into(), Some(doc_name));
                    return;
                }
            }
            _ => {
                if !session.is_open(&doc) {
                    let msg = ServerMsg::Error {
                        code: ErrorCode::NotOpen,
                        message: "document is not open".into(),
                        doc: Some(doc_name),
                        client_seq: req.client_seq(),
                    };
                    self.stats.errors += 1;
                    self.send_local(conn, encode_server(&msg, encoding));
                    return;
                }
            }
        }
        self.route(doc, &info, req);
    }

    fn hello(
        &mut self,
        conn: ConnId,
        protocol: u32,
        client: tandem_engine::ClientId,
        token: String,
        name: String,
        color: String,
    ) {
        let encoding = self.sessions[&conn].encoding;
        if protocol != PROTOCOL_VERSION {
            let msg = format!("protocol {protocol} is not supported; this server speaks {PROTOCOL_VERSION}");
            self.error_to(conn, encoding, ErrorCode::UnsupportedProtocol, msg, None);
            self.close(conn, close::BAD_HELLO, "unsupported protocol");
            return;
        }
        if client == REST_CLIENT {
            let msg = format!("client id {REST_CLIENT} is reserved (notes made over the REST API)");
            self.error_to(conn, encoding, ErrorCode::BadHello, msg, None);
            self.close(conn, close::BAD_HELLO, "reserved client id");
            return;
        }
        if name.len() > MAX_NAME_BYTES || color.len() > MAX_NAME_BYTES || token.len() > MAX_TOKEN_BYTES {
            let msg = format!("name and color are at most {MAX_NAME_BYTES} bytes, token {MAX_TOKEN_BYTES}");
            self.error_to(conn, encoding, ErrorCode::BadHello, msg, None);
            self.close(conn, close::BAD_HELLO, "bad hello");
            return;
        }
        let cookie = self.sessions.get_mut(&conn).expect("caller checked").cookie_token.take();
        let (peer, expires) = match &self.config.auth {
            Auth::Open => (Peer { client, user: name.clone(), name, color }, None),
            Auth::Dev(secret) => {
                if !constant_time_eq(secret.as_bytes(), token.as_bytes()) {
                    self.error_to(conn, encoding, ErrorCode::Unauthorized, "token refused".into(), None);
                    self.close(conn, close::UNAUTHORIZED, "unauthorized");
                    return;
                }
                // The user is who the client says it is.
                (Peer { client, user: name.clone(), name, color }, None)
            }
            Auth::Accounts(verifier) => {
                let token = if token.is_empty() { cookie.as_deref().unwrap_or("") } else { token.as_str() };
                match verifier.verify(token) {
                    Ok(id) => {
                        let name = if id.name.is_empty() { name } else { id.name };
                        (Peer { client, user: id.user, name, color }, Some((id.valid_for, id.expires_at_ms)))
                    }
                    Err(why) => {
                        self.error_to(conn, encoding, ErrorCode::Unauthorized, format!("token refused: {why}"), None);
                        self.close(conn, close::UNAUTHORIZED, "unauthorized");
                        return;
                    }
                }
            }
        };
        let session = (u64::from(self.core) << 48) | conn.seq;
        let user = if self.config.auth.checks_access() { peer.user.clone() } else { String::new() };
        let info = Arc::new(SessionInfo {
            conn,
            session,
            client,
            encoding,
            peer,
            connected_at: self.sessions[&conn].connected_at,
        });
        self.sessions.get_mut(&conn).expect("caller checked").info = Some(info);
        if let Some((valid_for, at_ms)) = expires {
            self.set_expiry(conn, valid_for, at_ms);
        }
        let c = &self.config;
        let limits = WireLimits {
            max_message_bytes: c.max_message_bytes as u64,
            max_open_docs: u32::try_from(c.max_open_docs).unwrap_or(u32::MAX),
            max_messages_per_s: c.max_messages_per_s,
            presence_interval_ms: u32::try_from(c.presence_interval.as_millis()).unwrap_or(u32::MAX),
            max_insert_chars: c.limits.max_insert_chars as u64,
            max_delta_ops: c.limits.max_delta_ops as u64,
            max_document_chars: c.limits.max_document_chars as u64,
            history_ops: c.limits.history_ops as u64,
        };
        let expires_at = expires.map(|(_, at)| at);
        let welcome = ServerMsg::Welcome { protocol: PROTOCOL_VERSION, session, client, limits, user, expires_at };
        self.send_local(conn, encode_server(&welcome, encoding));
    }

    /// Records when a session's token expires: it is warned `token_warning` before, and
    /// closed at the time. A session has at most one entry in `expiries`: a refresh only
    /// moves the expiry later, and the entry, when due, reschedules itself.
    fn set_expiry(&mut self, conn: ConnId, valid_for: Duration, at_ms: u64) {
        let at = self.now + valid_for;
        let warning = self.config.token_warning;
        if let Some(s) = self.sessions.get_mut(&conn) {
            let first = s.expires.is_none();
            s.expires = Some((at, at_ms));
            s.warned = false;
            if first {
                self.expiries.push(Reverse((at.checked_sub(warning).unwrap_or(self.now), conn)));
            }
        }
    }

    /// `refresh`: a fresh token for the same user replaces the session's.
    fn refresh(&mut self, conn: ConnId, user: &str, token: &str, now: Instant) {
        let encoding = self.sessions[&conn].encoding;
        let Auth::Accounts(verifier) = &self.config.auth else {
            // Nothing expires without accounts: accept and say so.
            let msg = "this server checks no access tokens; refresh is not needed".to_owned();
            self.error_to(conn, encoding, ErrorCode::BadMessage, msg, None);
            return;
        };
        if token.len() > MAX_TOKEN_BYTES {
            self.error_to(conn, encoding, ErrorCode::Unauthorized, "token refused: too long".into(), None);
            self.close(conn, close::UNAUTHORIZED, "unauthorized");
            return;
        }
        match verifier.verify(token) {
            Ok(id) if id.user == user => {
                self.now = now;
                self.set_expiry(conn, id.valid_for, id.expires_at_ms);
                self.send_local(conn, encode_server(&ServerMsg::Refreshed { expires_at: id.expires_at_ms }, encoding));
            }
            Ok(_) => {
                let msg = "token refused: it names another user than this session's".to_owned();
                self.error_to(conn, encoding, ErrorCode::Unauthorized, msg, None);
                self.close(conn, close::UNAUTHORIZED, "unauthorized");
            }
            Err(why) => {
                self.error_to(conn, encoding, ErrorCode::Unauthorized, format!("token refused: {why}"), None);
                self.close(conn, close::UNAUTHORIZED, "unauthorized");
            }
        }
    }

    /// Warns sessions whose token expires soon and closes those whose token expired.
    fn expire_tokens(&mut self, now: Instant) {
        let warning = self.config.token_warning;
        while let Some(&Reverse((at, conn))) = self.expiries.peek() {
            if at > now {
                return;
            }
            self.expiries.pop();
            let Some(s) = self.sessions.get_mut(&conn).filter(|s| !s.closed) else { continue };
            let Some((expires, at_ms)) = s.expires else { continue };
            let encoding = s.encoding;
            if expires <= now {
                let msg = "the access token expired; get a fresh one and reconnect".to_owned();
                self.error_to(conn, encoding, ErrorCode::Unauthorized, msg, None);
                self.close(conn, close::TOKEN_EXPIRED, "token expired");
            } else if expires.saturating_duration_since(now) <= warning && !s.warned {
                s.warned = true;
                self.expiries.push(Reverse((expires, conn)));
                self.send_local(conn, encode_server(&ServerMsg::TokenExpiring { expires_at: at_ms }, encoding));
            } else {
                // Refreshed since this entry was made: wait for the new token's time.
                let next = if s.warned { expires } else { expires.checked_sub(warning).unwrap_or(now) };
                self.expiries.push(Reverse((next.max(now), conn)));
            }
        }
    }

    /// Handles a message from another core.
    pub fn on_core_msg(&mut self, msg: CoreMsg, now: Instant) {
        self.now = now;
        self.stats.core_msgs_in += 1;
        match msg {
            CoreMsg::Doc { doc, from, req } => self.on_doc(doc, &from, req, now),
            CoreMsg::Deliver { conns, except, frame } => {
                for &conn in conns.iter() {
                    if Some(conn) != except && self.sessions.contains_key(&conn) {
                        self.send_local(conn, frame.clone());
                    }
                }
            }
            CoreMsg::DeliverOne { conn, frame } => {
                if self.sessions.contains_key(&conn) {
                    self.send_local(conn, frame);
                }
            }
            CoreMsg::Access { doc, update } => self.on_access(doc, update, now),
            CoreMsg::Placement => {
                self.sweep(now);
                self.admit_arrived(now);
            }
            CoreMsg::Notes { doc, call } => {
                if let Some(reason) = &self.failed {
                    let msg = format!("storage failed on this server ({reason}); try again after it restarts");
                    (call.reply)(Err((ErrorCode::Internal, msg)));
                    return;
                }
                match self.ensure_room(&doc) {
                    Ok(true) => self.notes_call(&doc, *call, now),
                    Ok(false) => self.loading.get_mut(&doc).expect("loading").calls.push(*call),
                    Err(msg) => (call.reply)(Err((ErrorCode::Overloaded, msg))),
                }
            }
            CoreMsg::Notify { doc, notice } => {
                let (user, msg) = *notice;
                self.notify(&doc, &user, &msg);
            }
            CoreMsg::Kick { conns, code } => {
                for conn in conns {
                    if self.sessions.contains_key(&conn) {
                        let reason = match code {
                            close::INTERNAL_ERROR => "storage failed",
                            close::SUPERSEDED => SUPERSEDED_REASON,
                            _ => "server overloaded",
                        };
                        self.close(conn, code, reason);
                    }
                }
            }
        }
    }

    /// Sends due presence, evicts idle documents and forgets refilled transform budgets;
    /// call at least every `presence_interval`.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        self.sweep(now);
        self.admit_arrived(now);
        self.evict_idle(now, false);
        self.expire_tokens(now);
        if now.saturating_duration_since(self.last_prune) >= Duration::from_secs(1) {
            self.last_prune = now;
            let rate = self.config.max_transform_steps_per_s;
            self.work.retain(|_, b| !b.is_full(rate, now));
        }
        let interval = self.config.presence_interval;
        let due = std::mem::take(&mut self.presence_due);
        for doc in due {
            let Some(room) = self.rooms.get_mut(&doc) else { continue };
            if room.dirty.is_empty() {
                continue;
            }
            if room.last_presence.is_some_and(|t| now.saturating_duration_since(t) < interval) {
                self.presence_due.push(doc);
                continue;
            }
            room.last_presence = Some(now);
            let peers: Vec<PeerSelection> = room
                .dirty
                .drain(..)
                .map(|client| PeerSelection {
                    client,
                    ranges: room
                        .state
                        .presence()
                        .get(client)
                        .unwrap_or_default()
                        .iter()
                        .map(|r| Range::from_engine(*r))
                        .collect(),
                })
                .collect();
            let msg = ServerMsg::Presence { doc: doc.to_string(), rev: room.state.rev(), peers };
            let sent = self.broadcast(&doc, &msg, None);
            self.stats.presence_out += sent as u64;
        }
    }

    fn route(&mut self, doc: DocId, info: &Arc<SessionInfo>, req: DocRequest) {
        let owner = u16::try_from(doc.owner(usize::from(self.config.cores))).expect("core fits u16");
        if owner == self.core {
            self.on_doc(doc, info, req, Instant::now());
        } else {
            self.send_core(owner, CoreMsg::Doc { doc, from: Arc::clone(info), req });
        }
    }

    /// Evicts documents nobody has had open for `evict_idle_after` (with `one_now`, the one
    /// idle longest, however briefly: room is needed). Only durable documents are evicted:
    /// they load again from the op log. Returns whether one was evicted.
    fn evict_idle(&mut self, now: Instant, one_now: bool) -> bool {
        if !self.config.durable {
            return false;
        }
        while let Some((doc, since)) = self.idle.front() {
            let due = one_now || now.saturating_duration_since(*since) >= self.config.evict_idle_after;
            let current = self.rooms.get(doc).is_some_and(|r| r.is_empty() && r.idle_since == Some(*since));
            if current && !due {
                return false;
            }
            let (doc, _) = self.idle.pop_front().expect("checked");
            if current {
                self.rooms.remove(&doc);
                self.stats.evicted += 1;
                if one_now {
                    return true;
                }
            }
        }
        false
    }

    /// Marks a document idle when nobody has it open any more.
    fn mark_idle(&mut self, doc: &DocId) {
        let now = self.now;
        if let Some(room) = self.rooms.get_mut(doc)
            && room.is_empty()
            && room.idle_since.is_none()
        {
            room.idle_since = Some(now);
            self.idle.push_back((doc.clone(), now));
        }
    }

    /// Handles a request for a document this core owns.
    fn on_doc(&mut self, doc: DocId, from: &Arc<SessionInfo>, req: DocRequest, now: Instant) {
        if let Some(reason) = &self.failed {
            if !matches!(req, DocRequest::Gone | DocRequest::Close) {
                let msg = format!("storage failed on this server ({reason}); try again after it restarts");
                // The document is in no room any more: this only replies.
                self.doc_error(&doc, from, ErrorCode::Internal, msg, req.client_seq());
            }
            return;
        }
        if !self.arriving.is_empty()
            && let Some(waiting) = self.arriving.get_mut(&doc)
        {
            if let Err(req) = wait_behind(waiting, from, req) {
                let msg = "too many requests waiting for this document to arrive".to_owned();
                self.doc_error(&doc, from, ErrorCode::Overloaded, msg, req.client_seq());
            }
            return;
        }
        if !matches!(req, DocRequest::Gone | DocRequest::Close) && !self.serves(&doc, now) {
            let coming = self.coming(&doc, now);
            if coming && self.arriving.len() < self.config.max_docs_per_core {
                // Sent here by the node handing it over, ahead of the hand-over: held until
                // it is served here (see `admit_arrived`), not sent back.
                self.arriving.insert(doc, vec![(Arc::clone(from), req)]);
                return;
            }
            // Not coming: unless the lease arrived between the two reads (the placement sets
            // `serves` before it clears `coming`), it is served elsewhere.
            if coming || !self.serves(&doc, now) {
                self.moved(&doc, Some(from));
                return;
            }
        }
        if let Some(loading) = self.loading.get_mut(&doc) {
            if let Err(req) = wait_behind(&mut loading.waiting, from, req) {
                let msg = "too many requests waiting for this document to load".to_owned();
                self.doc_error(&doc, from, ErrorCode::Overloaded, msg, req.client_seq());
            }
            return;
        }
        match req {
            DocRequest::Open { from_rev } => self.open(doc, from, from_rev),
            DocRequest::Close => {
                self.leave(&doc, from.conn);
                self.reply(from, &ServerMsg::Closed { doc: doc.to_string() });
            }
            DocRequest::Gone => self.leave(&doc, from.conn),
            DocRequest::Submit { base_rev, client_seq, delta } => {
                self.submit(doc, from, Change::Op { base_rev, delta: *delta }, client_seq, now);
            }
            DocRequest::Undo { client_seq, redo } => self.submit(doc, from, Change::Undo { redo }, client_seq, now),
            DocRequest::Note { rev, client_seq, change } => {
                self.submit(doc, from, Change::Note { base_rev: rev, change: *change }, client_seq, now);
            }
            DocRequest::Restore { rev, client_seq } => self.restore(doc, from, rev, client_seq),
            DocRequest::Refused { client_seq, code, message } => {
                self.doc_error(&doc, from, code, message, Some(client_seq));
            }
            DocRequest::Presence { rev, ranges } => {
                let Some(room) = self.rooms.get_mut(&doc).filter(|r| r.is_subscribed(from.conn)) else {
                    self.doc_error(&doc, from, ErrorCode::NotOpen, "document is not open".into(), None);
                    return;
                };
                match room.state.set_selection(from.client, rev, ranges) {
                    Ok(_) => {
                        room.touch(from.client);
                        if !self.presence_due.contains(&doc) {
                            self.presence_due.push(doc);
                        }
                    }
                    Err(e) => self.doc_error(&doc, from, ErrorCode::for_engine(&e), e.to_string(), None),
                }
            }
            DocRequest::History(query) => self.history(doc, from, query),
        }
    }

    /// A history request: the current revision from memory, anything else from the op log.
    fn history(&mut self, doc: DocId, from: &Arc<SessionInfo>, query: HistoryQuery) {
        let Some(room) = self.rooms.get(&doc).filter(|r| r.is_subscribed(from.conn)) else {
            self.doc_error(&doc, from, ErrorCode::NotOpen, "document is not open".into(), None);
            return;
        };
        let latest = room.state.rev();
        if let HistoryQuery::At(rev) = query {
            if rev > latest {
                let msg = format!("revision {rev} does not exist yet (the latest is {latest})");
                self.request_error(&doc, from, ErrorCode::NoSuchRevision, msg, None);
                return;
            }
            if rev == latest {
                let snapshot = room.state.document().to_delta();
                self.reply(from, &ServerMsg::Revision { doc: doc.to_string(), rev, snapshot });
                return;
            }
        }
        if let HistoryQuery::Changes { from_rev, to_rev } = query {
            let refused = if to_rev > latest {
                Some((
                    ErrorCode::NoSuchRevision,
                    format!("revision {to_rev} does not exist yet (the latest is {latest})"),
                ))
            } else if from_rev > to_rev {
                Some((ErrorCode::NoSuchRevision, format!("from_rev {from_rev} is after to_rev {to_rev}")))
            } else if to_rev - from_rev > MAX_CHANGES_REVISIONS {
                let msg = format!("changes span at most {MAX_CHANGES_REVISIONS} revisions: ask for them in parts");
                Some((ErrorCode::HistoryUnavailable, msg))
            } else {
                None
            };
            if let Some((code, msg)) = refused {
                self.request_error(&doc, from, code, msg, None);
                return;
            }
        }
        if !self.config.durable {
            let msg = "this server keeps no op log (oplog = \"none\"): only the latest revision is available".into();
            self.request_error(&doc, from, ErrorCode::HistoryUnavailable, msg, None);
            return;
        }
        self.effects.push(Effect::History { doc, from: Arc::clone(from), query });
    }

    /// A restore: the revision is read from the op log ([`HistoryQuery::Restore`]), then the
    /// change from now to it is applied ([`Shard::on_history`]).
    fn restore(&mut self, doc: DocId, from: &Arc<SessionInfo>, rev: u64, client_seq: u64) {
        let Some(room) = self.rooms.get(&doc).filter(|r| r.is_subscribed(from.conn)) else {
            self.doc_error(&doc, from, ErrorCode::NotOpen, "document is not open".into(), Some(client_seq));
            return;
        };
        let (state, role) = (&room.state, room.role_of(&from.peer.user));
        let latest = state.rev();
        if let Some((seq, applied)) = state.last_applied(from.client)
            && seq == client_seq
        {
            // Sent again after a reconnect that missed the answer: applied once, as `applied`.
            self.reply(from, &ServerMsg::Ack { doc: doc.to_string(), client_seq, rev: applied });
            return;
        }
        if !role.is_some_and(Role::can_edit) {
            self.refuse_read_only(&doc, from, role, client_seq);
            return;
        }
        if rev >= latest {
            if rev > latest {
                let msg = format!("revision {rev} does not exist yet (the latest is {latest})");
                self.request_error(&doc, from, ErrorCode::NoSuchRevision, msg, Some(client_seq));
            } else {
                // Nothing to change.
                self.reply(from, &ServerMsg::Ack { doc: doc.to_string(), client_seq, rev: latest });
            }
            return;
        }
        if !self.config.durable {
            let msg = "this server keeps no op log (oplog = \"none\"): only the latest revision is available".into();
            self.request_error(&doc, from, ErrorCode::HistoryUnavailable, msg, Some(client_seq));
            return;
        }
        self.effects.push(Effect::History {
            doc,
            from: Arc::clone(from),
            query: HistoryQuery::Restore { rev, client_seq },
        });
    }

    /// The op log answered a history request ([`Effect::History`]).
    pub fn on_history(
        &mut self,
        doc: &DocId,
        from: &Arc<SessionInfo>,
        query: HistoryQuery,
        answer: Result<HistoryAnswer, (ErrorCode, String)>,
    ) {
        match (query, answer) {
            (HistoryQuery::Restore { client_seq, .. }, Ok(HistoryAnswer::At { content, .. })) => {
                self.restored(doc, from, client_seq, &content);
            }
            (_, Ok(HistoryAnswer::At { rev, content })) => {
                self.reply(from, &ServerMsg::Revision { doc: doc.to_string(), rev, snapshot: content });
            }
            (_, Ok(HistoryAnswer::Changes { from_rev, to_rev, content })) => {
                self.reply(from, &ServerMsg::Changes { doc: doc.to_string(), from_rev, to_rev, content });
            }
            (_, Ok(HistoryAnswer::List { oldest, latest, revisions })) => {
                self.reply(from, &ServerMsg::Revisions { doc: doc.to_string(), oldest, latest, revisions });
            }
            (query, Err((code, message))) => self.request_error(doc, from, code, message, query.client_seq()),
        }
    }

    /// The revision to restore was read: the change from the document now to it is applied
    /// as the session's op (to everyone, the session too), or acknowledged when there is none.
    fn restored(&mut self, doc: &DocId, from: &Arc<SessionInfo>, client_seq: u64, content: &Delta) {
        // The session may have closed the document meanwhile: then the restore is dropped.
        let Some(room) = self.rooms.get(doc).filter(|r| r.is_subscribed(from.conn)) else { return };
        let target = match tandem_engine::Document::from_delta(content) {
            Ok(d) => d,
            Err(e) => {
                let msg = format!("the revision read back is not a document: {e}");
                self.request_error(doc, from, ErrorCode::Internal, msg, Some(client_seq));
                return;
            }
        };
        let delta = room.state.document().diff_bounded(&target, MAX_RESTORE_DIFF_CHARS);
        if delta.is_empty() {
            let rev = room.state.rev();
            self.reply(from, &ServerMsg::Ack { doc: doc.to_string(), client_seq, rev });
            return;
        }
        let now = self.now;
        self.submit(doc.clone(), from, Change::Restore { delta }, client_seq, now);
    }

    /// A refused request that leaves the document open (history, undo, restore, read-only).
    fn request_error(
        &mut self,
        doc: &DocId,
        from: &Arc<SessionInfo>,
        code: ErrorCode,
        message: String,
        client_seq: Option<u64>,
    ) {
        self.stats.errors += 1;
        self.reply(from, &ServerMsg::Error { code, message, doc: Some(doc.to_string()), client_seq });
    }

    /// Makes sure `doc` is in memory: true when its room is there now, false when it is being
    /// loaded (wait in its `Loading`), or the reason it cannot be (this core is full).
    fn ensure_room(&mut self, doc: &DocId) -> Result<bool, String> {
        if self.rooms.contains_key(doc) {
            return Ok(true);
        }
        if self.loading.contains_key(doc) {
            return Ok(false);
        }
        if self.rooms.len() + self.loading.len() >= self.config.max_docs_per_core && !self.evict_idle(self.now, true) {
            let max = self.config.max_docs_per_core;
            return Err(format!("this core holds its maximum of {max} documents, all of them open"));
        }
        let (needs_state, needs_access) = (self.config.durable, self.config.auth.checks_access());
        if !needs_state && !needs_access {
            self.rooms.insert(doc.clone(), Room::new(DocState::new(self.config.limits.clone()), None));
            return Ok(true);
        }
        // Not in memory: load it (its latest snapshot and the ops after) and its access list.
        let loading = Loading {
            waiting: Vec::new(),
            calls: Vec::new(),
            state: (!needs_state).then(|| DocState::new(self.config.limits.clone())),
            access: None,
            needs_state,
            needs_access,
            access_load: self.next_load,
            since: self.now,
        };
        let load = self.next_load;
        self.next_load += 1;
        self.loading.insert(doc.clone(), loading);
        if needs_state {
            self.effects.push(Effect::Load { doc: doc.clone() });
        }
        if needs_access {
            self.effects.push(Effect::LoadAccess { doc: doc.clone(), load });
        }
        Ok(false)
    }

    fn open(&mut self, doc: DocId, from: &Arc<SessionInfo>, from_rev: Option<u64>) {
        match self.ensure_room(&doc) {
            Ok(true) => {}
            Ok(false) => {
                let loading = self.loading.get_mut(&doc).expect("loading");
                loading.waiting.push((Arc::clone(from), DocRequest::Open { from_rev }));
                return;
            }
            Err(msg) => {
                self.doc_error(&doc, from, ErrorCode::TooManyDocs, msg, None);
                return;
            }
        }
        let Some(role) = self.rooms[&doc].role_of(&from.peer.user) else {
            let msg = "no such document, or no access to it".to_owned();
            self.doc_error(&doc, from, ErrorCode::Forbidden, msg, None);
            return;
        };
        // One session per client id and document: of two, the connection accepted later
        // stays and the other is superseded (closed with 4009), so two tabs sharing an id
        // cannot both edit it, and a dead connection's late `open` cannot push out the
        // reconnected one.
        let others = self.rooms[&doc].sessions_of(from.client, from.conn);
        if self.config.auth.checks_access() && others.iter().any(|o| o.peer.user != from.peer.user) {
            // A client id belongs to one user: another user's session holds this one here,
            // and must not be pushed out (or have its sequence numbers taken over).
            let msg = "this client id is in use on this document by another user; use a random id per tab".to_owned();
            self.doc_error(&doc, from, ErrorCode::Forbidden, msg, None);
            return;
        }
        let age = |i: &SessionInfo| (i.connected_at, i.conn);
        if others.iter().any(|o| age(o) > age(from)) {
            self.supersede(from.conn);
            return;
        }
        for other in others {
            self.leave(&doc, other.conn);
            self.supersede(other.conn);
        }
        let room = self.rooms.get_mut(&doc).expect("inserted above");
        let joined = room.subscribe(Arc::clone(from));
        let state = &room.state;
        let (snapshot, ops) = match from_rev.map(|r| state.ops_since(r)) {
            Some(Ok(ops)) => (None, Some(ops.map(|c| OpRecord::from(&**c)).collect())),
            // No revision, one too old, or one from the future (the server lost it): start over.
            _ => (Some(state.document().to_delta()), None),
        };
        let opened = ServerMsg::Opened {
            doc: doc.to_string(),
            rev: state.rev(),
            snapshot,
            ops,
            online: room.online(from.client),
            last_seq: state.last_client_seq(from.client),
            role: room.access.is_some().then_some(role),
        };
        let selections: Vec<PeerSelection> = state
            .presence()
            .iter()
            .filter(|(c, _)| *c != from.client)
            .map(|(client, ranges)| PeerSelection {
                client,
                ranges: ranges.iter().map(|r| Range::from_engine(*r)).collect(),
            })
            .collect();
        let rev = state.rev();
        // The notes as they are now (the ops caught up carry notes as empty ops): always
        // sent, so a client knows when it has them.
        let notes = room.notes_frame(doc.as_str(), from.encoding);
        self.reply(from, &opened);
        self.reply_frame(from, notes);
        if self.config.auth.checks_access() {
            self.effects.push(Effect::Opened { doc: doc.clone(), client: from.client, user: from.peer.user.clone() });
        }
        if !selections.is_empty() {
            self.reply(from, &ServerMsg::Presence { doc: doc.to_string(), rev, peers: selections });
        }
        if joined {
            self.broadcast(&doc, &ServerMsg::Joined { doc: doc.to_string(), peer: from.peer.clone() }, Some(from.conn));
        }
    }

    /// Closes a connection that a newer session of its client id superseded.
    fn supersede(&mut self, conn: ConnId) {
        if conn.core != self.core {
            self.send_core(conn.core, CoreMsg::Kick { conns: vec![conn], code: close::SUPERSEDED });
        } else if self.sessions.contains_key(&conn) {
            self.close(conn, close::SUPERSEDED, SUPERSEDED_REASON);
        }
    }

    /// A document asked for with [`Effect::Load`] was loaded (or could not be).
    pub fn on_loaded(&mut self, doc: DocId, loaded: Result<DocState, String>, now: Instant) {
        let Some(loading) = self.loading.get_mut(&doc) else { return };
        match loaded {
            Ok(state) => {
                loading.state = Some(state);
                loading.needs_state = false;
                self.finish_loading(doc, now);
            }
            Err(e) => {
                let loading = self.loading.remove(&doc).expect("checked");
                self.refuse_waiting(
                    &doc,
                    loading,
                    ErrorCode::Internal,
                    &format!("the document could not be loaded: {e}"),
                );
            }
        }
    }

    /// Opens a document once its state and access list are both in.
    fn finish_loading(&mut self, doc: DocId, now: Instant) {
        let Some(loading) = self.loading.get(&doc) else { return };
        if loading.needs_state || loading.needs_access {
            return;
        }
        let loading = self.loading.remove(&doc).expect("checked");
        let state = loading.state.expect("loaded");
        tracing::debug!(core = self.core, doc = %doc, rev = state.rev(), ms = now.saturating_duration_since(loading.since).as_secs_f64() * 1e3, "document loaded");
        self.now = now;
        self.rooms.insert(doc.clone(), Room::new(state, loading.access));
        for (from, req) in loading.waiting {
            self.on_doc(doc.clone(), &from, req, now);
        }
        for call in loading.calls {
            self.notes_call(&doc, call, now);
        }
        self.mark_idle(&doc);
    }

    /// Answers every request that waited for a document that will not open.
    fn refuse_waiting(&mut self, doc: &DocId, loading: Loading, code: ErrorCode, msg: &str) {
        for call in loading.calls {
            (call.reply)(Err((code, msg.to_owned())));
        }
        for (from, req) in loading.waiting {
            if !matches!(req, DocRequest::Gone | DocRequest::Close) {
                self.doc_error(doc, &from, code, msg.to_owned(), req.client_seq());
            }
        }
    }

    /// The control plane's word on a document's access: the list asked for when it was
    /// opened, a change, or its deletion.
    fn on_access(&mut self, doc: DocId, update: AccessUpdate, now: Instant) {
        if !self.config.auth.checks_access() {
            // `--auth dev`: nothing is checked, so a change made over REST changes nothing
            // here (and must not start checking a room that never was).
            if let AccessUpdate::Changed(_, Some(done)) | AccessUpdate::Deleted(Some(done)) = &update {
                done.call();
            }
            return;
        }
        match update {
            AccessUpdate::Loaded(load, Ok(list)) => {
                // No longer loading (storage failed, or the document was deleted), or the
                // answer to an earlier load that was abandoned: ignored.
                let Some(loading) = self.loading.get_mut(&doc).filter(|l| l.access_load == load) else { return };
                if loading.access.as_ref().is_none_or(|a| a.version < list.version) {
                    loading.access = Some(list);
                }
                loading.needs_access = false;
                self.finish_loading(doc, now);
            }
            AccessUpdate::Loaded(load, Err(e)) => {
                if self.loading.get(&doc).is_none_or(|l| l.access_load != load) {
                    return;
                }
                let loading = self.loading.remove(&doc).expect("checked");
                let (code, msg) = match e {
                    AccessError::NotFound => (ErrorCode::Forbidden, "no such document, or no access to it".to_owned()),
                    AccessError::Unavailable(why) => {
                        (ErrorCode::Overloaded, format!("access could not be checked ({why}); try again"))
                    }
                };
                self.refuse_waiting(&doc, loading, code, &msg);
            }
            AccessUpdate::Changed(list, done) => {
                if let Some(loading) = self.loading.get_mut(&doc) {
                    // Still loading: the newer list wins when the load's answer comes.
                    if loading.access.as_ref().is_none_or(|a| a.version < list.version) {
                        loading.access = Some(list);
                    }
                } else {
                    self.access_changed(&doc, list);
                }
                if let Some(done) = done {
                    done.call();
                }
            }
            AccessUpdate::Deleted(done) => {
                if let Some(loading) = self.loading.remove(&doc) {
                    let msg = "the document was deleted".to_owned();
                    self.refuse_waiting(&doc, loading, ErrorCode::DocumentDeleted, &msg);
                }
                if let Some(room) = self.rooms.get(&doc) {
                    let subs: Vec<Arc<SessionInfo>> = room.subscribers().cloned().collect();
                    for info in subs {
                        self.doc_error(
                            &doc,
                            &info,
                            ErrorCode::DocumentDeleted,
                            "the document was deleted".into(),
                            None,
                        );
                    }
                    self.rooms.remove(&doc);
                    self.presence_due.retain(|d| *d != doc);
                }
                if let Some(done) = done {
                    done.call();
                }
            }
        }
    }

    /// Applies a new access list to an open document: each affected session is told its new
    /// role, or loses the document.
    fn access_changed(&mut self, doc: &DocId, list: Arc<AccessList>) {
        let Some(room) = self.rooms.get_mut(doc) else { return };
        if room.access.as_ref().is_some_and(|a| a.version >= list.version) {
            return;
        }
        let old = room.access.replace(Arc::clone(&list));
        let mut changed = Vec::new();
        for info in room.subscribers() {
            let before = old.as_ref().and_then(|a| a.role_of(&info.peer.user));
            let after = list.role_of(&info.peer.user);
            if before != after {
                changed.push((Arc::clone(info), after));
            }
        }
        for (info, role) in changed {
            match role {
                Some(role) => self.reply(&info, &ServerMsg::Role { doc: doc.to_string(), role }),
                None => {
                    let msg = "your access to this document was revoked".to_owned();
                    self.doc_error(doc, &info, ErrorCode::AccessRevoked, msg, None);
                }
            }
        }
    }

    /// The op log failed (a write or fdatasync error): what is in memory may not be durable,
    /// so this core drops its documents, closes their subscribers with 1011 (their unacked
    /// ops are resent after reconnecting, to a restarted server) and refuses every request
    /// for its documents from now on. It never retries.
    pub fn storage_failed(&mut self, reason: &str) {
        if self.failed.is_some() {
            return;
        }
        self.failed = Some(reason.to_owned());
        let rooms = std::mem::take(&mut self.rooms);
        let mut remote: HashMap<u16, Vec<ConnId>> = HashMap::new();
        for (doc, room) in rooms {
            for info in room.subscribers() {
                let msg = ServerMsg::Error {
                    code: ErrorCode::Internal,
                    message: format!("storage failed on this server ({reason})"),
                    doc: Some(doc.to_string()),
                    client_seq: None,
                };
                self.reply(info, &msg);
                if info.conn.core == self.core {
                    self.close(info.conn, close::INTERNAL_ERROR, "storage failed");
                } else {
                    remote.entry(info.conn.core).or_default().push(info.conn);
                }
            }
        }
        for (core, conns) in remote {
            self.send_core(core, CoreMsg::Kick { conns, code: close::INTERNAL_ERROR });
        }
        let loading = std::mem::take(&mut self.loading);
        for (doc, loading) in loading {
            for call in loading.calls {
                (call.reply)(Err((ErrorCode::Internal, format!("storage failed on this server ({reason})"))));
            }
            for (from, req) in loading.waiting {
                let msg = ServerMsg::Error {
                    code: ErrorCode::Internal,
                    message: format!("storage failed on this server ({reason})"),
                    doc: Some(doc.to_string()),
                    client_seq: req.client_seq(),
                };
                self.reply(&from, &msg);
            }
        }
        self.presence_due.clear();
        self.idle.clear();
    }

    /// In a cluster: whether this node serves `doc` at `now` (always, outside one).
    fn serves(&self, doc: &DocId, now: Instant) -> bool {
        self.config.placement.as_ref().is_none_or(|p| p.serves(doc.as_str(), now))
    }

    /// In a cluster: whether `doc` is being handed to this node at `now`.
    fn coming(&self, doc: &DocId, now: Instant) -> bool {
        self.config.placement.as_ref().is_some_and(|p| p.coming(doc.as_str(), now))
    }

    /// Lets the requests held for arriving documents through once this node serves them,
    /// or, when the hand-over did not come in time, sends them where the table says.
    fn admit_arrived(&mut self, now: Instant) {
        if self.arriving.is_empty() {
            return;
        }
        let done: Vec<DocId> =
            self.arriving.keys().filter(|d| self.serves(d, now) || !self.coming(d, now)).cloned().collect();
        for doc in done {
            let waiting = self.arriving.remove(&doc).expect("listed");
            for (from, req) in waiting {
                self.on_doc(doc.clone(), &from, req, now);
            }
        }
    }

    /// `doc` is not this node's (any more): drops it (its ops committed so far are on their
    /// way to the log, and everything said about them waits for that as usual) and tells its
    /// subscribers, the requests waiting for it, and `from`, where it is served now.
    fn moved(&mut self, doc: &DocId, from: Option<&Arc<SessionInfo>>) {
        let to = self
            .config
            .placement
            .as_ref()
            .and_then(|p| p.owner(doc.as_str()))
            .map(|a| a.to_string())
            .unwrap_or_default();
        let msg = ServerMsg::Moved { doc: doc.to_string(), to };
        let mut told: Vec<ConnId> = Vec::new();
        if let Some(room) = self.rooms.remove(doc) {
            self.stats.moved += 1;
            for info in room.subscribers() {
                self.reply(info, &msg);
                told.push(info.conn);
            }
        }
        if let Some(loading) = self.loading.remove(doc) {
            for call in loading.calls {
                (call.reply)(Err((ErrorCode::Overloaded, "another node serves this document now; try again".into())));
            }
            for (info, _) in loading.waiting {
                if !told.contains(&info.conn) {
                    self.reply(&info, &msg);
                    told.push(info.conn);
                }
            }
        }
        if let Some(from) = from.filter(|f| !told.contains(&f.conn)) {
            self.reply(from, &msg);
        }
        self.presence_due.retain(|d| d != doc);
    }

    /// Drops the documents this node stopped serving: when the placement's generation moved
    /// (a lease lost or handed back), and every second anyway (a deadline passed without
    /// the membership loop noticing). Reports the sweep after what it dropped is durable.
    fn sweep(&mut self, now: Instant) {
        let Some(p) = self.config.placement.clone() else { return };
        let generation = p.generation();
        if generation == self.swept.0 && now.saturating_duration_since(self.swept.1) < Duration::from_secs(1) {
            return;
        }
        self.swept = (generation, now);
        let gone: Vec<DocId> =
            self.rooms.keys().chain(self.loading.keys()).filter(|d| !p.serves(d.as_str(), now)).cloned().collect();
        for doc in gone {
            self.moved(&doc, None);
        }
        self.effects.push(Effect::Swept { generation });
    }

    /// The op log refused an append in a cluster (another node wrote the document: a lease
    /// moved under a commit in flight; or the shared database failed): nothing of the batch
    /// is durable. Unlike [`Shard::storage_failed`] the core carries on: every document is
    /// dropped (their next owner, maybe this node, loads them from the log) and their
    /// subscribers told to open them again, resending what was not acknowledged.
    pub fn append_refused(&mut self, reason: &str) {
        tracing::warn!(core = self.core, "an append was refused ({reason}): dropping every document of this core");
        let docs: Vec<DocId> = self.rooms.keys().chain(self.loading.keys()).cloned().collect();
        for doc in docs {
            self.moved(&doc, None);
        }
        self.idle.clear();
    }

    /// Why storage failed on this core, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn leave(&mut self, doc: &DocId, conn: ConnId) {
        let Some(room) = self.rooms.get_mut(doc) else { return };
        if let Some((info, true)) = room.unsubscribe(conn) {
            self.broadcast(doc, &ServerMsg::Left { doc: doc.to_string(), client: info.client }, None);
        }
        self.mark_idle(doc);
    }

    /// Refuses the change `client_seq` of a session whose `role` may not edit. The op is
    /// dropped and the document stays open (the session still reads and sends presence): the
    /// client undoes the op locally, and re-opens to edit once allowed.
    fn refuse_read_only(&mut self, doc: &DocId, from: &Arc<SessionInfo>, role: Option<Role>, client_seq: u64) {
        let role = role.map_or("none", Role::as_str);
        let msg = format!("your role on this document is {role}: it may not be edited");
        self.request_error(doc, from, ErrorCode::ReadOnly, msg, Some(client_seq));
    }

    /// A change to a document from a session: an op, an undo or redo the document computes,
    /// or a restore. Every one goes on the user's undo stack.
    fn submit(&mut self, doc: DocId, from: &Arc<SessionInfo>, change: Change, client_seq: u64, now: Instant) {
        let Some(room) = self.rooms.get_mut(&doc).filter(|r| r.is_subscribed(from.conn)) else {
            self.doc_error(&doc, from, ErrorCode::NotOpen, "document is not open".into(), Some(client_seq));
            return;
        };
        let role = room.role_of(&from.peer.user);
        let allowed = match &change {
            Change::Note { change, .. } => role.is_some_and(|r| may_note(r, change)),
            _ => role.is_some_and(Role::can_edit),
        };
        if !allowed {
            self.refuse_read_only(&doc, from, role, client_seq);
            return;
        }
        // The connection's share of this core's transform work.
        let rate = self.config.max_transform_steps_per_s;
        let budget = self.work.entry(from.conn).or_insert_with(|| RateLimit::new(rate, now));
        let allowed = budget.available(rate, now);
        let user = from.undo_key();
        let now_ms = ms_since(self.epoch, now);
        // Only the author of an op knows it: the others' changes go to their sender as well.
        let echo = !matches!(change, Change::Op { .. });
        let mut mentions = Vec::new();
        let state = &mut room.state;
        let result = match change {
            Change::Op { base_rev, delta } => {
                state.submit_by(from.client, &user, base_rev, client_seq, delta, allowed, now_ms)
            }
            Change::Undo { redo: false } => state.undo(from.client, &user, client_seq, allowed, now_ms),
            Change::Undo { redo: true } => state.redo(from.client, &user, client_seq, allowed, now_ms),
            Change::Restore { delta } => {
                let rev = state.rev();
                state.submit_by(from.client, &user, rev, client_seq, delta, allowed, now_ms)
            }
            Change::Note { base_rev, change } => {
                mentions = new_mentions(state.notes(), &change, &user);
                let owner = role == Some(Role::Owner);
                let wall_ms = self.epoch_wall_ms.saturating_add(now_ms);
                let name = &from.peer.name;
                state.submit_note(from.client, &user, name, base_rev, client_seq, change, owner, allowed, wall_ms)
            }
        };
        let spent = match &result {
            Ok((_, steps)) => *steps,
            Err(tandem_engine::Error::TransformTooCostly { steps, max }) => (*steps).min(*max),
            Err(_) => 0,
        };
        budget.spend(spent);
        match result.map(|(s, _)| s) {
            Ok(Submitted::Applied(commit)) => {
                // The sender of an op has it and is acknowledged; the sender of an undo or a
                // note gets what the server made, like everyone.
                let ack = (!echo).then_some(from);
                self.committed(&doc, &commit, mentions, ack, now);
            }
            Ok(Submitted::Duplicate { rev }) => {
                self.reply(from, &ServerMsg::Ack { doc: doc.to_string(), client_seq, rev });
            }
            Err(e @ (tandem_engine::Error::NothingToUndo { .. } | tandem_engine::Error::Note(_))) => {
                // Nothing happened: the document stays open.
                self.request_error(&doc, from, ErrorCode::for_engine(&e), e.to_string(), Some(client_seq));
            }
            Err(e) => {
                // Any refused submit closes the document for the session: its op is lost, and
                // the client must re-open (and resync) before editing again.
                self.doc_error(&doc, from, ErrorCode::for_engine(&e), e.to_string(), Some(client_seq));
            }
        }
    }

    /// A REST call about `doc`'s notes, with the document in memory. The answer is an
    /// effect: after a commit, it waits (like the frames) until the commit is durable.
    fn notes_call(&mut self, doc: &DocId, call: NotesCall, now: Instant) {
        let NotesCall { user, name, role, change, reply, appended } = call;
        let answer = self.notes_change(doc, &user, &name, role, change, now);
        self.effects.push(Effect::Answer(Box::new(Answer { reply, answer, appended })));
        self.mark_idle(doc);
    }

    fn notes_change(
        &mut self,
        doc: &DocId,
        user: &str,
        name: &str,
        role: Role,
        change: Option<NoteChange>,
        now: Instant,
    ) -> NotesAnswer {
        let Some(room) = self.rooms.get_mut(doc) else {
            return Err((ErrorCode::Internal, "the document is not in memory".into()));
        };
        let Some(change) = change else { return Ok((room.state.rev(), room.state.notes().clone())) };
        if !may_note(role, &change) {
            let what = if change.is_comment() { "comment on" } else { "name versions of" };
            return Err((
                ErrorCode::ReadOnly,
                format!("your role on this document is {}: it may not {what} it", role.as_str()),
            ));
        }
        let state = &mut room.state;
        let mentions = new_mentions(state.notes(), &change, user);
        let wall_ms = self.epoch_wall_ms.saturating_add(ms_since(self.epoch, now));
        let (rev, seq) = (state.rev(), state.last_client_seq(REST_CLIENT).unwrap_or(0) + 1);
        let max = self.config.limits.max_transform_steps;
        let owner = role == Role::Owner;
        match state.submit_note(REST_CLIENT, user, name, rev, seq, change, owner, max, wall_ms) {
            Ok((Submitted::Applied(commit), _)) => {
                self.committed(doc, &commit, mentions, None, now);
                let note = commit.note.as_ref().expect("a note's commit");
                Ok((commit.rev, self.rooms[doc].state.notes().touched_by(&note.change, commit.rev)))
            }
            Ok((Submitted::Duplicate { .. }, _)) => unreachable!("a fresh client_seq"),
            Err(e) => Err((ErrorCode::for_engine(&e), e.to_string())),
        }
    }

    /// What follows a commit: the control plane's hints (edited, mentions), the append and
    /// maybe a snapshot, then the ack to `ack` (the author of an op, who is not sent it) and
    /// the broadcast to every other subscriber. The ack and the broadcast come after the
    /// append among the effects: the shell holds them until the append is durable.
    fn committed(
        &mut self,
        doc: &DocId,
        commit: &Arc<Commit>,
        mentions: Vec<String>,
        ack: Option<&Arc<SessionInfo>>,
        now: Instant,
    ) {
        let Some(room) = self.rooms.get_mut(doc) else { return };
        self.stats.ops_in += 1;
        if let (Some(note), false, true) = (&commit.note, mentions.is_empty(), room.access.is_some()) {
            let (thread, text) = match &note.change {
                NoteChange::Comment { text, .. } => (commit.rev, text),
                NoteChange::Reply { thread, text, .. } | NoteChange::Edit { thread, text, .. } => (*thread, text),
                _ => unreachable!("only messages mention"),
            };
            let mention = Mention {
                doc: doc.clone(),
                by: note.user.clone(),
                by_name: note.name.clone(),
                users: mentions,
                thread,
                text: text.clone(),
            };
            self.effects.push(Effect::Mentioned(Box::new(mention)));
        }
        if room.access.is_some()
            && room.edit_reported.is_none_or(|t| now.saturating_duration_since(t) >= self.config.edit_report_interval)
        {
            room.edit_reported = Some(now);
            self.effects.push(Effect::Edited { doc: doc.clone() });
        }
        if self.config.durable {
            room.since_snapshot.0 += 1;
            room.since_snapshot.1 += commit.delta.approx_bytes() as u64;
            let (ops, bytes) = room.since_snapshot;
            // Chars, not UTF-8 bytes: the buffered rope flushes to count bytes after a
            // delete, and the rule needs only the document's size.
            let document = room.state.document();
            let doc_bytes = (document.len() + document.format_bytes()) as u64;
            let c = &self.config;
            let snapshot =
                snapshot_due(ops, bytes, doc_bytes, c.snapshot_every_ops, c.snapshot_every_bytes).then(|| {
                    room.since_snapshot = (0, 0);
                    Box::new(Snapshot::of(&room.state, 0))
                });
            self.effects.push(Effect::Append { doc: doc.clone(), commit: Arc::clone(commit) });
            if let Some(snapshot) = snapshot {
                self.effects.push(Effect::Snapshot { doc: doc.clone(), snapshot });
            }
        }
        let msg = match &commit.note {
            Some(note) => ServerMsg::Noted {
                doc: doc.to_string(),
                rev: commit.rev,
                author: commit.author,
                client_seq: commit.client_seq,
                note: Json((**note).clone()),
            },
            None => ServerMsg::Op {
                doc: doc.to_string(),
                rev: commit.rev,
                author: commit.author,
                client_seq: commit.client_seq,
                delta: commit.delta.clone(),
            },
        };
        if let Some(author) = ack {
            let msg = ServerMsg::Ack { doc: doc.to_string(), client_seq: commit.client_seq, rev: commit.rev };
            self.reply(author, &msg);
        }
        let sent = self.broadcast(doc, &msg, ack.map(|a| a.conn));
        self.stats.ops_out += sent as u64;
    }

    /// Sends a document-scoped error and closes the document for the session; `client_seq`
    /// names the submitted op it refuses, if any.
    fn doc_error(
        &mut self,
        doc: &DocId,
        from: &Arc<SessionInfo>,
        code: ErrorCode,
        message: String,
        client_seq: Option<u64>,
    ) {
        self.leave(doc, from.conn);
        self.request_error(doc, from, code, message, client_seq);
    }

    /// Sends `msg` to every subscriber of `doc` but `except`, encoded once per encoding.
    /// Returns how many subscribers it was sent to.
    fn broadcast(&mut self, doc: &DocId, msg: &ServerMsg, except: Option<ConnId>) -> usize {
        let Some(room) = self.rooms.get(doc) else { return 0 };
        let mut frames: [Option<Frame>; 2] = [None, None];
        let mut sent = 0;
        let mut out = Vec::new();
        for g in &room.groups {
            let slot = usize::from(g.encoding == Encoding::Json);
            let frame = frames[slot].get_or_insert_with(|| encode_server(msg, g.encoding)).clone();
            let n = g.conns.len() - usize::from(except.is_some_and(|e| g.conns.contains(&e)));
            if n == 0 {
                continue;
            }
            sent += n;
            if g.core == self.core {
                for &conn in g.conns.iter().filter(|c| Some(**c) != except) {
                    out.push(Effect::Send { conn, frame: frame.clone() });
                }
            } else {
                out.push(Effect::ToCore {
                    core: g.core,
                    msg: CoreMsg::Deliver { conns: Arc::clone(&g.conns), except, frame },
                });
            }
        }
        for e in out {
            match e {
                Effect::Send { conn, frame } => self.send_local(conn, frame),
                Effect::ToCore { core, msg } => self.send_core(core, msg),
                _ => unreachable!("broadcast only sends"),
            }
        }
        sent
    }

    /// Sends `msg` to one session, wherever its connection lives.
    /// Sends `msg` to `user`'s sessions that have `doc` open; how many there were.
    fn notify(&mut self, doc: &DocId, user: &str, msg: &ServerMsg) -> usize {
        let Some(room) = self.rooms.get(doc) else { return 0 };
        let to: Vec<Arc<SessionInfo>> = room.subscribers().filter(|s| s.peer.user == user).cloned().collect();
        for s in &to {
            self.reply(s, msg);
        }
        to.len()
    }

    fn reply(&mut self, to: &SessionInfo, msg: &ServerMsg) {
        self.reply_frame(to, encode_server(msg, to.encoding));
    }

    fn reply_frame(&mut self, to: &SessionInfo, frame: Frame) {
        if to.conn.core == self.core {
            if self.sessions.contains_key(&to.conn) {
                self.send_local(to.conn, frame);
            }
        } else {
            self.send_core(to.conn.core, CoreMsg::DeliverOne { conn: to.conn, frame });
        }
    }

    fn error_to(&mut self, conn: ConnId, encoding: Encoding, code: ErrorCode, message: String, doc: Option<String>) {
        self.stats.errors += 1;
        self.send_local(conn, encode_server(&ServerMsg::Error { code, message, doc, client_seq: None }, encoding));
    }

    fn send_local(&mut self, conn: ConnId, frame: Frame) {
        self.stats.frames_out += 1;
        self.effects.push(Effect::Send { conn, frame });
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &str) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.closed = true;
        }
        self.effects.push(Effect::Close { conn, code, reason: reason.to_owned() });
    }

    fn send_core(&mut self, core: u16, msg: CoreMsg) {
        self.stats.core_msgs_out += 1;
        self.effects.push(Effect::ToCore { core, msg });
    }
}

/// Whether `role` may make `change`: commenters and up comment, editors name versions.
fn may_note(role: Role, change: &NoteChange) -> bool {
    if change.is_comment() { role >= Role::Commenter } else { role.can_edit() }
}

/// Milliseconds from `epoch` to `now`.
fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// The users `change` mentions that its author did not mention before (an edit notifies only
/// those it adds), without the author.
fn new_mentions(notes: &tandem_engine::Notes, change: &NoteChange, author: &str) -> Vec<String> {
    let before: &[String] = match change {
        NoteChange::Edit { thread, message, .. } => notes
            .thread(*thread)
            .and_then(|t| t.messages.iter().find(|m| m.id == *message))
            .map_or(&[], |m| m.mentions.as_slice()),
        _ => &[],
    };
    let mut users: Vec<String> =
        change.mentions().iter().filter(|u| u.as_str() != author && !before.contains(u)).cloned().collect();
    users.sort();
    users.dedup();
    users
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn core_messages_stay_small() {
        // Inbox slots are sized for the largest message.
        assert!(std::mem::size_of::<CoreMsg>() <= 72, "CoreMsg is {} bytes", std::mem::size_of::<CoreMsg>());
    }
}
