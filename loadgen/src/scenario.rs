//! Scenarios: who connects, to which documents, doing what, at what rate, for how long.
//!
//! A scenario is a TOML file (see `loadgen/scenarios/`): stages (ramp-up, steady state,
//! ramp-down; only the steady state is measured) and groups of simulated users. Users of
//! groups that name the same documents share those documents, and run on the same generator
//! thread, so an op's send time and its receipt by every other user are read off one clock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What a simulated user does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Opens its documents and types at `edit_rate` ops/s (and moves its cursor at
    /// `cursor_rate`).
    Editor,
    /// Opens its documents and reads (and moves its cursor at `cursor_rate`).
    Reader,
    /// Connects, says hello, and sits (for memory per idle connection).
    Idle,
    /// Replays an editing trace (`traces`) at its recorded speed: the users of a document are
    /// its authors, each typing its own trace into its own section of the document at once,
    /// so the final text is known exactly and checked (Tandem only).
    Replay,
}

/// The subprotocol users speak.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Wire {
    /// `tandem.v1.bin`.
    #[default]
    Binary,
    /// `tandem.v1.json`.
    Json,
}

/// A group of identical users.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group's name in reports.
    pub name: String,
    /// What its users do.
    pub role: Role,
    /// How many documents (`{doc_prefix}-{i}` for i in 0..docs); 0 for idle users.
    #[serde(default)]
    pub docs: usize,
    /// Document name prefix.
    #[serde(default = "default_prefix")]
    pub doc_prefix: String,
    /// Users per document (or, for idle users, in all).
    pub users_per_doc: usize,
    /// Edits per second per user (editors).
    #[serde(default)]
    pub edit_rate: f64,
    /// Cursor moves per second per user.
    #[serde(default)]
    pub cursor_rate: f64,
    /// Subprotocol.
    #[serde(default)]
    pub wire: Wire,
    /// Users of this group that keep a full copy of each document and check it against the
    /// server at the end (the rest check only that revisions arrive in order); all when unset.
    #[serde(default)]
    pub full_copies_per_doc: Option<usize>,
    /// Replay: the traces (sequential `.json.gz` files, relative to the scenario file), taken
    /// in turn by each document's authors.
    #[serde(default)]
    pub traces: Vec<PathBuf>,
    /// Replay: how much faster than recorded.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Replay: recorded pauses longer than this are cut to it, seconds.
    #[serde(default = "default_max_pause")]
    pub max_pause_s: f64,
    /// Replay: transactions per second for traces whose clock does not advance.
    #[serde(default = "default_fallback_rate")]
    pub fallback_rate: f64,
}

impl Scenario {
    /// The id a document name is opened by: its server-made id after signing up, else the
    /// name itself.
    pub fn doc_id(&self, name: &str) -> String {
        self.doc_ids.get(name).cloned().unwrap_or_else(|| name.to_owned())
    }

    /// The scenario without its secrets (access tokens, the dev token), for reports.
    pub fn redacted(&self) -> Self {
        let mut s = self.clone();
        s.tokens.clear();
        if !s.token.is_empty() {
            s.token = "(redacted)".into();
        }
        s
    }

    /// The token user number `n` says hello with.
    pub fn token_for(&self, n: usize) -> String {
        if self.tokens.is_empty() { self.token.clone() } else { self.tokens[n % self.tokens.len()].clone() }
    }
}

impl Group {
    /// The name of its document `d` (`{doc_prefix}-{d}`).
    pub fn doc_name(&self, d: usize) -> String {
        format!("{}-{d}", self.doc_prefix)
    }
}

fn default_speed() -> f64 {
    1.0
}

fn default_max_pause() -> f64 {
    2.0
}

fn default_fallback_rate() -> f64 {
    5.0
}

fn default_prefix() -> String {
    "doc".to_owned()
}

/// The stages of a run, in seconds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// Users connect (and start acting) spread over this time. Not measured.
    pub ramp_up_s: f64,
    /// The measured part.
    pub steady_s: f64,
    /// Users stop acting; outstanding acks are collected. Not measured.
    #[serde(default = "default_ramp_down")]
    pub ramp_down_s: f64,
}

