//! Trace replay: real editing histories typed into Tandem at their recorded speed.
//!
//! The traces' positions are for a linear history (each patch applies to the text the ones
//! before it left). Several authors typing one trace's patches into the same text at once
//! would need the trace's causal graph mapped through OT, and the result of their concurrent
//! inserts at one spot would be the server's tie-break, not the trace's text. So each
//! author of a replayed document gets a **section** of its own: before the run, a setup
//! client appends a separator line per author (`"\n"` followed by that author's trace's
//! start text); author `a` then replays its trace with every position offset by where its
//! section starts, a position it keeps by transforming it through everyone else's ops. The
//! authors edit one document truly concurrently (every op transformed against the others'
//! in flight), and at the end the document's text must be exactly the prefix it had before
//! the setup followed by, for every author, `"\n"` and the text its trace leaves after the
//! transactions that author sent. That is checked against the server's copy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tandem_engine::{Attributes, ClientId, Delta, Document};
use tandem_traces::{Patch, Trace};

use crate::run::RunOptions;
use crate::scenario::{Role, Scenario};

/// A trace with its replay schedule.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) trace: Trace,
    /// When each transaction is due, from the start of the replay.
    pub(crate) schedule: Vec<Duration>,
}

/// A replayed document: its authors' traces and where the setup put their sections.
#[derive(Debug)]
pub(crate) struct ReplayDoc {
    pub(crate) name: String,
    /// Author `a` replays `traces[a]`.
    pub(crate) traces: Vec<Arc<Loaded>>,
    /// Characters before the setup's text (the document's length when the setup ran).
    pub(crate) prefix_len: usize,
    /// The revision the setup's op made; authors must find the document there on opening.
    pub(crate) setup_rev: u64,
    /// This document's replay starts this long after the steady stage does (documents out
    /// of step, as real ones are).
    pub(crate) phase: Duration,
}

/// One author: the document and which section is its own.
#[derive(Clone, Debug)]
pub(crate) struct Author {
    pub(crate) doc: Arc<ReplayDoc>,
    pub(crate) index: usize,
}

/// What an author keeps while replaying.
#[derive(Debug)]
pub(crate) struct AuthorState {
    pub(crate) author: Author,
    /// Where the section's text starts in the local copy, once the document is open.
    pub(crate) section: Option<usize>,
    /// The section's length in chars (the author is its only editor).
    pub(crate) section_len: usize,
    /// Transactions sent.
    pub(crate) sent: usize,
    /// What stopped the replay, if anything.
    pub(crate) broken: Option<String>,
    /// Where in the section the last edit ended (the author's caret).
    pub(crate) last_edit_at: usize,
}

/// The text the setup appends: per author, a separator line and its trace's start text.
fn setup_text(traces: &[Arc<Loaded>]) -> String {
    traces.iter().map(|l| format!("\n{}", l.trace.start)).collect()
}

impl ReplayDoc {
    /// Where author `a`'s section starts right after the setup.
    pub(crate) fn section_start(&self, a: usize) -> usize {
        self.prefix_len + self.traces[..a].iter().map(|l| 1 + l.trace.start.chars().count()).sum::<usize>() + 1
    }

    /// What the document's text must end with once author `a` has sent `sent[a]` of its
    /// transactions, for every author.
    pub(crate) fn expected_suffix(&self, sent: &[usize]) -> Result<String> {
        let mut out = String::new();
        for (l, &n) in self.traces.iter().zip(sent) {
            out.push('\n');
            out.push_str(&l.trace.text_after(n)?);
        }
        Ok(out)
    }

    /// Checks the server's text; `None` when it is right, else what is wrong.
    pub(crate) fn check(&self, text: &str, sent: &[usize]) -> Option<String> {
        let expected = match self.expected_suffix(sent) {
            Ok(e) => e,
            Err(e) => return Some(format!("{}: {e:#}", self.name)),
        };
        let (have, want) = (text.chars().count(), self.prefix_len + expected.chars().count());
        if have != want {
            return Some(format!(
                "{}: the text is {have} chars, the traces' {} transactions leave {want}",
                self.name,
                sent.iter().sum::<usize>()
            ));
        }
        if !text.ends_with(&expected) {
            let at = text.chars().skip(self.prefix_len).zip(expected.chars()).take_while(|(a, b)| a == b).count();
            return Some(format!(
                "{}: the text differs from the traces' from char {}",
                self.name,
                self.prefix_len + at
            ));
        }
        None
    }
}

