//! What a run measures: latency histograms (HDR, microseconds), counters, and a per-second
//! series. Each generator thread keeps its own and the coordinator merges them.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The run's clock: when it started and which part is measured.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Start of the run (t = 0 of the series).
    pub start: Instant,
    /// Start of the steady stage.
    pub steady_from: Instant,
    /// End of the steady stage.
    pub steady_to: Instant,
}

impl Clock {
    /// True when an action intended at `t` is measured.
    pub fn measured(&self, t: Instant) -> bool {
        t >= self.steady_from && t < self.steady_to
    }

    /// The second of the run `t` falls in.
    pub fn second(&self, t: Instant) -> usize {
        usize::try_from(t.saturating_duration_since(self.start).as_secs()).unwrap_or(usize::MAX)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Second {
    /// Edits acknowledged.
    pub acked: u64,
    /// Op messages delivered to users.
    pub delivered: u64,
    /// Edits made.
    pub sent: u64,
    /// Errors.
    pub errors: u64,
    /// Largest ack latency, µs.
    pub ack_max_us: u64,
    /// Sum of ack latencies, µs (for the mean).
    pub ack_sum_us: u64,
}

/// The named latency histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Edit (intended time) to ack.
    Ack,
    /// Edit (intended time) to receipt by another user.
    Propagation,
    /// Cursor move (intended time) to receipt by another user.
    Presence,
    /// Connect start to `welcome`.
    Connect,
    /// `open` to `opened`.
    Join,
}

/// Everything one thread (or, merged, the whole run) measured.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Edit to ack.
    pub ack: Histogram<u64>,
    /// Edit to remote receipt.
    pub propagation: Histogram<u64>,
    /// Cursor move to remote receipt.
    pub presence: Histogram<u64>,
    /// Connect to welcome.
    pub connect: Histogram<u64>,
    /// Open to opened.
    pub join: Histogram<u64>,
    /// Edits made in the steady stage.
    pub sent: u64,
    /// Edits acknowledged (made in the steady stage).
    pub acked: u64,
    /// Ops delivered in the steady stage.
    pub delivered: u64,
    /// Cursor moves sent in the steady stage.
    pub presence_sent: u64,
    /// Presence updates received in the steady stage.
    pub presence_received: u64,
    /// Errors (server errors, refused connections), whole run.
    pub errors: u64,
    /// Connections lost, whole run.
    pub disconnects: u64,
    /// Revisions that arrived out of order (must be 0), whole run.
    pub gaps: u64,
    /// Connections a cluster node sent to another node (`moved`), whole run.
    pub moves: u64,
    /// Edits (made in the steady stage) whose ack the protocol cannot show (y-websocket
    /// deletes: they make no blocks to trace).
    pub untraced: u64,
    /// Per second of the run.
    pub series: Vec<Second>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ack: histogram(),
            propagation: histogram(),
            presence: histogram(),
            connect: histogram(),
            join: histogram(),
            sent: 0,
            acked: 0,
            delivered: 0,
            presence_sent: 0,
            presence_received: 0,
            errors: 0,
            disconnects: 0,
            gaps: 0,
            moves: 0,
            untraced: 0,
            series: Vec::new(),
        }
    }
}

/// [`Stats`] as a worker process hands them to the coordinator: each histogram as its
/// recorded (value, count) pairs, so the coordinator's merge is exact.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsWire {
    /// ack, propagation, presence, connect, join.
    histograms: Vec<Vec<(u64, u64)>>,
    /// sent, acked, delivered, presence_sent, presence_received, errors, disconnects, gaps,
    /// untraced, moves.
    counters: Vec<u64>,
    series: Vec<Second>,
}

impl Stats {
    fn histograms(&self) -> [&Histogram<u64>; 5] {
        [&self.ack, &self.propagation, &self.presence, &self.connect, &self.join]
    }

