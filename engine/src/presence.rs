//! Presence: each client's selection, kept on the right characters as the document changes.

use std::collections::HashMap;

use crate::ClientId;
use crate::delta::Delta;
use crate::error::Error;

/// One selection range; `anchor == head` is a caret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SelectionRange {
    /// Where the selection started.
    pub anchor: usize,
    /// Where it ends (the caret).
    pub head: usize,
}

impl SelectionRange {
    /// A caret at `pos`.
    pub fn caret(pos: usize) -> Self {
        Self { anchor: pos, head: pos }
    }

    /// Moves both ends through `delta`. With `priority`, an insert exactly at an end does
    /// not push it.
    #[must_use]
    pub fn transform(self, delta: &Delta, priority: bool) -> Self {
        Self {
            anchor: delta.transform_position(self.anchor, priority),
            head: delta.transform_position(self.head, priority),
        }
    }
}

/// The selections of every client on one document, at the document's current revision.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    selections: HashMap<ClientId, Vec<SelectionRange>>,
}

impl Presence {
    /// Sets a client's selection (already at the current revision), checking it against
    /// the document length.
    pub fn set(
        &mut self,
        client: ClientId,
        ranges: Vec<SelectionRange>,
        doc_len: usize,
        max_ranges: usize,
    ) -> Result<(), Error> {
        check_ranges(&ranges, doc_len, max_ranges)?;
        self.selections.insert(client, ranges);
        Ok(())
    }

    /// A client's selection.
    pub fn get(&self, client: ClientId) -> Option<&[SelectionRange]> {
        self.selections.get(&client).map(Vec::as_slice)
    }

    /// Forgets a client (it left).
    pub fn remove(&mut self, client: ClientId) -> bool {
        self.selections.remove(&client).is_some()
    }

    /// Every client's selection.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &[SelectionRange])> {
        self.selections.iter().map(|(c, r)| (*c, r.as_slice()))
    }

    /// Number of clients with a selection.
    pub fn len(&self) -> usize {
        self.selections.len()
    }

    /// True when no client has a selection.
    pub fn is_empty(&self) -> bool {
        self.selections.is_empty()
    }

    /// Moves every selection through an applied op. The author's own caret moves past its
    /// insert; everyone else's stays before an insert made exactly at it.
    pub fn transform(&mut self, delta: &Delta, author: ClientId) {
        if delta.is_empty() {
            return;
        }
        for (client, ranges) in &mut self.selections {
            let priority = *client != author;
            for r in ranges.iter_mut() {
                *r = r.transform(delta, priority);
            }
        }
    }
}

/// Checks a selection against a document length and the range limit.
pub(crate) fn check_ranges(ranges: &[SelectionRange], doc_len: usize, max_ranges: usize) -> Result<(), Error> {
    if ranges.len() > max_ranges {
        return Err(Error::TooManyRanges { count: ranges.len(), max: max_ranges });
    }
    for r in ranges {
        for pos in [r.anchor, r.head] {
            if pos > doc_len {
                return Err(Error::SelectionOutOfBounds { pos, len: doc_len });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;

    #[test]
    fn carets_follow_the_text() {
        let mut p = Presence::default();
        let (a, b) = (ClientId(1), ClientId(2));
        p.set(a, vec![SelectionRange::caret(3)], 10, 4).unwrap();
        p.set(b, vec![SelectionRange { anchor: 5, head: 8 }], 10, 4).unwrap();
        // a types "xy" at its caret: a's caret moves past it, b's range shifts.
        p.transform(&Delta::new().retain(3, Attributes::NONE).insert("xy", Attributes::NONE), a);
        assert_eq!(p.get(a), Some(&[SelectionRange::caret(5)][..]));
        assert_eq!(p.get(b), Some(&[SelectionRange { anchor: 7, head: 10 }][..]));
        // b deletes chars 6..8: a's caret is before, unaffected; b's range shrinks.
        p.transform(&Delta::new().retain(6, Attributes::NONE).delete(2), b);
        assert_eq!(p.get(a), Some(&[SelectionRange::caret(5)][..]));
        assert_eq!(p.get(b), Some(&[SelectionRange { anchor: 6, head: 8 }][..]));
        // b inserts exactly at a's caret: a's caret stays before the new text.
        p.transform(&Delta::new().retain(5, Attributes::NONE).insert("!", Attributes::NONE), b);
        assert_eq!(p.get(a), Some(&[SelectionRange::caret(5)][..]));
    }

    #[test]
    fn bad_selections_are_refused() {
        let mut p = Presence::default();
        assert_eq!(
            p.set(ClientId(1), vec![SelectionRange::caret(11)], 10, 4),
            Err(Error::SelectionOutOfBounds { pos: 11, len: 10 })
        );
        assert_eq!(
            p.set(ClientId(1), vec![SelectionRange::caret(1); 5], 10, 4),
            Err(Error::TooManyRanges { count: 5, max: 4 })
        );
        assert!(p.is_empty());
        assert!(!p.remove(ClientId(1)));
    }
}