fn default_ramp_down() -> f64 {
    2.0
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it models, for the report.
    #[serde(default)]
    pub description: String,
    /// The stages.
    pub stages: Stages,
    /// The users.
    pub groups: Vec<Group>,
    /// Generator threads; 0 for one per available core.
    #[serde(default)]
    pub threads: usize,
    /// Seed for every random choice.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Token for `hello` (servers run with `--auth dev`).
    #[serde(default)]
    pub token: String,
    /// Sign users in before the run (servers that check accounts): this many accounts sign
    /// up, and the documents are created and shared over the REST API. `tandem-loadgen run
    /// --sign-up N` sets it for any scenario.
    #[serde(default)]
    pub sign_up: Option<usize>,
    /// Filled by signing up: the pool's access tokens (user `i` says hello with token
    /// `i % len`)...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// ...and each document name's server-made id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub doc_ids: std::collections::BTreeMap<String, String>,
    /// Documents given a history before any user connects (Tandem only).
    #[serde(default)]
    pub preload: Option<Preload>,
    /// Makes this a max-throughput search: run after run, every editor's rate grows by
    /// `factor` until the latency SLO breaks; the last run within it is the knee.
    #[serde(default)]
    pub search: Option<Search>,
}

/// Documents to give a long history before the run (for join storms): `ops` acknowledged
/// ops each, written by `writers` concurrent clients per document.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preload {
    /// Document name prefix (`{doc_prefix}-{i}`, as the groups name theirs).
    pub doc_prefix: String,
    /// How many documents.
    pub docs: usize,
    /// Ops (revisions) each.
    pub ops: u64,
    /// Concurrent writers per document.
    #[serde(default = "default_writers")]
    pub writers: usize,
}

fn default_writers() -> usize {
    16
}

/// A max-throughput search.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The SLO: p99 of ack latency (of propagation latency on servers without acks), ms.
    pub p99_ms: f64,
    /// Every step multiplies the editors' rates by this.
    pub factor: f64,
    /// Most steps.
    pub max_steps: usize,
}

impl Search {
    /// The rate multiplier of step `k` (0-based).
    pub fn multiplier(&self, k: usize) -> f64 {
        self.factor.powi(i32::try_from(k).unwrap_or(i32::MAX))
    }

    /// Whether a step stays within the SLO and kept up with its offered load: converged, no
    /// errors, p99 at or under the threshold, and at least 95% of the edits made were acked
    /// (or delivered, on servers without acks).
    pub fn passed(&self, converged: bool, errors: u64, p99_ms: f64, sent: u64, done: u64) -> bool {
        converged && errors == 0 && p99_ms > 0.0 && p99_ms <= self.p99_ms && done * 100 >= sent * 95
    }
}

fn default_seed() -> u64 {
    42
}

/// Most users one scenario may ask for.
pub const MAX_USERS: usize = 10_000_000;

