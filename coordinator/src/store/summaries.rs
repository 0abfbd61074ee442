//! `run_summaries`: each finished run's `ipw_summary` rows, stored per scoring so a report
//! does not rescan its results (migration 0016). Triggers drop a run's rows when its results
//! or scores change; [`refresh`] stores them again.

use super::Result;
use sqlx::PgPool;
use uuid::Uuid;

/// Finished runs with results whose rows under their latest scoring are not stored, oldest
/// first, at most `limit`.
pub async fn missing(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT r.id FROM runs r JOIN chosen_scorings cs ON cs.run_id = r.id
           WHERE r.status IN ('completed', 'failed', 'cancelled')
             AND EXISTS (SELECT 1 FROM results WHERE run_id = r.id)
             AND NOT EXISTS (SELECT 1 FROM run_summaries s WHERE s.run_id = r.id AND s.scoring_id = cs.scoring_id)
           ORDER BY r.completed_at NULLS FIRST, r.id
           LIMIT $1"#,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Stores the run's rows under its latest scoring (`refresh_run_summary`); returns how many.
pub async fn refresh(pool: &PgPool, run_id: Uuid) -> Result<i32> {
    Ok(sqlx::query_scalar!(r#"SELECT refresh_run_summary($1) AS "rows!""#, run_id).fetch_one(pool).await?)
}
