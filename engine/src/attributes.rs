//! Attribute maps and their algebra, exactly as quill-delta 5's `AttributeMap`.
//!
//! An empty map and an absent map are the same thing here (quill-delta never keeps an empty
//! `attributes` object on an op). Maps are shared behind an `Arc`: ops are split and copied a
//! lot during compose and transform, and a clone must not copy the map.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::{Object, Value};

/// The formatting on an insert or retain: a possibly empty, cheaply cloned JSON object.
#[derive(Clone, Default)]
pub struct Attributes(Option<Arc<Shared>>);

/// A map with its size counted once, when it is made: documents count formatting bytes per
/// run, and a run's map must not be walked again for that.
#[derive(PartialEq)]
struct Shared {
    map: Object,
    bytes: usize,
}

impl std::ops::Deref for Shared {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.map
    }
}

impl Attributes {
    /// No attributes.
    pub const NONE: Self = Self(None);

    /// Wraps a map; an empty map becomes [`Attributes::NONE`].
    pub fn from_object(map: Object) -> Self {
        if map.is_empty() {
            Self(None)
        } else {
            let bytes = object_bytes(&map);
            Self(Some(Arc::new(Shared { map, bytes })))
        }
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// One attribute's value; `None` when absent (JavaScript's `undefined`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.as_ref().and_then(|m| m.get(key))
    }

    /// The attributes as an object, if any.
    pub fn as_object(&self) -> Option<&Object> {
        self.0.as_deref().map(|m| &m.map)
    }

    /// Iterates over `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    /// True when any value is `null` (a removal marker).
    pub fn has_null(&self) -> bool {
        self.iter().any(|(_, v)| v.is_null())
    }