impl AuthorState {
    pub(crate) fn new(author: Author) -> Self {
        let section_len = author.doc.traces[author.index].trace.start.chars().count();
        Self { author, section: None, section_len, sent: 0, broken: None, last_edit_at: 0 }
    }

    /// The document opened at revision `rev`: the section is where the setup put it, unless
    /// someone edited the document since (then the author cannot know where it is).
    pub(crate) fn opened(&mut self, rev: u64) -> Result<(), String> {
        if rev != self.author.doc.setup_rev {
            return Err(format!(
                "{}: opened at revision {rev}, not the setup's {}: an author joined after the replay began",
                self.author.doc.name, self.author.doc.setup_rev
            ));
        }
        self.section = Some(self.author.doc.section_start(self.author.index));
        Ok(())
    }

    /// Someone else's op arrived (already transformed for the local copy).
    pub(crate) fn remote(&mut self, delta: &Delta) {
        if let Some(s) = &mut self.section {
            // Others only edit before or after this section, never at its first position.
            *s = delta.transform_position(*s, true);
        }
    }

    /// Transaction `i` of this author's trace as one delta on the local copy, or why it
    /// does not fit the section (a broken trace).
    pub(crate) fn delta(&mut self, i: usize) -> Result<Delta, String> {
        let loaded = &self.author.doc.traces[self.author.index];
        let start = self.section.ok_or("the section is not known yet")?;
        let mut out: Option<Delta> = None;
        for Patch(pos, del, ins) in &loaded.trace.txns[i].patches {
            if pos + del > self.section_len {
                return Err(format!(
                    "{} txn {i}: edits {pos}..{} of a {}-char section",
                    loaded.trace.name,
                    pos + del,
                    self.section_len
                ));
            }
            let d = Delta::new().retain(start + pos, Attributes::NONE).insert(ins, Attributes::NONE).delete(*del);
            self.section_len = self.section_len - del + ins.chars().count();
            self.last_edit_at = pos + ins.chars().count();
            out = Some(match out {
                Some(o) => o.compose(&d),
                None => d,
            });
        }
        Ok(out.unwrap_or_default())
    }
}

/// Loads every trace the scenario's replay groups name, once each, with its schedule.
/// Checks the traces are linear and replay to their recorded end text.
fn load_traces(scenario: &Scenario) -> Result<HashMap<(PathBuf, usize), Arc<Loaded>>> {
    let mut out = HashMap::new();
    for (gi, g) in scenario.groups.iter().enumerate().filter(|(_, g)| g.role == Role::Replay) {
        for path in &g.traces {
            let trace = Trace::load(path)?;
            if !trace.is_linear() {
                bail!(
                    "{}: a concurrent trace (positions per author's view); replay its linearized \
                     (sequential) version",
                    path.display()
                );
            }
            let end = trace.text_after(usize::MAX).with_context(|| format!("checking {}", path.display()))?;
            if end != trace.end {
                bail!("{}: its patches do not produce its endContent", path.display());
            }
            let schedule = trace.schedule(g.speed, Duration::from_secs_f64(g.max_pause_s), g.fallback_rate);
            out.insert((path.clone(), gi), Arc::new(Loaded { trace, schedule }));
        }
    }
    Ok(out)
}

/// Documents one setup connection opens (the server's default per-connection limit).
const DOCS_PER_SETUP: usize = 64;

/// Where the setup put a document's sections: what a worker process needs, with the
/// scenario, to rebuild its [`ReplayDoc`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Placement {
    name: String,
    prefix_len: usize,
    setup_rev: u64,
    phase_ms: u64,
}

/// Replayed documents by name.
pub(crate) type Replayed = HashMap<String, Arc<ReplayDoc>>;

