//! Formatting runs: which attributes (and which embed) each char of a document has.
//!
//! A counted B+tree of [`Run`]s: leaves hold runs, inner nodes hold each child's length in
//! chars, so finding, inserting, deleting or reformatting at any position costs
//! O(log n + runs touched). Adjacent text runs with equal attributes merge, so a plain
//! document is one run however long it is. The text itself lives in the document's rope;
//! the two always have the same length. Inner nodes also count each child's formatting bytes
//! (attributes and embeds, per run), so a document knows what its formatting costs in O(1).

use crate::attributes::Attributes;
use crate::op::Embed;

/// Most runs in a leaf, and most children of an inner node.
const MAX: usize = 32;
/// A node with fewer items than this merges with a sibling when they fit together.
const MIN: usize = MAX / 4;

/// A stretch of chars with the same attributes, or one embed.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) len: usize,
    pub(crate) attrs: Attributes,
    /// An embed run always has length 1 and never merges.
    pub(crate) embed: Option<Embed>,
}

impl Run {
    pub(crate) fn text(len: usize, attrs: Attributes) -> Self {
        Self { len, attrs, embed: None }
    }

    pub(crate) fn embed(embed: Embed, attrs: Attributes) -> Self {
        Self { len: 1, attrs, embed: Some(embed) }
    }

    /// Bytes of attributes and embed this run carries.
    pub(crate) fn bytes(&self) -> usize {
        self.attrs.bytes() + self.embed.as_ref().map_or(0, Embed::bytes)
    }

    fn can_merge(&self, other: &Self) -> bool {
        self.embed.is_none() && other.embed.is_none() && self.attrs == other.attrs
    }
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Vec<Run>),
    Inner(Vec<Child>),
}

#[derive(Clone, Debug)]
struct Child {
    len: usize,
    /// Formatting bytes of the runs below.
    bytes: usize,
    node: Node,
}

impl Child {
    fn of(node: Node) -> Self {
        Self { len: node.total(), bytes: node.bytes(), node }
    }

    /// Recounts the formatting bytes after the node below changed.
    fn recount(&mut self) {
        self.bytes = self.node.bytes();
    }
}

impl Node {
    fn items(&self) -> usize {
        match self {
            Self::Leaf(runs) => runs.len(),
            Self::Inner(children) => children.len(),
        }
    }

    fn total(&self) -> usize {
        match self {
            Self::Leaf(runs) => runs.iter().map(|r| r.len).sum(),
            Self::Inner(children) => children.iter().map(|c| c.len).sum(),
        }
    }

    /// Formatting bytes of the runs below (one level: children keep their own counts).
    fn bytes(&self) -> usize {
        match self {
            Self::Leaf(runs) => runs.iter().map(Run::bytes).sum(),
            Self::Inner(children) => children.iter().map(|c| c.bytes).sum(),
        }
    }

    /// Splits off the upper half when over capacity.
    fn split_if_full(&mut self) -> Option<Self> {
        match self {
            Self::Leaf(runs) if runs.len() > MAX => Some(Self::Leaf(runs.split_off(runs.len() / 2))),
            Self::Inner(children) if children.len() > MAX => Some(Self::Inner(children.split_off(children.len() / 2))),
            _ => None,
        }
    }
}

/// The run tree.
#[derive(Clone, Debug)]
pub(crate) struct Runs {
    root: Node,
    len: usize,
}

impl Default for Runs {
    fn default() -> Self {
        Self { root: Node::Leaf(Vec::new()), len: 0 }
    }
}

impl Runs {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Formatting bytes of every run: each run's attributes and embed ([`Run::bytes`]).
    pub(crate) fn bytes(&self) -> usize {
        self.root.bytes()
    }

    /// Inserts `run` so that it starts at `pos`.
    pub(crate) fn insert(&mut self, pos: usize, run: Run) {
        assert!(pos <= self.len, "run insert at {pos} past the end {}", self.len);
        debug_assert!(run.len > 0);
        self.len += run.len;
        if let Some(right) = insert(&mut self.root, pos, run) {
            self.grow(right);
        }
    }

    /// Removes the chars in `start..end`.
    pub(crate) fn remove(&mut self, start: usize, end: usize) {
        assert!(start <= end && end <= self.len, "run remove {start}..{end} past the end {}", self.len);
        if start == end {
            return;
        }
        remove(&mut self.root, start, end);
        self.len -= end - start;
        self.shrink();
    }

