//! The owner core's access checks, sans I/O: one shard driven directly, with a stand-in
//! verifier and the control plane's answers delivered by hand. Roles are checked on every
//! message, changes hold from the next one, an older list never replaces a newer one, and
//! tokens are warned about and expire.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_engine::{Attributes, ClientId, Delta};
use tandem_net::access::{AccessError, AccessList, AccessUpdate, Auth, Done, Identity, Verifier};
use tandem_net::codec::decode_server;
use tandem_net::protocol::{ClientMsg, DocId, Encoding, ErrorCode, PROTOCOL_VERSION, Role, ServerMsg, close};
use tandem_net::session::ConnId;
use tandem_net::shard::{CoreMsg, Effect, Shard, ShardConfig};

/// Tokens are `user` or `user:seconds`.
struct Names;

impl Verifier for Names {
    fn verify(&self, token: &str) -> Result<Identity, String> {
        let (user, secs) = token.split_once(':').unwrap_or((token, "3600"));
        if user.is_empty() || user == "forged" {
            return Err("bad signature".into());
        }
        let secs: u64 = secs.parse().map_err(|_| "bad".to_owned())?;
        Ok(Identity {
            user: user.into(),
            name: user.to_uppercase(),
            valid_for: Duration::from_secs(secs),
            expires_at_ms: secs * 1000,
        })
    }
}

struct Sim {
    shard: Shard,
    now: Instant,
    inbox: HashMap<ConnId, Vec<ServerMsg>>,
    closed: HashMap<ConnId, u16>,
    loads: Vec<(DocId, u64)>,
    edited: usize,
    /// (document, client id, user) of each open reported.
    opened: Vec<(String, u64, String)>,
}

impl Sim {
    fn new() -> Self {
        let config = ShardConfig {
            auth: Auth::Accounts(Arc::new(Names)),
            token_warning: Duration::from_secs(60),
            max_messages_per_s: 100_000,
            ..ShardConfig::default()
        };
        let now = Instant::now();
        Self {
            shard: Shard::new(0, Arc::new(config)),
            now,
            inbox: HashMap::new(),
            closed: HashMap::new(),
            loads: Vec::new(),
            edited: 0,
            opened: Vec::new(),
        }
    }

    fn drain(&mut self) {
        for e in self.shard.take_effects() {
            match e {
                Effect::Send { conn, frame } => {
                    let msg = decode_server(support::frame_payload(&frame), Encoding::Json).unwrap();
                    self.inbox.entry(conn).or_default().push(msg);
                }
                Effect::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
                Effect::LoadAccess { doc, load } => self.loads.push((doc, load)),
                Effect::Edited { .. } => self.edited += 1,
                Effect::Opened { doc, client, user } => self.opened.push((doc.to_string(), client.0, user)),
                other => panic!("unexpected effect {other:?}"),
            }
        }
    }

    fn connect(&mut self, token: &str, client: u64) -> ConnId {
        let conn = self.shard.connect(Encoding::Json, self.now, None);
        self.send(
            conn,
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                client: ClientId(client),
                token: token.into(),
                name: "n".into(),
                color: String::new(),
            },
        );
        conn
    }

    fn send(&mut self, conn: ConnId, msg: ClientMsg) {
        self.shard.on_message(conn, msg, self.now);
        self.drain();
    }

    fn control(&mut self, doc: &str, update: AccessUpdate) {
        self.shard.on_core_msg(CoreMsg::Access { doc: DocId::new(doc).unwrap(), update }, self.now);
        self.drain();
    }

    /// The number of the latest access-list load asked for.
    fn last_load(&self) -> u64 {
        self.loads.last().map_or(0, |l| l.1)
    }

    fn take(&mut self, conn: ConnId) -> Vec<ServerMsg> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn open(&mut self, conn: ConnId, doc: &str) {
        self.send(conn, ClientMsg::Open { doc: doc.into(), from_rev: None });
    }

    fn submit(&mut self, conn: ConnId, doc: &str, base_rev: u64, seq: u64) {
        let delta = Delta::new().insert("x", Attributes::NONE);
        self.send(conn, ClientMsg::Submit { doc: doc.into(), base_rev, client_seq: seq, delta });
    }
}

