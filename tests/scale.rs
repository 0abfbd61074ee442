//! The coordinator at scale: the plans its hot queries must keep.

use ipw_e2e::Fleet;
use std::time::Duration;
use uuid::Uuid;

/// The lease statement, exactly as the coordinator runs it.
const LEASE_IN_RUN: &str = include_str!("../coordinator/src/store/sql/lease_in_run.sql");

#[tokio::test]
async fn the_lease_query_finds_its_shard_through_the_pending_index() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let pool = &fleet.pool;
    // A run of 50,000 shards, 20,000 of them already leased: walking past those is what made
    // each lease slower than the last.
    let (workload, model, run) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO workloads (id, name, format, n_queries) VALUES ($1, 'w', 'generic', 1)")
        .bind(workload)
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO models (id, name) VALUES ($1, 'm')").bind(model).execute(pool).await?;
    sqlx::query(
        "INSERT INTO runs (id, workload_id, model_id, sample_size, seed, concurrency, shard_size, max_tokens,
                           temperature, top_p)
         VALUES ($1, $2, $3, 50000, 0, 1, 1, 64, 0, 1)",
    )
    .bind(run)
    .bind(workload)
    .bind(model)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO shards (id, run_id, shard_index) SELECT gen_random_uuid(), $1, i FROM generate_series(0, 49999) i",
    )
    .bind(run)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE shards").execute(pool).await?;
    let explain = format!("EXPLAIN (FORMAT JSON) {LEASE_IN_RUN}");
    let plan: sqlx::types::JsonValue = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(run)
        .bind(Uuid::new_v4())
        .bind(60.0f64)
        .fetch_one(pool)
        .await?;
    let plan = plan.to_string();
    assert!(
        plan.contains("\"Index Name\":\"shards_pending_idx\""),
        "the pending shard is not found by its index: {plan}"
    );
    assert!(!plan.contains("Seq Scan"), "the lease statement scans a table: {plan}");
    Ok(())
}

/// The Python with DuckDB that `scripts/test` provisions, a real reader of every format.
fn duckdb_python() -> anyhow::Result<String> {
    std::env::var("IPW_TEST_PYTHON").map_err(|_| {
        anyhow::anyhow!("IPW_TEST_PYTHON is not set: run the suite through scripts/test, which installs DuckDB")
    })
}

/// Counts and sums of an exported file, as DuckDB reads it.
fn duckdb_figures(file: &std::path::Path, reader: &str) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT count(*), sum(tokens_out), CAST(round(sum(energy_j) * 4) AS BIGINT), count(energy_j), count(DISTINCT query_external_id),
                sum(CASE WHEN correct THEN 1 ELSE 0 END), count(error), min(typeof(started_at))
         FROM {reader}('{}')",
        file.display()
    );
    let out = std::process::Command::new(duckdb_python()?)
        .args(["-c", "import duckdb, sys; print('|'.join(map(str, duckdb.sql(sys.argv[1]).fetchone())))", &sql])
        .output()?;
    anyhow::ensure!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::test]
