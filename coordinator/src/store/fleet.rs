//! `agent_live`: each agent's latest heartbeat state, and the fleet page's view of every agent.

use super::{Result, stored};
use crate::domain::fleet::{Accelerator, AgentLive, CurrentLease, LiveState, PowerNow, Reported};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Replaces the agent's latest state with `state`, which arrived now. The rate of queries is
/// the agent's counter's growth since its previous heartbeat over the time between them; a
/// counter that went back (the agent restarted) gives no rate until the next one.
pub async fn record_live(pool: &PgPool, agent_id: Uuid, state: &LiveState) -> Result<()> {
    sqlx::query!(
        "INSERT INTO agent_live AS l (agent_id, reported_at, heartbeat_s, in_flight, queries_done, power, sample_hz)
         VALUES ($1, clock_timestamp(), $2, $3, $4, $5, $6)
         ON CONFLICT (agent_id) DO UPDATE SET
             reported_at = EXCLUDED.reported_at,
             heartbeat_s = EXCLUDED.heartbeat_s,
             in_flight = EXCLUDED.in_flight,
             queries_done = EXCLUDED.queries_done,
             queries_per_s = CASE
                 WHEN EXCLUDED.queries_done >= l.queries_done AND EXCLUDED.reported_at > l.reported_at
                 THEN (EXCLUDED.queries_done - l.queries_done)
                      / extract(epoch FROM EXCLUDED.reported_at - l.reported_at)::float8
             END,
             power = EXCLUDED.power,
             sample_hz = EXCLUDED.sample_hz",
        agent_id,
        state.heartbeat_s,
        state.in_flight,
        state.queries_done,
        Json(&state.power) as _,
        state.sample_hz,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Every agent, in the order they joined, with its accelerators, the leases it holds now
/// (not run out) and its latest reported state: the fleet page's data, in two queries
/// whatever the fleet's size.
pub async fn live(pool: &PgPool) -> Result<Vec<AgentLive>> {
    let rows = sqlx::query!(
        r#"SELECT a.id, a.name, a.labels AS "labels: Json<BTreeMap<String, String>>", a.hardware_class, a.status,
                  a.last_seen_at,
                  (SELECT coalesce(jsonb_agg(jsonb_build_object('vendor', x.vendor, 'model', x.model,
                                                                'memory_bytes', x.memory_bytes) ORDER BY x.idx), '[]')
                   FROM accelerators x WHERE x.agent_id = a.id) AS "accelerators!: Json<Vec<Accelerator>>",
                  l.reported_at AS "reported_at?", l.heartbeat_s AS "heartbeat_s?", l.in_flight AS "in_flight?",
                  l.queries_per_s, l.power AS "power?: Json<Vec<PowerNow>>", l.sample_hz
           FROM agents a LEFT JOIN agent_live l ON l.agent_id = a.id
           ORDER BY a.joined_at, a.id"#
    )
    .fetch_all(pool)
    .await?;
    let mut leases = current_leases(pool).await?;
    rows.into_iter()
        .map(|r| {
            let reported = match (r.reported_at, r.heartbeat_s, r.in_flight, r.power) {
                (Some(reported_at), Some(heartbeat_s), Some(in_flight), Some(Json(power))) => Some(Reported {
                    reported_at,
                    heartbeat_s,
                    in_flight,
                    queries_per_s: r.queries_per_s,
                    power,
                    sample_hz: r.sample_hz,
                }),
                _ => None,
            };
            Ok(AgentLive {
                id: r.id,
                name: r.name,
                labels: r.labels.0,
                hardware_class: r.hardware_class,
                accelerators: r.accelerators.0,
                status: stored(&r.status)?,
                last_seen_at: r.last_seen_at,
                leases: leases.remove(&r.id).unwrap_or_default(),
                reported,
            })
        })
        .collect()
}

/// The leases held now, by agent, soonest to run out first. Leased shards are few (a few per
/// agent) and indexed by expiry (`shards_leased_expiry_idx`).
async fn current_leases(pool: &PgPool) -> Result<HashMap<Uuid, Vec<CurrentLease>>> {
    let rows = sqlx::query!(
        r#"SELECT s.lease_owner AS "agent_id!", s.run_id, m.name AS model, s.shard_index,
                  s.lease_expires_at AS "expires_at!: DateTime<Utc>"
           FROM shards s JOIN runs r ON r.id = s.run_id JOIN models m ON m.id = r.model_id
           WHERE s.status = 'leased' AND s.lease_expires_at > now()
           ORDER BY s.lease_expires_at, s.run_id, s.shard_index"#
    )
    .fetch_all(pool)
    .await?;
    let mut by_agent: HashMap<Uuid, Vec<CurrentLease>> = HashMap::new();
    for r in rows {
        by_agent.entry(r.agent_id).or_default().push(CurrentLease {
            run_id: r.run_id,
            model: r.model,
            shard_index: r.shard_index,
            expires_at: r.expires_at,
        });
    }
    Ok(by_agent)
}
