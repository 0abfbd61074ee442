//! What the coordinator tells its operations listener (`ipw_ops::http`): ready when
//! PostgreSQL answers and every migration this build carries is applied; at each scrape, the
//! fleet's gauges from the database.

use crate::infra::metrics::{AgentLabels, Metrics, PoolStateLabel, RunShardLabels, StatusLabel};
use crate::infra::pool::MIGRATOR;
use crate::store::gauges;
use futures::future::BoxFuture;
use ipw_ops::http::{Check, Probes};
use sqlx::PgPool;

/// Longest the database check may take.
const DB_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The coordinator's readiness checks and scrape-time gauges. The listener starts before the
/// database is reached, so that `/healthz` answers while the coordinator waits for it.
#[derive(Debug)]
pub struct CoordinatorProbes {
    pool: std::sync::OnceLock<PgPool>,
    metrics: Metrics,
}

impl CoordinatorProbes {
    /// Probes reporting into `metrics`, not ready until [`CoordinatorProbes::connected`].
    pub fn new(metrics: Metrics) -> Self {
        Self { pool: std::sync::OnceLock::new(), metrics }
    }

    /// The database is connected and migrated: check it from now on.
    pub fn connected(&self, pool: PgPool) {
        let _ = self.pool.set(pool);
    }
}

impl Probes for CoordinatorProbes {
    fn ready(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            let Some(pool) = self.pool.get() else {
                let waiting = || Err("the coordinator is still connecting to PostgreSQL and migrating".to_string());
                return vec![
                    Check { name: "postgres", outcome: waiting() },
                    Check { name: "migrations", outcome: waiting() },
                ];
            };
            // Shorter than the listener's own limit, so the answer says which check failed.
            let applied = tokio::time::timeout(DB_CHECK_TIMEOUT, gauges::applied_migrations(pool)).await;
            let postgres = match &applied {
                Ok(Ok(_)) => Ok(format!("{} connections open", pool.size())),
                Ok(Err(e)) => Err(format!("cannot query PostgreSQL: {e}")),
                Err(_) => Err(format!("PostgreSQL did not answer within {DB_CHECK_TIMEOUT:?}")),
            };
            let migrations = match applied {
                Ok(Ok(applied)) => {
                    let missing: Vec<i64> =
                        MIGRATOR.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect();
                    if missing.is_empty() {
                        Ok(format!("{} applied", applied.len()))
                    } else {
                        Err(format!("not applied yet: {missing:?}"))
                    }
                }
                _ => Err("unknown: PostgreSQL did not answer".into()),
            };
            vec![Check { name: "postgres", outcome: postgres }, Check { name: "migrations", outcome: migrations }]
        })
    }

    fn before_scrape(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(pool) = self.pool.get() else { return };
            let m = &self.metrics;
            let idle = pool.num_idle() as i64;
            m.db_pool_connections.get_or_create(&PoolStateLabel { state: "idle" }).set(idle);
            m.db_pool_connections.get_or_create(&PoolStateLabel { state: "in_use" }).set(pool.size() as i64 - idle);
            m.db_pool_max_connections.set(pool.options().get_max_connections() as i64);
            if let Err(e) = self.read_fleet(pool).await {
                tracing::warn!(error = %e, "the fleet's gauges could not be read; they keep their last values");
            }
        })
    }
}

impl CoordinatorProbes {
    /// Replaces the database gauges (so agents and runs that went away leave no series).
    async fn read_fleet(&self, pool: &PgPool) -> crate::store::Result<()> {
        let m = &self.metrics;
        let agents = gauges::agents_by_status(pool).await?;
        let seen = gauges::approved_agents_seen(pool).await?;
        let shards = gauges::shards_of_unfinished_runs(pool).await?;
        m.agents.clear();
        for status in ["pending", "approved", "revoked"] {
            let n = agents.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            m.agents.get_or_create(&StatusLabel { status: status.into() }).set(n);
        }
        m.agent_last_seen_age.clear();
        for a in seen {
            let labels =
                AgentLabels { agent_id: a.id.to_string(), agent_name: a.name, hardware_class: a.hardware_class };
            // An agent that never called has no age to report.
            if let Some(age) = a.age_s {
                m.agent_last_seen_age.get_or_create(&labels).set(age.max(0.0));
            }
        }
        m.shards.clear();
        for (run, status, n) in shards {
            m.shards.get_or_create(&RunShardLabels { run_id: run.to_string(), status }).set(n);
        }
        Ok(())
    }
}
