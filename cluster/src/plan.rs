//! What a node should do about leases, decided from what it read (sans I/O).
//!
//! Every node runs the same rule over the same table, so they agree without talking: a
//! shard's preferred owner is the active node that wants it most ([`affinity`], rendezvous
//! hashing). A node takes a free (or expired) shard it is preferred for, or any free shard
//! while it holds less than its share; it hands a shard back when another active node is
//! preferred for it (a node joined), a few at a time; a draining node hands back everything.
//! Taking is a compare-and-set on the lease's epoch in the database, so two nodes that both
//! decide to take a shard cannot both get it.

use crate::shard::{Shard, affinity};

/// A lease row as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard: Shard,
    /// Who holds it, if anyone.
    pub owner: Option<String>,
    /// Raised by every taking.
    pub epoch: u64,
    /// Whether it is held and not expired, by the database's clock.
    pub live: bool,
}

/// A node the database heard from within the liveness window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub node: String,
    /// Where clients are sent for its documents (its advertised URL).
    pub address: String,
    /// Where the other nodes reach it (forwarded REST calls), when it is not `address`.
    pub internal: Option<String>,
    /// Leaving: takes nothing, hands everything back.
    pub draining: bool,
}

/// The table as one node read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Every shard's lease.
    pub leases: Vec<Lease>,
    /// The live nodes.
    pub members: Vec<Member>,
}

/// A change to ask of the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take the shard if its epoch is still this one and it is free or expired.
    Acquire {
        /// The shard.
        shard: Shard,
        /// Its epoch as read.
        epoch: u64,
    },
    /// Give the shard back (after the node stopped serving it).
    Release {
        /// The shard.
        shard: Shard,
        /// The epoch held.
        epoch: u64,
    },
}

/// Limits on one round's changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Most shards taken in one round.
    pub acquire: usize,
    /// Most shards handed back for balance in one round (draining hands back all at once).
    pub release: usize,
}

impl Default for Pace {
    fn default() -> Self {
        Self { acquire: 1024, release: 32 }
    }
}