impl Scenario {
    /// Loads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading scenario {}", path.display()))?;
        let mut s: Self = toml::from_str(&text).with_context(|| format!("parsing scenario {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for g in &mut s.groups {
            for t in &mut g.traces {
                if t.is_relative() {
                    *t = dir.join(&*t);
                }
            }
        }
        s.validate().with_context(|| format!("scenario {}", path.display()))?;
        Ok(s)
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<()> {
        let st = &self.stages;
        for (name, v) in [("ramp_up_s", st.ramp_up_s), ("steady_s", st.steady_s), ("ramp_down_s", st.ramp_down_s)] {
            if !(0.0..=86_400.0).contains(&v) {
                bail!("stages.{name} = {v}: must be between 0 and 86400");
            }
        }
        if st.steady_s <= 0.0 {
            bail!("stages.steady_s must be positive");
        }
        if self.groups.is_empty() {
            bail!("a scenario needs at least one group");
        }
        for g in &self.groups {
            if g.users_per_doc == 0 {
                bail!("group {}: users_per_doc must be positive", g.name);
            }
            if g.role != Role::Idle && g.docs == 0 {
                bail!("group {}: an {:?} group needs docs > 0", g.name, g.role);
            }
            if g.role == Role::Editor && !(g.edit_rate > 0.0 && g.edit_rate <= 10_000.0) {
                bail!("group {}: editors need 0 < edit_rate <= 10000", g.name);
            }
            if !(0.0..=10_000.0).contains(&g.cursor_rate) {
                bail!("group {}: cursor_rate must be between 0 and 10000", g.name);
            }
            if g.role == Role::Replay {
                if g.traces.is_empty() {
                    bail!("group {}: a replay group needs traces", g.name);
                }
                if !(g.speed > 0.0 && g.speed <= 1_000.0 && g.max_pause_s > 0.0 && g.fallback_rate > 0.0) {
                    bail!("group {}: speed must be in (0, 1000], max_pause_s and fallback_rate positive", g.name);
                }
                if g.fallback_rate > 10_000.0 {
                    bail!("group {}: fallback_rate at most 10000", g.name);
                }
            } else if !g.traces.is_empty() {
                bail!("group {}: traces are for replay groups", g.name);
            }
        }
        // A replayed document's text is checked exactly: only its authors may edit it.
        for g in self.groups.iter().filter(|g| g.role == Role::Replay) {
            for e in self.groups.iter().filter(|e| e.role == Role::Editor) {
                if e.doc_prefix == g.doc_prefix {
                    bail!(
                        "groups {} and {}: editors may not edit the documents a replay group replays",
                        e.name,
                        g.name
                    );
                }
            }
        }
        if let Some(p) = &self.preload
            && !(p.docs > 0 && p.ops > 0 && (1..=256).contains(&p.writers) && p.ops <= 10_000_000)
        {
            bail!("preload: docs and ops must be positive (ops at most 10M), writers 1 to 256");
        }
        if let Some(x) = &self.search {
            if !(x.p99_ms > 0.0 && x.factor > 1.0 && (1..=50).contains(&x.max_steps)) {
                bail!("search: p99_ms must be positive, factor above 1 and max_steps 1 to 50");
            }
            if !self.groups.iter().any(|g| g.role == Role::Editor) {
                bail!("search: a max-throughput search needs editors");
            }
        }
        if self.users() > MAX_USERS {
            bail!("{} users: at most {MAX_USERS}", self.users());
        }
        Ok(())
    }

    /// Users in all.
    pub fn users(&self) -> usize {
        self.groups.iter().map(|g| g.users_per_doc * g.docs.max(1)).sum()
    }

    /// The steady stage's length.
    pub fn steady(&self) -> Duration {
        Duration::from_secs_f64(self.stages.steady_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(!s.description.is_empty(), "{}: no description", path.display());
                for t in s.groups.iter().flat_map(|g| &g.traces) {
                    assert!(t.is_file(), "{}: no trace {}", path.display(), t.display());
                }
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.starts_with("# "), "{}: documented at the top", path.display());
                n += 1;
            }
        }
        assert!(n >= 9, "{n} scenarios");
    }

    #[test]
    fn search_steps_and_verdicts() {
        let x = Search { p99_ms: 50.0, factor: 1.5, max_steps: 8 };
        assert_eq!(x.multiplier(0), 1.0);
        assert!((x.multiplier(2) - 2.25).abs() < 1e-12);
        assert!(x.passed(true, 0, 49.0, 1000, 990));
        assert!(!x.passed(true, 0, 51.0, 1000, 1000), "over the SLO");
        assert!(!x.passed(false, 0, 10.0, 1000, 1000), "did not converge");
        assert!(!x.passed(true, 1, 10.0, 1000, 1000), "errors");
        assert!(!x.passed(true, 0, 10.0, 1000, 900), "fell behind its offered load");
        assert!(!x.passed(true, 0, 0.0, 0, 0), "measured nothing");
    }

    #[test]
    fn parses_and_validates() {
        let s: Scenario = toml::from_str(
            r#"
            name = "t"
            [stages]
            ramp_up_s = 1
            steady_s = 5
            [[groups]]
            name = "w"
            role = "editor"
            docs = 2
            users_per_doc = 3
            edit_rate = 5
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.users(), 6);
        let mut bad = s.clone();
        bad.groups[0].edit_rate = 0.0;
        assert!(bad.validate().unwrap_err().to_string().contains("edit_rate"));
        let mut bad = s;
        bad.stages.steady_s = 0.0;
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Scenario>("name = \"x\"\nbogus = 1\n[stages]\nramp_up_s=0\nsteady_s=1\n").is_err());
    }

    #[test]
    fn replay_groups_are_checked_and_their_traces_found_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
            name = "r"
            [stages]
            ramp_up_s = 1
            steady_s = 5
            [[groups]]
            name = "authors"
            role = "replay"
            docs = 2
            doc_prefix = "trace"
            users_per_doc = 3
            traces = ["t/a.json.gz", "/abs/b.json"]
            speed = 2
        "#;
        std::fs::write(dir.path().join("r.toml"), text).unwrap();
        let s = Scenario::load(&dir.path().join("r.toml")).unwrap();
        assert_eq!(s.groups[0].traces[0], dir.path().join("t/a.json.gz"));
        assert_eq!(s.groups[0].traces[1], PathBuf::from("/abs/b.json"));
        assert_eq!((s.groups[0].max_pause_s, s.groups[0].fallback_rate), (2.0, 5.0));
        let mut bad = s.clone();
        bad.groups[0].traces.clear();
        assert!(bad.validate().unwrap_err().to_string().contains("needs traces"));
        let mut bad = s.clone();
        bad.groups[0].speed = 0.0;
        assert!(bad.validate().is_err());
        let mut bad = s;
        let mut editors = bad.groups[0].clone();
        editors.role = Role::Editor;
        editors.edit_rate = 1.0;
        editors.traces.clear();
        bad.groups.push(editors);
        assert!(bad.validate().unwrap_err().to_string().contains("may not edit"));
    }
}
