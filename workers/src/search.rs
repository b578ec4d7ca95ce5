//! Full-text search: a tantivy index of document titles and text (in `<data_dir>/search`),
//! written only by the search worker, read by `GET /api/search` through
//! [`tandem_control::search::SearchIndex`].
//!
//! The worker follows `document-edits`. It keeps each document's text by applying the
//! feed's ops to the text it indexed (each indexed document stores its text and revision),
//! so it never reads the document back; revisions at or below the indexed one are skipped,
//! which makes redelivery harmless. Changes collect in memory per document (debounced: a
//! batch collects events for up to 0.3 s) and are written in one commit per batch, before
//! the batch's offsets are committed, so a crash re-reads what the index does not hold. A revision gap (an index lost or made
//! before the feed existed) is dead-lettered with the fix: `tandem reindex`, which rebuilds
//! the index from the op log.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_control::search::Hit;
use tandem_engine::{Delta, Document};
use tandem_events::{Envelope, Event, Topic};
use tantivy::collector::TopDocs;
use tantivy::query::{
    BitSetDocSet, BooleanQuery, ConstScorer, EnableScoring, Explanation, Occur, Query, QueryParser, Scorer, TermQuery,
    Weight,
};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use crate::{Failure, Worker};

/// The worker's consumer group.
pub const GROUP: &str = "search";
/// The writer's memory budget.
const WRITER_HEAP: usize = 64 * 1024 * 1024;
/// The text fields' analyzer.
const ANALYZER: &str = "tandem";
/// How long a batch collects events before its commit: a few commits a second at most, so
/// commits (each a new segment, an fsync and a reader reload) stay cheap at any edit rate,
/// within the 2 s from ack to searchable with the commit's own time.
const LINGER: Duration = Duration::from_millis(300);
/// Characters of text in a snippet.
const SNIPPET_CHARS: usize = 180;

/// The index directory in a data directory.
pub fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("search")
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    id: Field,
    title: Field,
    body: Field,
    rev: Field,
}

/// The index, for queries (any number of threads) and for its one writer.
pub struct SearchIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    parser: QueryParser,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// A document as the index holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexedDoc {
    /// Its title.
    pub title: String,
    /// Its text (embeds as U+FFFC).
    pub text: String,
    /// The revision the text is at.
    pub rev: u64,
}

