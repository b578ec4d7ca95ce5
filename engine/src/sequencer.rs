//! The per-document sequencer: the server's single source of truth for one document.
//!
//! [`DocState::submit`] orders every op: it transforms a client's delta against every op
//! committed since the client's base revision, applies it, and returns the new revision with
//! the transformed delta to broadcast. A resubmission of the same `(client, client_seq)`
//! (after a lost ack) returns the original revision and changes nothing; a *different* op
//! under a `client_seq` already applied (two sessions sharing a client id) is refused, never
//! acknowledged without being applied. What one submission may cost is bounded: its size,
//! its formatting, and the transform work to bring it up to date.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::ClientId;
use crate::delta::Delta;
use crate::document::Document;
use crate::error::Error;
use crate::limits::Limits;
use crate::notes::{Note, NoteChange, NoteError, Notes, transform_anchor};
use crate::op::Op;
use crate::presence::{Presence, SelectionRange, check_ranges};
use crate::undo::{self, Keystroke, Step, UndoStacks};

/// One committed op.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// The revision this op produced (the first op makes revision 1).
    pub rev: u64,
    /// Who submitted it.
    pub author: ClientId,
    /// The author's sequence number for it.
    pub client_seq: u64,
    /// The op as applied (transformed to the revision before `rev`); empty for a note.
    pub delta: Delta,
    /// A change to the document's notes (comments, named versions), sequenced like an op:
    /// the delta is then empty.
    pub note: Option<Arc<Note>>,
}

impl Commit {
    /// A commit of an op.
    pub fn op(rev: u64, author: ClientId, client_seq: u64, delta: Delta) -> Self {
        Self { rev, author, client_seq, delta, note: None }
    }
}

