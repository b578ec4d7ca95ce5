//! [`Delta`]: a rich-text change (or a whole document) as a list of ops, in quill-delta's
//! canonical form.
//!
//! Canonical form: no zero-length ops; adjacent ops of the same kind with equal attributes are
//! merged (text inserts concatenate); at one position an insert comes before a delete. Deltas
//! from JSON, from archives and from the algorithms are also chopped (no trailing plain
//! retain); the builder methods leave that to [`Delta::chop`], as quill-delta does.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::archive::{attributes_from_json, embed_from_json};
use crate::attributes::Attributes;
use crate::cursor::{Body, Piece};
use crate::error::Error;
use crate::limits::Limits;
use crate::op::{ArchivedInsert, ArchivedOp, Embed, Insert, Op, Text, char_count};

/// Ops held inline before spilling to the heap: a keystroke is `[retain, insert]` or
/// `[retain, delete]`, a replace `[retain, insert, delete]`.
const INLINE_OPS: usize = 3;

/// A rich-text delta.
#[derive(Clone, PartialEq, Default, rkyv::Archive, rkyv::Serialize)]
pub struct Delta {
    ops: SmallVec<[Op; INLINE_OPS]>,
}

/// Where [`Delta::push`] puts a new op.
enum Placement {
    /// Add the delete's length to the last op.
    MergeDelete,
    /// Append the text to op `i`.
    MergeText(usize),
    /// Add the retain's length to op `i`.
    MergeRetain(usize),
    /// Insert the op at index `i`.
    At(usize),
}

impl Delta {
    /// An empty delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a canonical delta from ops (merging, dropping empty ops, chopping).
    pub fn from_ops(ops: impl IntoIterator<Item = Op>) -> Self {
        let mut d = Self::new();
        for op in ops {
            d.push(op);
        }
        d.chop()
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Consumes the delta, returning its ops.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops.into_vec()
    }

    /// True when the delta has no ops (changes nothing).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends an insert of text (builder).
    #[must_use]
    #[inline]
    pub fn insert(mut self, text: &str, attributes: Attributes) -> Self {
        self.push(Op::insert(text, attributes));
        self
    }

    /// Appends an insert of an embed (builder).
    #[must_use]
    pub fn insert_embed(mut self, embed: Embed, attributes: Attributes) -> Self {
        self.push(Op::Insert { insert: Insert::Embed(embed), attributes });
        self
    }

    /// Appends a retain (builder).
    #[must_use]
    #[inline]
    pub fn retain(mut self, n: usize, attributes: Attributes) -> Self {
        self.push(Op::retain(n, attributes));
        self
    }

    /// Appends a delete (builder).
    #[must_use]
    #[inline]
    pub fn delete(mut self, n: usize) -> Self {
        self.push(Op::delete(n));
        self
    }

    /// Drops a trailing plain retain (quill-delta's `chop`).
    #[must_use]
    #[inline]
    pub fn chop(mut self) -> Self {
        self.chop_in_place();
        self
    }

    #[inline]
    pub(crate) fn chop_in_place(&mut self) {
        if matches!(self.ops.last(), Some(Op::Retain { attributes, .. }) if attributes.is_empty()) {
            self.ops.pop();
        }
    }

    /// Appends an op with quill-delta's `push` rules: zero-length ops are dropped, adjacent
    /// ops merge, an insert goes before a delete at the same position.
    ///
    /// One deliberate difference: `null` attribute values on an insert are dropped. On a
    /// retain `null` removes a format; on inserted text it would remove a format the text
    /// does not have, and quill-delta, which keeps it, then cannot invert such a document.
    #[inline]
    pub fn push(&mut self, mut op: Op) {
        if op.is_empty() {
            return;
        }
        if let Op::Insert { attributes, .. } = &mut op
            && attributes.has_null()
        {
            *attributes = attributes.without_nulls();
        }
        let placement = self.place(&Piece::of(&op));
        match placement {
            Placement::At(i) if i == self.ops.len() => self.ops.push(op),
            Placement::At(i) => self.ops.insert(i, op),
            _ => self.merge(placement, &Piece::of(&op)),
        }
    }

    /// [`Delta::push`] for a borrowed piece: copies only what is not merged.
    pub(crate) fn push_piece(&mut self, piece: Piece<'_>) {
        self.push_piece_with(piece, piece.attrs);
    }

