//! Two agents, one token, a sharded run of real MMLU-Pro questions on the real SmolLM2
//! server, results and IPW in Postgres.

use ipw_agent::runner::{self, RunOptions};
use ipw_coordinator::domain::report::Report;
use ipw_e2e::{Fleet, PowercapFixture, mmlu_pro};
use ipw_proto::v1::{ApproveAgentRequest, ReportRequest, RunStatusRequest};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_agents_share_a_sharded_run_and_every_query_lands_once() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    assert_eq!(fleet.import(&mmlu_pro(), "mmlu-pro").await?, 12_032);

    // One token, two agents; both start pending and are approved by name.
    let token = fleet.token(2, false, Duration::from_secs(3600)).await?;
    let a = fleet.join(&token, "agent-a").await?;
    let b = fleet.join(&token, "agent-b").await?;
    for name in ["agent-a", "agent-b"] {
        fleet.admin.approve_agent(ApproveAgentRequest { agent_id: name.into() }).await?;
    }

    let run = fleet.create_run("mmlu-pro", 24, 5, 2, 128).await?;
    assert_eq!((run.queries, run.shards), (24, 5));
    let run_id = Uuid::parse_str(&run.run_id)?;

    let opts = RunOptions { upload_batch: 3, ..fleet.run_options() };
    let (spool_a, spool_b) = (fleet.spool("a"), fleet.spool("b"));
    let (ra, rb) = tokio::join!(runner::run(&a, &spool_a, &opts), runner::run(&b, &spool_b, &opts));
    let (ra, rb) = (ra?, rb?);
    assert_eq!(ra.committed + rb.committed, 24);
    assert_eq!(ra.duplicates + rb.duplicates, 0);
    assert!(spool_a.is_empty()? && spool_b.is_empty()?, "acknowledged results leave the spool");

    // Every sampled query has exactly one result.
    let (sampled, with_one, results): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM run_queries WHERE run_id = $1),
                (SELECT count(*) FROM run_queries rq WHERE rq.run_id = $1
                   AND (SELECT count(*) FROM results r WHERE r.run_id = $1 AND r.query_id = rq.query_id) = 1),
                (SELECT count(*) FROM results WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((sampled, with_one, results), (24, 24, 24));

    // Real measurements: positive token counts, TTFT within latency, no engine errors.
    let (errors, bad_tokens, bad_ttft): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE error IS NOT NULL),
                count(*) FILTER (WHERE tokens_in <= 0 OR tokens_out <= 0),
                count(*) FILTER (WHERE ttft_s IS NULL OR ttft_s > latency_s OR latency_s <= 0)
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    let offenders: Vec<String> = sqlx::query_scalar(
        "SELECT format('query %s: error %s, tokens %s/%s, ttft %s, latency %s, %s', query_id, error, tokens_in,
                       tokens_out, ttft_s, latency_s, left(response, 80))
         FROM results
         WHERE run_id = $1 AND (error IS NOT NULL OR tokens_in <= 0 OR tokens_out <= 0 OR ttft_s IS NULL
                                OR ttft_s > latency_s OR latency_s <= 0)",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    assert_eq!((errors, bad_tokens, bad_ttft), (0, 0, 0), "{offenders:?}");

    // No power source on this machine: energy is NULL, with the reason, never a number.
    let (with_energy, reasons): (i64, i64) = sqlx::query_as(
        "SELECT count(energy_j), count(*) FILTER (WHERE energy_null_reason LIKE 'no readable power source%'
                                                   AND power_source = 'none')
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((with_energy, reasons), (0, 24));

    // Scored server side: every result has an mcq score, and accuracy is their mean.
    let (scored, correct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.correct)
         FROM scores s JOIN results r ON r.id = s.result_id WHERE r.run_id = $1 AND s.scorer = 'mcq'",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!(scored, 24);
    let report = fleet
        .admin
        .get_report(ReportRequest { run_ids: vec![run.run_id.clone()], ..Default::default() })
        .await?
        .into_inner();
    let report = Report::from_wire(report)?;
    assert_eq!(report.rows.len(), 1, "both agents share one hardware class");
    let row = &report.rows[0];
    assert_eq!(row.queries, 24);
    assert_eq!(row.accuracy, Some(correct as f64 / 24.0));
    assert!(row.latency_p50_s.is_some() && row.ttft_p95_s.is_some() && row.output_tokens_per_s.is_some());
    assert_eq!((row.mean_power_w, row.ipw, row.ipj), (None, None, None));
    assert!(row.energy_null_reason.as_deref().unwrap_or_default().starts_with("no readable power source"));

    // The shards were spread over both agents, and the run is complete.
    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!(status.status, "completed");
    assert_eq!(status.shards_completed, 5);
    assert_eq!(status.agents.len(), 2);
    assert!(status.agents.iter().all(|s| s.shards_completed >= 1), "{:?}", status.agents);
    assert_eq!(ra.shards + rb.shards, 5);
    // `ipw run status` shows the steady window without energy: one session per agent.
    let steady = status.steady.clone().expect("the sessions reported their steady windows");
    assert_eq!((steady.sessions, steady.load_pattern.as_str()), (2, "closed"));
    assert!(steady.steady_s > 0.0 && steady.load_mean.is_some(), "{steady:?}");
    let shown = ipw_coordinator::cli::render::table::render_status(&status);
    assert!(shown.contains("steady   ") && shown.contains("closed load"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_result_is_acknowledged_as_duplicate_and_not_recorded_twice() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet
        .import_lines(
            "tiny",
            &[
                r#"{"id": "capital", "prompt": "What is the capital of France? Answer with one word.", "answer": "Paris"}"#,
                r#"{"id": "sum", "prompt": "What is 2+3? Answer with a number only.", "answer": "5"}"#,
            ],
        )
        .await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "solo").await?;
    fleet.create_run("tiny", 2, 2, 1, 16).await?;
    let spool = fleet.spool("solo");
    let opts = fleet.run_options();
    let first = runner::run(&agent, &spool, &opts).await?;
    assert_eq!((first.committed, first.duplicates), (2, 0));

    // Put a committed result back in the spool, as if the ack had been lost in a crash.
    let (run_id, shard_id, query_id): (Uuid, Uuid, i64) =
        sqlx::query_as("SELECT run_id, shard_id, query_id FROM results LIMIT 1").fetch_one(&fleet.pool).await?;
    spool.put(&ipw_proto::v1::QueryResult {
        run_id: run_id.to_string(),
        shard_id: shard_id.to_string(),
        query_id,
        repetition: 0,
        started_unix_us: chrono_now_us(),
        latency_s: 1.0,
        response: "a different answer".into(),
        energy: Some(ipw_proto::v1::Energy { source: "none".into(), null_reason: "test".into(), ..Default::default() }),
        ..Default::default()
    })?;
    let second = runner::run(&agent, &spool, &opts).await?;
    assert_eq!((second.committed, second.duplicates), (0, 1));
    assert!(spool.is_empty()?);
    let (rows, kept): (i64, String) =
        sqlx::query_as("SELECT (SELECT count(*) FROM results), (SELECT response FROM results WHERE query_id = $1)")
            .bind(query_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!(rows, 2);
    assert_ne!(kept, "a different answer", "the first committed measurement is kept");

    // What the run was measured with, as the real llama-server reported it.
    let (engine, quantization, sha, model, git, os): (String, Option<String>, Option<String>, String, String, String) =
        sqlx::query_as(
            "SELECT engine_name, quantization, model_sha256, engine_model, agent_git_revision, os FROM run_provenance",
        )
        .fetch_one(&fleet.pool)
        .await?;
    let gguf = std::env::var("IPW_TEST_MODEL_FILE").expect("IPW_TEST_MODEL_FILE is set by scripts/test");
    let sha256sum = std::process::Command::new("sha256sum").arg(&gguf).output()?;
    let expected = String::from_utf8_lossy(&sha256sum.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!((engine.as_str(), quantization.as_deref()), ("llama.cpp", Some("Q4_1")));
    assert_eq!(sha.as_deref(), Some(expected.as_str()));
    assert_eq!(model, gguf);
    assert!(!git.is_empty() && !os.is_empty());
    Ok(())
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_micros() as i64
}

/// `--idle-every`: within a session the agent stops starting queries, lets the load drain,
/// measures idle again, then resumes. Each measurement is stored, the pauses are left out of
/// the steady window and reported, and every query still gets its energy. The watts are the
/// powercap fixture's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_is_measured_again_every_interval_and_the_pause_is_left_out_of_the_steady_window() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let lines: Vec<String> = (1..=12)
        .map(|i| format!(r#"{{"id": "{i}", "prompt": "Count from 1 to {}.", "answer": "x"}}"#, i + 5))
        .collect();
    fleet.import_lines("twelve", &lines.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "metered").await?;
    let run = fleet.create_run("twelve", 12, 4, 2, 48).await?;

    let fixture = PowercapFixture::start(fleet.dir.path(), 25.0)?;
    let mut opts = fleet.run_options();
    opts.power.idle = Duration::from_millis(500);
    opts.power.idle_every = Duration::from_secs(2);
    opts.power.discovery.powercap_root = fixture.root.clone();
    let summary = runner::run(&agent, &fleet.spool("metered"), &opts).await;
    drop(fixture);
    assert_eq!(summary?.committed, 12);
    let run_id = Uuid::parse_str(&run.run_id)?;

    let (idles, paused_s, window_s, with_energy): (i64, f64, f64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM session_idle i JOIN measurement_sessions m ON m.id = i.session_id
                 WHERE m.run_id = $1),
                (SELECT sum(paused_s) FROM measurement_sessions WHERE run_id = $1),
                (SELECT sum(steady_to_s - steady_from_s) FROM measurement_sessions WHERE run_id = $1),
                (SELECT count(energy_j) FROM results WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert!(idles >= 2, "idle measured at the start and again after 2 s: {idles} baselines");
    // Each repeat pauses at least for its 0.5 s measurement, and inside the window.
    assert!(paused_s >= 0.5 * (idles - 1) as f64, "paused {paused_s} s for {idles} baselines");
    assert!(paused_s < window_s, "the pauses ({paused_s} s) lie inside the window ({window_s} s)");
    assert_eq!(with_energy, 12, "every query has its energy across the pauses");
    let (steady_s, reported_pause): (f64, f64) =
        sqlx::query_as("SELECT steady_s, paused_s FROM ipw_summary WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert!((steady_s - (window_s - paused_s)).abs() < 1e-6, "steady {steady_s} s = window less pauses");
    assert!((reported_pause - paused_s).abs() < 1e-9);
    Ok(())
}

/// The whole energy path (sampler, idle baseline, attribution, upload, audit series, views)
/// driven by a RAPL counter in the kernel's sysfs format that this test advances at a known
/// 25 W. The figures are the fixture's, not a measurement; they check the plumbing and the
/// conservation of energy end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn energy_from_a_powercap_counter_is_attributed_conserved_and_audited() -> anyhow::Result<()> {
    const WATTS: f64 = 25.0;
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("four.jsonl");
    std::fs::write(
        &file,
        (1..=4)
            .map(|i| format!("{{\"id\": \"{i}\", \"prompt\": \"Count from 1 to {}.\", \"answer\": \"x\"}}\n", i + 3))
            .collect::<String>(),
    )?;
    fleet.import(&file, "four").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "metered").await?;
    let run = fleet.create_run("four", 4, 4, 2, 48).await?;

    let fixture = PowercapFixture::start(fleet.dir.path(), WATTS)?;
    let mut opts = fleet.run_options();
    opts.power.idle = Duration::from_secs(1);
    opts.power.discovery.powercap_root = fixture.root.clone();
    let summary = runner::run(&agent, &fleet.spool("metered"), &opts).await;
    drop(fixture);
    assert_eq!(summary?.committed, 4);
    let run_id = Uuid::parse_str(&run.run_id)?;

    // Every result carries energy with its provenance, split at its first token; none is missing.
    type Row = (f64, f64, f64, f64, f64, String, String, f64, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT energy_j, dynamic_energy_j, prefill_energy_j, decode_energy_j, latency_s, power_source, power_scope,
                sample_hz, energy_attribution
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    assert_eq!(rows.len(), 4);
    for (energy, dynamic, prefill, decode, latency, source, scope, hz, rule) in &rows {
        assert_eq!((source.as_str(), scope.as_str(), *hz, rule.as_str()), ("rapl", "cpu-package", 20.0, "time-share"));
        // Concurrency 2 shares the time, so a query gets between half and all of WATTS x latency.
        assert!(*energy >= 0.45 * WATTS * latency && *energy <= 1.05 * WATTS * latency, "{energy} J over {latency} s");
        // Idle power equals load power here, so dynamic energy is about nothing.
        assert!(dynamic.abs() <= 0.1 * energy, "dynamic {dynamic} of raw {energy}");
        assert!((prefill + decode - energy).abs() <= 1e-9 * energy, "prefill {prefill} + decode {decode} = {energy}");
        assert!(*prefill > 0.0 && *decode > 0.0);
    }

    // Conservation: the per-query energies add up (0.5%) to WATTS over the time any query ran,
    // since the fixture draws a constant WATTS. The session stored its idle baseline (WATTS)
    // and the series it sampled.
    let windows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM started_at)::float8, latency_s FROM results WHERE run_id = $1 ORDER BY started_at",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    // The union of the query windows: the time any query ran.
    let (mut busy_s, mut reach) = (0.0, f64::NEG_INFINITY);
    for (start, latency) in windows {
        let end = start + latency;
        busy_s += (end - start.max(reach)).max(0.0);
        reach = reach.max(end);
    }
    let (sum, idle, series_points): (f64, f64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(energy_j) FROM results WHERE run_id = $1),
                (SELECT power_w FROM session_idle i JOIN measurement_sessions m ON m.id = i.session_id
                 WHERE m.run_id = $1),
                (SELECT sum(cardinality(t_s)) FROM session_power_series p
                 JOIN measurement_sessions m ON m.id = p.session_id WHERE m.run_id = $1)::bigint",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    let active = WATTS * busy_s;
    assert!((sum - active).abs() <= 0.005 * active, "sum {sum} J vs {active} J while queries ran");
    assert!((idle - WATTS).abs() <= 0.05 * WATTS, "idle {idle} W");
    assert!(series_points >= 20, "the audit series holds the samples ({series_points})");
    let (coverage, stable, steady_s, why): (Option<f64>, Option<bool>, Option<f64>, Option<String>) =
        sqlx::query_as("SELECT power_coverage, stable, steady_s, instability FROM ipw_summary WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert!(coverage.is_some_and(|c| c > 0.99), "the fixture's samples cover the queries: {coverage:?}");
    // Four short queries rarely hold a 20 s steady window (a loaded machine may stretch them):
    // a shorter one is flagged, with its length.
    let steady_s = steady_s.expect("the session recorded its steady window");
    if steady_s < 20.0 {
        assert_eq!(stable, Some(false));
        assert!(why.as_deref().is_some_and(|w| w.contains("shorter than 20 s")), "{why:?}");
    }

    // The summary now has power and IPW.
    let report = fleet
        .admin
        .get_report(ReportRequest { run_ids: vec![run.run_id.clone()], ..Default::default() })
        .await?
        .into_inner();
    let report = Report::from_wire(report)?;
    let row = &report.rows[0];
    let power = row.mean_power_w.expect("mean power");
    assert!(power > 0.45 * WATTS && power <= 1.05 * WATTS, "{power} W");
    assert!(row.ipw.is_some() && row.ipj.is_some());
    assert_eq!((row.power_source.as_deref(), row.power_scope.as_deref()), (Some("rapl"), Some("cpu-package")));
    // Idle power equals load power in this fixture, so dynamic power is near zero.
    assert!(row.mean_dynamic_power_w.expect("dynamic power").abs() < 0.1 * WATTS);
    assert!(row.dynamic_joules_per_query.is_some());

    // The figures draw these real latencies and token counts with the counter's energy.
    let with_points = ReportRequest { run_ids: vec![run.run_id.clone()], with_points: true, ..Default::default() };
    let report = Report::from_wire(fleet.admin.get_report(with_points).await?.into_inner())?;
    assert_eq!(report.points.len(), 4);
    let plots = std::env::var("IPW_KEEP_PLOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| fleet.dir.path().join("plots"));
    let files = ipw_coordinator::cli::render::svg::write_all(&report, &plots).map_err(anyhow::Error::msg)?;
    let scatter = std::fs::read_to_string(&files[2])?;
    assert!(scatter.contains("energy (J)") && scatter.contains("power: rapl (cpu-package)"));
    assert!(scatter.matches("<circle").count() >= 4, "one point per query");
    Ok(())
}