    /// Replaces an inner root with one child by that child, as often as it applies.
    fn shrink(&mut self) {
        loop {
            match &mut self.root {
                Node::Inner(children) if children.len() == 1 => {
                    let only = children.pop().expect("one child").node;
                    self.root = only;
                }
                Node::Inner(children) if children.is_empty() => self.root = Node::Leaf(Vec::new()),
                _ => break,
            }
        }
    }

    /// Replaces the attributes of the chars in `start..end` with `f(old)`.
    pub(crate) fn format(&mut self, start: usize, end: usize, f: &mut dyn FnMut(&Attributes) -> Attributes) {
        assert!(start <= end && end <= self.len, "run format {start}..{end} past the end {}", self.len);
        if start == end {
            return;
        }
        if let Some(right) = format(&mut self.root, start, end, f) {
            self.grow(right);
        }
        self.shrink();
    }

    /// Calls `f(run_start, run)` for every run overlapping `start..end`, in order.
    pub(crate) fn for_each(&self, start: usize, end: usize, f: &mut dyn FnMut(usize, &Run)) {
        if start < end {
            for_each(&self.root, 0, start, end, f);
        }
    }

    fn grow(&mut self, right: Node) {
        let left = std::mem::replace(&mut self.root, Node::Leaf(Vec::new()));
        self.root = Node::Inner(vec![Child::of(left), Child::of(right)]);
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        fn depth(node: &Node, is_root: bool) -> (usize, usize) {
            match node {
                Node::Leaf(runs) => {
                    assert!(runs.len() <= MAX);
                    assert!(is_root || !runs.is_empty(), "empty non-root leaf");
                    for r in runs {
                        assert!(r.len > 0, "zero-length run");
                        assert!(r.embed.is_none() || r.len == 1, "embed run longer than 1");
                    }
                    for w in runs.windows(2) {
                        assert!(!w[0].can_merge(&w[1]), "mergeable neighbours inside a leaf: {w:?}");
                    }
                    (0, runs.iter().map(|r| r.len).sum())
                }
                Node::Inner(children) if children.iter().any(|c| c.bytes != c.node.bytes()) => {
                    panic!("stale child byte count")
                }
                Node::Inner(children) => {
                    assert!(!children.is_empty() && children.len() <= MAX);
                    let mut d = None;
                    let mut total = 0;
                    for c in children {
                        let (cd, clen) = depth(&c.node, false);
                        assert_eq!(c.len, clen, "stale child length");
                        assert!(d.is_none() || d == Some(cd), "leaves at different depths");
                        d = Some(cd);
                        total += clen;
                    }
                    (d.unwrap_or(0) + 1, total)
                }
            }
        }
        let (_, total) = depth(&self.root, true);
        assert_eq!(total, self.len);
    }
}

/// The child holding `pos` and its start; a position on a boundary goes to the left child.
fn locate(children: &[Child], pos: usize) -> (usize, usize) {
    let mut off = 0;
    for (i, c) in children.iter().enumerate() {
        if pos <= off + c.len {
            return (i, off);
        }
        off += c.len;
    }
    unreachable!("position {pos} past the end of a node of length {off}")
}

fn insert(node: &mut Node, pos: usize, run: Run) -> Option<Node> {
    match node {
        Node::Leaf(runs) => leaf_insert(runs, pos, run),
        Node::Inner(children) => {
            let (i, off) = locate(children, pos);
            let added = run.len;
            children[i].len += added;
            if let Some(right) = insert(&mut children[i].node, pos - off, run) {
                let right = Child::of(right);
                children[i].len -= right.len;
                children.insert(i + 1, right);
            }
            children[i].recount();
        }
    }
    node.split_if_full()
}

