//! Hand-made rows of finished runs, inserted directly, so every figure a view computes from
//! them can be worked out by hand in the test.

use sqlx::PgPool;
use uuid::Uuid;

/// Inserts the rows a run leaves behind, directly, so each figure is known.
pub struct Fixture {
    pool: PgPool,
    /// The fixture workload.
    pub workload: Uuid,
    /// Its queries' ids, in line order.
    pub queries: Vec<i64>,
}

/// One hand-made result.
pub struct R {
    /// Scored correct, wrong, or left unscored.
    pub correct: Option<bool>,
    /// Seconds.
    pub latency: f64,
    /// Time to first token, seconds.
    pub ttft: Option<f64>,
    /// Output tokens (every query has 5 input tokens).
    pub tokens: i32,
    /// Joules; `None` records the reason "no readable power source".
    pub energy: Option<f64>,
    /// Dynamic joules.
    pub dynamic: Option<f64>,
    /// An engine error.
    pub error: bool,
}

/// A correct or wrong answer with ttft 0.1 s and 10 output tokens.
pub fn ok(correct: bool, latency: f64, energy: f64) -> R {
    R {
        correct: Some(correct),
        latency,
        ttft: Some(0.1),
        tokens: 10,
        energy: Some(energy),
        dynamic: None,
        error: false,
    }
}

impl Fixture {
    /// A workload of `n_queries` open questions.
    pub async fn new(pool: PgPool, n_queries: usize) -> anyhow::Result<Self> {
        Self::with_categories(pool, &vec![None; n_queries]).await
    }

