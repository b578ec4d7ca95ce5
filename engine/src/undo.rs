//! Per-user undo and redo, computed by the server (sans I/O).
//!
//! Each user's changes to a document are kept as *steps*: the inverse of the change, as of the
//! revision the change made. Undo takes the user's most recent step, transforms its inverse
//! through every op committed since, by anyone, and applies the result as a new op by that
//! user: the change taken back as of now, so other people's later work stays. Redo does the
//! same with the inverse of the undo. Keystrokes group into one step while they follow each
//! other, as in editors: within [`GROUP_MS`] of the last, each starting where the last one
//! ended (typing forward, or deleting backward).
//!
//! The stacks live with the document ([`crate::DocState`]), keyed by user, so a page reload
//! or a reconnect (a new session, even a new client id) finds them. They are bounded: at most
//! [`MAX_STEPS`] steps and [`MAX_CHAIN_BYTES`] per stack (the newest step is always kept,
//! so deleting a whole document can be undone), [`MAX_USERS`] users per document, steps at
//! most [`MAX_AGE_MS`] old, and never older than the document's history window.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::delta::Delta;
use crate::op::Op;

/// Keystrokes this close together (ms) group into one undo step.
pub const GROUP_MS: u64 = 1000;
/// Most steps per user and stack (undo, redo).
pub const MAX_STEPS: usize = 100;
/// Most users with stacks per document; the least recently active is forgotten first.
pub const MAX_USERS: usize = 1024;
/// Steps older than this (ms since they were made) are forgotten.
pub const MAX_AGE_MS: u64 = 3_600_000;
/// Most bytes of inverses (deleted text, mostly) one stack keeps; beyond it the oldest steps
/// go, but never the newest.
pub const MAX_CHAIN_BYTES: usize = 4 << 20;

/// Most transform steps (ops of the commit times steps) spent bringing one stack up to date;
/// beyond it the oldest steps are dropped first.
pub const MAX_CHAIN_WORK: usize = 1_000_000;

/// One undoable (or redoable) change.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    /// What takes the change back (see [`Chain`] for the document it applies to).
    pub(crate) inverse: Delta,
    /// When the step was made or last grown, ms.
    pub(crate) time_ms: u64,
    /// Where the grouped keystrokes end (top step only); `None`: nothing may join it.
    pub(crate) caret: Option<usize>,
    /// The inverse's size as last counted in the chain's `bytes`.
    pub(crate) bytes: usize,
}

impl Step {
    pub(crate) fn new(inverse: Delta, time_ms: u64, caret: Option<usize>) -> Self {
        Self { inverse, time_ms, caret, bytes: 0 }
    }
}

/// A stack of steps as a chain, the way Quill's history keeps one: the top step applies to
/// the document at `rev`, and each step below applies to the document after the steps above
/// it are undone. Undoing a user's steps one after another is then exact (no transform
/// through a change and its own undo, which loses what the change deleted); other people's
/// ops are transformed down the chain when the stack is next used.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chain {
    pub(crate) rev: u64,
    pub(crate) steps: VecDeque<Step>,
    /// The steps' `bytes`, summed.
    bytes: usize,
}

impl Chain {
    /// Transforms the chain through `commits` (the ops after `self.rev`, by others), ending
    /// at `to`. Steps nothing is left of are dropped; so are the oldest ones when the work
    /// would pass [`MAX_CHAIN_WORK`]. Returns the transform steps spent.
    pub(crate) fn bring_up<'a>(&mut self, commits: impl ExactSizeIterator<Item = &'a Delta>, to: u64) -> usize {
        let n = commits.len();
        self.rev = to;
        if self.steps.is_empty() || n == 0 {
            return 0;
        }
        let per_step = self.steps.iter().map(|s| s.inverse.ops().len() + 1).max().unwrap_or(1);
        let keep = (MAX_CHAIN_WORK / (n * per_step)).max(1);
        while self.steps.len() > keep {
            self.steps.pop_front();
        }
        let mut work = 0;
        for commit in commits {
            let mut remote = commit.clone();
            let top = self.steps.len() - 1;
            for (i, step) in self.steps.iter_mut().enumerate().rev() {
                if i == top {
                    step.caret = step.caret.map(|c| remote.transform_position(c, true));
                }
                work += remote.ops().len() + step.inverse.ops().len();
                let moved = remote.transform(&step.inverse, true);
                remote = step.inverse.transform(&remote, false);
                step.inverse = moved;
            }
        }
        self.steps.retain(|s| !s.inverse.is_empty());
        self.recount();
        work
    }

    /// Takes the top step off.
    pub(crate) fn pop(&mut self) -> Option<Step> {
        let step = self.steps.pop_back()?;
        self.bytes = self.bytes.saturating_sub(step.bytes);
        Some(step)
    }

    /// Empties the chain.
    pub(crate) fn clear(&mut self) {
        self.steps.clear();
        self.bytes = 0;
    }

    /// Counts the top step again after it grew (grouped keystrokes), and drops the oldest
    /// steps past the bounds.
    pub(crate) fn top_changed(&mut self) {
        if let Some(top) = self.steps.back_mut() {
            let now = top.inverse.approx_bytes();
            self.bytes = self.bytes.saturating_sub(top.bytes) + now;
            top.bytes = now;
        }
        while self.steps.len() > 1 && (self.steps.len() > MAX_STEPS || self.bytes > MAX_CHAIN_BYTES) {
            let old = self.steps.pop_front().expect("more than one");
            self.bytes = self.bytes.saturating_sub(old.bytes);
        }
    }

    /// Counts every step again (after they were transformed).
    fn recount(&mut self) {
        self.bytes = 0;
        for s in &mut self.steps {
            s.bytes = s.inverse.approx_bytes();
            self.bytes += s.bytes;
        }
    }
}