fn leaf_insert(runs: &mut Vec<Run>, pos: usize, run: Run) {
    let mut acc = 0;
    let mut i = 0;
    while i < runs.len() && acc + runs[i].len < pos {
        acc += runs[i].len;
        i += 1;
    }
    if i == runs.len() {
        match runs.last_mut() {
            Some(last) if last.can_merge(&run) => last.len += run.len,
            _ => runs.push(run),
        }
        return;
    }
    let end = acc + runs[i].len;
    if runs[i].can_merge(&run) {
        runs[i].len += run.len;
    } else if pos == end {
        match runs.get_mut(i + 1) {
            Some(next) if next.can_merge(&run) => next.len += run.len,
            _ => runs.insert(i + 1, run),
        }
    } else if pos == acc {
        runs.insert(i, run);
    } else {
        // Strictly inside a text run: split it around the new run.
        let right = Run::text(end - pos, runs[i].attrs.clone());
        runs[i].len = pos - acc;
        runs.splice(i + 1..i + 1, [run, right]);
    }
}

fn remove(node: &mut Node, start: usize, end: usize) {
    match node {
        Node::Leaf(runs) => leaf_remove(runs, start, end),
        Node::Inner(children) => {
            let mut off = 0;
            let mut i = 0;
            while i < children.len() && off < end {
                let len = children[i].len;
                let (s, e) = (start.max(off), end.min(off + len));
                if s < e {
                    if s == off && e == off + len {
                        children.remove(i);
                        off += len;
                        continue;
                    }
                    remove(&mut children[i].node, s - off, e - off);
                    children[i].len -= e - s;
                    children[i].recount();
                }
                off += len;
                i += 1;
            }
            rebalance(children);
        }
    }
}

/// Merges underfull children into a neighbour where the two fit in one node.
fn rebalance(children: &mut Vec<Child>) {
    let mut i = 0;
    while i < children.len() {
        if children[i].node.items() < MIN && children.len() > 1 {
            let j = if i + 1 < children.len() { i + 1 } else { i - 1 };
            let (a, b) = (i.min(j), i.max(j));
            if children[a].node.items() + children[b].node.items() <= MAX {
                let right = children.remove(b);
                let left = &mut children[a];
                left.len += right.len;
                match (&mut left.node, right.node) {
                    (Node::Leaf(l), Node::Leaf(r)) => {
                        l.extend(r);
                        coalesce(l);
                    }
                    (Node::Inner(l), Node::Inner(r)) => {
                        // The children that meet at the seam may be underfull too.
                        l.extend(r);
                        rebalance(l);
                    }
                    _ => unreachable!("siblings at different depths"),
                }
                left.recount();
                i = a;
                continue;
            }
        }
        i += 1;
    }
}

/// Merges every pair of adjacent mergeable runs in a leaf.
fn coalesce(runs: &mut Vec<Run>) {
    runs.dedup_by(|cur, prev| {
        if prev.can_merge(cur) {
            prev.len += cur.len;
            true
        } else {
            false
        }
    });
}

fn leaf_remove(runs: &mut Vec<Run>, start: usize, end: usize) {
    let mut acc = 0;
    let mut i = 0;
    while i < runs.len() && acc < end {
        let len = runs[i].len;
        let (s, e) = (start.max(acc), end.min(acc + len));
        acc += len;
        if s < e {
            if e - s == len {
                runs.remove(i);
                continue;
            }
            runs[i].len -= e - s;
        }
        i += 1;
    }
    coalesce(runs);
}

fn format(node: &mut Node, start: usize, end: usize, f: &mut dyn FnMut(&Attributes) -> Attributes) -> Option<Node> {
    match node {
        Node::Leaf(runs) => leaf_format(runs, start, end, f),
        Node::Inner(children) => {
            let mut off = 0;
            let mut i = 0;
            while i < children.len() && off < end {
                let len = children[i].len;
                let (s, e) = (start.max(off), end.min(off + len));
                if s < e {
                    let split = format(&mut children[i].node, s - off, e - off, f);
                    children[i].recount();
                    if let Some(right) = split {
                        let right = Child::of(right);
                        children[i].len -= right.len;
                        children.insert(i + 1, right);
                        i += 1;
                    }
                }
                off += len;
                i += 1;
            }
            // Formatting merges runs; leaves it emptied out merge with their neighbours.
            rebalance(children);
        }
    }
    node.split_if_full()
}

/// Splits the run containing `pos` so that a run boundary falls on `pos`.
fn split_at(runs: &mut Vec<Run>, pos: usize) {
    let mut acc = 0;
    for i in 0..runs.len() {
        let len = runs[i].len;
        if pos > acc && pos < acc + len {
            let right = Run::text(acc + len - pos, runs[i].attrs.clone());
            runs[i].len = pos - acc;
            runs.insert(i + 1, right);
            return;
        }
        acc += len;
        if acc >= pos {
            return;
        }
    }
}

