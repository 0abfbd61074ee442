//! The coordinator's Prometheus metrics. Counters count what this replica did (sum them
//! across replicas); gauges read from the database at scrape time describe the whole fleet
//! (every replica reports the same values: aggregate them with `max`, not `sum`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Labels naming a status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// e.g. `approved`, `pending`.
    pub status: String,
}

/// Labels naming an agent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    /// The agent's id.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// Its hardware class.
    pub hardware_class: String,
}

/// Labels naming a run's shards in one status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunShardLabels {
    /// The run's id.
    pub run_id: String,
    /// `pending`, `leased`, `completed` or `failed`.
    pub status: String,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// e.g. `created`.
    pub outcome: &'static str,
}

/// Labels naming a pool connection's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabel {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// Every metric the coordinator exports; clones share the values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Leases handed out by this replica.
    pub leases_granted: Counter,
    /// Of those, leases of shards whose previous lease had run out.
    pub leases_expired: Counter,
    /// Shards failed because their leases ran out too often.
    pub shards_failed: Counter,
    /// Leases given back by agents.
    pub leases_released: Counter,
    /// Results committed.
    pub results_ingested: Counter,
    /// Results received again and ignored (already committed).
    pub results_duplicate: Counter,
    /// Time to validate and commit one result batch.
    pub ingest_batch_seconds: Histogram,
    /// Scheduled sweep firings, by outcome (`created`, `skipped`, `failed`).
    pub scheduler_firings: Family<OutcomeLabel, Counter>,
    /// Agents by status (database).
    pub agents: Family<StatusLabel, Gauge>,
    /// Seconds since each approved agent was last heard from (database).
    pub agent_last_seen_age: Family<AgentLabels, GaugeF64>,
    /// Shards of the runs still going, by status (database).
    pub shards: Family<RunShardLabels, Gauge>,
    /// Pool connections by state.
    pub db_pool_connections: Family<PoolStateLabel, Gauge>,
    /// The pool's size limit.
    pub db_pool_max_connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            leases_granted: Counter::default(),
            leases_expired: Counter::default(),
            shards_failed: Counter::default(),
            leases_released: Counter::default(),
            results_ingested: Counter::default(),
            results_duplicate: Counter::default(),
            // 1 ms to ~16 s.
            ingest_batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            scheduler_firings: Family::default(),
            agents: Family::default(),
            agent_last_seen_age: Family::default(),
            shards: Family::default(),
            db_pool_connections: Family::default(),
            db_pool_max_connections: Gauge::default(),
        };
        // Every outcome from the start, at zero, so a rate over them is defined before the first.
        for outcome in ["created", "skipped", "failed"] {
            let _ = m.scheduler_firings.get_or_create(&OutcomeLabel { outcome });
        }
        m
    }
}

impl Metrics {
    /// A registry holding every metric, prefixed `ipw`.
    pub fn registry(&self) -> Registry {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("ipw");
        r.register("leases_granted", "Leases handed out by this coordinator", self.leases_granted.clone());
        r.register(
            "leases_expired",
            "Leases handed out for shards whose previous lease had run out",
            self.leases_expired.clone(),
        );
        r.register("leases_released", "Leases given back by agents", self.leases_released.clone());
        r.register("shards_failed", "Shards failed after their leases ran out too often", self.shards_failed.clone());
        r.register("results_ingested", "Results committed", self.results_ingested.clone());
        r.register("results_duplicate", "Results received again and ignored", self.results_duplicate.clone());
        r.register_with_unit(
            "ingest_batch_duration",
            "Time to validate and commit one result batch",
            Unit::Seconds,
            self.ingest_batch_seconds.clone(),
        );
        r.register("scheduler_firings", "Scheduled sweep firings by outcome", self.scheduler_firings.clone());
        r.register("agents", "Agents by status (fleet-wide, from the database)", self.agents.clone());
        r.register_with_unit(
            "agent_last_seen_age",
            "Time since each approved agent was last heard from (from the database)",
            Unit::Seconds,
            self.agent_last_seen_age.clone(),
        );
        r.register("shards", "Shards of unfinished runs by status (from the database)", self.shards.clone());
        r.register("db_pool_connections", "Database pool connections by state", self.db_pool_connections.clone());
        r.register("db_pool_max_connections", "The database pool's size limit", self.db_pool_max_connections.clone());
        root
    }
}
