//! One delta operation: insert, retain or delete, in quill-delta's shape.
//!
//! Lengths count Unicode scalar values; an embed counts 1.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::archive::{AsU64, JsonBytes};
use crate::attributes::Attributes;
use crate::value::{Object, Value};

/// Inserted text with its length in chars (Unicode scalar values) kept alongside.
///
/// Short strings (up to 24 bytes, most keystrokes) live inline, off the heap.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text {
    s: CompactString,
    chars: usize,
}

impl Text {
    /// Wraps a string.
    #[inline]
    pub fn new(s: &str) -> Self {
        Self { s: CompactString::from(s), chars: char_count(s) }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// Length in chars.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.chars == 0
    }

    pub(crate) fn push_str(&mut self, other: &str, other_chars: usize) {
        self.s.push_str(other);
        self.chars += other_chars;
    }

    pub(crate) fn from_parts(s: &str, chars: usize) -> Self {
        debug_assert_eq!(char_count(s), chars);
        Self { s: CompactString::from(s), chars }
    }
}

/// Counts chars (Unicode scalar values) quickly.
pub(crate) fn char_count(s: &str) -> usize {
    str_indices::chars::count(s)
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An embed: a non-text item of length 1, such as `{"image": "https://…"}`.
#[derive(Clone)]
pub struct Embed(Arc<(Object, usize)>);

impl Embed {
    /// Wraps an object.
    pub fn new(object: Object) -> Self {
        let bytes = crate::attributes::object_bytes(&object) + 64;
        Self(Arc::new((object, bytes)))
    }

    /// The embed's object.
    pub fn as_object(&self) -> &Object {
        &self.0.0
    }

    /// The bytes the embed counts for (as [`Attributes::bytes`] counts, plus 64), counted
    /// once when it is made.
    pub fn bytes(&self) -> usize {
        self.0.1
    }
}

impl PartialEq for Embed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.0 == other.0.0
    }
}

impl fmt::Debug for Embed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.0.iter()).finish()
    }
}

/// What an insert puts into the document.
#[derive(Clone, PartialEq, Debug, rkyv::Archive, rkyv::Serialize)]
pub enum Insert {
    /// A run of text.
    Text(Text),
    /// One embed.
    Embed(#[rkyv(with = JsonBytes)] Embed),
}

impl Insert {
    /// Length in chars (1 for an embed).
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.chars(),
            Self::Embed(_) => 1,
        }
    }

    /// True for empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One operation of a [`crate::Delta`].
#[derive(Clone, PartialEq, Debug, rkyv::Archive, rkyv::Serialize)]
pub enum Op {
    /// Insert text or an embed, with formatting.
    Insert {
        /// What to insert.
        insert: Insert,
        /// Its formatting.
        #[rkyv(with = JsonBytes)]
        attributes: Attributes,
    },
    /// Keep `retain` chars, applying `attributes` to them (a `null` value removes a key).
    Retain {
        /// How many chars to keep.
        #[rkyv(with = AsU64)]
        retain: usize,
        /// Formatting to apply.
        #[rkyv(with = JsonBytes)]
        attributes: Attributes,
    },
    /// Delete `delete` chars.
    Delete {
        /// How many chars to delete.
        #[rkyv(with = AsU64)]
        delete: usize,
    },
}

/// The three kinds of [`Op`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpKind {
    /// [`Op::Insert`].
    Insert,
    /// [`Op::Retain`].
    Retain,
    /// [`Op::Delete`].
    Delete,
}

impl Op {
    /// An insert of text.
    #[inline]
    pub fn insert(text: &str, attributes: Attributes) -> Self {
        Self::Insert { insert: Insert::Text(Text::new(text)), attributes }
    }

    /// A retain.
    #[inline]
    pub fn retain(n: usize, attributes: Attributes) -> Self {
        Self::Retain { retain: n, attributes }
    }

    /// A delete.
    #[inline]
    pub fn delete(n: usize) -> Self {
        Self::Delete { delete: n }
    }

    /// Length in chars: inserted, retained or deleted.
    pub fn len(&self) -> usize {
        match self {
            Self::Insert { insert, .. } => insert.len(),
            Self::Retain { retain, .. } => *retain,
            Self::Delete { delete } => *delete,
        }
    }