fn list(version: u64, roles: &[(&str, Role)], link: Option<Role>) -> Arc<AccessList> {
    Arc::new(AccessList { version, roles: roles.iter().map(|(u, r)| (Arc::from(*u), *r)).collect(), link })
}

fn error_code(msgs: &[ServerMsg]) -> Option<(ErrorCode, Option<u64>)> {
    msgs.iter().find_map(|m| match m {
        ServerMsg::Error { code, client_seq, .. } => Some((*code, *client_seq)),
        _ => None,
    })
}

#[test]
fn roles_are_checked_on_every_message_and_changes_hold_from_the_next() {
    let mut sim = Sim::new();
    let ada = sim.connect("ada", 1);
    match &sim.take(ada)[..] {
        [ServerMsg::Welcome { user, expires_at, .. }] => {
            assert_eq!((user.as_str(), *expires_at), ("ada", Some(3_600_000)))
        }
        other => panic!("{other:?}"),
    }
    // The first open asks the control plane; nothing is answered before the list comes.
    sim.open(ada, "d");
    assert_eq!(sim.loads.iter().map(|l| l.0.clone()).collect::<Vec<_>>(), vec![DocId::new("d").unwrap()]);
    assert!(sim.take(ada).is_empty());
    sim.control(
        "d",
        AccessUpdate::Loaded(sim.last_load(), Ok(list(1, &[("ada", Role::Owner), ("bob", Role::Viewer)], None))),
    );
    assert!(matches!(&sim.take(ada)[..], [ServerMsg::Opened { role: Some(Role::Owner), .. }, ServerMsg::Notes { .. }]));

    // A viewer reads (no second load: the list is in memory), but may not edit.
    let bob = sim.connect("bob", 2);
    sim.take(bob);
    sim.open(bob, "d");
    assert_eq!(sim.loads.len(), 1);
    assert!(matches!(
        &sim.take(bob)[..],
        [ServerMsg::Opened { role: Some(Role::Viewer), .. }, ServerMsg::Notes { .. }]
    ));
    assert_eq!(
        sim.opened,
        vec![("d".to_owned(), 1, "ada".to_owned()), ("d".to_owned(), 2, "bob".to_owned())],
        "each open names the client id's user (analytics)"
    );
    sim.take(ada);
    sim.submit(bob, "d", 0, 1);
    assert_eq!(error_code(&sim.take(bob)), Some((ErrorCode::ReadOnly, Some(1))));
    sim.submit(ada, "d", 0, 1);
    assert!(matches!(&sim.take(ada)[..], [ServerMsg::Ack { rev: 1, .. }]));
    assert!(matches!(&sim.take(bob)[..], [ServerMsg::Op { rev: 1, .. }]), "still subscribed after read_only");
    assert_eq!(sim.edited, 1, "the control plane hears of the edit");

    // Upgraded: told at once, and the next submit is applied. The change reports back.
    let applied = Arc::new(AtomicUsize::new(0));
    let a2 = Arc::clone(&applied);
    let done = Done::new(move || {
        a2.fetch_add(1, Ordering::SeqCst);
    });
    sim.control("d", AccessUpdate::Changed(list(2, &[("ada", Role::Owner), ("bob", Role::Editor)], None), Some(done)));
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    assert!(matches!(&sim.take(bob)[..], [ServerMsg::Role { role: Role::Editor, .. }]));
    assert!(sim.take(ada).is_empty(), "ada's role did not change");
    sim.submit(bob, "d", 1, 2);
    assert!(matches!(&sim.take(bob)[..], [ServerMsg::Ack { rev: 2, .. }]));

    // An older list (a load answered before the change) never replaces a newer one.
    sim.control("d", AccessUpdate::Changed(list(1, &[("ada", Role::Owner)], None), None));
    assert!(sim.take(bob).is_empty());
    sim.submit(bob, "d", 2, 3);
    assert!(matches!(&sim.take(bob)[..], [ServerMsg::Ack { rev: 3, .. }]));

    // Revoked: the session loses the document, and its next submit is refused.
    sim.control("d", AccessUpdate::Changed(list(3, &[("ada", Role::Owner)], None), None));
    assert_eq!(error_code(&sim.take(bob)), Some((ErrorCode::AccessRevoked, None)));
    sim.submit(bob, "d", 3, 4);
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::NotOpen));
    sim.open(bob, "d");
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::Forbidden));

    // Link sharing lets anyone signed in read.
    sim.control("d", AccessUpdate::Changed(list(4, &[("ada", Role::Owner)], Some(Role::Viewer)), None));
    sim.open(bob, "d");
    assert!(matches!(
        &sim.take(bob)[..],
        [ServerMsg::Opened { role: Some(Role::Viewer), .. }, ServerMsg::Notes { .. }]
    ));

    // Deleted: everyone loses it; opening it asks the control plane again.
    sim.take(ada);
    sim.control("d", AccessUpdate::Deleted(None));
    assert_eq!(error_code(&sim.take(ada)).map(|e| e.0), Some(ErrorCode::DocumentDeleted));
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::DocumentDeleted));
    sim.open(ada, "d");
    assert_eq!(sim.loads.len(), 2);
    sim.control("d", AccessUpdate::Loaded(sim.last_load(), Err(AccessError::NotFound)));
    assert_eq!(error_code(&sim.take(ada)).map(|e| e.0), Some(ErrorCode::Forbidden));
}

