//! One node's membership: [`Ownership`], what the data plane reads on its hot path (which
//! shards this node may serve, until when, and where the others are), and [`Membership`],
//! the loop that keeps it true (heartbeat, renew, take, hand back), on a Tokio runtime
//! (`tandem serve` gives it a thread of its own).
//!
//! **Fencing by time.** A node serves a shard only until `sent + ttl - margin` on its own
//! monotonic clock, where `sent` is when it sent the request that took or renewed the lease;
//! the database set the lease's expiry to `now() + ttl` when it ran that request, later. So
//! the node stops at least `margin` before any other node can take the shard, however long
//! the node was paused (a stopped process, a GC, a partition from the database): the clock
//! keeps running while it is stopped, and every commit checks the deadline. The op log's
//! fence (a second writer of a revision is refused) covers what slips past a deadline check
//! in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::plan::{Pace, Step, View, plan};
use crate::shard::{Shard, affinity, shard_of};
use crate::store::{Announcement, LeaseError, LeaseStore};

/// What this node may serve: read by every core, written by [`Membership`].
#[derive(Debug)]
pub struct Ownership {
    me: Arc<str>,
    address: Arc<str>,
    shards: u16,
    base: Instant,
    /// Per shard: until when (ms after `base`) this node may serve it; 0: not its.
    until: Box<[AtomicU64]>,
    /// Per shard: until when (ms after `base`) another node is expected to hand it to this
    /// one (it said so); 0: not expected.
    coming: Box<[AtomicU64]>,
    /// Raised whenever shards stop being this node's.
    generation: AtomicU64,
    /// Per core: the generation it last swept (dropped the documents of shards not its).
    swept: Box<[AtomicU64]>,
    /// Per shard: the owner's address as last read (this node's own included).
    owners: RwLock<Vec<Option<Arc<str>>>>,
    /// Per advertised address of another node: where the nodes reach it, when elsewhere.
    internals: RwLock<BTreeMap<Arc<str>, Arc<str>>>,
    /// Set once the node is leaving: it takes nothing more.
    draining: AtomicBool,
    /// Called when shards stop or start being served here (the cores look at once).
    changed: Hook,
}

/// [`Ownership::on_change`]'s callback.
#[derive(Default)]
struct Hook(std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Hook(set)" } else { "Hook(none)" })
    }
}

impl Ownership {
    /// Nothing owned yet, for node `me` reached at `address`, with `cores` cores that sweep.
    pub fn new(me: &str, address: &str, shards: u16, cores: usize) -> Arc<Self> {
        Arc::new(Self {
            me: me.into(),
            address: address.into(),
            shards: shards.max(1),
            base: Instant::now(),
            until: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
            coming: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
            generation: AtomicU64::new(0),
            swept: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            owners: RwLock::new(vec![None; usize::from(shards.max(1))]),
            internals: RwLock::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            changed: Hook::default(),
        })
    }

