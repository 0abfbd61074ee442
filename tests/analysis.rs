//! The analysis views and functions against rows inserted by hand, with every expected
//! figure worked out here; and the judge scorer against the real SmolLM2 server.

use ipw_coordinator::domain::report::Report;
use ipw_e2e::Fleet;
use ipw_e2e::fixture::{Fixture, R, close, ok};
use ipw_proto::v1::{ReportRequest, ScoreRunRequest};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn ipw_summary_matches_hand_computed_figures() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 4).await?;
    let agent = fx.agent("cpu:test:2c:8GiB").await?;
    // q1 right, 10 W; q2 wrong, 20 W; q3 right with no energy; q4 an engine error at 10 W.
    let results = [
        R {
            correct: Some(true),
            latency: 1.0,
            ttft: Some(0.1),
            tokens: 20,
            energy: Some(10.0),
            dynamic: Some(4.0),
            error: false,
        },
        R {
            correct: Some(false),
            latency: 2.0,
            ttft: Some(0.2),
            tokens: 40,
            energy: Some(40.0),
            dynamic: Some(20.0),
            error: false,
        },
        R { correct: Some(true), latency: 4.0, ttft: Some(0.3), tokens: 10, energy: None, dynamic: None, error: false },
        R { correct: None, latency: 0.5, ttft: None, tokens: 0, energy: Some(5.0), dynamic: Some(1.0), error: true },
    ];
    let (run, ingest) = fx.run("m1", agent, "2026-05-01", &results).await?;

    let row = sqlx::query_as::<_, (i64, i64, i64, i64, i64, f64, f64, f64, f64, f64, f64)>(
        "SELECT queries, errors, scored, unscored, correct, accuracy, accuracy_ci_low, accuracy_ci_high,
                latency_mean_s, latency_p50_s, latency_p95_s
         FROM ipw_summary WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&fleet.pool)
    .await?;
    // acc = 1, 0, 1, 0 (the error counts as wrong): 2 of 4.
    assert_eq!((row.0, row.1, row.2, row.3, row.4), (4, 1, 4, 0, 2));
    assert!(close(row.5, 0.5));
    // Wilson, k = 2, n = 4, z = 1.96.
    let (z2, p, n) = (1.96f64 * 1.96, 0.5, 4.0);
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = 1.96 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    assert!(close(row.6, centre - half) && close(row.7, centre + half), "{} {}", row.6, row.7);
    // Latency over the three non-error results 1, 2, 4: mean 7/3, p50 2, p95 2 + 0.9 * 2.
    assert!(close(row.8, 7.0 / 3.0) && close(row.9, 2.0) && close(row.10, 3.8));

    let e = sqlx::query_as::<_, (f64, f64, f64, f64, f64, f64, f64, f64, f64, f64, i64, f64, String, String)>(
        "SELECT ttft_mean_s, ttft_p50_s, ttft_p95_s, output_tokens_per_s, joules_per_query, dynamic_joules_per_query,
                mean_power_w, mean_dynamic_power_w, tokens_per_joule, ipw, tokens_out, ipj, power_source,
                energy_null_reason
         FROM ipw_summary WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&fleet.pool)
    .await?;
    assert!(close(e.0, 0.2) && close(e.1, 0.2) && close(e.2, 0.29), "ttft {} {} {}", e.0, e.1, e.2);
    // Tokens per second of the non-error results: 20/1, 40/2, 10/4.
    assert!(close(e.3, (20.0 + 20.0 + 2.5) / 3.0));
    // Energy over the three results that have it (NULL is skipped, not zero): 10, 40, 5.
    assert!(close(e.4, 55.0 / 3.0) && close(e.5, 25.0 / 3.0));
    // Power 10, 20, 10 W; dynamic 4, 10, 2 W.
    assert!(close(e.6, 40.0 / 3.0) && close(e.7, 16.0 / 3.0));
    assert!(close(e.8, 60.0 / 55.0));
    // IPW is a ratio of means over the results with both a score and power: acc 1, 0, 0 over
    // 10, 20, 10 W. The mean of per-query ratios would be (1/10 + 0 + 0) / 3 = 0.0333.
    let ratio_of_means = (1.0 / 3.0) / (40.0 / 3.0);
    assert!(close(e.9, ratio_of_means) && !close(e.9, (1.0 / 10.0) / 3.0));
    assert_eq!(e.10, 70);
    assert!(close(e.11, (1.0 / 3.0) / (55.0 / 3.0)));
    assert_eq!((e.12.as_str(), e.13.as_str()), ("none, rapl", "no readable power source"));

    // A later scoring (q2 judged right after all) becomes what the views read; naming the
    // ingest scoring brings the old one back; both are kept.
    fx.rescore_all_correct(run).await?;
    let latest: f64 = sqlx::query_scalar("SELECT accuracy FROM ipw_summary WHERE run_id = $1")
        .bind(run)
        .fetch_one(&fleet.pool)
        .await?;
    assert!(close(latest, 0.75));
    let mut conn = fleet.pool.acquire().await?;
    sqlx::query("SELECT set_config('ipw.scoring', $1, false)").bind(ingest.to_string()).execute(&mut *conn).await?;
    let named: f64 = sqlx::query_scalar("SELECT accuracy FROM ipw_summary WHERE run_id = $1")
        .bind(run)
        .fetch_one(&mut *conn)
        .await?;
    assert!(close(named, 0.5));
    sqlx::query("SELECT set_config('ipw.scoring', '', false)").execute(&mut *conn).await?;

    // The same through the report call, naming the scoring.
    let report = fleet
        .admin
        .clone()
        .get_report(ReportRequest {
            run_ids: vec![run.to_string()],
            scoring_id: ingest.to_string(),
            with_points: false,
        })
        .await?
        .into_inner();
    let report = Report::from_wire(report)?;
    assert_eq!(report.rows[0].accuracy, Some(0.5));
    assert_eq!(report.rows[0].scoring_id, Some(ingest));
    Ok(())
}

