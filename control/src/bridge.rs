//! The control plane's side of the queues to the cores: access lists asked for by the
//! cores, access changes pushed to them, comments' mentions (notified through the outbox), and
//! the cores' "document edited" and "session opened" hints (opens are written once a second: the client id's user and an analytics
//! event).
//!
//! A change is committed in SQL first; then the whole new access list (read after the
//! commit, so it carries the new version) goes to the document's owner core, and the
//! request that made the change is answered once the core has applied it. Lists carry the
//! document's `acl_version`, so an older one (a load answered before the change committed)
//! never replaces a newer one. In a cluster the same message travels to the node that owns
//! the document, the way frames for its documents do; a node that owns nothing for the
//! document has nothing to update (it loads the list fresh when the document opens).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tandem_engine::ClientId;
use tandem_net::DataPlane;
use tandem_net::access::{AccessError, AccessUpdate, ControlLink, Done};
use tandem_net::protocol::DocId;
use tandem_net::shard::Mention;
use tokio::sync::mpsc;
use tracing::warn;

use crate::store::{OpenRecord, Store};

/// Requests from the cores waiting for the control plane.
const QUEUE: usize = 16_384;
/// Access-list loads running at once (each is two small queries); more wait in the queue.
const CONCURRENT_LOADS: usize = 64;
/// How long a change waits for its owner core to apply it before the request is answered
/// anyway (the change is committed; only its live effect is late).
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

enum Request {
    Load(DocId, u64),
    Edited(DocId),
    Opened(OpenRecord),
    Mentioned(Box<Mention>),
}

/// Opens held for the next write; more are dropped (analytics only: counted in a warning).
const MAX_PENDING_OPENS: usize = 65_536;

/// What the cores hold: the sending end of the control plane's queue.
pub struct Link {
    tx: mpsc::Sender<Request>,
}

impl ControlLink for Link {
    fn load_access(&self, doc: &DocId, load: u64) -> bool {
        self.tx.try_send(Request::Load(doc.clone(), load)).is_ok()
    }

    fn edited(&self, doc: &DocId) {
        let _ = self.tx.try_send(Request::Edited(doc.clone()));
    }

    fn opened(&self, doc: &DocId, client: ClientId, user: &str) {
        let open = OpenRecord {
            doc: doc.as_str().to_owned(),
            client: client.to_string(),
            user: user.to_owned(),
            at_ms: crate::now_ms(),
        };
        let _ = self.tx.try_send(Request::Opened(open));
    }

    fn mentioned(&self, mention: Mention) {
        if self.tx.try_send(Request::Mentioned(Box::new(mention))).is_err() {
            warn!("the control plane's queue is full: a comment's mentions were not notified");
        }
    }
}

/// The control plane's handle on the cores.
#[derive(Clone)]
pub struct Bridge {
    /// This process, in the access changes it announces to the other nodes.
    origin: Arc<str>,
    store: Store,
    data: Arc<OnceLock<DataPlane>>,
}

