//! Creating runs: the seeded sample of a workload, cut into shards. Used by `ipw run create`
//! and by every sweep instance.

use ipw_proto::v1::{GenerationParams, RunInfo};
use sqlx::{PgConnection, Postgres, Transaction};
use tonic::Status;
use uuid::Uuid;

/// Default completion budget when a run does not set one.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Engine settings and sharding shared by every run of a request or a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Queries in flight at once on an agent.
    pub concurrency: i32,
    /// Queries per shard.
    pub shard_size: i32,
    /// Times each query is run.
    pub repetitions: i32,
    /// Completion budget.
    pub max_tokens: i32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: f32,
    /// Unmeasured queries run first on each shard.
    pub warmup: i32,
    /// Memory a model needs; agents with less are not given it.
    pub model_memory_bytes: Option<i64>,
}

impl Settings {
    /// Validates user-given settings, filling defaults (max tokens, top-p, repetitions).
    pub fn from_request(
        concurrency: u32,
        shard_size: u32,
        repetitions: u32,
        warmup: u32,
        params: Option<GenerationParams>,
        model_memory_bytes: u64,
    ) -> Result<Self, Status> {
        let bad = |m: &str| Err(Status::invalid_argument(m.to_owned()));
        if shard_size == 0 {
            return bad("--shard-size must be at least 1");
        }
        if !(1..=1024).contains(&concurrency) {
            return bad("--concurrency must be between 1 and 1024");
        }
        let repetitions = repetitions.max(1);
        if repetitions > 100 {
            return bad("--repetitions must be between 1 and 100");
        }
        let params = params.unwrap_or_default();
        let max_tokens = if params.max_tokens == 0 { DEFAULT_MAX_TOKENS } else { params.max_tokens };
        let top_p = if params.top_p == 0.0 { 1.0 } else { params.top_p };
        if !(params.temperature.is_finite() && params.temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0) {
            return bad("temperature must be >= 0 and top-p in (0, 1]");
        }
        let int =
            |v: u32, what: &str| i32::try_from(v).map_err(|_| Status::invalid_argument(format!("{what} is too large")));
        Ok(Self {
            concurrency: concurrency as i32,
            shard_size: int(shard_size, "--shard-size")?,
            repetitions: repetitions as i32,
            max_tokens: int(max_tokens, "--max-tokens")?,
            temperature: params.temperature,
            top_p,
            warmup: int(warmup, "--warmup")?,
            model_memory_bytes: (model_memory_bytes > 0)
                .then(|| i64::try_from(model_memory_bytes))
                .transpose()
                .map_err(|_| Status::invalid_argument("--memory is too large"))?,
        })
    }
}

/// A workload, by name or id.
pub struct Workload {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// How many queries it holds.
    pub n_queries: i32,
}

/// Finds a workload by name or id, or says how to import one.
pub async fn find_workload(conn: &mut PgConnection, key: &str) -> Result<Workload, Status> {
    sqlx::query_as!(Workload, "SELECT id, name, n_queries FROM workloads WHERE name = $1 OR id::text = $1", key.trim())
        .fetch_optional(conn)
        .await
        .map_err(crate::service::db_error)?
        .ok_or_else(|| {
            Status::not_found(format!("no workload \"{key}\"; import one with `ipw workload import FILE --name NAME`"))
        })
}

/// How many queries each category gets in a stratified sample of `n`: its share of the
/// workload, rounded by largest remainder so the quotas add up to `n` exactly. Ties go to the
/// category that sorts first, so the result is deterministic.
pub fn stratified_quotas(counts: &[(String, i64)], n: i64) -> Vec<(String, i64)> {
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return Vec::new();
    }
    let n = n.min(total);
    let mut quotas: Vec<(String, i64, i64)> = counts
        .iter()
        .map(|(category, c)| (category.clone(), c * n / total, (c * n) % total)) // floor, remainder
        .collect();
    let mut missing = n - quotas.iter().map(|q| q.1).sum::<i64>();
    let mut order: Vec<usize> = (0..quotas.len()).collect();
    order.sort_by(|&a, &b| quotas[b].2.cmp(&quotas[a].2).then(quotas[a].0.cmp(&quotas[b].0)));
    for i in order {
        if missing == 0 {
            break;
        }
        if quotas[i].1 < counts[i].1 {
            quotas[i].1 += 1;
            missing -= 1;
        }
    }
    quotas.into_iter().map(|(c, q, _)| (c, q)).collect()
}