impl SearchIndex {
    /// Opens (or creates) the index in `dir`. Queries see each commit within moments, also
    /// when another process writes it.
    pub fn open(dir: &Path) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            id: schema.add_text_field("id", STRING | STORED),
            title: schema.add_text_field("title", text.clone()),
            body: schema.add_text_field("body", text),
            rev: schema.add_u64_field("rev", STORED | INDEXED),
        };
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| format!("opening the search index in {}: {e}", dir.display()))?;
        let index = Index::open_or_create(directory, schema.build())
            .map_err(|e| format!("opening the search index in {}: {e}", dir.display()))?;
        // Words in any script, lower-cased and with accents folded ("cafe" finds "café").
        let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(64))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build();
        index.tokenizers().register(ANALYZER, analyzer);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|e| format!("reading the search index in {}: {e}", dir.display()))?;
        let mut parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
        parser.set_field_boost(fields.title, 2.0);
        parser.set_conjunction_by_default();
        Ok(Arc::new(Self { dir: dir.to_owned(), index, reader, fields, parser }))
    }

    /// Its one writer, indexing on every CPU (for rebuilds); an error names the other writer
    /// when one holds the index.
    pub fn writer(&self) -> Result<IndexWriter, String> {
        self.writer_with_threads(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Its one writer, indexing on `threads` threads. Each thread writes its own segment per
    /// commit, so the worker, which commits often, uses one: fewer segments, fewer merges.
    pub fn writer_with_threads(&self, threads: usize) -> Result<IndexWriter, String> {
        self.index.writer_with_num_threads(threads.clamp(1, 8), WRITER_HEAP).map_err(|e| match e {
            tantivy::TantivyError::LockFailure(..) => format!(
                "the search index in {} is being written by another process (a running `tandem serve` or \
                 `tandem worker --topics search`); stop it first",
                self.dir.display()
            ),
            e => format!("opening the search index in {} for writing: {e}", self.dir.display()),
        })
    }

    /// Documents in the index (as of the last reload).
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Makes the last commit visible to queries now.
    pub fn reload(&self) -> Result<(), String> {
        self.reader.reload().map_err(|e| format!("reloading the search index: {e}"))
    }

    /// `doc` as indexed.
    pub fn get(&self, doc: &str) -> Result<Option<IndexedDoc>, String> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.fields.id, doc), IndexRecordOption::Basic);
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(|e| format!("looking up {doc} in the search index: {e}"))?;
        let Some((_, address)) = top.first() else { return Ok(None) };
        let stored: TantivyDocument =
            searcher.doc(*address).map_err(|e| format!("reading {doc} from the index: {e}"))?;
        let text = |f: Field| stored.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let rev = stored.get_first(self.fields.rev).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Some(IndexedDoc { title: text(self.fields.title), text: text(self.fields.body), rev }))
    }

    /// Replaces `doc` in `writer` (none: deletes it); visible after the writer's commit.
    pub fn put(&self, writer: &IndexWriter, doc: &str, indexed: Option<&IndexedDoc>) -> Result<(), String> {
        writer.delete_term(Term::from_field_text(self.fields.id, doc));
        if let Some(d) = indexed {
            let f = self.fields;
            writer
                .add_document(doc!(f.id => doc, f.title => d.title.as_str(), f.body => d.text.as_str(), f.rev => d.rev))
                .map_err(|e| format!("indexing {doc}: {e}"))?;
        }
        Ok(())
    }
}

impl tandem_control::search::SearchIndex for SearchIndex {
    fn search(&self, text: &str, only: Option<&[String]>, offset: usize, count: usize) -> Result<Vec<Hit>, String> {
        if count == 0 || text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let f = self.fields;
        // Lenient: what a person types (a stray quote, a colon) is searched for, not refused.
        let (words, _) = self.parser.parse_query_lenient(text);
        let query: Box<dyn Query> = match only {
            Some(ids) => {
                let terms = ids.iter().map(|id| Term::from_field_text(f.id, id)).collect();
                let allowed = Readable { field: f.id, terms: Arc::new(terms) };
                Box::new(BooleanQuery::new(vec![(Occur::Must, words.box_clone()), (Occur::Must, Box::new(allowed))]))
            }
            None => words.box_clone(),
        };
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(count).and_offset(offset).order_by_score())
            .map_err(|e| format!("searching: {e}"))?;
        let mut snippets =
            SnippetGenerator::create(&searcher, &*words, f.body).map_err(|e| format!("snippets: {e}"))?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let stored: TantivyDocument = searcher.doc(address).map_err(|e| format!("reading a hit: {e}"))?;
            let field = |f: Field| stored.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let snippet = snippets.snippet_from_doc(&stored);
            let (snippet, highlights) = if snippet.fragment().is_empty() {
                // The words matched the title only: the text's start stands in.
                let body = field(f.body);
                (body.chars().take(SNIPPET_CHARS).collect(), Vec::new())
            } else {
                (snippet.fragment().to_owned(), snippet.highlighted().iter().map(|r| (r.start, r.end)).collect())
            };
            hits.push(Hit { doc: field(f.id), title: field(f.title), score, snippet, highlights });
        }
        Ok(hits)
    }
}

/// The search worker's counters (for `/metrics`).
#[derive(Debug)]
pub struct SearchStats {
    /// Commits to the index.
    pub commits: AtomicU64,
    /// Documents written (added, replaced or deleted).
    pub writes: AtomicU64,
    /// Index lag per op: from its commit (its ack) to searchable, ms.
    pub lag_ms: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for SearchStats {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            lag_ms: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 2).expect("valid bounds")),
        }
    }
}

