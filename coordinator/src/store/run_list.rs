//! Listing runs and cancelling them.

use super::{Error, Result, stored};
use ipw_proto::kinds::RunStatus;
use ipw_proto::v1::RunRow;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Which runs `ipw run list` shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<RunStatus>,
    /// Only this workload, by name or id.
    pub workload: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this sweep's runs.
    pub sweep: Option<Uuid>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Runs matching `f`, newest first, with their shards' progress.
pub async fn list(pool: &PgPool, f: &RunFilter) -> Result<Vec<RunRow>> {
    let statuses: Vec<String> = f.statuses.iter().map(|s| s.as_str().to_owned()).collect();
    let rows = sqlx::query!(
        r#"SELECT r.id, w.name AS workload, m.name AS model, r.status, r.hardware_class, r.concurrency,
                  r.sample_size, r.created_at, r.sweep_id,
                  count(s.id) AS "shards!",
                  count(s.id) FILTER (WHERE s.status = 'completed') AS "completed!",
                  count(s.id) FILTER (WHERE s.status = 'leased') AS "leased!"
           FROM runs r
           JOIN workloads w ON w.id = r.workload_id
           JOIN models m ON m.id = r.model_id
           LEFT JOIN shards s ON s.run_id = r.id
           WHERE (cardinality($1::text[]) = 0 OR r.status = ANY($1))
             AND ($2::text IS NULL OR w.name = $2 OR w.id::text = $2)
             AND ($3::text IS NULL OR m.name = $3)
             AND ($4::uuid IS NULL OR r.sweep_id = $4)
           GROUP BY r.id, w.name, m.name
           ORDER BY r.created_at DESC, r.id
           LIMIT $5"#,
        &statuses,
        f.workload,
        f.model,
        f.sweep,
        f.limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RunRow {
            run_id: r.id.to_string(),
            workload: r.workload,
            model: r.model,
            status: r.status,
            hardware_class: r.hardware_class.unwrap_or_default(),
            concurrency: r.concurrency as u32,
            queries: r.sample_size as u32,
            shards: r.shards as u32,
            shards_completed: r.completed as u32,
            shards_leased: r.leased as u32,
            created_unix_us: super::unix_us(r.created_at),
            sweep_id: r.sweep_id.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect())
}

/// What a cancel did.
#[derive(Debug, Clone, Copy)]
pub struct Cancelled {
    /// The run's status before.
    pub previous: RunStatus,
    /// Leases released.
    pub leases_released: u64,
}

/// Cancels a run still going: it takes no more leases, and the leases held are released, so
/// the agents' next heartbeat tells them to stop its queries. What was committed stays.
pub async fn cancel(tx: &mut Transaction<'_, Postgres>, run_id: Uuid) -> Result<Cancelled> {
    let current: String = sqlx::query_scalar!("SELECT status FROM runs WHERE id = $1 FOR UPDATE", run_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no run {run_id}")))?;
    let previous: RunStatus = stored(&current)?;
    if previous.is_final() {
        return Err(Error::Precondition(format!("run {run_id} is {previous} already: there is nothing to cancel")));
    }
    sqlx::query!("UPDATE runs SET status = 'cancelled', completed_at = now() WHERE id = $1", run_id)
        .execute(&mut **tx)
        .await?;
    let leases_released = release_leases(tx, &[run_id]).await?;
    Ok(Cancelled { previous, leases_released })
}

/// Releases every lease held on shards of `runs` (cancelled runs): the attempts end, the
/// shards return to pending and unowned. (Heartbeats renew no lease of a cancelled run in any
/// case; releasing also frees the shards at once, and refuses their completion.)
async fn release_leases(tx: &mut Transaction<'_, Postgres>, runs: &[Uuid]) -> Result<u64> {
    sqlx::query!(
        "UPDATE lease_attempts la SET released_at = now()
         FROM shards s
         WHERE s.id = la.shard_id AND la.attempt = s.attempts AND la.released_at IS NULL
           AND s.status = 'leased' AND s.run_id = ANY($1)",
        runs,
    )
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query!(
        "UPDATE shards SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
         WHERE status = 'leased' AND run_id = ANY($1)",
        runs,
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
