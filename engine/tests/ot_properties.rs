//! Seeded property tests of the OT algebra on random rich-text documents and deltas.
//!
//! Every failure prints its seed; `TANDEM_SEED=n cargo test -p tandem-engine --test
//! ot_properties` replays one seed, `TANDEM_SEEDS=n` runs more.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{Attributes, Delta, Document};

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("TANDEM_SEED") {
        return vec![s.parse().expect("TANDEM_SEED is a number")];
    }
    let n = std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    (0..n).collect()
}

fn applied(doc: &Document, d: &Delta, seed: u64) -> Document {
    let mut out = doc.clone();
    out.apply(d).unwrap_or_else(|e| panic!("seed {seed}: apply {d} failed: {e}"));
    out
}

fn setup(seed: u64) -> (ChaCha8Rng, Document) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let doc = Document::from_delta(&random::document(&mut rng, 30, Shape::RICH)).unwrap();
    (rng, doc)
}

#[test]
fn tp1_transformed_ops_converge() {
    for seed in seeds(3000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let b = random::delta(&mut rng, doc.len(), Shape::RICH);
        let ab = applied(&applied(&doc, &a, seed), &a.transform(&b, true), seed);
        let ba = applied(&applied(&doc, &b, seed), &b.transform(&a, false), seed);
        assert_eq!(ab, ba, "seed {seed}: a={a} b={b}");
        // The delta-level form: a then b' equals b then a'.
        assert_eq!(
            applied(&doc, &a.compose(&a.transform(&b, true)), seed),
            applied(&doc, &b.compose(&b.transform(&a, false)), seed),
            "seed {seed}"
        );
    }
}

#[test]
fn compose_equals_applying_in_turn() {
    for seed in seeds(3000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let after_a = applied(&doc, &a, seed);
        let b = random::delta(&mut rng, after_a.len(), Shape::RICH);
        let stepwise = applied(&after_a, &b, seed);
        assert_eq!(applied(&doc, &a.compose(&b), seed), stepwise, "seed {seed}: a={a} b={b}");
        // Applying to a document is composing onto the document's delta.
        assert_eq!(doc.to_delta().compose(&a), after_a.to_delta(), "seed {seed}: a={a}");
    }
}

#[test]
fn compose_is_associative() {
    for seed in seeds(3000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let d1 = applied(&doc, &a, seed);
        let b = random::delta(&mut rng, d1.len(), Shape::RICH);
        let d2 = applied(&d1, &b, seed);
        let c = random::delta(&mut rng, d2.len(), Shape::RICH);
        let left = a.compose(&b).compose(&c);
        let right = a.compose(&b.compose(&c));
        assert_eq!(applied(&doc, &left, seed), applied(&doc, &right, seed), "seed {seed}: a={a} b={b} c={c}");
    }
}

#[test]
fn invert_undoes() {
    for seed in seeds(3000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let inverse = a.invert(&doc).unwrap();
        let after = applied(&doc, &a, seed);
        assert_eq!(applied(&after, &inverse, seed), doc, "seed {seed}: a={a} inverse={inverse}");
        // a composed with its inverse changes nothing (up to formatting no-ops).
        assert_eq!(applied(&doc, &a.compose(&inverse), seed), doc, "seed {seed}");
    }
}

#[test]
fn transform_position_agrees_with_transforming_an_insert() {
    for seed in seeds(3000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let pos = rand::Rng::random_range(&mut rng, 0..=doc.len());
        let marker = Delta::new().retain(pos, Attributes::NONE).insert("§", Attributes::NONE);
        for priority in [false, true] {
            let moved = a.transform(&marker, priority);
            let at = match moved.ops().first() {
                Some(tandem_engine::Op::Retain { retain, .. }) => *retain,
                _ => 0,
            };
            assert_eq!(a.transform_position(pos, !priority), at, "seed {seed}: a={a} pos={pos} priority={priority}");
        }
    }
}

#[test]
fn diff_turns_one_document_into_the_other() {
    for seed in seeds(1000) {
        let (mut rng, doc) = setup(seed);
        let other = Document::from_delta(&random::document(&mut rng, 30, Shape::RICH)).unwrap();
        let d = doc.diff(&other);
        assert_eq!(applied(&doc, &d, seed), other, "seed {seed}: diff={d}");
        let edited = applied(&doc, &random::delta(&mut rng, doc.len(), Shape::RICH), seed);
        assert_eq!(applied(&doc, &doc.diff(&edited), seed), edited, "seed {seed}");
    }
}

#[test]
fn json_and_archive_round_trip() {
    for seed in seeds(1000) {
        let (mut rng, doc) = setup(seed);
        let a = random::delta(&mut rng, doc.len(), Shape::RICH);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Delta>(&json).unwrap(), a, "seed {seed}: {json}");
        assert_eq!(Delta::from_archive(&a.to_archive()).unwrap(), a, "seed {seed}");
        let d = doc.to_delta();
        assert_eq!(Delta::from_archive(&d.to_archive()).unwrap(), d, "seed {seed}");
    }
}

#[test]
fn empty_deltas_are_identities() {
    let doc = Document::from_text("abc");
    let e = Delta::new();
    let a = Delta::new().retain(1, Attributes::NONE).insert("x", Attributes::NONE);
    assert_eq!(e.compose(&a), a);
    assert_eq!(a.compose(&e), a);
    assert_eq!(e.transform(&a, true), a);
    assert!(a.transform(&e, true).is_empty());
    assert_eq!(e.invert(&doc).unwrap(), e);
    assert_eq!(e.transform_position(2, false), 2);
}

#[test]
fn format_bytes_after_bounds_the_formatting_applying_leaves() {
    for seed in seeds(3000) {
        let (mut rng, mut doc) = setup(seed);
        for step in 0..4 {
            let d = random::delta(&mut rng, doc.len(), Shape::RICH);
            let bound = doc.format_bytes_after(&d);
            doc = applied(&doc, &d, seed);
            let exact: usize = doc.to_delta().ops().iter().map(tandem_engine::Op::format_bytes).sum();
            // The run tree counts per run; the document's delta merges equal neighbours that
            // two tree leaves may keep apart, so it can only count less.
            assert!(doc.format_bytes() <= bound, "seed {seed} step {step}: {} > {bound} after {d}", doc.format_bytes());
            assert!(exact <= doc.format_bytes(), "seed {seed} step {step}: {exact} > {}", doc.format_bytes());
        }
    }
}
