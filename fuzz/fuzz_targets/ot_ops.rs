//! Arbitrary documents and deltas (valid or not) through apply, compose, transform, invert and
//! transform_position: nothing panics, invalid input is an error exactly when it should be,
//! and on valid input the OT laws hold (TP1, compose = apply in turn, invert undoes).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tandem_engine::{Attributes, Delta, Document, Embed, Op, Value};

fn attributes(u: &mut Unstructured<'_>) -> arbitrary::Result<Attributes> {
    let mut map = tandem_engine::Object::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let key = *u.choose(&["bold", "color", "link"])?;
        let value = match u.int_in_range(0..=3)? {
            0 => Value::Null,
            1 => Value::Bool(bool::arbitrary(u)?),
            2 => Value::String(u.choose(&["red", "blue"])?.to_string()),
            _ => {
                Value::Object([("href".to_owned(), Value::Number(f64::from(u8::arbitrary(u)?)))].into_iter().collect())
            }
        };
        map.insert(key.to_owned(), value);
    }
    Ok(Attributes::from_object(map))
}

fn delta(u: &mut Unstructured<'_>, inserts_only: bool) -> arbitrary::Result<Delta> {
    let mut ops = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let kind = if inserts_only { 0 } else { u.int_in_range(0..=3)? };
        ops.push(match kind {
            0 => {
                let s: String = String::arbitrary(u)?.chars().take(8).collect();
                Op::insert(&s, attributes(u)?)
            }
            1 => Op::Insert {
                insert: tandem_engine::Insert::Embed(Embed::new(
                    [("image".to_owned(), Value::from("x"))].into_iter().collect(),
                )),
                attributes: attributes(u)?,
            },
            2 => Op::retain(u.int_in_range(0..=12)?, attributes(u)?),
            _ => Op::delete(u.int_in_range(0..=12)?),
        });
    }
    Ok(Delta::from_ops(ops))
}

fn applied(doc: &Document, d: &Delta) -> Option<Document> {
    let mut out = doc.clone();
    match out.apply(d) {
        Ok(()) => Some(out),
        Err(_) => {
            assert!(d.base_len() > doc.len(), "apply refused a delta that fits: {d}");
            assert_eq!(&out, doc, "a refused apply changed the document");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(doc), Ok(a), Ok(b), Ok(pos)) =
        (delta(&mut u, true), delta(&mut u, false), delta(&mut u, false), u.int_in_range(0..=40usize))
    else {
        return;
    };
    let doc = Document::from_delta(&doc).expect("inserts only");
    for d in [&a, &b] {
        assert!(d.is_canonical());
    }
    // Delta-only operations never fail, whatever the lengths.
    let ab = a.transform(&b, true);
    let ba = b.transform(&a, false);
    let _ = a.compose(&b);
    let _ = a.transform_position(pos, true);
    assert!(ab.is_canonical() && ba.is_canonical());

    let (Some(da), Some(db)) = (applied(&doc, &a), applied(&doc, &b)) else {
        assert!(a.invert(&doc).is_err() || b.invert(&doc).is_err());
        return;
    };
    // TP1.
    assert_eq!(applied(&da, &ab), applied(&db, &ba), "TP1: a={a} b={b}");
    // Invert undoes.
    let inv = a.invert(&doc).expect("a fits doc");
    assert_eq!(applied(&da, &inv).as_ref(), Some(&doc), "invert: a={a}");
    // Compose equals applying in turn, when b fits after a.
    if let Some(dab) = applied(&da, &b) {
        assert_eq!(applied(&doc, &a.compose(&b)), Some(dab), "compose: a={a} b={b}");
    }
    assert!(a.transform_position(pos.min(doc.len()), false) <= da.len());
});