    /// [`Delta::push_piece`] with other attributes.
    pub(crate) fn push_piece_with(&mut self, piece: Piece<'_>, attrs: &Attributes) {
        if piece.len == 0 {
            return;
        }
        let stripped;
        let attrs = if matches!(piece.body, Body::Text(_) | Body::Embed(_)) && attrs.has_null() {
            stripped = attrs.without_nulls();
            &stripped
        } else {
            attrs
        };
        let piece = Piece { attrs, ..piece };
        match self.place(&piece) {
            Placement::At(i) => self.ops.insert(i, piece.to_op()),
            placement => self.merge(placement, &piece),
        }
    }

    /// Appends a retain in place (`retain` for algorithm outputs).
    pub(crate) fn push_retain(&mut self, n: usize, attributes: Attributes) {
        self.push(Op::Retain { retain: n, attributes });
    }

    /// Appends a delete in place.
    pub(crate) fn push_delete(&mut self, n: usize) {
        self.push(Op::Delete { delete: n });
    }

    #[inline]
    fn place(&self, new: &Piece<'_>) -> Placement {
        let mut index = self.ops.len();
        let Some(mut last) = self.ops.last() else {
            return Placement::At(0);
        };
        if let Op::Delete { .. } = last {
            match new.body {
                Body::Delete => return Placement::MergeDelete,
                Body::Text(_) | Body::Embed(_) => {
                    index -= 1;
                    match index.checked_sub(1).map(|i| &self.ops[i]) {
                        None => return Placement::At(0),
                        Some(op) => last = op,
                    }
                }
                Body::Retain => {}
            }
        }
        if last.attributes() == new.attrs {
            match (last, new.body) {
                (Op::Insert { insert: Insert::Text(_), .. }, Body::Text(_)) => return Placement::MergeText(index - 1),
                (Op::Retain { .. }, Body::Retain) => return Placement::MergeRetain(index - 1),
                _ => {}
            }
        }
        Placement::At(index)
    }

    fn merge(&mut self, placement: Placement, new: &Piece<'_>) {
        match (placement, new.body) {
            (Placement::MergeDelete, _) => match self.ops.last_mut() {
                Some(Op::Delete { delete }) => *delete += new.len,
                _ => unreachable!("MergeDelete without a trailing delete"),
            },
            (Placement::MergeText(i), Body::Text(s)) => match &mut self.ops[i] {
                Op::Insert { insert: Insert::Text(t), .. } => t.push_str(s, new.len),
                _ => unreachable!("MergeText onto a non-text op"),
            },
            (Placement::MergeRetain(i), _) => match &mut self.ops[i] {
                Op::Retain { retain, .. } => *retain += new.len,
                _ => unreachable!("MergeRetain onto a non-retain op"),
            },
            _ => unreachable!("merge called with a placement that does not merge"),
        }
    }

    /// True when the ops are in canonical form: no zero-length op, no two adjacent ops that
    /// [`Delta::push`] would merge, no insert right after a delete. (A trailing plain retain
    /// is allowed; [`Delta::chop`] removes it.)
    pub fn is_canonical(&self) -> bool {
        self.ops.iter().all(|op| !op.is_empty())
            && self.ops.windows(2).all(|w| match (&w[0], &w[1]) {
                (Op::Delete { .. }, Op::Delete { .. } | Op::Insert { .. }) => false,
                (
                    Op::Insert { insert: Insert::Text(_), attributes: a },
                    Op::Insert { insert: Insert::Text(_), attributes: b },
                )
                | (Op::Retain { attributes: a, .. }, Op::Retain { attributes: b, .. }) => a != b,
                _ => true,
            })
    }

