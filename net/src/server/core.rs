//! One core's runtime: its listener, connections, inbox, timers and shard.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tandem_storage::LogOp;
use tracing::{error, info, warn};

use super::Shared;
use super::conn::{self, ConnState};
use super::mailbox::Backlog;
use super::notify::Notify;
use super::runtime;
use super::storage::{StorageLink, StorageReply, StorageReq, StorageThread};
use crate::metrics::{CoreStats, Driver};
use crate::protocol::{ErrorCode, close};
use crate::session::ConnId;
use crate::shard::{CoreMsg, Effect, Shard};

/// Most inbox messages handled before letting other tasks run.
const INBOX_BATCH: usize = 1024;
/// io_uring submission queue entries per core (the kernel's maximum).
pub(crate) const IO_URING_ENTRIES: u32 = 32_768;

pub(crate) struct Core {
    pub(crate) id: u16,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shard: RefCell<Shard>,
    pub(crate) conns: RefCell<HashMap<ConnId, Rc<ConnState>>>,
    backlogs: RefCell<Vec<Backlog>>,
    backlog_waiting: Notify,
    effects: RefCell<Vec<Effect>>,
    pub(crate) shutdown: Notify,
    pub(crate) stopping: Cell<bool>,
    pub(crate) stats: Arc<CoreStats>,
    /// When the core started: connection times are kept as milliseconds since.
    pub(crate) epoch: Instant,
    /// This core's storage thread (none when documents live in memory only).
    storage: Option<Arc<StorageLink>>,
    durability: RefCell<Durability>,
    /// Loads and history requests the storage queue had no room for: answered with an error
    /// once the effects being carried out are done.
    storage_refused: RefCell<Vec<StorageReq>>,
    /// Access loads the control plane's queue had no room for, likewise.
    refused_access: RefCell<Vec<(crate::protocol::DocId, crate::access::AccessUpdate)>>,
}

/// Group commit, from the core's side: ops committed since the last batch was sent, and
/// the effects waiting for a batch to be durable.
#[derive(Default)]
struct Durability {
    /// Ops for the next batch.
    pending: Vec<LogOp>,
    /// A batch is with the storage thread.
    inflight: bool,
    /// Batches sent, and batches durable.
    sent: u64,
    durable: u64,
    /// The batch the latest appended op belongs to: later effects wait for it.
    last_ticket: u64,
    /// Effects waiting, with the batch each waits for (non-decreasing).
    held: VecDeque<(u64, Effect)>,
    /// When the batch in flight was sent (REST answers that waited for it are told).
    sent_at: Option<Instant>,
    /// Storage failed: nothing is appended or held any more.
    failed: bool,
}

impl Durability {
    /// Forgets the batch in flight, the ops not yet sent and every effect waiting for them:
    /// none of it is known to be durable, so none of it may be carried out.
    fn discard(&mut self) {
        self.inflight = false;
        self.pending.clear();
        self.held.clear();
        self.last_ticket = self.durable;
    }
}

