//! The client side of OT: one client's copy of one document.
//!
//! The classic inflight + buffer machine (ot.js, ShareDB): at most one op is in flight to the
//! server; edits made meanwhile compose into a buffer; server ops are transformed against
//! both before they touch the local document. It is sans-IO like the rest of the engine: each
//! call returns what to send, and the caller owns the socket. The Rust client library and the
//! load generator drive it.
//!
//! Reconnecting: re-open the document from [`ClientDoc::rev`], feed every op the server sends
//! (the client's own op among them counts as its ack), then send [`ClientDoc::resend`]. If the
//! server has dropped that history, [`ClientDoc::resync`] rebases unacknowledged edits onto a
//! fresh snapshot.

use crate::ClientId;
use crate::delta::Delta;
use crate::document::Document;
use crate::error::Error;
use crate::op::Op;
use crate::presence::SelectionRange;

/// An op to send to the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The client's sequence number for it; resends keep it, so the server applies it once.
    pub client_seq: u64,
    /// The revision the delta applies to.
    pub base_rev: u64,
    /// The change.
    pub delta: Delta,
}

/// What a server op did to the local copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Remote {
    /// Someone else's op, transformed and applied locally (hand it to the editor).
    Applied(Delta),
    /// The client's own in-flight op, seen in the stream (after a reconnect): it counts as
    /// the ack, and this is the next op to send, if any.
    Acked(Option<Outgoing>),
}

/// One client's view of one document.
#[derive(Clone, Debug)]
pub struct ClientDoc {
    client: ClientId,
    rev: u64,
    /// The document with the client's unacknowledged edits applied.
    doc: Document,
    /// The server's document at `rev`, the base for a resync.
    shadow: Document,
    next_seq: u64,
    inflight: Option<Outgoing>,
    buffer: Option<Delta>,
    /// An undo or redo asked of the server and not answered yet: its `client_seq`.
    request: Option<u64>,
}

impl ClientDoc {
    /// A client's copy of a document received at `rev` (from a snapshot).
    pub fn new(client: ClientId, rev: u64, doc: Document) -> Self {
        Self::with_next_seq(client, rev, doc, 1)
    }

    /// Like [`ClientDoc::new`], numbering ops from `next_seq` (a client that reuses its id
    /// across sessions must keep its sequence numbers increasing).
    pub fn with_next_seq(client: ClientId, rev: u64, doc: Document, next_seq: u64) -> Self {
        Self { client, rev, shadow: doc.clone(), doc, next_seq, inflight: None, buffer: None, request: None }
    }

    /// The client's id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The last server revision seen.
    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// The local document, with unacknowledged edits.
    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// The server's document at [`ClientDoc::rev`].
    pub fn server_document(&self) -> &Document {
        &self.shadow
    }

    /// The op in flight, if any.
    pub fn inflight(&self) -> Option<&Outgoing> {
        self.inflight.as_ref()
    }

    /// True when edits wait for an ack.
    pub fn has_pending(&self) -> bool {
        self.inflight.is_some() || self.buffer.is_some() || self.request.is_some()
    }

    /// The sequence number the next op will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Applies a local edit. Returns the op to send now, or `None` while another is in
    /// flight (the edit then waits in the buffer).
    pub fn edit(&mut self, delta: Delta) -> Result<Option<Outgoing>, Error> {
        self.doc.apply(&delta)?;
        if self.inflight.is_some() || self.request.is_some() {
            self.buffer = Some(match self.buffer.take() {
                Some(b) => b.compose(&delta),
                None => delta,
            });
            return Ok(None);
        }
        Ok(Some(self.send(delta)))
    }

    /// Asks for an undo, a redo or a restore (the server computes it): the `client_seq` to send the
    /// request with, or `None` while an op or another request is in flight (ask again after
    /// its answer). Edits made until the server's answer wait in the buffer; the answer is
    /// the server's op with this `client_seq` (handled by [`ClientDoc::remote`] like anyone
    /// else's), or a refusal ([`ClientDoc::request_refused`]). Then [`ClientDoc::resend`]
    /// gives the buffered edits to send.
    pub fn request(&mut self) -> Option<u64> {
        if self.inflight.is_some() || self.request.is_some() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.request = Some(seq);
        Some(seq)
    }

    /// The server refused the undo or redo `client_seq` (nothing to undo): the buffered
    /// edits may go ([`ClientDoc::resend`]).
    pub fn request_refused(&mut self, client_seq: u64) {
        if self.request == Some(client_seq) {
            self.request = None;
        }
    }

    /// Whether an undo or redo request awaits its answer.
    pub fn has_request(&self) -> bool {
        self.request.is_some()
    }