    /// The wire form.
    pub fn to_wire(&self) -> StatsWire {
        StatsWire {
            histograms: self
                .histograms()
                .iter()
                .map(|h| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
                .collect(),
            counters: vec![
                self.sent,
                self.acked,
                self.delivered,
                self.presence_sent,
                self.presence_received,
                self.errors,
                self.disconnects,
                self.gaps,
                self.untraced,
                self.moves,
            ],
            series: self.series.clone(),
        }
    }

    /// Back from the wire form.
    pub fn from_wire(w: &StatsWire) -> Result<Self, String> {
        let [sent, acked, delivered, presence_sent, presence_received, errors, disconnects, gaps, untraced, moves] =
            w.counters[..]
        else {
            return Err(format!("{} counters, expected 10", w.counters.len()));
        };
        let mut s = Self {
            sent,
            acked,
            delivered,
            presence_sent,
            presence_received,
            errors,
            disconnects,
            gaps,
            untraced,
            moves,
            series: w.series.clone(),
            ..Self::default()
        };
        if w.histograms.len() != 5 {
            return Err(format!("{} histograms, expected 5", w.histograms.len()));
        }
        for (h, values) in [&mut s.ack, &mut s.propagation, &mut s.presence, &mut s.connect, &mut s.join]
            .into_iter()
            .zip(&w.histograms)
        {
            for &(v, n) in values {
                h.record_n(v, n).map_err(|e| format!("value {v}: {e}"))?;
            }
        }
        Ok(s)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, 3_600_000_000)
}

/// Counters every generator thread bumps as it goes, for the live progress line (the
/// histograms stay per thread and merge at the end). One slot per thread, each on its own
/// cache line, so the threads never write the same line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    /// Edits sent.
    pub sent: AtomicU64,
    /// Edits acked.
    pub acked: AtomicU64,
    /// Ops delivered.
    pub delivered: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
}

/// Progress slots (threads beyond this share them).
const SLOTS: usize = 64;

static PROGRESS: [Progress; SLOTS] = [const {
    Progress {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    }
}; SLOTS];

