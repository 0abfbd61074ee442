//! The sweep scheduler. Each due firing creates one sweep instance. With several
//! coordinators, the one holding a Postgres advisory lock schedules, and a firing's instance
//! is unique in the database, so it is created exactly once.

use crate::domain::schedule::Schedule;
use crate::infra::metrics::{Metrics, OutcomeLabel};
use crate::store::{self, sweeps};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Runs due schedules as of `now`, if this coordinator holds the scheduler lock; returns the
/// instances created. Safe to call from several coordinators at once.
pub async fn tick(pool: &sqlx::PgPool, now: DateTime<Utc>) -> store::Result<Vec<Uuid>> {
    tick_counted(pool, now, &Metrics::default()).await
}

/// [`tick`], counting each firing in `metrics` by outcome.
pub async fn tick_counted(pool: &sqlx::PgPool, now: DateTime<Utc>, metrics: &Metrics) -> store::Result<Vec<Uuid>> {
    let mut lock = pool.acquire().await?;
    if !sweeps::try_scheduler_lock(&mut lock).await? {
        return Ok(Vec::new());
    }
    let outcome = run_due(pool, now, metrics).await;
    sweeps::scheduler_unlock(&mut lock).await?;
    outcome
}

async fn run_due(pool: &sqlx::PgPool, now: DateTime<Utc>, metrics: &Metrics) -> store::Result<Vec<Uuid>> {
    let fired = |outcome| metrics.scheduler_firings.get_or_create(&OutcomeLabel { outcome }).inc();
    let mut created = Vec::new();
    for id in sweeps::due(pool, now).await? {
        let mut tx = pool.begin().await?;
        // Locked and re-checked: another coordinator may have handled it meanwhile.
        let Some(d) = sweeps::lock_due(&mut tx, id, now).await? else {
            continue;
        };
        let plan = Schedule::parse(&d.cron, &d.timezone).and_then(|s| s.plan(d.next_fire_at, now, d.missed_policy));
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(sweep = %d.name, error = %e, "schedule cannot be evaluated; left as is");
                continue;
            }
        };
        if let Some(fire) = plan.fire {
            match sweeps::instantiate(&mut tx, id, Some(fire)).await {
                Ok(Some(sweep)) => {
                    fired("created");
                    created.push(sweep)
                }
                Ok(None) => {}
                Err(e) => {
                    fired("failed");
                    tracing::warn!(sweep = %d.name, firing = %fire, "scheduled sweep not started: {e}")
                }
            }
        } else {
            fired("skipped");
            tracing::warn!(sweep = %d.name, missed = %d.next_fire_at, "missed firing skipped (policy skip)");
        }
        sweeps::set_next_fire(&mut tx, id, plan.next).await?;
        tx.commit().await?;
    }
    Ok(created)
}

/// Ticks every `every` until the process ends.
pub async fn run_forever(pool: sqlx::PgPool, every: Duration, metrics: Metrics) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        if let Err(e) = tick_counted(&pool, Utc::now(), &metrics).await {
            tracing::error!(error = %e, "scheduler tick failed");
        }
    }
}
