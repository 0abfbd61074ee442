//! Sweeps: a definition (models x hardware classes x a seeded workload sample, engine
//! settings, optionally a schedule) and its instances. An instance expands into one run per
//! (model, hardware class) of the approved agents its selector matches; agents of one class
//! share that run's shards.

use crate::runs::{self, Settings};
use crate::schedule;
use crate::service::{db_error, parse_uuid, unix_us};
use ipw_proto::v1::{SweepInfo, SweepRun, SweepSpec};
use sqlx::{PgConnection, Postgres, Transaction};
use tonic::Status;
use uuid::Uuid;

/// Stores a sweep definition; returns its id. A schedule is checked and its first firing set.
pub async fn define(tx: &mut Transaction<'_, Postgres>, spec: &SweepSpec) -> Result<Uuid, Status> {
    let name = spec.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Status::invalid_argument("a sweep needs a --name of 1 to 200 bytes"));
    }
    let models: Vec<String> = spec.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    if models.is_empty() {
        return Err(Status::invalid_argument("a sweep needs at least one --model"));
    }
    let settings = Settings::from_request(
        spec.concurrency,
        spec.shard_size,
        spec.repetitions,
        spec.warmup,
        spec.params,
        spec.model_memory_bytes,
    )?;
    let workload = runs::find_workload(tx, &spec.workload).await?;
    if spec.sample == 0 || spec.sample as i32 > workload.n_queries {
        return Err(Status::invalid_argument(format!(
            "--sample must be between 1 and the {} queries of workload \"{}\"",
            workload.n_queries, workload.name
        )));
    }
    let policy =
        schedule::MissedPolicy::parse(if spec.missed_policy.is_empty() { "skip" } else { &spec.missed_policy })
            .map_err(Status::invalid_argument)?;
    let (cron, timezone, next_fire_at) = match (spec.cron.trim(), spec.timezone.trim()) {
        ("", _) => (None, None, None),
        (cron, tz) => {
            let tz = if tz.is_empty() { "UTC" } else { tz };
            let schedule = schedule::Schedule::parse(cron, tz).map_err(Status::invalid_argument)?;
            let first = schedule.next_after(chrono::Utc::now()).map_err(Status::invalid_argument)?;
            (Some(cron.to_owned()), Some(tz.to_owned()), Some(first))
        }
    };
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO sweep_definitions (id, name, workload_id, sample_size, seed, stratify, models, label_selector,
             accelerator, concurrency, shard_size, max_tokens, temperature, top_p, repetitions, warmup,
             model_memory_bytes, cron, timezone, missed_policy, next_fire_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
        id,
        name,
        workload.id,
        spec.sample as i32,
        spec.seed,
        spec.stratify,
        &models,
        serde_json::to_value(&spec.labels).expect("a string map is JSON"),
        Some(spec.accelerator.trim()).filter(|a| !a.is_empty()),
        settings.concurrency,
        settings.shard_size,
        settings.max_tokens,
        settings.temperature,
        settings.top_p,
        settings.repetitions,
        settings.warmup,
        settings.model_memory_bytes,
        cron,
        timezone,
        policy.as_str(),
        next_fire_at,
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Status::already_exists(format!("a sweep named \"{name}\" already exists"))
        }
        _ => db_error(e),
    })?;
    Ok(id)
}

