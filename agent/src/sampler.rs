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
    total_j: f64,
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

    /// A reading failed: the next one starts afresh, and nothing is counted for the time
    /// between.
    pub fn fail(&mut self) {
        self.last = None;
    }
}

/// Each source's gap bookkeeping on the sampler thread.
struct GapTracker {
    /// The last good sample's time, per source.
    last_ok: Vec<Option<f64>>,
    /// The index in `Shared::gaps` of each source's open gap.
    open: Vec<Option<usize>>,
}

impl GapTracker {
    fn new(n: usize) -> Self {
        Self { last_ok: vec![None; n], open: vec![None; n] }
    }

    /// Records source `i`'s outcome at `t`: a good reading closes its gap, a failure opens or
    /// extends one.
    fn record(&mut self, gaps: &Mutex<Vec<Gap>>, i: usize, t: f64, outcome: Result<(), &str>) {
        let mut gaps = gaps.lock().expect("not poisoned");
        match (outcome, self.open[i]) {
            (Ok(()), Some(g)) => {
                gaps[g].to = t;
                gaps[g].closed = true;
                self.open[i] = None;
            }
            (Ok(()), None) => {}
            (Err(_), Some(g)) => gaps[g].to = t,
            (Err(reason), None) => {
                let from = self.last_ok[i].unwrap_or(t);
                // Past the cap, the source's last gap is extended instead.
                let last = gaps.iter().rposition(|g| g.source == i).filter(|_| gaps.len() >= MAX_GAPS);
                if let Some(g) = last {
                    gaps[g].to = t;
                    gaps[g].closed = false;
                    self.open[i] = Some(g);
                    return;
                }
                gaps.push(Gap { source: i, from, to: t, closed: false, reason: reason.to_owned() });
                self.open[i] = Some(gaps.len() - 1);
            }
        }
        if outcome.is_ok() {
            self.last_ok[i] = Some(t);
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
            let mut tracker = GapTracker::new(sources.len());
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
                        // Deadline-based ticks do not drift with read time.
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
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
    /// `[from, to]`; NaN where one of them is in a gap.
    pub fn series_of(&self, indices: &[usize], from: f64, to: f64) -> Vec<(f64, f64)> {
        self.samples(from, to).into_iter().map(|s| (s.t, indices.iter().map(|&i| s.cumulative_j[i]).sum())).collect()
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

/// Reads every source once at `t`: a failed or reset source is NaN in the sample, and its
/// gap is recorded; the others are kept.
fn tick(
    sources: &mut [Box<dyn PowerSource>],
    acc: &mut [Accumulator],
    tracker: &mut GapTracker,
    gaps: &Mutex<Vec<Gap>>,
    t: f64,
) -> Sample {
    let mut cumulative_j = Vec::with_capacity(sources.len());
    for (i, (s, a)) in sources.iter_mut().zip(acc.iter_mut()).enumerate() {
        let outcome = match s.read() {
            Ok(r) => a.add(t, r),
            Err(e) => {
                a.fail();
                Err(e.to_string())
            }
        };
        match outcome {
            Ok(j) => {
                tracker.record(gaps, i, t, Ok(()));
                cumulative_j.push(j);
            }
            Err(e) => {
                if tracker.open[i].is_none() {
                    tracing::warn!(source = %s.name(), error = %e, "power reading failed: a gap in its energy");
                }
                tracker.record(gaps, i, t, Err(&e));
                cumulative_j.push(f64::NAN);
            }
        }
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
    fn a_gap_opens_at_the_last_good_sample_and_closes_at_the_next() {
        let gaps = Mutex::new(Vec::new());
        let mut g = GapTracker::new(2);
        g.record(&gaps, 0, 1.0, Ok(()));
        g.record(&gaps, 1, 1.0, Ok(()));
        g.record(&gaps, 0, 2.0, Err("connection refused"));
        g.record(&gaps, 0, 3.0, Err("connection refused"));
        g.record(&gaps, 1, 3.0, Ok(()));
        assert_eq!(
            gaps.lock().unwrap().clone(),
            [Gap { source: 0, from: 1.0, to: 3.0, closed: false, reason: "connection refused".into() }]
        );
        g.record(&gaps, 0, 4.0, Ok(()));
        assert_eq!(gaps.lock().unwrap()[0].to, 4.0);
        assert!(gaps.lock().unwrap()[0].closed);
    }
}