    /// Chars this delta retains or deletes: the shortest document it applies to.
    pub fn base_len(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Retain { retain: n, .. } | Op::Delete { delete: n } => *n,
                Op::Insert { .. } => 0,
            })
            .sum()
    }

    /// Chars this delta inserts.
    pub fn insert_len(&self) -> usize {
        self.ops.iter().map(|op| if let Op::Insert { insert, .. } = op { insert.len() } else { 0 }).sum()
    }

    /// Chars this delta deletes.
    pub fn delete_len(&self) -> usize {
        self.ops.iter().map(|op| if let Op::Delete { delete } = op { *delete } else { 0 }).sum()
    }

    /// The sum of all op lengths (quill-delta's `length()`); a document's length in chars.
    pub fn len(&self) -> usize {
        self.ops.iter().map(Op::len).sum()
    }

    /// True when every op is an insert: the delta is a document.
    pub fn is_document(&self) -> bool {
        self.ops.iter().all(|op| matches!(op, Op::Insert { .. }))
    }

    /// The document's text, with each embed as U+FFFC (a document delta only).
    pub fn document_text(&self) -> Result<String, Error> {
        let mut s = String::new();
        for op in &self.ops {
            match op {
                Op::Insert { insert: Insert::Text(t), .. } => s.push_str(t.as_str()),
                Op::Insert { insert: Insert::Embed(_), .. } => s.push(crate::document::EMBED_CHAR),
                Op::Retain { .. } => return Err(Error::NotADocument { found: "retain" }),
                Op::Delete { .. } => return Err(Error::NotADocument { found: "delete" }),
            }
        }
        Ok(s)
    }

    /// Bytes of attributes and embeds in this delta ([`Op::format_bytes`] summed).
    pub fn format_bytes(&self) -> usize {
        self.ops.iter().map(Op::format_bytes).sum()
    }

    /// A 64-bit fingerprint of the delta, equal for equal deltas within one process: the
    /// sequencer keeps one per client to tell an exact resubmission from a different op
    /// under a reused `client_seq`.
    pub fn fingerprint(&self) -> u64 {
        /// Feeds JSON bytes to a hasher without building a string.
        struct Feed<'a, H: Hasher>(&'a mut H);
        impl<H: Hasher> std::io::Write for Feed<'_, H> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.write(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        fn json(h: &mut impl Hasher, v: &impl Serialize) {
            serde_json::to_writer(Feed(h), v).expect("values always serialize");
        }
        fn attrs(h: &mut impl Hasher, a: &Attributes) {
            if a.is_empty() {
                h.write_u8(0);
            } else {
                json(h, a);
            }
        }
        let mut h = foldhash::fast::FixedState::with_seed(0x7a6e_6465_6d5f_6670).build_hasher();
        self.ops.len().hash(&mut h);
        for op in &self.ops {
            match op {
                Op::Insert { insert: Insert::Text(t), attributes } => {
                    h.write_u8(0);
                    t.as_str().hash(&mut h);
                    attrs(&mut h, attributes);
                }
                Op::Insert { insert: Insert::Embed(e), attributes } => {
                    h.write_u8(1);
                    json(&mut h, e.as_object());
                    attrs(&mut h, attributes);
                }
                Op::Retain { retain, attributes } => {
                    h.write_u8(2);
                    retain.hash(&mut h);
                    attrs(&mut h, attributes);
                }
                Op::Delete { delete } => {
                    h.write_u8(3);
                    delete.hash(&mut h);
                }
            }
        }
        h.finish()
    }

    /// A rough count of bytes held, for memory accounting of op history.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.ops.iter().map(Op::approx_bytes).sum::<usize>()
    }

    /// Encodes the delta as an rkyv archive (the binary protocol's and op log's form).
    pub fn to_archive(&self) -> rkyv::util::AlignedVec {
        // Serializing owned data into a growable buffer cannot fail.
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("archiving a delta into memory cannot fail")
    }

    /// Validates an rkyv archive of a delta and returns it, read in place (zero-copy).
    ///
    /// Validation checks structure only; [`Delta::from_archived`] checks the rest.
    pub fn access(bytes: &[u8]) -> Result<&ArchivedDelta, Error> {
        rkyv::access::<ArchivedDelta, rkyv::rancor::BoxedError>(bytes)
            .map_err(|e| Error::InvalidDelta(format!("archive: {e}")))
    }

    /// Validates an rkyv archive of a delta in place and converts it, canonicalized.
    ///
    /// `bytes` must be aligned to 16 (read frames into an `AlignedVec`); misaligned input is
    /// rejected, not read.
    pub fn from_archive(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_archived(Self::access(bytes)?)
    }

    /// Converts a validated archived delta, checking what the archive format cannot (JSON
    /// in attributes and embeds, length ranges) and canonicalizing.
    pub fn from_archived(archived: &ArchivedDelta) -> Result<Self, Error> {
        let mut d = Self::new();
        let mut count = DecodeCount::default();
        count.ops(archived.ops.len())?;
        for op in archived.ops.iter() {
            let op = match op {
                ArchivedOp::Insert { insert: ArchivedInsert::Text(s), attributes } => Op::Insert {
                    insert: Insert::Text(Text::from_parts(s.as_str(), char_count(s.as_str()))),
                    attributes: attributes_from_json(attributes.as_slice())?,
                },
                ArchivedOp::Insert { insert: ArchivedInsert::Embed(e), attributes } => Op::Insert {
                    insert: Insert::Embed(embed_from_json(e.as_slice())?),
                    attributes: attributes_from_json(attributes.as_slice())?,
                },
                ArchivedOp::Retain { retain, attributes } => Op::Retain {
                    retain: archived_len(retain.to_native())?,
                    attributes: attributes_from_json(attributes.as_slice())?,
                },
                ArchivedOp::Delete { delete } => Op::Delete { delete: archived_len(delete.to_native())? },
            };
            count.op(&op)?;
            d.push(op);
        }
        Ok(d.chop())
    }
}

