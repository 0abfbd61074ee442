//! `shards` and `lease_attempts`: handing shards out, renewing, completing.

use super::{Error, Result, stored};
use crate::domain::workload::ChatTurn;
use ipw_proto::kinds::{RunStatus, ShardStatus};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Renews the named leases the agent still holds, on runs still going, and records that
/// the agent was heard from. Returns the shards renewed; a named shard not among them is
/// lost. A lease the agent does not name is not renewed, and runs out.
pub async fn renew(pool: &PgPool, agent_id: Uuid, ttl: Duration, shard_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "WITH seen AS (UPDATE agents SET last_seen_at = now() WHERE id = $1)
         UPDATE shards s SET lease_expires_at = now() + make_interval(secs => $2)
         FROM runs r
         WHERE r.id = s.run_id AND r.status IN ('pending', 'running')
           AND s.lease_owner = $1 AND s.status = 'leased' AND s.id = ANY($3)
         RETURNING s.id",
        agent_id,
        ttl.as_secs_f64(),
        shard_ids,
    )
    .fetch_all(pool)
    .await?)
}

/// A query the engine failed (not the request): not an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFailure {
    /// The shard it was leased in.
    pub shard_id: Uuid,
    /// The query.
    pub query_id: i64,
    /// Which repetition.
    pub repetition: i32,
    /// What the engine did.
    pub error: String,
}

/// What a release did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Leases given back.
    pub leases: u64,
    /// Queries that reached `failure_limit` and were recorded as errors.
    pub recorded_as_errors: u64,
}

/// Gives the named leases the agent holds back to the queue now, and counts each engine
/// failure of their queries. A query the engine has failed `failure_limit` times is recorded
/// as a result with that error, so its run can finish. Failures of shards the agent does not
/// hold are ignored.
pub async fn release(
    pool: &PgPool,
    agent_id: Uuid,
    shard_ids: &[Uuid],
    failures: &[EngineFailure],
    failure_limit: i32,
) -> Result<Released> {
    let mut tx = pool.begin().await?;
    let recorded_as_errors = if failures.is_empty() {
        0
    } else {
        count_engine_failures(&mut tx, agent_id, shard_ids, failures, failure_limit).await?
    };
    sqlx::query!(
        "UPDATE lease_attempts la SET released_at = now()
         FROM shards s
         WHERE s.id = la.shard_id AND la.attempt = s.attempts
           AND s.lease_owner = $1 AND s.status = 'leased' AND s.id = ANY($2)",
        agent_id,
        shard_ids,
    )
    .execute(&mut *tx)
    .await?;
    // Back to the queue: pending and unowned, so no heartbeat can renew it and a retried
    // release changes nothing.
    let leases = sqlx::query!(
        "UPDATE shards SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
         WHERE lease_owner = $1 AND status = 'leased' AND id = ANY($2)",
        agent_id,
        shard_ids,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Released { leases, recorded_as_errors })
}