/// The steps for node `me` (draining or not) given `view`.
pub fn plan(me: &str, draining: bool, view: &View, pace: Pace) -> Vec<Step> {
    let mine = |l: &&Lease| l.live && l.owner.as_deref() == Some(me);
    if draining {
        return view.leases.iter().filter(mine).map(|l| Step::Release { shard: l.shard, epoch: l.epoch }).collect();
    }
    let mut active: Vec<&str> = view.members.iter().filter(|m| !m.draining).map(|m| m.node.as_str()).collect();
    if !active.contains(&me) {
        active.push(me);
    }
    let preferred = |shard: Shard| active.iter().copied().max_by_key(|n| (affinity(n, shard), *n)).unwrap_or(me);
    let total = view.leases.len();
    let share_lo = total / active.len();
    let held = view.leases.iter().filter(mine).count();
    let mut steps = Vec::new();

    // Take free shards: those this node is preferred for, then any while under its share.
    let mut free: Vec<&Lease> = view.leases.iter().filter(|l| !l.live).collect();
    free.sort_by_key(|l| (preferred(l.shard) != me, std::cmp::Reverse(affinity(me, l.shard))));
    let mut count = held;
    for l in free {
        if steps.len() >= pace.acquire {
            break;
        }
        if preferred(l.shard) == me || count < share_lo {
            steps.push(Step::Acquire { shard: l.shard, epoch: l.epoch });
            count += 1;
        }
    }

    // Hand back shards another active node is preferred for, a few at a time.
    let mut released = 0;
    for l in view.leases.iter().filter(mine) {
        if released >= pace.release {
            break;
        }
        if preferred(l.shard) != me {
            steps.push(Step::Release { shard: l.shard, epoch: l.epoch });
            released += 1;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str) -> Member {
        Member { node: n.into(), address: format!("{n}:1"), internal: None, draining: false }
    }

    fn free(shards: u16) -> Vec<Lease> {
        (0..shards).map(|s| Lease { shard: s, owner: None, epoch: 0, live: false }).collect()
    }

    /// Applies a node's steps to the table as the database would (acquire: compare-and-set).
    fn apply(view: &mut View, me: &str, steps: &[Step]) {
        for s in steps {
            match *s {
                Step::Acquire { shard, epoch } => {
                    let l = &mut view.leases[usize::from(shard)];
                    if l.epoch == epoch && !l.live {
                        *l = Lease { shard, owner: Some(me.into()), epoch: epoch + 1, live: true };
                    }
                }
                Step::Release { shard, epoch } => {
                    let l = &mut view.leases[usize::from(shard)];
                    if l.epoch == epoch && l.owner.as_deref() == Some(me) {
                        l.owner = None;
                        l.live = false;
                    }
                }
            }
        }
    }

    fn counts(view: &View, nodes: &[&str]) -> Vec<usize> {
        nodes.iter().map(|n| view.leases.iter().filter(|l| l.live && l.owner.as_deref() == Some(*n)).count()).collect()
    }

    /// Rounds of every node planning on the current table until nothing changes.
    fn settle(view: &mut View, nodes: &[&str], draining: &[&str]) -> usize {
        for round in 1..100 {
            let before = view.clone();
            for n in nodes {
                let steps = plan(n, draining.contains(n), view, Pace::default());
                apply(view, n, &steps);
            }
            if *view == before {
                return round;
            }
        }
        panic!("never settled: {:?}", counts(view, nodes));
    }

    #[test]
    fn one_node_takes_everything_and_a_second_takes_its_share() {
        let mut view = View { leases: free(1024), members: vec![member("a")] };
        settle(&mut view, &["a"], &[]);
        assert_eq!(counts(&view, &["a"]), vec![1024]);
        view.members.push(member("b"));
        let rounds = settle(&mut view, &["a", "b"], &[]);
        let c = counts(&view, &["a", "b"]);
        assert_eq!(c[0] + c[1], 1024, "every shard owned: {c:?}");
        assert!(c.iter().all(|&n| (440..590).contains(&n)), "{c:?}");
        // Handed over 32 a round: about 512 / 32 rounds.
        assert!(rounds > 10, "{rounds} rounds: the hand-over was not paced");
    }

    #[test]
    fn a_dead_nodes_shards_go_to_the_survivors_and_come_back() {
        let nodes = ["a", "b", "c"];
        let mut view = View { leases: free(1024), members: nodes.iter().map(|n| member(n)).collect() };
        settle(&mut view, &nodes, &[]);
        let before = view.clone();
        assert!(counts(&view, &nodes).iter().all(|&n| (290..400).contains(&n)), "{:?}", counts(&view, &nodes));
        // c dies: its leases expire, it drops out of the members.
        for l in &mut view.leases {
            if l.owner.as_deref() == Some("c") {
                l.live = false;
            }
        }
        view.members.retain(|m| m.node != "c");
        settle(&mut view, &["a", "b"], &[]);
        let c = counts(&view, &["a", "b"]);
        assert_eq!(c[0] + c[1], 1024, "{c:?}");
        // Only c's shards moved: a and b kept theirs.
        for (l, b) in view.leases.iter().zip(&before.leases) {
            if b.owner.as_deref() != Some("c") {
                assert_eq!(l.owner, b.owner, "shard {} moved", l.shard);
            }
        }
        // c comes back and gets the same shards (rendezvous hashing).
        view.members.push(member("c"));
        settle(&mut view, &nodes, &[]);
        for (l, b) in view.leases.iter().zip(&before.leases) {
            assert_eq!(l.owner, b.owner, "shard {}", l.shard);
        }
    }

    #[test]
    fn a_draining_node_hands_back_everything_at_once() {
        let nodes = ["a", "b"];
        let mut view = View { leases: free(64), members: nodes.iter().map(|n| member(n)).collect() };
        settle(&mut view, &nodes, &[]);
        view.members[1].draining = true;
        let steps = plan("b", true, &view, Pace::default());
        assert!(steps.iter().all(|s| matches!(s, Step::Release { .. })));
        assert_eq!(steps.len(), counts(&view, &nodes)[1]);
        settle(&mut view, &nodes, &["b"]);
        assert_eq!(counts(&view, &nodes), vec![64, 0]);
    }

    #[test]
    fn racing_takers_share_free_shards() {
        // Two nodes start at once on an empty table: each takes what it is preferred for.
        let nodes = ["a", "b"];
        let view = View { leases: free(256), members: nodes.iter().map(|n| member(n)).collect() };
        let (sa, sb) = (plan("a", false, &view, Pace::default()), plan("b", false, &view, Pace::default()));
        let overlap = sa.iter().filter(|s| sb.contains(s)).count();
        assert!(overlap < 16, "{overlap} shards wanted by both");
    }
}