#[tokio::test]
async fn coverage_counts_best_of_local_over_common_queries() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 5).await?;
    let agent = fx.agent("cpu:test:2c:8GiB").await?;
    // Run A: q0..q4 with q0, q2 right. Run B: q0..q3 with q1, q2 right. Common: q0..q3.
    let a = [ok(true, 1.0, 1.0), ok(false, 1.0, 1.0), ok(true, 1.0, 1.0), ok(false, 1.0, 1.0), ok(true, 1.0, 1.0)];
    let b = [ok(false, 1.0, 1.0), ok(true, 1.0, 1.0), ok(true, 1.0, 1.0), ok(false, 1.0, 1.0)];
    let (ra, _) = fx.run("small", agent, "2026-05-01", &a).await?;
    let (rb, _) = fx.run("large", agent, "2026-05-01", &b).await?;
    let rows: Vec<(String, Option<String>, i64, i64, f64)> =
        sqlx::query_as("SELECT label, model, queries, correct, share FROM coverage($1) ORDER BY label, model")
            .bind(vec![ra, rb])
            .fetch_all(&fleet.pool)
            .await?;
    assert_eq!(
        rows,
        [
            ("best-of-local".to_owned(), None, 4, 3, 0.75),
            ("model".to_owned(), Some("large".to_owned()), 4, 2, 0.5),
            ("model".to_owned(), Some("small".to_owned()), 4, 2, 0.5),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn attribution_splits_the_ipw_ratio_and_names_missing_cells() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 1).await?;
    let (ha, hb) = (fx.agent("cpu:old:2c:8GiB").await?, fx.agent("gpu:nvidia:H100:80GiB:x1").await?);
    // One correct query per cell, 1 s long, so IPW = 1 / power: 0.01, 0.03, 0.02, 0.05.
    fx.run("ma", ha, "2026-01-01", &[ok(true, 1.0, 100.0)]).await?;
    fx.run("mb", ha, "2026-01-01", &[ok(true, 1.0, 100.0 / 3.0)]).await?;
    fx.run("ma", hb, "2026-01-01", &[ok(true, 1.0, 50.0)]).await?;
    let attribution = "SELECT ipw_a, ipw_b, ratio, model_factor, hardware_factor, missing
                       FROM attribution('ma', 'cpu:old:2c:8GiB', 'mb', 'gpu:nvidia:H100:80GiB:x1')";

    // Three cells: no factors, and the missing one named.
    /// ipw_a, ipw_b, ratio, model_factor, hardware_factor, missing.
    type Attribution = (Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Vec<String>);
    let (aa, bb, ratio, m, h, missing): Attribution = sqlx::query_as(attribution).fetch_one(&fleet.pool).await?;
    assert!(close(aa.unwrap(), 0.01));
    assert_eq!((bb, ratio, m, h), (None, None, None, None));
    assert_eq!(missing, ["mb on gpu:nvidia:H100:80GiB:x1"]);

    fx.run("mb", hb, "2026-01-01", &[ok(true, 1.0, 20.0)]).await?;
    let (aa, bb, ratio, m, h, missing): Attribution = sqlx::query_as(attribution).fetch_one(&fleet.pool).await?;
    let (aa, bb, ratio, m, h) = (aa.unwrap(), bb.unwrap(), ratio.unwrap(), m.unwrap(), h.unwrap());
    // By hand: ratio 0.05 / 0.01 = 5; model = sqrt(3 * 2.5) = 2.7386; hardware = sqrt(2 * 5/3)
    // = 1.8257; their product is the ratio.
    assert!(close(aa, 0.01) && close(bb, 0.05) && close(ratio, 5.0));
    assert!(close(m, 7.5f64.sqrt()) && close(h, (10.0f64 / 3.0).sqrt()));
    assert!(close(m * h, ratio));
    assert!(missing.is_empty());
    Ok(())
}