impl ArchivedDelta {
    /// The archived ops, read in place.
    pub fn ops(&self) -> &[ArchivedOp] {
        self.ops.as_slice()
    }
}

fn archived_len(n: u64) -> Result<usize, Error> {
    if n > u64::from(u32::MAX) {
        return Err(Error::InvalidDelta(format!("length {n} is over 4294967295")));
    }
    usize::try_from(n).map_err(|_| Error::InvalidDelta(format!("length {n} does not fit this platform")))
}

impl fmt::Debug for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ops.iter()).finish()
    }
}

impl fmt::Display for Delta {
    /// The delta's JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Delta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Delta", 1)?;
        st.serialize_field("ops", &self.ops[..])?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("Delta", &["ops"], DeltaVisitor)
    }
}

struct DeltaVisitor;

impl<'de> Visitor<'de> for DeltaVisitor {
    type Value = Delta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a delta: {"ops": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Delta, A::Error> {
        let mut ops: Option<Delta> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "ops" {
                return Err(de::Error::unknown_field(&key, &["ops"]));
            }
            if ops.is_some() {
                return Err(de::Error::duplicate_field("ops"));
            }
            ops = Some(map.next_value_seed(OpsSeed)?);
        }
        let ops = ops.ok_or_else(|| de::Error::missing_field("ops"))?;
        Ok(ops.chop())
    }
}

/// The `ops` array, pushed into a delta one op at a time as it is parsed: an over-limit
/// delta is refused at the op that crosses the limit, never built whole first.
struct OpsSeed;

impl<'de> de::DeserializeSeed<'de> for OpsSeed {
    type Value = Delta;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Delta, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OpsSeed {
    type Value = Delta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of ops")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Delta, A::Error> {
        let mut delta = Delta::new();
        let mut count = DecodeCount::default();
        if let Some(n) = seq.size_hint() {
            count.ops(n).map_err(de::Error::custom)?;
        }
        let mut n = 0;
        while let Some(op) = seq.next_element::<Op>()? {
            n += 1;
            count.ops(n).map_err(de::Error::custom)?;
            count.op(&op).map_err(de::Error::custom)?;
            delta.push(op);
        }
        Ok(delta)
    }
}

/// Bounds checked while a delta is decoded (from JSON or an archive), so that an over-limit
/// delta is refused before it is built and costs at most a small multiple of its message's
/// size: ops as sent (before merging), chars inserted, bytes of attributes and embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most ops, as sent.
    pub max_ops: usize,
    /// Most chars inserted.
    pub max_insert_chars: usize,
    /// Most bytes of attributes and embeds ([`Delta::format_bytes`]).
    pub max_format_bytes: usize,
}

impl DecodeLimits {
    /// No bounds (the default outside [`DecodeLimits::scope`]).
    pub const NONE: Self = Self { max_ops: usize::MAX, max_insert_chars: usize::MAX, max_format_bytes: usize::MAX };

    /// The bounds a document's [`Limits`] put on one op.
    pub fn of(limits: &Limits) -> Self {
        Self {
            max_ops: limits.max_delta_ops,
            max_insert_chars: limits.max_insert_chars,
            max_format_bytes: limits.max_op_format_bytes,
        }
    }

