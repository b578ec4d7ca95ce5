//! The editing traces: real keystroke histories (CC BY 4.0; see `traces/README.md`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One edit: at char position `pos`, delete `del` chars, then insert `ins`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Patch(pub usize, pub usize, pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTxn {
    patches: Vec<Patch>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    parents: Vec<usize>,
    #[serde(default)]
    agent: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    txns: Vec<RawTxn>,
    #[serde(default)]
    num_agents: Option<usize>,
}

/// One transaction of a trace.
#[derive(Clone, Debug)]
pub struct Txn {
    /// Edits, applied one after another.
    pub patches: Vec<Patch>,
    /// The recorded time (ISO 8601), when the trace has one.
    pub time: Option<String>,
    /// Causal parents (concurrent traces only).
    pub parents: Vec<usize>,
    /// The author (concurrent traces only).
    pub agent: Option<usize>,
}

/// A loaded trace.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The file's name without `.json.gz`.
    pub name: String,
    /// The text before the first edit.
    pub start: String,
    /// The text after the last edit; a replay must reproduce it exactly.
    pub end: String,
    /// Transactions in order.
    pub txns: Vec<Txn>,
    /// Number of authors (concurrent traces).
    pub agents: Option<usize>,
}

impl Trace {
    /// Loads a `.json.gz` (or plain `.json`) trace.
    pub fn load(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening trace {}", path.display()))?;
        let mut json = String::new();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(file).read_to_string(&mut json)
        } else {
            std::io::BufReader::new(file).read_to_string(&mut json)
        }
        .with_context(|| format!("reading trace {}", path.display()))?;
        let raw: RawTrace = serde_json::from_str(&json).with_context(|| format!("parsing trace {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("trace")
            .trim_end_matches(".gz")
            .trim_end_matches(".json")
            .to_owned();
        Ok(Self {
            name,
            start: raw.start_content,
            end: raw.end_content,
            txns: raw
                .txns
                .into_iter()
                .map(|t| Txn { patches: t.patches, time: t.time, parents: t.parents, agent: t.agent })
                .collect(),
            agents: raw.num_agents,
        })
    }

    /// Every patch, in order.
    pub fn patches(&self) -> Vec<Patch> {
        self.txns.iter().flat_map(|t| t.patches.iter().cloned()).collect()
    }

    /// The patches with positions and lengths in `unit`; `None` when they would be the same
    /// as in chars (all text ASCII for bytes, all text in the Basic Multilingual Plane for
    /// UTF-16). Converted with a rope's O(log n) index, before any timing.
    pub fn patches_in(&self, unit: Unit) -> Option<Vec<Patch>> {
        let same = |s: &str| match unit {
            Unit::Chars => true,
            Unit::Bytes => s.is_ascii(),
            Unit::Utf16 => s.chars().all(|c| c.len_utf16() == 1),
        };
        if same(&self.start) && self.txns.iter().flat_map(|t| &t.patches).all(|p| same(&p.2)) {
            return None;
        }
        let mut rope = ropey::Rope::from_str(&self.start);
        let convert = |rope: &ropey::Rope, pos: usize| match unit {
            Unit::Chars => pos,
            Unit::Bytes => rope.char_to_byte(pos),
            Unit::Utf16 => rope.char_to_utf16_cu(pos),
        };
        let mut out = Vec::new();
        for Patch(pos, del, ins) in self.patches() {
            let (start, end) = (convert(&rope, pos), convert(&rope, pos + del));
            out.push(Patch(start, end - start, ins.clone()));
            rope.remove(pos..pos + del);
            rope.insert(pos, &ins);
        }
        Some(out)
    }
}

/// What a position counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (Tandem, diamond-types, quill-delta-rs, operational-transform).
    Chars,
    /// UTF-16 code units (yrs here, browsers).
    Utf16,
    /// UTF-8 bytes (crop).
    Bytes,
}

/// The repository's `traces/` folder.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("traces")
}

/// Every sequential trace, sorted by name.
pub fn sequential_traces() -> Result<Vec<PathBuf>> {
    let dir = traces_dir().join("sequential");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".json.gz")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no traces in {}", dir.display());
    }
    Ok(paths)
}
