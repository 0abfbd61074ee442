//! The agent's energy meter: discovery, the sampler, the idle baseline, per-query attribution
//! and the shard's telemetry record.

use crate::attribution::{self, Rule};
use crate::ledger::QueryEnergy;
use crate::power::{self, DiscoveryOptions, IpwScope, NoPower};
use crate::sampler::{DEFAULT_HZ, Sampler};
use ipw_proto::v1::{Energy, PowerGap, PowerSourceInfo, SeriesChunk, SessionTelemetry};
use std::time::{Duration, Instant, SystemTime};

/// Why a remote endpoint's queries have no energy (`--engine-remote`).
pub const REMOTE_ENDPOINT: &str = "remote endpoint: energy is not observable from the client";

/// Samples per uploaded series chunk, at most.
const CHUNK_SAMPLES: usize = 4096;
/// The window, in seconds, over which a source's current power is averaged for the metrics
/// and the heartbeat.
pub const READING_WINDOW_S: f64 = 1.0;
/// How far back [`Meter::newest`] looks for the series' reach: longer than any bridge.
const REACH_WINDOW_S: f64 = 120.0;
/// How long the ring buffer reaches back: a session's steady window is measured on it.
const RING_SECONDS: f64 = 4.0 * 3600.0;

/// How energy is measured.
#[derive(Debug, Clone)]
pub struct PowerOptions {
    /// Samples per second.
    pub hz: f64,
    /// Idle measurement, once per session on the warm engine.
    pub idle: Duration,
    /// How often the idle measurement is repeated within a long session (`--idle-every`).
    pub idle_every: Duration,
    /// How concurrent queries share energy.
    pub rule: Rule,
    /// Where to look for sources.
    pub discovery: DiscoveryOptions,
    /// Which sources IPW energy sums (`--ipw-scope`); the others are recorded beside it.
    pub ipw_scope: IpwScope,
}

impl Default for PowerOptions {
    fn default() -> Self {
        Self {
            hz: DEFAULT_HZ,
            idle: Duration::from_secs(10),
            idle_every: Duration::from_secs(30 * 60),
            rule: Rule::TimeShare,
            discovery: DiscoveryOptions::default(),
            ipw_scope: IpwScope::Chips,
        }
    }
}

/// An idle baseline, measured on the warm engine with nothing in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    /// Mean power while idle, in watts.
    pub power_w: f64,
    /// When the measurement began, on the sampler clock.
    pub from: f64,
    /// How long it lasted.
    pub seconds: f64,
}

/// One source's reading, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceReading {
    /// Its kind, e.g. `rapl`.
    pub kind: &'static str,
    /// Device or domain.
    pub name: String,
    /// What it covers.
    pub scope: &'static str,
    /// Mean power over the last window, in watts.
    pub watts: Option<f64>,
    /// Joules since sampling began.
    pub joules: f64,
}

/// Discovery plus a running sampler, or the reason there is none.
pub struct Meter {
    sampler: Option<Sampler>,
    /// The sources IPW energy sums, by index; empty when none is of the chosen scope.
    ipw: Vec<usize>,
    ipw_scope: IpwScope,
    /// Which GPUs are measured, and what chose them.
    gpu_selection: String,
    /// The clock's zero without a sampler: load and steady windows are timed all the same.
    epoch: Instant,
    null_reason: String,
    rule: Rule,
    idle: Duration,
}

impl Meter {
    /// Discovers sources and starts sampling them.
    pub fn start(opts: &PowerOptions) -> Self {
        let discovery = power::discover(&opts.discovery);
        let mut null_reason = discovery.null_reason();
        for u in &discovery.unavailable {
            tracing::debug!(kind = u.kind, reason = %u.reason, "power source not usable");
        }
        let gpu_selection = discovery.gpu_selection.clone();
        let sampler = (!discovery.sources.is_empty())
            .then(|| Sampler::start(discovery.sources, opts.hz, (opts.hz * RING_SECONDS) as usize));
        let ipw: Vec<usize> = sampler
            .iter()
            .flat_map(|s| s.sources().iter().enumerate())
            .filter(|(_, i)| opts.ipw_scope.includes(i.scope))
            .map(|(n, _)| n)
            .collect();
        match &sampler {
            Some(s) => {
                let names: Vec<String> =
                    s.sources().iter().map(|i| format!("{} {} ({})", i.kind, i.name, i.scope)).collect();
                tracing::info!(hz = opts.hz, sources = %names.join(", "), ipw_scope = %opts.ipw_scope, "sampling power");
                if ipw.is_empty() {
                    null_reason = format!(
                        "--ipw-scope {}: no source of that scope here (sampled beside it: {})",
                        opts.ipw_scope,
                        names.join(", ")
                    );
                    tracing::warn!(reason = %null_reason, "energy will be recorded as unknown");
                }
            }
            None => {
                tracing::warn!(reason = %null_reason, "no readable power source: energy will be recorded as unknown")
            }
        }
        let (rule, idle, ipw_scope) = (opts.rule, opts.idle, opts.ipw_scope);
        Self { sampler, ipw, ipw_scope, gpu_selection, epoch: Instant::now(), null_reason, rule, idle }
    }