    /// The `client_seq` of the request awaiting its answer, if one does.
    pub fn request_seq(&self) -> Option<u64> {
        self.request
    }

    /// Handles the server's ack of `client_seq`, committed as `rev`. Returns the next op
    /// to send, if edits are buffered. A repeated ack for an op already acknowledged (a
    /// resubmission's) is ignored. An ack of the request in flight (a restore with nothing to
    /// change, or an undo applied before whose op was already received) ends it.
    pub fn ack(&mut self, client_seq: u64, rev: u64) -> Result<Option<Outgoing>, Error> {
        if self.request == Some(client_seq) {
            self.request = None;
            return Ok(self.flush());
        }
        match &self.inflight {
            Some(inflight) if inflight.client_seq == client_seq => {
                if rev != self.rev + 1 {
                    return Err(Error::RevisionGap { expected: self.rev + 1, got: rev });
                }
                Ok(self.acked(rev))
            }
            _ if client_seq < self.next_seq => Ok(None),
            _ => Err(Error::UnexpectedAck { client_seq }),
        }
    }

    /// Handles an op from the server: revision `rev`, made by `author` as its `client_seq`.
    pub fn remote(&mut self, rev: u64, delta: &Delta, author: ClientId, client_seq: u64) -> Result<Remote, Error> {
        if rev != self.rev + 1 {
            return Err(Error::RevisionGap { expected: self.rev + 1, got: rev });
        }
        if author == self.client && self.inflight.as_ref().is_some_and(|i| i.client_seq == client_seq) {
            return Ok(Remote::Acked(self.acked(rev)));
        }
        if author == self.client && self.request == Some(client_seq) {
            // The answer to an undo or redo: an op like anyone's, which also ends the wait.
            self.request = None;
        }
        self.shadow.apply(delta)?;
        let mut op = delta.clone();
        if let Some(inflight) = &mut self.inflight {
            let moved = op.transform(&inflight.delta, true);
            op = inflight.delta.transform(&op, false);
            inflight.delta = moved;
            inflight.base_rev = rev;
        }
        if let Some(buffer) = &mut self.buffer {
            let moved = op.transform(buffer, true);
            op = buffer.transform(&op, false);
            *buffer = moved;
        }
        self.doc.apply(&op)?;
        self.rev = rev;
        Ok(Remote::Applied(op))
    }

    /// After a reconnect and catch-up: the op to send again (same `client_seq`, rebased on
    /// the current revision), or the buffered edits if nothing is in flight.
    pub fn resend(&mut self) -> Option<Outgoing> {
        match &self.inflight {
            Some(inflight) => Some(inflight.clone()),
            None if self.request.is_some() => None,
            None => self.flush(),
        }
    }

    /// Replaces the local copy with a snapshot `doc` at `rev`, after the server refused to
    /// catch the client up because its history no longer reaches back that far.
    ///
    /// `last_applied_seq` is the server's record of this client's last applied op: it tells
    /// whether the op in flight made it. The changes missed are recovered as a diff between
    /// the known server document and the snapshot, and unacknowledged edits are transformed
    /// over it, so they survive. Returns the op to send.
    pub fn resync(
        &mut self,
        rev: u64,
        doc: Document,
        last_applied_seq: Option<u64>,
    ) -> Result<Option<Outgoing>, Error> {
        let mut base = std::mem::take(&mut self.shadow);
        let mut inflight = self.inflight.take();
        if let Some(op) = inflight.take_if(|op| last_applied_seq.is_some_and(|last| last >= op.client_seq)) {
            base.apply(&op.delta)?;
        }
        let mut missed = base.diff(&doc);
        let mut local = doc.clone();
        if let Some(op) = &mut inflight {
            let moved = missed.transform(&op.delta, true);
            missed = op.delta.transform(&missed, false);
            op.delta = moved;
            op.base_rev = rev;
            local.apply(&op.delta)?;
        }
        if let Some(buffer) = &mut self.buffer {
            *buffer = missed.transform(buffer, true);
            local.apply(buffer)?;
        }
        self.rev = rev;
        self.shadow = doc;
        self.doc = local;
        self.inflight = inflight;
        // An undo or redo asked before is in the snapshot or was never made: ask again.
        self.request = None;
        Ok(self.resend())
    }

    /// Drops every unacknowledged edit (the server refused the op in flight, so resending it
    /// would be refused again) and returns to the server's document. Returns the local
    /// changes undone, to hand to the editor.
    pub fn discard_pending(&mut self) -> Delta {
        let undo = self.doc.diff(&self.shadow);
        self.doc = self.shadow.clone();
        self.inflight = None;
        self.buffer = None;
        self.request = None;
        undo
    }