    /// True for a zero-length op (never found in a canonical delta).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which kind of op this is.
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Insert { .. } => OpKind::Insert,
            Self::Retain { .. } => OpKind::Retain,
            Self::Delete { .. } => OpKind::Delete,
        }
    }

    /// The op's attributes ([`Attributes::NONE`] for a delete).
    pub fn attributes(&self) -> &Attributes {
        match self {
            Self::Insert { attributes, .. } | Self::Retain { attributes, .. } => attributes,
            Self::Delete { .. } => &Attributes::NONE,
        }
    }

    /// Bytes of attributes and embed this op carries ([`Attributes::bytes`], [`Embed::bytes`]).
    pub fn format_bytes(&self) -> usize {
        match self {
            Self::Insert { insert: Insert::Embed(e), attributes } => e.bytes() + attributes.bytes(),
            Self::Insert { attributes, .. } | Self::Retain { attributes, .. } => attributes.bytes(),
            Self::Delete { .. } => 0,
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        let own = std::mem::size_of::<Self>();
        match self {
            Self::Insert { insert: Insert::Text(t), attributes } => {
                own + if t.as_str().len() > 24 { t.as_str().len() } else { 0 } + attributes.approx_bytes()
            }
            Self::Insert { insert: Insert::Embed(e), attributes } => own + e.bytes() + attributes.approx_bytes(),
            Self::Retain { attributes, .. } => own + attributes.approx_bytes(),
            Self::Delete { .. } => own,
        }
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let attrs = self.attributes();
        let mut map = s.serialize_map(Some(1 + usize::from(!attrs.is_empty())))?;
        match self {
            Self::Insert { insert: Insert::Text(t), .. } => map.serialize_entry("insert", t.as_str())?,
            Self::Insert { insert: Insert::Embed(e), .. } => map.serialize_entry("insert", e.as_object())?,
            Self::Retain { retain, .. } => map.serialize_entry("retain", retain)?,
            Self::Delete { delete } => map.serialize_entry("delete", delete)?,
        }
        if !attrs.is_empty() {
            map.serialize_entry("attributes", attrs)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OpVisitor)
    }
}

struct OpVisitor;

/// Reads a JSON number that must be a non-negative integer length.
fn length_from<E: de::Error>(key: &str, v: &Value) -> Result<usize, E> {
    match v {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= u32::MAX as f64 => Ok(*n as usize),
        Value::Object(_) if key == "retain" => {
            Err(E::custom("retain of an embed (an object) is not supported; retain takes a length"))
        }
        _ => Err(E::custom(format_args!("{key} must be an integer from 0 to 4294967295"))),
    }
}

impl<'de> Visitor<'de> for OpVisitor {
    type Value = Op;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an op: {"insert": …}, {"retain": n} or {"delete": n}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Op, A::Error> {
        let mut action: Option<(&'static str, Value)> = None;
        let mut attributes: Option<Attributes> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let name = match &*key {
                "insert" => "insert",
                "retain" => "retain",
                "delete" => "delete",
                "attributes" => {
                    if attributes.is_some() {
                        return Err(de::Error::duplicate_field("attributes"));
                    }
                    attributes = Some(map.next_value()?);
                    continue;
                }
                other => return Err(de::Error::unknown_field(other, &["insert", "retain", "delete", "attributes"])),
            };
            if action.is_some() {
                return Err(de::Error::custom("an op has exactly one of insert, retain, delete"));
            }
            action = Some((name, map.next_value()?));
        }
        let attributes = attributes.unwrap_or_default();
        match action {
            Some(("insert", Value::String(s))) => Ok(Op::insert(&s, attributes)),
            Some(("insert", Value::Object(o))) => Ok(Op::Insert { insert: Insert::Embed(Embed::new(o)), attributes }),
            Some(("insert", _)) => Err(de::Error::custom("insert must be a string or an embed object")),
            Some(("retain", v)) => Ok(Op::Retain { retain: length_from("retain", &v)?, attributes }),
            Some((_, v)) => {
                if !attributes.is_empty() {
                    return Err(de::Error::custom("delete takes no attributes"));
                }
                Ok(Op::Delete { delete: length_from("delete", &v)? })
            }
            None => Err(de::Error::custom("an op needs one of insert, retain, delete")),
        }
    }
}
