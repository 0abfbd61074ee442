//! Per-query energy from a cumulative energy series.
//!
//! The series is `(t, E)` pairs: seconds on the sampler's monotonic clock and the cumulative
//! joules measured so far. Energy over any instant range is the difference of `E`, linearly
//! interpolated between samples, so a query's window edges need not fall on samples, and a
//! query shorter than one sample interval still gets its share.
//!
//! Under concurrency, the timeline is cut at every sample and every window edge. Each piece's
//! energy is split among the queries active over it: equally (time share: every active query
//! spent the same time in the piece) or in proportion to each query's token rate (token
//! share). Pieces where no query is active are idle gaps and are charged to nobody, so the
//! energies of a shard's queries add up to the energy measured while any of them ran.

/// How an interval's energy is split among the queries active in it: declared with the
/// other closed sets in `ipw_proto::kinds`, so the flag, the wire and the database agree.
pub use ipw_proto::kinds::Attribution as Rule;

/// One query's time on the sampler clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds (>= start).
    pub end: f64,
    /// Output tokens, used by token share.
    pub tokens: f64,
}

/// A query's attributed energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attributed {
    /// Its share of the measured energy, in joules.
    pub raw_j: f64,
    /// Raw minus its share of idle power over its time, when an idle baseline is known.
    pub dynamic_j: Option<f64>,
}

/// Cumulative energy at `t`, interpolated between the samples around it; `None` outside the
/// series or in a gap (a NaN sample: never interpolated across).
pub fn energy_at(series: &[(f64, f64)], t: f64) -> Option<f64> {
    let i = series.partition_point(|(ts, _)| *ts < t);
    let e = match (i.checked_sub(1).map(|j| series[j]), series.get(i)) {
        (_, Some(&(t1, e1))) if t1 == t => e1,
        (Some((t0, e0)), Some(&(t1, e1))) => e0 + (e1 - e0) * (t - t0) / (t1 - t0),
        _ => return None,
    };
    e.is_finite().then_some(e)
}

/// Energy between `a` and `b`.
pub fn energy_between(series: &[(f64, f64)], a: f64, b: f64) -> Option<f64> {
    Some(energy_at(series, b)? - energy_at(series, a)?)
}

/// Splits the series' energy among `windows`. Fails, naming the window, when the series does
/// not cover a window: no energy is made up for time that was not measured.
pub fn attribute(
    series: &[(f64, f64)],
    windows: &[Window],
    rule: Rule,
    idle_power_w: Option<f64>,
) -> Result<Vec<Attributed>, String> {
    let (Some(first), Some(last)) = (series.first(), series.last()) else {
        return Err("no power samples".into());
    };
    for (i, w) in windows.iter().enumerate() {
        if w.start.is_nan() || w.end.is_nan() || w.start > w.end {
            return Err(format!("window {i} ends before it starts"));
        }
        if w.start < first.0 || w.end > last.0 {
            return Err(format!(
                "window {i} ({:.3}s..{:.3}s) is not covered by the power samples ({:.3}s..{:.3}s)",
                w.start, w.end, first.0, last.0
            ));
        }
    }
    let weight = |w: &Window| match rule {
        Rule::TimeShare => 1.0,
        Rule::TokenShare => {
            let d = w.end - w.start;
            if d > 0.0 { w.tokens.max(0.0) / d } else { 0.0 }
        }
    };
    let weights: Vec<f64> = windows.iter().map(weight).collect();

    // Every sample and window edge cuts the timeline into pieces.
    let lo = windows.iter().map(|w| w.start).fold(f64::INFINITY, f64::min);
    let hi = windows.iter().map(|w| w.end).fold(f64::NEG_INFINITY, f64::max);
    let mut cuts: Vec<f64> = windows.iter().flat_map(|w| [w.start, w.end]).collect();
    cuts.extend(series.iter().map(|(t, _)| *t).filter(|t| *t > lo && *t < hi));
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();

    let mut out = vec![Attributed { raw_j: 0.0, dynamic_j: idle_power_w.map(|_| 0.0) }; windows.len()];
    let mut active: Vec<usize> = Vec::new();
    for pair in cuts.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        active.clear();
        active.extend((0..windows.len()).filter(|&i| windows[i].start <= a && windows[i].end >= b));
        if active.is_empty() {
            continue; // an idle gap: nobody's query
        }
        let energy = energy_between(series, a, b)
            // Inside a gap of a source the energy is unknown: NaN makes each query active
            // here unknown too, and it is recorded as NULL with the reason.
            .unwrap_or(f64::NAN);
        let total_weight: f64 = active.iter().map(|&i| weights[i]).sum();
        for &i in &active {
            // Queries with no weight (no tokens yet) share equally when all have none.
            let share = if total_weight > 0.0 { weights[i] / total_weight } else { 1.0 / active.len() as f64 };
            out[i].raw_j += energy * share;
            if let (Some(p), Some(d)) = (idle_power_w, out[i].dynamic_j.as_mut()) {
                *d += (energy - p * (b - a)) * share;
            }
        }
    }
    Ok(out)
}

