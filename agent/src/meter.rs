//! The agent's energy meter: discovery, the sampler, the idle baseline, per-query attribution
//! and the shard's telemetry record.

use crate::attribution::{self, Rule, Window};
use crate::power::{self, DiscoveryOptions, NoPower};
use crate::sampler::{DEFAULT_HZ, Sampler};
use ipw_proto::v1::{Energy, PowerSourceInfo, SeriesChunk, ShardTelemetry};
use std::time::{Duration, Instant, SystemTime};

/// Samples per uploaded series chunk.
const CHUNK_SAMPLES: usize = 4096;
/// How long the ring buffer reaches back: a whole shard must fit.
const RING_SECONDS: f64 = 4.0 * 3600.0;

/// How energy is measured.
#[derive(Debug, Clone)]
pub struct PowerOptions {
    /// Samples per second.
    pub hz: f64,
    /// Idle measurement before each shard.
    pub idle: Duration,
    /// How concurrent queries share energy.
    pub rule: Rule,
    /// Where to look for sources.
    pub discovery: DiscoveryOptions,
}

impl Default for PowerOptions {
    fn default() -> Self {
        Self {
            hz: DEFAULT_HZ,
            idle: Duration::from_secs(10),
            rule: Rule::TimeShare,
            discovery: DiscoveryOptions::default(),
        }
    }
}

/// The idle baseline measured before a shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    /// Mean power while idle, in watts.
    pub power_w: f64,
    /// When the measurement began, on the sampler clock.
    pub from: f64,
    /// How long it lasted.
    pub seconds: f64,
}

/// Discovery plus a running sampler, or the reason there is none.
pub struct Meter {
    sampler: Option<Sampler>,
    null_reason: String,
    rule: Rule,
    idle: Duration,
}

impl Meter {
    /// Discovers sources and starts sampling them.
    pub fn start(opts: &PowerOptions) -> Self {
        let discovery = power::discover(&opts.discovery);
        let null_reason = discovery.null_reason();
        for u in &discovery.unavailable {
            tracing::debug!(kind = u.kind, reason = %u.reason, "power source not usable");
        }
        let sampler = (!discovery.sources.is_empty())
            .then(|| Sampler::start(discovery.sources, opts.hz, (opts.hz * RING_SECONDS) as usize));
        match &sampler {
            Some(s) => {
                let names: Vec<String> =
                    s.sources().iter().map(|i| format!("{} {} ({})", i.kind, i.name, i.scope)).collect();
                tracing::info!(hz = opts.hz, sources = %names.join(", "), "sampling power");
            }
            None => {
                tracing::warn!(reason = %null_reason, "no readable power source: energy will be recorded as unknown")
            }
        }
        Self { sampler, null_reason, rule: opts.rule, idle: opts.idle }
    }

    /// Whether anything is being measured.
    pub fn is_measuring(&self) -> bool {
        self.sampler.is_some()
    }

    /// Each sampled source's details (power limit, clocks, zone...), for provenance.
    pub fn source_details(&self) -> Vec<serde_json::Value> {
        self.sampler
            .iter()
            .flat_map(|s| s.sources())
            .map(|i| serde_json::json!({"kind": i.kind.as_str(), "scope": i.scope, "name": i.name, "details": i.details}))
            .collect()
    }

    /// The sampler clock reading of an instant (0 without a sampler).
    pub fn clock(&self, at: Instant) -> f64 {
        self.sampler.as_ref().map(|s| s.clock(at)).unwrap_or(0.0)
    }

    /// Measures idle power for the configured time. `None` without a source or with an idle
    /// time of zero.
    pub async fn idle_baseline(&self) -> Option<Idle> {
        let s = self.sampler.as_ref().filter(|_| !self.idle.is_zero())?;
        let from = s.clock(Instant::now());
        tokio::time::sleep(self.idle).await;
        let to = s.clock(Instant::now());
        s.wait_past(to).await;
        let joules = attribution::energy_between(&s.total_series(from, to), from, to)?;
        Some(Idle { power_w: (joules / (to - from)).max(0.0), from, seconds: to - from })
    }

