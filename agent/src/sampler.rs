//! The power sampler: one thread per agent reads every source at a fixed rate and keeps a
//! ring buffer of cumulative energy per source, stamped on a monotonic clock.
//!
//! Counters are unwrapped (using the source's wrap point) and power readings are integrated
//! (trapezoid rule), so every source becomes one cumulative-joules series that the
//! attribution can difference at any two instants.
//!
//! A source that fails to answer, or whose counter goes backwards without a known wrap
//! point (a meter that restarted), leaves a *gap*: its samples there are NaN, so any energy
//! computed across them is unknown rather than interpolated, and the gap is recorded with its
//! reason. The other sources' samples are kept.

use crate::power::{PowerKind, PowerScope, PowerSource, Reading};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default sampling rate: the IPW paper's 50 ms.
pub const DEFAULT_HZ: f64 = 20.0;

/// Most gaps kept; past it, a source's new gap extends its last one (a meter that flaps for
/// hours must not grow memory without bound).
const MAX_GAPS: usize = 4096;

/// What is known about a sampled source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Provenance kind (`rapl`, `nvml-counter`, ...).
    pub kind: PowerKind,
    /// What it covers.
    pub scope: PowerScope,
    /// Device or domain.
    pub name: String,
    /// How often its value changes.
    pub update_period: Duration,
    /// Its stated error, as a fraction of the reading.
    pub stated_error: f64,
    /// Power limit, clocks, driver...
    pub details: serde_json::Value,
}

/// One tick: the time and each source's cumulative joules (NaN inside a gap).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler started, on the monotonic clock.
    pub t: f64,
    /// Cumulative joules per source, in source order.
    pub cumulative_j: Vec<f64>,
}

/// Time in which one source's energy is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The source's index.
    pub source: usize,
    /// The last good sample before the gap (or its first tick, when there was none).
    pub from: f64,
    /// The first good sample after it, or the newest tick while it lasts.
    pub to: f64,
    /// Whether the source is answering again.
    pub closed: bool,
    /// Why: the source's error, or the counter's jump.
    pub reason: String,
}

/// Turns one source's readings into cumulative joules.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    wrap_j: Option<f64>,
    last: Option<(f64, Reading)>,
    /// The joules counted so far.
    pub total_j: f64,
}

impl Accumulator {
    /// An accumulator for a counter wrapping at `wrap_j` (or not wrapping).
    pub fn new(wrap_j: Option<f64>) -> Self {
        Self { wrap_j, ..Self::default() }
    }

    /// Adds a reading taken at `t` seconds; returns the cumulative joules so far, or why the
    /// energy since the previous reading is unknown (the next reading counts from this one).
    pub fn add(&mut self, t: f64, reading: Reading) -> Result<f64, String> {
        let previous = self.last.replace((t, reading));
        let Some((t0, prev)) = previous else { return Ok(self.total_j) };
        self.total_j += match (prev, reading) {
            (Reading::EnergyJ(a), Reading::EnergyJ(b)) if b >= a => b - a,
            (Reading::EnergyJ(a), Reading::EnergyJ(b)) => match self.wrap_j {
                Some(w) => w - a + b,
                // Without a wrap point, a counter going backwards was reset (the meter
                // restarted): what it counted in between is unknown.
                None => return Err(format!("the energy counter went back from {a} J to {b} J (reset)")),
            },
            (Reading::PowerW(a), Reading::PowerW(b)) => (a + b) / 2.0 * (t - t0).max(0.0),
            _ => return Err("the source changed from a counter to power readings".into()),
        };
        Ok(self.total_j)
    }

    /// The source is in a gap: the next reading starts afresh, and nothing is counted for
    /// the time between.
    pub fn fail(&mut self) {
        self.last = None;
    }
}