impl Core {
    /// Milliseconds since the core started (wraps after 49 days; timeouts compare
    /// differences, which stay right across the wrap for durations under 24 days).
    pub(crate) fn millis(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_millis() % (1 << 32)).expect("reduced mod 2^32")
    }

    /// Carries out the shard's effects. Effects after an op-log append wait until that
    /// append is durable (in order). Loads wait too: a document evicted from memory may
    /// have ops still on their way to the log, and must not be read back without them.
    pub(crate) fn apply_effects(&self) {
        let mut effects = std::mem::take(&mut *self.effects.borrow_mut());
        self.shard.borrow_mut().drain_effects_into(&mut effects);
        {
            let mut guard = self.durability.borrow_mut();
            let d = &mut *guard;
            let now = tandem_storage::now_ms();
            for effect in effects.drain(..) {
                match effect {
                    Effect::Append { doc, commit } => {
                        if !d.failed {
                            d.pending.push(LogOp { doc: doc.shared(), time_ms: now, commit });
                            d.last_ticket = d.sent + 1;
                        }
                    }
                    e if d.last_ticket > d.durable => {
                        let ticket = d.last_ticket;
                        d.held.push_back((ticket, e));
                    }
                    e => self.execute(e),
                }
            }
            self.stats.held_effects.store(d.held.len() as u64, Ordering::Relaxed);
        }
        *self.effects.borrow_mut() = effects;
        self.send_batch();
        self.answer_refused();
    }

    /// Hands a load or history request to the storage thread, or keeps it to be refused.
    fn to_storage(&self, req: StorageReq) {
        let refused = match &self.storage {
            Some(link) => link.send(req).err(),
            None => Some(req),
        };
        if let Some(req) = refused {
            self.storage_refused.borrow_mut().push(req);
        }
    }

    /// Carries out one effect now.
    fn execute(&self, effect: Effect) {
        match effect {
            Effect::Send { conn, frame } => {
                if let Some(c) = self.conns.borrow().get(&conn)
                    && !c.queue(frame, self.shared.config.send_queue_bytes)
                {
                    CoreStats::bump(&self.stats.slow_reader_closes);
                }
            }
            Effect::Close { conn, code, reason } => {
                if code == close::RATE_LIMITED {
                    CoreStats::bump(&self.stats.rate_limited_closes);
                }
                if let Some(c) = self.conns.borrow().get(&conn) {
                    c.close(code, &reason);
                }
            }
            Effect::ToCore { core, msg } => self.send_core(core, msg),
            Effect::Snapshot { doc, snapshot } => {
                if let Some(link) = &self.storage
                    && link.send(StorageReq::Snapshot(doc, snapshot)).is_err()
                {
                    warn!(core = self.id, "storage queue full: a snapshot was skipped");
                }
            }
            Effect::History { doc, from, query } => self.to_storage(StorageReq::History(doc, from, query)),
            Effect::Load { doc } => self.to_storage(StorageReq::Load(doc)),
            Effect::LoadAccess { doc, load } => {
                let queued = self.shared.control.as_ref().is_some_and(|c| c.load_access(&doc, load));
                if !queued {
                    let why = crate::access::AccessError::Unavailable("the control plane is busy".into());
                    let update = crate::access::AccessUpdate::Loaded(load, Err(why));
                    self.refused_access.borrow_mut().push((doc, update));
                }
            }
            Effect::Edited { doc } => {
                if let Some(c) = &self.shared.control {
                    c.edited(&doc);
                }
            }
            Effect::Opened { doc, client, user } => {
                if let Some(c) = &self.shared.control {
                    c.opened(&doc, client, &user);
                }
            }
            Effect::Answer(answer) => answer.give(),
            Effect::Mentioned(mention) => {
                if let Some(c) = &self.shared.control {
                    c.mentioned(*mention);
                }
            }
            Effect::Swept { generation } => {
                if let Some(p) = &self.shared.shard.placement {
                    p.swept(self.id, generation);
                }
            }
            Effect::Append { .. } => unreachable!("handled in apply_effects"),
        }
    }

    /// Answers the requests the storage queue refused, then carries out the replies.
    fn answer_refused(&self) {
        let refused = std::mem::take(&mut *self.storage_refused.borrow_mut());
        let access = std::mem::take(&mut *self.refused_access.borrow_mut());
        if refused.is_empty() && access.is_empty() {
            return;
        }
        {
            let mut shard = self.shard.borrow_mut();
            for (doc, update) in access {
                shard.on_core_msg(CoreMsg::Access { doc, update }, Instant::now());
            }
            for req in refused {
                match req {
                    StorageReq::Load(doc) => {
                        shard.on_loaded(doc, Err("the storage queue is full; try again".into()), Instant::now());
                    }
                    StorageReq::History(doc, from, query) => {
                        let busy = (ErrorCode::Overloaded, "the server is busy writing; ask again".to_owned());
                        shard.on_history(&doc, &from, query, Err(busy));
                    }
                    StorageReq::Append(_) | StorageReq::Snapshot(..) => unreachable!("never kept to refuse"),
                }
            }
        }
        self.apply_effects();
    }

    /// Sends the pending ops as the next batch when none is in flight.
    fn send_batch(&self) {
        let Some(link) = &self.storage else { return };
        let mut d = self.durability.borrow_mut();
        if d.inflight || d.pending.is_empty() || d.failed {
            return;
        }
        let batch = std::mem::take(&mut d.pending);
        match link.send(StorageReq::Append(batch)) {
            Ok(()) => {
                d.inflight = true;
                d.sent += 1;
                d.sent_at = Some(Instant::now());
            }
            // The queue is full of loads and snapshots: retry when the next reply comes.
            Err(StorageReq::Append(batch)) => d.pending = batch,
            Err(_) => unreachable!("the request given back is the one sent"),
        }
    }

    /// Handles what the storage thread answered.
    fn on_storage_reply(&self, reply: StorageReply) {
        match reply {
            StorageReply::Appended(Ok(n)) => {
                let (ready, sent_at): (Vec<Effect>, _) = {
                    let mut d = self.durability.borrow_mut();
                    d.inflight = false;
                    let sent_at = d.sent_at.take();
                    d.durable += 1;
                    let durable = d.durable;
                    let mut ready = Vec::new();
                    while d.held.front().is_some_and(|(t, _)| *t <= durable) {
                        ready.push(d.held.pop_front().expect("checked").1);
                    }
                    self.stats.held_effects.store(d.held.len() as u64, Ordering::Relaxed);
                    (ready, sent_at)
                };
                CoreStats::bump(&self.stats.oplog_batches);
                self.stats.oplog_ops.fetch_add(n as u64, Ordering::Relaxed);
                // Wall-clock times of the batch, for REST answers that trace it.
                let times = sent_at.map(|at| {
                    let now = std::time::SystemTime::now();
                    (now.checked_sub(at.elapsed()).unwrap_or(now), now)
                });
                for mut e in ready {
                    if let (Effect::Answer(answer), Some((sent, durable))) = (&mut e, times) {
                        answer.appended(sent, durable);
                    }
                    self.execute(e);
                }
                self.send_batch();
                self.answer_refused();
            }
            StorageReply::Appended(Err(e)) if self.shared.config.storage.oplog.is_shared() => {
                // A database op log: the batch was not written (or, for ScyllaDB, some of
                // its documents were; reloading them says which). Nothing of it was told to
                // anyone: drop every document, let clients resend, carry on.
                self.durability.borrow_mut().discard();
                CoreStats::bump(&self.stats.append_refusals);
                self.shard.borrow_mut().append_refused(&e);
                self.apply_effects();
            }
            StorageReply::Appended(Err(e)) => {
                error!(core = self.id, "OP LOG FAILED, this core refuses all writes until a restart: {e}");
                {
                    let mut d = self.durability.borrow_mut();
                    d.failed = true;
                    d.discard();
                }
                self.stats.storage_failed.store(1, Ordering::Relaxed);
                self.shared.ready.store(false, Ordering::Release);
                self.shard.borrow_mut().storage_failed(&e);
                self.apply_effects();
            }
            StorageReply::History(doc, from, query, answer) => {
                self.shard.borrow_mut().on_history(&doc, &from, query, answer);
                self.apply_effects();
            }
            StorageReply::Loaded(doc, loaded) => {
                self.shard.borrow_mut().on_loaded(doc, loaded.map(|s| *s), Instant::now());
                self.apply_effects();
            }
        }
    }

    fn send_core(&self, core: u16, msg: CoreMsg) {
        let inbox = &self.shared.inboxes[usize::from(core)];
        let mut backlogs = self.backlogs.borrow_mut();
        let backlog = &mut backlogs[usize::from(core)];
        let was_empty = backlog.is_empty();
        backlog.send(inbox, msg, self.shared.config.backlog_limit);
        if was_empty && !backlog.is_empty() {
            self.backlog_waiting.notify();
        }
    }

    /// True while another core's inbox is so full that this core's readers should pause.
    pub(crate) fn backlogged(&self) -> bool {
        let half = self.shared.config.backlog_limit / 2;
        self.backlogs.borrow().iter().any(|b| b.len() > half)
    }

    fn total_backlog(&self) -> usize {
        self.backlogs.borrow().iter().map(Backlog::len).sum()
    }
}

