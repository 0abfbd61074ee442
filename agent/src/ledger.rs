//! Energy attributed as the series comes in, not at the end of a shard.
//!
//! The ledger knows every query of a session that is in flight or not yet fully attributed.
//! Each [`Ledger::advance`] takes the series up to a new frontier and splits the energy of
//! `[old frontier, new frontier]` among the queries active in it, by the rules of
//! [`crate::attribution`]: the timeline is cut at every sample and window edge, and each
//! piece's energy is shared by the queries active over it. A query is final once the frontier
//! has passed its end; a crash then loses only what lay beyond the frontier.
//!
//! Each query's share is kept in two phases, split at its first token: prefill (send to first
//! token) and decode (first token to end), so the two always sum to the query's energy.
//!
//! Under time share a query in flight is known to be active up to now, so the frontier
//! follows the series. Under token share a query's weight (its token rate) is known only when
//! it ends, so the frontier stops at the start of the oldest query still in flight.

use crate::attribution::{Rule, energy_between};
use std::collections::BTreeMap;

/// A query's energy, split at its first token.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueryEnergy {
    /// Send to first token, J.
    pub prefill_j: f64,
    /// First token to end, J.
    pub decode_j: f64,
    /// Raw minus its share of idle power over its time, when an idle baseline is known.
    pub dynamic_j: Option<f64>,
    /// When the query started, on the sampler clock: where to look for a gap that made its
    /// energy unknown (NaN).
    pub start: f64,
}

impl QueryEnergy {
    /// The query's energy: prefill plus decode.
    pub fn raw_j(&self) -> f64 {
        self.prefill_j + self.decode_j
    }
}

/// What the advanced span held, for the session's coverage figure.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Coverage {
    /// Time while any query was active, s.
    pub query_time_s: f64,
    /// The part of it inside sample intervals no longer than two sample periods, s.
    pub covered_time_s: f64,
}

#[derive(Debug, Clone)]
struct Query {
    start: f64,
    first_token: Option<f64>,
    end: Option<f64>,
    tokens: f64,
    energy: QueryEnergy,
}

/// The queries of one session and the energy attributed to them so far.
#[derive(Debug)]
pub struct Ledger {
    rule: Rule,
    frontier: Option<f64>,
    queries: BTreeMap<u64, Query>,
    next_id: u64,
}

impl Ledger {
    /// An empty ledger sharing energy by `rule`.
    pub fn new(rule: Rule) -> Self {
        Self { rule, frontier: None, queries: BTreeMap::new(), next_id: 0 }
    }

    /// A query started at `start` (sampler clock). Returns its id in the ledger.
    pub fn open(&mut self, start: f64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queries.insert(
            id,
            Query {
                start,
                first_token: None,
                end: None,
                tokens: 0.0,
                energy: QueryEnergy { start, ..Default::default() },
            },
        );
        id
    }

    /// The query's first token arrived at `t` (known while it is still in flight).
    pub fn first_token(&mut self, id: u64, t: f64) {
        if let Some(q) = self.queries.get_mut(&id) {
            q.first_token.get_or_insert(t);
        }
    }

    /// The query ended at `end` with `tokens` output tokens.
    pub fn close(&mut self, id: u64, end: f64, first_token: Option<f64>, tokens: f64) {
        if let Some(q) = self.queries.get_mut(&id) {
            q.end = Some(end.max(q.start));
            q.tokens = tokens;
            if let Some(t) = first_token {
                q.first_token.get_or_insert(t);
            }
        }
    }

    /// Queries not yet final.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Whether every query is final.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Where the next advance starts: the frontier, or before it the first query's start.
    pub fn from(&self) -> Option<f64> {
        self.frontier.or_else(|| self.queries.values().map(|q| q.start).reduce(f64::min))
    }

    /// How far the ledger may advance with the series reaching `series_end`.
    pub fn reachable(&self, series_end: f64) -> f64 {
        match self.rule {
            Rule::TimeShare => series_end,
            Rule::TokenShare => {
                self.queries.values().filter(|q| q.end.is_none()).map(|q| q.start).fold(series_end, f64::min)
            }
        }
    }

    /// Attributes the energy of `series` from the frontier to `to`, with idle power `idle_w`
    /// for the dynamic figures, and returns the queries now final (ended at or before `to`).
    /// The series must cover the span; if it does not, nothing changes and the error says why.
    pub fn advance(
        &mut self,
        series: &[(f64, f64)],
        to: f64,
        idle_w: Option<f64>,
    ) -> Result<(Vec<(u64, QueryEnergy)>, Coverage), String> {
        let from = self.frontier.unwrap_or_else(|| self.queries.values().map(|q| q.start).fold(to, f64::min));
        let to = to.max(from);
        let mut coverage = Coverage::default();
        if to > from && self.queries.values().any(|q| q.start < to && q.end.is_none_or(|e| e > from)) {
            let (Some(first), Some(last)) = (series.first(), series.last()) else {
                return Err("no power samples".into());
            };
            if first.0 > from || last.0 < to {
                return Err(format!(
                    "the power samples ({:.3}s..{:.3}s) do not cover {from:.3}s..{to:.3}s",
                    first.0, last.0
                ));
            }
            coverage = self.share(series, from, to, idle_w);
        }
        self.frontier = Some(to);
        let done: Vec<u64> =
            self.queries.iter().filter(|(_, q)| q.end.is_some_and(|e| e <= to)).map(|(i, _)| *i).collect();
        let out = done.into_iter().filter_map(|i| self.queries.remove(&i).map(|q| (i, q.energy))).collect();
        Ok((out, coverage))
    }

