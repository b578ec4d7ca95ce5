//! Membership on a real PostgreSQL (started from nothing by `tandem_testkit::Postgres`):
//! nodes share the shards, a silent node's shards move to the others only after it stopped
//! serving them, a leaving node hands its shards over at once (naming the next owner of each,
//! which takes them on the announcement alone), a node configured with another shard count
//! is refused, and the change feed's cursors are shared by the nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_cluster::{Announcement, LeaseStore, Membership, Ownership, Settings};
use tandem_testkit::Postgres;

const SHARDS: u16 = 256;

fn settings(node: &str) -> Settings {
    Settings {
        lease_ttl: Duration::from_millis(1500),
        margin: Duration::from_millis(300),
        poll: Duration::from_millis(200),
        ..Settings::new(node, &format!("ws://{node}.internal:8080"))
    }
}

async fn node(url: &str, name: &str) -> Membership {
    let store = LeaseStore::connect(url, SHARDS, Duration::from_secs(5)).await.unwrap();
    Membership::join(store, settings(name), Ownership::new(name, &format!("ws://{name}.internal:8080"), SHARDS, 0))
        .await
        .unwrap()
}

/// Fails if two nodes serve one shard at `now`.
fn one_server_per_shard(nodes: &[&Arc<Ownership>], now: Instant) -> Vec<usize> {
    let mut counts = vec![0; nodes.len()];
    for s in 0..SHARDS {
        let serving: Vec<&str> = nodes.iter().filter(|o| o.serves(s, now)).map(|o| o.me()).collect();
        assert!(serving.len() <= 1, "shard {s} served by {serving:?}");
        for (i, o) in nodes.iter().enumerate() {
            if o.serves(s, now) {
                counts[i] += 1;
            }
        }
    }
    counts
}