fn leaf_format(runs: &mut Vec<Run>, start: usize, end: usize, f: &mut dyn FnMut(&Attributes) -> Attributes) {
    split_at(runs, start);
    split_at(runs, end);
    let mut acc = 0;
    for run in runs.iter_mut() {
        if acc >= end {
            break;
        }
        if acc >= start {
            run.attrs = f(&run.attrs);
        }
        acc += run.len;
    }
    coalesce(runs);
}

fn for_each(node: &Node, base: usize, start: usize, end: usize, f: &mut dyn FnMut(usize, &Run)) {
    match node {
        Node::Leaf(runs) => {
            let mut acc = base;
            for run in runs {
                if acc >= end {
                    break;
                }
                if acc + run.len > start {
                    f(acc, run);
                }
                acc += run.len;
            }
        }
        Node::Inner(children) => {
            let mut off = base;
            for c in children {
                if off >= end {
                    break;
                }
                if off + c.len > start {
                    for_each(&c.node, off, start, end, f);
                }
                off += c.len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::value::Value;

    /// The naive model: one attribute id per char (`None` for embeds, tracked apart).
    fn model_of(runs: &Runs) -> Vec<(Attributes, bool)> {
        let mut out = Vec::new();
        runs.for_each(0, runs.len(), &mut |_, r| {
            for _ in 0..r.len {
                out.push((r.attrs.clone(), r.embed.is_some()));
            }
        });
        out
    }

    fn attrs(n: u32) -> Attributes {
        if n == 0 { Attributes::NONE } else { [("k", Value::from(f64::from(n)))].into_iter().collect() }
    }

    #[test]
    fn random_edits_match_a_naive_model() {
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut runs = Runs::default();
            let mut model: Vec<(Attributes, bool)> = Vec::new();
            for step in 0..400 {
                let len = model.len();
                match rng.random_range(0..10) {
                    0..=4 => {
                        let pos = rng.random_range(0..=len);
                        if rng.random_bool(0.1) {
                            let e = crate::op::Embed::new(Default::default());
                            let a = attrs(rng.random_range(0..3));
                            runs.insert(pos, Run::embed(e, a.clone()));
                            model.insert(pos, (a, true));
                        } else {
                            let n = rng.random_range(1..20);
                            let a = attrs(rng.random_range(0..3));
                            runs.insert(pos, Run::text(n, a.clone()));
                            model.splice(pos..pos, std::iter::repeat_n((a, false), n));
                        }
                    }
                    5..=7 if len > 0 => {
                        let s = rng.random_range(0..len);
                        let e = rng.random_range(s..=len.min(s + 60));
                        runs.remove(s, e);
                        model.drain(s..e);
                    }
                    8..=9 if len > 0 => {
                        let s = rng.random_range(0..len);
                        let e = rng.random_range(s..=len.min(s + 60));
                        let a = attrs(rng.random_range(0..3));
                        runs.format(s, e, &mut |_| a.clone());
                        for m in &mut model[s..e] {
                            m.0 = a.clone();
                        }
                    }
                    _ => {}
                }
                runs.check();
                assert_eq!(model_of(&runs), model, "seed {seed} step {step}");
            }
        }
    }

    #[test]
    fn plain_text_stays_one_run() {
        let mut runs = Runs::default();
        for i in 0..10_000 {
            runs.insert(i / 2, Run::text(1, Attributes::NONE));
        }
        runs.remove(10, 5000);
        let mut count = 0;
        runs.for_each(0, runs.len(), &mut |_, _| count += 1);
        assert_eq!((count, runs.len()), (1, 5010));
    }

    #[test]
    fn many_runs_grow_a_deep_tree_and_shrink_back() {
        let mut runs = Runs::default();
        for i in 0..50_000u32 {
            let pos = runs.len();
            runs.insert(pos, Run::text(2, attrs(i % 2 + 1)));
        }
        runs.check();
        runs.format(1, 99_999, &mut |_| Attributes::NONE);
        runs.check();
        let mut count = 0;
        runs.for_each(0, runs.len(), &mut |_, _| count += 1);
        assert_eq!(count, 3);
        runs.remove(0, runs.len());
        runs.check();
        assert_eq!(runs.len(), 0);
    }
}