/// The thread body of core `id`.
pub(crate) fn run(
    id: u16,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    storage: Option<StorageThread>,
    started: &mpsc::Sender<std::io::Result<(u16, Driver)>>,
) {
    let (link, storage_thread) = match storage {
        Some(t) => (Some(t.link), Some(t.handle)),
        None => (None, None),
    };
    if shared.config.pin_cores
        && let Err(e) = monoio::utils::bind_to_cpu_set([usize::from(id)])
    {
        warn!(core = id, "could not pin to cpu {id}: {e:?}");
    }
    // io_uring's largest ring: every connection keeps a read in flight, and monoio does not
    // recover completions that overflow a smaller completion queue (they surface only at the
    // next blocking wait: stalls of up to a second were measured with the default 1024).
    let (mut runtime, choice) = match runtime::build(IO_URING_ENTRIES) {
        Ok(built) => built,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let driver = choice.driver;
    info!(core = id, driver = driver.name(), "core {id} runs {}: {}", driver.name(), choice.why);
    let stats = Arc::clone(&shared.stats[usize::from(id)]);
    stats.driver.store(u64::from(driver == Driver::Epoll), Ordering::Relaxed);

    let started = started.clone();
    let core_link = link.clone();
    runtime.block_on(async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let cores = shared.inboxes.len();
        let core = Rc::new(Core {
            id,
            shard: RefCell::new(Shard::new(id, Arc::clone(&shared.shard))),
            conns: RefCell::new(HashMap::new()),
            backlogs: RefCell::new((0..cores).map(|_| Backlog::default()).collect()),
            backlog_waiting: Notify::default(),
            effects: RefCell::new(Vec::new()),
            shutdown: Notify::default(),
            stopping: Cell::new(false),
            stats,
            shared,
            epoch: Instant::now(),
            storage: core_link,
            durability: RefCell::new(Durability::default()),
            storage_refused: RefCell::new(Vec::new()),
            refused_access: RefCell::new(Vec::new()),
        });
        if core.storage.is_some() {
            monoio::spawn(storage_replies(Rc::clone(&core)));
        }
        monoio::spawn(inbox(Rc::clone(&core)));
        monoio::spawn(ticker(Rc::clone(&core)));
        monoio::spawn(flusher(Rc::clone(&core)));
        let _ = started.send(Ok((id, driver)));
        accept(&core, listener).await;
        drain(&core).await;
    });
    if let (Some(link), Some(thread)) = (link, storage_thread) {
        link.stop();
        let _ = thread.join();
    }
}

