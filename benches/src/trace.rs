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

    /// The same patches with positions and lengths in UTF-16 code units, for peers that
    /// count those. Returns `None` when the trace is all Basic Multilingual Plane text, where
    /// the two agree.
    pub fn patches_utf16(&self) -> Option<Vec<Patch>> {
        let astral = |s: &str| s.chars().any(|c| c.len_utf16() == 2);
        if !astral(&self.start) && !self.txns.iter().flat_map(|t| &t.patches).any(|p| astral(&p.2)) {
            return None;
        }
        // O(n) per patch, done once before timing. (jumprope's `wchar_conversion` would be
        // faster, but enabling it slows every jumprope user in the process, Tandem and
        // diamond-types included.)
        let mut text: Vec<char> = self.start.chars().collect();
        let utf16 = |chars: &[char]| chars.iter().map(|c| c.len_utf16()).sum::<usize>();
        let mut out = Vec::new();
        for Patch(pos, del, ins) in self.patches() {
            let start = utf16(&text[..pos]);
            let len = utf16(&text[pos..pos + del]);
            out.push(Patch(start, len, ins.clone()));
            text.splice(pos..pos + del, ins.chars());
        }
        Some(out)
    }
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