impl Bridge {
    /// A bridge and the link to give the data plane; [`Bridge::run`] serves the link once
    /// [`Bridge::attach`] has been given the running data plane.
    pub fn new(store: Store) -> (Self, Arc<Link>, Receiver) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let origin: Arc<str> = crate::random_hex().into();
        (Self { origin, store, data: Arc::new(OnceLock::new()) }, Arc::new(Link { tx }), Receiver(rx))
    }

    /// Connects the running data plane.
    pub fn attach(&self, data: DataPlane) {
        let _ = self.data.set(data);
    }

    /// Delivers an update to `doc`'s owner core, waiting while its inbox is full.
    async fn deliver(&self, doc: DocId, mut update: AccessUpdate) {
        let Some(data) = self.data.get() else { return };
        let mut wait = Duration::from_micros(100);
        loop {
            match data.access(doc.clone(), update) {
                Ok(()) => return,
                Err(back) => {
                    update = back;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Pushes `doc`'s current access list (or its deletion) to its owner core and waits
    /// until the core has applied it; in a cluster, also tells the other nodes (the document
    /// may be served by one of them: it pushes the list to its core when it hears, within
    /// milliseconds, not before this returns). Call after the change is committed.
    pub async fn access_changed(&self, doc: &str) {
        self.push_access(doc).await;
        if let Err(e) = self.store.notify_access(&self.origin, doc).await {
            warn!(doc, "could not tell the other nodes of an access change: {e}");
        }
    }

    /// Hears the access changes other nodes announce (PostgreSQL `LISTEN`) and pushes each
    /// to this node's core for the document: a no-op unless this node serves it. Runs until
    /// the runtime stops, reconnecting after a lost connection (changes announced meanwhile
    /// reach the document's sessions when they next open it).
    pub async fn hear_access_changes(self, url: String) {
        use sqlx::postgres::PgListener;
        loop {
            let listening = async {
                let mut l = PgListener::connect(&url).await?;
                l.listen(crate::store::ACCESS_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listening.await {
                Ok(l) => l,
                Err(e) => {
                    warn!("cannot listen for other nodes' access changes: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if let Some((origin, doc)) = n.payload().split_once(' ')
                            && origin != &*self.origin
                        {
                            self.push_access(doc).await;
                        }
                    }
                    Err(e) => {
                        warn!("lost the connection hearing other nodes' access changes: {e}; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// Pushes `doc`'s current access list to this node's owner core and waits until applied.
    async fn push_access(&self, doc: &str) {
        let Ok(id) = DocId::new(doc) else { return };
        if self.data.get().is_none() {
            return;
        }
        let list = match self.store.access_list(doc).await {
            Ok(list) => list,
            Err(e) => {
                // Committed, but the live sessions keep the old list until they re-open.
                warn!(doc, "could not read the access list to push it: {e}");
                return;
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Mutex::new(Some(tx));
        let done = Done::new(move || {
            if let Some(tx) = tx.lock().expect("not poisoned").take() {
                let _ = tx.send(());
            }
        });
        let update = match list {
            Some(list) => AccessUpdate::Changed(Arc::new(list), Some(done)),
            None => AccessUpdate::Deleted(Some(done)),
        };
        self.deliver(id, update).await;
        if tokio::time::timeout(APPLY_TIMEOUT, rx).await.is_err() {
            warn!(doc, "the owner core took over {APPLY_TIMEOUT:?} to apply an access change");
        }
    }

    /// Reads (`change` `None`) or changes `doc`'s notes on its owner core as `user` (shown as
    /// `name`) with `role`; the answer is the revision and the notes then, or the core's error
    /// code and message.
    pub async fn notes(
        &self,
        doc: &str,
        user: &str,
        name: &str,
        role: tandem_net::protocol::Role,
        change: Option<tandem_engine::NoteChange>,
    ) -> tandem_net::shard::NotesAnswer {
        use tandem_net::protocol::ErrorCode;
        let unavailable = |m: &str| Err((ErrorCode::Overloaded, m.to_owned()));
        let Ok(id) = DocId::new(doc) else { return Err((ErrorCode::InvalidDocId, "invalid document id".into())) };
        let Some(data) = self.data.get() else { return unavailable("the data plane is not running") };
        let span = tracing::info_span!("core.notes", otel.name = "owner core: notes");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // When the change was made durable (the op-log batch's times, from the core).
        let appended = Arc::new(std::sync::OnceLock::new());
        let mut call = Box::new(tandem_net::shard::NotesCall {
            user: user.to_owned(),
            name: name.to_owned(),
            role,
            change,
            reply: Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
            appended: Some(Box::new({
                let appended = Arc::clone(&appended);
                move |sent, durable| {
                    let _ = appended.set((sent, durable));
                }
            })),
        });
        let call_core = async {
            let mut wait = Duration::from_millis(1);
            loop {
                match data.notes(id.clone(), call) {
                    Ok(()) => break,
                    Err(back) if wait < APPLY_TIMEOUT / 16 => {
                        call = back;
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(_) => return unavailable("the document's core is overloaded; try again"),
                }
            }
            let answer = match tokio::time::timeout(APPLY_TIMEOUT, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => unavailable("the server is shutting down"),
                Err(_) => unavailable("the document's core did not answer in time; try again"),
            };
            if let Some((sent, durable)) = appended.get() {
                crate::trace::past_span("oplog.append", *sent, *durable);
            }
            answer
        };
        tracing::Instrument::instrument(call_core, span).await
    }

    /// Serves the cores' requests until the link is dropped.
    pub async fn run(self, mut rx: Receiver) {
        let edited = Arc::new(Mutex::new(HashSet::<String>::new()));
        let opens = Arc::new(Mutex::new(Vec::<OpenRecord>::new()));
        let flusher = {
            let (store, edited, opens) = (self.store.clone(), Arc::clone(&edited), Arc::clone(&opens));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let batch: Vec<String> = edited.lock().expect("not poisoned").drain().collect();
                    if !batch.is_empty()
                        && let Err(e) = store.touch_documents(&batch, crate::now_ms()).await
                    {
                        warn!("recording edit times: {e}");
                    }
                    // One transaction a second, however many sessions opened documents.
                    let batch = std::mem::take(&mut *opens.lock().expect("not poisoned"));
                    if !batch.is_empty()
                        && let Err(e) = store.record_opens(&batch).await
                    {
                        warn!("recording {} document opens for analytics: {e}", batch.len());
                    }
                }
            })
        };
        let mut dropped_opens = 0u64;
        let loads = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LOADS));
        while let Some(req) = rx.0.recv().await {
            match req {
                Request::Load(doc, load) => {
                    let this = self.clone();
                    // Waiting here leaves later requests in the bounded queue, where a full
                    // queue makes the cores answer "overloaded".
                    let Ok(permit) = Arc::clone(&loads).acquire_owned().await else { break };
                    tokio::spawn(async move {
                        let _permit = permit;
                        let answer = match this.store.access_list(doc.as_str()).await {
                            Ok(Some(list)) => Ok(Arc::new(list)),
                            Ok(None) => Err(AccessError::NotFound),
                            Err(e) => {
                                warn!(doc = doc.as_str(), "loading an access list: {e}");
                                Err(AccessError::Unavailable("the metadata store is unavailable".into()))
                            }
                        };
                        this.deliver(doc, AccessUpdate::Loaded(load, answer)).await;
                    });
                }
                Request::Edited(doc) => {
                    edited.lock().expect("not poisoned").insert(doc.as_str().to_owned());
                }
                Request::Mentioned(m) => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let doc = m.doc.as_str();
                        if let Err(e) = store.record_mentions(doc, &m.by, &m.by_name, &m.users, m.thread, &m.text).await
                        {
                            warn!(doc, "recording a comment's mentions: {e}");
                        }
                    });
                }
                Request::Opened(open) => {
                    let mut opens = opens.lock().expect("not poisoned");
                    if opens.len() < MAX_PENDING_OPENS {
                        opens.push(open);
                    } else {
                        dropped_opens += 1;
                        if dropped_opens.is_power_of_two() {
                            warn!(
                                "the metadata store is behind: {dropped_opens} document opens not recorded for analytics"
                            );
                        }
                    }
                }
            }
        }
        flusher.abort();
    }
}

/// The receiving end of the cores' queue (see [`Bridge::run`]).
pub struct Receiver(mpsc::Receiver<Request>);
