//! "See changes": a document's changes between two revisions, attributed to their authors.
//!
//! A [`Redline`] starts as the document at the first revision and takes the ops after it in
//! order. It keeps what each op deleted (marked with who deleted it) and marks what each op
//! inserted or formatted with its author, so the result reads like tracked changes: the text
//! as it is now, plus what was removed, each change with a name. Ops count positions in the
//! visible text (what the document is), so each is mapped past the deleted text it cannot
//! see; text inserted and deleted again within the range leaves no trace.

use crate::attributes::Attributes;
use crate::cursor::Cursor;
use crate::delta::Delta;
use crate::document::Document;
use crate::error::Error;
use crate::op::Op;
use crate::value::Value;

/// The attribute on inserted text: who inserted it.
pub const INSERTED: &str = "tandem_inserted";
/// The attribute on deleted text (kept in the redline): who deleted it.
pub const DELETED: &str = "tandem_deleted";
/// The attribute on text whose formatting changed: who changed it last.
pub const FORMATTED: &str = "tandem_formatted";

/// A document at one revision with the changes made since marked (see the module's doc).
#[derive(Clone, Debug)]
pub struct Redline {
    /// Inserts only: the visible text and the deleted text, marked.
    doc: Delta,
    /// Chars of visible text.
    visible: usize,
}

fn mark(key: &str, author: &str) -> Attributes {
    [(key, Value::from(author))].into_iter().collect()
}

impl Redline {
    /// Starts from `base`, the document at the first revision.
    pub fn new(base: &Document) -> Self {
        Self { doc: base.to_delta(), visible: base.len() }
    }

    /// Takes the next op, made by `author` (any string, e.g. a client id), against the
    /// visible text.
    pub fn apply(&mut self, author: &str, op: &Delta) -> Result<(), Error> {
        let base_len = op.base_len();
        if base_len > self.visible {
            return Err(Error::DeltaTooLong { base_len, doc_len: self.visible });
        }
        let (inserted, deleted, formatted) = (mark(INSERTED, author), mark(DELETED, author), mark(FORMATTED, author));
        let mut change = Delta::new();
        let mut cur = Cursor::new(self.doc.ops());
        for o in op.ops() {
            match o {
                Op::Insert { attributes, .. } => {
                    let attrs = Attributes::compose(attributes, &inserted, false);
                    change.push(crate::cursor::Piece::of(o).to_op_with(attrs));
                    self.visible += o.len();
                }
                Op::Retain { retain, attributes } => {
                    let marked = (!attributes.is_empty()).then(|| Attributes::compose(attributes, &formatted, true));
                    let mut n = *retain;
                    while n > 0 {
                        skip_deleted(&mut cur, &mut change);
                        let len = cur.peek_len().min(n);
                        cur.next(len);
                        change.push_retain(len, marked.clone().unwrap_or(Attributes::NONE));
                        n -= len;
                    }
                }
                Op::Delete { delete } => {
                    let mut n = *delete;
                    while n > 0 {
                        skip_deleted(&mut cur, &mut change);
                        let len = cur.peek_len().min(n);
                        let piece = cur.next(len);
                        if piece.attrs.get(INSERTED).is_some() {
                            // Inserted since the first revision: gone without a trace.
                            change.push_delete(len);
                        } else {
                            change.push_retain(len, deleted.clone());
                        }
                        n -= len;
                    }
                    self.visible -= delete;
                }
            }
        }
        self.doc = self.doc.compose(&change);
        Ok(())
    }

    /// The document with the changes marked (inserts only).
    pub fn into_delta(self) -> Delta {
        self.doc
    }
}