    /// A workload of one open question per entry of `categories`, in that category.
    pub async fn with_categories(pool: PgPool, categories: &[Option<&str>]) -> anyhow::Result<Self> {
        let workload = Uuid::new_v4();
        sqlx::query("INSERT INTO workloads (id, name, format, n_queries) VALUES ($1, 'fixture', 'generic', $2)")
            .bind(workload)
            .bind(categories.len() as i32)
            .execute(&pool)
            .await?;
        let mut queries = Vec::new();
        for (i, category) in categories.iter().enumerate() {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO queries (workload_id, external_id, line_no, prompt, answer, scorer, category)
                 VALUES ($1, $2, $3, 'q', 'a', 'exact', $4) RETURNING id",
            )
            .bind(workload)
            .bind(format!("q{i}"))
            .bind(i as i32 + 1)
            .bind(category)
            .fetch_one(&pool)
            .await?;
            queries.push(id);
        }
        Ok(Self { pool, workload, queries })
    }

    /// An approved agent of `hardware_class`.
    pub async fn agent(&self, hardware_class: &str) -> anyhow::Result<Uuid> {
        crate::fixture_agent(&self.pool, &format!("agent-{hardware_class}"), hardware_class).await
    }

    /// A run of `model` by `agent` created at `day`, with one result per entry of `results`
    /// (for the first queries), scored by its ingest scoring. Returns (run, ingest scoring).
    pub async fn run(&self, model: &str, agent: Uuid, day: &str, results: &[R]) -> anyhow::Result<(Uuid, Uuid)> {
        let on: Vec<(usize, &R)> = results.iter().enumerate().collect();
        self.run_on(model, agent, day, &on).await
    }

    /// [`Fixture::run`] with results for the queries at the given indices only.
    pub async fn run_on(
        &self,
        model: &str,
        agent: Uuid,
        day: &str,
        results: &[(usize, &R)],
    ) -> anyhow::Result<(Uuid, Uuid)> {
        let model_id: Uuid = sqlx::query_scalar(
            "INSERT INTO models (id, name) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .bind(Uuid::new_v4())
        .bind(model)
        .fetch_one(&self.pool)
        .await?;
        let (run, shard, scoring) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        sqlx::query(
            "INSERT INTO runs (id, workload_id, model_id, sample_size, seed, concurrency, shard_size, max_tokens,
                               temperature, top_p, status, created_at)
             VALUES ($1, $2, $3, $4, 0, 1, $4, 64, 0, 1, 'completed', $5::date)",
        )
        .bind(run)
        .bind(self.workload)
        .bind(model_id)
        .bind(results.len() as i32)
        .bind(day)
        .execute(&self.pool)
        .await?;
        sqlx::query("INSERT INTO shards (id, run_id, shard_index) VALUES ($1, $2, 0)")
            .bind(shard)
            .bind(run)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO scorings (id, run_id, kind, created_at) VALUES ($1, $2, 'ingest', $3::date)")
            .bind(scoring)
            .bind(run)
            .bind(day)
            .execute(&self.pool)
            .await?;
        for (position, &(i, r)) in results.iter().enumerate() {
            let q = self.queries[i];
            sqlx::query("INSERT INTO run_queries (run_id, query_id, position, shard_id) VALUES ($1, $2, $3, $4)")
                .bind(run)
                .bind(q)
                .bind(position as i32)
                .bind(shard)
                .execute(&self.pool)
                .await?;
            let result_id: i64 = sqlx::query_scalar(
                "INSERT INTO results (run_id, query_id, repetition, shard_id, agent_id, started_at, latency_s, ttft_s,
                                      tokens_in, tokens_out, response, error, energy_j, dynamic_energy_j, power_source,
                                      power_scope, energy_null_reason)
                 VALUES ($1, $2, 0, $3, $4, now(), $5, $6, 5, $7, 'r', $8, $9, $10,
                         CASE WHEN $9::float8 IS NULL THEN 'none' ELSE 'rapl' END,
                         CASE WHEN $9::float8 IS NULL THEN '' ELSE 'cpu-package' END,
                         CASE WHEN $9::float8 IS NULL THEN 'no readable power source' END)
                 RETURNING id",
            )
            .bind(run)
            .bind(q)
            .bind(shard)
            .bind(agent)
            .bind(r.latency)
            .bind(r.ttft)
            .bind(r.tokens)
            .bind(r.error.then_some("engine answered 500"))
            .bind(r.energy)
            .bind(r.dynamic)
            .fetch_one(&self.pool)
            .await?;
            if let Some(c) = r.correct {
                self.score(scoring, result_id, c).await?;
            }
        }
        Ok((run, scoring))
    }

    /// Records `agent`'s provenance for `run`: whether its engine was remote, and the power
    /// limit it reported.
    pub async fn provenance(
        &self,
        run: Uuid,
        agent: Uuid,
        remote: bool,
        power_limit_w: Option<f64>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO run_provenance (run_id, agent_id, agent_version, agent_git_revision, engine_name, engine_version,
                                         engine_model, os, kernel, cpu_model, power_limit_w, engine_remote)
             VALUES ($1, $2, 'v', 'g', 'e', '1', 'm', 'linux', 'k', 'cpu', $3, $4)",
        )
        .bind(run)
        .bind(agent)
        .bind(power_limit_w)
        .bind(remote)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A finished re-scoring of `run` that judges every error-free result correct.
    pub async fn rescore_all_correct(&self, run: Uuid) -> anyhow::Result<Uuid> {
        let rescore = Uuid::new_v4();
        sqlx::query("INSERT INTO scorings (id, run_id, kind, completed_at) VALUES ($1, $2, 'rescore', now())")
            .bind(rescore)
            .bind(run)
            .execute(&self.pool)
            .await?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM results WHERE run_id = $1 AND error IS NULL ORDER BY id")
                .bind(run)
                .fetch_all(&self.pool)
                .await?;
        for id in ids {
            self.score(rescore, id, true).await?;
        }
        Ok(rescore)
    }

    /// Scores `result_id` under `scoring`.
    pub async fn score(&self, scoring: Uuid, result_id: i64, correct: bool) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO scores (scoring_id, result_id, scorer, correct) VALUES ($1, $2, 'exact', $3)")
            .bind(scoring)
            .bind(result_id)
            .bind(correct)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Equal to within rounding.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}