#[tokio::test]
async fn ipw_over_time_pools_runs_by_day() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 2).await?;
    let agent = fx.agent("cpu:test:2c:8GiB").await?;
    fx.run("m", agent, "2026-01-10", &[ok(true, 1.0, 10.0), ok(false, 1.0, 30.0)]).await?;
    fx.run("m", agent, "2026-01-10", &[ok(true, 1.0, 20.0)]).await?;
    fx.run("m", agent, "2026-03-10", &[ok(true, 1.0, 5.0), ok(true, 1.0, 15.0)]).await?;
    let rows: Vec<(String, i64, i64, f64)> =
        sqlx::query_as("SELECT day::text, runs, queries, ipw FROM ipw_over_time ORDER BY day")
            .fetch_all(&fleet.pool)
            .await?;
    assert_eq!(rows.len(), 2);
    // Jan 10: acc 1, 0, 1 over 10, 30, 20 W, pooled: (2/3) / 20. Mar 10: 1 / 10.
    assert_eq!((rows[0].0.as_str(), rows[0].1, rows[0].2), ("2026-01-10", 2, 3));
    assert!(close(rows[0].3, (2.0 / 3.0) / 20.0));
    assert_eq!(rows[1].0, "2026-03-10");
    assert!(close(rows[1].3, 0.1));
    Ok(())
}