    /// Runs `f` (which decodes deltas on this thread) under these bounds. Returns what `f`
    /// returned and, when a delta was refused for a bound, the engine's error saying which
    /// (`f`'s own error then holds the same text, through the decoder's error type).
    pub fn scope<T>(self, f: impl FnOnce() -> T) -> (T, Option<Error>) {
        let before = DECODE_LIMITS.replace(self);
        OVER_LIMIT.with(|e| e.borrow_mut().take());
        let out = f();
        DECODE_LIMITS.set(before);
        (out, OVER_LIMIT.with(|e| e.borrow_mut().take()))
    }
}

thread_local! {
    static DECODE_LIMITS: Cell<DecodeLimits> = const { Cell::new(DecodeLimits::NONE) };
    static OVER_LIMIT: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// What one delta being decoded has used of its [`DecodeLimits`].
#[derive(Default)]
struct DecodeCount {
    inserted: usize,
    format_bytes: usize,
}

impl DecodeCount {
    fn over(what: &'static str, len: usize, max: usize) -> Error {
        let e = Error::OpTooLarge { what, len, max };
        OVER_LIMIT.with(|o| *o.borrow_mut() = Some(e.clone()));
        e
    }

    fn ops(&mut self, n: usize) -> Result<(), Error> {
        let max = DECODE_LIMITS.get().max_ops;
        if n > max { Err(Self::over("ops", n, max)) } else { Ok(()) }
    }

    fn op(&mut self, op: &Op) -> Result<(), Error> {
        let limits = DECODE_LIMITS.get();
        if let Op::Insert { insert, .. } = op {
            self.inserted += insert.len();
            if self.inserted > limits.max_insert_chars {
                return Err(Self::over("inserted chars", self.inserted, limits.max_insert_chars));
            }
        }
        self.format_bytes += op.format_bytes();
        if self.format_bytes > limits.max_format_bytes {
            return Err(Self::over("bytes of attributes and embeds", self.format_bytes, limits.max_format_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn bold() -> Attributes {
        [("bold", Value::Bool(true))].into_iter().collect()
    }

    fn json(d: &Delta) -> String {
        serde_json::to_string(d).unwrap()
    }

    #[test]
    fn push_merges_like_quill() {
        let d = Delta::new().insert("a", Attributes::NONE).insert("b", Attributes::NONE).insert("c", bold());
        assert_eq!(json(&d), r#"{"ops":[{"insert":"ab"},{"insert":"c","attributes":{"bold":true}}]}"#);
        let d = Delta::new().retain(1, Attributes::NONE).retain(2, Attributes::NONE).delete(1).delete(2);
        assert_eq!(json(&d), r#"{"ops":[{"retain":3},{"delete":3}]}"#);
        // Insert goes before a delete, and merges with the insert before that.
        let d = Delta::new().insert("a", Attributes::NONE).delete(1).insert("b", Attributes::NONE);
        assert_eq!(json(&d), r#"{"ops":[{"insert":"ab"},{"delete":1}]}"#);
        let d = Delta::new().delete(1).insert("b", Attributes::NONE);
        assert_eq!(json(&d), r#"{"ops":[{"insert":"b"},{"delete":1}]}"#);
        let d = Delta::new().retain(1, Attributes::NONE).delete(1).insert("b", bold());
        assert_eq!(json(&d), r#"{"ops":[{"retain":1},{"insert":"b","attributes":{"bold":true}},{"delete":1}]}"#);
        // Zero-length ops vanish.
        let d = Delta::new().insert("", bold()).retain(0, Attributes::NONE).delete(0);
        assert!(d.is_empty());
    }

    #[test]
    fn nulls_on_inserts_are_dropped() {
        let with_null: Attributes = [("bold", Value::Null), ("italic", Value::Bool(true))].into_iter().collect();
        let d = Delta::new().insert("a", with_null.clone()).retain(1, with_null);
        assert_eq!(
            json(&d),
            r#"{"ops":[{"insert":"a","attributes":{"italic":true}},{"retain":1,"attributes":{"bold":null,"italic":true}}]}"#
        );
        let d: Delta = serde_json::from_str(r#"{"ops":[{"insert":"a","attributes":{"bold":null}}]}"#).unwrap();
        assert_eq!(json(&d), r#"{"ops":[{"insert":"a"}]}"#);
    }

    #[test]
    fn embeds_never_merge() {
        let e = Embed::new([("image".to_owned(), Value::from("x.png"))].into_iter().collect());
        let d = Delta::new().insert_embed(e.clone(), Attributes::NONE).insert_embed(e, Attributes::NONE);
        assert_eq!(d.ops().len(), 2);
        assert_eq!(d.len(), 2);
        assert_eq!(json(&d), r#"{"ops":[{"insert":{"image":"x.png"}},{"insert":{"image":"x.png"}}]}"#);
    }

    #[test]
    fn json_round_trip_in_quills_shape() {
        let src = r#"{"ops":[{"insert":"a","attributes":{"bold":true}},{"retain":3},{"delete":2}]}"#;
        let d: Delta = serde_json::from_str(src).unwrap();
        assert_eq!(json(&d), src);
    }

    #[test]
    fn json_input_is_canonicalized() {
        let d: Delta = serde_json::from_str(
            r#"{"ops":[{"retain":0},{"insert":"a"},{"insert":"b","attributes":{}},{"delete":1},{"insert":"c"},{"retain":5}]}"#,
        )
        .unwrap();
        assert_eq!(json(&d), r#"{"ops":[{"insert":"abc"},{"delete":1}]}"#);
    }

    #[test]
    fn json_errors_are_clear() {
        let err = |s: &str| serde_json::from_str::<Delta>(s).unwrap_err().to_string();
        assert!(err(r#"{"ops":[{"retain":-1}]}"#).contains("retain must be an integer"));
        assert!(err(r#"{"ops":[{"retain":1.5}]}"#).contains("retain must be an integer"));
        assert!(err(r#"{"ops":[{"retain":{"image":1}}]}"#).contains("retain of an embed"));
        assert!(err(r#"{"ops":[{"insert":"a","delete":1}]}"#).contains("exactly one"));
        assert!(err(r#"{"ops":[{}]}"#).contains("needs one of"));
        assert!(err(r#"{"ops":[{"insert":5}]}"#).contains("string or an embed"));
        assert!(err(r#"{"ops":[{"delete":1,"attributes":{"b":1}}]}"#).contains("no attributes"));
        assert!(err(r#"{"ops":[{"insert":"a","bogus":1}]}"#).contains("unknown field"));
        assert!(err(r#"{"opz":[]}"#).contains("unknown field"));
        assert!(err(r#"{"ops":[{"insert":"a","attributes":[1]}]}"#).contains("attributes must be an object"));
    }

    #[test]
    fn astral_chars_count_once() {
        let d = Delta::new().insert("😀a", Attributes::NONE);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn archive_round_trip() {
        let e = Embed::new([("image".to_owned(), Value::from("x.png"))].into_iter().collect());
        let d = Delta::new()
            .retain(3, bold())
            .insert("héllo 😀 a longer text that does not fit inline", bold())
            .insert_embed(e, Attributes::NONE)
            .delete(4);
        let bytes = d.to_archive();
        assert_eq!(Delta::from_archive(&bytes).unwrap(), d);
    }

    #[test]
    fn garbage_archives_are_refused() {
        assert!(Delta::from_archive(&[]).is_err());
        let mut bytes = Delta::new().insert("hello world, quite long", bold()).to_archive();
        let n = bytes.len();
        bytes[n - 4] = 0xff;
        bytes[n - 3] = 0xff;
        assert!(Delta::from_archive(&bytes).is_err());
    }

    #[test]
    fn canonical_form_is_checked() {
        assert!(
            Delta::new()
                .insert("a", bold())
                .insert("b", Attributes::NONE)
                .delete(1)
                .retain(2, Attributes::NONE)
                .is_canonical()
        );
        let raw = |ops: Vec<Op>| Delta { ops: ops.into_iter().collect() };
        assert!(!raw(vec![Op::delete(1), Op::insert("a", Attributes::NONE)]).is_canonical());
        assert!(!raw(vec![Op::insert("a", Attributes::NONE), Op::insert("b", Attributes::NONE)]).is_canonical());
        assert!(!raw(vec![Op::retain(0, Attributes::NONE)]).is_canonical());
        assert!(!raw(vec![Op::delete(1), Op::delete(1)]).is_canonical());
    }

    #[test]
    fn lengths() {
        let d = Delta::new().retain(2, Attributes::NONE).insert("abc", Attributes::NONE).delete(4);
        assert_eq!((d.base_len(), d.insert_len(), d.delete_len(), d.len()), (6, 3, 4, 9));
        assert!(!d.is_document());
        assert!(Delta::new().insert("x", Attributes::NONE).is_document());
    }
}