    /// Splits `[from, to]` among the queries' phases active in it (see the module docs).
    fn share(&mut self, series: &[(f64, f64)], from: f64, to: f64, idle_w: Option<f64>) -> Coverage {
        // Each query's part of the span, cut at its first token: (id, a, b, decode?).
        let mut phases: Vec<(u64, f64, f64, bool)> = Vec::new();
        let mut weights: BTreeMap<u64, f64> = BTreeMap::new();
        for (&id, q) in &self.queries {
            let (a, b) = (q.start.max(from), q.end.unwrap_or(to).min(to));
            if a >= b {
                continue; // not active in the span (or an instant: no energy)
            }
            match q.first_token.map(|f| f.clamp(a, b)) {
                Some(f) => phases.extend([(id, a, f, false), (id, f, b, true)]),
                None => phases.push((id, a, b, false)),
            }
            weights.insert(id, self.weight(q));
        }
        let mut cuts: Vec<f64> = phases.iter().flat_map(|p| [p.1, p.2]).collect();
        cuts.extend(series.iter().map(|(t, _)| *t).filter(|t| *t > from && *t < to));
        cuts.extend([from, to]);
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let period = sample_period(series);
        let mut coverage = Coverage::default();
        let mut active: Vec<(u64, bool)> = Vec::new();
        for pair in cuts.windows(2) {
            let (x, y) = (pair[0], pair[1]);
            active.clear();
            active.extend(phases.iter().filter(|p| p.1 <= x && p.2 >= y && p.1 < p.2).map(|p| (p.0, p.3)));
            if active.is_empty() {
                continue; // an idle gap: nobody's query
            }
            coverage.query_time_s += y - x;
            if enclosing_gap(series, (x + y) / 2.0) <= 2.0 * period {
                coverage.covered_time_s += y - x;
            }
            let energy = energy_between(series, x, y)
                // Inside a gap of a source the energy is unknown: NaN makes each query active
                // here unknown too, and it is recorded as NULL with the reason.
                .unwrap_or(f64::NAN);
            let total: f64 = active.iter().map(|(id, _)| weights[id]).sum();
            for &(id, decode) in &active {
                let share = if total > 0.0 { weights[&id] / total } else { 1.0 / active.len() as f64 };
                let e = &mut self.queries.get_mut(&id).expect("a known query").energy;
                *(if decode { &mut e.decode_j } else { &mut e.prefill_j }) += energy * share;
                if let Some(p) = idle_w {
                    *e.dynamic_j.get_or_insert(0.0) += (energy - p * (y - x)) * share;
                }
            }
        }
        coverage
    }

    fn weight(&self, q: &Query) -> f64 {
        match (self.rule, q.end) {
            (Rule::TokenShare, Some(end)) if end > q.start => q.tokens.max(0.0) / (end - q.start),
            (Rule::TokenShare, _) => 0.0,
            (Rule::TimeShare, _) => 1.0,
        }
    }
}

