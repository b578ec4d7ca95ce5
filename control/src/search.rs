//! What the REST API needs of the full-text index (the search worker's, in `tandem-workers`):
//! ranked hits with snippets, optionally only among given documents. Who may read what is
//! decided here, by the API, never by the index or the client.

/// One hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// The document.
    pub doc: String,
    /// Its title as indexed.
    pub title: String,
    /// Its rank score (higher first).
    pub score: f32,
    /// A passage of its text around the matches (plain text).
    pub snippet: String,
    /// The matched words in `snippet`: byte ranges.
    pub highlights: Vec<(usize, usize)>,
}

/// A full-text index the API can query (blocking: call it on a blocking thread).
pub trait SearchIndex: Send + Sync {
    /// Hits for `query`, best first, skipping `offset` and returning at most `count`; with
    /// `only`, just those documents. An empty or unusable query gives no hits, not an error.
    fn search(&self, query: &str, only: Option<&[String]>, offset: usize, count: usize) -> Result<Vec<Hit>, String>;
}