    /// Moves another client's selection, received at [`ClientDoc::rev`], onto the local
    /// document (through the unacknowledged edits).
    pub fn remote_selection(&self, ranges: &[SelectionRange]) -> Vec<SelectionRange> {
        ranges
            .iter()
            .map(|r| {
                let mut r = *r;
                for pending in self.pending() {
                    r = r.transform(pending, true);
                }
                r
            })
            .collect()
    }

    /// Moves the local selection back to [`ClientDoc::rev`], the revision to send it at:
    /// through the unacknowledged edits undone, last first. A caret inside text not yet
    /// acknowledged lands where that text starts; the server moves it on once the text
    /// is applied.
    pub fn selection_for_server(&self, ranges: &[SelectionRange]) -> (u64, Vec<SelectionRange>) {
        let undo: Vec<Delta> = self.pending().map(positions_inverse).collect();
        let ranges = ranges
            .iter()
            .map(|r| {
                let mut r = *r;
                for u in undo.iter().rev() {
                    r = r.transform(u, true);
                }
                r
            })
            .collect();
        (self.rev, ranges)
    }

    fn pending(&self) -> impl DoubleEndedIterator<Item = &Delta> {
        self.inflight.iter().map(|o| &o.delta).chain(self.buffer.iter())
    }

    fn acked(&mut self, rev: u64) -> Option<Outgoing> {
        let op = self.inflight.take().expect("acked with an op in flight");
        self.shadow.apply(&op.delta).expect("the server applied the op the shadow can take");
        self.rev = rev;
        self.flush()
    }

    fn flush(&mut self) -> Option<Outgoing> {
        let delta = self.buffer.take()?;
        Some(self.send(delta))
    }

    fn send(&mut self, delta: Delta) -> Outgoing {
        let out = Outgoing { client_seq: self.next_seq, base_rev: self.rev, delta };
        self.next_seq += 1;
        self.inflight = Some(out.clone());
        out
    }
}

