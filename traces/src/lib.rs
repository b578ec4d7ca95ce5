//! The editing traces: real keystroke histories (CC BY 4.0; see `traces/README.md`).
//!
//! Loading (`.json.gz` or `.json`), the text a prefix of a trace leaves, and its recorded
//! timing turned into a replay schedule. Shared by the engine benchmarks (`tandem-benches`)
//! and the load generator's `trace-replay` scenario.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// Whether every patch applies to the text the ones before it left (sequential traces);
    /// a concurrent trace's positions are relative to each author's own view instead.
    pub fn is_linear(&self) -> bool {
        self.agents.is_none() && self.txns.iter().all(|t| t.parents.is_empty() && t.agent.is_none())
    }

    /// The text after the first `n` transactions (all of them when `n` is past the end).
    /// Errors when a patch does not fit the text it applies to (a broken or non-linear trace).
    pub fn text_after(&self, n: usize) -> Result<String> {
        let mut rope = ropey::Rope::from_str(&self.start);
        for (i, t) in self.txns.iter().take(n).enumerate() {
            for Patch(pos, del, ins) in &t.patches {
                if pos + del > rope.len_chars() {
                    bail!("{}: txn {i} edits {pos}..{} of a {}-char text", self.name, pos + del, rope.len_chars());
                }
                rope.remove(*pos..pos + del);
                rope.insert(*pos, ins);
            }
        }
        Ok(rope.to_string())
    }

    /// When each transaction is due, from the first: the recorded times divided by `speed`,
    /// pauses longer than `max_pause` cut to it, and transactions that share a timestamp
    /// (1-second clocks) spread evenly up to the next one, and a time that goes back counted
    /// as the one before it. A trace whose clock does not
    /// advance (under 1 ms per transaction over the whole trace, or times missing) is
    /// replayed at `fallback_rate` transactions per second instead.
    pub fn schedule(&self, speed: f64, max_pause: Duration, fallback_rate: f64) -> Vec<Duration> {
        // A time earlier than one before it (linearized multi-writer traces interleave their
        // writers' clocks) counts as that one.
        let mut latest = f64::MIN;
        let times: Option<Vec<f64>> = self
            .txns
            .iter()
            .map(|t| {
                latest = latest.max(t.time.as_deref().and_then(parse_time)?);
                Some(latest)
            })
            .collect();
        let n = self.txns.len();
        let usable = times.as_ref().filter(|t| n > 1 && t[n - 1] - t[0] >= 0.001 * n as f64);
        let Some(times) = usable else {
            return (0..n).map(|i| Duration::from_secs_f64(i as f64 / fallback_rate)).collect();
        };
        let cap = max_pause.as_secs_f64();
        let mut out = Vec::with_capacity(n);
        let mut at = 0.0;
        let mut i = 0;
        while i < n {
            // The run of transactions stamped times[i].
            let mut j = i + 1;
            while j < n && times[j] == times[i] {
                j += 1;
            }
            let gap = if j < n { (times[j] - times[i]).min(cap) } else { 0.0 };
            let step = gap / (j - i) as f64;
            for k in 0..j - i {
                out.push(Duration::from_secs_f64((at + step * k as f64) / speed));
            }
            at += gap;
            i = j;
        }
        out
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

/// Seconds since the Unix epoch of an RFC 3339 time (`...Z` or `...+hh:mm`).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let (base, offset_s) = match s.len().checked_sub(6).map(|k| (k, s.as_bytes()[k])) {
        Some((k, sign @ (b'+' | b'-'))) if s.as_bytes().get(k + 3) == Some(&b':') => {
            let h: f64 = s.get(k + 1..k + 3)?.parse().ok()?;
            let m: f64 = s.get(k + 4..)?.parse().ok()?;
            let off = h * 3600.0 + m * 60.0;
            (&s[..k], if sign == b'+' { off } else { -off })
        }
        _ => (s.trim_end_matches('Z'), 0.0),
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_secs_f64() - offset_s)
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