/// Moves `cur` past the deleted text at it (which ops do not count).
fn skip_deleted(cur: &mut Cursor<'_>, change: &mut Delta) {
    while cur.has_next() && cur.peek_attributes().get(DELETED).is_some() {
        let len = cur.peek_len();
        cur.next(len);
        change.push_retain(len, Attributes::NONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Document {
        Document::from_delta(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn delta(json: &str) -> Delta {
        serde_json::from_str(json).unwrap()
    }

    fn json(d: &Delta) -> String {
        serde_json::to_string(d).unwrap()
    }

    #[test]
    fn inserts_deletes_and_formatting_carry_their_authors() {
        let mut r = Redline::new(&doc(r#"{"ops":[{"insert":"The quick fox\n"}]}"#));
        // (A delta puts an insert before a delete at the same place.)
        r.apply("ada", &delta(r#"{"ops":[{"retain":4},{"delete":6},{"insert":"slow "}]}"#)).unwrap();
        // Bob's positions count the visible text only: "The slow fox\n".
        r.apply("bob", &delta(r#"{"ops":[{"retain":9},{"retain":3,"attributes":{"bold":true}},{"insert":"!"}]}"#))
            .unwrap();
        assert_eq!(
            json(&r.into_delta()),
            concat!(
                r#"{"ops":[{"insert":"The "},{"insert":"slow ","attributes":{"tandem_inserted":"ada"}},"#,
                r#"{"insert":"quick ","attributes":{"tandem_deleted":"ada"}},"#,
                r#"{"insert":"fox","attributes":{"bold":true,"tandem_formatted":"bob"}},"#,
                r#"{"insert":"!","attributes":{"tandem_inserted":"bob"}},{"insert":"\n"}]}"#
            )
        );
    }

    #[test]
    fn text_inserted_and_deleted_within_the_range_leaves_no_trace() {
        let mut r = Redline::new(&doc(r#"{"ops":[{"insert":"ab\n"}]}"#));
        r.apply("ada", &delta(r#"{"ops":[{"retain":1},{"insert":"XYZ"}]}"#)).unwrap();
        r.apply("bob", &delta(r#"{"ops":[{"delete":3}]}"#)).unwrap(); // "a", "X", "Y"
        assert_eq!(
            json(&r.into_delta()),
            concat!(
                r#"{"ops":[{"insert":"a","attributes":{"tandem_deleted":"bob"}},"#,
                r#"{"insert":"Z","attributes":{"tandem_inserted":"ada"}},{"insert":"b\n"}]}"#
            )
        );
    }

    #[cfg(feature = "random")]
    #[test]
    fn the_visible_text_is_the_document_at_the_last_revision() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let base =
                Document::from_delta(&crate::random::document(&mut rng, 40, crate::random::Shape::RICH)).unwrap();
            let mut now = base.clone();
            let mut r = Redline::new(&base);
            for i in 0..8 {
                let op = crate::random::delta(&mut rng, now.len(), crate::random::Shape::RICH);
                now.apply(&op).unwrap();
                r.apply(if i % 2 == 0 { "a" } else { "b" }, &op).unwrap();
            }
            // Dropping the deleted text and the marks gives the document as it is now.
            let marks = [(INSERTED, Value::Null), (FORMATTED, Value::Null)].into_iter().collect::<Attributes>();
            let visible: Delta = Delta::from_ops(r.into_delta().ops().iter().filter_map(|o| match o {
                Op::Insert { attributes, .. } if attributes.get(DELETED).is_some() => None,
                Op::Insert { attributes, .. } => {
                    Some(crate::cursor::Piece::of(o).to_op_with(Attributes::compose(attributes, &marks, false)))
                }
                _ => unreachable!("inserts only"),
            }));
            assert_eq!(visible, now.to_delta());
        }
    }

    #[test]
    fn an_op_longer_than_the_text_is_refused() {
        let mut r = Redline::new(&doc(r#"{"ops":[{"insert":"ab\n"}]}"#));
        r.apply("ada", &delta(r#"{"ops":[{"delete":2}]}"#)).unwrap();
        let past = delta(r#"{"ops":[{"retain":2},{"insert":"x"}]}"#);
        assert!(matches!(r.apply("ada", &past), Err(Error::DeltaTooLong { base_len: 2, doc_len: 1 })));
    }
}