impl SearchStats {
    /// The lag's quantiles (ms) and how many ops it covers: (p50, p99, max, count).
    pub fn lag(&self) -> (u64, u64, u64, u64) {
        let h = self.lag_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max(), h.len())
    }
}

/// A document being changed since the last commit.
enum Pending {
    Live { title: String, doc: Box<Document>, rev: u64 },
    Deleted,
}

/// The search worker: the index's only writer.
pub struct Search {
    index: Arc<SearchIndex>,
    writer: Arc<Mutex<IndexWriter>>,
    pending: HashMap<String, Pending>,
    /// When each op applied since the last commit was made (for the lag).
    made_ms: Vec<u64>,
    stats: Arc<SearchStats>,
    group: &'static str,
}

impl Search {
    /// The worker for `index` (taking its writer: an error when another process has it).
    pub fn new(index: Arc<SearchIndex>, stats: Arc<SearchStats>) -> Result<Self, String> {
        let writer = Arc::new(Mutex::new(index.writer_with_threads(1)?));
        Ok(Self { index, writer, pending: HashMap::new(), made_ms: Vec::new(), stats, group: GROUP })
    }

    /// Reads the feed in consumer group `group` instead of [`GROUP`]. Each index must see the
    /// whole feed: in a cluster every node keeps its own index (it answers its own queries),
    /// so each node reads in a group of its own (`search.<node>`).
    #[must_use]
    pub fn in_group(mut self, group: &'static str) -> Self {
        self.group = group;
        self
    }

    /// `doc`'s pending state, read from the index the first time.
    fn pending(&mut self, doc: &str) -> Result<&mut Pending, Failure> {
        if !self.pending.contains_key(doc) {
            let indexed = self.index.get(doc).map_err(Failure::Transient)?.unwrap_or_default();
            let live = Pending::Live {
                title: indexed.title,
                doc: Box::new(Document::from_text(&indexed.text)),
                rev: indexed.rev,
            };
            self.pending.insert(doc.to_owned(), live);
        }
        Ok(self.pending.get_mut(doc).expect("inserted above"))
    }