async fn an_export_reads_back_through_duckdb_with_the_counts_and_sums_of_the_database() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(300, "export").await?;
    let run: Uuid = fleet.create_run("export", 250, 100, 1, 8).await?.run_id.parse()?;
    // Fixture rows, written straight into the database: a quarter without energy (with the
    // reason), a tenth with an engine error, every other one scored correct.
    let agent = ipw_e2e::fixture_agent(&fleet.pool, "fixture", "cpu:test:2c:8GiB").await?;
    sqlx::query(
        "INSERT INTO results (run_id, shard_id, query_id, repetition, agent_id, started_at, latency_s, tokens_in,
                              tokens_out, response, error, power_source, energy_j, energy_null_reason)
         SELECT run_id, shard_id, query_id, 0, $2, now() - position * interval '1 s', 1.5, 40, 10 + position % 7,
                'The answer is (A).', CASE WHEN position % 10 = 3 THEN 'engine answered 500' END,
                CASE WHEN position % 4 = 0 THEN 'none' ELSE 'rapl' END,
                CASE WHEN position % 4 = 0 THEN NULL ELSE 0.25 * position END,
                CASE WHEN position % 4 = 0 THEN 'no readable power source' END
         FROM run_queries WHERE run_id = $1",
    )
    .bind(run)
    .bind(agent)
    .execute(&fleet.pool)
    .await?;
    sqlx::query(
        "INSERT INTO scores (scoring_id, result_id, scorer, correct)
         SELECT sc.id, r.id, 'mcq', r.id % 2 = 0 FROM results r JOIN scorings sc ON sc.run_id = r.run_id
         WHERE r.run_id = $1 AND r.error IS NULL",
    )
    .bind(run)
    .execute(&fleet.pool)
    .await?;
    let expected: String = sqlx::query_scalar(
        "SELECT concat_ws('|', count(*), sum(r.tokens_out), round(sum(r.energy_j) * 4)::bigint, count(r.energy_j),
                          count(DISTINCT q.external_id), count(*) FILTER (WHERE s.correct), count(r.error), '{}')
         FROM results r JOIN queries q ON q.id = r.query_id LEFT JOIN scores s ON s.result_id = r.id
         WHERE r.run_id = $1",
    )
    .bind(run)
    .fetch_one(&fleet.pool)
    .await?;

    use ipw_coordinator::cli::export::{ExportFormat, export};
    let url = fleet.coordinator.url();
    for (format, reader, kind) in [
        (ExportFormat::Parquet, "read_parquet", "TIMESTAMP WITH TIME ZONE"),
        (ExportFormat::Csv, "read_csv", "TIMESTAMP WITH TIME ZONE"),
        // JSON has no instant type: DuckDB reads the ISO text as text.
        (ExportFormat::Jsonl, "read_json", "VARCHAR"),
    ] {
        let file = fleet.dir.path().join(format!("export.{format:?}"));
        let written = export(&mut fleet.admin, &url, vec![run.to_string()], None, format, &file).await?;
        assert_eq!(written, 250);
        assert!(!fleet.dir.path().join(format!("export.{format:?}.partial")).exists());
        let read = duckdb_figures(&file, reader)?;
        assert_eq!(read, expected.replace("{}", kind), "{format:?} read back by DuckDB");
    }

    // A run that does not exist writes nothing.
    let file = fleet.dir.path().join("none.parquet");
    let refused =
        export(&mut fleet.admin, &url, vec![Uuid::new_v4().to_string()], None, ExportFormat::Parquet, &file).await;
    assert!(refused.unwrap_err().to_string().contains("no run"));
    assert!(!file.exists() && !fleet.dir.path().join("none.parquet.partial").exists());
    Ok(())
}

/// Two coordinator processes on one fresh database, the second a replica of the first (its CA
/// and admin token, read-only), a run of 16 queries in shards of 2, and one agent joined to
/// each replica.
struct TwoReplicas {
    dir: tempfile::TempDir,
    database_url: String,
    first: ipw_e2e::CoordinatorProcess,
    /// Held so the replica keeps serving.
    _second: ipw_e2e::CoordinatorProcess,
    run_id: Uuid,
    on_first: ipw_agent::config::AgentConfig,
    on_second: ipw_agent::config::AgentConfig,
}

impl TwoReplicas {
    const QUERIES: i64 = 16;