/// What [`DocState::submit`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Submitted {
    /// The op was applied as `commit`: ack the author, broadcast to everyone else.
    Applied(Arc<Commit>),
    /// The op had been applied before, at `rev`: ack again, broadcast nothing.
    Duplicate {
        /// The revision the op produced the first time.
        rev: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct ClientRecord {
    seq: u64,
    rev: u64,
    /// [`submission_fingerprint`] of the op as submitted (its base revision and delta, before
    /// transforming); unknown for records restored from storage.
    fingerprint: Option<u64>,
}

/// What identifies a submission as sent: its base revision and its delta.
fn submission_fingerprint(base_rev: u64, delta: &Delta) -> u64 {
    delta.fingerprint() ^ base_rev.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A submission's transform work, counted as it goes: each step over a commit costs the ops
/// of both deltas.
struct Steps {
    used: u64,
    max: u64,
}

impl Steps {
    fn charge(&mut self, n: usize) -> Result<(), Error> {
        self.used = self.used.saturating_add(n as u64);
        if self.used > self.max { Err(Error::TransformTooCostly { steps: self.used, max: self.max }) } else { Ok(()) }
    }
}

/// One document's authoritative state: content, revision, recent history, exactly-once
/// records and presence.
#[derive(Clone, Debug)]
pub struct DocState {
    doc: Document,
    rev: u64,
    history: VecDeque<Arc<Commit>>,
    history_bytes: usize,
    clients: HashMap<ClientId, ClientRecord>,
    /// Clients in order of last activity (with stale entries; see `remember`).
    client_order: VecDeque<(ClientId, u64)>,
    presence: Presence,
    undo: UndoStacks,
    notes: Notes,
    limits: Limits,
}

/// What an undo or a redo is remembered by, for exactly-once: a resubmission with the same
/// `client_seq` is the same request.
fn undo_fingerprint(redo: bool) -> u64 {
    if redo { 0x7265_646f_7265_646f } else { 0x756e_646f_756e_646f }
}

/// What a commit in the history window counts against [`Limits::history_bytes`].
fn commit_bytes(c: &Commit) -> usize {
    c.delta.approx_bytes() + c.note.as_ref().map_or(0, |n| n.bytes())
}

impl DocState {
    /// An empty document at revision 0.
    pub fn new(limits: Limits) -> Self {
        Self::restore(0, Document::new(), limits)
    }

    /// A document restored at `rev` (from a snapshot), with no history in memory.
    pub fn restore(rev: u64, doc: Document, limits: Limits) -> Self {
        Self {
            doc,
            rev,
            history: VecDeque::new(),
            history_bytes: 0,
            clients: HashMap::new(),
            client_order: VecDeque::new(),
            presence: Presence::default(),
            undo: UndoStacks::default(),
            notes: Notes::new(),
            limits,
        }
    }

    /// A document restored at `rev` from a snapshot that also kept its clients' exactly-once
    /// records (`(client, last client_seq, its revision)`), so a resubmission made before the
    /// snapshot is still recognized after a restart.
    pub fn restore_with_clients(
        rev: u64,
        doc: Document,
        clients: impl IntoIterator<Item = (ClientId, u64, u64)>,
        limits: Limits,
    ) -> Self {
        let mut state = Self::restore(rev, doc, limits);
        let mut records: Vec<(ClientId, u64, u64)> = clients.into_iter().filter(|r| r.2 <= rev).collect();
        records.sort_by_key(|r| r.2);
        for (client, seq, rev) in records {
            state.remember(client, seq, rev, None);
        }
        state
    }

    /// The exactly-once records, `(client, last client_seq, its revision)`, oldest activity
    /// first: what a snapshot keeps.
    pub fn client_records(&self) -> impl Iterator<Item = (ClientId, u64, u64)> + '_ {
        let mut records: Vec<(ClientId, u64, u64)> = self.clients.iter().map(|(c, r)| (*c, r.seq, r.rev)).collect();
        records.sort_by_key(|r| (r.2, r.0));
        records.into_iter()
    }

    /// The current revision.
    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// The current content.
    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The oldest base revision a submission may have.
    pub fn oldest_base(&self) -> u64 {
        self.rev - self.history.len() as u64
    }

    /// The last `client_seq` applied for `client`, if remembered.
    pub fn last_client_seq(&self, client: ClientId) -> Option<u64> {
        self.clients.get(&client).map(|r| r.seq)
    }

    /// The last `client_seq` applied for `client` and the revision it made, if remembered.
    pub fn last_applied(&self, client: ClientId) -> Option<(u64, u64)> {
        self.clients.get(&client).map(|r| (r.seq, r.rev))
    }

    /// Submits `delta`, made by `client` against revision `base_rev`, with the transform
    /// work bounded by [`Limits::max_transform_steps`].
    pub fn submit(
        &mut self,
        client: ClientId,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
    ) -> Result<Submitted, Error> {
        let max = self.limits.max_transform_steps;
        self.submit_within(client, base_rev, client_seq, delta, max).map(|(s, _)| s)
    }

    /// [`DocState::submit`] with at most `max_steps` of transform work (the server passes
    /// what the submitting connection has left of its share); also returns the steps used.
    ///
    /// A `client_seq` equal to the client's last applied one is a resubmission only if it is
    /// the same op: the same base revision and delta as first submitted, or (a client that
    /// rebased its op in flight over ops it saw since) a delta that transforms to the op as
    /// applied. Anything else is refused with [`Error::SeqConflict`].
    pub fn submit_within(
        &mut self,
        client: ClientId,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
        max_steps: u64,
    ) -> Result<(Submitted, u64), Error> {
        self.submit_inner(client, None, base_rev, client_seq, delta, max_steps)
    }

    /// [`DocState::submit_within`] for a signed-in `user` (or any key naming who undoes):
    /// the change also goes on the user's undo stack (grouped with the keystrokes before it
    /// when it continues them within [`undo::GROUP_MS`] of `now_ms`), and their redo stack
    /// is cleared.
    #[allow(clippy::too_many_arguments)] // the submission, who made it, and when
    pub fn submit_by(
        &mut self,
        client: ClientId,
        user: &str,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
        max_steps: u64,
        now_ms: u64,
    ) -> Result<(Submitted, u64), Error> {
        self.submit_inner(client, Some((user, now_ms)), base_rev, client_seq, delta, max_steps)
    }

    fn submit_inner(
        &mut self,
        client: ClientId,
        by: Option<(&str, u64)>,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
        max_steps: u64,
    ) -> Result<(Submitted, u64), Error> {
        let mut steps = Steps { used: 0, max: max_steps.min(self.limits.max_transform_steps) };
        let fingerprint = submission_fingerprint(base_rev, &delta);
        if let Some(&rec) = self.clients.get(&client) {
            if client_seq == rec.seq {
                self.check_resubmission(rec, base_rev, client_seq, delta, fingerprint, &mut steps)?;
                return Ok((Submitted::Duplicate { rev: rec.rev }, steps.used));
            }
            if client_seq < rec.seq {
                return Err(Error::ClientSeqReused { client_seq, last: rec.seq });
            }
        }
        let oldest = self.check_base(base_rev)?;
        self.check_op(&delta)?;
        let delta = self.transform_since(base_rev - oldest, self.rev, delta, &mut steps)?;
        self.check_applies(&delta)?;
        let key = by.and_then(|_| Keystroke::of(&delta));
        let inverse = match (by, key) {
            // Typing (most ops): deleting what it inserts takes it back, without reading the
            // document.
            (Some(_), Some(k)) if k.deleted == 0 => {
                Some(Delta::new().retain(k.start, crate::Attributes::NONE).delete(k.inserted))
            }
            (Some(_), _) => Some(delta.invert(&self.doc)?),
            (None, _) => None,
        };
        let commit = self.commit(client, client_seq, delta, fingerprint)?;
        if let (Some((user, now_ms)), Some(inverse)) = (by, inverse) {
            self.record_step(user, &commit, key, inverse, now_ms);
        }
        Ok((Submitted::Applied(commit), steps.used))
    }

    /// Checks that an op (already transformed to the current revision) applies within the
    /// document's limits.
    fn check_applies(&self, delta: &Delta) -> Result<(), Error> {
        let (base_len, len) = (delta.base_len(), self.doc.len());
        if base_len > len {
            return Err(Error::DeltaTooLong { base_len, doc_len: len });
        }
        let new_len = len + delta.insert_len() - delta.delete_len();
        if new_len > self.limits.max_document_chars {
            return Err(Error::DocumentTooLarge { len: new_len, max: self.limits.max_document_chars });
        }
        let max_format = self.limits.max_document_format_bytes;
        let bytes = self.doc.format_bytes_after(delta);
        if bytes > max_format {
            return Err(Error::DocumentFormatTooLarge { bytes, max: max_format });
        }
        Ok(())
    }

    /// Applies a checked op as the next revision.
    fn commit(
        &mut self,
        client: ClientId,
        client_seq: u64,
        delta: Delta,
        fingerprint: u64,
    ) -> Result<Arc<Commit>, Error> {
        self.doc.apply(&delta)?;
        self.rev += 1;
        self.presence.transform(&delta, client);
        self.notes.transform(&delta);
        let commit = Arc::new(Commit::op(self.rev, client, client_seq, delta));
        self.push_history(Arc::clone(&commit));
        self.remember(client, client_seq, self.rev, Some(fingerprint));
        Ok(commit)
    }

    /// Brings a user's undo (or redo) chain up to revision `to` (see [`bring_up_chain`]).
    fn bring_up(&mut self, user: &str, redo: bool, to: u64, now_ms: u64) -> usize {
        if !self.undo.users.contains_key(user) {
            return 0;
        }
        let oldest = self.oldest_base();
        let steps = self.undo.user(user, now_ms);
        bring_up_chain(&self.history, oldest, if redo { &mut steps.redo } else { &mut steps.undo }, to)
    }

    /// Puts a user's change on their undo stack: it grows the step on top when it continues
    /// its keystrokes in time, or starts a new one. The redo stack is cleared.
    /// `key` is the change as a keystroke, if it is one.
    fn record_step(&mut self, user: &str, commit: &Commit, key: Option<Keystroke>, inverse: Delta, now_ms: u64) {
        let oldest = self.oldest_base();
        // One lookup of the user: this runs for every op applied.
        let steps = self.undo.user(user, now_ms);
        bring_up_chain(&self.history, oldest, &mut steps.undo, commit.rev - 1);
        steps.redo.clear();
        steps.redo.rev = commit.rev;
        let chain = &mut steps.undo;
        chain.rev = commit.rev;
        if let (Some(key), Some(top)) = (key, chain.steps.back_mut())
            && let Some(caret) = top.caret
            && now_ms.saturating_sub(top.time_ms) <= undo::GROUP_MS
            && key.continues(caret)
        {
            top.inverse = match (Keystroke::of(&inverse), Keystroke::of(&top.inverse)) {
                // Typing on: the step takes back one more run of chars (most grouped ops; no
                // general compose on the hot path).
                (Some(new), Some(old))
                    if new.inserted == 0 && old.inserted == 0 && new.start == old.start + old.deleted =>
                {
                    Delta::new().retain(old.start, crate::Attributes::NONE).delete(old.deleted + new.deleted)
                }
                _ => inverse.compose(&top.inverse),
            };
            top.time_ms = now_ms;
            top.caret = Some(key.caret_after());
            chain.top_changed();
            return;
        }
        if let Some(top) = chain.steps.back_mut() {
            top.caret = None;
        }
        undo::push(chain, Step::new(inverse, now_ms, key.map(Keystroke::caret_after)));
    }

    /// Undoes `user`'s most recent change not undone yet, as of now: its inverse transformed
    /// through every op since, applied as a new op by `client` with `client_seq` (exactly
    /// once, like a submission). Steps that nothing is left of (others deleted what they
    /// changed) are skipped; none left is [`Error::NothingToUndo`].
    pub fn undo(
        &mut self,
        client: ClientId,
        user: &str,
        client_seq: u64,
        max_steps: u64,
        now_ms: u64,
    ) -> Result<(Submitted, u64), Error> {
        self.undo_or_redo(client, user, client_seq, max_steps, now_ms, false)
    }

    /// Re-applies `user`'s most recently undone change the same way ([`DocState::undo`]).
    pub fn redo(
        &mut self,
        client: ClientId,
        user: &str,
        client_seq: u64,
        max_steps: u64,
        now_ms: u64,
    ) -> Result<(Submitted, u64), Error> {
        self.undo_or_redo(client, user, client_seq, max_steps, now_ms, true)
    }

    /// Submits a change to the document's notes (a comment, a reply, a version named, ...)
    /// by `client`, signed in as `user` (shown as `name`), made against revision `base_rev`:
    /// it is committed as the next revision with an empty delta, exactly once per
    /// `client_seq` like an op. A comment's range moves through the ops since `base_rev`;
    /// `moderator` (the document's owner) may delete anyone's message.
    #[allow(clippy::too_many_arguments)] // the change, who made it, as of when, and when
    pub fn submit_note(
        &mut self,
        client: ClientId,
        user: &str,
        name: &str,
        base_rev: u64,
        client_seq: u64,
        change: NoteChange,
        moderator: bool,
        max_steps: u64,
        now_ms: u64,
    ) -> Result<(Submitted, u64), Error> {
        let mut steps = Steps { used: 0, max: max_steps.min(self.limits.max_transform_steps) };
        // Not the base revision, nor a comment's range: a request sent again after a
        // reconnect is rebased, and is still the same request.
        let fingerprint = change.fingerprint();
        if let Some(rev) = self.check_request_seq(client, client_seq, fingerprint)? {
            return Ok((Submitted::Duplicate { rev }, 0));
        }
        let oldest = self.check_base(base_rev)?;
        let change = match change {
            NoteChange::Comment { start, end, text, mentions } => {
                let from = usize::try_from(base_rev - oldest).expect("history window fits in memory");
                let (mut start, mut end) = (start, end);
                for c in self.history.range(from..) {
                    steps.charge(c.delta.ops().len() + 1)?;
                    (start, end) = transform_anchor(start, end, false, &c.delta);
                }
                if start == end && base_rev < self.rev {
                    return Err(NoteError::NotFound("the text to comment on was deleted meanwhile".into()).into());
                }
                NoteChange::Comment { start, end, text, mentions }
            }
            other => other,
        };
        self.notes.check(&change, user, self.doc.len(), self.rev, moderator)?;
        let note = Note { user: user.to_owned(), name: name.to_owned(), time_ms: now_ms, change };
        self.rev += 1;
        self.notes.apply(&note, self.rev);
        let commit = Arc::new(Commit {
            rev: self.rev,
            author: client,
            client_seq,
            delta: Delta::new(),
            note: Some(Arc::new(note)),
        });
        self.push_history(Arc::clone(&commit));
        self.remember(client, client_seq, self.rev, Some(fingerprint));
        Ok((Submitted::Applied(commit), steps.used))
    }

    /// The document's comment threads and named versions, as of now.
    pub fn notes(&self) -> &Notes {
        &self.notes
    }

    /// The state with `notes` (restored from a snapshot taken at this revision).
    #[must_use]
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = notes;
        self
    }

    /// How many steps `user` may undo and redo now.
    pub fn undo_depth(&self, user: &str) -> (usize, usize) {
        self.undo.depth(user)
    }

    fn undo_or_redo(
        &mut self,
        client: ClientId,
        user: &str,
        client_seq: u64,
        max_steps: u64,
        now_ms: u64,
        redo: bool,
    ) -> Result<(Submitted, u64), Error> {
        let mut steps = Steps { used: 0, max: max_steps.min(self.limits.max_transform_steps) };
        let fingerprint = undo_fingerprint(redo);
        if let Some(rev) = self.check_request_seq(client, client_seq, fingerprint)? {
            return Ok((Submitted::Duplicate { rev }, 0));
        }
        let rev = self.rev;
        // Bringing the stack up is bounded by `undo::MAX_CHAIN_WORK` and already done (a
        // retry would not repeat it): counted against the budget, never refused.
        let work = self.bring_up(user, redo, rev, now_ms);
        steps.used = steps.used.saturating_add(work as u64);
        let Some(stacks) = self.undo.users.get_mut(user) else { return Err(Error::NothingToUndo { redo }) };
        let chain = if redo { &mut stacks.redo } else { &mut stacks.undo };
        let Some(step) = chain.pop() else { return Err(Error::NothingToUndo { redo }) };
        if now_ms.saturating_sub(step.time_ms) > undo::MAX_AGE_MS {
            // Too old to remember: so is the rest below it.
            chain.clear();
            return Err(Error::NothingToUndo { redo });
        }
        if let Some(top) = chain.steps.back_mut() {
            top.caret = None;
        }
        let delta = step.inverse;
        // A step that would break the document's limits now is dropped (it cannot apply).
        self.check_applies(&delta)?;
        let inverse = delta.invert(&self.doc)?;
        let commit = self.commit(client, client_seq, delta, fingerprint)?;
        // The rest of this chain applies to the document as it is now (the top step is
        // undone); the other chain catches up to the revision before this op, then takes the
        // op's inverse on top.
        self.bring_up(user, !redo, rev, now_ms);
        let stacks = self.undo.user(user, now_ms);
        let (this, other) =
            if redo { (&mut stacks.redo, &mut stacks.undo) } else { (&mut stacks.undo, &mut stacks.redo) };
        this.rev = commit.rev;
        other.rev = commit.rev;
        if let Some(top) = other.steps.back_mut() {
            top.caret = None;
        }
        undo::push(other, Step::new(inverse, now_ms, None));
        Ok((Submitted::Applied(commit), steps.used))
    }

    /// Transforms `delta`, made at history index `from` (revision `oldest_base + from`),
    /// over the commits up to revision `to`, charging the work to `steps`. The whole cost is
    /// estimated first (it is at least every commit's ops plus the delta's, per commit), so
    /// a submission far over the bound is refused before any work.
    fn transform_since(&self, from: u64, to: u64, delta: Delta, steps: &mut Steps) -> Result<Delta, Error> {
        let from = usize::try_from(from).expect("history window fits in memory");
        let end = usize::try_from(to - self.oldest_base()).expect("history window fits in memory");
        if from == end {
            return Ok(delta);
        }
        let commits = || self.history.range(from..end);
        let estimate: usize = commits().map(|c| c.delta.ops().len() + delta.ops().len()).sum();
        if estimate as u64 > steps.max.saturating_sub(steps.used) {
            return Err(Error::TransformTooCostly { steps: steps.used + estimate as u64, max: steps.max });
        }
        let mut delta = delta;
        for commit in commits() {
            steps.charge(commit.delta.ops().len() + delta.ops().len())?;
            delta = commit.delta.transform(&delta, true);
        }
        Ok(delta)
    }

    /// Exactly-once for a request the document computes (an undo, a note): the revision it
    /// made when `client_seq` is the client's last applied request with this `fingerprint`
    /// (sent again), nothing when it is new, an error when the number is taken or old.
    fn check_request_seq(&self, client: ClientId, client_seq: u64, fingerprint: u64) -> Result<Option<u64>, Error> {
        let Some(&rec) = self.clients.get(&client) else { return Ok(None) };
        if client_seq == rec.seq {
            if rec.fingerprint == Some(fingerprint) {
                return Ok(Some(rec.rev));
            }
            return Err(Error::SeqConflict { client_seq, rev: rec.rev });
        }
        if client_seq < rec.seq {
            return Err(Error::ClientSeqReused { client_seq, last: rec.seq });
        }
        Ok(None)
    }

    /// Accepts a resubmission of the client's last applied op, or refuses a different op
    /// under its sequence number.
    fn check_resubmission(
        &self,
        rec: ClientRecord,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
        fingerprint: u64,
        steps: &mut Steps,
    ) -> Result<(), Error> {
        if rec.fingerprint == Some(fingerprint) {
            return Ok(());
        }
        // Rebased since (or restored from storage, without a fingerprint): it is the same op
        // if it transforms to the op as applied, over the commits before it.
        let conflict = Error::SeqConflict { client_seq, rev: rec.rev };
        let oldest = self.oldest_base();
        if base_rev >= rec.rev || base_rev < oldest || rec.rev <= oldest {
            return Err(conflict);
        }
        let applied = &self.history[usize::try_from(rec.rev - 1 - oldest).expect("in the window")];
        let moved = self.transform_since(base_rev - oldest, rec.rev - 1, delta, steps)?;
        if moved == applied.delta { Ok(()) } else { Err(conflict) }
    }

    /// Appends an already-ordered commit (recovery from the op log), checking it continues
    /// the revision sequence.
    pub fn replay(&mut self, commit: Commit) -> Result<(), Error> {
        if commit.rev != self.rev + 1 {
            return Err(Error::RevisionGap { expected: self.rev + 1, got: commit.rev });
        }
        self.doc.apply(&commit.delta)?;
        // A note was checked when it was committed (and the limits may have changed since).
        self.notes.follow(&commit);
        self.rev = commit.rev;
        self.remember(commit.author, commit.client_seq, commit.rev, None);
        self.push_history(Arc::new(commit));
        Ok(())
    }

    /// The commits after `rev`, for a client catching up; refused when `rev` is in the
    /// future or older than the retained window.
    pub fn ops_since(&self, rev: u64) -> Result<impl ExactSizeIterator<Item = &Arc<Commit>>, Error> {
        let oldest = self.check_base(rev)?;
        let skip = usize::try_from(rev - oldest).expect("history window fits in memory");
        Ok(self.history.iter().skip(skip))
    }

    /// Sets `client`'s selection, given at revision `rev`, moving it through the ops since.
    pub fn set_selection(
        &mut self,
        client: ClientId,
        rev: u64,
        ranges: Vec<SelectionRange>,
    ) -> Result<&[SelectionRange], Error> {
        let oldest = self.check_base(rev)?;
        let skip = usize::try_from(rev - oldest).expect("history window fits in memory");
        let since: Vec<&Arc<Commit>> = self.history.iter().skip(skip).collect();
        let len_at_rev = since
            .iter()
            .fold(self.doc.len() as i64, |len, c| len - c.delta.insert_len() as i64 + c.delta.delete_len() as i64);
        check_ranges(&ranges, usize::try_from(len_at_rev).unwrap_or(0), self.limits.max_selection_ranges)?;
        let mut ranges = ranges;
        for c in since {
            for r in &mut ranges {
                *r = r.transform(&c.delta, c.author != client);
            }
        }
        self.presence.set(client, ranges, self.doc.len(), self.limits.max_selection_ranges)?;
        Ok(self.presence.get(client).unwrap_or_default())
    }

    /// Every client's selection at the current revision.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Forgets a client's selection (it closed the document).
    pub fn remove_selection(&mut self, client: ClientId) -> bool {
        self.presence.remove(client)
    }

    fn check_base(&self, base: u64) -> Result<u64, Error> {
        if base > self.rev {
            return Err(Error::BaseRevisionInFuture { base, current: self.rev });
        }
        let oldest = self.oldest_base();
        if base < oldest {
            return Err(Error::BaseRevisionTooOld { base, oldest });
        }
        Ok(oldest)
    }

    fn check_op(&self, delta: &Delta) -> Result<(), Error> {
        let ops = delta.ops().len();
        if ops > self.limits.max_delta_ops {
            return Err(Error::OpTooLarge { what: "ops", len: ops, max: self.limits.max_delta_ops });
        }
        let inserted: usize =
            delta.ops().iter().map(|op| if let Op::Insert { insert, .. } = op { insert.len() } else { 0 }).sum();
        if inserted > self.limits.max_insert_chars {
            return Err(Error::OpTooLarge { what: "inserted chars", len: inserted, max: self.limits.max_insert_chars });
        }
        let format = delta.format_bytes();
        if format > self.limits.max_op_format_bytes {
            let max = self.limits.max_op_format_bytes;
            return Err(Error::OpTooLarge { what: "bytes of attributes and embeds", len: format, max });
        }
        Ok(())
    }

    fn push_history(&mut self, commit: Arc<Commit>) {
        self.history_bytes += commit_bytes(&commit);
        self.history.push_back(commit);
        while self.history.len() > self.limits.history_ops
            || (self.history_bytes > self.limits.history_bytes && self.history.len() > 1)
        {
            let old = self.history.pop_front().expect("non-empty history");
            self.history_bytes -= commit_bytes(&old);
        }
    }

    /// Records `client`'s latest applied op, forgetting the least recently active clients
    /// beyond the limit.
    fn remember(&mut self, client: ClientId, seq: u64, rev: u64, fingerprint: Option<u64>) {
        self.clients.insert(client, ClientRecord { seq, rev, fingerprint });
        self.client_order.push_back((client, rev));
        while self.clients.len() > self.limits.max_tracked_clients {
            let (c, r) = self.client_order.pop_front().expect("order covers every client");
            if self.clients.get(&c).is_some_and(|rec| rec.rev == r) {
                self.clients.remove(&c);
            }
        }
        // Drop stale order entries so the queue stays proportional to the clients tracked.
        if self.client_order.len() > 2 * self.clients.len() + 64 {
            let clients = &self.clients;
            self.client_order.retain(|(c, r)| clients.get(c).is_some_and(|rec| rec.rev == *r));
        }
    }
}