async fn rounds(nodes: &mut [&mut Membership], n: usize) {
    for _ in 0..n {
        for m in nodes.iter_mut() {
            m.round().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_shards_and_a_silent_nodes_move_only_after_it_stopped() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("leases");
    let (mut a, mut b, mut c) = (node(&url, "a").await, node(&url, "b").await, node(&url, "c").await);
    rounds(&mut [&mut a, &mut b, &mut c], 12).await;
    let (oa, ob, oc) = (Arc::clone(a.ownership()), Arc::clone(b.ownership()), Arc::clone(c.ownership()));
    let counts = one_server_per_shard(&[&oa, &ob, &oc], Instant::now());
    assert_eq!(counts.iter().sum::<usize>(), usize::from(SHARDS), "{counts:?}");
    assert!(counts.iter().all(|&n| (60..110).contains(&n)), "{counts:?}");
    // Everybody knows where every shard is.
    for s in 0..SHARDS {
        let owner = oa.owner(s).expect("an owner");
        assert_eq!(Some(&owner), ob.owner(s).as_ref());
    }

    // c goes silent (a kill -9, a pause): a and b keep going; at every instant no shard is
    // served twice; c's shards end up with a and b.
    let c_shards: Vec<u16> = (0..SHARDS).filter(|&s| oc.serves(s, Instant::now())).collect();
    let started = Instant::now();
    let mut taken_at = None;
    while started.elapsed() < Duration::from_secs(6) {
        rounds(&mut [&mut a, &mut b], 1).await;
        let counts = one_server_per_shard(&[&oa, &ob, &oc], Instant::now());
        if counts[0] + counts[1] == usize::from(SHARDS) && taken_at.is_none() {
            taken_at = Some(started.elapsed());
        }
    }
    let taken = taken_at.expect("a and b took c's shards");
    // Not before c's leases could expire (1.5 s after its last renewal), and soon after.
    assert!(taken >= Duration::from_millis(1000) && taken < Duration::from_secs(4), "{taken:?}");
    assert!(c_shards.iter().all(|&s| !oc.serves(s, Instant::now())));

    // c comes back: its next round finds its leases lost and takes back what it is preferred for.
    let r = c.round().await.unwrap();
    assert_eq!(r.lost.len(), c_shards.len(), "{r:?}");
    rounds(&mut [&mut a, &mut b, &mut c], 12).await;
    let counts = one_server_per_shard(&[&oa, &ob, &oc], Instant::now());
    assert_eq!(counts.iter().sum::<usize>(), usize::from(SHARDS));
    assert!(counts.iter().all(|&n| (60..110).contains(&n)), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_shards_over_at_once() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("leave");
    let (mut a, mut b) = (node(&url, "a").await, node(&url, "b").await);
    rounds(&mut [&mut a, &mut b], 10).await;
    let (oa, ob) = (Arc::clone(a.ownership()), Arc::clone(b.ownership()));
    let before = one_server_per_shard(&[&oa, &ob], Instant::now());
    assert!(before[1] > 0);
    // b leaves: it stops serving, hands back, and a takes everything in its next round
    // (with no wait for expiry).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let a_loop = tokio::spawn(a.run(stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    b.leave().await;
    assert_eq!(ob.served(Instant::now()), 0);
    while oa.served(Instant::now()) < usize::from(SHARDS) {
        assert!(t.elapsed() < Duration::from_secs(1), "a took only {} shards", oa.served(Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Woken by the release's notification, not by its 200 ms poll (the leave round itself
    // is a few statements).
    assert!(t.elapsed() < Duration::from_millis(400), "handover took {:?}", t.elapsed());
    // Its stop dropped (a process failing after it joined) stops the loop as `true` does.
    drop(stop_tx);
    tokio::time::timeout(Duration::from_secs(10), a_loop).await.expect("the loop stopped").unwrap();
    assert_eq!(oa.served(Instant::now()), 0, "a handed everything back when stopped");
}

/// Before it stops serving, a leaving node says which shards are coming to which node (so
/// that their clients, sent ahead, wait there); then the release names the node each shard
/// goes to: that node takes them on the announcement alone (one statement), a third node
/// leaves them to it, and the leaver ignores its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_names_the_next_owner_which_takes_its_shards_on_the_announcement() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("handoff");
    let (mut a, mut b, mut c) = (node(&url, "a").await, node(&url, "b").await, node(&url, "c").await);
    rounds(&mut [&mut a, &mut b, &mut c], 10).await;
    let (oa, ob, oc) = (Arc::clone(a.ownership()), Arc::clone(b.ownership()), Arc::clone(c.ownership()));
    let before = one_server_per_shard(&[&oa, &ob, &oc], Instant::now());
    let b_shards: Vec<u16> = (0..SHARDS).filter(|&s| ob.serves(s, Instant::now())).collect();
    let listen = LeaseStore::connect(&url, SHARDS, Duration::from_secs(5)).await.unwrap();
    let mut listener = listen.listen().await.unwrap();
    b.leave().await;
    assert_eq!(ob.served(Instant::now()), 0);
    // b's shards go to a and c by affinity: one notice that they are coming and one
    // announcement of the release each (under 250 shards), the notices first.
    let (mut handed, mut noticed) = (0, 0);
    while handed < b_shards.len() {
        let payload = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        let payload = payload.payload().to_owned();
        let ann = Announcement::parse(&payload).unwrap();
        assert_eq!(ann.from, "b");
        let (to, leases) = ann.handoff.clone().unwrap();
        let (taker, other, o_taker, o_other) =
            if to == "a" { (&mut a, &mut c, &oa, &oc) } else { (&mut c, &mut a, &oc, &oa) };
        // The other survivor and the leaver leave them alone.
        assert!(other.on_release(&payload).await.unwrap().acquired.is_empty());
        assert!(b.on_release(&payload).await.unwrap().acquired.is_empty());
        let got = taker.on_release(&payload).await.unwrap();
        let now = Instant::now();
        if ann.coming {
            assert_eq!(handed, 0, "every notice comes before the releases");
            assert!(got.acquired.is_empty(), "a notice takes nothing");
            for &(k, _) in &leases {
                assert!(o_taker.coming(k, now) && !o_taker.serves(k, now), "shard {k} on its way to {to}");
                assert!(!o_other.coming(k, now) && !ob.coming(k, now));
            }
            noticed += leases.len();
        } else {
            assert_eq!(got.acquired.len(), leases.len(), "{to} took what b handed it");
            assert!(leases.iter().all(|&(k, _)| o_taker.serves(k, now) && !o_taker.coming(k, now)));
            handed += leases.len();
        }
    }
    assert_eq!((noticed, handed), (before[1], before[1]));
    let after = one_server_per_shard(&[&oa, &ob, &oc], Instant::now());
    assert_eq!(after.iter().sum::<usize>(), usize::from(SHARDS), "{after:?}");
    assert_eq!(after[1], 0);
}

/// Shards a node hands back stay pointed at the node taking them until the release, whatever
/// the table says meanwhile (it still names this node), so that their clients go there and
/// not back here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_their_way_point_to_the_next_owner() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("onthewayout");
    let store = LeaseStore::connect(&url, SHARDS, Duration::from_secs(5)).await.unwrap();
    // One core, which sweeps only when the test says so.
    let oa = Ownership::new("a", "ws://a.internal:8080", SHARDS, 1);
    let mut a = Membership::join(store, settings("a"), Arc::clone(&oa)).await.unwrap();
    rounds(&mut [&mut a], 2).await;
    assert_eq!(oa.served(Instant::now()), usize::from(SHARDS));
    let mut b = node(&url, "b").await;
    rounds(&mut [&mut b], 1).await;
    // a hands b the shards b is preferred for, a round's worth at a time.
    let r = a.round().await.unwrap();
    assert!(!r.released.is_empty(), "{r:?}");
    let next = Some(Arc::<str>::from("ws://b.internal:8080"));
    for _ in 0..2 {
        let now = Instant::now();
        for &k in &r.released {
            assert!(!oa.serves(k, now));
            assert_eq!(oa.owner(k), next, "shard {k}");
        }
        // A round reads the table, which names a until the release.
        a.round().await.unwrap();
    }
    // The core drops their documents: they are released, and b takes them.
    oa.swept(0, oa.generation());
    a.release_swept().await.unwrap();
    rounds(&mut [&mut b], 1).await;
    let now = Instant::now();
    assert!(r.released.iter().all(|&k| b.ownership().serves(k, now) && oa.owner(k) == next));

    // A leaving node's notice also marks it as leaving, in the same statement: the nodes
    // taking its shards never balance towards it.
    let store = LeaseStore::connect(&url, SHARDS, Duration::from_secs(5)).await.unwrap();
    let draining = |v: &tandem_cluster::View, n: &str| v.members.iter().any(|m| m.node == n && m.draining);
    assert!(!draining(&store.view(Duration::from_secs(5)).await.unwrap(), "b"));
    store.announce_coming("b", &[], true).await.unwrap();
    assert!(draining(&store.view(Duration::from_secs(5)).await.unwrap(), "b"));
}

/// A node behind TLS advertises a `wss://` URL to clients and an internal one to the other
/// nodes: they learn it from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_learn_each_others_internal_urls() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("internal");
    let store = LeaseStore::connect(&url, SHARDS, Duration::from_secs(5)).await.unwrap();
    let settings = Settings {
        internal: Some("http://10.0.0.7:8080".into()),
        ..Settings { address: "wss://a.example.com/ws".into(), ..settings("a") }
    };
    let own = Ownership::new("a", "wss://a.example.com/ws", SHARDS, 0);
    let mut a = Membership::join(store, settings, own).await.unwrap();
    let mut b = node(&url, "b").await;
    rounds(&mut [&mut a, &mut b], 3).await;
    let ob = b.ownership();
    assert_eq!(&*ob.internal("wss://a.example.com/ws"), "http://10.0.0.7:8080");
    // b announced none: it is reached where it is advertised.
    assert_eq!(&*a.ownership().internal("ws://b.internal:8080"), "ws://b.internal:8080");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_shard_count_is_refused() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("count");
    node(&url, "a").await;
    let store = LeaseStore::connect(&url, 512, Duration::from_secs(5)).await.unwrap();
    let e = Membership::join(store, settings("b"), Ownership::new("b", "x", 512, 0)).await.err().unwrap();
    assert!(e.to_string().contains("made with 256 shards"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feeds_cursors_are_shared_and_only_go_up() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("cursors");
    // Joining migrates: the table is there.
    node(&url, "a").await;
    let a = LeaseStore::feed_cursors(&url, Duration::from_secs(5)).await.unwrap();
    let b = LeaseStore::feed_cursors(&url, Duration::from_secs(5)).await.unwrap();
    a.save(&[("d1".into(), 5), ("d2".into(), 1), ("d1".into(), 7)]).await.unwrap();
    b.save(&[("d1".into(), 3), ("d2".into(), 9)]).await.unwrap();
    a.save(&[]).await.unwrap();
    let mut got = b.get(&["d1".into(), "d2".into(), "never".into()]).await.unwrap();
    got.sort();
    assert_eq!(got, vec![("d1".into(), 7), ("d2".into(), 9)], "the highest saved by either node");
    assert!(a.get(&[]).await.unwrap().is_empty());
}