/// One user's stacks on one document.
#[derive(Clone, Debug, Default)]
pub(crate) struct UserSteps {
    pub(crate) undo: Chain,
    pub(crate) redo: Chain,
    pub(crate) touched_ms: u64,
}

/// Every user's stacks on one document.
#[derive(Clone, Debug, Default)]
pub struct UndoStacks {
    pub(crate) users: HashMap<Arc<str>, UserSteps>,
}

impl UndoStacks {
    /// How many steps `user` may undo and redo now.
    pub fn depth(&self, user: &str) -> (usize, usize) {
        self.users.get(user).map_or((0, 0), |u| (u.undo.steps.len(), u.redo.steps.len()))
    }

    /// The user's stacks, made if new (forgetting the least recently active user beyond
    /// [`MAX_USERS`]).
    pub(crate) fn user(&mut self, user: &str, now_ms: u64) -> &mut UserSteps {
        // (No `entry`: it would allocate the key on every call, and this runs for every op.)
        if !self.users.contains_key(user) {
            if self.users.len() >= MAX_USERS {
                let oldest = self.users.iter().min_by_key(|(_, u)| u.touched_ms).map(|(k, _)| Arc::clone(k));
                if let Some(k) = oldest {
                    self.users.remove(&k);
                }
            }
            self.users.insert(Arc::from(user), UserSteps::default());
        }
        let steps = self.users.get_mut(user).expect("inserted above");
        steps.touched_ms = now_ms;
        steps
    }
}

/// Pushes a step on top, keeping at most [`MAX_STEPS`] and [`MAX_CHAIN_BYTES`] (the top
/// always).
pub(crate) fn push(chain: &mut Chain, step: Step) {
    // The step below was counted when it was pushed; it may have grown since.
    chain.top_changed();
    chain.steps.push_back(step);
    chain.top_changed();
}

/// A keystroke-like edit: a plain retain to `start`, then one insert or one delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Keystroke {
    /// Where it starts.
    pub(crate) start: usize,
    /// Chars deleted (0 for an insert).
    pub(crate) deleted: usize,
    /// Chars inserted (0 for a delete).
    pub(crate) inserted: usize,
}

impl Keystroke {
    /// The edit as a keystroke, if it is one.
    pub(crate) fn of(delta: &Delta) -> Option<Self> {
        let mut ops = delta.ops().iter();
        let mut start = 0;
        let mut op = ops.next()?;
        if let Op::Retain { retain, attributes } = op {
            if !attributes.is_empty() {
                return None;
            }
            start = *retain;
            op = ops.next()?;
        }
        if ops.next().is_some() {
            return None;
        }
        match op {
            Op::Insert { insert, .. } => Some(Self { start, deleted: 0, inserted: insert.len() }),
            Op::Delete { delete } => Some(Self { start, deleted: *delete, inserted: 0 }),
            Op::Retain { .. } => None,
        }
    }

    /// Whether it continues typing or deleting at `caret`.
    pub(crate) fn continues(self, caret: usize) -> bool {
        self.start == caret || (self.inserted == 0 && self.start + self.deleted == caret)
    }

    /// Where the caret is after it.
    pub(crate) fn caret_after(self) -> usize {
        self.start + self.inserted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;

    #[test]
    fn keystrokes_are_single_inserts_and_deletes() {
        let typed = Delta::new().retain(3, Attributes::NONE).insert("a", Attributes::NONE);
        assert_eq!(Keystroke::of(&typed), Some(Keystroke { start: 3, deleted: 0, inserted: 1 }));
        let back = Delta::new().retain(3, Attributes::NONE).delete(1);
        let k = Keystroke::of(&back).unwrap();
        assert!(k.continues(4) && k.continues(3) && !k.continues(5));
        assert_eq!(Keystroke::of(&Delta::new().insert("x", Attributes::NONE)).unwrap().start, 0);
        let bold: Attributes = [("bold", true)].into_iter().collect();
        assert_eq!(Keystroke::of(&Delta::new().retain(3, bold)), None);
        let two = Delta::new().insert("a", Attributes::NONE).retain(2, Attributes::NONE).delete(1);
        assert_eq!(Keystroke::of(&two), None);
    }
}
