//! The notification worker against a real SMTP sink (aiosmtpd, started here; the README's
//! test command installs it) and in its `.eml` mode: a share sends one email with the right
//! link, a redelivered event sends nothing more, an unreadable message is dead-lettered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_control::Store;
use tandem_events::local::LocalBus;
use tandem_events::relay::Relay;
use tandem_events::{Bus, Message, Topic};
use tandem_net::protocol::Role;
use tandem_workers::notify::{GROUP, MailConfig, Mailer, Notifications, TlsMode};
use tandem_workers::{RetryPolicy, WorkerStats};

#[path = "support/smtp.rs"]
mod smtp;

use smtp::{mails, smtp_sink};

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A store with Ann sharing "Plans & <notes>" with bob@example.com; the bus; the relay.
async fn setup(dir: &Path) -> (Store, Bus, Relay<Store>) {
    let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
    store.migrate().await.unwrap();
    let ann = store.create_user("ann@example.com", "Ann", "x").await.unwrap().user;
    let doc = store.create_document(&ann.id, "Plans & <notes>").await.unwrap();
    store.share(&doc, &ann, "bob@example.com", Role::Editor).await.unwrap();
    let bus = Bus::Local(LocalBus::open(&dir.join("events.db"), 1000).await.unwrap());
    let relay = Relay::new(store.clone(), bus.clone(), Arc::default(), Duration::from_secs(1));
    (store, bus, relay)
}

/// The notification worker sending through the SMTP sink on `port`, links to
/// http://tandem.test:8080/: its task and its counters.
fn smtp_worker(dir: &Path, port: u16, store: &Store, bus: &Bus) -> (tokio::task::JoinHandle<()>, Arc<WorkerStats>) {
    let config = MailConfig {
        smtp_host: Some("127.0.0.1".into()),
        smtp_port: port,
        tls: TlsMode::None,
        ..MailConfig::default()
    };
    let mailer = Mailer::new(&config, dir).unwrap();
    let worker = Notifications::new(mailer, store.clone(), &config, "http://tandem.test:8080/").unwrap();
    let stats = WorkerStats::new(GROUP);
    let task = tokio::spawn(tandem_workers::run(worker, bus.clone(), store.clone(), Arc::clone(&stats), policy()));
    (task, stats)
}

fn policy() -> RetryPolicy {
    RetryPolicy { attempts: 3, backoff: Duration::from_millis(20), max_backoff: Duration::from_millis(100) }
}

#[tokio::test]
async fn a_share_sends_one_email_through_smtp_even_when_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp_sink(dir.path());
    let (store, bus, relay) = setup(dir.path()).await;
    let (task, stats) = smtp_worker(dir.path(), sink.port, &store, &bus);

    // What the relay publishes, kept to publish again below.
    let again: Vec<Message> = store
        .unsent_messages(100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.topic == Topic::Notifications)
        .collect();
    assert_eq!(again.len(), 1);
    // Delivered twice in one batch before the relay runs (as a relay re-sending after a crash
    // may): one email.
    let twice: Vec<Message> = again.iter().chain(&again).cloned().collect();
    bus.publish(&twice).await.unwrap();
    wait_for("the email", || mails(&sink.maildir).len() == 1).await;
    let mail = mails(&sink.maildir).remove(0);
    let doc = store
        .documents_for(&store.user_by_email("ann@example.com").await.unwrap().unwrap().0.id, None, 1)
        .await
        .unwrap()
        .docs
        .remove(0)
        .doc;
    assert!(mail.contains("To: bob@example.com"), "{mail}");
    assert!(mail.contains(&format!("http://tandem.test:8080/d/{}", doc.id)), "{mail}");
    assert!(mail.contains("Plans &amp; &lt;notes&gt;"), "the HTML part escapes the title: {mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");

    // The relay publishes it again: no second email.
    assert!(relay.drain().await.unwrap() >= 2, "the creation and the share");
    wait_for("the redelivery to be processed", || stats.processed.load(std::sync::atomic::Ordering::Relaxed) >= 3)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mails(&sink.maildir).len(), 1, "exactly one email per event");
    task.abort();
}

