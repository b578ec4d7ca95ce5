//! Worker processes: one process holds at most ~19,000 connections here (the machine caps
//! file descriptors at 20,000 per process), so a scenario with more users runs in several.
//!
//! The coordinator (`tandem-loadgen run`) spawns `tandem-loadgen worker` children of its own
//! executable and talks to each over its stdin and stdout, one JSON object per line:
//!
//! 1. coordinator → worker: the [`Job`] (the scenario, the target, how many processes and
//!    threads, which process this is, where the trace replay's setup put its sections);
//! 2. worker → coordinator: `{"ready":true}` once it has loaded what it needs;
//! 3. coordinator → worker: `{"start_unix_ns":N}`, the run's t = 0 on the system clock, fixed
//!    once every worker is ready (a worker turns it into its own monotonic `Instant`);
//! 4. worker → coordinator: `{"progress":[sent,acked,delivered,errors]}` every 500 ms, then
//!    `{"result":{...}}`: its threads' statistics (histograms as recorded value/count pairs,
//!    so the merge is exact), convergence findings and live users.
//!
//! Every process computes the same assignment of users to `processes x threads` generator
//! threads (it is deterministic) and runs its own share, so the users of a document still
//! share one thread and one clock, and a user's source address (127.x.y.z by global index,
//! at most 10,000 users per source) is the same whichever process runs it. Worker stderr
//! goes straight to the coordinator's.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::peers::Protocol;
use crate::replay::{self, Placement};
use crate::run::{self, ThreadResult, ThreadResultWire};
use crate::scenario::Scenario;

/// What a worker is asked to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) scenario: Scenario,
    pub(crate) target: SocketAddr,
    /// Every node users connect to.
    pub(crate) targets: Vec<SocketAddr>,
    pub(crate) protocol: Protocol,
    /// Processes in the run.
    pub(crate) processes: usize,
    /// Generator threads per process.
    pub(crate) threads: usize,
    /// This process's index (0-based): it runs threads `index * threads ..`.
    pub(crate) index: usize,
    /// The trace replay's documents, as the coordinator's setup placed them.
    pub(crate) placements: Vec<Placement>,
    /// TLS, for `wss://` targets.
    pub(crate) tls: Option<crate::tls::TlsSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Up {
    Ready(bool),
    Progress([u64; 4]),
    Result(ThreadResultWire),
}

#[derive(Debug, Serialize, Deserialize)]
struct Start {
    start_unix_ns: u64,
}

fn unix_ns(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(u64::MAX)
}

/// The monotonic instant of a system-clock time (same machine: microseconds apart).
fn instant_of(at_ns: u64) -> Instant {
    let (now_i, now_ns) = (Instant::now(), unix_ns(SystemTime::now()));
    if at_ns >= now_ns {
        now_i + Duration::from_nanos(at_ns - now_ns)
    } else {
        now_i.checked_sub(Duration::from_nanos(now_ns - at_ns)).unwrap_or(now_i)
    }
}

/// Raises this process's soft file-descriptor limit to its hard one; returns the new soft
/// limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// `tandem-loadgen worker`: runs one process's share of a run (see the module docs).
pub fn main() -> Result<()> {
    raise_fd_limit();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next = |what: &str| -> Result<String> {
        lines.next().ok_or_else(|| anyhow!("worker: stdin closed before the {what}"))?.context("worker: reading stdin")
    };
    let job: Job = serde_json::from_str(&next("job")?).context("worker: parsing the job")?;
    crate::tls::init(job.tls.as_ref())?;
    let replayed = replay::rebuild(&job.scenario, &job.placements)?;
    up(&Up::Ready(true))?;
    let start: Start = serde_json::from_str(&next("start")?).context("worker: parsing the start")?;
    let clock = run::clock_from(&job.scenario, instant_of(start.start_unix_ns));
    let (mut users, mut docs) = run::assign(&job.scenario, job.processes, job.threads, &clock, &job.targets, &replayed);
    let mine = job.index * job.threads..(job.index + 1) * job.threads;
    let users: Vec<_> = users.drain(mine.clone()).collect();
    let docs: Vec<_> = docs.drain(mine).collect();
    let handles = run::spawn_threads(&job.scenario, users, docs, clock, job.target, job.protocol)?;
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !done.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if up(&Up::Progress(crate::stats::progress())).is_err() {
                    return;
                }
            }
        })
    };
    let total = run::join_threads(handles)?;
    done.store(true, Relaxed);
    let _ = reporter.join();
    up(&Up::Result(total.to_wire()))
}

fn up(msg: &Up) -> Result<()> {
    let line = serde_json::to_string(msg).context("worker: encoding")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).context("worker: writing to the coordinator")
}

