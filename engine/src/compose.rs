//! Composition: one delta after another, as a single delta (quill-delta's `compose`).

use crate::attributes::Attributes;
use crate::cursor::{Body, Cursor, Piece, WHOLE};
use crate::delta::Delta;
use crate::op::{Op, OpKind};

impl Delta {
    /// Returns the delta equivalent to applying `self` and then `other`.
    ///
    /// Matches quill-delta 5's `compose`, including how attributes combine: on text `other`'s
    /// `null` attributes remove keys, on a retain they are kept (they still mean "remove" when
    /// the result is applied).
    #[must_use]
    pub fn compose(&self, other: &Self) -> Self {
        let mut this = Cursor::new(self.ops());
        let mut that = Cursor::new(other.ops());
        let mut out = Self::new();

        // A leading plain retain in `other` keeps `self`'s leading inserts as they are.
        if let Some(Op::Retain { retain: first, attributes }) = other.ops().first()
            && attributes.is_empty()
        {
            let mut left = *first;
            while this.peek_kind() == OpKind::Insert && this.peek_len() <= left {
                left -= this.peek_len();
                out.push_piece(this.next(WHOLE));
            }
            if first - left > 0 {
                that.next(first - left);
            }
        }

        while this.has_next() || that.has_next() {
            if that.peek_kind() == OpKind::Insert {
                out.push_piece(that.next(WHOLE));
            } else if this.peek_kind() == OpKind::Delete {
                out.push_piece(this.next(WHOLE));
            } else {
                let len = this.peek_len().min(that.peek_len());
                let a = this.next(len);
                let b = that.next(len);
                match b.body {
                    Body::Retain => {
                        let keep_null = matches!(a.body, Body::Retain);
                        let attrs = Attributes::compose(a.attrs, b.attrs, keep_null);
                        let before = out.ops().len();
                        out.push_piece_with(Piece { len, ..a }, &attrs);
                        // Once `other` is only an implicit retain, the rest of `self` is copied
                        // (when the new op landed last, as quill-delta checks).
                        let landed_last =
                            out.ops().len() > before && !matches!(out.ops().last(), Some(Op::Delete { .. }));
                        if !that.has_next() && landed_last {
                            let (first, rest) = this.rest();
                            if let Some(first) = first {
                                out.push_piece(first);
                            }
                            for op in rest {
                                out.push(op.clone());
                            }
                            return out.chop();
                        }
                    }
                    Body::Delete => {
                        // Insert then delete cancels out; a retain then delete stays a delete.
                        if matches!(a.body, Body::Retain) {
                            out.push_piece(b);
                        }
                    }
                    Body::Text(_) | Body::Embed(_) => unreachable!("inserts of `other` are handled above"),
                }
            }
        }
        out.chop()
    }
}