#[test]
fn a_change_during_the_load_wins_over_the_older_answer() {
    let mut sim = Sim::new();
    let bob = sim.connect("bob", 2);
    sim.take(bob);
    sim.open(bob, "e");
    // The change commits (v5) and is pushed before the load's answer, read earlier (v4).
    sim.control("e", AccessUpdate::Changed(list(5, &[("bob", Role::Viewer)], None), None));
    assert!(sim.take(bob).is_empty());
    sim.control("e", AccessUpdate::Loaded(sim.last_load(), Ok(list(4, &[("bob", Role::Editor)], None))));
    assert!(matches!(
        &sim.take(bob)[..],
        [ServerMsg::Opened { role: Some(Role::Viewer), .. }, ServerMsg::Notes { .. }]
    ));
    // The control plane cannot answer: the open is refused as overloaded, not hung.
    sim.open(bob, "f");
    sim.control("f", AccessUpdate::Loaded(sim.last_load(), Err(AccessError::Unavailable("db down".into()))));
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::Overloaded));
}

#[test]
fn tokens_are_refused_warned_refreshed_and_expire() {
    let mut sim = Sim::new();
    let forged = sim.connect("forged", 9);
    assert_eq!(error_code(&sim.take(forged)).map(|e| e.0), Some(ErrorCode::Unauthorized));
    assert_eq!(sim.closed.get(&forged), Some(&close::UNAUTHORIZED));

    let kept = sim.connect("ada:120", 1);
    let lapsed = sim.connect("ada:120", 2);
    sim.take(kept);
    sim.take(lapsed);
    // 60 s before expiry: warned, once.
    let t0 = sim.now;
    for s in [30, 59, 61, 62] {
        sim.shard.tick(t0 + Duration::from_secs(s));
        sim.drain();
    }
    for conn in [kept, lapsed] {
        let msgs = sim.take(conn);
        assert_eq!(msgs.iter().filter(|m| matches!(m, ServerMsg::TokenExpiring { expires_at: 120_000 })).count(), 1);
    }
    // A refresh for another user is refused and closes.
    sim.now = t0 + Duration::from_secs(70);
    let other = sim.connect("bob", 3);
    sim.send(other, ClientMsg::Refresh { token: "ada:300".into() });
    assert_eq!(sim.closed.get(&other), Some(&close::UNAUTHORIZED));
    // The same user's fresh token moves the expiry.
    sim.send(kept, ClientMsg::Refresh { token: "ada:300".into() });
    assert!(matches!(&sim.take(kept)[..], [ServerMsg::Refreshed { expires_at: 300_000 }]));
    sim.shard.tick(t0 + Duration::from_secs(121));
    sim.drain();
    assert_eq!(sim.closed.get(&lapsed), Some(&close::TOKEN_EXPIRED));
    assert_eq!(sim.closed.get(&kept), None, "refreshed: still open");
    sim.shard.tick(t0 + Duration::from_secs(70 + 300 - 59));
    sim.drain();
    assert!(sim.take(kept).iter().any(|m| matches!(m, ServerMsg::TokenExpiring { expires_at: 300_000 })));
    sim.shard.tick(t0 + Duration::from_secs(70 + 301));
    sim.drain();
    assert_eq!(sim.closed.get(&kept), Some(&close::TOKEN_EXPIRED));
}