/// The judge path end to end with the real SmolLM2 as a (weak) judge: the verdicts are not
/// judged, the plumbing is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_scoring_records_the_judge_and_keeps_the_ingest_scoring() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("open.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"sky\", \"prompt\": \"What colour is a clear daytime sky? One word.\", \"answer\": \"Blue\", \"scorer\": \"judge\"}\n\
         {\"id\": \"ice\", \"prompt\": \"What is frozen water called? One word.\", \"answer\": \"Ice\", \"scorer\": \"judge\"}\n\
         {\"id\": \"sum\", \"prompt\": \"What is 2+3? Give the number.\", \"answer\": \"5\", \"scorer\": \"numeric\"}\n",
    )?;
    fleet.import(&file, "open").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "judged").await?;
    let run = fleet.create_run("open", 3, 3, 1, 24).await?;
    ipw_agent::runner::run(&agent, &fleet.spool("judged"), &fleet.run_options()).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    // At ingest, the judge queries wait for a judge; the numeric one is scored.
    let unscored: i64 = sqlx::query_scalar("SELECT unscored FROM ipw_summary WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(unscored, 2);

    let scored = fleet
        .admin
        .score_run(ScoreRunRequest {
            run_id: run.run_id.clone(),
            judge_url: ipw_e2e::engine_url(),
            judge_model: "SmolLM2-135M-Instruct".into(),
            strictness: "lenient".into(),
            judge_concurrency: 2,
            judge_all: false,
        })
        .await?
        .into_inner();
    assert_eq!(scored.scored + scored.failed, 3);
    assert!(scored.judge_version.starts_with("models: "), "{}", scored.judge_version);
    assert_eq!(scored.failures.len() as u64, scored.failed);

    let scoring = Uuid::parse_str(&scored.scoring_id)?;
    let (model, hash, strictness, version, completed): (String, String, String, String, bool) = sqlx::query_as(
        "SELECT judge_model, judge_prompt_hash, judge_strictness, judge_version, completed_at IS NOT NULL FROM scorings WHERE id = $1",
    )
    .bind(scoring)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((model.as_str(), strictness.as_str(), completed), ("SmolLM2-135M-Instruct", "lenient", true));
    assert_eq!(hash, ipw_coordinator::domain::scoring::judge::prompt_hash());
    assert_eq!(version, scored.judge_version);
    // Each judged result has a verdict with both raw replies, or an error and no verdict.
    let judged: Vec<(Option<bool>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT correct, verdict, error FROM scores WHERE scoring_id = $1 AND scorer = 'judge'")
            .bind(scoring)
            .fetch_all(&fleet.pool)
            .await?;
    assert_eq!(judged.len(), 2);
    for (correct, verdict, error) in &judged {
        match correct {
            Some(_) => assert!(
                verdict.as_deref().is_some_and(|v| v.contains("reference-first:") && v.contains("response-first:"))
            ),
            None => assert!(error.is_some()),
        }
    }
    // The views now read the new scoring, failed judgements stay unscored (not wrong), and the
    // ingest scoring is still there.
    let (unscored, scoring_used): (i64, Uuid) =
        sqlx::query_as("SELECT unscored, scoring_id FROM ipw_summary WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!((unscored as u64, scoring_used), (scored.failed, scoring));
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM scorings WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(kept, 2);
    Ok(())
}

/// The documented query (docs/sql.md) for "which runs changed driver between two dates".
const DRIVER_CHANGES: &str = "
    SELECT run_id, hardware_class, to_char(run_created_at, 'YYYY-MM-DD') AS day, previous_driver, driver_version
    FROM (SELECT run_id, hardware_class, run_created_at, driver_version,
                 lag(driver_version) OVER (PARTITION BY hardware_class ORDER BY run_created_at) AS previous_driver
          FROM run_provenance_by_run) t
    WHERE run_created_at BETWEEN $1::date AND $2::date
      AND previous_driver IS NOT NULL AND driver_version IS DISTINCT FROM previous_driver
    ORDER BY run_created_at";

#[tokio::test]
async fn provenance_answers_which_runs_changed_driver_in_one_query() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 1).await?;
    let (gpu, cpu) = (fx.agent("gpu:nvidia:H100:80GiB:x1").await?, fx.agent("cpu:epyc:2c:24GiB").await?);
    let mut runs = Vec::new();
    for (agent, day, driver) in [
        (gpu, "2026-01-10", Some("550.54.15")),
        (gpu, "2026-02-10", Some("550.54.15")),
        (gpu, "2026-03-10", Some("560.35.03")),
        (gpu, "2026-08-10", Some("570.86.10")),
        (cpu, "2026-03-12", None),
    ] {
        let (run, _) = fx.run("m", agent, day, &[ok(true, 1.0, 10.0)]).await?;
        sqlx::query(
            "INSERT INTO run_provenance (run_id, agent_id, agent_version, agent_git_revision, engine_name,
                                         engine_version, engine_model, driver_version, os, kernel, cpu_model)
             VALUES ($1, $2, '0.1.0', 'abc', 'llama.cpp', 'b1', 'm.gguf', $3, 'Linux', '6.8', 'EPYC')",
        )
        .bind(run)
        .bind(agent)
        .bind(driver)
        .execute(&fleet.pool)
        .await?;
        runs.push(run);
    }
    /// run, hardware class, day, previous driver, driver.
    type Change = (Uuid, String, String, Option<String>, Option<String>);
    let changed: Vec<Change> =
        sqlx::query_as(DRIVER_CHANGES).bind("2026-01-01").bind("2026-06-30").fetch_all(&fleet.pool).await?;
    // Only the March GPU run changed driver in the first half; August is outside the dates.
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].0, runs[2]);
    assert_eq!((changed[0].3.as_deref(), changed[0].4.as_deref()), (Some("550.54.15"), Some("560.35.03")));
    Ok(())
}

