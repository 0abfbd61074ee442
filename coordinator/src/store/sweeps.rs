//! `sweep_definitions` and `sweeps`: a definition (models x hardware classes x a seeded
//! workload sample, engine settings, optionally a schedule) and its instances. An instance
//! expands into one run per (model, hardware class) of the approved agents its selector
//! matches; agents of one class share that run's shards.

use super::{Error, Result, on_unique_violation, runs, stored, unix_us, workloads};
use crate::domain::settings::{Measurement, Settings};
use crate::domain::sweep::Definition;
use chrono::{DateTime, Utc};
use ipw_proto::kinds::{MissedPolicy, RunStatus, SweepStatus};
use ipw_proto::v1::{SweepInfo, SweepRun};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Stores a validated sweep definition; returns its id. The workload must hold the sample.
pub async fn define(tx: &mut Transaction<'_, Postgres>, d: &Definition) -> Result<Uuid> {
    let workload = workloads::find(tx, &d.workload).await?;
    if d.sample == 0 || i64::from(d.sample) > i64::from(workload.n_queries) {
        return Err(Error::Invalid(format!(
            "the sample must be between 1 and the {} queries of workload \"{}\"",
            workload.n_queries, workload.name
        )));
    }
    let (settings, name) = (&d.settings, &d.name);
    let schedule = d.schedule.as_ref();
    let id = Uuid::now_v7();
    let m = &settings.measurement;
    sqlx::query!(
        "INSERT INTO sweep_definitions (id, name, workload_id, sample_size, seed, stratify, models, label_selector,
             accelerator, concurrency_levels, shard_size, max_tokens, temperature, top_p, repetitions, warmup,
             model_memory_bytes, cron, timezone, missed_policy, next_fire_at, load_pattern, rate_per_s,
             arrival_seed, slo_ttft_s, slo_tpot_s, repeat_until_cv, max_repeats)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                 $22, $23, $24, $25, $26, $27, $28)",
        id,
        name,
        workload.id,
        d.sample as i32,
        d.seed,
        d.stratify,
        &d.models,
        serde_json::to_value(&d.labels).expect("a string map is JSON"),
        d.accelerator,
        &d.concurrency_levels,
        settings.shard_size,
        settings.max_tokens,
        settings.temperature,
        settings.top_p,
        settings.repetitions,
        settings.warmup,
        settings.model_memory_bytes,
        schedule.map(|s| s.cron.clone()),
        schedule.map(|s| s.timezone.clone()),
        d.missed_policy.as_str(),
        schedule.map(|s| s.first),
        m.load_pattern,
        m.rate_per_s,
        m.arrival_seed,
        m.slo_ttft_s,
        m.slo_tpot_s,
        m.repeat_until_cv,
        m.max_repeats,
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| on_unique_violation(e, || Error::AlreadyExists(format!("a sweep named \"{name}\" already exists"))))?;
    Ok(id)
}

/// Stores a sweep definition; a one-off sweep starts now, a scheduled one waits for its
/// first firing.
pub async fn create(pool: &PgPool, definition: &Definition) -> Result<SweepInfo> {
    let mut tx = pool.begin().await?;
    let id = define(&mut tx, definition).await?;
    let instance = if definition.schedule.is_none() { instantiate(&mut tx, id, None).await? } else { None };
    tx.commit().await?;
    let mut conn = pool.acquire().await?;
    Ok(match instance {
        Some(instance) => info(&mut conn, instance).await?,
        None => list(&mut conn).await?.into_iter().find(|s| s.definition_id == id.to_string()).unwrap_or_default(),
    })
}

/// Creates an instance of a definition: one run per (model, matching hardware class,
/// concurrency level), all over the same seeded sample. For a scheduled firing,
/// `scheduled_for` makes it happen once: `Ok(None)` when that firing already has its instance.
/// Fails, writing nothing, when no approved agent matches the selector.
pub async fn instantiate(
    tx: &mut Transaction<'_, Postgres>,
    definition_id: Uuid,
    scheduled_for: Option<DateTime<Utc>>,
) -> Result<Option<Uuid>> {
    let d = stored_definition(tx, definition_id).await?;
    let classes: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT hardware_class AS "class!" FROM agents
           WHERE status = 'approved' AND labels @> $1
             AND ($2::text IS NULL OR hardware_class ILIKE '%' || $2 || '%')
           ORDER BY 1"#,
        d.label_selector,
        d.accelerator
    )
    .fetch_all(&mut **tx)
    .await?;
    if classes.is_empty() {
        return Err(Error::Precondition(format!(
            "no approved agent matches sweep \"{}\" (labels {}, accelerator {})",
            d.name,
            d.label_selector,
            d.accelerator.as_deref().unwrap_or("any")
        )));
    }
    let sweep_id = Uuid::now_v7();
    let inserted = sqlx::query!(
        "INSERT INTO sweeps (id, definition_id, scheduled_for) VALUES ($1, $2, $3)
         ON CONFLICT (definition_id, scheduled_for) DO NOTHING",
        sweep_id,
        definition_id,
        scheduled_for
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let workload = workloads::find(tx, &d.workload_id.to_string()).await?;
    let mut sample = runs::sample(tx, &workload, d.sample_size as u32, d.seed, d.stratify).await?;
    let placement = |class| runs::Placement {
        hardware_class: Some(class),
        label_selector: Some(&d.label_selector),
        sweep_id: Some(sweep_id),
    };
    let mut settings = d.settings.clone();
    for model in &d.models {
        for class in &classes {
            for &level in &d.concurrency_levels {
                settings.concurrency = level;
                let run = runs::create(tx, &workload, model, d.seed, &settings, &sample, &placement(class)).await?;
                // One draw per instance; every other run copies it.
                let run_id = Uuid::parse_str(&run.run_id).map_err(|e| Error::Invalid(e.to_string()))?;
                sample = runs::Sample::SameAs { run_id, size: sample.size() };
            }
        }
    }
    let n_runs = d.models.len() * classes.len() * d.concurrency_levels.len();
    tracing::info!(sweep = %sweep_id, name = %d.name, runs = n_runs, "sweep instance created");
    Ok(Some(sweep_id))
}

