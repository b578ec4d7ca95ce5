//! Operational transformation (quill-delta's `transform` and `transformPosition`).

use crate::attributes::Attributes;
use crate::cursor::{Body, Cursor, WHOLE};
use crate::delta::Delta;
use crate::op::OpKind;

impl Delta {
    /// Transforms `other` so that it applies after `self`, both having been made against the
    /// same document.
    ///
    /// `priority` says whether `self` happened first: with `true`, `self`'s inserts go before
    /// `other`'s at the same position and `self`'s attributes win. The server calls
    /// `committed.transform(&incoming, true)`; a client transforms a server op through its
    /// own pending op with `pending.transform(&server_op, false)`. Then
    /// `apply(apply(d, a), a.transform(b, true)) == apply(apply(d, b), b.transform(a, false))`.
    #[must_use]
    pub fn transform(&self, other: &Self, priority: bool) -> Self {
        let mut this = Cursor::new(self.ops());
        let mut that = Cursor::new(other.ops());
        let mut out = Self::new();
        while this.has_next() || that.has_next() {
            if this.peek_kind() == OpKind::Insert && (priority || that.peek_kind() != OpKind::Insert) {
                out.push_retain(this.next(WHOLE).len, Attributes::NONE);
            } else if that.peek_kind() == OpKind::Insert {
                out.push_piece(that.next(WHOLE));
            } else {
                let len = this.peek_len().min(that.peek_len());
                let a = this.next(len);
                let b = that.next(len);
                match (a.body, b.body) {
                    // Our delete makes their delete redundant or removes what they retain.
                    (Body::Delete, _) => {}
                    (_, Body::Delete) => out.push_piece(b),
                    _ => out.push_retain(len, Attributes::transform(a.attrs, b.attrs, priority)),
                }
            }
        }
        out.chop()
    }

    /// Moves a position (a cursor) through this delta.
    ///
    /// With `priority`, an insert exactly at `index` does not push it (use it for other
    /// users' cursors); without, the position moves past the inserted text.
    pub fn transform_position(&self, mut index: usize, priority: bool) -> usize {
        let mut this = Cursor::new(self.ops());
        let mut offset = 0;
        while this.has_next() && offset <= index {
            let len = this.peek_len();
            let kind = this.peek_kind();
            this.next(WHOLE);
            match kind {
                OpKind::Delete => {
                    index -= len.min(index - offset);
                    continue;
                }
                OpKind::Insert if offset < index || !priority => index += len,
                _ => {}
            }
            offset += len;
        }
        index
    }
}