    /// A meter that reads nothing, for `reason` (a remote engine): no discovery, no sampler,
    /// no idle baseline; every query's energy is NULL with `reason`.
    pub fn unmetered(reason: &str, opts: &PowerOptions) -> Self {
        tracing::info!(reason, "not reading power");
        Self {
            sampler: None,
            ipw: Vec::new(),
            ipw_scope: opts.ipw_scope,
            gpu_selection: String::new(),
            epoch: Instant::now(),
            null_reason: reason.to_owned(),
            rule: opts.rule,
            idle: opts.idle,
        }
    }

    /// The sampler, when it samples a source of the IPW scope.
    fn measuring(&self) -> Option<&Sampler> {
        self.sampler.as_ref().filter(|_| !self.ipw.is_empty())
    }

    /// The sampler's rate; `None` without a sampler.
    pub fn sample_hz(&self) -> Option<f64> {
        self.sampler.as_ref().map(Sampler::hz)
    }

    /// Whether IPW energy is being measured.
    pub fn is_measuring(&self) -> bool {
        self.measuring().is_some()
    }

    /// Each sampled source's details (power limit, clocks, zone...), for provenance.
    pub fn source_details(&self) -> Vec<serde_json::Value> {
        self.sampler
            .iter()
            .flat_map(|s| s.sources().iter().enumerate())
            .map(|(n, i)| {
                serde_json::json!({
                    "kind": i.kind.as_str(), "scope": i.scope.as_str(), "name": i.name, "details": i.details,
                    "stated_error": i.stated_error, "in_ipw_scope": self.ipw.contains(&n),
                })
            })
            .collect()
    }

    /// The IPW scope, and which GPUs are measured and what chose them, for provenance.
    pub fn scope_provenance(&self) -> serde_json::Value {
        serde_json::json!({"ipw_scope": self.ipw_scope.as_str(), "gpu_selection": self.gpu_selection})
    }

    /// Seconds on the sampler clock for an instant (on a clock of the meter's own without a
    /// sampler, so load and steady windows are timed all the same).
    pub fn clock(&self, at: Instant) -> f64 {
        match &self.sampler {
            Some(s) => s.clock(at),
            None => at.saturating_duration_since(self.epoch).as_secs_f64(),
        }
    }

    /// Measures idle power for the configured time. `None` without a source or with an idle
    /// time of zero.
    pub async fn idle_baseline(&self) -> Option<Idle> {
        let s = self.measuring().filter(|_| !self.idle.is_zero())?;
        let from = s.clock(Instant::now());
        tokio::time::sleep(self.idle).await;
        let to = s.clock(Instant::now());
        s.wait_past(to).await;
        let joules = self.energy_between(from, to)?;
        Some(Idle { power_w: (joules / (to - from)).max(0.0), from, seconds: to - from })
    }

    /// How far the IPW scope's series reaches: the newest sample, less any a source's next
    /// reading has yet to bridge. `None` without a sampler.
    pub fn newest(&self) -> Option<f64> {
        let s = self.sampler.as_ref()?;
        let newest = s.newest()?;
        match self.measuring() {
            Some(_) => self.series(newest - REACH_WINDOW_S, newest).last().map(|x| x.0),
            None => Some(newest),
        }
    }

    /// Each source's mean power over the last `window` seconds sampled (`None` before two
    /// samples) and its cumulative joules, for the metrics and the heartbeat. Every source is
    /// named from the start, so a source not yet sampled reads as unknown, not as absent.
    pub fn readings(&self, window: f64) -> Vec<SourceReading> {
        let Some(s) = &self.sampler else { return Vec::new() };
        let samples = s.newest().map(|newest| s.samples(newest - window, f64::INFINITY)).unwrap_or_default();
        let (first, last) = (samples.first(), samples.last());
        s.sources()
            .iter()
            .enumerate()
            .map(|(i, info)| SourceReading {
                kind: info.kind.as_str(),
                name: info.name.clone(),
                scope: info.scope.as_str(),
                // Unknown inside a gap (NaN), never a made-up figure.
                watts: match (first, last) {
                    (Some(a), Some(b)) if b.t > a.t => Some((b.cumulative_j[i] - a.cumulative_j[i]) / (b.t - a.t)),
                    _ => None,
                }
                .filter(|w| w.is_finite()),
                joules: samples.iter().rev().map(|x| x.cumulative_j[i]).find(|j| j.is_finite()).unwrap_or(0.0),
            })
            .collect()
    }

    /// The IPW scope's cumulative series `(t, J)` around `[from, to]`, NaN in a gap (empty
    /// without a source of that scope).
    pub fn series(&self, from: f64, to: f64) -> Vec<(f64, f64)> {
        self.measuring().map(|s| s.series_of(&self.ipw, from, to)).unwrap_or_default()
    }

