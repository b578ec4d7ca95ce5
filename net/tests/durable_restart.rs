//! Documents outlive the server: edits made before a restart are there after it (loaded from
//! snapshots and the op log), an op whose ack was lost is applied once when resubmitted to
//! the restarted server, and snapshots are taken as configured.

mod support;

use std::time::Duration;

use tandem_engine::{Attributes, Delta};
use tandem_net::protocol::Encoding;

fn append(c: &tandem_net::client::Client, doc: &str, text: &str) -> Delta {
    let len = c.session().document(doc).unwrap().len();
    Delta::new().retain(len, Attributes::NONE).insert(text, Attributes::NONE)
}

#[test]
fn documents_survive_a_restart_and_resubmissions_apply_once() {
    let docs = ["alpha", "beta", "gamma"];
    let tweak = |c: &mut tandem_net::ServerConfig| {
        c.storage.snapshot_every_ops = 25;
        c.max_messages_per_s = 10_000;
    };
    let first = support::server(2, tweak);
    let addr = first.local_addr();
    let mut writer = support::client(addr, 21, Encoding::Binary);
    for doc in docs {
        writer.open(doc).unwrap();
    }
    for i in 0..120 {
        for doc in docs {
            writer.edit(doc, append(&writer, doc, &format!("{doc}{i} "))).unwrap();
        }
        // One revision per edit: wait for the acks (edits made while one is in flight would
        // be composed into one).
        writer.wait_until(Duration::from_secs(30), "acks", |s| s.is_synced()).unwrap();
    }
    writer.wait_until(Duration::from_secs(30), "acks", |s| s.is_synced()).unwrap();
    // One more op, and the connection dies before its ack can arrive.
    writer.edit("alpha", append(&writer, "alpha", "LAST")).unwrap();
    writer.flush().unwrap();
    writer.drop_connection();
    let snapshots = first.dir.path().join("blobs/snapshots");
    // The server is stopped, and another starts on the same data and port.
    let support::TestServer { handle, dir } = first;
    drop(handle);
    let mut config = tandem_net::ServerConfig { listen: addr, cores: 2, ..tandem_net::ServerConfig::default() };
    tweak(&mut config);
    config.storage.data_dir = dir.path().to_path_buf();
    let second = tandem_net::start(config).expect("restarts on the same data");
    // The writer reconnects, catches up from its revision and resubmits what was unacked.
    writer.reconnect().unwrap();
    writer.wait_until(Duration::from_secs(10), "re-open", |s| docs.iter().all(|d| s.is_open(d))).unwrap();
    writer.wait_until(Duration::from_secs(30), "acks", |s| s.is_synced()).unwrap();
    let mut reader = support::client(second.local_addr(), 22, Encoding::Json);
    for doc in docs {
        reader.open(doc).unwrap();
    }
    reader.wait_until(Duration::from_secs(10), "open", |s| docs.iter().all(|d| s.is_open(d))).unwrap();
    for doc in docs {
        let text = reader.session().document(doc).unwrap().text();
        assert_eq!(text, writer.session().document(doc).unwrap().text(), "{doc}");
        for i in 0..120 {
            assert_eq!(text.matches(&format!("{doc}{i} ")).count(), 1, "{doc}: edit {i} not there exactly once");
        }
    }
    let alpha = reader.session().document("alpha").unwrap().text();
    assert_eq!(alpha.matches("LAST").count(), 1, "the resubmitted op applied once: {alpha}");
    // A snapshot every 25 revisions (the client composes edits made while one is in flight,
    // so there are fewer revisions than edits).
    for doc in docs {
        let rev = reader.session().doc_state(doc).unwrap().rev();
        assert!(rev >= 120, "{doc}: only {rev} revisions");
        let n = std::fs::read_dir(snapshots.join(doc)).map(|d| d.count()).unwrap_or(0) as u64;
        let names: Vec<_> = std::fs::read_dir(snapshots.join(doc)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(n, rev / 25, "{doc}: {n} snapshots at revision {rev}: {names:?}");
    }
    drop(second);
}

#[test]
fn a_data_directory_keeps_its_core_count() {
    let first = support::server(2, |_| {});
    let support::TestServer { handle, dir } = first;
    drop(handle);
    let mut config =
        tandem_net::ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), cores: 3, ..Default::default() };
    config.storage.data_dir = dir.path().to_path_buf();
    let err = tandem_net::start(config).err().expect("refused").to_string();
    assert!(err.contains("2 cores") && err.contains("--cores 2"), "{err}");
}