#[test]
fn a_server_that_checks_no_accounts_ignores_access_pushes() {
    let config = ShardConfig { auth: Auth::Dev("s".into()), max_messages_per_s: 100_000, ..ShardConfig::default() };
    let mut sim = Sim::new();
    sim.shard = Shard::new(0, Arc::new(config));
    let conn = sim.connect("s", 1);
    sim.take(conn);
    sim.open(conn, "d");
    assert!(matches!(&sim.take(conn)[..], [ServerMsg::Opened { role: None, .. }, ServerMsg::Notes { .. }]));
    assert!(sim.loads.is_empty(), "nothing to load without accounts");
    let applied = Arc::new(AtomicUsize::new(0));
    let a2 = Arc::clone(&applied);
    let done = Done::new(move || {
        a2.fetch_add(1, Ordering::SeqCst);
    });
    sim.control("d", AccessUpdate::Changed(list(9, &[("someone", Role::Owner)], None), Some(done)));
    assert_eq!(applied.load(Ordering::SeqCst), 1, "the control plane is not left waiting");
    assert!(sim.take(conn).is_empty());
    sim.submit(conn, "d", 0, 1);
    assert!(matches!(&sim.take(conn)[..], [ServerMsg::Ack { rev: 1, .. }]), "still writable");
}

#[test]
fn another_users_client_id_is_not_taken_over() {
    let mut sim = Sim::new();
    let ada = sim.connect("ada", 7);
    let eve = sim.connect("eve", 7);
    sim.take(ada);
    sim.take(eve);
    sim.open(ada, "d");
    sim.control("d", AccessUpdate::Loaded(sim.last_load(), Ok(list(1, &[("ada", Role::Owner)], Some(Role::Viewer)))));
    sim.take(ada);
    // Eve reaches the document through the link, with Ada's client id: refused, and Ada's
    // session stays (no 4009).
    sim.open(eve, "d");
    assert_eq!(error_code(&sim.take(eve)).map(|e| e.0), Some(ErrorCode::Forbidden));
    assert!(!sim.closed.contains_key(&ada));
    sim.submit(ada, "d", 0, 1);
    assert!(matches!(&sim.take(ada)[..], [ServerMsg::Ack { rev: 1, .. }]));
}

#[test]
fn an_answer_to_an_abandoned_load_is_ignored() {
    let mut sim = Sim::new();
    let bob = sim.connect("bob", 2);
    sim.take(bob);
    sim.open(bob, "g");
    let first = sim.last_load();
    // The document is deleted while its list is being read: the load is abandoned...
    sim.control("g", AccessUpdate::Deleted(None));
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::DocumentDeleted));
    // ...and opened again (a new load), when the first answer, read before the deletion, comes.
    sim.open(bob, "g");
    assert_ne!(sim.last_load(), first);
    sim.control("g", AccessUpdate::Loaded(first, Ok(list(1, &[("bob", Role::Editor)], None))));
    assert!(sim.take(bob).is_empty(), "a stale answer opened the document");
    sim.control("g", AccessUpdate::Loaded(sim.last_load(), Err(AccessError::NotFound)));
    assert_eq!(error_code(&sim.take(bob)).map(|e| e.0), Some(ErrorCode::Forbidden));
}

