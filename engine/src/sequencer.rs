//! The per-document sequencer: the server's single source of truth for one document.
//!
//! [`DocState::submit`] orders every op: it transforms a client's delta against every op
//! committed since the client's base revision, applies it, and returns the new revision with
//! the transformed delta to broadcast. A resubmission of the same `(client, client_seq)`
//! (after a lost ack) returns the original revision and changes nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::ClientId;
use crate::delta::Delta;
use crate::document::Document;
use crate::error::Error;
use crate::limits::Limits;
use crate::op::Op;
use crate::presence::{Presence, SelectionRange, check_ranges};

/// One committed op.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// The revision this op produced (the first op makes revision 1).
    pub rev: u64,
    /// Who submitted it.
    pub author: ClientId,
    /// The author's sequence number for it.
    pub client_seq: u64,
    /// The op as applied (transformed to the revision before `rev`).
    pub delta: Delta,
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
    limits: Limits,
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
            state.remember(client, seq, rev);
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

    /// Submits `delta`, made by `client` against revision `base_rev`.
    pub fn submit(
        &mut self,
        client: ClientId,
        base_rev: u64,
        client_seq: u64,
        delta: Delta,
    ) -> Result<Submitted, Error> {
        if let Some(rec) = self.clients.get(&client) {
            if client_seq == rec.seq {
                return Ok(Submitted::Duplicate { rev: rec.rev });
            }
            if client_seq < rec.seq {
                return Err(Error::ClientSeqReused { client_seq, last: rec.seq });
            }
        }
        let oldest = self.check_base(base_rev)?;
        self.check_op(&delta)?;

        let mut delta = delta;
        let skip = usize::try_from(base_rev - oldest).expect("history window fits in memory");
        for commit in self.history.iter().skip(skip) {
            delta = commit.delta.transform(&delta, true);
        }

        let (base_len, len) = (delta.base_len(), self.doc.len());
        if base_len > len {
            return Err(Error::DeltaTooLong { base_len, doc_len: len });
        }
        let new_len = len + delta.insert_len() - delta.delete_len();
        if new_len > self.limits.max_document_chars {
            return Err(Error::DocumentTooLarge { len: new_len, max: self.limits.max_document_chars });
        }
        self.doc.apply(&delta)?;
        self.rev += 1;
        self.presence.transform(&delta, client);

        let commit = Arc::new(Commit { rev: self.rev, author: client, client_seq, delta });
        self.push_history(Arc::clone(&commit));
        self.remember(client, client_seq, self.rev);
        Ok(Submitted::Applied(commit))
    }

    /// Appends an already-ordered commit (recovery from the op log), checking it continues
    /// the revision sequence.
    pub fn replay(&mut self, commit: Commit) -> Result<(), Error> {
        if commit.rev != self.rev + 1 {
            return Err(Error::RevisionGap { expected: self.rev + 1, got: commit.rev });
        }
        self.doc.apply(&commit.delta)?;
        self.rev = commit.rev;
        self.remember(commit.author, commit.client_seq, commit.rev);
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
        Ok(())
    }

    fn push_history(&mut self, commit: Arc<Commit>) {
        self.history_bytes += commit.delta.approx_bytes();
        self.history.push_back(commit);
        while self.history.len() > self.limits.history_ops
            || (self.history_bytes > self.limits.history_bytes && self.history.len() > 1)
        {
            let old = self.history.pop_front().expect("non-empty history");
            self.history_bytes -= old.delta.approx_bytes();
        }
    }

    /// Records `client`'s latest applied op, forgetting the least recently active clients
    /// beyond the limit.
    fn remember(&mut self, client: ClientId, seq: u64, rev: u64) {
        self.clients.insert(client, ClientRecord { seq, rev });
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
        assert_eq!(restored.submit(ClientId(2), 2, 5, ins(0, "x")).unwrap(), Submitted::Duplicate { rev: 2 });
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