/// Every replayed document of the scenario with its authors' traces, in order.
fn replayed_docs(scenario: &Scenario) -> Result<Vec<(String, Vec<Arc<Loaded>>)>> {
    let loaded = load_traces(scenario)?;
    let mut docs = Vec::new();
    for (gi, g) in scenario.groups.iter().enumerate().filter(|(_, g)| g.role == Role::Replay) {
        for d in 0..g.docs {
            let traces = (0..g.users_per_doc)
                .map(|a| Arc::clone(&loaded[&(g.traces[a % g.traces.len()].clone(), gi)]))
                .collect();
            docs.push((scenario.doc_id(&g.doc_name(d)), traces));
        }
    }
    Ok(docs)
}

/// Gets every replayed document ready: loads the traces and appends the authors' sections to
/// each document, returning them by name with their placements. Nothing when the scenario
/// replays nothing.
pub(crate) fn setup(scenario: &Scenario, opts: &RunOptions) -> Result<(Replayed, Vec<Placement>)> {
    if !scenario.groups.iter().any(|g| g.role == Role::Replay) {
        return Ok((HashMap::new(), Vec::new()));
    }
    if opts.protocol != crate::peers::Protocol::Tandem {
        bail!("trace replay is only implemented for Tandem's protocol");
    }
    let docs = replayed_docs(scenario)?;
    let mut out = HashMap::new();
    let mut placements = Vec::new();
    let started = Instant::now();
    for (k, chunk) in docs.chunks(DOCS_PER_SETUP).enumerate() {
        use tandem_net::client::{Client, ClientOptions};
        let options =
            ClientOptions { token: scenario.token_for(0), name: "replay setup".into(), ..ClientOptions::default() };
        let id = ClientId(u64::MAX / 4 + k as u64);
        let mut c = Client::connect(opts.target, id, crate::tls::client_options(options))
            .context("replay setup: connecting")?;
        for (name, traces) in chunk {
            c.open(name).with_context(|| format!("replay setup: opening {name}"))?;
            let prefix_len = c.session().document(name).map_or(0, Document::len);
            let text = setup_text(traces);
            let delta = Delta::new().retain(prefix_len, Attributes::NONE).insert(&text, Attributes::NONE);
            c.edit(name, delta).with_context(|| format!("replay setup: editing {name}"))?;
            c.wait_until(Duration::from_secs(60), "replay setup ack", |s| s.is_synced())
                .with_context(|| format!("replay setup: waiting for {name}'s ack"))?;
            let setup_rev = c.session().doc_state(name).map_or(0, tandem_engine::ClientDoc::rev);
            // Spread over a second, deterministically per document.
            let phase_ms = (placements.len() as u64).wrapping_mul(617) % 1000;
            let placement = Placement { name: name.clone(), prefix_len, setup_rev, phase_ms };
            out.insert(name.clone(), Arc::new(ReplayDoc::placed(&placement, traces.clone())));
            placements.push(placement);
        }
    }
    eprintln!("set up {} replayed document(s) in {:.1} s", out.len(), started.elapsed().as_secs_f64());
    Ok((out, placements))
}

/// The replayed documents as the coordinator's setup placed them (in a worker process).
pub(crate) fn rebuild(scenario: &Scenario, placements: &[Placement]) -> Result<Replayed> {
    if placements.is_empty() {
        return Ok(HashMap::new());
    }
    let docs = replayed_docs(scenario)?;
    if docs.len() != placements.len() {
        bail!("{} replayed documents but {} placements", docs.len(), placements.len());
    }
    let mut out = HashMap::new();
    for ((name, traces), p) in docs.into_iter().zip(placements) {
        if name != p.name {
            bail!("placement for {} given for {name}", p.name);
        }
        out.insert(name, Arc::new(ReplayDoc::placed(p, traces)));
    }
    Ok(out)
}

impl ReplayDoc {
    fn placed(p: &Placement, traces: Vec<Arc<Loaded>>) -> Self {
        Self {
            name: p.name.clone(),
            traces,
            prefix_len: p.prefix_len,
            setup_rev: p.setup_rev,
            phase: Duration::from_millis(p.phase_ms),
        }
    }
}

