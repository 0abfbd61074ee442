//! What the scale benchmark generates, and its raw PostgreSQL baselines: the workload file,
//! `COPY` of the same rows the coordinator wrote, and synthetic result rows for the views.

use anyhow::Context;
use futures::TryStreamExt;
use sqlx::{PgPool, Row};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::Instant;
use uuid::Uuid;

/// Writes `lines` MMLU-Pro lines to `out`: the questions of `source` in turn, each with a new
/// `question_id` (its line number), so every line is a distinct query. Returns the bytes.
pub fn write_workload(source: &Path, out: &Path, lines: usize) -> anyhow::Result<u64> {
    let questions: Vec<serde_json::Map<String, serde_json::Value>> = std::io::BufReader::new(
        std::fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?,
    )
    .lines()
    .map(|l| Ok(serde_json::from_str(&l?)?))
    .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!questions.is_empty(), "{} has no questions", source.display());
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    for i in 0..lines {
        let mut q = questions[i % questions.len()].clone();
        q.insert("question_id".into(), serde_json::Value::from(i as u64 + 1));
        serde_json::to_writer(&mut w, &q)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(std::fs::metadata(out)?.len())
}

/// `COPY ... TO STDOUT` of `select`, whole, in memory, in `format` (text or binary).
async fn copy_out(pool: &PgPool, select: &str, format: &str) -> anyhow::Result<Vec<bytes::Bytes>> {
    let mut conn = pool.acquire().await?;
    let stream = conn.copy_out_raw(&format!("COPY ({select}) TO STDOUT WITH (FORMAT {format})")).await?;
    Ok(stream.try_collect().await?)
}

/// Seconds `COPY table (columns) FROM STDIN` takes to load `rows` in `format`, inside a
/// transaction that `prepare` starts and that is rolled back afterwards, so the database is
/// left as it was.
async fn copy_in_timed(
    pool: &PgPool,
    prepare: &[String],
    target: &str,
    format: &str,
    rows: &[bytes::Bytes],
) -> anyhow::Result<(f64, u64)> {
    let mut tx = pool.begin().await?;
    for statement in prepare {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone())).execute(&mut *tx).await?;
    }
    let start = Instant::now();
    let mut copy = tx.copy_in_raw(&format!("COPY {target} FROM STDIN WITH (FORMAT {format})")).await?;
    for chunk in rows {
        copy.send(chunk.as_ref()).await?;
    }
    let n = copy.finish().await?;
    let secs = start.elapsed().as_secs_f64();
    tx.rollback().await?;
    Ok((secs, n))
}

/// The baselines for an import: `COPY` of the rows the import wrote into `queries`, under a
/// new workload, in the text and in the binary format. Seconds of each, and rows.
pub async fn copy_queries_baseline(pool: &PgPool, workload_id: Uuid) -> anyhow::Result<(f64, f64, u64)> {
    let copy_id = Uuid::new_v4();
    let cols = "external_id, line_no, prompt, choices, answer, category, scorer, tolerance";
    let select =
        format!("SELECT '{copy_id}'::uuid, {cols} FROM queries WHERE workload_id = '{workload_id}' ORDER BY id");
    let prepare = [format!(
        "INSERT INTO workloads (id, name, format, n_queries) VALUES ('{copy_id}', 'copy-baseline', 'generic', 0)"
    )];
    let target = format!("queries (workload_id, {cols})");
    let (text_s, n) = copy_in_timed(pool, &prepare, &target, "text", &copy_out(pool, &select, "text").await?).await?;
    let (binary_s, _) =
        copy_in_timed(pool, &prepare, &target, "binary", &copy_out(pool, &select, "binary").await?).await?;
    Ok((text_s, binary_s, n))
}

