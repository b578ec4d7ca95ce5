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
//! Without them the test fails and says so (`scripts/test.sh` installs them).

use std::path::PathBuf;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tandem_engine::random::{self, Shape};
use tandem_engine::{Delta, Document};

/// This test never skips: without the reference it fails and says how to get it.
const MISSING: &str = "quill-delta is not installed: run scripts/test.sh (which installs it), or .ci/setup-quill-delta \
                       and set TANDEM_QUILL_DELTA to the node_modules path it prints";

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
    let modules = node_modules().expect(MISSING);
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

/// The snapshot-rebase recipe in `docs/protocol.md`, run as written against quill-delta: the
/// code-point diff turns the server copy into the snapshot and never splits a surrogate pair
/// (quill-delta's own `diff` can), and pending edits rebased over it stay whole.
#[test]
fn protocol_doc_rebase_recipe_is_surrogate_safe() {
    let modules = node_modules().expect(MISSING);
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")).unwrap();
    let start = doc.find("function codePointDiff").expect("the recipe is in docs/protocol.md");
    let len = doc[start..].find("\n}\n").expect("the function ends") + 2;
    let recipe = &doc[start..start + len];

    // Old and new server copies: random rich documents and edits (astral chars included),
    // plus pairs that share a high surrogate, where a UTF-16 diff splits the pair.
    let mut cases = vec![
        json!({"old": {"ops": [{"insert": "a😀b\n"}]}, "new": {"ops": [{"insert": "a😃b\n"}]}, "at": 1}),
        json!({"old": {"ops": [{"insert": "😀😀\n"}]}, "new": {"ops": [{"insert": "😀😁😀\n"}]}, "at": 2}),
        json!({"old": {"ops": [{"insert": "x🦀\n"}]}, "new": {"ops": [{"insert": "x🦁\n", "attributes": {"bold": true}}]}, "at": 2}),
    ];
    for seed in 0..500u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let old = Document::from_delta(&random::document(&mut rng, 30, Shape::RICH)).unwrap();
        let mut new = old.clone();
        new.apply(&random::delta(&mut rng, old.len(), Shape::RICH)).unwrap();
        let at = rng.random_range(0..=old.len());
        cases.push(json!({"old": to_json(&old.to_delta()), "new": to_json(&new.to_delta()), "at": at}));
    }
    let script = format!(
        r#"
const Delta = require("quill-delta");
{recipe}
const lone = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const strings = (d) => d.ops.map((op) => (typeof op.insert === "string" ? op.insert : "")).join("|");
const canon = (d) => JSON.stringify(d.ops.map((op) =>
  [op.insert, op.retain, op.delete, op.attributes && Object.fromEntries(Object.entries(op.attributes).sort())]));
const cases = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
let quillSplits = 0;
cases.forEach((c, i) => {{
  const serverCopy = new Delta(c.old), snapshot = new Delta(c.new);
  const missed = codePointDiff(serverCopy, snapshot);
  if (canon(serverCopy.compose(missed)) !== canon(snapshot)) throw new Error(`case ${{i}}: the diff does not lead to the snapshot: ${{JSON.stringify(c)}}`);
  if (lone.test(strings(missed))) throw new Error(`case ${{i}}: the diff splits a surrogate pair`);
  if (lone.test(strings(serverCopy.diff(snapshot)))) quillSplits++;
  // A pending insert at code point `at` of the server copy, rebased as the recipe says.
  const text = serverCopy.ops.map((op) => (typeof op.insert === "string" ? op.insert : "\uFFFC")).join("");
  const at16 = [...text].slice(0, c.at).join("").length;
  const pending = missed.transform(new Delta().retain(at16).insert("§"), true);
  const local = snapshot.compose(pending);
  if (lone.test(strings(local)) || !strings(local).includes("§")) throw new Error(`case ${{i}}: rebased edit broke: ${{JSON.stringify(local)}}`);
}});
console.log(JSON.stringify({{ cases: cases.length, quillSplits }}));
"#
    );
    let dir = std::env::temp_dir().join(format!("tandem-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cases.json"), serde_json::to_vec(&cases).unwrap()).unwrap();
    std::fs::write(dir.join("recipe.js"), script).unwrap();
    let output = Command::new("node")
        .arg(dir.join("recipe.js"))
        .arg(dir.join("cases.json"))
        .env("NODE_PATH", &modules)
        .output()
        .expect("running node");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "the recipe failed: {}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("recipe: {summary} (quillSplits: cases where quill-delta's own diff splits a pair)");
    assert_eq!(summary["cases"], cases.len());
    // The handmade cases are the ones quill-delta's diff gets wrong: the recipe is needed.
    assert!(summary["quillSplits"].as_u64().unwrap() >= 1, "{summary}");
}