/// A worker process as the coordinator sees it.
pub(crate) struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its latest progress line.
    progress: Arc<[AtomicU64; 4]>,
    reader: Option<std::thread::JoinHandle<Result<ThreadResult>>>,
}

impl Worker {
    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Workers of one run.
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `processes` workers on `job` (its `index` set per worker) and waits until each
    /// is ready.
    pub(crate) fn spawn(job: &mut Job) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this executable to spawn workers")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
        let mut workers = Vec::new();
        for index in 0..job.processes {
            job.index = index;
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("spawning worker {index}"))?;
            let mut stdin = child.stdin.take().expect("piped");
            writeln!(stdin, "{}", serde_json::to_string(&*job)?)
                .with_context(|| format!("sending worker {index} its job"))?;
            let stdout = child.stdout.take().expect("piped");
            let progress: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
            let (p, ready) = (Arc::clone(&progress), ready_tx.clone());
            let reader = std::thread::spawn(move || -> Result<ThreadResult> {
                for line in std::io::BufReader::new(stdout).lines() {
                    let line = line.with_context(|| format!("reading worker {index}"))?;
                    match serde_json::from_str::<Up>(&line).with_context(|| format!("worker {index} said {line:?}"))? {
                        Up::Ready(_) => {
                            let _ = ready.send(index);
                        }
                        Up::Progress(v) => {
                            for (a, v) in p.iter().zip(v) {
                                a.store(v, Relaxed);
                            }
                        }
                        Up::Result(r) => return ThreadResult::from_wire(r).map_err(|e| anyhow!("worker {index}: {e}")),
                    }
                }
                bail!("worker {index} exited without a result (see its messages above)")
            });
            workers.push(Worker { child, stdin: Some(stdin), progress, reader: Some(reader) });
        }
        drop(ready_tx);
        let deadline = Instant::now() + Duration::from_secs(120);
        for _ in 0..job.processes {
            let left = deadline.saturating_duration_since(Instant::now());
            if ready_rx.recv_timeout(left).is_err() {
                let mut w = Self { workers };
                w.kill();
                bail!("a worker was not ready within 120 s (or exited; see its messages above)");
            }
        }
        Ok(Self { workers })
    }

    /// Tells every worker when t = 0 is.
    pub(crate) fn start(&mut self, start: Instant) -> Result<()> {
        let ns = unix_ns(SystemTime::now())
            + u64::try_from(start.saturating_duration_since(Instant::now()).as_nanos()).unwrap_or(0);
        let line = serde_json::to_string(&Start { start_unix_ns: ns })?;
        for (i, w) in self.workers.iter_mut().enumerate() {
            let mut stdin = w.stdin.take().expect("started once");
            writeln!(stdin, "{line}").with_context(|| format!("starting worker {i}"))?;
        }
        Ok(())
    }

    /// Their pids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(Worker::pid).collect()
    }

    /// A reader of their summed progress.
    pub(crate) fn progress(&self) -> impl Fn() -> [u64; 4] + Send + Sync + 'static {
        let all: Vec<Arc<[AtomicU64; 4]>> = self.workers.iter().map(|w| Arc::clone(&w.progress)).collect();
        move || {
            all.iter().fold([0; 4], |mut t, p| {
                for (t, p) in t.iter_mut().zip(p.iter()) {
                    *t += p.load(Relaxed);
                }
                t
            })
        }
    }

    /// Waits for every worker's result.
    pub(crate) fn join(mut self) -> Result<Vec<ThreadResult>> {
        let mut out = Vec::new();
        let mut first_err = None;
        for w in &mut self.workers {
            let r = w.reader.take().expect("joined once").join().map_err(|_| anyhow!("a worker reader panicked"));
            match r.and_then(|r| r) {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            let _ = w.child.wait();
        }
        match first_err {
            Some(e) => {
                self.kill();
                Err(e)
            }
            None => Ok(out),
        }
    }

    fn kill(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_times_map_to_instants() {
        let now = Instant::now();
        let later = instant_of(unix_ns(SystemTime::now()) + 2_000_000_000);
        let d = later.duration_since(now);
        assert!(d > Duration::from_millis(1_990) && d < Duration::from_millis(2_100), "{d:?}");
        let earlier = instant_of(unix_ns(SystemTime::now()) - 1_000_000_000);
        assert!(now.duration_since(earlier) > Duration::from_millis(990));
    }

    #[test]
    fn the_messages_round_trip() {
        let line = serde_json::to_string(&Up::Progress([1, 2, 3, 4])).unwrap();
        assert_eq!(line, r#"{"progress":[1,2,3,4]}"#);
        assert!(matches!(serde_json::from_str::<Up>(r#"{"ready":true}"#).unwrap(), Up::Ready(true)));
        assert!(serde_json::from_str::<Up>(r#"{"bogus":1}"#).is_err());
    }
}
