//! The workers across a cluster's nodes, on Kafka (a real tansu broker) and S3 (a real
//! s3s-fs), with the op log, leases and metadata in one PostgreSQL: two `tandem serve
//! --cluster` nodes each run every worker. A share made through one node is emailed once
//! (the nodes share the notification group; the claim is in the shared database); edits on
//! the document's node are searchable through either node (each node indexes the whole feed
//! in a group of its own) and counted once in the activity (shared analytics groups); an
//! image uploaded through one node is served by the other; an export asked for through one
//! node is rendered once, announced once, and its link (S3's) works. Runs with
//! `--features kafka` (the README's test command).
#![cfg(feature = "kafka")]

mod support;

#[path = "../../events/tests/support/tansu.rs"]
mod tansu;

#[path = "../../storage/tests/support/s3.rs"]
mod s3;

#[path = "../../workers/tests/support/smtp.rs"]
mod smtp;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;
use tandem_testkit::Postgres;
use tandem_testkit::cluster::{Cluster, Follower};

#[test]
fn the_workers_share_their_groups_across_nodes_and_every_node_searches_everything() {
    let broker = tansu::broker();
    let s3 = s3::start();
    s3.bucket("tandem");
    let pg = Postgres::start();
    let meta = pg.database("meta");
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp::smtp_sink(dir.path());
    let config = format!(
        "[control]\nkeys_file = {keys:?}\nlink_key_file = {link:?}\n\n\
         [server.storage]\nblobs = \"s3\"\n\n[server.storage.s3]\nbucket = \"tandem\"\nendpoint = \"{endpoint}\"\n\
         access_key_id = \"{access}\"\nsecret_access_key = \"{secret}\"\nprefix = \"cluster\"\n\n\
         [events]\nbackend = \"kafka\"\n\n[events.kafka]\nbrokers = \"127.0.0.1:{kafka}\"\ntopic_prefix = \"c.\"\n\
         partitions = 3\nreplication = 1\nsession_timeout_ms = 6000\nlag_interval_ms = 500\n\n\
         # tansu 0.6 answers a fetch from inside a record batch with the batches after it only.\n\
         [events.kafka.producer]\n\"batch.num.messages\" = \"1\"\n\n\
         [mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp}\ntls = \"none\"\n",
        keys = dir.path().join("keys.json"),
        link = dir.path().join("link-key"),
        endpoint = s3.endpoint,
        access = s3::ACCESS_KEY,
        secret = s3::SECRET_KEY,
        kafka = broker.port,
        smtp = sink.port,
    );
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.to_str().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let cluster = Cluster::new(bin, &pg, 2, &["--auth", "accounts", "--database-url", &meta, "--config", cfg]);
    cluster.until_all_served(2, 400, Duration::from_secs(30));
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let (_, ada, _) = signup(a, "ada@example.com", "Ada");
    let (_, _bob, _) = signup(b, "bob@example.com", "Bob");
    let doc = create_doc(a, &ada, "Quarterly");

    // Edits, on whichever node serves the document.
    let mut f = Follower::new(21, &doc, cluster.urls());
    f.token = ada.clone();
    assert!(f.ensure_open(Duration::from_secs(10)));
    for word in ["zephyr ", "quokka ", "marmalade "] {
        assert!(f.append(word));
    }
    assert!(f.client.as_mut().unwrap().wait_until(Duration::from_secs(5), "acked", |s| s.is_synced()).is_ok());

    // Searchable through either node: each indexes the whole feed.
    for node in [a, b] {
        eventually(60, "the edits searchable through every node", || {
            (hit_ids(&search(node, &ada, "zephyr%20marmalade")) == vec![doc.clone()]).then_some(())
        });
    }
    // Counted once, whichever node's worker took them.
    eventually(60, "the activity counts the three edits", || {
        let day = activity(b, &ada, &doc).body["days"][0].clone();
        assert!(day["edits"].as_u64().unwrap_or(0) <= 3, "counted twice: {day}");
        (day["edits"] == 3).then_some(())
    });

    // A share through the other node: one email, whichever node sends it.
    let share = http(
        b,
        "POST",
        &format!("/api/documents/{doc}/share"),
        &[("Authorization", &bearer(&ada))],
        Some(&json!({"email": "bob@example.com", "role": "viewer"})),
    );
    assert_eq!(share.status, 200, "{}", share.raw);
    eventually(30, "the share's email", || (!smtp::mails(&sink.maildir).is_empty()).then_some(()));

    // An image uploaded through one node, read through the other (the blob is in S3).
    let png = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../render/tests/data/logo.png")).unwrap();
    let auth = bearer(&ada);
    let (status, _, body) = http_bytes(
        a,
        "POST",
        &format!("/api/documents/{doc}/uploads"),
        &[("Authorization", &auth), ("Content-Type", "image/png")],
        &png,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let url = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["url"].as_str().unwrap().to_owned();
    let path = &url[url.find("/api/").unwrap()..];
    let (status, _, back) = http_bytes(b, "GET", path, &[("Authorization", &auth)], &[]);
    assert_eq!((status, back == png), (200, true));

    // An export asked for through one node, followed through the other, rendered once.
    let asked = http(
        a,
        "POST",
        &format!("/api/documents/{doc}/export"),
        &[("Authorization", &auth)],
        Some(&json!({"format": "docx"})),
    );
    assert_eq!(asked.status, 202, "{}", asked.raw);
    let id = asked.body["export_id"].as_str().unwrap().to_owned();
    let done = eventually(90, "the export done", || {
        let s = http(b, "GET", &format!("/api/exports/{id}"), &[("Authorization", &auth)], None);
        assert_ne!(s.body["status"], "failed", "{}", s.raw);
        (s.body["status"] == "done").then_some(s.body)
    });
    let link = done["url"].as_str().unwrap();
    assert!(link.contains("X-Amz-Signature="), "an S3 link: {link}");
    let (status, _, file) = get_url(link);
    assert_eq!((status, &file[..2]), (200, &b"PK"[..]));
    let exports: Vec<_> = std::fs::read_dir(s3.dir.path().join("tandem/cluster/exports")).unwrap().flatten().collect();
    assert_eq!(exports.len(), 1, "rendered once: {exports:?}");

    // Emails: the share and the export, once each, though both nodes run the worker.
    eventually(30, "the export's email", || (smtp::mails(&sink.maildir).len() >= 2).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    let mails = smtp::mails(&sink.maildir);
    assert_eq!(mails.len(), 2, "one email each for the share and the export: {mails:#?}");
    // Each node reads the feed in a search group of its own; the rest are shared.
    let metrics = http(a, "GET", "/metrics", &[], None).raw;
    assert!(metrics.contains("worker=\"search.node-0\""), "{metrics}");
    assert!(metrics.contains("worker=\"notifications\""), "{metrics}");
}
