//! The metadata store's whole suite, on SQLite and on a real PostgreSQL (started from
//! nothing by `tandem_testkit::Postgres`), plus a check that both engines' migrations make the
//! same schema.

use tandem_control::outbox::Event;
use tandem_control::store::{Engine, ExportStatus, Finished, RefreshOutcome, ShareOutcome, Store};
use tandem_control::{Error, tokens};
use tandem_net::protocol::Role;
use tandem_testkit::Postgres;

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 4, "every migration ran");
    (dir, store)
}

async fn suite(store: &Store) {
    // Migrating again is a no-op.
    assert_eq!(store.migrate().await.unwrap(), 0);

    // ---- accounts ----
    let ada = store.create_user("ada@example.com", "Ada", "hash-a").await.unwrap();
    assert!(ada.invited_to.is_empty());
    let ada = ada.user;
    assert!(matches!(store.create_user("ada@example.com", "Other", "h").await, Err(Error::EmailTaken)));
    let (found, hash) = store.user_by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (ada.clone(), "hash-a"));
    assert!(store.user_by_email("nobody@example.com").await.unwrap().is_none());
    let bob = store.create_user("bob@example.com", "Bob", "hash-b").await.unwrap().user;

    // ---- refresh tokens: rotation, reuse revokes the family, logout ----
    let (t1, h1) = tokens::new_refresh_token();
    store.add_refresh_token(&h1, "fam1", &ada.id, tandem_control::now_ms() + 60_000).await.unwrap();
    let (_t2, h2) = tokens::new_refresh_token();
    let later = tandem_control::now_ms() + 60_000;
    assert_eq!(
        store.use_refresh_token(&h1, &h2, later).await.unwrap(),
        RefreshOutcome::Rotated { user: ada.clone(), family: "fam1".into() }
    );
    // t1 again: reuse. The whole family goes, t2 with it.
    assert_eq!(
        store.use_refresh_token(&tokens::hash_refresh_token(&t1), &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Reused
    );
    assert_eq!(
        store.use_refresh_token(&h2, &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store.use_refresh_token("unknown", &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Invalid
    );
    let (_t3, h3) = tokens::new_refresh_token();
    store.add_refresh_token(&h3, "fam2", &ada.id, tandem_control::now_ms() - 1).await.unwrap();
    assert_eq!(
        store.use_refresh_token(&h3, &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Invalid,
        "expired"
    );
    let (_t4, h4) = tokens::new_refresh_token();
    store.add_refresh_token(&h4, "fam3", &ada.id, tandem_control::now_ms() + 60_000).await.unwrap();
    assert!(store.revoke_refresh_family(&h4).await.unwrap());
    assert_eq!(
        store.use_refresh_token(&h4, &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Invalid,
        "logged out"
    );
    // A password change revokes every refresh token of the user.
    let (_t5, h5) = tokens::new_refresh_token();
    store.add_refresh_token(&h5, "fam4", &ada.id, tandem_control::now_ms() + 60_000).await.unwrap();
    store.set_password(&ada.id, "hash-a2").await.unwrap();
    assert_eq!(
        store.use_refresh_token(&h5, &tokens::new_refresh_token().1, later).await.unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(store.user_by_id(&ada.id).await.unwrap().unwrap().1, "hash-a2");

    // ---- documents ----
    let doc = store.create_document(&ada.id, "Plan").await.unwrap();
    assert_eq!(store.document_for(&doc.id, &ada.id).await.unwrap().unwrap().role, Role::Owner);
    assert!(store.document_for(&doc.id, &bob.id).await.unwrap().is_none(), "Bob may not read it");
    let list = store.access_list(&doc.id).await.unwrap().unwrap();
    assert_eq!(list.role_of(&ada.id), Some(Role::Owner));
    assert_eq!(list.role_of(&bob.id), None);
    let v1 = list.version;

    // Sharing with an account grants at once; the list's version moves.
    let shared = store.share(&doc, &ada, "bob@example.com", Role::Viewer).await.unwrap();
    assert_eq!(shared, ShareOutcome::Granted(bob.clone()));
    let list = store.access_list(&doc.id).await.unwrap().unwrap();
    assert_eq!(list.role_of(&bob.id), Some(Role::Viewer));
    assert!(list.version > v1);
    assert!(store.share(&doc, &ada, "bob@example.com", Role::Owner).await.is_err(), "owner is transferred, not shared");
    assert!(store.share(&doc, &ada, "ada@example.com", Role::Viewer).await.is_err(), "not the owner");

    // Upgrade, then revoke.
    assert!(store.set_role(&doc.id, &bob.id, Some(Role::Editor), &ada.id).await.unwrap());
    assert_eq!(store.access_list(&doc.id).await.unwrap().unwrap().role_of(&bob.id), Some(Role::Editor));
    assert!(store.set_role(&doc.id, &ada.id, Some(Role::Viewer), &ada.id).await.is_err(), "the owner's role is fixed");
    assert!(store.set_role(&doc.id, &bob.id, None, &ada.id).await.unwrap());
    assert!(!store.set_role(&doc.id, &bob.id, None, &ada.id).await.unwrap(), "nothing to revoke");
    assert_eq!(store.access_list(&doc.id).await.unwrap().unwrap().role_of(&bob.id), None);

    // An invitation waits for the address, and becomes a role when it signs up.
    assert_eq!(store.share(&doc, &ada, "cy@example.com", Role::Commenter).await.unwrap(), ShareOutcome::Invited);
    let (perms, invites) = store.permissions(&doc.id).await.unwrap();
    assert_eq!(perms.len(), 1);
    assert_eq!(invites.len(), 1);
    assert_eq!((invites[0].email.as_str(), invites[0].role), ("cy@example.com", Role::Commenter));
    let cy = store.create_user("cy@example.com", "Cy", "hash-c").await.unwrap();
    assert_eq!(cy.invited_to, vec![doc.id.clone()]);
    let cy = cy.user;
    assert_eq!(store.access_list(&doc.id).await.unwrap().unwrap().role_of(&cy.id), Some(Role::Commenter));
    assert!(store.permissions(&doc.id).await.unwrap().1.is_empty());
    assert!(!store.withdraw_invitation(&doc.id, "cy@example.com").await.unwrap());

    // Link sharing: anyone signed in reads.
    store.set_sharing(&doc.id, Some(Some(Role::Viewer)), Some(true)).await.unwrap();
    let list = store.access_list(&doc.id).await.unwrap().unwrap();
    assert_eq!(list.role_of("someone-else"), Some(Role::Viewer));
    assert_eq!(list.role_of(&cy.id), Some(Role::Commenter), "own role wins when it is more");
    let seen = store.document_for(&doc.id, &bob.id).await.unwrap().unwrap();
    assert_eq!(seen.role, Role::Viewer);
    assert!(seen.doc.editors_can_share);
    store.set_sharing(&doc.id, Some(None), None).await.unwrap();
    assert!(store.document_for(&doc.id, &bob.id).await.unwrap().is_none());

    // Transfer: to a collaborator only; the old owner becomes an editor.
    let doc = store.document(&doc.id).await.unwrap().unwrap();
    assert!(store.transfer(&doc, &bob.id).await.is_err(), "Bob has no role");
    store.transfer(&doc, &cy.id).await.unwrap();
    let list = store.access_list(&doc.id).await.unwrap().unwrap();
    assert_eq!((list.role_of(&cy.id), list.role_of(&ada.id)), (Some(Role::Owner), Some(Role::Editor)));
    assert_eq!(store.document(&doc.id).await.unwrap().unwrap().owner_id, cy.id);

    // Listing: most recently edited first, paginated without gaps or repeats.
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(store.create_document(&bob.id, &format!("d{i}")).await.unwrap().id);
    }
    store.touch_documents(&[ids[2].clone()], tandem_control::now_ms() + 10_000).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.documents_for(&bob.id, cursor.as_ref(), 3).await.unwrap();
        assert!(page.docs.len() <= 3);
        seen.extend(page.docs.iter().map(|v| v.doc.id.clone()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0], ids[2], "the one edited last comes first");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7);

    // Rename and delete (a tombstone: the id never opens again).
    store.rename_document(&ids[0], "Renamed", &bob.id).await.unwrap();
    assert_eq!(store.document(&ids[0]).await.unwrap().unwrap().title, "Renamed");
    store.delete_document(&ids[0], &bob.id).await.unwrap();
    assert!(store.document(&ids[0]).await.unwrap().is_none());
    assert!(store.access_list(&ids[0]).await.unwrap().is_none());
    assert!(matches!(store.delete_document(&ids[0], &bob.id).await, Err(Error::NotFound)));
    assert!(matches!(store.rename_document(&ids[0], "x", &bob.id).await, Err(Error::NotFound)));
    assert_eq!(store.documents_for(&bob.id, None, 100).await.unwrap().docs.len(), 6);

    // ---- the outbox: one event per change, in order, written with the change ----
    let events = store.unsent_events(1000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "document_created").count(), 8);
    assert_eq!(kinds.iter().filter(|k| **k == "document_shared").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "document_deleted").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "document_renamed").count(), 1);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.schema_version == tandem_control::outbox::SCHEMA_VERSION && e.sent_ms.is_none()));
    let shared_with_cy = events.iter().find_map(|e| match &e.event {
        Event::DocumentShared { email, user, role, .. } if email == "cy@example.com" => Some((user.clone(), *role)),
        _ => None,
    });
    assert_eq!(shared_with_cy, Some((None, Role::Commenter)), "an invitation's event names no user yet");
    assert_eq!(events.iter().find(|e| e.event.kind() == "document_shared").unwrap().topic, "notifications");
    // What the relay publishes: the same events in envelopes, keyed by document.
    let messages = store.unsent_messages(1000).await.unwrap();
    assert_eq!(messages.len(), events.len());
    for ((seq, m), row) in messages.iter().zip(&events) {
        let envelope = tandem_events::Envelope::from_json(&m.payload).unwrap();
        assert_eq!((*seq, &envelope.event, envelope.id.as_str()), (row.seq, &row.event, row.event_id.as_str()));
        assert_eq!(
            (m.topic, m.key.as_str(), envelope.key.as_str()),
            (row.event.topic(), row.event.doc(), row.event.doc())
        );
        assert_eq!(envelope.at_ms, row.created_ms);
    }
    let cut = events[3].seq;
    store.mark_sent(cut).await.unwrap();
    assert_eq!(store.unsent_events(1000).await.unwrap().len(), events.len() - 4);
    // A failed change writes no event: a rename of a deleted document.
    let before = store.unsent_events(1000).await.unwrap().len();
    let _ = store.rename_document(&ids[0], "y", &bob.id).await;
    assert_eq!(store.unsent_events(1000).await.unwrap().len(), before);

    // ---- the change feed's cursors only go up ----
    store.save_feed_cursors(&[("d1".into(), 5), ("d2".into(), 1)]).await.unwrap();
    store.save_feed_cursors(&[("d1".into(), 3), ("d2".into(), 9)]).await.unwrap();
    let mut cursors = store.feed_cursors().await.unwrap();
    cursors.sort();
    assert_eq!(cursors, vec![("d1".into(), 5), ("d2".into(), 9)]);
    let mut some = store.feed_cursors_of(&["d2".into(), "never".into(), "d1".into()]).await.unwrap();
    some.sort();
    assert_eq!(some, vec![("d1".into(), 5), ("d2".into(), 9)], "a document never published is left out");
    assert!(store.feed_cursors_of(&[]).await.unwrap().is_empty());

    // ---- workers: claims make effects happen once; dead letters keep the reason ----
    use tandem_control::store::{Claim, DeadLetter};
    assert_eq!(store.claim_event("mail", "e1").await.unwrap(), Claim::Fresh);
    assert_eq!(store.claim_event("mail", "e1").await.unwrap(), Claim::Unfinished { attempts: 1 });
    assert_eq!(store.claim_event("search", "e1").await.unwrap(), Claim::Fresh, "per worker");
    store.finish_event("mail", "e1").await.unwrap();
    assert_eq!(store.claim_event("mail", "e1").await.unwrap(), Claim::Done);
    // In bulk: the same answers, in order, in one transaction.
    let events: Vec<String> = ["e1", "b1", "b2", "b1"].iter().map(|s| (*s).to_owned()).collect();
    let claims = store.claim_events("mail", &events).await.unwrap();
    assert_eq!(claims, vec![Claim::Done, Claim::Fresh, Claim::Fresh, Claim::Unfinished { attempts: 1 }]);
    store.finish_event("mail", "b1").await.unwrap();
    let claims = store.claim_events("mail", &events[1..3]).await.unwrap();
    assert_eq!(claims, vec![Claim::Done, Claim::Unfinished { attempts: 1 }]);
    assert_eq!(store.claim_event("mail", "b2").await.unwrap(), Claim::Unfinished { attempts: 2 });
    let letter = DeadLetter {
        worker: "mail".into(),
        topic: "notifications".into(),
        partition: 0,
        offset: 7,
        event_id: None,
        payload: "not json".into(),
        reason: "not an event envelope".into(),
    };
    store.dead_letter(&letter).await.unwrap();
    assert_eq!(store.dead_letters("mail", 10).await.unwrap(), vec![letter]);
    assert!(store.dead_letters("search", 10).await.unwrap().is_empty());

    // ---- analytics: opens name the client's user; each revision and event counted once ----
    use tandem_control::store::{EditRecord, OpenRecord, UsageRecord, day_of};
    let doc = ids[1].clone();
    let now = tandem_control::now_ms();
    let open = |client: &str, user: &str| OpenRecord {
        doc: doc.clone(),
        client: client.into(),
        user: user.into(),
        at_ms: now,
    };
    let before = store.unsent_events(1000).await.unwrap().len();
    store.record_opens(&[open("c-ada", &ada.id), open("c-bob", &bob.id)]).await.unwrap();
    assert_eq!(store.unsent_events(1000).await.unwrap().len(), before + 2, "an analytics event per open");
    let edit =
        |rev: u64, client: &str, at_ms: i64| EditRecord { rev, client: client.into(), at_ms, inserted: 3, deleted: 1 };
    let batch =
        vec![(doc.clone(), vec![edit(1, "c-ada", now), edit(2, "c-ada", now + 20_000), edit(3, "c-bob", now + 1)])];
    assert_eq!(store.record_edits(&batch).await.unwrap().edits, 3);
    // Redelivered, and overlapping with a new revision: only revision 4 counts.
    let again =
        vec![(doc.clone(), vec![edit(2, "c-ada", now + 20_000), edit(3, "c-bob", now + 1), edit(4, "c-x", now + 2)])];
    assert_eq!(store.record_edits(&again).await.unwrap().edits, 1);
    // A later call continues the day's rows: ada's gap of 10 s since her last edit is active.
    let later = vec![(doc.clone(), vec![edit(5, "c-ada", now + 30_000)])];
    assert_eq!(store.record_edits(&later).await.unwrap().edits, 1);
    let usage = |id: &str, user: &str, kind: &str| UsageRecord {
        event_id: id.into(),
        doc: doc.clone(),
        user: user.into(),
        kind: kind.into(),
        at_ms: now,
    };
    let fresh = store
        .record_usages(&[
            usage("u1", &ada.id, "opened"),
            usage("u1", &ada.id, "opened"),
            usage("u2", &bob.id, "shared"),
        ])
        .await
        .unwrap();
    assert_eq!(fresh, [("opened".to_owned(), 1), ("shared".to_owned(), 1)].into(), "an id twice counts once");
    let fresh = store.record_usages(&[usage("u1", &ada.id, "opened")]).await.unwrap();
    assert!(fresh.is_empty(), "once per event id");
    // Many documents in one call (several statements' worth), each counted once.
    let many: Vec<(String, Vec<EditRecord>)> =
        (0..450).map(|i| (format!("bulk-{i}"), vec![edit(1, "c-ada", now), edit(2, "c-bob", now)])).collect();
    assert_eq!(store.record_edits(&many).await.unwrap().edits, 900);
    assert_eq!(store.record_edits(&many).await.unwrap().edits, 0, "redelivered");
    let bulk = store.activity("bulk-449", &day_of(now)).await.unwrap();
    assert_eq!(bulk[0].users.iter().map(|u| u.edits).sum::<u64>(), 2);
    let report = store.activity(&doc, &day_of(now - 86_400_000)).await.unwrap();
    let today = report.iter().find(|d| d.day == day_of(now)).unwrap();
    let by = |user: &str| today.users.iter().find(|u| u.user == user).unwrap().clone();
    let a = by(&ada.id);
    assert_eq!((a.edits, a.inserted, a.deleted, a.active_ms, a.name.as_str()), (3, 9, 3, 30_000, "Ada"));
    assert_eq!(a.events.get("opened"), Some(&1));
    assert_eq!((by(&bob.id).edits, by(&bob.id).events.get("shared")), (1, Some(&1)));
    assert_eq!(by("").edits, 1, "a client id no open named");
    assert_eq!(today.active_editors(), 3);

    // ---- search's access checks ----
    let readable = store.readable_ids(&bob.id, 100).await.unwrap().unwrap();
    assert_eq!(readable.len(), 6, "deleted documents are not readable");
    assert!(store.readable_ids(&bob.id, 5).await.unwrap().is_none(), "more than asked for");
    assert_eq!(store.readable_ids(&bob.id, 6).await.unwrap().map(|r| r.len()), Some(6), "exactly as many as asked for");
    assert_eq!(store.readable_ids("no-such-user", 5).await.unwrap(), Some(Vec::new()), "none");
    let among = store.readable_among(&bob.id, &[ids[0].clone(), readable[0].clone(), "nope".into()]).await.unwrap();
    assert_eq!(among, std::collections::HashSet::from([readable[0].clone()]), "not the deleted one, not unknown ids");
    let titles = store.titles(&[ids[0].clone(), ids[1].clone()]).await.unwrap();
    assert_eq!(titles.len(), 1, "the deleted one has no title");
    assert_eq!(store.live_documents("", 1000).await.unwrap().len(), 7);

    // ---- exports and uploads ----
    let doc = store.create_document(&ada.id, "Exported").await.unwrap();
    let e1 = store.request_export(&doc.id, &ada.id, "pdf", Some(3), 2).await.unwrap().expect("under the limit");
    assert_eq!((e1.status, e1.rev), (ExportStatus::Queued, Some(3)));
    let e2 = store.request_export(&doc.id, &ada.id, "docx", None, 2).await.unwrap().expect("under the limit");
    assert!(store.request_export(&doc.id, &ada.id, "pdf", None, 2).await.unwrap().is_none(), "two in progress");
    assert!(store.start_export(&e2.id, 9).await.unwrap());
    let e2 = store.export(&e2.id).await.unwrap().unwrap();
    assert_eq!((e2.status, e2.rev), (ExportStatus::Rendering, Some(9)));
    let done = Finished { link: Some("http://l".into()), expires_ms: Some(1), bytes: Some(10), error: None };
    assert!(store.finish_export(&e2, "Exported", done.clone()).await.unwrap());
    assert!(!store.finish_export(&e2, "Exported", done).await.unwrap(), "finished once");
    assert!(!store.start_export(&e2.id, 9).await.unwrap(), "a finished export does not start again");
    let e2 = store.export(&e2.id).await.unwrap().unwrap();
    assert_eq!((e2.status, e2.bytes), (ExportStatus::Done, Some(10)));
    let failed = Finished { link: None, expires_ms: None, bytes: None, error: Some("too large".into()) };
    assert!(store.finish_export(&e1, "Exported", failed).await.unwrap());
    assert_eq!(store.export(&e1.id).await.unwrap().unwrap().error.as_deref(), Some("too large"));
    let finished: Vec<String> = store
        .unsent_events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event {
            Event::ExportFinished { export, email, .. } => Some(format!("{export} {email}")),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 2, "one event per finished export: {finished:?}");
    assert!(finished.iter().all(|f| f.ends_with("ada@example.com")));
    // Nothing has expired yet; once the document is deleted, its finished exports go.
    assert!(store.expired_exports(0, 10).await.unwrap().is_empty());
    let up = store.add_upload(&doc.id, &ada.id, "u1", "image/png", 100).await.unwrap();
    assert_eq!(store.upload("u1").await.unwrap(), Some(up));
    assert!(store.orphaned_uploads(10).await.unwrap().is_empty());
    store.delete_document(&doc.id, &ada.id).await.unwrap();
    assert_eq!(store.expired_exports(0, 10).await.unwrap().len(), 2);
    assert_eq!(store.orphaned_uploads(10).await.unwrap().len(), 1);
    // Past the retention, anything goes, whatever its status.
    let old = store.request_export(&ids[2], &bob.id, "pdf", None, 9).await.unwrap().unwrap();
    assert!(store.expired_exports(tandem_control::now_ms() + 1, 10).await.unwrap().iter().any(|e| e.id == old.id));
    store.delete_export(&old.id).await.unwrap();
    store.delete_upload("u1").await.unwrap();
    assert!(store.export(&old.id).await.unwrap().is_none());
    assert!(store.orphaned_uploads(10).await.unwrap().is_empty());

    // ---- mentions: an event per mentioned user with a role, nobody else ----
    let doc = store.create_document(&ada.id, "Mentions").await.unwrap();
    store.share(&doc, &ada, "bob@example.com", Role::Commenter).await.unwrap();
    let before = store.unsent_events(10_000).await.unwrap().len();
    let users = ["u_nobody".to_owned(), bob.id.clone(), ada.id.clone()];
    assert_eq!(store.record_mentions(&doc.id, &ada.id, "Ada", &users, 3, "hi").await.unwrap(), 2);
    let events = store.unsent_events(10_000).await.unwrap();
    let mentioned: Vec<(String, String)> = events[before..]
        .iter()
        .filter_map(|e| match &e.event {
            Event::Mentioned { user, email, .. } => Some((user.clone(), email.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(mentioned, [(bob.id.clone(), "bob@example.com".into()), (ada.id.clone(), "ada@example.com".into())]);
    assert_eq!(store.record_mentions("no-such-doc", &ada.id, "Ada", &users, 3, "hi").await.unwrap(), 0);
}

#[tokio::test]
async fn the_store_on_sqlite() {
    let (_dir, store) = sqlite().await;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_on_postgresql_and_both_schemas_match() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.database("store");
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.engine(), Engine::Postgres);
    assert_eq!(store.migrate().await.unwrap(), 4, "every migration ran");
    suite(&store).await;

    let (_dir, lite) = sqlite().await;
    let (a, b) = (lite.schema().await.unwrap(), store.schema().await.unwrap());
    assert!(a.len() > 30, "{a:?}");
    assert_eq!(a, b, "the SQLite and PostgreSQL migrations disagree");
    store.close().await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}
