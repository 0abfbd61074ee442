//! The power sampler: one thread per agent reads every source at a fixed rate and keeps a
//! ring buffer of cumulative energy per source, stamped on a monotonic clock.
//!
//! Counters are unwrapped (using the source's wrap point) and power readings are integrated
//! (trapezoid rule), so every source becomes one cumulative-joules series that the
//! attribution can difference at any two instants.

use crate::power::{PowerSource, Reading};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default sampling rate: the IPW paper's 50 ms.
pub const DEFAULT_HZ: f64 = 20.0;

/// What is known about a sampled source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Provenance kind (`rapl`, `nvml-counter`, ...).
    pub kind: crate::power::PowerKind,
    /// gpu, cpu-package, dram or soc.
    pub scope: &'static str,
    /// Device or domain.
    pub name: String,
    /// How often its value changes.
    pub update_period: Duration,
    /// Power limit, clocks, driver...
    pub details: serde_json::Value,
}

/// One tick: the time and each source's cumulative joules.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler started, on the monotonic clock.
    pub t: f64,
    /// Cumulative joules per source, in source order.
    pub cumulative_j: Vec<f64>,
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

    /// Adds a reading taken at `t` seconds; returns the cumulative joules so far.
    pub fn add(&mut self, t: f64, reading: Reading) -> f64 {
        if let Some((t0, prev)) = self.last {
            self.total_j += match (prev, reading) {
                (Reading::EnergyJ(a), Reading::EnergyJ(b)) if b >= a => b - a,
                // The counter went backwards: it wrapped. Without a known wrap point the
                // interval is unknown, and nothing is made up for it.
                (Reading::EnergyJ(a), Reading::EnergyJ(b)) => self.wrap_j.map(|w| w - a + b).unwrap_or(0.0),
                (Reading::PowerW(a), Reading::PowerW(b)) => (a + b) / 2.0 * (t - t0).max(0.0),
                _ => 0.0,
            };
        }
        self.last = Some((t, reading));
        self.total_j
    }
}

struct Shared {
    ring: Mutex<VecDeque<Sample>>,
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
                details: s.details(),
            })
            .collect();
        let shared =
            Arc::new(Shared { ring: Mutex::new(VecDeque::with_capacity(capacity)), stop: AtomicBool::new(false) });
        let (epoch, epoch_wall) = (Instant::now(), std::time::SystemTime::now());
        let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
        let thread = (!sources.is_empty()).then(|| {
            let shared = shared.clone();
            let mut acc: Vec<Accumulator> = sources.iter().map(|s| Accumulator::new(s.wrap_j())).collect();
            std::thread::Builder::new()
                .name("ipw-power-sampler".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    let mut failures = 0u64;
                    while !shared.stop.load(Ordering::Relaxed) {
                        let t = epoch.elapsed().as_secs_f64();
                        let mut cumulative_j = Vec::with_capacity(sources.len());
                        let mut ok = true;
                        for (s, a) in sources.iter_mut().zip(acc.iter_mut()) {
                            match s.read() {
                                Ok(r) => cumulative_j.push(a.add(t, r)),
                                Err(e) => {
                                    ok = false;
                                    failures += 1;
                                    if failures.is_power_of_two() {
                                        tracing::warn!(source = %s.name(), error = %e, failures, "power reading failed; sample skipped");
                                    }
                                }
                            }
                        }
                        if ok {
                            let mut ring = shared.ring.lock().expect("not poisoned");
                            if ring.len() == capacity {
                                ring.pop_front();
                            }
                            ring.push_back(Sample { t, cumulative_j });
                        }
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

    /// The summed cumulative series `(t, joules of all sources)` around `[from, to]`.
    pub fn total_series(&self, from: f64, to: f64) -> Vec<(f64, f64)> {
        self.samples(from, to).into_iter().map(|s| (s.t, s.cumulative_j.iter().sum())).collect()
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
        assert_eq!(a.add(0.0, Reading::EnergyJ(90.0)), 0.0);
        assert_eq!(a.add(1.0, Reading::EnergyJ(98.0)), 8.0);
        // 98 -> wrap at 100 -> 5: 7 joules.
        assert_eq!(a.add(2.0, Reading::EnergyJ(5.0)), 15.0);
    }

    #[test]
    fn a_backwards_counter_without_a_wrap_point_adds_nothing() {
        let mut a = Accumulator::new(None);
        a.add(0.0, Reading::EnergyJ(50.0));
        assert_eq!(a.add(1.0, Reading::EnergyJ(10.0)), 0.0);
        assert_eq!(a.add(2.0, Reading::EnergyJ(12.0)), 2.0);
    }

    #[test]
    fn power_is_integrated_with_the_trapezoid_rule() {
        let mut a = Accumulator::new(None);
        a.add(0.0, Reading::PowerW(100.0));
        assert!((a.add(0.5, Reading::PowerW(200.0)) - 75.0).abs() < 1e-12);
    }
}