/// Takes the storage thread's answers.
async fn storage_replies(core: Rc<Core>) {
    let link = Arc::clone(core.storage.as_ref().expect("spawned with storage"));
    loop {
        link.ready().await;
        while let Some(reply) = link.try_reply() {
            core.on_storage_reply(reply);
        }
    }
}

async fn accept(core: &Rc<Core>, listener: monoio::net::TcpListener) {
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let shared = &core.shared;
                    if shared.connections.fetch_add(1, Ordering::AcqRel) >= shared.config.max_connections {
                        shared.connections.fetch_sub(1, Ordering::AcqRel);
                        CoreStats::bump(&core.stats.refused);
                        monoio::spawn(conn::refuse(stream, "503 Service Unavailable", "too many connections"));
                        continue;
                    }
                    CoreStats::bump(&core.stats.accepted);
                    monoio::spawn(conn::serve(Rc::clone(core), stream));
                }
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(e) => {
                    warn!(core = core.id, "accept failed: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = core.shutdown.wait() => return,
        }
    }
}

/// Shutdown: close every connection with 1001 and wait for them (up to the grace period).
async fn drain(core: &Rc<Core>) {
    core.stopping.set(true);
    for c in core.conns.borrow().values() {
        c.close(close::GOING_AWAY, "server shutting down");
    }
    let deadline = Instant::now() + Duration::from_millis(core.shared.config.shutdown_grace_ms);
    while !core.conns.borrow().is_empty() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in core.conns.borrow().values() {
        c.kill();
    }
    info!(core = core.id, "core {} stopped", core.id);
}

