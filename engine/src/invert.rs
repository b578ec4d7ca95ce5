//! Inversion: the delta that undoes a delta (quill-delta's `invert`).

use crate::attributes::Attributes;
use crate::delta::Delta;
use crate::document::Document;
use crate::error::Error;
use crate::op::Op;

impl Delta {
    /// Returns the delta that undoes `self` on `base`, the document `self` was applied to:
    /// `apply(apply(base, d), d.invert(base)) == base`.
    pub fn invert(&self, base: &Document) -> Result<Self, Error> {
        let base_len = self.base_len();
        if base_len > base.len() {
            return Err(Error::DeltaTooLong { base_len, doc_len: base.len() });
        }
        let mut out = Self::new();
        let mut index = 0;
        for op in self.ops() {
            match op {
                Op::Insert { insert, .. } => out.push_delete(insert.len()),
                Op::Retain { retain, attributes } if attributes.is_empty() => {
                    out.push_retain(*retain, Attributes::NONE);
                    index += retain;
                }
                Op::Retain { retain, attributes } => {
                    base.for_each_piece(index, index + retain, |piece| {
                        out.push_retain(piece.len, Attributes::invert(attributes, piece.attrs));
                    });
                    index += retain;
                }
                Op::Delete { delete } => {
                    base.for_each_piece(index, index + delete, |piece| out.push_piece(piece));
                    index += delete;
                }
            }
        }
        Ok(out.chop())
    }
}
