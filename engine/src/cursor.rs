//! Walking a delta's ops piece by piece: quill-delta's `OpIterator`.
//!
//! [`Cursor::next`] hands out borrowed [`Piece`]s, so compose and transform only allocate for
//! the parts they keep.

use crate::attributes::Attributes;
use crate::op::{Embed, Insert, Op, OpKind, Text};

/// The attributes of a piece past the end of a delta (quill's `{retain: Infinity}`).
pub(crate) static NO_ATTRIBUTES: Attributes = Attributes::NONE;

/// Take the whole rest of the current op.
pub(crate) const WHOLE: usize = usize::MAX;

/// A borrowed slice of one op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece<'a> {
    pub(crate) body: Body<'a>,
    pub(crate) len: usize,
    pub(crate) attrs: &'a Attributes,
}

/// What a [`Piece`] is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Body<'a> {
    Text(&'a str),
    Embed(&'a Embed),
    Retain,
    Delete,
}

impl<'a> Piece<'a> {
    /// Views a whole op as a piece.
    #[inline]
    pub(crate) fn of(op: &'a Op) -> Self {
        match op {
            Op::Insert { insert: Insert::Text(t), attributes } => {
                Piece { body: Body::Text(t.as_str()), len: t.chars(), attrs: attributes }
            }
            Op::Insert { insert: Insert::Embed(e), attributes } => {
                Piece { body: Body::Embed(e), len: 1, attrs: attributes }
            }
            Op::Retain { retain, attributes } => Piece { body: Body::Retain, len: *retain, attrs: attributes },
            Op::Delete { delete } => Piece { body: Body::Delete, len: *delete, attrs: &NO_ATTRIBUTES },
        }
    }

    #[cfg(test)]
    pub(crate) fn kind(&self) -> OpKind {
        match self.body {
            Body::Text(_) | Body::Embed(_) => OpKind::Insert,
            Body::Retain => OpKind::Retain,
            Body::Delete => OpKind::Delete,
        }
    }

    /// Makes an owned op of this piece, with other attributes.
    pub(crate) fn to_op_with(self, attributes: Attributes) -> Op {
        match self.body {
            Body::Text(s) => Op::Insert { insert: Insert::Text(Text::from_parts(s, self.len)), attributes },
            Body::Embed(e) => Op::Insert { insert: Insert::Embed(e.clone()), attributes },
            Body::Retain => Op::Retain { retain: self.len, attributes },
            Body::Delete => Op::Delete { delete: self.len },
        }
    }

    /// Makes an owned op of this piece.
    pub(crate) fn to_op(self) -> Op {
        self.to_op_with(self.attrs.clone())
    }
}

/// A position inside a delta's ops.
pub(crate) struct Cursor<'a> {
    ops: &'a [Op],
    index: usize,
    /// Chars already taken from `ops[index]`.
    offset: usize,
    /// Bytes already taken from `ops[index]` when it is text.
    byte: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(ops: &'a [Op]) -> Self {
        Self { ops, index: 0, offset: 0, byte: 0 }
    }

    pub(crate) fn has_next(&self) -> bool {
        self.index < self.ops.len()
    }

    /// Chars left in the current op; `usize::MAX` (infinity) past the end.
    pub(crate) fn peek_len(&self) -> usize {
        self.ops.get(self.index).map_or(usize::MAX, |op| op.len() - self.offset)
    }

    /// The current op's attributes (none past the end).
    pub(crate) fn peek_attributes(&self) -> &'a Attributes {
        self.ops.get(self.index).map_or(&NO_ATTRIBUTES, |op| match op {
            Op::Insert { attributes, .. } | Op::Retain { attributes, .. } => attributes,
            Op::Delete { .. } => &NO_ATTRIBUTES,
        })
    }

    /// The current op's kind; past the end a delta retains forever.
    pub(crate) fn peek_kind(&self) -> OpKind {
        self.ops.get(self.index).map_or(OpKind::Retain, Op::kind)
    }

    /// Takes up to `len` chars of the current op ([`WHOLE`] for all of it). Past the end it
    /// returns a plain retain of `len`.
    pub(crate) fn next(&mut self, len: usize) -> Piece<'a> {
        let Some(op) = self.ops.get(self.index) else {
            debug_assert_ne!(len, WHOLE);
            return Piece { body: Body::Retain, len, attrs: &NO_ATTRIBUTES };
        };
        let left = op.len() - self.offset;
        let take = len.min(left);
        let start_byte = self.byte;
        if take == left {
            self.index += 1;
            self.offset = 0;
            self.byte = 0;
        } else {
            self.offset += take;
        }
        match op {
            Op::Insert { insert: Insert::Text(t), attributes } => {
                let s = &t.as_str()[start_byte..];
                let s = if take == left {
                    s
                } else {
                    let end = str_indices::chars::to_byte_idx(s, take);
                    self.byte = start_byte + end;
                    &s[..end]
                };
                Piece { body: Body::Text(s), len: take, attrs: attributes }
            }
            Op::Insert { insert: Insert::Embed(e), attributes } => {
                Piece { body: Body::Embed(e), len: take, attrs: attributes }
            }
            Op::Retain { attributes, .. } => Piece { body: Body::Retain, len: take, attrs: attributes },
            Op::Delete { .. } => Piece { body: Body::Delete, len: take, attrs: &NO_ATTRIBUTES },
        }
    }

    /// The remaining ops, starting with what is left of the current one.
    pub(crate) fn rest(mut self) -> (Option<Piece<'a>>, &'a [Op]) {
        if !self.has_next() {
            return (None, &[]);
        }
        if self.offset == 0 {
            return (None, &self.ops[self.index..]);
        }
        let first = self.next(WHOLE);
        (Some(first), &self.ops[self.index..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_on_char_boundaries() {
        let ops = [Op::insert("a😀bc", Attributes::NONE), Op::retain(3, Attributes::NONE), Op::delete(2)];
        let mut c = Cursor::new(&ops);
        assert_eq!(c.peek_len(), 4);
        let p = c.next(2);
        assert!(matches!(p.body, Body::Text("a😀")));
        assert_eq!(c.peek_len(), 2);
        assert!(matches!(c.next(WHOLE).body, Body::Text("bc")));
        assert_eq!(c.peek_kind(), OpKind::Retain);
        assert_eq!(c.next(1).len, 1);
        let (first, rest) = c.rest();
        assert_eq!(first.map(|p| p.len), Some(2));
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn past_the_end_retains() {
        let mut c = Cursor::new(&[]);
        assert!(!c.has_next());
        assert_eq!(c.peek_len(), usize::MAX);
        assert_eq!(c.peek_kind(), OpKind::Retain);
        let p = c.next(7);
        assert_eq!((p.kind(), p.len), (OpKind::Retain, 7));
    }
}