/// Counts engine failures; returns how many queries reached the limit and were recorded.
async fn count_engine_failures(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    named: &[Uuid],
    failures: &[EngineFailure],
    failure_limit: i32,
) -> Result<u64> {
    let shard_ids: Vec<Uuid> = failures.iter().map(|f| f.shard_id).collect();
    let query_ids: Vec<i64> = failures.iter().map(|f| f.query_id).collect();
    let repetitions: Vec<i32> = failures.iter().map(|f| f.repetition).collect();
    let errors: Vec<String> = failures.iter().map(|f| f.error.clone()).collect();
    let recorded = sqlx::query_scalar!(
        r#"WITH counted AS (
               INSERT INTO engine_failures (run_id, query_id, repetition, failures, last_error, last_agent)
               SELECT DISTINCT ON (s.run_id, u.q, u.r) s.run_id, u.q, u.r, 1, u.e, $1
               FROM UNNEST($2::uuid[], $3::bigint[], $4::int[], $5::text[]) AS u(shard, q, r, e)
               JOIN shards s ON s.id = u.shard AND s.lease_owner = $1 AND s.status = 'leased' AND s.id = ANY($7)
               JOIN runs r ON r.id = s.run_id AND u.r >= 0 AND u.r < r.repetitions
               JOIN run_queries rq ON rq.run_id = s.run_id AND rq.query_id = u.q AND rq.shard_id = s.id
               ON CONFLICT (run_id, query_id, repetition) DO UPDATE
                   SET failures = engine_failures.failures + 1, last_error = EXCLUDED.last_error,
                       last_agent = EXCLUDED.last_agent, last_at = now()
               RETURNING run_id, query_id, repetition, failures, last_error),
           recorded AS (
               INSERT INTO results (run_id, shard_id, query_id, repetition, agent_id, started_at, latency_s,
                                    tokens_in, tokens_out, response, error, power_source, energy_null_reason)
               SELECT c.run_id, rq.shard_id, c.query_id, c.repetition, $1, now(), 0, 0, 0, '',
                      format('the engine failed on this query %s times; last: %s', c.failures, c.last_error),
                      'none', 'not measured: the engine failed on this query'
               FROM counted c JOIN run_queries rq ON rq.run_id = c.run_id AND rq.query_id = c.query_id
               WHERE c.failures >= $6
               ON CONFLICT (run_id, query_id, repetition) DO NOTHING
               RETURNING id)
           SELECT count(*) AS "recorded!" FROM recorded"#,
        agent_id,
        &shard_ids,
        &query_ids,
        &repetitions,
        &errors,
        failure_limit,
        named,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(recorded as u64)
}

