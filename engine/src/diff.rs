//! Document diff: the delta that turns one document into another (quill-delta's `diff`).
//!
//! Text differences come from `dissimilar` (a port of Google's diff-match-patch, like the
//! `fast-diff` package quill-delta uses); both produce a minimal diff with semantic cleanup,
//! but the two libraries may split equally short diffs differently, so the result can differ
//! from quill-delta's in where an edit is placed, never in what it produces.

use crate::attributes::Attributes;
use crate::cursor::{Body, Cursor};
use crate::delta::Delta;
use crate::document::Document;
use crate::op::{Insert, Op, char_count};

/// Embeds become this char in the strings handed to the text diff, as in quill-delta.
const NULL_CHARACTER: char = '\0';

fn diff_string(doc: &Delta) -> String {
    let mut s = String::new();
    for op in doc.ops() {
        match op {
            Op::Insert { insert: Insert::Text(t), .. } => s.push_str(t.as_str()),
            _ => s.push(NULL_CHARACTER),
        }
    }
    s
}

impl Document {
    /// Returns the delta `d` with `self.apply(d) == other`.
    pub fn diff(&self, other: &Self) -> Delta {
        let (a, b) = (self.to_delta(), other.to_delta());
        let (sa, sb) = (diff_string(&a), diff_string(&b));
        let mut out = Delta::new();
        let mut this = Cursor::new(a.ops());
        let mut that = Cursor::new(b.ops());
        for chunk in dissimilar::diff(&sa, &sb) {
            let (kind, text) = match chunk {
                dissimilar::Chunk::Equal(t) => (0, t),
                dissimilar::Chunk::Delete(t) => (1, t),
                dissimilar::Chunk::Insert(t) => (2, t),
            };
            let mut len = char_count(text);
            while len > 0 {
                let step = match kind {
                    2 => {
                        let n = that.peek_len().min(len);
                        out.push_piece(that.next(n));
                        n
                    }
                    1 => {
                        let n = this.peek_len().min(len);
                        this.next(n);
                        out.push_delete(n);
                        n
                    }
                    _ => {
                        let n = this.peek_len().min(that.peek_len()).min(len);
                        let x = this.next(n);
                        let y = that.next(n);
                        let same = match (x.body, y.body) {
                            (Body::Text(p), Body::Text(q)) => p == q,
                            (Body::Embed(p), Body::Embed(q)) => p == q,
                            _ => false,
                        };
                        if same {
                            out.push_retain(n, Attributes::diff(x.attrs, y.attrs));
                        } else {
                            out.push_piece(y);
                            out.push_delete(n);
                        }
                        n
                    }
                };
                len -= step;
            }
        }
        out.chop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Document {
        Document::from_delta(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn diff_of_text_and_formatting() {
        let a = doc(r#"{"ops":[{"insert":"Hello world"}]}"#);
        let b = doc(r#"{"ops":[{"insert":"Hello ","attributes":{"bold":true}},{"insert":"brave world"}]}"#);
        let d = a.diff(&b);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"ops":[{"retain":6,"attributes":{"bold":true}},{"insert":"brave "}]}"#
        );
        let mut c = a.clone();
        c.apply(&d).unwrap();
        assert_eq!(c, b);
        assert!(a.diff(&a).is_empty());
    }

    #[test]
    fn diff_replaces_a_different_embed() {
        let a = doc(r#"{"ops":[{"insert":{"image":"a"}}]}"#);
        let b = doc(r#"{"ops":[{"insert":{"image":"b"}}]}"#);
        let d = a.diff(&b);
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"ops":[{"insert":{"image":"b"}},{"delete":1}]}"#);
    }
}
