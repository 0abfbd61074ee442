//! `runs`, `models`, `shards` and `run_queries`: creating runs (the seeded sample of a
//! workload, cut into shards), used by `ipw run create` and by every sweep instance, and
//! reading a run's progress.

use super::workloads::Workload;
use super::{Error, Result};
use crate::domain::Invalid;
use crate::domain::sampling::stratified_quotas;
use crate::domain::settings::Settings;
use ipw_proto::v1::{AgentShare, RunInfo, RunStatus, SteadyWindow};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Which queries a new run measures. The sample is drawn in the database, by the statement
/// that writes the run's queries: a million ids never travel to the coordinator and back.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A new seeded draw.
    Draw(Draw),
    /// The same queries, positions and shard layout as an earlier run (the other runs of a
    /// sweep instance), copied by `copy_sample` (migration 0017).
    SameAs {
        /// The run copied.
        run_id: Uuid,
        /// How many queries it holds.
        size: i64,
    },
}

/// The seeded sample of `size` queries of `workload_id`: ordered by a hash of (seed, query id),
/// so the same seed always gives the same queries whatever the import order, and a smaller
/// sample is a prefix of a larger one. Stratified, each category gets its quota (see
/// [`stratified_quotas`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// The workload drawn from.
    pub workload_id: Uuid,
    /// How many queries.
    pub size: i64,
    /// The seed of the order.
    pub seed: i64,
    /// Stratified: each category (`''` for none) and its quota.
    pub quotas: Option<(Vec<String>, Vec<i64>)>,
}

impl Sample {
    /// How many queries the sample holds.
    pub fn size(&self) -> i64 {
        match self {
            Sample::Draw(Draw { size, .. }) | Sample::SameAs { size, .. } => *size,
        }
    }
}

/// The seeded sample of `n` queries of `workload` (see [`Draw`]), checked against the
/// workload's size; stratified, with each category's quota.
pub async fn sample(conn: &mut PgConnection, workload: &Workload, n: u32, seed: i64, stratify: bool) -> Result<Sample> {
    if n == 0 {
        return Err(Invalid::new("the sample must be at least 1 query").into());
    }
    if i64::from(n) > i64::from(workload.n_queries) {
        return Err(Error::Invalid(format!(
            "a sample of {n} exceeds the {} queries of workload \"{}\"",
            workload.n_queries, workload.name
        )));
    }
    let quotas = if stratify {
        let counts: Vec<(String, i64)> = sqlx::query!(
            r#"SELECT coalesce(category, '') AS "category!", count(*) AS "n!" FROM queries WHERE workload_id = $1
               GROUP BY 1 ORDER BY 1"#,
            workload.id
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| (r.category, r.n))
        .collect();
        Some(stratified_quotas(&counts, i64::from(n)).into_iter().unzip())
    } else {
        None
    };
    Ok(Sample::Draw(Draw { workload_id: workload.id, size: i64::from(n), seed, quotas }))
}

/// Writes the run's shards and its sampled queries, each query in shard `position /
/// shard_size`; returns how many shards.
async fn insert_sample(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    sample: &Sample,
    shard_size: i32,
) -> Result<i64> {
    let shards = (sample.size() + i64::from(shard_size) - 1) / i64::from(shard_size);
    match sample {
        Sample::SameAs { run_id: like, .. } => {
            sqlx::query!("SELECT copy_sample($1, $2)", like, run_id).fetch_one(&mut **tx).await?;
        }
        Sample::Draw(d) => {
            sqlx::query!(
                "INSERT INTO shards (id, run_id, shard_index)
                 SELECT gen_random_uuid(), $1, i FROM generate_series(0, $2 - 1) i",
                run_id,
                shards as i32
            )
            .execute(&mut **tx)
            .await?;
            draw(tx, run_id, d, shard_size).await?;
        }
    }
    Ok(shards)
}