/// Fails shards whose leases ran out `max_attempts` times (leases given back on purpose do not
/// count), with the reason, instead of letting them circulate; a run with nothing left open
/// and a failed shard fails too. Returns the number of shards failed.
pub async fn fail_exhausted(tx: &mut Transaction<'_, Postgres>, max_attempts: u32) -> Result<u64> {
    // Runs are locked before their shards, in the same order as `complete`, so the two never
    // deadlock.
    let runs: Vec<Uuid> = sqlx::query_scalar!(
        r#"SELECT r.id FROM runs r
           WHERE r.id IN (SELECT s.run_id FROM shards s
                          WHERE s.status = 'leased' AND s.lease_expires_at < now()
                            AND (SELECT count(*) FROM lease_attempts la
                                 WHERE la.shard_id = s.id AND la.released_at IS NULL) >= $1)
           ORDER BY r.id
           FOR UPDATE"#,
        max_attempts as i64
    )
    .fetch_all(&mut **tx)
    .await?;
    if runs.is_empty() {
        return Ok(0);
    }
    let failed = sqlx::query!(
        r#"UPDATE shards s
           SET status = 'failed', lease_expires_at = NULL,
               failure_reason = format('its lease ran out %s times without the shard completing (last agent: %s)',
                                       (SELECT count(*) FROM lease_attempts la
                                        WHERE la.shard_id = s.id AND la.released_at IS NULL), a.name)
           FROM agents a
           WHERE a.id = s.lease_owner AND s.run_id = ANY($2) AND s.status = 'leased' AND s.lease_expires_at < now()
             AND (SELECT count(*) FROM lease_attempts la WHERE la.shard_id = s.id AND la.released_at IS NULL) >= $1"#,
        max_attempts as i64,
        &runs
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    for run_id in runs {
        finish_run(tx, run_id).await?;
    }
    Ok(failed)
}

/// Ends a run (locked by the caller) once none of its shards is pending or leased: `failed`
/// if a shard failed, else `completed`. Only a run still going ends: a cancelled run keeps its
/// status. A completed run repeated until its figure settles may start its next repeat
/// (`repeat_if_unsettled`). Returns the status it ended with, if it did.
async fn finish_run(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<RunStatus>> {
    let ended: Option<String> = sqlx::query_scalar!(
        "UPDATE runs r
         SET status = CASE WHEN EXISTS (SELECT 1 FROM shards WHERE run_id = r.id AND status = 'failed')
                           THEN 'failed' ELSE 'completed' END,
             completed_at = now()
         WHERE r.id = $1 AND r.status IN ('pending', 'running')
           AND NOT EXISTS (SELECT 1 FROM shards WHERE run_id = r.id AND status IN ('pending', 'leased'))
         RETURNING r.status",
        run_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let ended = ended.map(|s| stored(&s)).transpose()?;
    if ended == Some(RunStatus::Completed)
        && let Some(next) = sqlx::query_scalar!("SELECT repeat_if_unsettled($1)", run_id).fetch_one(conn).await?
    {
        tracing::info!(run = %run_id, repeat = %next, "the run's figure has not settled: repeating it");
    }
    Ok(ended)
}

/// A shard just leased.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The shard.
    pub id: Uuid,
    /// Its run.
    pub run_id: Uuid,
    /// Its position in the run.
    pub shard_index: i32,
    /// Which lease of the shard this is (1 for the first).
    pub attempts: i32,
    /// When the lease runs out without a heartbeat.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The shard's previous lease had run out.
    pub reclaimed: bool,
}

/// Leases a shard of the oldest active run this agent may run (only of `only_run`, when
/// given: a session leasing ahead): its hardware class, labels and memory match, and its
/// engine serves the run's model. In each run, a lease that ran out goes first, then the next
/// pending shard (`sql/lease_in_run.sql`). Records the attempt.
pub async fn lease_next(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    ttl: Duration,
    available_models: &[String],
    only_run: Option<Uuid>,
) -> Result<Option<Leased>> {
    for run_id in runs_for(tx, agent_id, available_models, only_run).await? {
        let shard = sqlx::query_file_as!(Leased, "src/store/sql/lease_in_run.sql", run_id, agent_id, ttl.as_secs_f64())
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(s) = shard {
            sqlx::query!(
                "INSERT INTO lease_attempts (shard_id, attempt, agent_id) VALUES ($1, $2, $3)",
                s.id,
                s.attempts,
                agent_id
            )
            .execute(&mut **tx)
            .await?;
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// The active runs this agent may run, oldest first.
async fn runs_for(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    available_models: &[String],
    only_run: Option<Uuid>,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        r#"WITH me AS (
             SELECT a.hardware_class, a.labels,
                    coalesce((SELECT sum(memory_bytes) FROM accelerators WHERE agent_id = a.id)::bigint,
                             a.memory_bytes) AS capacity
             FROM agents a WHERE a.id = $1)
           SELECT r.id FROM runs r
           JOIN models m ON m.id = r.model_id
           LEFT JOIN sweeps sw ON sw.id = r.sweep_id
           CROSS JOIN me
           WHERE r.status IN ('pending', 'running')
             AND (sw.id IS NULL OR sw.status = 'active')
             AND (r.hardware_class IS NULL OR r.hardware_class = me.hardware_class)
             AND me.labels @> r.label_selector
             AND m.name = ANY($2::text[])
             AND (r.model_memory_bytes IS NULL OR r.model_memory_bytes <= me.capacity)
             AND ($3::uuid IS NULL OR r.id = $3)
           ORDER BY r.created_at, r.id"#,
        agent_id,
        available_models,
        only_run,
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// How a run's queries are to be run, as a lease carries it.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The model, as the engine serves it.
    pub model: String,
    /// Queries in flight at once.
    pub concurrency: i32,
    /// Completion budget.
    pub max_tokens: i32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: f32,
    /// Times each query is run.
    pub repetitions: i32,
    /// Unmeasured queries first.
    pub warmup: i32,
    /// closed, poisson or constant.
    pub load_pattern: String,
    /// Open loop: arrivals per second.
    pub rate_per_s: Option<f64>,
    /// Seeds Poisson arrivals.
    pub arrival_seed: i64,
}

/// Marks the run running (the first lease starts it) and returns its settings.
pub async fn start_run(conn: &mut PgConnection, run_id: Uuid) -> Result<RunSettings> {
    Ok(sqlx::query_as!(
        RunSettings,
        "WITH started AS (UPDATE runs SET status = 'running', started_at = now() WHERE id = $1 AND status = 'pending')
         SELECT m.name AS model, r.concurrency, r.max_tokens, r.temperature, r.top_p, r.repetitions, r.warmup,
                r.load_pattern, r.rate_per_s, r.arrival_seed
         FROM runs r JOIN models m ON m.id = r.model_id WHERE r.id = $1",
        run_id
    )
    .fetch_one(conn)
    .await?)
}

/// A query of a shard, as the prompt is built from it.
#[derive(Debug, Clone)]
pub struct ShardQuery {
    /// The query.
    pub id: i64,
    /// Its prompt.
    pub prompt: String,
    /// Its options, for multiple choice (a JSON array).
    pub choices: Option<serde_json::Value>,
    /// Its category.
    pub category: Option<String>,
    /// A chat query's own conversation, sent as it is.
    pub messages: Option<Json<Vec<ChatTurn>>>,
    /// Its own completion budget, if it has one.
    pub max_tokens: Option<i32>,
}

/// The shard's queries in sample order, and the (query, repetition) pairs an earlier attempt
/// already committed: a re-leased shard hands out only the rest.
pub async fn shard_work(conn: &mut PgConnection, shard_id: Uuid) -> Result<(Vec<ShardQuery>, HashSet<(i64, i32)>)> {
    let queries = sqlx::query_as!(
        ShardQuery,
        r#"SELECT q.id, q.prompt, q.choices, q.category, q.messages AS "messages: Json<Vec<ChatTurn>>", q.max_tokens
         FROM run_queries rq JOIN queries q ON q.id = rq.query_id
         WHERE rq.shard_id = $1 ORDER BY rq.position"#,
        shard_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let done = sqlx::query!("SELECT query_id, repetition FROM results WHERE shard_id = $1", shard_id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.query_id, r.repetition))
        .collect();
    Ok((queries, done))
}

/// Whether `agent_id` ever held a lease on the shard.
pub async fn ever_leased_shard(conn: &mut PgConnection, shard_id: Uuid, agent_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM lease_attempts WHERE shard_id = $1 AND agent_id = $2) AS "leased!""#,
        shard_id,
        agent_id
    )
    .fetch_one(conn)
    .await?)
}

/// Whether `agent_id` ever held a lease on a shard of the run.
pub async fn ever_leased_run(pool: &PgPool, run_id: Uuid, agent_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM lease_attempts la JOIN shards s ON s.id = la.shard_id
                          WHERE s.run_id = $1 AND la.agent_id = $2) AS "leased!""#,
        run_id,
        agent_id
    )
    .fetch_one(pool)
    .await?)
}