    /// The same attributes without `null` values.
    pub fn without_nulls(&self) -> Self {
        if !self.has_null() {
            return self.clone();
        }
        Self::from_object(self.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// `AttributeMap.compose(a, b, keepNull)`: `b` applied on top of `a`.
    ///
    /// Keys of `b` win; a `null` in `b` removes the key (and is itself dropped unless
    /// `keep_null`, which compose uses when `a` belongs to a retain).
    pub fn compose(a: &Self, b: &Self, keep_null: bool) -> Self {
        let Some(bm) = b.as_object() else {
            // attributes = {}; then every defined key of a is copied over.
            return a.clone();
        };
        if a.is_empty() && (keep_null || !b.has_null()) {
            return b.clone();
        }
        let mut out: Object = if keep_null {
            bm.clone()
        } else {
            bm.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (k, v) in a.iter() {
            if !bm.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        Self::from_object(out)
    }

    /// `AttributeMap.diff(a, b)`: the retain attributes that turn `a` into `b`.
    pub fn diff(a: &Self, b: &Self) -> Self {
        let mut out = Object::new();
        for (k, av) in a.iter() {
            if b.get(k) != Some(av) {
                out.insert(k.clone(), b.get(k).cloned().unwrap_or(Value::Null));
            }
        }
        for (k, bv) in b.iter() {
            if a.get(k).is_none() {
                out.insert(k.clone(), bv.clone());
            }
        }
        Self::from_object(out)
    }

    /// `AttributeMap.invert(attr, base)`: the retain attributes that undo `attr` on `base`.
    ///
    /// quill-delta compares with `===` here, so object- and array-valued attributes are
    /// always restored explicitly; see [`Value::strict_eq`].
    pub fn invert(attr: &Self, base: &Self) -> Self {
        let mut out = Object::new();
        for (k, bv) in base.iter() {
            let av = attr.get(k);
            if av.is_some() && !Value::strict_eq(Some(bv), av) {
                out.insert(k.clone(), bv.clone());
            }
        }
        for (k, _) in attr.iter() {
            if base.get(k).is_none() {
                out.insert(k.clone(), Value::Null);
            }
        }
        Self::from_object(out)
    }

    /// `AttributeMap.transform(a, b, priority)`: `b`'s formatting after `a`'s.
    ///
    /// Without priority `b` overwrites `a`; with priority `a` wins every key both set.
    pub fn transform(a: &Self, b: &Self, priority: bool) -> Self {
        if a.is_empty() || b.is_empty() || !priority {
            return b.clone();
        }
        let out: Object = b.iter().filter(|(k, _)| a.get(k).is_none()).map(|(k, v)| (k.clone(), v.clone())).collect();
        Self::from_object(out)
    }

    /// The bytes these attributes count for: each key and value (strings by their UTF-8
    /// length, containers by their elements plus 24 or 48 bytes each) plus 48 bytes per key.
    /// Counted once, when the map is made.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.bytes)
    }

    /// A rough count of heap bytes, for memory accounting.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.bytes()
    }
}

/// The bytes an object counts for (see [`Attributes::bytes`]).
pub(crate) fn object_bytes(o: &Object) -> usize {
    o.iter().map(|(k, v)| k.len() + approx_value_bytes(v) + 48).sum()
}

fn approx_value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|v| 24 + approx_value_bytes(v)).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| 48 + k.len() + approx_value_bytes(v)).sum(),
        _ => 0,
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("{}"),
            Some(m) => f.debug_map().entries(m.map.iter()).finish(),
        }
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_object(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => Object::new().serialize(s),
            Some(m) => m.map.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Self::NONE),
            Value::Object(m) => Ok(Self::from_object(m)),
            _ => Err(serde::de::Error::custom("attributes must be an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(json: &str) -> Attributes {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compose_cases_from_quill_delta() {
        let a = attrs(r#"{"bold":true,"color":"red"}"#);
        assert_eq!(Attributes::compose(&Attributes::NONE, &a, false), a);
        assert_eq!(Attributes::compose(&a, &Attributes::NONE, false), a);
        assert_eq!(
            Attributes::compose(&a, &attrs(r#"{"italic":true}"#), false),
            attrs(r#"{"bold":true,"color":"red","italic":true}"#)
        );
        assert_eq!(
            Attributes::compose(&a, &attrs(r#"{"bold":false,"color":"blue"}"#), false),
            attrs(r#"{"bold":false,"color":"blue"}"#)
        );
        assert_eq!(Attributes::compose(&a, &attrs(r#"{"bold":null}"#), false), attrs(r#"{"color":"red"}"#));
        assert_eq!(Attributes::compose(&a, &attrs(r#"{"bold":null,"color":null}"#), false), Attributes::NONE);
        assert_eq!(
            Attributes::compose(&a, &attrs(r#"{"italic":null}"#), true),
            attrs(r#"{"bold":true,"color":"red","italic":null}"#)
        );
        // A null already in `a` survives when `b` does not mention the key.
        assert_eq!(
            Attributes::compose(&attrs(r#"{"bold":null}"#), &attrs(r#"{"x":1}"#), false),
            attrs(r#"{"bold":null,"x":1}"#)
        );
    }

    #[test]
    fn diff_cases_from_quill_delta() {
        let fmt = attrs(r#"{"bold":true,"color":"red"}"#);
        assert_eq!(Attributes::diff(&Attributes::NONE, &fmt), fmt);
        assert_eq!(Attributes::diff(&fmt, &Attributes::NONE), attrs(r#"{"bold":null,"color":null}"#));
        assert_eq!(Attributes::diff(&fmt, &fmt), Attributes::NONE);
        assert_eq!(
            Attributes::diff(&fmt, &attrs(r#"{"bold":true,"italic":true,"color":"blue"}"#)),
            attrs(r#"{"italic":true,"color":"blue"}"#)
        );
        // Deep equality for nested values.
        assert_eq!(Attributes::diff(&attrs(r#"{"a":{"b":[1]}}"#), &attrs(r#"{"a":{"b":[1]}}"#)), Attributes::NONE);
    }

    #[test]
    fn invert_cases_from_quill_delta() {
        let base = attrs(r#"{"bold":true}"#);
        assert_eq!(Attributes::invert(&Attributes::NONE, &base), Attributes::NONE);
        assert_eq!(Attributes::invert(&attrs(r#"{"italic":true}"#), &base), attrs(r#"{"italic":null}"#));
        assert_eq!(Attributes::invert(&attrs(r#"{"bold":null}"#), &base), attrs(r#"{"bold":true}"#));
        assert_eq!(Attributes::invert(&attrs(r#"{"bold":true}"#), &base), Attributes::NONE);
        assert_eq!(
            Attributes::invert(&attrs(r#"{"color":"red","bold":false}"#), &attrs(r#"{"color":"blue","bold":true}"#)),
            attrs(r#"{"color":"blue","bold":true}"#)
        );
        // `===` on objects: equal nested values are still restored explicitly.
        assert_eq!(
            Attributes::invert(&attrs(r#"{"a":{"b":1}}"#), &attrs(r#"{"a":{"b":1}}"#)),
            attrs(r#"{"a":{"b":1}}"#)
        );
    }

    #[test]
    fn transform_cases_from_quill_delta() {
        let left = attrs(r#"{"bold":true,"color":"red","font":null}"#);
        let right = attrs(r#"{"color":"blue","font":"serif","italic":true}"#);
        assert_eq!(Attributes::transform(&Attributes::NONE, &left, false), left);
        assert_eq!(Attributes::transform(&left, &Attributes::NONE, false), Attributes::NONE);
        assert_eq!(Attributes::transform(&left, &right, false), right);
        assert_eq!(Attributes::transform(&left, &right, true), attrs(r#"{"italic":true}"#));
    }

    #[test]
    fn empty_object_is_none() {
        assert!(attrs("{}").is_empty());
        assert!(attrs("null").is_empty());
        assert!(serde_json::from_str::<Attributes>("[1]").is_err());
        assert_eq!(serde_json::to_string(&attrs(r#"{"b":1,"a":null}"#)).unwrap(), r#"{"a":null,"b":1}"#);
    }
}