/// The seeded draw itself, set-based: the order, the positions and the shard of each query
/// in one `INSERT ... SELECT`, written in query order so the primary key grows at its end
/// (migration 0017 says why `run_queries` has no per-row checks).
async fn draw(tx: &mut Transaction<'_, Postgres>, run_id: Uuid, d: &Draw, shard_size: i32) -> Result<()> {
    let Draw { workload_id, size, seed, quotas } = d;
    let inserted = match quotas {
        None => sqlx::query!(
            "INSERT INTO run_queries (run_id, query_id, position, shard_id)
             SELECT $1, s.id, s.position, sh.id
             FROM (SELECT id, (row_number() OVER (ORDER BY md5($3::bigint::text || ':' || external_id), id) - 1)::int
                              AS position
                   FROM queries WHERE workload_id = $2
                   ORDER BY md5($3::bigint::text || ':' || external_id), id LIMIT $4) s
             JOIN shards sh ON sh.run_id = $1 AND sh.shard_index = s.position / $5
             ORDER BY s.id",
            run_id,
            workload_id,
            seed,
            size,
            shard_size
        )
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Some((categories, sizes)) => sqlx::query!(
            "INSERT INTO run_queries (run_id, query_id, position, shard_id)
             SELECT $1, s.id, s.position, sh.id
             FROM (SELECT q.id, (row_number() OVER (ORDER BY md5($3::bigint::text || ':' || q.external_id), q.id)
                                 - 1)::int AS position
                   FROM (SELECT id, external_id, coalesce(category, '') AS category,
                                row_number() OVER (PARTITION BY coalesce(category, '')
                                                   ORDER BY md5($3::bigint::text || ':' || external_id), id) AS rn
                         FROM queries WHERE workload_id = $2) q
                   JOIN UNNEST($4::text[], $5::bigint[]) AS u(category, quota) ON u.category = q.category
                   WHERE q.rn <= u.quota) s
             JOIN shards sh ON sh.run_id = $1 AND sh.shard_index = s.position / $6
             ORDER BY s.id",
            run_id,
            workload_id,
            seed,
            categories,
            sizes,
            shard_size
        )
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    if inserted as i64 != *size {
        return Err(Error::Invalid(format!("the sample drew {inserted} queries, not {size}")));
    }
    Ok(())
}

/// Which agents may lease a run's shards, and the sweep it belongs to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement<'a> {
    /// Only agents of this hardware class; `None` for any.
    pub hardware_class: Option<&'a str>,
    /// Only agents carrying all these labels (a JSON object; empty for any).
    pub label_selector: Option<&'a serde_json::Value>,
    /// The sweep instance, if any.
    pub sweep_id: Option<Uuid>,
}

/// Creates one run over `sample`: the model, the run, its ingest scoring, its shards.
pub async fn create(
    tx: &mut Transaction<'_, Postgres>,
    workload: &Workload,
    model: &str,
    seed: i64,
    settings: &Settings,
    sample: &Sample,
    placement: &Placement<'_>,
) -> Result<RunInfo> {
    let Placement { hardware_class, sweep_id, .. } = *placement;
    let label_selector = placement.label_selector.cloned().unwrap_or_else(|| serde_json::json!({}));
    let model = model.trim();
    if model.is_empty() || model.len() > 200 {
        return Err(Invalid::new("a model must be named as the engine serves it (1 to 200 bytes)").into());
    }
    let model_id = sqlx::query_scalar!(
        "INSERT INTO models (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        Uuid::now_v7(),
        model
    )
    .fetch_one(&mut **tx)
    .await?;
    let run_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO runs (id, workload_id, model_id, sample_size, seed, concurrency, shard_size, repetitions,
                           max_tokens, temperature, top_p, warmup, model_memory_bytes, hardware_class, sweep_id,
                           label_selector, load_pattern, rate_per_s, arrival_seed, slo_ttft_s, slo_tpot_s,
                           repeat_until_cv, max_repeats)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                 $22, $23)",
        run_id,
        workload.id,
        model_id,
        sample.size() as i32,
        seed,
        settings.concurrency,
        settings.shard_size,
        settings.repetitions,
        settings.max_tokens,
        settings.temperature,
        settings.top_p,
        settings.warmup,
        settings.model_memory_bytes,
        hardware_class,
        sweep_id,
        label_selector,
        settings.measurement.load_pattern,
        settings.measurement.rate_per_s,
        settings.measurement.arrival_seed,
        settings.measurement.slo_ttft_s,
        settings.measurement.slo_tpot_s,
        settings.measurement.repeat_until_cv,
        settings.measurement.max_repeats,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!("INSERT INTO scorings (id, run_id, kind) VALUES ($1, $2, 'ingest')", Uuid::now_v7(), run_id)
        .execute(&mut **tx)
        .await?;
    let shards = insert_sample(tx, run_id, sample, settings.shard_size).await?;
    tracing::info!(run = %run_id, model, hardware_class, queries = sample.size(), shards, "run created");
    Ok(RunInfo {
        run_id: run_id.to_string(),
        workload: workload.name.clone(),
        model: model.to_owned(),
        queries: sample.size() as u32,
        shards: shards as u32,
    })
}