#[test]
fn undo_is_the_users_across_devices_and_editors_only() {
    let mut sim = Sim::new();
    let laptop = sim.connect("ada", 1);
    let bob = sim.connect("bob", 3);
    sim.open(laptop, "d");
    sim.control(
        "d",
        AccessUpdate::Loaded(sim.last_load(), Ok(list(1, &[("ada", Role::Owner), ("bob", Role::Commenter)], None))),
    );
    sim.open(bob, "d");
    sim.take(laptop);
    sim.take(bob);
    sim.submit(laptop, "d", 0, 1);
    assert!(matches!(&sim.take(laptop)[..], [ServerMsg::Ack { rev: 1, .. }]));

    // A commenter has no undo: refused as read-only, nothing changes, the document stays open.
    sim.send(bob, ClientMsg::Undo { doc: "d".into(), client_seq: 1 });
    let msgs = sim.take(bob);
    assert_eq!(error_code(&msgs), Some((ErrorCode::ReadOnly, Some(1))), "{msgs:?}");

    // Ada's phone (another client id) undoes what her laptop typed: the stack is the user's.
    let phone = sim.connect("ada", 2);
    sim.take(phone);
    sim.open(phone, "d");
    for conn in [phone, laptop, bob] {
        sim.take(conn);
    }
    sim.send(phone, ClientMsg::Undo { doc: "d".into(), client_seq: 1 });
    // The answer is an op to everyone, the undoer too (it does not know the change).
    for conn in [phone, laptop, bob] {
        match &sim.take(conn)[..] {
            [ServerMsg::Op { rev: 2, author, client_seq: 1, delta, .. }] => {
                assert_eq!((*author, delta.clone()), (ClientId(2), Delta::new().delete(1)));
            }
            other => panic!("{conn:?}: {other:?}"),
        }
    }
    // Sent again (a reconnect that missed the answer): acknowledged, not applied twice.
    sim.send(phone, ClientMsg::Undo { doc: "d".into(), client_seq: 1 });
    assert!(matches!(&sim.take(phone)[..], [ServerMsg::Ack { rev: 2, client_seq: 1, .. }]));
    // Nothing left to undo: a non-closing error; redo brings the text back.
    sim.send(laptop, ClientMsg::Undo { doc: "d".into(), client_seq: 2 });
    assert_eq!(error_code(&sim.take(laptop)), Some((ErrorCode::NothingToUndo, Some(2))));
    sim.send(laptop, ClientMsg::Redo { doc: "d".into(), client_seq: 2 });
    assert!(matches!(&sim.take(laptop)[..], [ServerMsg::Op { rev: 3, client_seq: 2, .. }]));
    sim.send(laptop, ClientMsg::Redo { doc: "d".into(), client_seq: 3 });
    assert_eq!(error_code(&sim.take(laptop)), Some((ErrorCode::NothingToUndo, Some(3))));
    assert!(sim.closed.is_empty());
}

#[test]
fn a_commenter_may_not_restore() {
    let mut sim = Sim::new();
    let ada = sim.connect("ada", 1);
    let bob = sim.connect("bob", 2);
    sim.open(ada, "d");
    sim.control(
        "d",
        AccessUpdate::Loaded(sim.last_load(), Ok(list(1, &[("ada", Role::Owner), ("bob", Role::Commenter)], None))),
    );
    sim.open(bob, "d");
    sim.submit(ada, "d", 0, 1);
    sim.take(ada);
    sim.take(bob);
    sim.send(bob, ClientMsg::Restore { doc: "d".into(), rev: 0, client_seq: 1 });
    assert_eq!(error_code(&sim.take(bob)), Some((ErrorCode::ReadOnly, Some(1))));
    assert!(sim.take(ada).is_empty());
    // The owner may (the shard asks the op log for the revision; this server keeps none).
    sim.send(ada, ClientMsg::Restore { doc: "d".into(), rev: 0, client_seq: 2 });
    assert_eq!(error_code(&sim.take(ada)), Some((ErrorCode::HistoryUnavailable, Some(2))));
}

