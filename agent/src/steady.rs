//! The steady-state window of a session, as ML.ENERGY defines it: from when the load first
//! reaches the target to when the queue of work runs out. Pauses (idle re-measurements) are
//! cut out of it and reported.
//!
//! Closed loop, the load is the requests in flight and the target the run's concurrency.
//! Open loop, the load is the arrival rate and the window runs from the first arrival to the
//! last.

/// Tracks one session's load on the sampler clock.
#[derive(Debug, Clone)]
pub struct LoadTracker {
    target: f64,
    open_loop: bool,
    in_flight: u32,
    since: f64,
    reached: Option<f64>,
    ran_out: Option<f64>,
    pauses: Vec<(f64, Option<f64>)>,
    /// ∫ in-flight dt inside the window (closed loop).
    load_integral: f64,
    arrivals_in_window: u64,
}

/// The window as far as it is known at some instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// When the target was first reached.
    pub from: f64,
    /// When the work ran out, or the instant asked about.
    pub to: f64,
    /// Time-weighted load over the window less its pauses.
    pub load_mean: f64,
    /// Pauses inside the window, s.
    pub paused_s: f64,
}

impl LoadTracker {
    /// A tracker for `target` requests in flight, or, `open_loop`, `target` arrivals per second.
    pub fn new(target: f64, open_loop: bool) -> Self {
        Self {
            target,
            open_loop,
            in_flight: 0,
            since: 0.0,
            reached: None,
            ran_out: None,
            pauses: Vec::new(),
            load_integral: 0.0,
            arrivals_in_window: 0,
        }
    }

    fn in_window(&self, t: f64) -> bool {
        self.reached.is_some_and(|r| t >= r) && self.ran_out.is_none_or(|o| t <= o)
    }

    fn paused(&self) -> bool {
        self.pauses.last().is_some_and(|p| p.1.is_none())
    }

    /// Moves the load integral up to `t`.
    fn integrate(&mut self, t: f64) {
        if self.reached.is_some() && self.ran_out.is_none() && !self.paused() {
            self.load_integral += f64::from(self.in_flight) * (t - self.since).max(0.0);
        }
        self.since = t;
    }

    /// A request started at `t`.
    pub fn started(&mut self, t: f64) {
        self.integrate(t);
        self.in_flight += 1;
        if self.open_loop {
            self.reached.get_or_insert(t);
            if self.in_window(t) && !self.paused() {
                self.arrivals_in_window += 1;
            }
        } else if self.reached.is_none() && f64::from(self.in_flight) >= self.target {
            self.reached = Some(t);
        }
    }

