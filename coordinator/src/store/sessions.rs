//! `measurement_sessions`, `session_idle` and `session_power_series`: what an agent measured
//! while working on a run, uploaded every few seconds as it goes.

use super::{Error, Result};
use crate::domain::telemetry::{PowerOverTime, ValidSession};
use ipw_proto::v1::SessionTelemetry;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Records a session's telemetry: the session (its load figures replaced by the latest), its
/// idle baselines and its series chunks. Repeating an upload changes nothing; a chunk sent
/// again replaces the earlier copy. Another agent's session is refused.
pub async fn upsert(pool: &PgPool, agent_id: Uuid, s: &ValidSession, t: &SessionTelemetry) -> Result<()> {
    let l = &s.load;
    let mut tx = pool.begin().await?;
    let mine = sqlx::query_scalar!(
        r#"INSERT INTO measurement_sessions AS m
               (id, run_id, agent_id, clock_zero, sample_hz, attribution, sources, null_reason, load_pattern, target,
                steady_from_s, steady_to_s, steady_load_mean, paused_s, steady_energy_j, steady_tokens_out,
                query_time_s, covered_time_s, late_starts, arrivals, warmup_queries, finished, ipw_scope)
           VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                   $20, $21, $22, $23)
           ON CONFLICT (id) DO UPDATE SET
               steady_from_s = EXCLUDED.steady_from_s, steady_to_s = EXCLUDED.steady_to_s,
               steady_load_mean = EXCLUDED.steady_load_mean, paused_s = EXCLUDED.paused_s,
               steady_energy_j = EXCLUDED.steady_energy_j, steady_tokens_out = EXCLUDED.steady_tokens_out,
               query_time_s = EXCLUDED.query_time_s, covered_time_s = EXCLUDED.covered_time_s,
               late_starts = EXCLUDED.late_starts, arrivals = EXCLUDED.arrivals,
               warmup_queries = EXCLUDED.warmup_queries, finished = m.finished OR EXCLUDED.finished,
               updated_at = now()
           WHERE m.agent_id = EXCLUDED.agent_id AND m.run_id = EXCLUDED.run_id AND NOT m.finished
           RETURNING 1 AS "one!""#,
        s.session_id,
        s.run_id,
        agent_id,
        s.clock_zero,
        t.sample_hz,
        t.attribution,
        super::telemetry::sources_json(&t.sources),
        t.null_reason,
        l.pattern,
        l.target,
        l.steady_from_s,
        l.steady_to_s,
        l.steady_load_mean,
        l.paused_s,
        l.steady_energy_j,
        l.steady_tokens_out as i64,
        l.query_time_s,
        l.covered_time_s,
        l.late_starts as i64,
        l.arrivals as i64,
        l.warmup_queries as i32,
        t.finished,
        s.ipw_scope.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if mine.is_none() {
        let owner = sqlx::query_scalar!("SELECT agent_id FROM measurement_sessions WHERE id = $1", s.session_id)
            .fetch_one(&mut *tx)
            .await?;
        if owner != agent_id {
            return Err(Error::Forbidden(format!("session {} belongs to another agent", s.session_id)));
        }
        return Ok(()); // already finished: a repeated final upload
    }
    insert_series(&mut tx, s.session_id, t).await?;
    tx.commit().await?;
    Ok(())
}

/// The session's idle baselines and series chunks; a chunk sent again replaces the earlier copy.
async fn insert_series(tx: &mut Transaction<'_, Postgres>, session_id: Uuid, t: &SessionTelemetry) -> Result<()> {
    for i in &t.idle {
        sqlx::query!(
            "INSERT INTO session_idle (session_id, from_s, seconds, power_w) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            session_id,
            i.from_s,
            i.seconds,
            i.power_w
        )
        .execute(&mut **tx)
        .await?;
    }
    for g in &t.gaps {
        sqlx::query!(
            "INSERT INTO session_power_gaps (session_id, source_index, from_s, to_s, reason) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session_id, source_index, from_s) DO UPDATE SET to_s = greatest(session_power_gaps.to_s, EXCLUDED.to_s)",
            session_id,
            g.source_index as i32,
            g.from_s,
            g.to_s,
            g.reason
        )
        .execute(&mut **tx)
        .await?;
    }
    for c in &t.chunks {
        sqlx::query!(
            "INSERT INTO session_power_series (session_id, source_index, chunk_index, t_s, energy_j)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session_id, source_index, chunk_index) DO UPDATE SET t_s = EXCLUDED.t_s, energy_j = EXCLUDED.energy_j",
            session_id,
            c.source_index as i32,
            c.chunk_index as i32,
            &c.t_s,
            &c.energy_j
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The power series of every session of `run_id`, with its query and steady windows.
pub async fn power_over_time(pool: &PgPool, run_id: Uuid) -> Result<Vec<PowerOverTime>> {
    let sessions = sqlx::query!(
        r#"SELECT s.id, a.name AS agent, s.sources, s.null_reason, s.steady_from_s, s.steady_to_s, s.clock_zero
           FROM measurement_sessions s JOIN agents a ON a.id = s.agent_id
           WHERE s.run_id = $1 ORDER BY a.name, s.started_at"#,
        run_id
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let chunks = sqlx::query!(
            "SELECT source_index, t_s, energy_j FROM session_power_series WHERE session_id = $1
             ORDER BY source_index, chunk_index",
            s.id
        )
        .fetch_all(pool)
        .await?;
        let names: Vec<String> = s
            .sources
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|src| {
                        format!("{} ({})", src["name"].as_str().unwrap_or("?"), src["scope"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sources: Vec<(String, Vec<(f64, f64)>)> = names.into_iter().map(|n| (n, Vec::new())).collect();
        for c in chunks {
            if let Some((_, points)) = sources.get_mut(c.source_index as usize) {
                points.extend(c.t_s.into_iter().zip(c.energy_j));
            }
        }
        let queries = match s.clock_zero {
            Some(zero) => sqlx::query!(
                r#"SELECT extract(epoch FROM started_at - $2)::float8 AS "from!", latency_s
                   FROM results WHERE session_id = $1 ORDER BY started_at"#,
                s.id,
                zero
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|q| (q.from, q.from + q.latency_s))
            .collect(),
            None => Vec::new(),
        };
        let steady = s.steady_from_s.zip(s.steady_to_s);
        out.push(PowerOverTime {
            session_id: s.id,
            agent: s.agent,
            clock_zero: s.clock_zero,
            sources,
            queries,
            steady,
            null_reason: s.null_reason,
        });
    }
    Ok(out)
}
