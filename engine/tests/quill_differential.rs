//! Differential test against the `quill-delta` npm package (the reference implementation
//! browser editors run): compose, apply, transform with both priorities, invert and
//! transformPosition must give exactly quill-delta's answers on random rich-text deltas.
//!
//! quill-delta counts UTF-16 code units and Tandem counts scalar values, so texts here stay in
//! the Basic Multilingual Plane, where the two agree; astral-plane behaviour is covered by
//! Tandem's own tests.
//!
//! Needs Node.js and quill-delta 5 installed: `.ci/setup-quill-delta` installs it under
//! `~/.cache/tandem/quill-delta` (or set `TANDEM_QUILL_DELTA` to a `node_modules` folder).
//! Without them the test prints why it skipped, unless `TANDEM_REQUIRE_QUILL=1` (set by
//! `.ci/run`), which makes their absence a failure.

use std::path::PathBuf;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tandem_engine::random::{self, Shape};
use tandem_engine::{Delta, Document};

fn node_modules() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TANDEM_QUILL_DELTA").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tandem/quill-delta/node_modules")),
    ];
    candidates.into_iter().flatten().find(|p| p.join("quill-delta/package.json").exists())
}

fn to_json(d: &Delta) -> Value {
    serde_json::to_value(d).unwrap()
}

#[test]
fn matches_quill_delta_on_random_deltas() {
    let Some(modules) = node_modules() else {
        assert!(
            std::env::var("TANDEM_REQUIRE_QUILL").is_err(),
            "quill-delta is not installed and TANDEM_REQUIRE_QUILL is set; run .ci/setup-quill-delta"
        );
        eprintln!("skipped: quill-delta not installed (run .ci/setup-quill-delta or set TANDEM_QUILL_DELTA)");
        return;
    };
    let n: u64 = std::env::var("TANDEM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for seed in 0..n {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let doc_delta = random::document(&mut rng, 30, Shape::BMP);
        let doc = Document::from_delta(&doc_delta).unwrap();
        let a = random::delta(&mut rng, doc.len(), Shape::BMP);
        let b = random::delta(&mut rng, doc.len(), Shape::BMP);
        let mut after = doc.clone();
        after.apply(&a).unwrap();
        let c = random::delta(&mut rng, after.len(), Shape::BMP);
        let pos = rng.random_range(0..=doc.len());
        cases.push(
            json!({"doc": to_json(&doc_delta), "a": to_json(&a), "b": to_json(&b), "c": to_json(&c), "pos": pos}),
        );
        ours.push(json!({
            "compose": to_json(&a.compose(&c)),
            "apply": to_json(&after.to_delta()),
            "transform_priority": to_json(&a.transform(&b, true)),
            "transform_no_priority": to_json(&a.transform(&b, false)),
            "invert": to_json(&a.invert(&doc).unwrap()),
            "position_priority": a.transform_position(pos, true),
            "position_no_priority": a.transform_position(pos, false),
        }));
    }
    let dir = std::env::temp_dir().join(format!("tandem-quill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    std::fs::write(&input, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/quill/reference.js");
    let output =
        Command::new("node").arg(&script).arg(&input).env("NODE_PATH", &modules).output().expect("running node");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "node failed: {}", String::from_utf8_lossy(&output.stderr));
    let theirs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());
    let version = theirs[0]["version"].as_str().unwrap_or("?").to_owned();
    assert!(version.starts_with("5."), "expected quill-delta 5.x, found {version}");
    let mut mismatches = 0;
    for (seed, ((case, ours), theirs)) in cases.iter().zip(&ours).zip(&theirs).enumerate() {
        for key in [
            "compose",
            "apply",
            "transform_priority",
            "transform_no_priority",
            "invert",
            "position_priority",
            "position_no_priority",
        ] {
            if ours[key] != theirs[key] {
                mismatches += 1;
                if mismatches <= 5 {
                    eprintln!("seed {seed} {key}:\n  case   {case}\n  tandem {}\n  quill  {}", ours[key], theirs[key]);
                }
            }
        }
    }
    assert_eq!(mismatches, 0, "{mismatches} results differ from quill-delta {version} over {n} seeds");
    eprintln!("{n} seeds x 7 operations agree with quill-delta {version}");
}
