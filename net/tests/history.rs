//! History over the protocol: `get_revision` gives the document at every revision (from
//! snapshots plus ops in the op log, also after a restart), `list_revisions` gives authors and
//! times, `get_changes` marks what each author inserted, deleted and formatted between two
//! revisions, and the refusals (`no_such_revision`, `history_unavailable`) leave the document
//! open.

mod support;

use std::time::Duration;

use tandem_engine::{Attributes, ClientId, Delta, Document};
use tandem_net::client::ClientError;
use tandem_net::protocol::{Encoding, ErrorCode};

fn append(c: &tandem_net::client::Client, doc: &str, text: &str) -> Delta {
    let len = c.session().document(doc).unwrap().len();
    Delta::new().retain(len, Attributes::NONE).insert(text, Attributes::NONE)
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_revision_can_be_read_back_and_listed() {
    let tweak = |c: &mut tandem_net::ServerConfig| {
        // Snapshots every 7 ops: reading a revision crosses snapshots and op ranges.
        c.storage.snapshot_every_ops = 7;
        c.max_messages_per_s = 10_000;
    };
    let server = support::server(2, tweak);
    let addr = server.local_addr();
    let started_ms = tandem_storage::now_ms();
    let mut writer = support::client(addr, 31, Encoding::Binary);
    writer.open("hist").unwrap();
    // One revision per edit (each waits for its ack); the content after each is kept.
    let mut contents = vec![Document::new().to_delta()];
    for i in 0..40 {
        let delta = if i % 6 == 5 {
            Delta::new().retain(2, Attributes::NONE).delete(3)
        } else {
            append(&writer, "hist", &format!("w{i} "))
        };
        writer.edit("hist", delta).unwrap();
        writer.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
        contents.push(writer.session().document("hist").unwrap().to_delta());
    }
    let latest = writer.session().doc_state("hist").unwrap().rev();
    assert_eq!(latest, 40);

    // A second user, on the JSON encoding, reads history (documents on either core).
    let mut reader = support::client(addr, 32, Encoding::Json);
    reader.open("hist").unwrap();
    for rev in 0..=latest {
        assert_eq!(reader.get_revision("hist", rev).unwrap(), contents[rev as usize], "revision {rev}");
    }
    let (oldest, at, revs) = reader.list_revisions("hist", 10, 5).unwrap();
    assert_eq!((oldest, at), (0, 40));
    assert_eq!(revs.iter().map(|r| r.rev).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    for r in &revs {
        assert_eq!((r.author, r.client_seq), (ClientId(31), r.rev), "revision {}", r.rev);
        assert!(r.time_ms >= started_ms && r.time_ms <= tandem_storage::now_ms(), "time {}", r.time_ms);
    }
    let (_, _, tail) = reader.list_revisions("hist", 38, 100).unwrap();
    assert_eq!(tail.len(), 3);
    assert!(reader.list_revisions("hist", 41, 10).unwrap().2.is_empty());

    // A revision from the future is refused, and the document stays open: edits go on.
    assert_eq!(refused(reader.get_revision("hist", 41)), ErrorCode::NoSuchRevision);
    assert!(reader.session().is_open("hist"));
    reader.edit("hist", append(&reader, "hist", "reader")).unwrap();
    reader.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
    // History of a document not open is refused.
    assert!(matches!(reader.get_revision("elsewhere", 0), Err(ClientError::Edit(_))));

    // After a restart, history comes from the log on disk.
    let support::TestServer { handle, dir } = server;
    drop(handle);
    let mut config = tandem_net::ServerConfig { listen: addr, cores: 2, ..tandem_net::ServerConfig::default() };
    tweak(&mut config);
    config.storage.data_dir = dir.path().to_path_buf();
    let _second = tandem_net::start(config).expect("restarts on the same data");
    let mut later = support::client(addr, 33, Encoding::Binary);
    later.open("hist").unwrap();
    for rev in [0, 1, 6, 7, 8, 20, 33, 40] {
        assert_eq!(later.get_revision("hist", rev).unwrap(), contents[rev as usize], "after restart, revision {rev}");
    }
    assert_eq!(later.list_revisions("hist", 41, 1).unwrap().2[0].author, ClientId(32));
}

#[test]
fn without_an_op_log_only_the_latest_revision_is_kept() {
    let server = support::server(1, |c| c.storage.oplog = tandem_net::OplogKind::None);
    let mut c = support::client(server.local_addr(), 41, Encoding::Json);
    c.open("mem").unwrap();
    for i in 0..3 {
        c.edit("mem", append(&c, "mem", &format!("{i}"))).unwrap();
        c.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
    }
    let now = c.session().document("mem").unwrap().to_delta();
    assert_eq!(c.get_revision("mem", 3).unwrap(), now);
    assert_eq!(refused(c.get_revision("mem", 1)), ErrorCode::HistoryUnavailable);
    assert_eq!(refused(c.list_revisions("mem", 1, 10)), ErrorCode::HistoryUnavailable);
    assert!(c.session().is_open("mem"), "a history refusal leaves the document open");
}

#[test]
fn changes_between_two_revisions_name_their_authors() {
    let server = support::server(2, |_| {});
    let addr = server.local_addr();
    let mut ada = support::client(addr, 0xa, Encoding::Binary);
    let mut bob = support::client(addr, 0xb, Encoding::Json);
    ada.open("changes").unwrap();
    bob.open("changes").unwrap();
    ada.edit("changes", Delta::new().insert("The quick fox", Attributes::NONE)).unwrap();
    ada.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
    let from = ada.session().doc_state("changes").unwrap().rev();
    bob.wait_until(Duration::from_secs(30), "caught up", |s| s.doc_state("changes").is_some_and(|d| d.rev() == from))
        .unwrap();
    // Ada replaces "quick", Bob makes "fox" bold and adds "!".
    ada.edit("changes", Delta::new().retain(4, Attributes::NONE).delete(6).insert("slow ", Attributes::NONE)).unwrap();
    ada.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
    bob.wait_until(Duration::from_secs(30), "caught up", |s| s.doc_state("changes").is_some_and(|d| d.rev() > from))
        .unwrap();
    let bold: Attributes = [("bold", true)].into_iter().collect();
    bob.edit("changes", Delta::new().retain(9, Attributes::NONE).retain(3, bold).insert("!", Attributes::NONE))
        .unwrap();
    bob.wait_until(Duration::from_secs(30), "ack", |s| s.is_synced()).unwrap();
    let to = bob.session().doc_state("changes").unwrap().rev();

    let changes = ada.get_changes("changes", from, to).unwrap();
    let (a, b) = (ClientId(0xa).to_string(), ClientId(0xb).to_string());
    let expected = serde_json::json!({"ops": [
        {"insert": "The "},
        {"insert": "slow ", "attributes": {"tandem_inserted": a}},
        {"insert": "quick ", "attributes": {"tandem_deleted": a}},
        {"insert": "fox", "attributes": {"bold": true, "tandem_formatted": b}},
        {"insert": "!", "attributes": {"tandem_inserted": b}},
    ]});
    assert_eq!(serde_json::to_value(&changes).unwrap(), expected);
    // From the empty document: all of it inserted, what Ada replaced gone without a trace.
    let all = bob.get_changes("changes", 0, to).unwrap();
    let expected = serde_json::json!({"ops": [
        {"insert": "The slow ", "attributes": {"tandem_inserted": a}},
        {"insert": "fox", "attributes": {"bold": true, "tandem_formatted": b, "tandem_inserted": a}},
        {"insert": "!", "attributes": {"tandem_inserted": b}},
    ]});
    assert_eq!(serde_json::to_value(&all).unwrap(), expected);

    // Refusals leave the document open.
    let refused = |r: Result<Delta, ClientError>| match r {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused(ada.get_changes("changes", 0, to + 1)), ErrorCode::NoSuchRevision);
    assert_eq!(refused(ada.get_changes("changes", to, from)), ErrorCode::NoSuchRevision);
    assert!(ada.session().is_open("changes"));
}