/// The repository's `traces/` folder (this crate's own).
pub fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(times: &[&str]) -> Trace {
        Trace {
            name: "t".into(),
            start: String::new(),
            end: String::new(),
            txns: times
                .iter()
                .map(|t| Txn {
                    patches: vec![Patch(0, 0, "x".into())],
                    time: Some((*t).to_owned()),
                    parents: Vec::new(),
                    agent: None,
                })
                .collect(),
            agents: None,
        }
    }

    fn secs(v: &[Duration]) -> Vec<f64> {
        v.iter().map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0).collect()
    }

    #[test]
    fn times_parse_with_either_offset_form() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1.0));
        assert_eq!(parse_time("1970-01-01T00:00:01.500Z"), Some(1.5));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_time("1970-01-01T00:00:00-00:30"), Some(1800.0));
        assert_eq!(parse_time("2023-11-22T03:57:32+00:00"), parse_time("2023-11-22T03:57:32Z"));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn schedule_spreads_shared_seconds_and_cuts_pauses() {
        let t = trace(&[
            "2023-01-01T00:00:00Z",
            "2023-01-01T00:00:00Z",
            "2023-01-01T00:00:01Z",
            "2023-01-01T01:00:00Z",
            "2023-01-01T01:00:00.500Z",
        ]);
        // Two in the first second (0, 0.5), a one-hour pause cut to 2 s, then 0.5 s.
        assert_eq!(secs(&t.schedule(1.0, Duration::from_secs(2), 5.0)), vec![0.0, 0.5, 1.0, 3.0, 3.5]);
        // Twice as fast.
        assert_eq!(secs(&t.schedule(2.0, Duration::from_secs(2), 5.0)), vec![0.0, 0.25, 0.5, 1.5, 1.75]);
    }

    #[test]
    fn a_clock_that_does_not_advance_falls_back_to_a_rate() {
        let t = trace(&["1970-01-01T00:00:00Z"; 4]);
        assert_eq!(secs(&t.schedule(1.0, Duration::from_secs(2), 4.0)), vec![0.0, 0.25, 0.5, 0.75]);
        let mut t = trace(&["2023-01-01T00:00:00Z", "2023-01-01T00:00:01Z"]);
        t.txns[1].time = None;
        assert_eq!(secs(&t.schedule(1.0, Duration::from_secs(2), 2.0)), vec![0.0, 0.5]);
        // Going only backwards is no clock either.
        let t = trace(&["2023-01-01T00:00:05Z", "2023-01-01T00:00:01Z"]);
        assert_eq!(secs(&t.schedule(1.0, Duration::from_secs(2), 1.0)), vec![0.0, 1.0]);
    }

    #[test]
    fn a_time_that_goes_back_counts_as_the_one_before() {
        let t =
            trace(&["2023-01-01T00:00:00Z", "2023-01-01T00:00:02Z", "2023-01-01T00:00:01Z", "2023-01-01T00:00:03Z"]);
        assert_eq!(secs(&t.schedule(1.0, Duration::from_secs(5), 1.0)), vec![0.0, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn text_after_a_prefix() {
        let mut t = trace(&["2023-01-01T00:00:00Z"; 3]);
        t.start = "ab".into();
        t.txns[1].patches = vec![Patch(2, 1, "Y".into()), Patch(0, 0, "<".into())];
        t.txns[2].patches = vec![Patch(1, 2, String::new())];
        assert_eq!(t.text_after(0).unwrap(), "ab");
        assert_eq!(t.text_after(1).unwrap(), "xab");
        assert_eq!(t.text_after(2).unwrap(), "<xaY");
        assert_eq!(t.text_after(3).unwrap(), "<Y");
        assert_eq!(t.text_after(99).unwrap(), "<Y");
        t.txns[2].patches = vec![Patch(4, 1, String::new())];
        assert!(t.text_after(3).unwrap_err().to_string().contains("txn 2 edits 4..5 of a 4-char text"));
    }

    #[test]
    fn every_shipped_trace_replays_to_its_end_text() {
        for path in sequential_traces().unwrap() {
            let t = Trace::load(&path).unwrap();
            assert!(t.is_linear(), "{}", t.name);
            assert_eq!(t.text_after(usize::MAX).unwrap(), t.end, "{}", t.name);
            let s = t.schedule(1.0, Duration::from_secs(2), 5.0);
            assert_eq!(s.len(), t.txns.len());
            assert!(s.windows(2).all(|w| w[0] <= w[1]), "{}: a schedule never goes back", t.name);
        }
        let c = Trace::load(&traces_dir().join("concurrent/clownschool.json.gz")).unwrap();
        assert!(!c.is_linear());
    }
}