/// The seeded sample of `n` queries: ordered by a hash of (seed, query id), so the same seed
/// always gives the same queries whatever the import order, and a smaller sample is a prefix
/// of a larger one. Stratified, each category gets its share (see [`stratified_quotas`]).
pub async fn sample(
    conn: &mut PgConnection,
    workload: &Workload,
    n: u32,
    seed: i64,
    stratify: bool,
) -> Result<Vec<i64>, Status> {
    if n == 0 {
        return Err(Status::invalid_argument("--sample must be at least 1"));
    }
    if n as i32 > workload.n_queries {
        return Err(Status::invalid_argument(format!(
            "--sample {n} exceeds the {} queries of workload \"{}\"",
            workload.n_queries, workload.name
        )));
    }
    let db = crate::service::db_error;
    if !stratify {
        return sqlx::query_scalar!(
            "SELECT id FROM queries WHERE workload_id = $1
             ORDER BY md5($2::bigint::text || ':' || external_id), id LIMIT $3",
            workload.id,
            seed,
            i64::from(n)
        )
        .fetch_all(conn)
        .await
        .map_err(db);
    }
    let counts: Vec<(String, i64)> = sqlx::query!(
        r#"SELECT coalesce(category, '') AS "category!", count(*) AS "n!" FROM queries WHERE workload_id = $1
           GROUP BY 1 ORDER BY 1"#,
        workload.id
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| (r.category, r.n))
    .collect();
    let quotas = stratified_quotas(&counts, i64::from(n));
    let (categories, sizes): (Vec<String>, Vec<i64>) = quotas.into_iter().unzip();
    sqlx::query_scalar!(
        r#"SELECT q.id AS "id!" FROM (
               SELECT id, external_id, coalesce(category, '') AS category,
                      row_number() OVER (PARTITION BY coalesce(category, '')
                                         ORDER BY md5($2::bigint::text || ':' || external_id), id) AS rn
               FROM queries WHERE workload_id = $1) q
           JOIN UNNEST($3::text[], $4::bigint[]) AS u(category, quota) ON u.category = q.category
           WHERE q.rn <= u.quota
           ORDER BY md5($2::bigint::text || ':' || q.external_id), q.id"#,
        workload.id,
        seed,
        &categories,
        &sizes
    )
    .fetch_all(conn)
    .await
    .map_err(db)
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
    sample: &[i64],
    placement: &Placement<'_>,
) -> Result<RunInfo, Status> {
    let Placement { hardware_class, sweep_id, .. } = *placement;
    let label_selector = placement.label_selector.cloned().unwrap_or_else(|| serde_json::json!({}));
    let db = crate::service::db_error;
    let model = model.trim();
    if model.is_empty() || model.len() > 200 {
        return Err(Status::invalid_argument("a model must be named as the engine serves it (1 to 200 bytes)"));
    }
    let model_id = sqlx::query_scalar!(
        "INSERT INTO models (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        Uuid::now_v7(),
        model
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    let run_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO runs (id, workload_id, model_id, sample_size, seed, concurrency, shard_size, repetitions,
                           max_tokens, temperature, top_p, warmup, model_memory_bytes, hardware_class, sweep_id,
                           label_selector)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        run_id,
        workload.id,
        model_id,
        sample.len() as i32,
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
    )
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query!("INSERT INTO scorings (id, run_id, kind) VALUES ($1, $2, 'ingest')", Uuid::now_v7(), run_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    let shard_size = settings.shard_size as usize;
    let shard_ids: Vec<Uuid> = sample.chunks(shard_size).map(|_| Uuid::now_v7()).collect();
    let indexes: Vec<i32> = (0..shard_ids.len() as i32).collect();
    sqlx::query!(
        "INSERT INTO shards (id, run_id, shard_index) SELECT id, $1, idx FROM UNNEST($2::uuid[], $3::int[]) AS u(id, idx)",
        run_id,
        &shard_ids,
        &indexes
    )
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    let positions: Vec<i32> = (0..sample.len() as i32).collect();
    let query_shards: Vec<Uuid> = positions.iter().map(|p| shard_ids[*p as usize / shard_size]).collect();
    sqlx::query!(
        "INSERT INTO run_queries (run_id, query_id, position, shard_id)
         SELECT $1, q, p, s FROM UNNEST($2::bigint[], $3::int[], $4::uuid[]) AS u(q, p, s)",
        run_id,
        sample,
        &positions,
        &query_shards
    )
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    tracing::info!(run = %run_id, model, hardware_class, queries = sample.len(), shards = shard_ids.len(), "run created");
    Ok(RunInfo {
        run_id: run_id.to_string(),
        workload: workload.name.clone(),
        model: model.to_owned(),
        queries: sample.len() as u32,
        shards: shard_ids.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::stratified_quotas;

    fn c(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn quotas_follow_the_shares_and_add_up() {
        let q = stratified_quotas(&c(&[("law", 600), ("math", 300), ("other", 100)]), 50);
        assert_eq!(q, c(&[("law", 30), ("math", 15), ("other", 5)]));
        // 10 over three equal categories: remainders tie, the first sorted gets the extra.
        let q = stratified_quotas(&c(&[("a", 5), ("b", 5), ("c", 5)]), 10);
        assert_eq!(q, c(&[("a", 4), ("b", 3), ("c", 3)]));
        assert_eq!(q.iter().map(|x| x.1).sum::<i64>(), 10);
    }

    #[test]
    fn small_categories_are_not_over_asked() {
        let q = stratified_quotas(&c(&[("big", 997), ("tiny", 3)]), 100);
        assert_eq!(q.iter().map(|x| x.1).sum::<i64>(), 100);
        assert!(q[1].1 <= 3);
        assert_eq!(stratified_quotas(&c(&[("a", 2)]), 10), c(&[("a", 2)]));
    }
}