/// The series' typical sample period: the median gap between samples.
fn sample_period(series: &[(f64, f64)]) -> f64 {
    let mut gaps: Vec<f64> = series.windows(2).map(|w| w[1].0 - w[0].0).collect();
    if gaps.is_empty() {
        return f64::INFINITY;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// The length of the sample interval holding `t`.
fn enclosing_gap(series: &[(f64, f64)], t: f64) -> f64 {
    let i = series.partition_point(|(ts, _)| *ts <= t);
    match (i.checked_sub(1).and_then(|j| series.get(j)), series.get(i)) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Window, active_energy, attribute};
    use proptest::prelude::*;

    /// A made-up series with a varying power: known numbers for the property tests.
    fn ramp(n: usize, dt: f64) -> Vec<(f64, f64)> {
        let mut e = 0.0;
        (0..=n)
            .map(|i| {
                let t = i as f64 * dt;
                e += (50.0 + 40.0 * (t * 1.7).sin()) * dt;
                (t, e)
            })
            .collect()
    }

    fn windows_from(raw: &[(f64, f64, f64)], span: f64) -> Vec<(Window, f64)> {
        raw.iter()
            .map(|&(a, b, f)| {
                let (s, e) = if a <= b { (a * span, b * span) } else { (b * span, a * span) };
                (Window { start: s, end: e, tokens: 1.0 + f * 50.0 }, s + f * (e - s))
            })
            .collect()
    }

    proptest! {
        /// Advancing in any number of steps gives each query what attributing all at once
        /// gives it, prefill and decode sum to it, and the queries sum to the active energy.
        #[test]
        fn advancing_in_steps_equals_attributing_at_once(
            raw in prop::collection::vec((0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0), 1..10),
            steps in prop::collection::vec(0.0f64..1.0, 0..8),
            token_share in any::<bool>(),
        ) {
            let series = ramp(200, 0.05);
            let span = series.last().unwrap().0;
            let rule = if token_share { Rule::TokenShare } else { Rule::TimeShare };
            let ws = windows_from(&raw, span);
            let windows: Vec<Window> = ws.iter().map(|(w, _)| *w).collect();
            let once = attribute(&series, &windows, rule, Some(20.0)).unwrap();

            let mut ledger = Ledger::new(rule);
            let ids: Vec<u64> = ws.iter().map(|(w, _)| ledger.open(w.start)).collect();
            for (id, (w, f)) in ids.iter().zip(&ws) {
                ledger.close(*id, w.end, Some(*f), w.tokens);
            }
            let mut stops: Vec<f64> = steps.iter().map(|s| s * span).collect();
            stops.sort_by(f64::total_cmp);
            stops.push(span);
            let mut got = BTreeMap::new();
            for stop in stops {
                let to = ledger.reachable(stop);
                let (done, _) = ledger.advance(&series, to, Some(20.0)).unwrap();
                got.extend(done);
            }
            prop_assert!(ledger.is_empty());
            let sum: f64 = got.values().map(QueryEnergy::raw_j).sum();
            let active = active_energy(&series, &windows).unwrap();
            prop_assert!((sum - active).abs() <= 1e-6 * active.max(1.0), "sum {} vs active {}", sum, active);
            for (i, id) in ids.iter().enumerate() {
                let e = got[id];
                prop_assert!((e.raw_j() - once[i].raw_j).abs() <= 1e-6 * once[i].raw_j.max(1.0), "query {}: {} vs {}", i, e.raw_j(), once[i].raw_j);
                prop_assert!(e.prefill_j >= -1e-9 && e.decode_j >= -1e-9);
                if let (Some(d), Some(o)) = (e.dynamic_j, once[i].dynamic_j) {
                    prop_assert!((d - o).abs() <= 1e-6 * o.abs().max(1.0));
                }
            }
        }
    }

    #[test]
    fn a_query_in_flight_is_charged_as_it_goes_and_final_once_passed() {
        // 100 W constant: 5 J per 0.05 s sample.
        let series: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64 * 0.05, i as f64 * 5.0)).collect();
        let mut ledger = Ledger::new(Rule::TimeShare);
        let a = ledger.open(0.0);
        ledger.first_token(a, 0.5);
        let (done, cov) = ledger.advance(&series, 2.0, None).unwrap();
        assert!(done.is_empty(), "still in flight");
        assert!((cov.query_time_s - 2.0).abs() < 1e-9 && (cov.covered_time_s - 2.0).abs() < 1e-9);
        let b = ledger.open(2.0);
        ledger.close(a, 3.0, None, 10.0);
        let (done, _) = ledger.advance(&series, 4.0, None).unwrap();
        assert_eq!(done.len(), 1);
        let (id, e) = done[0];
        assert_eq!(id, a);
        // Alone for 2 s (200 J), shared with b for 1 s (50 J); prefill is its first 0.5 s.
        assert!((e.raw_j() - 250.0).abs() < 1e-9, "{e:?}");
        assert!((e.prefill_j - 50.0).abs() < 1e-9, "{e:?}");
        ledger.close(b, 4.0, Some(2.1), 3.0);
        let (done, _) = ledger.advance(&series, 4.0, None).unwrap();
        assert!((done[0].1.raw_j() - 150.0).abs() < 1e-9);
    }

    #[test]
    fn a_gap_in_the_samples_is_uncovered_time_and_a_short_series_an_error() {
        let mut series: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64 * 0.05, i as f64)).collect();
        series.push((1.0, 11.0)); // a 0.5 s gap after 0.5 s: ten sample periods
        let mut ledger = Ledger::new(Rule::TimeShare);
        let q = ledger.open(0.0);
        ledger.close(q, 1.0, None, 1.0);
        let (_, cov) = ledger.advance(&series, 1.0, None).unwrap();
        assert!((cov.query_time_s - 1.0).abs() < 1e-9);
        assert!((cov.covered_time_s - 0.5).abs() < 1e-9, "{cov:?}");
        let mut ledger = Ledger::new(Rule::TimeShare);
        ledger.open(0.0);
        let e = ledger.advance(&series, 2.0, None).unwrap_err();
        assert!(e.contains("do not cover"), "{e}");
    }
}