fn note(doc: &str, rev: u64, seq: u64, change: tandem_engine::NoteChange) -> ClientMsg {
    ClientMsg::Note { doc: doc.into(), rev, client_seq: seq, change: tandem_net::protocol::Json(change) }
}

#[test]
fn commenters_comment_viewers_read_and_only_authors_or_owners_delete() {
    use tandem_engine::NoteChange;
    let mut sim = Sim::new();
    let ada = sim.connect("ada", 1);
    let bob = sim.connect("bob", 2);
    let cy = sim.connect("cy", 3);
    let dee = sim.connect("dee", 4);
    sim.open(ada, "d");
    let roles = [("ada", Role::Owner), ("bob", Role::Commenter), ("cy", Role::Viewer), ("dee", Role::Editor)];
    sim.control("d", AccessUpdate::Loaded(sim.last_load(), Ok(list(1, &roles, None))));
    for conn in [bob, cy, dee] {
        sim.open(conn, "d");
    }
    sim.submit(ada, "d", 0, 1);
    for conn in [ada, bob, cy, dee] {
        sim.take(conn);
    }
    let comment = NoteChange::Comment { start: 0, end: 1, text: "why x?".into(), mentions: vec![] };
    // A viewer may not comment: refused, nothing changes, the document stays open.
    sim.send(cy, note("d", 1, 1, comment.clone()));
    assert_eq!(error_code(&sim.take(cy)), Some((ErrorCode::ReadOnly, Some(1))));
    // A commenter may; everyone gets it, the author too.
    sim.send(bob, note("d", 1, 1, comment));
    for conn in [ada, bob, cy, dee] {
        match &sim.take(conn)[..] {
            [ServerMsg::Noted { rev: 2, author: ClientId(2), client_seq: 1, note, .. }] => {
                assert_eq!((note.0.user.as_str(), note.0.name.as_str()), ("bob", "BOB"));
            }
            other => panic!("{conn:?}: {other:?}"),
        }
    }
    // But may not name a version (editors do).
    let name = NoteChange::NameVersion { rev: 1, name: "v1".into() };
    sim.send(bob, note("d", 2, 2, name.clone()));
    assert_eq!(error_code(&sim.take(bob)), Some((ErrorCode::ReadOnly, Some(2))));
    sim.send(dee, note("d", 2, 1, name));
    assert!(matches!(&sim.take(dee)[..], [ServerMsg::Noted { rev: 3, .. }]));
    // An editor may not delete Bob's comment, nor edit it; the owner may delete it.
    sim.send(dee, note("d", 3, 2, NoteChange::Delete { thread: 2, message: 2 }));
    assert_eq!(error_code(&sim.take(dee)), Some((ErrorCode::Forbidden, Some(2))));
    let edit = NoteChange::Edit { thread: 2, message: 2, text: "mine".into(), mentions: vec![] };
    sim.send(ada, note("d", 3, 2, edit));
    assert_eq!(error_code(&sim.take(ada)), Some((ErrorCode::Forbidden, Some(2))));
    sim.send(ada, note("d", 3, 3, NoteChange::Delete { thread: 2, message: 2 }));
    assert!(matches!(&sim.take(ada)[..], [ServerMsg::Noted { rev: 4, .. }]));
    sim.take(bob);
    // A viewer sees the notes when it opens.
    let cy2 = sim.connect("cy", 5);
    sim.take(cy2);
    sim.open(cy2, "d");
    match &sim.take(cy2)[..] {
        [ServerMsg::Opened { .. }, ServerMsg::Notes { rev: 4, notes, .. }] => {
            assert_eq!((notes.0.threads().len(), notes.0.versions().len()), (0, 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.closed.is_empty());
}
