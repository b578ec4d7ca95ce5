//! The search index's access filter: a query limited to some documents finds those only,
//! and a replaced document is found by its new text only.

use std::collections::BTreeSet;

use tandem_control::search::SearchIndex as _;
use tandem_workers::search::{IndexedDoc, SearchIndex};

fn found(index: &SearchIndex, words: &str, only: Option<&[&str]>) -> BTreeSet<String> {
    let only: Option<Vec<String>> = only.map(|ids| ids.iter().map(|s| (*s).to_owned()).collect());
    index.search(words, only.as_deref(), 0, 50).unwrap().into_iter().map(|h| h.doc).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_query_limited_to_some_documents_finds_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(dir.path()).unwrap();
    let put = |doc: &str, text: &str| {
        let mut writer = index.writer().unwrap();
        let indexed = IndexedDoc { title: format!("Title {doc}"), text: text.into(), rev: 1 };
        index.put(&writer, doc, Some(&indexed)).unwrap();
        writer.commit().unwrap();
        index.reload().unwrap();
    };
    // One segment per commit: the filter must hold across segments.
    put("a", "apple pie");
    put("b", "apple tart");
    put("c", "apple crumble");
    assert_eq!(found(&index, "apple", None), set(&["a", "b", "c"]));
    assert_eq!(found(&index, "apple", Some(&["a", "c"])), set(&["a", "c"]));
    assert_eq!(found(&index, "apple", Some(&["c", "nope"])), set(&["c"]));
    assert_eq!(found(&index, "apple", Some(&[])), set(&[]));
    // "a" replaced: its old text (still in its old segment, deleted) is not found.
    put("a", "pear");
    assert_eq!(found(&index, "apple", Some(&["a", "c"])), set(&["c"]));
    assert_eq!(found(&index, "pear", Some(&["a"])), set(&["a"]));
    assert_eq!(found(&index, "pear", Some(&["b"])), set(&[]));
}