/// The run's identity and size, or NotFound.
pub async fn info(pool: &PgPool, run_id: Uuid) -> Result<RunInfo> {
    let r = sqlx::query!(
        r#"SELECT w.name AS workload, m.name AS model,
                  r.sample_size::bigint AS "queries!",
                  (SELECT count(*) FROM shards WHERE run_id = r.id) AS "shards!"
           FROM runs r JOIN workloads w ON w.id = r.workload_id JOIN models m ON m.id = r.model_id
           WHERE r.id = $1"#,
        run_id
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no run {run_id}")))?;
    Ok(RunInfo {
        run_id: run_id.to_string(),
        workload: r.workload,
        model: r.model,
        queries: r.queries as u32,
        shards: r.shards as u32,
    })
}

/// A run's progress: shards by state, results, errors, each agent's share and why shards
/// failed.
pub async fn status(pool: &PgPool, run_id: Uuid) -> Result<RunStatus> {
    let run = info(pool, run_id).await?;
    let s = sqlx::query!(
        r#"SELECT r.status, r.created_at, r.repetitions,
                  (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'pending') AS "pending!",
                  (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'leased') AS "leased!",
                  (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'completed') AS "completed!",
                  (SELECT count(*) FROM shards WHERE run_id = r.id AND status = 'failed') AS "failed!",
                  (SELECT count(*) FROM results WHERE run_id = r.id) AS "results!",
                  (SELECT count(*) FROM results WHERE run_id = r.id AND error IS NOT NULL) AS "errors!",
                  (SELECT count(*) FROM duplicate_attempts WHERE run_id = r.id) AS "duplicate_attempts!"
           FROM runs r WHERE r.id = $1"#,
        run_id
    )
    .fetch_one(pool)
    .await?;
    Ok(RunStatus {
        expected_results: u64::from(run.queries) * s.repetitions as u64,
        run: Some(run),
        status: s.status,
        results: s.results as u64,
        errors: s.errors as u64,
        shards_pending: s.pending as u32,
        shards_leased: s.leased as u32,
        shards_completed: s.completed as u32,
        shards_failed: s.failed as u32,
        agents: agent_shares(pool, run_id).await?,
        created_unix_us: super::unix_us(s.created_at),
        failures: failures(pool, run_id).await?,
        duplicate_attempts: s.duplicate_attempts as u64,
        steady: steady_window(pool, run_id).await?,
    })
}

/// The run's steady window so far (`run_steady_state`), if a session has reported one.
async fn steady_window(pool: &PgPool, run_id: Uuid) -> Result<Option<SteadyWindow>> {
    let row = sqlx::query!(
        r#"SELECT sessions AS "sessions!", load_pattern AS "load_pattern!", load_target AS "load_target!",
                  coalesce(steady_s, 0) AS "steady_s!", coalesce(paused_s, 0) AS "paused_s!", steady_load_mean,
                  coalesce(instability, '') AS "instability!", coalesce(late_starts, 0) AS "late_starts!"
           FROM run_steady_state WHERE run_id = $1"#,
        run_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| SteadyWindow {
        sessions: r.sessions as u32,
        load_pattern: r.load_pattern,
        load_target: r.load_target,
        steady_s: r.steady_s,
        paused_s: r.paused_s,
        load_mean: r.steady_load_mean,
        instability: r.instability,
        late_starts: r.late_starts as u64,
    }))
}

/// Each agent that leased a shard of the run: shards it completed, results it committed.
async fn agent_shares(pool: &PgPool, run_id: Uuid) -> Result<Vec<AgentShare>> {
    let agents = sqlx::query!(
        r#"SELECT a.id, a.name,
                  (SELECT count(*) FROM shards s WHERE s.run_id = $1 AND s.completed_by = a.id) AS "shards!",
                  (SELECT count(*) FROM results r WHERE r.run_id = $1 AND r.agent_id = a.id) AS "results!"
           FROM agents a
           WHERE a.id IN (SELECT agent_id FROM lease_attempts la JOIN shards s ON s.id = la.shard_id
                          WHERE s.run_id = $1)
           ORDER BY a.name, a.id"#,
        run_id
    )
    .fetch_all(pool)
    .await?;
    Ok(agents
        .into_iter()
        .map(|a| AgentShare {
            agent_name: a.name,
            agent_id: a.id.to_string(),
            shards_completed: a.shards as u32,
            results: a.results as u64,
        })
        .collect())
}

/// `shard N: reason` for each failed shard.
async fn failures(pool: &PgPool, run_id: Uuid) -> Result<Vec<String>> {
    let rows = sqlx::query!(
        r#"SELECT shard_index, failure_reason AS "reason!" FROM shards
           WHERE run_id = $1 AND status = 'failed' ORDER BY shard_index"#,
        run_id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|f| format!("shard {}: {}", f.shard_index, f.reason)).collect())
}

/// Whether a run exists.
pub async fn exists(conn: &mut PgConnection, run_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1) AS "e!""#, run_id)
        .fetch_one(conn)
        .await?)
}