/// Brings an undo (or redo) chain up to revision `to` through the ops since it was last used,
/// read in place from the history window (whose first op made revision `oldest + 1`); a
/// chain whose history is gone is emptied. Returns the transform work spent.
fn bring_up_chain(history: &VecDeque<Arc<Commit>>, oldest: u64, chain: &mut undo::Chain, to: u64) -> usize {
    if chain.rev < oldest || to < chain.rev {
        chain.clear();
        chain.rev = to;
        return 0;
    }
    let index = |rev: u64| usize::try_from(rev - oldest).expect("history window fits in memory");
    let commits = history.range(index(chain.rev)..index(to)).map(|c| &c.delta);
    chain.bring_up(commits, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;

    fn ins(pos: usize, s: &str) -> Delta {
        Delta::new().retain(pos, Attributes::NONE).insert(s, Attributes::NONE)
    }

    fn applied(s: Result<Submitted, Error>) -> Arc<Commit> {
        match s.unwrap() {
            Submitted::Applied(c) => c,
            other => panic!("expected Applied, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_submits_are_transformed() {
        let mut doc = DocState::new(Limits::default());
        let (a, b) = (ClientId(1), ClientId(2));
        applied(doc.submit(a, 0, 1, ins(0, "hello")));
        // Both edit revision 1 concurrently.
        let c1 = applied(doc.submit(a, 1, 2, ins(5, " world")));
        let c2 = applied(doc.submit(b, 1, 1, ins(0, ">> ")));
        assert_eq!((c1.rev, c2.rev), (2, 3));
        assert_eq!(doc.document().text(), ">> hello world");
        // Same position: the op committed first goes first.
        applied(doc.submit(a, 3, 3, ins(3, "A")));
        let c = applied(doc.submit(b, 3, 2, ins(3, "B")));
        assert_eq!(c.delta, ins(4, "B"));
        assert_eq!(doc.document().text(), ">> ABhello world");
    }

    #[test]
    fn resubmission_is_exactly_once() {
        let mut doc = DocState::new(Limits::default());
        let a = ClientId(7);
        let c = applied(doc.submit(a, 0, 1, ins(0, "x")));
        assert_eq!(doc.submit(a, 0, 1, ins(0, "x")), Ok(Submitted::Duplicate { rev: c.rev }));
        assert_eq!(doc.document().text(), "x");
        applied(doc.submit(a, 1, 2, ins(0, "y")));
        assert_eq!(doc.submit(a, 1, 1, ins(0, "x")), Err(Error::ClientSeqReused { client_seq: 1, last: 2 }));
        assert_eq!(doc.last_client_seq(a), Some(2));
    }

    #[test]
    fn a_different_op_under_an_applied_seq_is_refused() {
        // Two tabs sharing one client id, both at revision 0, both sending client_seq 1.
        let mut doc = DocState::new(Limits::default());
        let a = ClientId(7);
        applied(doc.submit(a, 0, 1, ins(0, "hello ")));
        assert_eq!(doc.submit(a, 0, 1, ins(0, "world ")), Err(Error::SeqConflict { client_seq: 1, rev: 1 }));
        assert_eq!(doc.document().text(), "hello ");
        // The same op again is a resubmission.
        assert_eq!(doc.submit(a, 0, 1, ins(0, "hello ")), Ok(Submitted::Duplicate { rev: 1 }));
    }

    #[test]
    fn a_rebased_resubmission_is_recognized() {
        let mut doc = DocState::new(Limits::default());
        let (a, b) = (ClientId(1), ClientId(2));
        applied(doc.submit(b, 0, 1, ins(0, "xyz")));
        // a's op, made at revision 1, is applied after b's second op...
        applied(doc.submit(b, 1, 2, ins(0, "12")));
        let c = applied(doc.submit(a, 1, 1, ins(3, "!")));
        // ...and a, which saw b's second op but not its own ack, rebases and resends it.
        let rebased = ins(0, "12").transform(&ins(3, "!"), true);
        assert_eq!(doc.submit(a, 2, 1, rebased), Ok(Submitted::Duplicate { rev: c.rev }));
        assert_eq!(doc.submit(a, 2, 1, ins(0, "?")), Err(Error::SeqConflict { client_seq: 1, rev: c.rev }));
        // After a restart (no fingerprints), the same check still holds by transforming.
        let mut restored = DocState::new(Limits::default());
        for c in doc.history.iter() {
            restored.replay((**c).clone()).unwrap();
        }
        assert_eq!(restored.submit(a, 1, 1, ins(3, "!")), Ok(Submitted::Duplicate { rev: 3 }));
        assert_eq!(restored.submit(a, 1, 1, ins(3, "?")), Err(Error::SeqConflict { client_seq: 1, rev: 3 }));
        assert_eq!(restored.document().text(), "12xyz!");
    }

    #[test]
    fn transform_work_is_bounded() {
        let limits = Limits { max_transform_steps: 1000, ..Limits::default() };
        let mut doc = DocState::new(limits);
        let a = ClientId(1);
        applied(doc.submit(a, 0, 1, ins(0, "ab")));
        for i in 1..=300 {
            applied(doc.submit(a, i, i + 1, ins(1, "x")));
        }
        // 300 commits of 2 ops against a 2-op delta: 1,200 steps.
        let late = doc.submit(ClientId(2), 1, 1, ins(1, "y"));
        assert!(matches!(late, Err(Error::TransformTooCostly { max: 1000, .. })), "{late:?}");
        assert_eq!(doc.rev(), 301);
        // 200 back: 800 steps, within the bound; the steps are reported.
        let (_, steps) = doc.submit_within(ClientId(2), 101, 1, ins(1, "y"), 1000).unwrap();
        assert_eq!(steps, 800);
        // A smaller share (what a connection has left) refuses it too.
        assert!(matches!(
            doc.submit_within(ClientId(3), 102, 1, ins(1, "z"), 100),
            Err(Error::TransformTooCostly { max: 100, .. })
        ));
    }

    #[test]
    fn formatting_is_bounded_per_op_and_per_document() {
        let limits = Limits { max_op_format_bytes: 200, max_document_format_bytes: 1000, ..Limits::default() };
        let mut doc = DocState::new(limits);
        let a = ClientId(1);
        let big = |n: usize| -> Attributes { [("link", "x".repeat(n))].into_iter().collect() };
        let r = doc.submit(a, 0, 1, Delta::new().insert("a", big(300)));
        assert!(matches!(r, Err(Error::OpTooLarge { what: "bytes of attributes and embeds", .. })), "{r:?}");
        // Each insert carries 52 + 100 bytes (different values: the runs do not merge); the
        // document takes six of them.
        for i in 0..6 {
            applied(doc.submit(a, i, i + 1, Delta::new().insert("a", big(100 + i as usize))));
        }
        let r = doc.submit(a, 6, 7, Delta::new().insert("a", big(110)));
        assert!(matches!(r, Err(Error::DocumentFormatTooLarge { max: 1000, .. })), "{r:?}");
        // Formatting every char at once counts every run.
        let mut doc = DocState::new(Limits { max_document_format_bytes: 1000, ..Limits::default() });
        applied(doc.submit(a, 0, 1, ins(0, "abcdefghij")));
        for i in 0..5u64 {
            let d =
                Delta::new().retain(2 * i as usize, Attributes::NONE).retain(1, [("bold", true)].into_iter().collect());
            applied(doc.submit(a, i + 1, i + 2, d));
        }
        let all = Delta::new().retain(10, big(40));
        let r = doc.submit(a, 6, 7, all);
        assert!(matches!(r, Err(Error::DocumentFormatTooLarge { .. })), "{r:?}");
        assert_eq!(doc.rev(), 6);
    }

    #[test]
    fn base_revision_errors() {
        let limits = Limits { history_ops: 2, ..Limits::default() };
        let mut doc = DocState::new(limits);
        let a = ClientId(1);
        assert_eq!(doc.submit(a, 1, 1, ins(0, "x")), Err(Error::BaseRevisionInFuture { base: 1, current: 0 }));
        for i in 0..4 {
            applied(doc.submit(a, i, i + 1, ins(0, "x")));
        }
        assert_eq!(doc.oldest_base(), 2);
        assert_eq!(doc.submit(ClientId(2), 1, 1, ins(0, "y")), Err(Error::BaseRevisionTooOld { base: 1, oldest: 2 }));
        assert!(doc.ops_since(1).is_err());
        assert_eq!(doc.ops_since(2).unwrap().map(|c| c.rev).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(doc.ops_since(4).unwrap().len(), 0);
    }

    #[test]
    fn invalid_and_oversized_ops_are_refused() {
        let limits = Limits { max_document_chars: 10, max_insert_chars: 6, max_delta_ops: 3, ..Limits::default() };
        let mut doc = DocState::new(limits);
        let a = ClientId(1);
        assert_eq!(doc.submit(a, 0, 1, ins(1, "x")), Err(Error::DeltaTooLong { base_len: 1, doc_len: 0 }));
        assert_eq!(
            doc.submit(a, 0, 1, ins(0, "1234567")),
            Err(Error::OpTooLarge { what: "inserted chars", len: 7, max: 6 })
        );
        applied(doc.submit(a, 0, 1, ins(0, "123456")));
        assert_eq!(doc.submit(a, 1, 2, ins(0, "12345")), Err(Error::DocumentTooLarge { len: 11, max: 10 }));
        let many = Delta::new()
            .insert("a", Attributes::NONE)
            .retain(1, [("b", true)].into_iter().collect())
            .delete(1)
            .retain(1, Attributes::NONE)
            .delete(1);
        assert_eq!(doc.submit(a, 1, 2, many), Err(Error::OpTooLarge { what: "ops", len: 5, max: 3 }));
        assert_eq!(doc.rev(), 1);
        assert_eq!(doc.document().text(), "123456");
    }

    #[test]
    fn history_window_is_bounded_by_bytes_too() {
        let limits = Limits { history_bytes: 4096, ..Limits::default() };
        let mut doc = DocState::new(limits);
        let text = "x".repeat(1000);
        for i in 0..20 {
            applied(doc.submit(ClientId(1), i, i + 1, ins(0, &text)));
        }
        assert!(doc.history.len() < 5, "history holds {}", doc.history.len());
        assert!(doc.history_bytes <= 4096);
    }

    #[test]
    fn client_records_survive_a_restore() {
        let mut doc = DocState::new(Limits::default());
        applied(doc.submit(ClientId(1), 0, 1, ins(0, "a")));
        applied(doc.submit(ClientId(2), 1, 5, ins(1, "b")));
        let records: Vec<_> = doc.client_records().collect();
        assert_eq!(records, vec![(ClientId(1), 1, 1), (ClientId(2), 5, 2)]);
        let mut restored =
            DocState::restore_with_clients(doc.rev(), doc.document().clone(), records, Limits::default());
        // Restored from a snapshot, without the history to check a resubmission against: one
        // with the last applied client_seq is refused rather than acknowledged unchecked (the
        // client re-opens and learns from last_seq that its op was applied).
        assert_eq!(restored.submit(ClientId(2), 1, 5, ins(1, "b")), Err(Error::SeqConflict { client_seq: 5, rev: 2 }));
        assert_eq!(
            restored.submit(ClientId(2), 1, 4, ins(1, "b")),
            Err(Error::ClientSeqReused { client_seq: 4, last: 5 })
        );
        assert_eq!(restored.last_client_seq(ClientId(1)), Some(1));
    }

    #[test]
    fn tracked_clients_are_bounded() {
        let limits = Limits { max_tracked_clients: 3, ..Limits::default() };
        let mut doc = DocState::new(limits);
        for c in 0..10 {
            applied(doc.submit(ClientId(c), c, 1, ins(0, "x")));
            // Client 0 stays active, so it is never the one forgotten.
            applied(doc.submit(ClientId(0), doc.rev(), c + 10, ins(0, "y")));
        }
        assert_eq!(doc.clients.len(), 3);
        assert!(doc.last_client_seq(ClientId(0)).is_some());
        assert!(doc.client_order.len() <= 2 * 3 + 64);
    }

    #[test]
    fn selections_given_at_an_old_revision_are_moved_forward() {
        let mut doc = DocState::new(Limits::default());
        let (a, b) = (ClientId(1), ClientId(2));
        applied(doc.submit(a, 0, 1, ins(0, "hello")));
        applied(doc.submit(a, 1, 2, ins(0, "<<")));
        // b saw revision 1 and put its caret after "hello".
        let r = doc.set_selection(b, 1, vec![SelectionRange::caret(5)]).unwrap().to_vec();
        assert_eq!(r, vec![SelectionRange::caret(7)]);
        assert_eq!(
            doc.set_selection(b, 1, vec![SelectionRange::caret(6)]),
            Err(Error::SelectionOutOfBounds { pos: 6, len: 5 })
        );
        applied(doc.submit(a, 2, 3, Delta::new().delete(2)));
        assert_eq!(doc.presence().get(b), Some(&[SelectionRange::caret(5)][..]));
    }

    #[test]
    fn a_million_op_history_works() {
        let mut doc = DocState::new(Limits::default());
        let a = ClientId(1);
        for i in 0..1_000_000u64 {
            let len = doc.document().len();
            let d =
                if i % 4 == 3 { Delta::new().retain(len / 2, Attributes::NONE).delete(1) } else { ins(len / 2, "ab") };
            applied(doc.submit(a, i, i + 1, d));
        }
        assert_eq!(doc.rev(), 1_000_000);
        assert_eq!(doc.document().len(), 1_250_000);
        assert_eq!(doc.history.len(), Limits::default().history_ops);
    }
}
