//! The agent's Prometheus metrics and what its progress line shows. Clones share the values;
//! [`crate::runner::RunOptions`] carries one to every part of a run.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Every outcome a query can end with.
const OUTCOMES: [&str; 3] = ["answered", "error", "engine_failure"];

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `answered`, `error` (measured, but the answer is an error) or `engine_failure`.
    pub outcome: &'static str,
}

/// Labels naming a power source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source's kind, e.g. `nvml`, `rapl`.
    pub kind: String,
    /// Its name, e.g. `GPU 0` or `package-0`.
    pub source: String,
    /// What it covers: `gpu`, `cpu-package`, `soc`...
    pub scope: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// How far one run has come on this agent, for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunProgress {
    /// Queries this agent finished (answered or not).
    pub done: u64,
    /// Of those, the ones answered with an error or failed by the engine.
    pub errors: u64,
    /// Queries leased to this agent so far.
    pub leased: u64,
}

/// Every metric the agent exports.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    /// Queries finished, by outcome.
    pub queries: Family<OutcomeLabel, Counter>,
    /// Engine requests in flight.
    pub in_flight: Gauge,
    /// Time to first token.
    pub ttft_seconds: Histogram,
    /// Whole-request latency.
    pub request_seconds: Histogram,
    /// 429 (rate limited) answers the engine gave, each waited out or, past the retries, the
    /// request's error.
    pub rate_limited: Counter,
    /// Current power per source.
    pub power_watts: Family<SourceLabels, GaugeF64>,
    /// Energy per source since the agent started sampling.
    pub energy_joules: Family<SourceLabels, Counter<f64, AtomicU64>>,
    /// Results spooled and not yet committed (read at scrape time).
    pub spool_results: Gauge,
    /// Bytes of the spool's files (read at scrape time).
    pub spool_bytes: Gauge,
    /// Free bytes on the spool's file system (read at scrape time).
    pub spool_free_bytes: Gauge,
    /// Results the coordinator committed from this agent.
    pub results_uploaded: Counter,
    /// Unix time of the last upload the coordinator acknowledged.
    pub last_upload: GaugeF64,
    /// Per run, for the progress line.
    pub progress: Arc<Mutex<BTreeMap<String, RunProgress>>>,
    /// The summed power of every source at the last reading, for the progress line.
    pub now_watts: Arc<Mutex<Option<f64>>>,
    /// Each source's cumulative joules when last read.
    energy_seen: Arc<Mutex<std::collections::HashMap<SourceLabels, f64>>>,
    /// The latest call to the coordinator, for `/readyz`.
    pub contact: crate::health::Contact,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let m = Self {
            queries: Family::default(),
            in_flight: Gauge::default(),
            // 10 ms to ~10 min.
            ttft_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            request_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            rate_limited: Counter::default(),
            power_watts: Family::default(),
            energy_joules: Family::default(),
            spool_results: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_free_bytes: Gauge::default(),
            results_uploaded: Counter::default(),
            last_upload: GaugeF64::default(),
            progress: Arc::default(),
            energy_seen: Arc::default(),
            now_watts: Arc::default(),
            contact: crate::health::Contact::default(),
        };
        // Every outcome from the start, at zero, so a rate over them is defined before the first.
        for outcome in OUTCOMES {
            let _ = m.queries.get_or_create(&OutcomeLabel { outcome });
        }
        m
    }
}

impl AgentMetrics {
    /// A query ended with `outcome`, of `run` if its lease is still held.
    pub fn query_done(&self, run: Option<&str>, outcome: &'static str) {
        self.queries.get_or_create(&OutcomeLabel { outcome }).inc();
        let Some(run) = run else { return };
        let mut progress = self.progress.lock().expect("not poisoned");
        let p = progress.entry(run.to_owned()).or_default();
        p.done += 1;
        p.errors += u64::from(outcome != "answered");
    }

