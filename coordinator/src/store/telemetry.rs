//! `shard_telemetry` and `power_series`: a shard's power sources, idle baseline and sampled
//! energy series.

use super::{Error, Result, on_unique_violation};
use ipw_proto::v1::{PowerSourceInfo, ShardTelemetry};
use sqlx::PgConnection;
use uuid::Uuid;

/// The sources as the telemetry tables store them: `[{kind, scope, name, details,
/// stated_error, in_ipw_scope}]`, in series order.
pub fn sources_json(sources: &[PowerSourceInfo]) -> serde_json::Value {
    sources
        .iter()
        .map(|s| {
            serde_json::json!({
                "kind": s.kind, "scope": s.scope, "name": s.name,
                "details": serde_json::from_str::<serde_json::Value>(&s.details_json).unwrap_or(serde_json::Value::Null),
                "stated_error": s.stated_error, "in_ipw_scope": s.in_ipw_scope,
            })
        })
        .collect()
}

/// Stores one shard's telemetry from one agent, for the agent's latest lease attempt on it. A
/// retry finds the first upload in place and changes nothing. `t` must have passed
/// `domain::telemetry::validate`.
pub async fn insert(conn: &mut PgConnection, shard_id: Uuid, agent_id: Uuid, t: &ShardTelemetry) -> Result<()> {
    let clock_zero = chrono::DateTime::from_timestamp_micros(t.clock_zero_unix_us)
        .ok_or_else(|| Error::Invalid("clock_zero_unix_us is not a valid time".into()))?;
    let attempt = sqlx::query_scalar!(
        r#"SELECT max(attempt) AS "attempt!" FROM lease_attempts WHERE shard_id = $1 AND agent_id = $2"#,
        shard_id,
        agent_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let fresh = sqlx::query!(
        "INSERT INTO shard_telemetry (shard_id, agent_id, attempt, idle_power_w, idle_seconds, sample_hz, attribution,
                                      sources, clock_zero, active_energy_j)
         VALUES ($1, $2, $10, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (shard_id, agent_id, attempt) DO NOTHING",
        shard_id,
        agent_id,
        t.idle_power_w,
        t.idle_seconds,
        t.sample_hz,
        t.attribution,
        sources_json(&t.sources),
        clock_zero,
        t.active_energy_j,
        attempt,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if !fresh {
        return Ok(());
    }
    for c in &t.chunks {
        sqlx::query!(
            "INSERT INTO power_series (shard_id, agent_id, attempt, source_index, chunk_index, t_s, energy_j)
             VALUES ($1, $2, $7, $3, $4, $5, $6)",
            shard_id,
            agent_id,
            c.source_index as i32,
            c.chunk_index as i32,
            &c.t_s,
            &c.energy_j,
            attempt
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            on_unique_violation(e, || {
                Error::Invalid(format!("chunk {} of source {} appears twice", c.chunk_index, c.source_index))
            })
        })?;
    }
    Ok(())
}