    /// Calls `f` whenever shards stop being served here or start being (not on renewals),
    /// from the membership's task: it must not block. Set once; later calls are ignored.
    pub fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.changed.0.set(f);
    }

    fn changed(&self) {
        if let Some(f) = self.changed.0.get() {
            f();
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Where this node is reached.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The shard count.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of a document.
    pub fn shard_of(&self, doc: &str) -> Shard {
        shard_of(doc, self.shards)
    }

    fn ms(&self, t: Instant) -> u64 {
        // +1: 0 means "not this node's".
        t.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// Whether this node may serve (commit to) `shard` at `now`.
    pub fn serves(&self, shard: Shard, now: Instant) -> bool {
        let until = self.until.get(usize::from(shard)).map_or(0, |u| u.load(Ordering::Acquire));
        until != 0 && self.ms(now) < until
    }

    /// Whether this node may serve `doc` at `now`.
    pub fn serves_doc(&self, doc: &str, now: Instant) -> bool {
        self.serves(self.shard_of(doc), now)
    }

    /// Whether `doc`'s shard is on its way to this node (another node said it is handing it
    /// over) at `now` and not served yet: its requests wait for it rather than going back.
    pub fn coming_doc(&self, doc: &str, now: Instant) -> bool {
        self.coming(self.shard_of(doc), now)
    }

    /// Whether `shard` is on its way to this node at `now` (see [`Ownership::coming_doc`]);
    /// never while the node is leaving.
    pub fn coming(&self, shard: Shard, now: Instant) -> bool {
        let until = self.coming.get(usize::from(shard)).map_or(0, |u| u.load(Ordering::Acquire));
        until != 0 && self.ms(now) < until && !self.draining()
    }

    /// Shards served at `now`.
    pub fn served(&self, now: Instant) -> usize {
        (0..self.shards).filter(|&s| self.serves(s, now)).count()
    }

    /// Where the owner of `shard` is reached, as last read (None: nobody holds it now).
    pub fn owner(&self, shard: Shard) -> Option<Arc<str>> {
        self.owners.read().expect("owners lock").get(usize::from(shard)).cloned().flatten()
    }

    /// Raised whenever shards stop being this node's: a core that sees it move sweeps its
    /// documents, then calls [`Ownership::swept`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Core `core` dropped every document of the shards this node stopped serving up to
    /// `generation` (their appends durable or failed).
    pub fn swept(&self, core: usize, generation: u64) {
        if let Some(s) = self.swept.get(core) {
            s.fetch_max(generation, Ordering::AcqRel);
        }
    }

    /// Whether the node is leaving.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn grant(&self, shard: Shard, until: Instant) {
        self.until[usize::from(shard)].store(self.ms(until), Ordering::Release);
        self.coming[usize::from(shard)].store(0, Ordering::Release);
    }

    /// Another node is about to hand `shards` to this one: their requests wait until `until`
    /// (not for those this node serves already: a notice read after the lease came).
    fn expect(&self, shards: &[(Shard, u64)], until: Instant) {
        let now = Instant::now();
        for &(s, _) in shards {
            if let Some(c) = self.coming.get(usize::from(s))
                && !self.serves(s, now)
            {
                c.store(self.ms(until), Ordering::Release);
            }
        }
    }

    /// Stops serving `shards` now; returns the generation the cores must sweep.
    fn revoke(&self, shards: &[Shard]) -> u64 {
        for &s in shards {
            self.until[usize::from(s)].store(0, Ordering::Release);
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed();
        generation
    }

    /// Whether every core swept `generation`.
    fn is_swept(&self, generation: u64) -> bool {
        self.swept.iter().all(|s| s.load(Ordering::Acquire) >= generation)
    }

    /// Where the other nodes reach the node advertised at `address` (forwarded REST calls):
    /// the internal address it announced, else `address` itself.
    pub fn internal(&self, address: &str) -> Arc<str> {
        self.internals.read().expect("internals lock").get(address).cloned().unwrap_or_else(|| Arc::from(address))
    }

    /// Reads the owners from `view`, except for the shards in `handing` (this node's, on
    /// their way to the node given).
    fn set_owners(&self, view: &View, handing: &BTreeMap<Shard, Option<Arc<str>>>) {
        *self.internals.write().expect("internals lock") = view
            .members
            .iter()
            .filter_map(|m| Some((Arc::from(m.address.as_str()), Arc::from(m.internal.as_deref()?))))
            .collect();
        let addresses: BTreeMap<&str, &str> =
            view.members.iter().map(|m| (m.node.as_str(), m.address.as_str())).collect();
        let mut cache: BTreeMap<&str, Arc<str>> = BTreeMap::new();
        let mut owners = self.owners.write().expect("owners lock");
        for l in &view.leases {
            let owner = l.owner.as_deref().filter(|_| l.live).and_then(|o| {
                if o == &*self.me {
                    return Some(Arc::clone(&self.address));
                }
                let a = addresses.get(o)?;
                Some(Arc::clone(cache.entry(a).or_insert_with(|| Arc::from(*a))))
            });
            let owner = match handing.get(&l.shard) {
                Some(to) => to.clone(),
                None => owner,
            };
            if let Some(slot) = owners.get_mut(usize::from(l.shard)) {
                *slot = owner;
            }
        }
    }

    fn set_owner(&self, shard: Shard, address: Option<Arc<str>>) {
        if let Some(slot) = self.owners.write().expect("owners lock").get_mut(usize::from(shard)) {
            *slot = address;
        }
    }
}

/// Reads the release channel for [`Membership::run`]: applies the notices of shards coming
/// to node `me` at once and passes the rest to the loop over `tx` (setting `missed` when the
/// loop is behind); until the loop ends.
async fn listen(
    mut l: sqlx::postgres::PgListener,
    tx: tokio::sync::mpsc::Sender<String>,
    own: Arc<Ownership>,
    me: String,
    wait: Duration,
    missed: Arc<AtomicBool>,
) {
    loop {
        let n = tokio::select! {
            n = l.recv() => n,
            () = tx.closed() => return,
        };
        match n {
            Ok(n) => {
                if !expect_coming(&own, &me, wait, n.payload())
                    && let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = tx.try_send(n.payload().to_owned())
                {
                    missed.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                // The listener reconnects on its next `recv`; what was sent meanwhile is
                // lost, so the loop reads the table.
                warn!(node = %me, "release notifications interrupted ({e}): reading the lease table, then listening again");
                missed.store(true, Ordering::Release);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// When `payload` says shards are coming to node `me` (another node is about to hand them
/// over), marks them in `own` for `wait`; true when it was such a notice, for `me` or not.
fn expect_coming(own: &Ownership, me: &str, wait: Duration, payload: &str) -> bool {
    let Some(a) = Announcement::parse(payload).filter(|a| a.coming) else { return false };
    if let Some((to, leases)) = &a.handoff
        && to == me
        && a.from != me
        && !own.draining()
    {
        own.expect(leases, Instant::now() + wait);
    }
    true
}

/// How a node takes part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This node's id (unique in the cluster, stable across its restarts).
    pub node: String,
    /// Where clients are sent for its documents (its advertised URL), and where the other
    /// nodes reach it unless `internal` says otherwise.
    pub address: String,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How much earlier than the lease's expiry the node stops serving (clock-rate drift,
    /// the time a commit takes between its deadline check and its append).
    pub margin: Duration,
    /// How often the node renews, reads the table and rebalances.
    pub poll: Duration,
    /// How many shards a round may move.
    pub pace: Pace,
    /// Longest a hand-back waits for the cores to drop a shard's documents.
    pub sweep_limit: Duration,
    /// Longest this node holds the requests for a shard another node said it is handing
    /// over, waiting for the release (then they are sent to the owner in the table); see
    /// [`Settings::hold`].
    pub coming_wait: Duration,
    /// Where the other nodes reach this one (`http://host:port`), when not at `address`
    /// (which clients may reach through TLS in front of the node).
    pub internal: Option<String>,
}

impl Settings {
    /// Defaults for node `node` at `address`: 3 s leases renewed every 500 ms, served until
    /// 500 ms before they could expire.
    pub fn new(node: &str, address: &str) -> Self {
        Self {
            node: node.into(),
            address: address.into(),
            lease_ttl: Duration::from_secs(3),
            margin: Duration::from_millis(500),
            poll: Duration::from_millis(500),
            pace: Pace::default(),
            sweep_limit: Duration::from_secs(5),
            coming_wait: Duration::from_secs(1),
            internal: None,
        }
    }

    /// How long requests for a shard said to be coming are held: `coming_wait`, or a poll
    /// when longer (a release this node missed is taken at its next poll).
    pub fn hold(&self) -> Duration {
        self.coming_wait.max(self.poll)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.node.is_empty() || self.node.len() > 128 || self.node.chars().any(char::is_whitespace) {
            return Err("cluster.node: 1 to 128 characters, no spaces".into());
        }
        if self.margin.is_zero() || self.lease_ttl <= self.margin + self.poll {
            return Err(format!(
                "cluster.lease_ttl_ms ({} ms) must exceed margin_ms + poll_ms ({} + {} ms), and the margin must be positive",
                self.lease_ttl.as_millis(),
                self.margin.as_millis(),
                self.poll.as_millis()
            ));
        }
        Ok(())
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Shards held after it.
    pub held: usize,
    /// Shards taken.
    pub acquired: Vec<Shard>,
    /// Shards handed back.
    pub released: Vec<Shard>,
    /// Shards lost (not renewed: expired or taken).
    pub lost: Vec<Shard>,
}

/// The loop that keeps [`Ownership`] true. Runs on a Tokio runtime (in `tandem serve`, a
/// single-threaded one on a thread of its own, at normal priority).
pub struct Membership {
    store: LeaseStore,
    settings: Settings,
    own: Arc<Ownership>,
    /// Held shards and their epochs.
    held: BTreeMap<Shard, u64>,
    /// Shards being handed back.
    pending: Vec<HandBack>,
    /// The live nodes as last read.
    members: Vec<crate::plan::Member>,
}

/// Shards no longer served, released once the cores swept `generation`.
struct HandBack {
    generation: u64,
    /// When they stopped being served (given up on after `sweep_limit`).
    since: Instant,
    /// The shards and their epochs.
    leases: Vec<(Shard, u64)>,
    /// The node each goes to (the same order), if any, and where its clients are sent.
    to: Vec<Option<(String, Arc<str>)>>,
}

impl Membership {
    /// Joins: makes the tables if needed and says this node is alive (it holds nothing yet).
    pub async fn join(store: LeaseStore, settings: Settings, own: Arc<Ownership>) -> Result<Self, LeaseError> {
        settings.validate().map_err(LeaseError::Config)?;
        if store.shards() != own.shards() {
            return Err(LeaseError::Config("the store and the ownership disagree on the shard count".into()));
        }
        store.migrate().await?;
        store.heartbeat(&settings.node, &settings.address, settings.internal.as_deref(), false).await?;
        info!(node = %settings.node, address = %settings.address, shards = store.shards(), "joined the cluster");
        Ok(Self { store, settings, own, held: BTreeMap::new(), pending: Vec::new(), members: Vec::new() })
    }

    /// The ownership it keeps.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.own
    }

    /// Shards held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// One round: heartbeat, renew, read, hand back, take.
    pub async fn round(&mut self) -> Result<Round, LeaseError> {
        let s = &self.settings;
        let draining = self.own.draining();
        let mut out = Round::default();
        let sent = Instant::now();
        self.store.heartbeat(&s.node, &s.address, s.internal.as_deref(), draining).await?;
        let held: Vec<(Shard, u64)> = self.held.iter().map(|(&k, &v)| (k, v)).collect();
        let renewed = self.store.renew(&s.node, &held, s.lease_ttl).await?;
        let until = sent + s.lease_ttl - s.margin;
        for &shard in &renewed {
            self.own.grant(shard, until);
        }
        let renewed: std::collections::HashSet<Shard> = renewed.into_iter().collect();
        out.lost = held.iter().map(|&(k, _)| k).filter(|k| !renewed.contains(k)).collect();
        if !out.lost.is_empty() {
            warn!(node = %s.node, shards = ?out.lost, "leases lost (expired or taken): their documents are dropped");
            for k in &out.lost {
                self.held.remove(k);
            }
            self.own.revoke(&out.lost);
        }
        self.take(out).await
    }

    /// The second half of a round, alone when another node just handed shards back (the
    /// renewal is at most a poll old): read the table, hand back, take.
    pub async fn take(&mut self, mut out: Round) -> Result<Round, LeaseError> {
        let s = &self.settings;
        let draining = self.own.draining();
        let view = self.store.view(s.lease_ttl).await?;
        // The table still names this node for the shards it is handing back (until their
        // release): their clients go to the nodes taking them.
        let handing: BTreeMap<Shard, Option<Arc<str>>> = self
            .pending
            .iter()
            .flat_map(|h| h.leases.iter().zip(&h.to).map(|(&(k, _), to)| (k, to.as_ref().map(|(_, a)| Arc::clone(a)))))
            .collect();
        self.own.set_owners(&view, &handing);
        let steps = plan(&s.node, draining, &view, s.pace);
        let release: Vec<(Shard, u64)> = steps
            .iter()
            .filter_map(|st| match *st {
                Step::Release { shard, epoch } if self.held.get(&shard) == Some(&epoch) => Some((shard, epoch)),
                _ => None,
            })
            .collect();
        self.members = view.members.clone();
        if !release.is_empty() {
            out.released = self.hand_back(release).await;
        }
        let acquire: Vec<(Shard, u64)> = steps
            .iter()
            .filter_map(|st| match *st {
                Step::Acquire { shard, epoch } => Some((shard, epoch)),
                Step::Release { .. } => None,
            })
            .collect();
        if !acquire.is_empty() {
            out.acquired = self.acquire(&acquire).await?;
        }
        out.held = self.held.len();
        if !out.acquired.is_empty() || !out.released.is_empty() {
            info!(
                node = %self.settings.node,
                held = out.held,
                acquired = out.acquired.len(),
                released = out.released.len(),
                "shards moved"
            );
        }
        self.release_swept().await?;
        Ok(out)
    }

    /// Stops serving `release` (held shards and their epochs) and queues them to be handed
    /// back once the cores dropped their documents, each to the node that should take it
    /// (among the members last read). Returns the shards.
    async fn hand_back(&mut self, release: Vec<(Shard, u64)>) -> Vec<Shard> {
        let s = &self.settings;
        let shards: Vec<Shard> = release.iter().map(|&(k, _)| k).collect();
        for k in &shards {
            self.held.remove(k);
        }
        // Clients are sent on to the node each shard goes to (every node computes the same
        // preferred owner); the release names it, and it takes the shard as soon as it hears
        // of it.
        let mut to = Vec::with_capacity(shards.len());
        let mut coming: BTreeMap<String, Vec<(Shard, u64)>> = BTreeMap::new();
        for &(k, epoch) in &release {
            let successor = self
                .members
                .iter()
                .filter(|m| !m.draining && m.node != s.node)
                .max_by_key(|m| (affinity(&m.node, k), m.node.as_str()));
            let next = successor.map(|m| (m.node.clone(), Arc::<str>::from(m.address.as_str())));
            self.own.set_owner(k, next.as_ref().map(|(_, a)| Arc::clone(a)));
            to.push(next);
            if let Some(m) = successor {
                coming.entry(m.node.clone()).or_default().push((k, epoch));
            }
        }
        // The successors first hear the shards are coming, so that the clients sent to them
        // before the release wait there instead of being sent back here.
        let coming: Vec<(String, Vec<(Shard, u64)>)> = coming.into_iter().collect();
        if let Err(e) = self.store.announce_coming(&s.node, &coming, self.own.draining()).await {
            warn!(node = %s.node, "announcing a hand-over failed: {e} (its clients may be sent back and forth until the release)");
        }
        // Stop serving now; hand the leases back once the cores dropped the documents (their
        // last appends durable): [`Membership::release_swept`].
        let generation = self.own.revoke(&shards);
        self.pending.push(HandBack { generation, since: Instant::now(), leases: release, to });
        shards
    }

    /// Takes `wanted` (shards and the epochs they were seen at) and serves those it got
    /// until a lease less the margin from now.
    async fn acquire(&mut self, wanted: &[(Shard, u64)]) -> Result<Vec<Shard>, LeaseError> {
        let s = &self.settings;
        let sent = Instant::now();
        let got = self.store.acquire(&s.node, wanted, s.lease_ttl).await?;
        let until = sent + s.lease_ttl - s.margin;
        for &(shard, epoch) in &got {
            self.held.insert(shard, epoch);
            self.own.grant(shard, until);
            self.own.set_owner(shard, Some(Arc::clone(&self.own.address)));
        }
        if !got.is_empty() {
            self.own.changed();
        }
        Ok(got.into_iter().map(|(k, _)| k).collect())
    }

    /// What to do on another node's release: take at once the shards it handed to this node
    /// (one statement, without reading the table: the hand-over's pause is this), or, when
    /// it named none for this node, a take round. This node's own releases are not news.
    pub async fn on_release(&mut self, payload: &str) -> Result<Round, LeaseError> {
        let Some(a) = Announcement::parse(payload) else { return self.take(Round::default()).await };
        if a.from == self.settings.node {
            return Ok(Round { held: self.held.len(), ..Round::default() });
        }
        if a.coming {
            expect_coming(&self.own, &self.settings.node, self.settings.hold(), payload);
            return Ok(Round { held: self.held.len(), ..Round::default() });
        }
        match a.handoff {
            Some((to, leases)) if to == self.settings.node && !self.own.draining() => {
                let t = Instant::now();
                let acquired = self.acquire(&leases).await?;
                if !acquired.is_empty() {
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    info!(node = %self.settings.node, from = %a.from, held = self.held.len(), acquired = acquired.len(), ms, "shards handed over");
                }
                Ok(Round { held: self.held.len(), acquired, ..Round::default() })
            }
            // Handed to another node: it takes them; this one looks at the table at its
            // next poll.
            Some(_) => Ok(Round { held: self.held.len(), ..Round::default() }),
            None => self.take(Round::default()).await,
        }
    }

    /// Hands back the shards whose documents every core has dropped; gives up on those the
    /// cores did not drop within `sweep_limit` (their leases expire instead). Never waits.
    pub async fn release_swept(&mut self) -> Result<(), LeaseError> {
        let s = &self.settings;
        let mut ready = Vec::new();
        let mut handoffs: BTreeMap<String, Vec<(Shard, u64)>> = BTreeMap::new();
        // How long the longest-waiting of them was not served.
        let mut waited = Duration::ZERO;
        let mut i = 0;
        while i < self.pending.len() {
            let h = &self.pending[i];
            if self.own.is_swept(h.generation) {
                let h = self.pending.remove(i);
                waited = waited.max(h.since.elapsed());
                for (lease, to) in h.leases.iter().zip(h.to) {
                    if let Some((to, _)) = to {
                        handoffs.entry(to).or_default().push(*lease);
                    }
                }
                ready.extend(h.leases);
            } else if h.since.elapsed() > s.sweep_limit {
                let h = self.pending.remove(i);
                warn!(node = %s.node, shards = h.leases.len(), "the cores did not drop handed-back shards in time: letting the leases expire");
            } else {
                i += 1;
            }
        }
        if !ready.is_empty() {
            let handoffs: Vec<(String, Vec<(Shard, u64)>)> = handoffs.into_iter().collect();
            let t = Instant::now();
            self.store.release(&s.node, &ready, &handoffs).await?;
            let (swept_ms, release_ms) = (waited.as_secs_f64() * 1e3, t.elapsed().as_secs_f64() * 1e3);
            info!(node = %s.node, shards = ready.len(), swept_ms, release_ms, "shards handed back once the cores dropped their documents");
        }
        Ok(())
    }

    /// Runs rounds every `poll` (sooner when another node hands shards back) until `stop`
    /// turns true or its sender is dropped; then hands everything back and leaves.
    /// Hand-backs are released as soon as the cores have dropped their documents, without
    /// holding up renewals.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        // The release channel is read by a task of its own, which marks the shards another
        // node says are coming here at once (even while a round is waiting on the database:
        // the clients sent here arrive within milliseconds) and passes the rest on.
        let (tx, mut released) = tokio::sync::mpsc::channel::<String>(256);
        // Set when a notice could not be passed on (the loop is behind): the loop then reads
        // the table instead.
        let missed = Arc::new(AtomicBool::new(false));
        let listener = match self.store.listen().await {
            Ok(l) => Some(tokio::spawn(listen(
                l,
                tx,
                Arc::clone(&self.own),
                self.settings.node.clone(),
                self.settings.hold(),
                Arc::clone(&missed),
            ))),
            Err(e) => {
                warn!("no release notifications ({e}): taking shards at each poll only");
                None
            }
        };
        let mut next_round = Instant::now();
        loop {
            // Stopped, or the one who could stop it is gone (a process failing to start).
            if *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
            if Instant::now() >= next_round {
                next_round = Instant::now() + self.settings.poll;
                if let Err(e) = self.round().await {
                    warn!(node = %self.settings.node, "cluster round failed: {e} (leases not renewed stop being served at their deadline)");
                }
            } else if missed.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.take(Round::default()).await {
                    warn!(node = %self.settings.node, "cluster round failed: {e} (leases not renewed stop being served at their deadline)");
                }
            } else if let Err(e) = self.release_swept().await {
                warn!(node = %self.settings.node, "handing shards back failed: {e} (they expire instead)");
            }
            let mut wait = next_round.saturating_duration_since(Instant::now());
            if !self.pending.is_empty() {
                wait = wait.min(Duration::from_millis(2));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
                Some(payload) = released.recv() => {
                    if let Err(e) = self.on_release(&payload).await {
                        warn!(node = %self.settings.node, "taking handed-back shards failed: {e}");
                    }
                }
            }
        }
        if let Some(task) = listener {
            task.abort();
        }
        self.leave().await;
    }

    /// Hands every shard back (after the cores dropped their documents) and leaves. The
    /// shards stop being served at once, each named for the node that takes it among the
    /// members last read (at most a poll ago); a round then says the node is leaving.
    pub async fn leave(&mut self) {
        self.own.draining.store(true, Ordering::Release);
        let t = Instant::now();
        let held: Vec<(Shard, u64)> = self.held.iter().map(|(&k, &v)| (k, v)).collect();
        let shards = self.hand_back(held).await.len();
        info!(node = %self.settings.node, shards, ms = t.elapsed().as_secs_f64() * 1e3, "leaving: stopped serving every shard");
        if let Err(e) = self.round().await {
            warn!(node = %self.settings.node, "handing shards back failed: {e} (they expire instead)");
        }
        while !self.pending.is_empty() {
            if let Err(e) = self.release_swept().await {
                warn!(node = %self.settings.node, "handing shards back failed: {e} (they expire instead)");
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Err(e) = self.store.leave(&self.settings.node).await {
            warn!(node = %self.settings.node, "leaving the cluster table failed: {e}");
        }
        info!(node = %self.settings.node, "left the cluster");
    }

    /// Marks the node as leaving: the next round hands everything back.
    pub fn drain(&self) {
        self.own.draining.store(true, Ordering::Release);
    }
}