    /// Queries finished (any outcome) since the agent started: the sum of `queries`.
    pub fn queries_finished(&self) -> u64 {
        OUTCOMES.into_iter().map(|outcome| self.queries.get_or_create(&OutcomeLabel { outcome }).get()).sum()
    }

    /// `items` queries of `run` were leased to this agent.
    pub fn leased(&self, run: &str, items: usize) {
        self.progress.lock().expect("not poisoned").entry(run.to_owned()).or_default().leased += items as u64;
    }

    /// The coordinator acknowledged `committed` new results just now.
    pub fn uploaded(&self, committed: u64) {
        self.results_uploaded.inc_by(committed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_upload.set(now.as_secs_f64());
    }

    /// Brings the power gauges and energy counters up to `readings`.
    pub fn power(&self, readings: &[crate::meter::SourceReading]) {
        let total = readings.iter().map(|r| r.watts).sum::<Option<f64>>().filter(|_| !readings.is_empty());
        *self.now_watts.lock().expect("not poisoned") = total;
        for r in readings {
            let labels = SourceLabels { kind: r.kind.into(), source: r.name.clone(), scope: r.scope.into() };
            if let Some(w) = r.watts {
                self.power_watts.get_or_create(&labels).set(w);
            }
            // The counter adds what the source's cumulative joules grew by; a new sampler (a
            // new credential restarts the run) starts again from zero.
            let mut seen = self.energy_seen.lock().expect("not poisoned");
            let last = seen.insert(labels.clone(), r.joules).unwrap_or(0.0);
            let delta = if r.joules >= last { r.joules - last } else { r.joules };
            self.energy_joules.get_or_create(&labels).inc_by(delta);
        }
    }

    /// A registry holding every metric, prefixed `ipw_agent`.
    pub fn registry(&self) -> Registry {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("ipw_agent");
        r.register("queries", "Queries finished, by outcome", self.queries.clone());
        r.register("requests_in_flight", "Engine requests in flight", self.in_flight.clone());
        r.register_with_unit("ttft", "Time to first token", Unit::Seconds, self.ttft_seconds.clone());
        r.register_with_unit("request_duration", "Engine request latency", Unit::Seconds, self.request_seconds.clone());
        r.register("rate_limited", "Rate limited (429) answers from the engine", self.rate_limited.clone());
        r.register_with_unit(
            "power",
            "Current power per source",
            Unit::Other("watts".into()),
            self.power_watts.clone(),
        );
        r.register_with_unit(
            "energy",
            "Energy per source since sampling began",
            Unit::Joules,
            self.energy_joules.clone(),
        );
        r.register("spool_results", "Results spooled, not yet committed", self.spool_results.clone());
        r.register_with_unit("spool", "Size of the spool's files", Unit::Bytes, self.spool_bytes.clone());
        r.register_with_unit(
            "spool_free",
            "Free space on the spool's file system",
            Unit::Bytes,
            self.spool_free_bytes.clone(),
        );
        r.register("results_uploaded", "Results the coordinator committed", self.results_uploaded.clone());
        r.register_with_unit(
            "last_upload_timestamp",
            "Unix time of the last acknowledged upload",
            Unit::Seconds,
            self.last_upload.clone(),
        );
        root
    }
}

#[cfg(test)]
mod tests {
    use super::AgentMetrics;

    #[test]
    fn rate_limits_are_a_prometheus_counter() {
        let m = AgentMetrics::default();
        m.rate_limited.inc_by(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        assert!(text.lines().any(|l| l == "ipw_agent_rate_limited_total 3"), "{text}");
    }

    #[test]
    fn queries_finished_counts_every_outcome() {
        let m = AgentMetrics::default();
        assert_eq!(m.queries_finished(), 0);
        m.query_done(Some("r"), "answered");
        m.query_done(None, "error");
        m.query_done(Some("r"), "engine_failure");
        assert_eq!(m.queries_finished(), 3);
    }
}