    /// A request ended at `t`.
    pub fn ended(&mut self, t: f64) {
        self.integrate(t);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The run has no more work for this session: nothing more will start.
    pub fn ran_out(&mut self, t: f64) {
        self.integrate(t);
        if self.ran_out.is_none() {
            // Never reached (less work than the target): an empty window at the end.
            self.reached.get_or_insert(t);
            self.ran_out = Some(t);
        }
    }

    /// New requests stop at `t` (an idle re-measurement begins).
    pub fn pause(&mut self, t: f64) {
        self.integrate(t);
        if !self.paused() && self.in_window(t) {
            self.pauses.push((t, None));
        }
    }

    /// Requests resume at `t`.
    pub fn resume(&mut self, t: f64) {
        self.integrate(t);
        if let Some(p) = self.pauses.last_mut().filter(|p| p.1.is_none()) {
            p.1 = Some(t);
        }
    }

    /// Whether a query that ran from `start` to `end` lies wholly inside the window, clear of
    /// every pause. Asked when it ends; a window still open extends to `end`.
    pub fn contains(&self, start: f64, end: f64) -> bool {
        self.in_window(start)
            && self.ran_out.is_none_or(|o| end <= o)
            && self.pauses.iter().all(|&(a, b)| end <= a || b.is_some_and(|b| start >= b))
    }

    /// The window up to `now` (or to where the work ran out); `None` before the target is
    /// first reached.
    pub fn window(&self, now: f64) -> Option<Window> {
        let from = self.reached?;
        let to = self.ran_out.unwrap_or(now).max(from);
        let paused_s: f64 = self.pauses.iter().map(|&(a, b)| b.unwrap_or(to).min(to) - a.min(to)).sum();
        let length = (to - from - paused_s).max(0.0);
        let load_mean = if length <= 0.0 {
            0.0
        } else if self.open_loop {
            self.arrivals_in_window as f64 / length
        } else {
            // The integral runs to the last event; the load since then is the current one.
            let tail = if self.ran_out.is_none() && !self.paused() { (to - self.since).max(0.0) } else { 0.0 };
            (self.load_integral + f64::from(self.in_flight) * tail) / length
        };
        Some(Window { from, to, load_mean, paused_s })
    }

    /// The pauses so far, as `[from, to]` (an open one ends at `now`).
    pub fn pauses(&self, now: f64) -> Vec<(f64, f64)> {
        self.pauses.iter().map(|&(a, b)| (a, b.unwrap_or(now))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrency 2: the ramp, a steady stretch with one dip, the drain. The answer is known.
    #[test]
    fn the_window_runs_from_the_target_reached_to_the_work_running_out() {
        let mut l = LoadTracker::new(2.0, false);
        l.started(0.0);
        assert!(l.window(0.5).is_none(), "not reached yet");
        l.started(1.0); // reached at 1
        l.ended(5.0);
        l.started(5.5); // one in flight for 0.5 s
        l.ended(8.0);
        l.started(8.0);
        l.ran_out(10.0); // nothing more starts
        l.ended(12.0);
        l.ended(13.0);
        let w = l.window(20.0).unwrap();
        assert_eq!((w.from, w.to, w.paused_s), (1.0, 10.0, 0.0));
        // 9 s at 2 except 0.5 s at 1: (17.5) / 9.
        assert!((w.load_mean - 17.5 / 9.0).abs() < 1e-12, "{w:?}");
        assert!(l.contains(1.0, 9.0));
        assert!(!l.contains(0.0, 5.0), "started before the target was reached");
        assert!(!l.contains(8.0, 12.0), "ended in the drain");
    }

    #[test]
    fn a_pause_is_cut_out_of_the_window_and_its_queries() {
        let mut l = LoadTracker::new(1.0, false);
        l.started(0.0);
        l.pause(10.0); // drain: the query in flight ends at 11
        l.ended(11.0);
        l.resume(20.0);
        l.started(20.0);
        l.ended(30.0);
        l.ran_out(30.0);
        let w = l.window(30.0).unwrap();
        assert_eq!((w.from, w.to, w.paused_s), (0.0, 30.0, 10.0));
        assert!((w.load_mean - 1.0).abs() < 1e-12, "{w:?}");
        assert!(!l.contains(0.0, 11.0), "overlaps the pause");
        assert!(l.contains(20.0, 30.0));
    }

    #[test]
    fn open_loop_load_is_the_arrival_rate() {
        let mut l = LoadTracker::new(5.0, true);
        for i in 0..=50 {
            let t = f64::from(i) * 0.2;
            l.started(t);
            l.ended(t + 0.1);
        }
        l.ran_out(10.0);
        let w = l.window(11.0).unwrap();
        assert_eq!((w.from, w.to), (0.0, 10.0));
        assert!((w.load_mean - 5.1).abs() < 1e-9, "51 arrivals over 10 s: {w:?}");
    }

    #[test]
    fn less_work_than_the_target_gives_an_empty_window() {
        let mut l = LoadTracker::new(8.0, false);
        l.started(0.0);
        l.ran_out(0.1);
        l.ended(3.0);
        let w = l.window(5.0).unwrap();
        assert_eq!(w.to - w.from, 0.0);
        assert!(!l.contains(0.0, 3.0));
    }
}