/// Creates an instance of a definition: one run per (model, matching hardware class), all
/// over the same seeded sample. For a scheduled firing, `scheduled_for` makes it happen once:
/// `Ok(None)` when that firing already has its instance. Fails, writing nothing, when no
/// approved agent matches the selector.
pub async fn instantiate(
    tx: &mut Transaction<'_, Postgres>,
    definition_id: Uuid,
    scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<Uuid>, Status> {
    let d = sqlx::query!(
        "SELECT d.name, d.workload_id, d.sample_size, d.seed, d.stratify, d.models, d.label_selector, d.accelerator,
                d.concurrency, d.shard_size, d.max_tokens, d.temperature, d.top_p, d.repetitions, d.warmup,
                d.model_memory_bytes
         FROM sweep_definitions d WHERE d.id = $1",
        definition_id
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Status::not_found(format!("no sweep definition {definition_id}")))?;
    let classes: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT hardware_class AS "class!" FROM agents
           WHERE status = 'approved' AND labels @> $1
             AND ($2::text IS NULL OR hardware_class ILIKE '%' || $2 || '%')
           ORDER BY 1"#,
        d.label_selector,
        d.accelerator
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    if classes.is_empty() {
        return Err(Status::failed_precondition(format!(
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
    .await
    .map_err(db_error)?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let workload = runs::find_workload(tx, &d.workload_id.to_string()).await?;
    let sample = runs::sample(tx, &workload, d.sample_size as u32, d.seed, d.stratify).await?;
    let settings = Settings {
        concurrency: d.concurrency,
        shard_size: d.shard_size,
        repetitions: d.repetitions,
        max_tokens: d.max_tokens,
        temperature: d.temperature,
        top_p: d.top_p,
        warmup: d.warmup,
        model_memory_bytes: d.model_memory_bytes,
    };
    for model in &d.models {
        for class in &classes {
            let placement = runs::Placement {
                hardware_class: Some(class),
                label_selector: Some(&d.label_selector),
                sweep_id: Some(sweep_id),
            };
            runs::create(tx, &workload, model, d.seed, &settings, &sample, &placement).await?;
        }
    }
    tracing::info!(sweep = %sweep_id, name = %d.name, runs = d.models.len() * classes.len(), "sweep instance created");
    Ok(Some(sweep_id))
}

/// An instance with each run's progress and ETA.
pub async fn info(conn: &mut PgConnection, sweep_id: Uuid) -> Result<SweepInfo, Status> {
    let s = sqlx::query!(
        "SELECT s.id, s.definition_id, s.status, s.scheduled_for, s.created_at, d.name, d.cron, d.timezone,
                d.next_fire_at
         FROM sweeps s JOIN sweep_definitions d ON d.id = s.definition_id WHERE s.id = $1",
        sweep_id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Status::not_found(format!("no sweep {sweep_id}")))?;
    let runs = sqlx::query!(
        r#"SELECT r.id, m.name AS model, coalesce(r.hardware_class, '') AS "hardware_class!", r.status,
                  r.sample_size::bigint * r.repetitions AS "expected!",
                  (SELECT count(*) FROM results x WHERE x.run_id = r.id) AS "results!",
                  extract(epoch FROM now() - r.started_at)::float8 AS elapsed_s
           FROM runs r JOIN models m ON m.id = r.model_id WHERE r.sweep_id = $1
           ORDER BY m.name, r.hardware_class"#,
        sweep_id
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let all_done = !runs.is_empty() && runs.iter().all(|r| r.status == "completed");
    let runs: Vec<SweepRun> = runs
        .into_iter()
        .map(|r| {
            let remaining = (r.expected - r.results).max(0) as f64;
            let eta_seconds = match (r.elapsed_s, r.results) {
                (_, _) if r.status == "completed" => Some(0.0),
                (Some(elapsed), done) if done > 0 => Some(elapsed / done as f64 * remaining),
                _ => None,
            };
            SweepRun {
                run_id: r.id.to_string(),
                model: r.model,
                hardware_class: r.hardware_class,
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
        status: if s.status == "active" && all_done { "completed".into() } else { s.status },
        scheduled_for_unix_us: s.scheduled_for.map(unix_us).unwrap_or(0),
        created_unix_us: unix_us(s.created_at),
        cron: s.cron.unwrap_or_default(),
        timezone: s.timezone.unwrap_or_default(),
        next_fire_unix_us: s.next_fire_at.map(unix_us).unwrap_or(0),
        runs,
    })
}

/// Every instance, newest first, then scheduled definitions that have not fired yet.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<SweepInfo>, Status> {
    let ids: Vec<Uuid> = sqlx::query_scalar!("SELECT id FROM sweeps ORDER BY created_at DESC")
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
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
    .await
    .map_err(db_error)?;
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

/// Pauses (no new leases), resumes, or cancels an instance (its runs are cancelled).
pub async fn set_status(tx: &mut Transaction<'_, Postgres>, sweep_id: &str, status: &str) -> Result<Uuid, Status> {
    let id = parse_uuid("sweep", sweep_id)?;
    if !["active", "paused", "cancelled"].contains(&status) {
        return Err(Status::invalid_argument(format!("unknown sweep status \"{status}\"")));
    }
    let current: String = sqlx::query_scalar!("SELECT status FROM sweeps WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Status::not_found(format!("no sweep {id}")))?;
    if current == "cancelled" && status != "cancelled" {
        return Err(Status::failed_precondition(format!("sweep {id} was cancelled")));
    }
    sqlx::query!("UPDATE sweeps SET status = $2 WHERE id = $1", id, status)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    if status == "cancelled" {
        sqlx::query!(
            "UPDATE runs SET status = 'cancelled' WHERE sweep_id = $1 AND status IN ('pending', 'running')",
            id
        )
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(id)
}