    async fn start(lease_ttl: &str, max_tokens: u32) -> anyhow::Result<Self> {
        use ipw_e2e::CoordinatorProcess;
        let dir = tempfile::tempdir()?;
        let database_url = ipw_e2e::fresh_database_url().await?;
        let first = CoordinatorProcess::start(dir.path().join("first"), &database_url, lease_ttl).await?;
        let second =
            CoordinatorProcess::start_replica(&first, dir.path().join("second"), &database_url, lease_ttl).await?;
        // One CA and one admin credential: the second serves a certificate of the first's CA,
        // and takes the first's admin token.
        let (mut admin, mut admin2) = (first.admin().await?, second.admin().await?);
        let slice = dir.path().join("slice.jsonl");
        let text = std::fs::read_to_string(ipw_e2e::mmlu_pro())?;
        std::fs::write(&slice, text.lines().take(100).collect::<Vec<_>>().join("\n"))?;
        ipw_coordinator::cli::workloads::import_workload(&mut admin, &slice, "slice").await?;
        let token = admin2
            .create_token(ipw_proto::v1::CreateTokenRequest {
                ttl_seconds: 60,
                max_uses: 2,
                auto_approve: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let run = admin2
            .create_run(ipw_proto::v1::CreateRunRequest {
                workload: "slice".into(),
                model: "SmolLM2-135M-Instruct".into(),
                sample: Self::QUERIES as u32,
                seed: 7,
                concurrency: 1,
                shard_size: 2,
                repetitions: 1,
                params: Some(ipw_proto::v1::GenerationParams { max_tokens, temperature: 0.0, top_p: 1.0 }),
                ..Default::default()
            })
            .await?
            .into_inner();
        let trust = ipw_agent::join::Trust::Pinned(first.fingerprint()?);
        let on_first = ipw_agent::join::join(&first.url, &trust, &token.token, "on-first", Default::default()).await?;
        let on_second =
            ipw_agent::join::join(&second.url, &trust, &token.token, "on-second", Default::default()).await?;
        let run_id = Uuid::parse_str(&run.run_id)?;
        Ok(Self { dir, database_url, first, _second: second, run_id, on_first, on_second })
    }

    /// Results of the run, distinct (query, repetition) among them, and duplicate attempts.
    async fn counts(&self, pool: &sqlx::PgPool) -> anyhow::Result<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(*), count(DISTINCT (query_id, repetition)),
                    (SELECT count(*) FROM duplicate_attempts WHERE run_id = $1)
             FROM results WHERE run_id = $1",
        )
        .bind(self.run_id)
        .fetch_one(pool)
        .await?)
    }

    /// Shards completed by each agent, by name.
    async fn shards_by_agent(&self, pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT a.name, count(*) FROM shards s JOIN agents a ON a.id = s.completed_by
             WHERE s.run_id = $1 GROUP BY a.name ORDER BY a.name",
        )
        .bind(self.run_id)
        .fetch_all(pool)
        .await?)
    }

    async fn status(&self, pool: &sqlx::PgPool) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("SELECT status FROM runs WHERE id = $1").bind(self.run_id).fetch_one(pool).await?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_serve_one_run_exactly_once() -> anyhow::Result<()> {
    let r = TwoReplicas::start("60s", 16).await?;
    // One agent on each replica, started together.
    let quiet = || std::process::Stdio::null();
    let mut on_first = ipw_e2e::agent_process(r.dir.path(), &r.on_first)?.stdout(quiet()).spawn()?;
    let mut on_second = ipw_e2e::agent_process(r.dir.path(), &r.on_second)?.stdout(quiet()).spawn()?;
    let (sa, sb) =
        tokio::time::timeout(Duration::from_secs(300), async { (on_first.wait().await, on_second.wait().await) })
            .await?;
    assert!(sa?.success() && sb?.success());

    let pool = sqlx::PgPool::connect(&r.database_url).await?;
    let n = TwoReplicas::QUERIES;
    assert_eq!(r.counts(&pool).await?, (n, n, 0), "every query measured exactly once");
    let shards_by_agent = r.shards_by_agent(&pool).await?;
    assert_eq!(shards_by_agent.iter().map(|(_, n)| n).sum::<i64>(), 8);
    assert_eq!(shards_by_agent.len(), 2, "both replicas' agents took shards: {shards_by_agent:?}");
    assert_eq!(r.status(&pool).await?, "completed");
    Ok(())
}

/// A replica killed mid-run: its agent's leases run out and the other replica's agent takes
/// them; when the replica is back, what its agent measured meanwhile is a duplicate, never a
/// second count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_leaves_its_shards_to_the_other_and_every_query_lands_once() -> anyhow::Result<()> {
    let mut r = TwoReplicas::start("6s", 24).await?;
    let quiet = || std::process::Stdio::null();
    let mut on_first =
        ipw_e2e::agent_service_process(r.dir.path(), &r.on_first)?.stdout(quiet()).kill_on_drop(true).spawn()?;
    let mut on_second =
        ipw_e2e::agent_service_process(r.dir.path(), &r.on_second)?.stdout(quiet()).kill_on_drop(true).spawn()?;

    let pool = sqlx::PgPool::connect(&r.database_url).await?;
    let n = TwoReplicas::QUERIES;
    let before = ipw_e2e::wait_for_results(&pool, r.run_id, 3).await?;
    anyhow::ensure!(before < n, "the kill must come mid-run");
    r.first.kill().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    r.first.restart().await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let status = r.status(&pool).await?;
        if status == "completed" {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the run did not complete (status {status})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (results, distinct, _) = r.counts(&pool).await?;
    assert_eq!((results, distinct), (n, n), "every query exactly once");
    let by_agent = r.shards_by_agent(&pool).await?;
    assert!(
        by_agent.iter().any(|(name, _)| name == "on-second"),
        "the surviving replica's agent took shards: {by_agent:?}"
    );
    on_first.start_kill()?;
    on_second.start_kill()?;
    eprintln!("killed one replica with {before} of {n} results committed; shards completed by agent: {by_agent:?}");
    Ok(())
}