/// When transaction `i` of `a`'s trace is due.
pub(crate) fn due(a: &Author, replay_from: Instant, i: usize) -> Instant {
    replay_from + a.doc.phase + a.doc.traces[a.index].schedule[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_traces::Txn;

    fn loaded(start: &str, patches: &[&[(usize, usize, &str)]]) -> Arc<Loaded> {
        let txns: Vec<Txn> = patches
            .iter()
            .map(|ps| Txn {
                patches: ps.iter().map(|&(p, d, i)| Patch(p, d, i.to_owned())).collect(),
                time: None,
                parents: Vec::new(),
                agent: None,
            })
            .collect();
        let n = txns.len();
        let trace = Trace { name: "t".into(), start: start.into(), end: String::new(), txns, agents: None };
        Arc::new(Loaded { trace, schedule: (0..n).map(|i| Duration::from_millis(i as u64)).collect() })
    }

    /// Two authors type into their sections of one document through the engine's own
    /// transform, with ops crossing in flight; the text is what the check expects.
    #[test]
    fn concurrent_authors_land_in_their_sections() {
        let a = loaded("", &[&[(0, 0, "hello")], &[(5, 0, " world")], &[(0, 1, "H")]]);
        let b = loaded("xy", &[&[(2, 0, "z")], &[(0, 0, "<")], &[(1, 2, "")]]);
        let doc = Arc::new(ReplayDoc {
            name: "d".into(),
            traces: vec![a, b],
            prefix_len: 3,
            setup_rev: 7,
            phase: Duration::ZERO,
        });
        let mut server = Document::from_text(&format!("pre{}", setup_text(&doc.traces)));
        assert_eq!(server.text(), "pre\n\nxy");
        let mut authors: Vec<AuthorState> =
            (0..2).map(|i| AuthorState::new(Author { doc: Arc::clone(&doc), index: i })).collect();
        for s in &mut authors {
            s.opened(7).unwrap();
        }
        assert!(authors[1].opened(8).unwrap_err().contains("joined after the replay began"));
        authors[1].opened(7).unwrap();
        assert_eq!((authors[0].section, authors[1].section), (Some(4), Some(5)));
        // Each author's copy of the document, and the server applying ops in arrival order.
        let mut copies = [server.clone(), server.clone()];
        for i in 0..3 {
            let d0 = authors[0].delta(i).unwrap();
            let d1 = authors[1].delta(i).unwrap();
            copies[0].apply(&d0).unwrap();
            copies[1].apply(&d1).unwrap();
            // The server takes author 0's op first; author 1's is transformed past it.
            let d1_on_server = d0.transform(&d1, true);
            server.apply(&d0).unwrap();
            server.apply(&d1_on_server).unwrap();
            // Each author receives the other's op transformed past its own.
            let d0_for_1 = d1.transform(&d0, false);
            copies[0].apply(&d1_on_server).unwrap();
            copies[1].apply(&d0_for_1).unwrap();
            authors[0].remote(&d1_on_server);
            authors[1].remote(&d0_for_1);
        }
        assert_eq!(copies[0].text(), server.text());
        assert_eq!(copies[1].text(), server.text());
        assert_eq!(server.text(), "pre\nHello world\n<z");
        assert_eq!(doc.check(&server.text(), &[3, 3]), None);
        assert!(doc.check(&server.text(), &[3, 2]).unwrap().contains("chars"));
        assert!(doc.check("pre\nHello wOrld\n<z", &[3, 3]).unwrap().contains("from char 11"));
        // A patch past the section's end is refused, not sent.
        let bad = loaded("", &[&[(1, 0, "x")]]);
        let doc = Arc::new(ReplayDoc {
            name: "e".into(),
            traces: vec![bad],
            prefix_len: 0,
            setup_rev: 1,
            phase: Duration::ZERO,
        });
        let mut s = AuthorState::new(Author { doc, index: 0 });
        s.opened(1).unwrap();
        assert!(s.delta(0).unwrap_err().contains("edits 1..1 of a 0-char section"));
    }
}