thread_local! {
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread bump progress slot `i`.
pub fn use_progress_slot(i: usize) {
    SLOT.set(i % SLOTS);
}

/// The process's progress so far: sent, acked, delivered, errors.
pub fn progress() -> [u64; 4] {
    PROGRESS.iter().fold([0; 4], |t, p| {
        [
            t[0] + p.sent.load(Relaxed),
            t[1] + p.acked.load(Relaxed),
            t[2] + p.delivered.load(Relaxed),
            t[3] + p.errors.load(Relaxed),
        ]
    })
}

fn bump(counter: fn(&Progress) -> &AtomicU64) {
    counter(&PROGRESS[SLOT.get()]).fetch_add(1, Relaxed);
}

impl Stats {
    fn second(&mut self, clock: &Clock, t: Instant) -> &mut Second {
        let s = clock.second(t).min(100_000);
        if self.series.len() <= s {
            self.series.resize(s + 1, Second::default());
        }
        &mut self.series[s]
    }

    /// Records a latency from `intended` to `now`, if `intended` is in the steady stage.
    pub fn latency(&mut self, clock: &Clock, which: Latency, intended: Instant, now: Instant) {
        let us = micros(now.saturating_duration_since(intended));
        if which == Latency::Ack {
            bump(|p| &p.acked);
            let sec = self.second(clock, now);
            sec.acked += 1;
            sec.ack_max_us = sec.ack_max_us.max(us);
            sec.ack_sum_us += us;
        }
        if !clock.measured(intended) {
            return;
        }
        let h = match which {
            Latency::Ack => {
                self.acked += 1;
                &mut self.ack
            }
            Latency::Propagation => &mut self.propagation,
            Latency::Presence => {
                self.presence_received += 1;
                &mut self.presence
            }
            Latency::Connect => &mut self.connect,
            Latency::Join => &mut self.join,
        };
        h.saturating_record(us);
    }

    /// Records a connection-time latency (measured whatever the stage: users connect during
    /// ramp-up).
    pub fn setup_latency(&mut self, which: Latency, from: Instant, now: Instant) {
        let h = if which == Latency::Connect { &mut self.connect } else { &mut self.join };
        h.saturating_record(micros(now.saturating_duration_since(from)));
    }

    /// Counts an edit made at `intended`.
    pub fn edit(&mut self, clock: &Clock, intended: Instant) {
        bump(|p| &p.sent);
        self.second(clock, intended).sent += 1;
        if clock.measured(intended) {
            self.sent += 1;
        }
    }

    /// Counts an op delivered to a user at `now`.
    pub fn delivered(&mut self, clock: &Clock, now: Instant) {
        bump(|p| &p.delivered);
        self.second(clock, now).delivered += 1;
        if clock.measured(now) {
            self.delivered += 1;
        }
    }

    /// Counts an error at `now`.
    pub fn error(&mut self, clock: &Clock, now: Instant) {
        bump(|p| &p.errors);
        self.second(clock, now).errors += 1;
        self.errors += 1;
    }

    /// Adds another thread's numbers.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in [
            (&mut self.ack, &other.ack),
            (&mut self.propagation, &other.propagation),
            (&mut self.presence, &other.presence),
            (&mut self.connect, &other.connect),
            (&mut self.join, &other.join),
        ] {
            mine.add(theirs).expect("histograms share bounds");
        }
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.presence_sent += other.presence_sent;
        self.presence_received += other.presence_received;
        self.errors += other.errors;
        self.disconnects += other.disconnects;
        self.gaps += other.gaps;
        self.untraced += other.untraced;
        self.moves += other.moves;
        if self.series.len() < other.series.len() {
            self.series.resize(other.series.len(), Second::default());
        }
        for (m, t) in self.series.iter_mut().zip(&other.series) {
            m.acked += t.acked;
            m.delivered += t.delivered;
            m.sent += t.sent;
            m.errors += t.errors;
            m.ack_max_us = m.ack_max_us.max(t.ack_max_us);
            m.ack_sum_us += t.ack_sum_us;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_steady_stage_is_measured() {
        let start = Instant::now();
        let clock =
            Clock { start, steady_from: start + Duration::from_secs(2), steady_to: start + Duration::from_secs(4) };
        let mut s = Stats::default();
        // Intended during ramp-up: counted in the series, not in the histogram.
        s.latency(&clock, Latency::Ack, start + Duration::from_secs(1), start + Duration::from_millis(2500));
        s.latency(&clock, Latency::Ack, start + Duration::from_secs(3), start + Duration::from_millis(3010));
        assert_eq!((s.ack.len(), s.acked), (1, 1));
        assert_eq!(s.series[2].acked, 1);
        assert_eq!(s.ack.max(), s.ack.value_at_quantile(1.0));
        assert!((9_990..=10_010).contains(&s.ack.max()));
        let mut total = Stats::default();
        total.merge(&s);
        total.merge(&s);
        assert_eq!((total.ack.len(), total.series[3].acked), (2, 2));
    }

    #[test]
    fn the_wire_form_round_trips_exactly() {
        let start = Instant::now();
        let clock = Clock { start, steady_from: start, steady_to: start + Duration::from_secs(10) };
        let mut s = Stats::default();
        for i in 0..5_000u64 {
            let t = start + Duration::from_micros(i * 1_000);
            s.edit(&clock, t);
            s.latency(&clock, Latency::Ack, t, t + Duration::from_micros(50 + i * i % 90_000));
            s.latency(&clock, Latency::Propagation, t, t + Duration::from_micros(70 + i % 7_000));
        }
        s.error(&clock, start);
        s.gaps = 3;
        let json = serde_json::to_string(&s.to_wire()).unwrap();
        let back = Stats::from_wire(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.histograms(), s.histograms());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(back.ack.value_at_quantile(q), s.ack.value_at_quantile(q));
        }
        assert_eq!((back.sent, back.acked, back.errors, back.gaps), (5_000, 5_000, 1, 3));
        assert_eq!(back.series, s.series);
        let mut bad = s.to_wire();
        bad.counters.pop();
        assert!(Stats::from_wire(&bad).is_err());
    }

    #[test]
    fn coordinated_omission_is_charged_to_the_intended_time() {
        let start = Instant::now();
        let clock = Clock { start, steady_from: start, steady_to: start + Duration::from_secs(10) };
        let mut s = Stats::default();
        // Sent 900 ms late (the generator stalled) and acked 1 ms after the real send: the
        // latency is 901 ms, not 1 ms.
        let intended = start + Duration::from_secs(1);
        s.latency(&clock, Latency::Ack, intended, intended + Duration::from_millis(901));
        assert!(s.ack.min() >= 900_000);
    }
}
