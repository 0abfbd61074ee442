//! What the operations listener reads from the database: the fleet's gauges, and whether the
//! schema is up to date.

use super::Result;
use sqlx::PgPool;
use uuid::Uuid;

/// An approved agent and how long ago it was last heard from.
#[derive(Debug, Clone)]
pub struct AgentSeen {
    /// The agent.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its hardware class.
    pub hardware_class: String,
    /// Seconds since it last called; `None` if it never has.
    pub age_s: Option<f64>,
}

/// Agents per status.
pub async fn agents_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(r#"SELECT status, count(*) AS "n!" FROM agents GROUP BY status"#).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// Every approved agent with the age of its last call.
pub async fn approved_agents_seen(pool: &PgPool) -> Result<Vec<AgentSeen>> {
    Ok(sqlx::query_as!(
        AgentSeen,
        r#"SELECT id, name, hardware_class,
                  extract(epoch FROM now() - last_seen_at)::float8 AS age_s
           FROM agents WHERE status = 'approved'"#
    )
    .fetch_all(pool)
    .await?)
}

/// Shards per status of each run still pending or running.
pub async fn shards_of_unfinished_runs(pool: &PgPool) -> Result<Vec<(Uuid, String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT s.run_id, s.status, count(*) AS "n!"
           FROM shards s JOIN runs r ON r.id = s.run_id
           WHERE r.status IN ('pending', 'running')
           GROUP BY s.run_id, s.status"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.run_id, r.status, r.n)).collect())
}

/// The migration versions applied successfully.
pub async fn applied_migrations(pool: &PgPool) -> Result<Vec<i64>> {
    // Read at run time: `_sqlx_migrations` is sqlx's table, not part of the schema.
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await?)
}
