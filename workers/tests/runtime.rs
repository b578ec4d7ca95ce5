//! The worker runtime with a probe worker on the in-process bus: a batch lingers to collect
//! events into one flush, a transient failure is retried and a permanent one dead-lettered,
//! a failed flush is retried before any offset is committed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_control::Store;
use tandem_events::local::LocalBus;
use tandem_events::{Bus, Envelope, Event, Message, Topic};
use tandem_workers::{Failure, RetryPolicy, Worker, WorkerStats};

#[derive(Default)]
struct Seen {
    /// Every attempt, by event id.
    attempts: Vec<String>,
    /// Events each successful flush made durable.
    flushes: Vec<Vec<String>>,
    /// Failed flushes.
    failed_flushes: usize,
}

struct Probe {
    seen: Arc<Mutex<Seen>>,
    pending: Vec<String>,
    /// Fail once, transiently.
    flaky: HashSet<String>,
    fail_next_flush: bool,
}

impl Worker for Probe {
    fn group(&self) -> &'static str {
        "probe"
    }

    fn topic(&self) -> Topic {
        Topic::Analytics
    }

    fn handle(&mut self, event: &Envelope) -> impl Future<Output = Result<(), Failure>> + Send {
        self.seen.lock().unwrap().attempts.push(event.id.clone());
        let result = if event.id == "poison" {
            Err(Failure::Permanent("never works".into()))
        } else if self.flaky.remove(&event.id) {
            Err(Failure::Transient("works the second time".into()))
        } else {
            self.pending.push(event.id.clone());
            Ok(())
        };
        std::future::ready(result)
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.fail_next_flush {
            self.fail_next_flush = false;
            self.seen.lock().unwrap().failed_flushes += 1;
            return Err("the store is down".into());
        }
        if !self.pending.is_empty() {
            self.seen.lock().unwrap().flushes.push(std::mem::take(&mut self.pending));
        }
        Ok(())
    }

    fn batch(&self) -> usize {
        100
    }

    fn linger(&self) -> Duration {
        Duration::from_secs(2)
    }
}

fn event(id: &str) -> Message {
    Message::from(&Envelope::new(
        id.to_owned(),
        1,
        Event::Opened { doc: "d".into(), user: "u".into(), client: id.to_owned() },
    ))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn batches_linger_failures_are_retried_or_dead_lettered_and_offsets_follow_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    store.migrate().await.unwrap();
    let bus = Bus::Local(LocalBus::open(&dir.path().join("events.db"), 1000).await.unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let probe = Probe {
        seen: Arc::clone(&seen),
        pending: Vec::new(),
        flaky: HashSet::from(["b".to_owned()]),
        fail_next_flush: true,
    };
    let stats = WorkerStats::new("probe");
    let policy =
        RetryPolicy { attempts: 3, backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50) };
    bus.publish(&[event("a"), event("b"), event("poison")]).await.unwrap();
    let task = tokio::spawn(tandem_workers::run(probe, bus.clone(), store.clone(), Arc::clone(&stats), policy));
    // Within the linger, more events join the same batch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bus.publish(&[event("c")]).await.unwrap();
    wait_for("the flush", || !seen.lock().unwrap().flushes.is_empty()).await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.flushes,
            vec![vec!["a".to_owned(), "b".into(), "c".into()]],
            "one flush for the lingering batch"
        );
        assert_eq!(seen.failed_flushes, 1, "the failed flush was retried");
        assert_eq!(seen.attempts.iter().filter(|id| *id == "b").count(), 2, "the transient failure, retried once");
        assert_eq!(seen.attempts.iter().filter(|id| *id == "poison").count(), 1, "a permanent failure, never retried");
    }
    let letters = store.dead_letters("probe", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id.as_deref(), Some("poison"));
    assert!(letters[0].reason.contains("never works"), "{}", letters[0].reason);
    wait_for("the offsets", || bus.lag() == vec![("probe".to_owned(), Topic::Analytics, 0)]).await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (stats.processed.load(Relaxed), stats.retried.load(Relaxed), stats.dead_lettered.load(Relaxed)),
        (3, 1, 1)
    );
    task.abort();
}