/// The baseline for ingest: `COPY` of the result rows `run` holds into `twin`, a run over the
/// same sample and shards. Seconds and rows.
pub async fn copy_results_baseline(pool: &PgPool, run: Uuid, twin: Uuid) -> anyhow::Result<(f64, u64)> {
    let cols = "query_id, repetition, agent_id, started_at, latency_s, ttft_s, mean_itl_s, tokens_in, tokens_out, \
                response, finish_reason, error, energy_j, dynamic_energy_j, power_source, power_scope, sample_hz, \
                energy_attribution, energy_null_reason, prefill_energy_j, decode_energy_j, itl_p50_s, itl_p95_s, \
                tpot_s, session_id, in_steady_window, start_delay_s";
    let prefixed = cols.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ");
    let rows = copy_out(
        pool,
        &format!(
            "SELECT '{twin}'::uuid, s2.id, {prefixed} FROM results r
             JOIN shards s ON s.id = r.shard_id
             JOIN shards s2 ON s2.run_id = '{twin}' AND s2.shard_index = s.shard_index
             WHERE r.run_id = '{run}' ORDER BY r.id"
        ),
        "text",
    )
    .await?;
    copy_in_timed(pool, &[], &format!("results (run_id, shard_id, {cols})"), "text", &rows).await
}

/// Fills `run` with one synthetic, scored result per sampled query, all by `agent`, and
/// marks its shards and the run completed. These rows are a fixture for timing SQL in a
/// throwaway database: their energy is made up (`power_scope` says so) so that the figures
/// that read energy have work to do, and no figure from them is ever reported.
pub async fn fill_synthetic(pool: &PgPool, run: Uuid, agent: Uuid) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "INSERT INTO results (run_id, shard_id, query_id, repetition, agent_id, started_at, latency_s, ttft_s,
                              mean_itl_s, tokens_in, tokens_out, response, finish_reason, power_source, power_scope,
                              sample_hz, energy_j, tpot_s, itl_p50_s, itl_p95_s, in_steady_window)
         SELECT rq.run_id, rq.shard_id, rq.query_id, 0, $2,
                now() - interval '1 day' + rq.position * interval '10 ms',
                1 + (rq.position % 97) / 10.0, 0.05 + (rq.position % 13) / 100.0, 0.02, 300 + rq.position % 50,
                100 + rq.position % 200, 'The answer is (' || chr(65 + rq.position % 10) || ').', 'stop', 'rapl',
                'synthetic benchmark fixture, not a measurement', 10, 5 + (rq.position % 200) * 0.3, 0.02, 0.02,
                0.03, true
         FROM run_queries rq WHERE rq.run_id = $1",
    )
    .bind(run)
    .bind(agent)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO scores (scoring_id, result_id, scorer, extracted, correct)
         SELECT sc.id, r.id, 'mcq', right(r.response, 3), r.id % 3 = 0
         FROM results r JOIN scorings sc ON sc.run_id = r.run_id AND sc.kind = 'ingest' WHERE r.run_id = $1",
    )
    .bind(run)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE shards SET status = 'completed', completed_by = $2, completed_at = now(), lease_owner = NULL,
                           lease_expires_at = NULL
         WHERE run_id = $1",
    )
    .bind(run)
    .bind(agent)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE runs SET status = 'completed', started_at = now(), completed_at = now() WHERE id = $1")
        .bind(run)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Waits until the coordinator has stored the run's summary (its summaries job); the seconds
/// it took, or an error after `limit` seconds.
pub async fn wait_for_summary(pool: &PgPool, run: Uuid, limit: f64) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let stored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_summaries WHERE run_id = $1)")
            .bind(run)
            .fetch_one(pool)
            .await?;
        if stored {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(start.elapsed().as_secs_f64() < limit, "run {run}: no summary stored after {limit} s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Seconds one SQL statement takes to run and return all its rows, and how many.
pub async fn time_query(pool: &PgPool, sql: &str) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    // Only the benchmark's own statements are timed.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(pool).await?;
    Ok((start.elapsed().as_secs_f64(), rows.len()))
}

/// A workload's id, by name.
pub async fn workload_id(pool: &PgPool, name: &str) -> anyhow::Result<Uuid> {
    Ok(sqlx::query("SELECT id FROM workloads WHERE name = $1").bind(name).fetch_one(pool).await?.get(0))
}