    fn apply(&mut self, event: &Event) -> Result<(), Failure> {
        match event {
            Event::DocumentCreated { doc, title, .. } | Event::DocumentRenamed { doc, title, .. } => {
                if let Pending::Live { title: t, .. } = self.pending(doc)? {
                    t.clone_from(title);
                }
            }
            Event::DocumentDeleted { doc, .. } => {
                self.pending.insert(doc.clone(), Pending::Deleted);
            }
            Event::Edited { doc: id, changes: Some(changes), .. } => {
                let mut made = Vec::with_capacity(changes.len());
                let Pending::Live { doc, rev, .. } = self.pending(id)? else { return Ok(()) };
                for change in changes {
                    if change.rev <= *rev {
                        continue;
                    }
                    if change.rev != *rev + 1 {
                        return Err(Failure::Permanent(format!(
                            "{id}: the index holds revision {rev} and the feed resumes at {}; run `tandem reindex`",
                            change.rev
                        )));
                    }
                    let delta: Delta = serde_json::from_value(change.delta.clone()).map_err(|e| {
                        Failure::Permanent(format!("{id} revision {}: an unreadable delta: {e}", change.rev))
                    })?;
                    doc.apply(&delta).map_err(|e| {
                        Failure::Permanent(format!(
                            "{id} revision {}: does not apply to the indexed text ({e}); run `tandem reindex`",
                            change.rev
                        ))
                    })?;
                    *rev = change.rev;
                    made.push(change.at_ms);
                }
                self.made_ms.extend(made);
            }
            Event::Edited { doc, changes: None, .. } => {
                return Err(Failure::Permanent(format!("{doc}: an edit without its ops; run `tandem reindex`")));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Worker for Search {
    fn group(&self) -> &'static str {
        self.group
    }

    fn topic(&self) -> Topic {
        Topic::DocumentEdits
    }

    fn batch(&self) -> usize {
        4096
    }

    fn linger(&self) -> Duration {
        LINGER
    }

    fn handle(&mut self, event: &Envelope) -> impl Future<Output = Result<(), Failure>> + Send {
        std::future::ready(self.apply(&event.event))
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let (index, writer, stats) = (Arc::clone(&self.index), Arc::clone(&self.writer), Arc::clone(&self.stats));
        let written = tokio::task::spawn_blocking(move || write(&index, &writer, &stats, pending))
            .await
            .map_err(|e| format!("the index writer task failed: {e}"))?;
        match written {
            Ok(()) => {
                let now = u64::try_from(tandem_control::now_ms()).unwrap_or(0);
                let mut lag = self.stats.lag_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for made in self.made_ms.drain(..) {
                    lag.saturating_record(now.saturating_sub(made).max(1));
                }
                Ok(())
            }
            Err((why, pending)) => {
                // Nothing of it is in the index: kept for the next try.
                self.pending = pending;
                Err(why)
            }
        }
    }
}

/// Writes `pending` and commits; on failure, rolls back and gives it back.
fn write(
    index: &SearchIndex,
    writer: &Mutex<IndexWriter>,
    stats: &SearchStats,
    pending: HashMap<String, Pending>,
) -> Result<(), (String, HashMap<String, Pending>)> {
    let mut writer = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut failed = None;
    let mut texts: Vec<(&String, Option<IndexedDoc>)> = Vec::with_capacity(pending.len());
    for (id, p) in &pending {
        texts.push((
            id,
            match p {
                Pending::Live { title, doc, rev } => {
                    Some(IndexedDoc { title: title.clone(), text: doc.text(), rev: *rev })
                }
                Pending::Deleted => None,
            },
        ));
    }
    for (id, indexed) in &texts {
        if let Err(e) = index.put(&writer, id, indexed.as_ref()) {
            failed = Some(e);
            break;
        }
    }
    drop(texts);
    let committed = match failed {
        Some(e) => Err(e),
        None => writer.commit().map(|_| ()).map_err(|e| format!("committing the search index: {e}")),
    };
    if let Err(why) = committed {
        let _ = writer.rollback();
        return Err((why, pending));
    }
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats.writes.fetch_add(pending.len() as u64, Ordering::Relaxed);
    drop(writer);
    // Queries in this process see it now (others within moments).
    index.reload().map_err(|e| (e, HashMap::new()))
}

/// Matches the documents whose id is among `terms` (the caller's readable documents), with no
/// score of its own. Per segment, each id is looked up in the id field's dictionary and its
/// document set in a bit set: a `TermSetQuery` instead builds an automaton of the ids and
/// walks the whole dictionary with it, which over 100,000 documents took most of a query.
#[derive(Clone, Debug)]
struct Readable {
    field: Field,
    terms: Arc<Vec<Term>>,
}

impl Query for Readable {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for Readable {
    fn scorer(&self, reader: &tantivy::SegmentReader, boost: tantivy::Score) -> tantivy::Result<Box<dyn Scorer>> {
        use tantivy::DocSet as _;
        let index = reader.inverted_index(self.field)?;
        let mut docs = tantivy::BitSet::with_max_value(reader.max_doc());
        for term in self.terms.iter() {
            if let Some(mut postings) = index.read_postings(term, IndexRecordOption::Basic)? {
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    docs.insert(doc);
                    doc = postings.advance();
                }
            }
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost * 0.0)))
    }

    fn explain(&self, reader: &tantivy::SegmentReader, doc: tantivy::DocId) -> tantivy::Result<Explanation> {
        use tantivy::DocSet as _;
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) == doc {
            Ok(Explanation::new("readable", 0.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument("not a readable document".into()))
        }
    }
}