/// Energy measured while any window was open: the union of the windows.
pub fn active_energy(series: &[(f64, f64)], windows: &[Window]) -> Option<f64> {
    let mut spans: Vec<(f64, f64)> = windows.iter().map(|w| (w.start, w.end)).collect();
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (s, e) in spans {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += energy_between(series, cs, ce)?;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += energy_between(series, cs, ce)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A constant `watts` load sampled every `dt` seconds from 0 to `until`.
    fn constant(watts: f64, dt: f64, until: f64) -> Vec<(f64, f64)> {
        (0..=(until / dt).round() as usize).map(|k| (k as f64 * dt, watts * k as f64 * dt)).collect()
    }

    fn w(start: f64, end: f64) -> Window {
        Window { start, end, tokens: 1.0 }
    }

    #[test]
    fn window_edges_are_interpolated() {
        let s = constant(10.0, 1.0, 2.0);
        let got = attribute(&s, &[w(0.25, 0.75)], Rule::TimeShare, None).unwrap();
        assert!((got[0].raw_j - 5.0).abs() < 1e-12);
    }

    #[test]
    fn a_query_shorter_than_one_sample_interval_gets_its_share() {
        let s = constant(10.0, 0.05, 1.0);
        let got = attribute(&s, &[w(0.41, 0.43)], Rule::TimeShare, None).unwrap();
        assert!((got[0].raw_j - 0.2).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn overlapping_queries_split_the_shared_time() {
        let s = constant(10.0, 0.05, 2.0);
        let got = attribute(&s, &[w(0.0, 1.0), w(0.5, 1.5)], Rule::TimeShare, None).unwrap();
        assert!((got[0].raw_j - 7.5).abs() < 1e-9 && (got[1].raw_j - 7.5).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn idle_gaps_are_charged_to_nobody_and_dynamic_energy_subtracts_idle_power() {
        let s = constant(10.0, 0.1, 3.0);
        let got = attribute(&s, &[w(0.0, 1.0), w(2.0, 3.0)], Rule::TimeShare, Some(4.0)).unwrap();
        for a in &got {
            assert!((a.raw_j - 10.0).abs() < 1e-9);
            assert!((a.dynamic_j.unwrap() - 6.0).abs() < 1e-9);
        }
    }

    #[test]
    fn token_share_follows_token_rate() {
        let s = constant(12.0, 0.1, 1.0);
        let windows = [Window { start: 0.0, end: 1.0, tokens: 30.0 }, Window { start: 0.0, end: 1.0, tokens: 10.0 }];
        let got = attribute(&s, &windows, Rule::TokenShare, None).unwrap();
        assert!((got[0].raw_j - 9.0).abs() < 1e-9 && (got[1].raw_j - 3.0).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn windows_outside_the_samples_are_refused() {
        let s = constant(10.0, 0.1, 1.0);
        let e = attribute(&s, &[w(0.5, 1.2)], Rule::TimeShare, None).unwrap_err();
        assert!(e.contains("not covered"), "{e}");
        assert!(attribute(&[], &[w(0.0, 1.0)], Rule::TimeShare, None).is_err());
    }

    fn series_strategy() -> impl Strategy<Value = Vec<(f64, f64)>> {
        // Irregular sample times and a varying, non-negative power.
        prop::collection::vec((0.001f64..0.2, 0.0f64..500.0), 2..200).prop_map(|steps| {
            let (mut t, mut e) = (0.0, 0.0);
            let mut out = vec![(0.0, 0.0)];
            for (dt, p) in steps {
                t += dt;
                e += p * dt;
                out.push((t, e));
            }
            out
        })
    }

    proptest! {
        #[test]
        fn energy_is_conserved_and_never_negative(
            series in series_strategy(),
            raw in prop::collection::vec((0.0f64..1.0, 0.0f64..1.0, 0.0f64..500.0), 1..40),
            token_share in any::<bool>(),
        ) {
            let span = series.last().unwrap().0;
            let windows: Vec<Window> = raw.iter().map(|&(a, b, tokens)| {
                let (s, e) = if a <= b { (a, b) } else { (b, a) };
                Window { start: s * span, end: e * span, tokens }
            }).collect();
            let rule = if token_share { Rule::TokenShare } else { Rule::TimeShare };
            let got = attribute(&series, &windows, rule, None).unwrap();
            let sum: f64 = got.iter().map(|a| a.raw_j).sum();
            let active = active_energy(&series, &windows).unwrap();
            prop_assert!(got.iter().all(|a| a.raw_j >= -1e-9));
            // Within 0.5% as the design asks; in practice equal to rounding.
            prop_assert!((sum - active).abs() <= 0.005 * active.max(1e-9) + 1e-9, "sum {sum} vs active {active}");
        }
    }

    /// A constant `watts` load sampled at irregular times: the exact answer for any window is
    /// `watts * duration`, whatever the sample times.
    fn irregular_constant() -> impl Strategy<Value = (f64, Vec<(f64, f64)>)> {
        (1.0f64..700.0, prop::collection::vec(0.001f64..0.3, 2..100)).prop_map(|(watts, gaps)| {
            let mut t = 0.0;
            let mut out = vec![(0.0, 0.0)];
            for g in gaps {
                t += g;
                out.push((t, watts * t));
            }
            (watts, out)
        })
    }

    proptest! {
        #[test]
        fn edges_interpolate_exactly_under_constant_power((watts, series) in irregular_constant(), a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let span = series.last().unwrap().0;
            let (s, e) = if a <= b { (a * span, b * span) } else { (b * span, a * span) };
            let got = attribute(&series, &[Window { start: s, end: e, tokens: 1.0 }], Rule::TimeShare, None).unwrap();
            prop_assert!((got[0].raw_j - watts * (e - s)).abs() <= 1e-6 * watts.max(1.0));
        }

        #[test]
        fn a_query_inside_one_sample_interval_gets_power_times_duration(
            (watts, series) in irregular_constant(), pick in 0usize..1000, a in 0.0f64..1.0, b in 0.0f64..1.0,
        ) {
            let k = pick % (series.len() - 1);
            let (t0, t1) = (series[k].0, series[k + 1].0);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (s, e) = (t0 + lo * (t1 - t0), t0 + hi * (t1 - t0));
            let got = attribute(&series, &[Window { start: s, end: e, tokens: 1.0 }], Rule::TimeShare, None).unwrap();
            prop_assert!((got[0].raw_j - watts * (e - s)).abs() <= 1e-6 * watts.max(1.0));
        }

        #[test]
        fn overlapping_queries_share_each_instant_equally(
            (watts, series) in irregular_constant(),
            raw in prop::collection::vec((0.0f64..1.0, 0.0f64..1.0), 2..12),
        ) {
            let span = series.last().unwrap().0;
            let windows: Vec<Window> = raw.iter().map(|&(a, b)| {
                let (s, e) = if a <= b { (a, b) } else { (b, a) };
                Window { start: s * span, end: e * span, tokens: 1.0 }
            }).collect();
            let got = attribute(&series, &windows, Rule::TimeShare, None).unwrap();
            // Each query's energy is watts * integral over its window of 1 / (queries active).
            for (i, w) in windows.iter().enumerate() {
                let mut cuts: Vec<f64> = windows.iter().flat_map(|x| [x.start, x.end]).filter(|t| *t >= w.start && *t <= w.end).collect();
                cuts.sort_by(f64::total_cmp);
                let expected: f64 = cuts.windows(2).map(|p| {
                    let mid = (p[0] + p[1]) / 2.0;
                    let n = windows.iter().filter(|x| x.start <= mid && x.end >= mid).count() as f64;
                    watts * (p[1] - p[0]) / n
                }).sum();
                prop_assert!((got[i].raw_j - expected).abs() <= 1e-6 * watts.max(1.0), "query {}: {} vs {}", i, got[i].raw_j, expected);
            }
        }
    }
}