/// How one reading of a source went, for the gap bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome<'a> {
    /// A reading, counted.
    Read,
    /// No reading (the source failed or did not answer).
    Missed(&'a str),
    /// A counter went back: the energy since the last reading is unknown.
    Reset(&'a str),
}

/// Each source's gap bookkeeping on the sampler thread. A source that misses readings for
/// less than its bridge time is bridged: its next reading covers the time (a counter counts
/// through it; power is integrated over the longer interval), as a slower sample would. Past
/// it, or at a reset, the time from its last good sample is a gap.
struct GapTracker {
    /// The last good sample's time, per source.
    last_ok: Vec<Option<f64>>,
    /// The index in `Shared::gaps` of each source's open gap.
    open: Vec<Option<usize>>,
    /// How long each source may miss readings before it is a gap, in seconds.
    bridge: Vec<f64>,
}

impl GapTracker {
    /// Bridges misses up to two of a source's update periods or three sample periods.
    fn new(sources: &[Box<dyn PowerSource>], hz: f64) -> Self {
        let bridge = sources.iter().map(|s| (2.0 * s.update_period().as_secs_f64()).max(3.0 / hz)).collect();
        Self::with_bridge(bridge)
    }

    fn with_bridge(bridge: Vec<f64>) -> Self {
        Self { last_ok: vec![None; bridge.len()], open: vec![None; bridge.len()], bridge }
    }

    /// Records source `i`'s outcome at `t`; returns whether a gap opened (its accumulator
    /// must then start afresh, counting nothing for the gap).
    fn record(&mut self, gaps: &Mutex<Vec<Gap>>, i: usize, t: f64, outcome: Outcome) -> bool {
        let mut gaps = gaps.lock().expect("not poisoned");
        match (outcome, self.open[i]) {
            (Outcome::Read, open) => {
                if let Some(g) = open {
                    gaps[g].to = t;
                    gaps[g].closed = true;
                    self.open[i] = None;
                }
                self.last_ok[i] = Some(t);
                false
            }
            (_, Some(g)) => {
                gaps[g].to = t;
                false
            }
            (Outcome::Missed(_), None) if self.last_ok[i].is_some_and(|ok| t - ok <= self.bridge[i]) => false,
            (Outcome::Missed(reason) | Outcome::Reset(reason), None) => {
                let from = self.last_ok[i].unwrap_or(t);
                // Past the cap, the source's last gap is extended instead.
                let last = gaps.iter().rposition(|g| g.source == i).filter(|_| gaps.len() >= MAX_GAPS);
                if let Some(g) = last {
                    gaps[g].to = t;
                    gaps[g].closed = false;
                    self.open[i] = Some(g);
                } else {
                    gaps.push(Gap { source: i, from, to: t, closed: false, reason: reason.to_owned() });
                    self.open[i] = Some(gaps.len() - 1);
                }
                true
            }
        }
    }
}

struct Shared {
    ring: Mutex<VecDeque<Sample>>,
    gaps: Mutex<Vec<Gap>>,
    stop: AtomicBool,
}

/// A running sampler. Dropping it stops the thread.
pub struct Sampler {
    shared: Arc<Shared>,
    epoch: Instant,
    /// The wall-clock time of `epoch`, taken together with it.
    epoch_wall: std::time::SystemTime,
    hz: f64,
    sources: Vec<SourceInfo>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `sources` at `hz`, keeping the last `capacity` samples.
    pub fn start(mut sources: Vec<Box<dyn PowerSource>>, hz: f64, capacity: usize) -> Self {
        let info: Vec<SourceInfo> = sources
            .iter()
            .map(|s| SourceInfo {
                kind: s.kind(),
                scope: s.scope(),
                name: s.name(),
                update_period: s.update_period(),
                stated_error: s.stated_error(),
                details: s.details(),
            })
            .collect();
        let shared = Arc::new(Shared {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            gaps: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let (epoch, epoch_wall) = (Instant::now(), std::time::SystemTime::now());
        let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
        let thread = (!sources.is_empty()).then(|| {
            let shared = shared.clone();
            let mut acc: Vec<Accumulator> = sources.iter().map(|s| Accumulator::new(s.wrap_j())).collect();
            let mut tracker = GapTracker::new(&sources, hz);
            std::thread::Builder::new()
                .name("ipw-power-sampler".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !shared.stop.load(Ordering::Relaxed) {
                        let t = epoch.elapsed().as_secs_f64();
                        let sample = tick(&mut sources, &mut acc, &mut tracker, &shared.gaps, t);
                        let mut ring = shared.ring.lock().expect("not poisoned");
                        if ring.len() == capacity {
                            ring.pop_front();
                        }
                        ring.push_back(sample);
                        drop(ring);
                        pace(&mut next, period);
                    }
                })
                .expect("spawning the sampler thread")
        });
        Self { shared, epoch, epoch_wall, hz, sources: info, thread }
    }

    /// The sources, in sample order.
    pub fn sources(&self) -> &[SourceInfo] {
        &self.sources
    }

    /// Wall-clock time of t = 0 on the sampler clock.
    pub fn epoch_wall(&self) -> std::time::SystemTime {
        self.epoch_wall
    }

    /// The sampling rate in Hz.
    pub fn hz(&self) -> f64 {
        self.hz
    }

    /// Seconds on the sampler clock for an instant.
    pub fn clock(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// The newest sample's time.
    pub fn newest(&self) -> Option<f64> {
        self.shared.ring.lock().expect("not poisoned").back().map(|s| s.t)
    }

    /// Samples from the last one at or before `from` to the first one at or after `to`.
    pub fn samples(&self, from: f64, to: f64) -> Vec<Sample> {
        let ring = self.shared.ring.lock().expect("not poisoned");
        let first = ring.partition_point(|s| s.t <= from).saturating_sub(1);
        let last = ring.partition_point(|s| s.t < to);
        ring.range(first..(last + 1).min(ring.len())).cloned().collect()
    }

    /// The cumulative series `(t, joules)` of the sources at `indices`, summed, around
    /// `[from, to]`: NaN where one of them is in a gap, and no sample where one of them
    /// missed a reading that its next one bridges (or may yet).
    pub fn series_of(&self, indices: &[usize], from: f64, to: f64) -> Vec<(f64, f64)> {
        let samples = self.samples(from, to);
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return Vec::new() };
        let gaps = self.gaps(first.t, last.t);
        let in_gap = |i: usize, t: f64| gaps.iter().any(|g| g.source == i && g.from <= t && t <= g.to);
        samples
            .iter()
            .filter_map(|s| {
                let mut sum = 0.0;
                for &i in indices {
                    match s.cumulative_j[i] {
                        e if !e.is_nan() => sum += e,
                        _ if in_gap(i, s.t) => return Some((s.t, f64::NAN)),
                        _ => return None,
                    }
                }
                Some((s.t, sum))
            })
            .collect()
    }

    /// The gaps reaching into `[from, to]`, of every source.
    pub fn gaps(&self, from: f64, to: f64) -> Vec<Gap> {
        let gaps = self.shared.gaps.lock().expect("not poisoned");
        gaps.iter().filter(|g| g.to >= from && g.from <= to).cloned().collect()
    }

    /// Waits until a sample at or after `t` exists, so a window ending at `t` is covered.
    pub async fn wait_past(&self, t: f64) {
        if self.thread.is_none() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let newest = self.shared.ring.lock().expect("not poisoned").back().map(|s| s.t);
            if newest.is_some_and(|n| n >= t) || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64(0.5 / self.hz.max(0.1))).await;
        }
    }
}