/// A stored definition, as an instance needs it.
struct StoredDefinition {
    name: String,
    workload_id: Uuid,
    sample_size: i32,
    seed: i64,
    stratify: bool,
    models: Vec<String>,
    label_selector: serde_json::Value,
    accelerator: Option<String>,
    concurrency_levels: Vec<i32>,
    settings: Settings,
}

async fn stored_definition(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<StoredDefinition> {
    let d = sqlx::query!(
        "SELECT name, workload_id, sample_size, seed, stratify, models, label_selector, accelerator,
                concurrency_levels, shard_size, max_tokens, temperature, top_p, repetitions, warmup,
                model_memory_bytes, load_pattern, rate_per_s, arrival_seed, slo_ttft_s, slo_tpot_s,
                repeat_until_cv, max_repeats
         FROM sweep_definitions WHERE id = $1",
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no sweep definition {id}")))?;
    let measurement = Measurement {
        load_pattern: d.load_pattern,
        rate_per_s: d.rate_per_s,
        arrival_seed: d.arrival_seed,
        slo_ttft_s: d.slo_ttft_s,
        slo_tpot_s: d.slo_tpot_s,
        repeat_until_cv: d.repeat_until_cv,
        max_repeats: d.max_repeats,
    };
    Ok(StoredDefinition {
        settings: Settings {
            concurrency: d.concurrency_levels[0],
            shard_size: d.shard_size,
            repetitions: d.repetitions,
            max_tokens: d.max_tokens,
            temperature: d.temperature,
            top_p: d.top_p,
            warmup: d.warmup,
            model_memory_bytes: d.model_memory_bytes,
            measurement,
        },
        name: d.name,
        workload_id: d.workload_id,
        sample_size: d.sample_size,
        seed: d.seed,
        stratify: d.stratify,
        models: d.models,
        label_selector: d.label_selector,
        accelerator: d.accelerator,
        concurrency_levels: d.concurrency_levels,
    })
}

/// An instance with each run's progress and ETA.
pub async fn info(conn: &mut PgConnection, sweep_id: Uuid) -> Result<SweepInfo> {
    let s = sqlx::query!(
        "SELECT s.id, s.definition_id, s.status, s.scheduled_for, s.created_at, d.name, d.cron, d.timezone,
                d.next_fire_at
         FROM sweeps s JOIN sweep_definitions d ON d.id = s.definition_id WHERE s.id = $1",
        sweep_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no sweep {sweep_id}")))?;
    let runs = sqlx::query!(
        r#"SELECT r.id, m.name AS model, coalesce(r.hardware_class, '') AS "hardware_class!", r.status, r.concurrency,
                  r.sample_size::bigint * r.repetitions AS "expected!",
                  (SELECT count(*) FROM results x WHERE x.run_id = r.id) AS "results!",
                  extract(epoch FROM now() - r.started_at)::float8 AS elapsed_s
           FROM runs r JOIN models m ON m.id = r.model_id WHERE r.sweep_id = $1
           ORDER BY m.name, r.hardware_class, r.concurrency, r.id"#,
        sweep_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let all_done = !runs.is_empty() && runs.iter().all(|r| r.status == RunStatus::Completed.as_str());
    let runs: Vec<SweepRun> = runs
        .into_iter()
        .map(|r| {
            let remaining = (r.expected - r.results).max(0) as f64;
            let eta_seconds = match (r.elapsed_s, r.results) {
                (_, _) if r.status == RunStatus::Completed.as_str() => Some(0.0),
                (Some(elapsed), done) if done > 0 => Some(elapsed / done as f64 * remaining),
                _ => None,
            };
            SweepRun {
                run_id: r.id.to_string(),
                model: r.model,
                hardware_class: r.hardware_class,
                concurrency: r.concurrency as u32,
                status: r.status,
                expected_results: r.expected as u64,
                results: r.results as u64,
                eta_seconds,
            }
        })
        .collect();
    Ok(SweepInfo {
        sweep_id: s.id.to_string(),
        definition_id: s.definition_id.to_string(),
        name: s.name,
        status: if s.status == SweepStatus::Active.as_str() && all_done {
            RunStatus::Completed.as_str().into()
        } else {
            s.status
        },
        scheduled_for_unix_us: s.scheduled_for.map(unix_us).unwrap_or(0),
        created_unix_us: unix_us(s.created_at),
        cron: s.cron.unwrap_or_default(),
        timezone: s.timezone.unwrap_or_default(),
        next_fire_unix_us: s.next_fire_at.map(unix_us).unwrap_or(0),
        runs,
    })
}

/// Every instance, newest first, then scheduled definitions that have not fired yet.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<SweepInfo>> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar!("SELECT id FROM sweeps ORDER BY created_at DESC").fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(info(conn, id).await?);
    }
    let waiting = sqlx::query!(
        "SELECT id, name, cron, timezone, next_fire_at, created_at FROM sweep_definitions d
         WHERE cron IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sweeps s WHERE s.definition_id = d.id)
         ORDER BY created_at DESC"
    )
    .fetch_all(&mut *conn)
    .await?;
    out.extend(waiting.into_iter().map(|d| SweepInfo {
        definition_id: d.id.to_string(),
        name: d.name,
        status: "scheduled".into(),
        created_unix_us: unix_us(d.created_at),
        cron: d.cron.unwrap_or_default(),
        timezone: d.timezone.unwrap_or_default(),
        next_fire_unix_us: d.next_fire_at.map(unix_us).unwrap_or(0),
        ..SweepInfo::default()
    }));
    Ok(out)
}

/// Pauses (no new leases), resumes, or cancels an instance (its runs are cancelled). A
/// cancelled sweep stays cancelled.
pub async fn set_status(tx: &mut Transaction<'_, Postgres>, id: Uuid, status: SweepStatus) -> Result<()> {
    let current: String = sqlx::query_scalar!("SELECT status FROM sweeps WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no sweep {id}")))?;
    if stored::<SweepStatus>(&current)? == SweepStatus::Cancelled && status != SweepStatus::Cancelled {
        return Err(Error::Precondition(format!("sweep {id} was cancelled")));
    }
    sqlx::query!("UPDATE sweeps SET status = $2 WHERE id = $1", id, status.as_str()).execute(&mut **tx).await?;
    if status == SweepStatus::Cancelled {
        // Leases stay as they are: heartbeats renew no lease of a cancelled run, so agents
        // stop its work, and a shard an agent had finished may still be completed.
        sqlx::query!(
            "UPDATE runs SET status = 'cancelled' WHERE sweep_id = $1 AND status IN ('pending', 'running')",
            id
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The scheduler's advisory lock key ("ipw-sched").
pub const SCHEDULER_LOCK_KEY: i64 = 0x6970_772d_7363_6864;

/// Takes the scheduler's advisory lock on `conn` if no other coordinator holds it.
pub async fn try_scheduler_lock(conn: &mut PgConnection) -> Result<bool> {
    Ok(sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "l!""#, SCHEDULER_LOCK_KEY).fetch_one(conn).await?)
}

/// Releases the scheduler's advisory lock held on `conn`.
pub async fn scheduler_unlock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "u!""#, SCHEDULER_LOCK_KEY).fetch_one(conn).await?;
    Ok(())
}

/// Definitions whose next firing is due as of `now`.
pub async fn due(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!("SELECT id FROM sweep_definitions WHERE next_fire_at <= $1", now).fetch_all(pool).await?)
}

/// A scheduled definition whose firing is due.
#[derive(Debug, Clone)]
pub struct DueSchedule {
    /// The sweep's name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// What happens to missed firings.
    pub missed_policy: MissedPolicy,
    /// The stored next firing (now or past).
    pub next_fire_at: DateTime<Utc>,
}

/// Locks a definition whose firing is still due (another coordinator may have handled it
/// meanwhile: then `None`).
pub async fn lock_due(tx: &mut Transaction<'_, Postgres>, id: Uuid, now: DateTime<Utc>) -> Result<Option<DueSchedule>> {
    let row = sqlx::query!(
        r#"SELECT name, cron AS "cron!", timezone AS "timezone!", missed_policy, next_fire_at AS "next_fire_at!"
           FROM sweep_definitions WHERE id = $1 AND next_fire_at <= $2 FOR UPDATE"#,
        id,
        now
    )
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|d| {
        Ok(DueSchedule {
            name: d.name,
            cron: d.cron,
            timezone: d.timezone,
            missed_policy: stored(&d.missed_policy)?,
            next_fire_at: d.next_fire_at,
        })
    })
    .transpose()
}

/// Sets a definition's next firing.
pub async fn set_next_fire(tx: &mut Transaction<'_, Postgres>, id: Uuid, next: DateTime<Utc>) -> Result<()> {
    sqlx::query!("UPDATE sweep_definitions SET next_fire_at = $2 WHERE id = $1", id, next).execute(&mut **tx).await?;
    Ok(())
}