/// A delta with the same effect on positions as undoing `d`: its inserts become deletes and
/// its deletes become inserts (of placeholder text: only lengths matter to positions).
fn positions_inverse(d: &Delta) -> Delta {
    let mut out = Delta::new();
    for op in d.ops() {
        out.push(match op {
            Op::Insert { insert, .. } => Op::delete(insert.len()),
            Op::Retain { retain, .. } => Op::retain(*retain, crate::Attributes::NONE),
            Op::Delete { delete } => Op::insert(&" ".repeat(*delete), crate::Attributes::NONE),
        });
    }
    out.chop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;
    use crate::limits::Limits;
    use crate::sequencer::{DocState, Submitted};

    fn ins(pos: usize, s: &str) -> Delta {
        Delta::new().retain(pos, Attributes::NONE).insert(s, Attributes::NONE)
    }

    #[test]
    fn edits_buffer_while_one_is_in_flight() {
        let a = ClientId(1);
        let mut c = ClientDoc::new(a, 0, Document::new());
        let first = c.edit(ins(0, "a")).unwrap().unwrap();
        assert_eq!((first.client_seq, first.base_rev), (1, 0));
        assert_eq!(c.edit(ins(1, "b")).unwrap(), None);
        assert_eq!(c.edit(ins(2, "c")).unwrap(), None);
        let second = c.ack(1, 1).unwrap().unwrap();
        assert_eq!(second, Outgoing { client_seq: 2, base_rev: 1, delta: ins(1, "bc") });
        assert_eq!(c.ack(2, 2).unwrap(), None);
        assert!(!c.has_pending());
        assert_eq!(c.server_document().text(), "abc");
        // A repeated ack is ignored; an ack for an op never sent is an error.
        assert_eq!(c.ack(2, 2).unwrap(), None);
        assert_eq!(c.ack(9, 3), Err(Error::UnexpectedAck { client_seq: 9 }));
    }

    #[test]
    fn remote_ops_are_transformed_against_pending() {
        let (a, b) = (ClientId(1), ClientId(2));
        let mut server = DocState::new(Limits::default());
        let mut ca = ClientDoc::new(a, 0, Document::new());
        let mut cb = ClientDoc::new(b, 0, Document::new());
        let oa = ca.edit(ins(0, "aa")).unwrap().unwrap();
        let ob = cb.edit(ins(0, "bb")).unwrap().unwrap();
        cb.edit(ins(2, "B")).unwrap();
        let Submitted::Applied(ka) = server.submit(a, oa.base_rev, oa.client_seq, oa.delta).unwrap() else { panic!() };
        let Submitted::Applied(kb) = server.submit(b, ob.base_rev, ob.client_seq, ob.delta).unwrap() else { panic!() };
        assert_eq!(ca.ack(ka.client_seq, ka.rev).unwrap(), None);
        ca.remote(kb.rev, &kb.delta, b, kb.client_seq).unwrap();
        cb.remote(ka.rev, &ka.delta, a, ka.client_seq).unwrap();
        let next = cb.ack(kb.client_seq, kb.rev).unwrap().unwrap();
        let Submitted::Applied(kc) = server.submit(b, next.base_rev, next.client_seq, next.delta).unwrap() else {
            panic!()
        };
        cb.ack(kc.client_seq, kc.rev).unwrap();
        ca.remote(kc.rev, &kc.delta, b, kc.client_seq).unwrap();
        assert_eq!(server.document().text(), "aabbB");
        assert_eq!(ca.document(), server.document());
        assert_eq!(cb.document(), server.document());
    }

    #[test]
    fn own_op_in_the_stream_counts_as_its_ack() {
        let a = ClientId(1);
        let mut c = ClientDoc::new(a, 0, Document::new());
        let out = c.edit(ins(0, "x")).unwrap().unwrap();
        c.edit(ins(1, "y")).unwrap();
        let next = c.remote(1, &out.delta, a, out.client_seq).unwrap();
        assert_eq!(next, Remote::Acked(Some(Outgoing { client_seq: 2, base_rev: 1, delta: ins(1, "y") })));
        // The late duplicate ack for seq 1 is then ignored.
        assert_eq!(c.ack(1, 1).unwrap(), None);
        assert_eq!(c.remote(5, &ins(0, "z"), ClientId(2), 1), Err(Error::RevisionGap { expected: 2, got: 5 }));
    }

    #[test]
    fn resync_keeps_unacknowledged_edits() {
        let (a, b) = (ClientId(1), ClientId(2));
        let mut c = ClientDoc::new(a, 0, Document::from_text("hello world"));
        c.edit(ins(5, ",")).unwrap();
        c.edit(ins(12, "!")).unwrap();
        // Meanwhile the server moved on far enough to forget revision 0, and never got the op.
        let mut server = DocState::restore(0, Document::from_text("hello world"), Limits::default());
        server.submit(b, 0, 1, ins(0, "Oh, ")).unwrap();
        let out = c.resync(server.rev(), server.document().clone(), server.last_client_seq(a)).unwrap().unwrap();
        assert_eq!(out.client_seq, 1);
        assert_eq!(c.document().text(), "Oh, hello, world!");
        let Submitted::Applied(k) = server.submit(a, out.base_rev, out.client_seq, out.delta).unwrap() else {
            panic!()
        };
        let next = c.ack(k.client_seq, k.rev).unwrap().unwrap();
        let Submitted::Applied(k) = server.submit(a, next.base_rev, next.client_seq, next.delta).unwrap() else {
            panic!()
        };
        assert_eq!(c.ack(k.client_seq, k.rev).unwrap(), None);
        assert_eq!(server.document(), c.document());
    }

    #[test]
    fn discarding_pending_edits_returns_to_the_server_document() {
        let mut c = ClientDoc::new(ClientId(1), 0, Document::from_text("abc"));
        c.edit(ins(1, "X")).unwrap();
        c.edit(ins(0, "Y")).unwrap();
        let mut editor = c.document().clone();
        let undo = c.discard_pending();
        editor.apply(&undo).unwrap();
        assert_eq!(editor.text(), "abc");
        assert_eq!(c.document().text(), "abc");
        assert!(!c.has_pending());
        // The next edit gets a sequence number after the refused one (1).
        assert_eq!(c.edit(ins(0, "Z")).unwrap().unwrap().client_seq, 2);
    }

    #[test]
    fn selections_move_through_pending_edits() {
        let a = ClientId(1);
        let mut c = ClientDoc::new(a, 3, Document::from_text("abcdef"));
        c.edit(ins(0, "XY")).unwrap();
        // Someone's caret at 4 on the server's "abcdef" is at 6 locally.
        assert_eq!(c.remote_selection(&[SelectionRange::caret(4)]), vec![SelectionRange::caret(6)]);
        // Our caret after "XY" is at 2 locally; at revision 3 it is where "XY" goes.
        assert_eq!(c.selection_for_server(&[SelectionRange::caret(2)]), (3, vec![SelectionRange::caret(0)]));
        assert_eq!(c.selection_for_server(&[SelectionRange::caret(5)]), (3, vec![SelectionRange::caret(3)]));
    }
}
