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
        self.diff_bounded(other, usize::MAX)
    }

    /// [`Document::diff`] with the text diff's work bounded, for the server: when what
    /// differs, after the text both share at the start and at the end, is over `max_middle`
    /// chars on either side, it is replaced whole (a correct delta, not a minimal one). The
    /// text diff's cost grows with the product of the lengths it compares; this is linear.
    pub fn diff_bounded(&self, other: &Self, max_middle: usize) -> Delta {
        let (a, b) = (self.to_delta(), other.to_delta());
        let (sa, sb) = (diff_string(&a), diff_string(&b));
        let chunks = match middles(&sa, &sb) {
            Some((pa, ea, pb, eb)) if sa[pa..ea].chars().count().max(sb[pb..eb].chars().count()) > max_middle => {
                let whole = [
                    dissimilar::Chunk::Equal(&sa[..pa]),
                    dissimilar::Chunk::Delete(&sa[pa..ea]),
                    dissimilar::Chunk::Insert(&sb[pb..eb]),
                    dissimilar::Chunk::Equal(&sa[ea..]),
                ];
                whole
                    .into_iter()
                    .filter(|c| {
                        !matches!(
                            c,
                            dissimilar::Chunk::Equal("")
                                | dissimilar::Chunk::Delete("")
                                | dissimilar::Chunk::Insert("")
                        )
                    })
                    .collect()
            }
            _ => dissimilar::diff(&sa, &sb),
        };
        let mut out = Delta::new();
        let mut this = Cursor::new(a.ops());
        let mut that = Cursor::new(b.ops());
        for chunk in chunks {
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

/// Where two strings stop sharing their start and their end: byte ranges `pa..ea` of `a` and
/// `pb..eb` of `b` (`None` when they are equal).
fn middles(a: &str, b: &str) -> Option<(usize, usize, usize, usize)> {
    if a == b {
        return None;
    }
    let prefix: usize = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    let suffix: usize =
        ra.chars().rev().zip(rb.chars().rev()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum();
    Some((prefix, a.len() - suffix, prefix, b.len() - suffix))
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

    #[test]
    fn a_bounded_diff_replaces_a_long_middle_whole() {
        let a = doc(
            r#"{"ops":[{"insert":"Start. "},{"insert":"abcdefgh","attributes":{"bold":true}},{"insert":" End.\n"}]}"#,
        );
        let b = doc(r#"{"ops":[{"insert":"Start. axcdefgy End.\n"}]}"#);
        // Unbounded: the letters that differ; bounded at 3: the 7 between "Start. a" and " End."
        assert_eq!(
            serde_json::to_string(&a.diff(&b)).unwrap(),
            r#"{"ops":[{"retain":7},{"retain":1,"attributes":{"bold":null}},{"insert":"x"},{"delete":1},{"retain":5,"attributes":{"bold":null}},{"insert":"y"},{"delete":1}]}"#
        );
        let d = a.diff_bounded(&b, 3);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"ops":[{"retain":7},{"retain":1,"attributes":{"bold":null}},{"insert":"xcdefgy"},{"delete":7}]}"#
        );
        for d in [a.diff(&b), d, a.diff_bounded(&b, 0)] {
            let mut c = a.clone();
            c.apply(&d).unwrap();
            assert_eq!(c, b);
        }
        // Multi-byte chars on the edges, and a diff of equal documents.
        let x = doc(r#"{"ops":[{"insert":"é😀 ab 😀é\n"}]}"#);
        let y = doc(r#"{"ops":[{"insert":"é😀 ba 😀é\n"}]}"#);
        let mut c = x.clone();
        c.apply(&x.diff_bounded(&y, 0)).unwrap();
        assert_eq!(c, y);
        assert!(x.diff_bounded(&x, 0).is_empty());
    }
}
