//! JSON values: what attribute values and embeds are made of.
//!
//! Quill deltas carry arbitrary JSON in attributes (`{"bold": true}`, `{"link": "https://…"}`,
//! `{"header": 1}`) and embeds (`{"image": "…"}`). [`Value`] is that JSON, with JavaScript's
//! number semantics: every number is an `f64`, and `1` equals `1.0`, as it does for
//! `lodash.isEqual`, which quill-delta uses to compare attributes. Objects keep their keys
//! sorted, so deep equality ignores key order (again as `isEqual` does) and encoding is
//! deterministic.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON object with sorted keys.
pub type Object = BTreeMap<String, Value>;

/// A JSON value with JavaScript number semantics.
///
/// Equality is deep equality (`lodash.isEqual` for JSON data).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// `null`. In a retain's attributes it means "remove this attribute".
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any JSON number, held as JavaScript holds it.
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Self>),
    /// An object.
    Object(Object),
}

impl Value {
    /// JavaScript's `===` between two possibly-undefined values (`None` is `undefined`).
    ///
    /// quill-delta's `AttributeMap.invert` compares with `===`, under which two objects or
    /// arrays are never equal unless they are the same reference. Values from different ops
    /// never share a reference there, so objects and arrays compare unequal here.
    pub(crate) fn strict_eq(a: Option<&Self>, b: Option<&Self>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(Self::Null), Some(Self::Null)) => true,
            (Some(Self::Bool(x)), Some(Self::Bool(y))) => x == y,
            (Some(Self::Number(x)), Some(Self::Number(y))) => x == y,
            (Some(Self::String(x)), Some(Self::String(y))) => x == y,
            _ => false,
        }
    }

    /// Returns true for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Number(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Number(f64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

impl From<Object> for Value {
    fn from(v: Object) -> Self {
        Self::Object(v)
    }
}

/// The largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            // Integral numbers print as integers, like JSON.stringify.
            #[allow(clippy::cast_possible_truncation)]
            Self::Number(n) if n.fract() == 0.0 && n.abs() < MAX_SAFE_INTEGER => s.serialize_i64(*n as i64),
            // JSON.stringify writes NaN and the infinities as null.
            Self::Number(n) if !n.is_finite() => s.serialize_unit(),
            Self::Number(n) => s.serialize_f64(*n),
            Self::String(v) => s.serialize_str(v),
            Self::Array(v) => v.serialize(s),
            Self::Object(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Object::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            if out.insert(k, v).is_some() {
                return Err(de::Error::custom("duplicate key in JSON object"));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_javascript() {
        let one: Value = serde_json::from_str("1").unwrap();
        let one_f: Value = serde_json::from_str("1.0").unwrap();
        assert_eq!(one, one_f);
        assert_eq!(serde_json::to_string(&one_f).unwrap(), "1");
        assert_eq!(serde_json::to_string(&Value::Number(1.5)).unwrap(), "1.5");
        assert_eq!(serde_json::to_string(&Value::Number(f64::NAN)).unwrap(), "null");
        assert_eq!(serde_json::to_string(&Value::Number(1e300)).unwrap(), "1e+300");
    }

    #[test]
    fn objects_compare_deeply_regardless_of_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"c":[1,2]},"a":1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"a":1,"b":{"c":[1,2]}}"#);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(serde_json::from_str::<Value>(r#"{"a":1,"a":2}"#).is_err());
    }

    #[test]
    fn strict_equality_is_javascripts() {
        let obj = Value::Object(Object::new());
        assert!(Value::strict_eq(None, None));
        assert!(Value::strict_eq(Some(&Value::Null), Some(&Value::Null)));
        assert!(Value::strict_eq(Some(&"x".into()), Some(&"x".into())));
        assert!(!Value::strict_eq(Some(&obj), Some(&obj.clone())));
        assert!(!Value::strict_eq(Some(&Value::Null), None));
        assert!(!Value::strict_eq(Some(&1.into()), Some(&"1".into())));
    }

    #[test]
    fn deep_nesting_is_bounded_by_the_parser() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(serde_json::from_str::<Value>(&deep).is_err());
    }
}