/// Sleeps until the next tick, `period` after the last one: deadline-based ticks do not drift
/// with the time the work took; a tick that overran starts the next period now.
pub fn pace(next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

/// Reads every source once at `t`: a failed or reset source is NaN in the sample (bridged
/// by its next reading, or inside a recorded gap); the others are kept.
fn tick(
    sources: &mut [Box<dyn PowerSource>],
    acc: &mut [Accumulator],
    tracker: &mut GapTracker,
    gaps: &Mutex<Vec<Gap>>,
    t: f64,
) -> Sample {
    let mut cumulative_j = Vec::with_capacity(sources.len());
    for (i, (s, a)) in sources.iter_mut().zip(acc.iter_mut()).enumerate() {
        let (read, error) = match s.read() {
            Ok(r) => (true, a.add(t, r).err()),
            Err(e) => (false, Some(e.to_string())),
        };
        let outcome = match (&error, read) {
            (None, _) => Outcome::Read,
            (Some(e), true) => Outcome::Reset(e),
            (Some(e), false) => Outcome::Missed(e),
        };
        if tracker.record(gaps, i, t, outcome) {
            tracing::warn!(source = %s.name(), error = error.as_deref().unwrap_or_default(), "a gap in a power source's energy");
            a.fail();
        }
        cumulative_j.push(if outcome == Outcome::Read { a.total_j } else { f64::NAN });
    }
    Sample { t, cumulative_j }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_unwrap_at_their_wrap_point() {
        let mut a = Accumulator::new(Some(100.0));
        assert_eq!(a.add(0.0, Reading::EnergyJ(90.0)), Ok(0.0));
        assert_eq!(a.add(1.0, Reading::EnergyJ(98.0)), Ok(8.0));
        // 98 -> wrap at 100 -> 5: 7 joules.
        assert_eq!(a.add(2.0, Reading::EnergyJ(5.0)), Ok(15.0));
    }

    #[test]
    fn a_reset_counter_is_a_gap_and_counting_resumes_from_the_new_value() {
        let mut a = Accumulator::new(None);
        a.add(0.0, Reading::EnergyJ(50.0)).unwrap();
        assert!(a.add(1.0, Reading::EnergyJ(10.0)).unwrap_err().contains("went back from 50 J to 10 J"));
        assert_eq!(a.add(2.0, Reading::EnergyJ(12.0)), Ok(2.0));
    }

    #[test]
    fn a_failed_reading_counts_nothing_for_the_time_it_covers() {
        let mut a = Accumulator::new(None);
        a.add(0.0, Reading::PowerW(100.0)).unwrap();
        a.fail();
        assert_eq!(a.add(5.0, Reading::PowerW(100.0)), Ok(0.0));
        assert_eq!(a.add(6.0, Reading::PowerW(100.0)), Ok(100.0));
    }

    #[test]
    fn power_is_integrated_with_the_trapezoid_rule() {
        let mut a = Accumulator::new(None);
        a.add(0.0, Reading::PowerW(100.0)).unwrap();
        assert!((a.add(0.5, Reading::PowerW(200.0)).unwrap() - 75.0).abs() < 1e-12);
    }

    #[test]
    fn a_short_miss_is_bridged_and_a_long_one_is_a_gap_from_the_last_good_sample() {
        let gaps = Mutex::new(Vec::new());
        let mut g = GapTracker::with_bridge(vec![0.5, 0.5]);
        assert!(!g.record(&gaps, 0, 1.0, Outcome::Read));
        assert!(!g.record(&gaps, 1, 1.0, Outcome::Read));
        // 0.4 s without a reading: bridged, no gap.
        assert!(!g.record(&gaps, 0, 1.4, Outcome::Missed("timeout")));
        assert!(!g.record(&gaps, 0, 1.5, Outcome::Read));
        assert!(gaps.lock().unwrap().is_empty());
        // 0.6 s: a gap from the last good sample.
        assert!(!g.record(&gaps, 0, 1.9, Outcome::Missed("connection refused")));
        assert!(g.record(&gaps, 0, 2.1, Outcome::Missed("connection refused")));
        assert!(!g.record(&gaps, 0, 3.0, Outcome::Missed("connection refused")));
        assert_eq!(
            gaps.lock().unwrap().clone(),
            [Gap { source: 0, from: 1.5, to: 3.0, closed: false, reason: "connection refused".into() }]
        );
        assert!(!g.record(&gaps, 0, 4.0, Outcome::Read));
        let closed = gaps.lock().unwrap()[0].clone();
        assert_eq!((closed.to, closed.closed), (4.0, true));
        // A reset is a gap at once.
        assert!(g.record(&gaps, 1, 4.0, Outcome::Reset("went back")));
        assert_eq!(gaps.lock().unwrap()[1].from, 1.0);
    }

    /// A source for the sampler's own tests: a counter at 100 W that fails while `failing`.
    struct Flaky {
        start: std::time::Instant,
        failing: Arc<AtomicBool>,
    }

    impl PowerSource for Flaky {
        fn kind(&self) -> crate::power::PowerKind {
            crate::power::PowerKind::JsonMeter
        }
        fn scope(&self) -> PowerScope {
            PowerScope::Wall
        }
        fn name(&self) -> String {
            "flaky".into()
        }
        fn read(&mut self) -> std::io::Result<Reading> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("no answer"));
            }
            Ok(Reading::EnergyJ(100.0 * self.start.elapsed().as_secs_f64()))
        }
        fn update_period(&self) -> Duration {
            Duration::from_millis(100)
        }
    }

    #[test]
    fn a_bridged_miss_keeps_the_counters_energy_and_a_gap_is_unknown_in_the_series() {
        let failing = Arc::new(AtomicBool::new(false));
        let source = Flaky { start: Instant::now(), failing: failing.clone() };
        let sampler = Sampler::start(vec![Box::new(source)], 100.0, 10_000);
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        pause(200);
        // 60 ms without readings: bridged (the bridge is 200 ms).
        failing.store(true, Ordering::Relaxed);
        pause(60);
        failing.store(false, Ordering::Relaxed);
        pause(200);
        let series = sampler.series_of(&[0], 0.0, f64::INFINITY);
        assert!(series.iter().all(|(_, e)| e.is_finite()), "bridged: no unknown sample");
        let (a, b) = (series[0], series[series.len() - 1]);
        assert!(((b.1 - a.1) / (b.0 - a.0) - 100.0).abs() < 5.0, "the counter counted through the miss");
        assert!(sampler.gaps(0.0, f64::INFINITY).is_empty());
        // 500 ms: a gap, unknown in the series.
        failing.store(true, Ordering::Relaxed);
        pause(500);
        failing.store(false, Ordering::Relaxed);
        pause(100);
        let gaps = sampler.gaps(0.0, f64::INFINITY);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].closed && gaps[0].to - gaps[0].from >= 0.45, "{gaps:?}");
        let series = sampler.series_of(&[0], 0.0, f64::INFINITY);
        assert!(series.iter().any(|(_, e)| e.is_nan()));
        let mid = (gaps[0].from + gaps[0].to) / 2.0;
        assert!(crate::attribution::energy_between(&series, mid - 0.1, mid + 0.1).is_none(), "unknown inside the gap");
    }
}