/// Each `ipw_summary` row of `run`, whole, as JSON text, in hardware-class order.
async fn summary_rows(conn: &mut sqlx::PgConnection, view: &str, run: Uuid) -> anyhow::Result<Vec<String>> {
    let sql = format!("SELECT row_to_json(s)::text FROM {view} s WHERE run_id = $1 ORDER BY hardware_class");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(run).fetch_all(&mut *conn).await?)
}

#[tokio::test]
async fn stored_summaries_equal_the_live_aggregate_in_every_column_under_every_scoring() -> anyhow::Result<()> {
    let fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 4).await?;
    let agent = fx.agent("cpu:test:2c:8GiB").await?;
    let results = [
        ok(true, 1.0, 10.0),
        ok(false, 2.0, 40.0),
        R { correct: Some(true), latency: 4.0, ttft: Some(0.3), tokens: 10, energy: None, dynamic: None, error: false },
        R { correct: None, latency: 0.5, ttft: None, tokens: 0, energy: Some(5.0), dynamic: Some(1.0), error: true },
    ];
    let (run, ingest) = fx.run("m1", agent, "2026-05-01", &results).await?;
    let mut conn = fleet.pool.acquire().await?;
    let live = summary_rows(&mut conn, "ipw_summary", run).await?;
    assert_eq!(live.len(), 1);

    // The summaries job stores the finished run; the view then reads the stored row, and it
    // is the live one, every column.
    assert_eq!(ipw_coordinator::jobs::summaries::tick(&fleet.pool).await?, 1);
    assert_eq!(summary_rows(&mut conn, "run_summaries", run).await?.len(), 1);
    assert_eq!(summary_rows(&mut conn, "ipw_summary", run).await?, live);
    let mut tx = fleet.pool.begin().await?;
    sqlx::query("UPDATE run_summaries SET queries = -1 WHERE run_id = $1").bind(run).execute(&mut *tx).await?;
    let read: i64 =
        sqlx::query_scalar("SELECT queries FROM ipw_summary WHERE run_id = $1").bind(run).fetch_one(&mut *tx).await?;
    assert_eq!(read, -1, "ipw_summary reads the stored row");
    tx.rollback().await?;

    // A re-scoring: the stored row belongs to the ingest scoring, so the view computes the new
    // one live until it too is stored; both equal the live aggregate, and naming the ingest
    // scoring reads its stored row.
    let rescore = fx.rescore_all_correct(run).await?;
    let rescored_live = summary_rows(&mut conn, "run_summary_live", run).await?;
    assert_ne!(rescored_live, summary_rows(&mut conn, "run_summaries", run).await?);
    assert_eq!(ipw_coordinator::jobs::summaries::tick(&fleet.pool).await?, 1);
    assert_eq!(summary_rows(&mut conn, "run_summaries", run).await?.len(), 2, "one row per scoring");
    let rescored = summary_rows(&mut conn, "ipw_summary", run).await?;
    assert!(
        rescored[0].contains(&format!("\"scoring_id\":\"{rescore}\"")) && rescored[0].contains("\"accuracy\":0.75")
    );
    sqlx::query("SELECT set_config('ipw.scoring', $1, false)").bind(ingest.to_string()).execute(&mut *conn).await?;
    assert_eq!(summary_rows(&mut conn, "ipw_summary", run).await?, live);
    assert_eq!(summary_rows(&mut conn, "run_summary_live", run).await?.len(), 1);
    sqlx::query("SELECT set_config('ipw.scoring', '', false)").execute(&mut *conn).await?;

    // A change to the run's results drops what was stored: the view is live again and right.
    sqlx::query("UPDATE results SET latency_s = latency_s * 2 WHERE run_id = $1")
        .bind(run)
        .execute(&fleet.pool)
        .await?;
    assert!(summary_rows(&mut conn, "run_summaries", run).await?.is_empty());
    let rows = summary_rows(&mut conn, "run_summary_rows", run).await?;
    assert_eq!(rows, summary_rows(&mut conn, "run_summary_live", run).await?);
    assert!(rows[0].contains("\"latency_mean_s\":4.666666666666667"), "{rows:?}");
    Ok(())
}
