//! How much concurrency a client really held: statistics of the number of requests in
//! flight, computed exactly from each request's start and end (a step function), over a
//! window trimmed at both ends so ramp-up and drain do not count.

use serde::Serialize;

/// In-flight statistics over the trimmed window. Shares and mean are `None` when the
/// window is empty (no requests, or a run shorter than twice the trim).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadStats {
    /// Requests recorded (all of them, not only those inside the window).
    pub requests: usize,
    /// Length of the window: first start + trim to last end - trim, in seconds.
    pub span_s: f64,
    /// Share of the window with exactly `target` requests in flight.
    pub share_at_target: Option<f64>,
    /// Share of the window with `target` or more in flight.
    pub share_at_or_above_target: Option<f64>,
    /// Time-weighted mean of the number in flight.
    pub mean_in_flight: Option<f64>,
    /// Most requests in flight at once inside the window.
    pub max_in_flight: usize,
}

/// Statistics of `records` (start, end seconds on one clock) for a `target` concurrency.
pub fn stats(records: &[(f64, f64)], target: usize, trim_s: f64) -> LoadStats {
    let first = records.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let last = records.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
    let (from, to) = (first + trim_s, last - trim_s);
    let mut events: Vec<(f64, i32)> = records.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // Ends before starts at the same instant: a request replaced the moment another ends
    // is not an overlap.
    events.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut level, mut max) = (0i32, 0i32);
    let (mut at, mut at_or_above, mut area) = (0.0, 0.0, 0.0);
    for (i, &(t, step)) in events.iter().enumerate() {
        level += step;
        // `level` holds from this event to the next one; only the part inside the window counts.
        let Some(&(next, _)) = events.get(i + 1) else { break };
        let dt = next.min(to) - t.max(from);
        if dt <= 0.0 {
            continue;
        }
        let n = level.max(0) as usize;
        max = max.max(level);
        area += n as f64 * dt;
        if n == target {
            at += dt;
        }
        if n >= target {
            at_or_above += dt;
        }
    }
    let span_s = (to - from).max(0.0);
    let share = |x: f64| (span_s > 0.0).then(|| x / span_s);
    LoadStats {
        requests: records.len(),
        span_s,
        share_at_target: share(at),
        share_at_or_above_target: share(at_or_above),
        mean_in_flight: share(area),
        max_in_flight: max.max(0) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_step_function() {
        // 0-4: one request; 1-3: a second; 4-6: a third, back to back with the first.
        let s = stats(&[(0.0, 4.0), (1.0, 3.0), (4.0, 6.0)], 1, 0.0);
        assert_eq!(s.span_s, 6.0);
        assert_eq!(s.share_at_target, Some(4.0 / 6.0));
        assert_eq!(s.share_at_or_above_target, Some(1.0));
        assert_eq!(s.mean_in_flight, Some(8.0 / 6.0));
        assert_eq!(s.max_in_flight, 2);
    }

    #[test]
    fn the_trim_cuts_both_ends() {
        let s = stats(&[(0.0, 4.0), (1.0, 3.0), (4.0, 6.0)], 2, 1.0);
        assert_eq!(s.span_s, 4.0);
        assert_eq!(s.share_at_target, Some(0.5));
        assert_eq!(s.mean_in_flight, Some(6.0 / 4.0));
    }

    #[test]
    fn an_empty_window_has_no_shares() {
        let s = stats(&[], 1, 1.0);
        assert_eq!((s.requests, s.span_s, s.share_at_target, s.max_in_flight), (0, 0.0, None, 0));
        assert_eq!(stats(&[(0.0, 1.0)], 1, 1.0).mean_in_flight, None);
    }
}