/// Completes a shard leased to `agent_id` once every result is committed, and its run once
/// every shard is. Returns whether this completed the run. Completing twice is harmless.
pub async fn complete(pool: &PgPool, shard_id: Uuid, agent_id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    // The run is locked first: two agents completing its last two shards at once take turns,
    // and the second sees the first's shard completed, so one of them completes the run.
    let run_id = sqlx::query_scalar!(
        "SELECT r.id FROM runs r JOIN shards s ON s.run_id = r.id WHERE s.id = $1 FOR UPDATE OF r",
        shard_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no shard {shard_id}")))?;
    let shard = sqlx::query!(
        "SELECT s.status, s.lease_owner, r.repetitions,
                (SELECT count(*) FROM run_queries WHERE shard_id = s.id) AS \"queries!\",
                (SELECT count(*) FROM results WHERE shard_id = s.id) AS \"results!\"
         FROM shards s JOIN runs r ON r.id = s.run_id WHERE s.id = $1 FOR UPDATE OF s",
        shard_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if shard.lease_owner != Some(agent_id) {
        return Err(Error::Forbidden(format!("shard {shard_id} is not leased to this agent")));
    }
    if stored::<ShardStatus>(&shard.status)? != ShardStatus::Completed {
        let expected = shard.queries * i64::from(shard.repetitions);
        if shard.results < expected {
            return Err(Error::Precondition(format!(
                "shard {shard_id} has {} of {expected} results committed; upload the rest first",
                shard.results
            )));
        }
        sqlx::query!(
            "UPDATE shards SET status = 'completed', completed_by = $2, completed_at = now(), lease_expires_at = NULL
             WHERE id = $1",
            shard_id,
            agent_id
        )
        .execute(&mut *tx)
        .await?;
    }
    let ended = finish_run(&mut tx, run_id).await?;
    tx.commit().await?;
    let run_completed = ended == Some(RunStatus::Completed);
    if run_completed {
        tracing::info!(run = %run_id, "run completed");
    }
    Ok(run_completed)
}