    /// Energy measured between two instants on the sampler clock, from the samples around each
    /// (not the whole series between: a steady window may span hours); `None` when a source
    /// of the IPW scope has a gap in between.
    pub fn energy_between(&self, from: f64, to: f64) -> Option<f64> {
        if self.gap_reason(from, to).is_some() {
            return None;
        }
        let at = |t: f64| attribution::energy_at(&self.series(t, t), t);
        Some(at(to)? - at(from)?)
    }

    /// Why energy between `from` and `to` is unknown: the gaps of the IPW scope's sources
    /// there. `None` when there are none.
    pub fn gap_reason(&self, from: f64, to: f64) -> Option<String> {
        let s = self.measuring()?;
        let gaps: Vec<String> = s
            .gaps(from, to)
            .into_iter()
            .filter(|g| self.ipw.contains(&g.source))
            .map(|g| format!("{} ({:.1}s..{:.1}s): {}", s.sources()[g.source].name, g.from, g.to, g.reason))
            .collect();
        (!gaps.is_empty()).then(|| format!("a gap in the power series, not interpolated across: {}", gaps.join("; ")))
    }

    /// The energy record of a query: its attributed energy, or `None` with the reason (the
    /// meter's own reason when there is no source).
    pub fn energy_record(&self, energy: Result<QueryEnergy, String>) -> Energy {
        let Some(s) = self.measuring() else {
            return NoPower::new(self.null_reason.clone()).energy_record(self.rule);
        };
        let e = match energy {
            Ok(e) if e.raw_j().is_finite() => e,
            Ok(_) => return NoPower::new("a gap in the power series during this query").energy_record(self.rule),
            Err(reason) => return NoPower::new(reason).energy_record(self.rule),
        };
        let (source, scope) = self.provenance();
        Energy {
            energy_j: Some(e.raw_j()),
            dynamic_energy_j: e.dynamic_j,
            source,
            scope,
            sample_hz: s.hz(),
            attribution: self.rule.as_str().into(),
            null_reason: String::new(),
            prefill_energy_j: Some(e.prefill_j),
            decode_energy_j: Some(e.decode_j),
        }
    }

    /// How concurrent queries share energy.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Why there is no energy, when nothing of the IPW scope is sampled.
    pub fn null_reason(&self) -> Option<&str> {
        self.measuring().is_none().then_some(self.null_reason.as_str())
    }

    /// `kind+kind`, `scope+scope`: every source that went into the totals.
    fn provenance(&self) -> (String, String) {
        let mut kinds: Vec<&str> = Vec::new();
        let mut scopes: Vec<&str> = Vec::new();
        for &n in &self.ipw {
            let Some(i) = self.sampler.as_ref().map(|s| &s.sources()[n]) else { continue };
            if !kinds.contains(&i.kind.as_str()) {
                kinds.push(i.kind.as_str());
            }
            if !scopes.contains(&i.scope.as_str()) {
                scopes.push(i.scope.as_str());
            }
        }
        (kinds.join("+"), scopes.join("+"))
    }

    /// A session's telemetry record with the series' samples after `after` up to `upto`, cut
    /// into chunks numbered from `first_chunk` (per source). Without a sampler it carries the
    /// reason there is no energy.
    pub fn session_telemetry(
        &self,
        session_id: &str,
        run_id: &str,
        after: f64,
        upto: f64,
        first_chunk: u32,
    ) -> SessionTelemetry {
        let mut t = SessionTelemetry {
            session_id: session_id.to_owned(),
            run_id: run_id.to_owned(),
            attribution: self.rule.as_str().into(),
            null_reason: self.null_reason.clone(),
            ..Default::default()
        };
        t.ipw_scope = self.ipw_scope.as_str().into();
        let Some(s) = &self.sampler else { return t };
        if self.measuring().is_some() {
            t.null_reason.clear();
        }
        let samples: Vec<_> = s.samples(after, upto).into_iter().filter(|x| x.t > after && x.t <= upto).collect();
        for (source_index, _) in s.sources().iter().enumerate() {
            for (i, part) in samples.chunks(CHUNK_SAMPLES).enumerate() {
                // A source's samples in a gap are left out; the gap itself travels below.
                let known = || part.iter().filter(|x| x.cumulative_j[source_index].is_finite());
                t.chunks.push(SeriesChunk {
                    source_index: source_index as u32,
                    chunk_index: first_chunk + i as u32,
                    t_s: known().map(|x| x.t).collect(),
                    energy_j: known().map(|x| x.cumulative_j[source_index]).collect(),
                });
            }
        }
        t.gaps = s
            .gaps(after, upto)
            .into_iter()
            .map(|g| PowerGap { source_index: g.source as u32, from_s: g.from, to_s: g.to, reason: g.reason })
            .collect();
        t.clock_zero_unix_us =
            s.epoch_wall().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        t.sample_hz = s.hz();
        t.sources = s
            .sources()
            .iter()
            .enumerate()
            .map(|(n, i)| PowerSourceInfo {
                kind: i.kind.as_str().into(),
                scope: i.scope.as_str().into(),
                name: i.name.clone(),
                details_json: i.details.to_string(),
                stated_error: i.stated_error,
                in_ipw_scope: self.ipw.contains(&n),
            })
            .collect();
        t
    }
}