/// Handles messages from other cores.
async fn inbox(core: Rc<Core>) {
    let mailbox = &core.shared.inboxes[usize::from(core.id)];
    let mut pokes = 0;
    loop {
        mailbox.ready(pokes).await;
        pokes = mailbox.pokes.load(Ordering::Acquire);
        if core.shared.shutting_down.load(Ordering::Acquire) && !core.stopping.get() {
            core.shutdown.notify();
        }
        let now = Instant::now();
        let mut handled = 0;
        {
            let mut shard = core.shard.borrow_mut();
            while handled < INBOX_BATCH {
                let Some(msg) = mailbox.pop() else { break };
                shard.on_core_msg(msg, now);
                handled += 1;
            }
        }
        core.apply_effects();
        if handled == INBOX_BATCH {
            super::notify::yield_now().await;
        }
    }
}

/// Retries messages held back for full inboxes.
async fn flusher(core: Rc<Core>) {
    loop {
        core.backlog_waiting.wait().await;
        loop {
            let mut all_empty = true;
            for (i, b) in core.backlogs.borrow_mut().iter_mut().enumerate() {
                all_empty &= b.flush(&core.shared.inboxes[i]);
            }
            core.stats.backlog_depth.store(core.total_backlog() as u64, Ordering::Relaxed);
            if all_empty {
                break;
            }
            monoio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// Presence, metrics, and connection timeouts.
async fn ticker(core: Rc<Core>) {
    let cfg = &core.shared.config;
    // Held-back presence goes out within a fifth of its interval of being due.
    let tick = Duration::from_millis((cfg.presence_interval_ms / 5).clamp(1, 20));
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    let handshake = Duration::from_millis(cfg.handshake_timeout_ms);
    let mut last_second = Instant::now();
    let mut last_ops = (0, 0);
    let mut last_scan = Instant::now();
    loop {
        monoio::time::sleep(tick).await;
        let now = Instant::now();
        core.shard.borrow_mut().tick(now);
        core.apply_effects();

        if now.duration_since(last_scan) >= Duration::from_millis(200) {
            last_scan = now;
            let shard = core.shard.borrow();
            let ms = core.millis();
            for c in core.conns.borrow().values() {
                c.check_timeouts(ms, idle, handshake, shard.has_hello(c.id));
            }
        }

        let shard = core.shard.borrow();
        let s = shard.stats();
        core.stats.publish(s, shard.connections(), shard.documents());
        let elapsed = now.duration_since(last_second);
        if elapsed >= Duration::from_secs(1) {
            let per_s = |now: u64, before: u64| ((now - before) as f64 / elapsed.as_secs_f64()).round() as u64;
            core.stats.ops_in_per_s.store(per_s(s.ops_in, last_ops.0), Ordering::Relaxed);
            core.stats.ops_out_per_s.store(per_s(s.ops_out, last_ops.1), Ordering::Relaxed);
            last_ops = (s.ops_in, s.ops_out);
            last_second = now;
            // A walk over every connection: once a second, not every tick.
            let queued: usize = core.conns.borrow().values().map(|c| c.queued_bytes()).sum();
            core.stats.send_queue_bytes.store(queued as u64, Ordering::Relaxed);
        }
        let mailbox = &core.shared.inboxes[usize::from(core.id)];
        core.stats.inbox_depth.store(mailbox.len() as u64, Ordering::Relaxed);
    }
}