#[tokio::test]
async fn without_smtp_emails_are_files_and_bad_messages_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bus, relay) = setup(dir.path()).await;
    let config = MailConfig::default();
    let mailer = Mailer::new(&config, dir.path()).unwrap();
    assert!(mailer.describe().contains("no SMTP server configured"));
    let worker = Notifications::new(mailer, store.clone(), &config, "http://h").unwrap();
    let stats = WorkerStats::new(GROUP);
    let task = tokio::spawn(tandem_workers::run(worker, bus.clone(), store.clone(), Arc::clone(&stats), policy()));
    relay.drain().await.unwrap();
    let maildir = dir.path().join("mail");
    let eml = || {
        std::fs::read_dir(&maildir)
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count())
            .unwrap_or(0)
    };
    wait_for("the .eml file", || eml() == 1).await;

    bus.publish(&[Message { topic: Topic::Notifications, key: "d".into(), payload: b"{oops".to_vec() }]).await.unwrap();
    wait_for("the dead letter", || stats.dead_lettered.load(std::sync::atomic::Ordering::Relaxed) == 1).await;
    let letters = store.dead_letters(GROUP, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, "{oops");
    assert!(letters[0].reason.contains("not an event envelope"), "{}", letters[0].reason);
    assert_eq!(eml(), 1);
    assert!(letters[0].event_id.is_none(), "no id could be read");
    let metrics = tandem_workers::render_metrics(&[stats], &bus, Some(2));
    assert!(metrics.contains("tandem_worker_processed_total{worker=\"notifications\"} 1"), "{metrics}");
    assert!(metrics.contains("tandem_worker_dead_lettered_total{worker=\"notifications\"} 1"), "{metrics}");
    assert!(
        metrics.contains("tandem_bus_lag_messages{group=\"notifications\",topic=\"notifications\"} 0"),
        "{metrics}"
    );
    task.abort();
}

#[tokio::test]
async fn a_mention_emails_the_user_mentioned_if_they_have_access() {
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp_sink(dir.path());
    let (store, bus, _relay) = setup(dir.path()).await;
    let ann = store.user_by_email("ann@example.com").await.unwrap().unwrap().0;
    // Bob signs up: the invitation he had becomes his role.
    let bob = store.create_user("bob@example.com", "Bob", "x").await.unwrap().user;
    let eve = store.create_user("eve@example.com", "Eve", "x").await.unwrap().user;
    let doc = store.documents_for(&ann.id, None, 1).await.unwrap().docs.remove(0).doc;
    // Eve has no access to the document: she is not told about it.
    let users = vec![bob.id.clone(), eve.id.clone(), "u_nobody".to_owned()];
    let notified =
        store.record_mentions(&doc.id, &ann.id, "Ann", &users, 7, "<b>Look</b> at this, @Bob").await.unwrap();
    assert_eq!(notified, 1);
    let (task, _) = smtp_worker(dir.path(), sink.port, &store, &bus);
    let mentions: Vec<Message> = store
        .unsent_messages(100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| String::from_utf8_lossy(&m.payload).contains("\"mentioned\""))
        .collect();
    assert_eq!(mentions.len(), 1);
    bus.publish(&mentions).await.unwrap();
    wait_for("the email", || mails(&sink.maildir).len() == 1).await;
    let mail = mails(&sink.maildir).remove(0);
    assert!(mail.contains("To: bob@example.com"), "{mail}");
    assert!(mail.contains("Ann mentioned you in"), "{mail}");
    assert!(mail.contains(&format!("http://tandem.test:8080/d/{}#thread-7", doc.id)), "{mail}");
    assert!(mail.contains("&lt;b&gt;Look&lt;/b&gt;"), "the HTML part escapes the comment: {mail}");
    task.abort();
}
