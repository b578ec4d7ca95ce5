//! Seeded random documents and edits (feature `random`).
//!
//! Property tests, the simulation, the benchmarks and the load generator all need plausible
//! edits: typing, deleting, formatting, embeds, astral-plane characters and attribute edge
//! cases (`null` removals, nested objects). Everything here is driven by a caller's RNG, so a
//! seed reproduces a run.

use rand::Rng;
use rand::seq::IndexedRandom;

use crate::attributes::Attributes;
use crate::delta::Delta;
use crate::op::Embed;
use crate::value::{Object, Value};

/// What generated content may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Characters outside the Basic Multilingual Plane (which UTF-16 counts twice).
    pub astral: bool,
    /// Attributes on inserts and retains.
    pub attributes: bool,
    /// Embeds.
    pub embeds: bool,
}

impl Shape {
    /// Everything: astral chars, attributes, embeds.
    pub const RICH: Self = Self { astral: true, attributes: true, embeds: true };
    /// Rich text that UTF-16 and scalar-value counting agree on (for comparing with
    /// quill-delta, which counts UTF-16 code units).
    pub const BMP: Self = Self { astral: false, attributes: true, embeds: true };
    /// Plain text only.
    pub const PLAIN: Self = Self { astral: false, attributes: false, embeds: false };
}

const BMP_CHARS: &[char] = &['a', 'b', 'c', 'd', 'e', ' ', ' ', '\n', 'é', 'ß', 'ж', '中', '\u{FFFC}'];
const ASTRAL_CHARS: &[char] = &['😀', '𝄞', '🦀'];

/// Random text of `1..=max_chars` chars.
pub fn text(rng: &mut impl Rng, max_chars: usize, shape: Shape) -> String {
    let n = rng.random_range(1..=max_chars.max(1));
    (0..n)
        .map(|_| {
            if shape.astral && rng.random_bool(0.1) {
                *ASTRAL_CHARS.choose(rng).expect("non-empty")
            } else {
                *BMP_CHARS.choose(rng).expect("non-empty")
            }
        })
        .collect()
}

fn attribute_value(rng: &mut impl Rng, key: &str, allow_null: bool) -> Value {
    if allow_null && rng.random_bool(0.25) {
        return Value::Null;
    }
    match key {
        "bold" | "italic" => Value::Bool(rng.random_bool(0.8)),
        "color" => Value::from(*["red", "blue", "#00ff00"].choose(rng).expect("non-empty")),
        "size" => Value::Number(f64::from(rng.random_range(1..4))),
        "link" => {
            let mut o = Object::new();
            o.insert(
                "href".into(),
                Value::from(*["https://a.example", "https://b.example"].choose(rng).expect("non-empty")),
            );
            Value::Object(o)
        }
        _ => Value::Array(vec![Value::Number(1.0), Value::from("x")]),
    }
}

/// Random attributes: often none; `null` values only when `allow_null` (retains).
pub fn attributes(rng: &mut impl Rng, shape: Shape, allow_null: bool) -> Attributes {
    if !shape.attributes || rng.random_bool(0.5) {
        return Attributes::NONE;
    }
    let mut o = Object::new();
    for _ in 0..rng.random_range(1..=2) {
        let key = *["bold", "italic", "color", "size", "link", "list"].choose(rng).expect("non-empty");
        o.insert(key.to_owned(), attribute_value(rng, key, allow_null));
    }
    Attributes::from_object(o)
}

/// A random embed.
pub fn embed(rng: &mut impl Rng) -> Embed {
    let mut o = Object::new();
    match rng.random_range(0..3) {
        0 => o.insert("image".into(), Value::from(*["a.png", "b.png"].choose(rng).expect("non-empty"))),
        1 => o.insert("formula".into(), Value::from("e=mc^2")),
        _ => o.insert("video".into(), Value::Object([("src".to_owned(), Value::from("v.mp4"))].into_iter().collect())),
    };
    Embed::new(o)
}

/// A random document (a delta of inserts) of about `max_chars` chars at most.
pub fn document(rng: &mut impl Rng, max_chars: usize, shape: Shape) -> Delta {
    let mut d = Delta::new();
    let mut len = 0;
    let target = rng.random_range(0..=max_chars);
    while len < target {
        if shape.embeds && rng.random_bool(0.1) {
            d = d.insert_embed(embed(rng), attributes(rng, shape, false));
            len += 1;
        } else {
            let t = text(rng, (target - len).min(12), shape);
            len += t.chars().count();
            d = d.insert(&t, attributes(rng, shape, false));
        }
    }
    d
}

/// A random delta that applies to a document of `doc_len` chars: a few edits at random
/// places (inserts, deletes, formatting).
pub fn delta(rng: &mut impl Rng, doc_len: usize, shape: Shape) -> Delta {
    let mut d = Delta::new();
    let mut pos = 0;
    let edits = rng.random_range(1..=3);
    for _ in 0..edits {
        if pos < doc_len {
            let skip = rng.random_range(0..=(doc_len - pos).min(20));
            d = d.retain(skip, Attributes::NONE);
            pos += skip;
        }
        match rng.random_range(0..10) {
            0..=4 => {
                if shape.embeds && rng.random_bool(0.1) {
                    d = d.insert_embed(embed(rng), attributes(rng, shape, false));
                } else {
                    d = d.insert(&text(rng, 6, shape), attributes(rng, shape, false));
                }
            }
            5..=7 if pos < doc_len => {
                let n = rng.random_range(1..=(doc_len - pos).min(6));
                d = d.delete(n);
                pos += n;
            }
            _ if pos < doc_len && shape.attributes => {
                let n = rng.random_range(1..=(doc_len - pos).min(8));
                let mut a = attributes(rng, shape, true);
                if a.is_empty() {
                    a = [("bold", Value::Null)].into_iter().collect();
                }
                d = d.retain(n, a);
                pos += n;
            }
            _ => d = d.insert(&text(rng, 3, shape), Attributes::NONE),
        }
    }
    d.chop()
}

/// A typing-like edit at a random position: one char inserted (or a short word), or one
/// deleted (backspace), as editors send per keystroke.
pub fn keystroke(rng: &mut impl Rng, doc_len: usize) -> Delta {
    let pos = rng.random_range(0..=doc_len);
    if doc_len > 0 && pos > 0 && rng.random_bool(0.2) {
        Delta::new().retain(pos - 1, Attributes::NONE).delete(1)
    } else {
        let s = *["a", "e", "t", " ", "o", "the ", "\n", "é"].choose(rng).expect("non-empty");
        Delta::new().retain(pos, Attributes::NONE).insert(s, Attributes::NONE).chop()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::Document;

    #[test]
    fn generated_deltas_apply() {
        for seed in 0..500 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut doc = Document::from_delta(&document(&mut rng, 40, Shape::RICH)).unwrap();
            for _ in 0..10 {
                let d = delta(&mut rng, doc.len(), Shape::RICH);
                doc.apply(&d).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                let k = keystroke(&mut rng, doc.len());
                doc.apply(&k).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            }
        }
    }
}