    /// Each window's energy record, in order, and the shard's active energy.
    pub async fn attribute(&self, windows: &[Window], idle: Option<Idle>) -> (Vec<Energy>, Option<f64>) {
        let unknown = |reason: String| NoPower::new(reason).energy_record(self.rule);
        let Some(s) = &self.sampler else {
            return (vec![unknown(self.null_reason.clone()); windows.len()], None);
        };
        if windows.is_empty() {
            return (Vec::new(), Some(0.0));
        }
        let lo = windows.iter().map(|w| w.start).fold(f64::INFINITY, f64::min);
        let hi = windows.iter().map(|w| w.end).fold(f64::NEG_INFINITY, f64::max);
        s.wait_past(hi).await;
        let series = s.total_series(lo, hi);
        let slowest = s.sources().iter().map(|i| i.update_period).max().unwrap_or_default();
        let short = windows.iter().filter(|w| w.end - w.start < slowest.as_secs_f64()).count();
        if short > 0 {
            tracing::warn!(
                short,
                update_period_ms = slowest.as_millis() as u64,
                "queries shorter than the power source's update period: their energy is interpolated, not resolved"
            );
        }
        match attribution::attribute(&series, windows, self.rule, idle.map(|i| i.power_w)) {
            Ok(shares) => {
                let (source, scope) = self.provenance();
                let records = shares
                    .iter()
                    .map(|a| Energy {
                        energy_j: Some(a.raw_j),
                        dynamic_energy_j: a.dynamic_j,
                        source: source.clone(),
                        scope: scope.clone(),
                        sample_hz: s.hz(),
                        attribution: self.rule.as_str().into(),
                        null_reason: String::new(),
                    })
                    .collect();
                (records, attribution::active_energy(&series, windows))
            }
            Err(e) => (vec![unknown(format!("energy attribution failed: {e}")); windows.len()], None),
        }
    }

    /// `kind+kind`, `scope+scope`: every source that went into the totals.
    fn provenance(&self) -> (String, String) {
        let mut kinds: Vec<&str> = Vec::new();
        let mut scopes: Vec<&str> = Vec::new();
        for i in self.sampler.iter().flat_map(|s| s.sources()) {
            if !kinds.contains(&i.kind.as_str()) {
                kinds.push(i.kind.as_str());
            }
            if !scopes.contains(&i.scope) {
                scopes.push(i.scope);
            }
        }
        (kinds.join("+"), scopes.join("+"))
    }

    /// The shard's telemetry: idle baseline and the raw series from the idle start (or first
    /// query) to the last query's end. `None` without a sampler.
    pub fn telemetry(
        &self,
        shard_id: &str,
        from: f64,
        to: f64,
        idle: Option<Idle>,
        active: Option<f64>,
    ) -> Option<ShardTelemetry> {
        let s = self.sampler.as_ref()?;
        let samples = s.samples(from, to);
        let mut chunks = Vec::new();
        for (source_index, _) in s.sources().iter().enumerate() {
            for (chunk_index, part) in samples.chunks(CHUNK_SAMPLES).enumerate() {
                chunks.push(SeriesChunk {
                    source_index: source_index as u32,
                    chunk_index: chunk_index as u32,
                    t_s: part.iter().map(|x| x.t).collect(),
                    energy_j: part.iter().map(|x| x.cumulative_j[source_index]).collect(),
                });
            }
        }
        let zero_us = s.epoch_wall().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        Some(ShardTelemetry {
            shard_id: shard_id.to_owned(),
            idle_power_w: idle.map(|i| i.power_w),
            idle_seconds: idle.map(|i| i.seconds).unwrap_or(0.0),
            sample_hz: s.hz(),
            attribution: self.rule.as_str().into(),
            sources: s
                .sources()
                .iter()
                .map(|i| PowerSourceInfo {
                    kind: i.kind.as_str().into(),
                    scope: i.scope.into(),
                    name: i.name.clone(),
                    details_json: i.details.to_string(),
                })
                .collect(),
            clock_zero_unix_us: zero_us,
            chunks,
            active_energy_j: active,
        })
    }
}
