//! Load patterns and repeats on the real llama-server: open-loop arrivals at a set rate, and
//! runs repeated until their figure settles.

use ipw_agent::runner;
use ipw_e2e::Fleet;
use ipw_proto::v1::{CreateRunRequest, GenerationParams, LoadPattern};
use std::time::Duration;
use uuid::Uuid;

/// Constant arrivals at 4/s: requests start on schedule (the spacing of their wall-clock
/// starts is the rate's), each result says how late it started, and the run's count of late
/// starts is exactly the results that started more than 10 ms late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_loop_arrivals_start_on_time_and_late_starts_are_counted() -> anyhow::Result<()> {
    const RATE: f64 = 4.0;
    const QUERIES: u32 = 16;
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(100, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "paced").await?;
    let run = fleet
        .admin
        .create_run(CreateRunRequest {
            workload: "slice".into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample: QUERIES,
            seed: 7,
            concurrency: 1,
            shard_size: 4,
            repetitions: 1,
            params: Some(GenerationParams { max_tokens: 8, temperature: 0.0, top_p: 1.0 }),
            load: Some(LoadPattern { kind: "constant".into(), rate_per_s: RATE, seed: 0 }),
            slo_ttft_s: 5.0,
            ..Default::default()
        })
        .await?
        .into_inner();
    let summary = runner::run(&agent, &fleet.spool("paced"), &fleet.run_options()).await?;
    assert_eq!(summary.committed, u64::from(QUERIES));
    let run_id = Uuid::parse_str(&run.run_id)?;

    // Starts in order, with their gaps.
    let starts: Vec<(f64, Option<f64>)> = sqlx::query_as(
        "SELECT extract(epoch FROM started_at)::float8, start_delay_s FROM results WHERE run_id = $1 ORDER BY started_at",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    let mut gaps: Vec<f64> = starts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!((median - 1.0 / RATE).abs() < 0.1 / RATE, "median gap {median} s, expected {} s", 1.0 / RATE);
    let span = starts.last().unwrap().0 - starts[0].0;
    let expected = f64::from(QUERIES - 1) / RATE;
    assert!((span - expected).abs() < 0.25 * expected, "{QUERIES} arrivals over {span} s, expected {expected} s");
    assert!(starts.iter().all(|s| s.1.is_some()), "every open-loop result has its start delay");
    let late = starts.iter().filter(|s| s.1.is_some_and(|d| d > 0.010)).count() as i64;

    let (pattern, target, late_starts, slo_attainment): (Option<String>, Option<f64>, Option<i64>, Option<f64>) =
        sqlx::query_as(
            "SELECT load_pattern, load_target, late_starts, slo_attainment FROM ipw_summary WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!((pattern.as_deref(), target), (Some("constant"), Some(RATE)));
    assert_eq!(late_starts, Some(late), "the session counted the late starts its results report");
    assert!(late <= i64::from(QUERIES) / 4, "{late} of {QUERIES} started late");
    assert!(slo_attainment.is_some_and(|a| a > 0.0), "a 5 s TTFT SLO is met on this engine");
    Ok(())
}

/// `--repeat-until-cv`: a run is repeated over the same sample until the coefficient of
/// variation of its steady-state figure across repeats reaches the target, or the limit. With
/// no power source the figure is the steady-state output tokens/s, and the view says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_repeats_until_its_figure_settles_or_its_limit() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(50, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "repeater").await?;
    let create = |seed: i64, cv: f64, max_repeats: u32| {
        let request = CreateRunRequest {
            workload: "slice".into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample: 4,
            seed,
            concurrency: 1,
            shard_size: 4,
            repetitions: 1,
            params: Some(GenerationParams { max_tokens: 8, temperature: 0.0, top_p: 1.0 }),
            repeat_until_cv: cv,
            max_repeats,
            ..Default::default()
        };
        let mut admin = fleet.admin.clone();
        async move { anyhow::Ok(Uuid::parse_str(&admin.create_run(request).await?.into_inner().run_id)?) }
    };
    // A target no real figure meets: the limit ends it. A generous one: two runs settle it.
    let strict = create(1, 1e-9, 3).await?;
    let generous = create(2, 0.99, 5).await?;
    let summary = runner::run(&agent, &fleet.spool("repeater"), &fleet.run_options()).await?;
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM results").fetch_one(&fleet.pool).await?;
    assert_eq!(summary.committed, results as u64);

    // The generous group settles at its second run unless a run had too few queries inside its
    // steady window to give a figure (then it repeats, within its limit).
    for (root, runs, settled) in [(strict, 3..=3i64, false), (generous, 2..=5, true)] {
        let (repeats, completed, cv, metric, is_settled): (i64, i64, Option<f64>, String, bool) =
            sqlx::query_as("SELECT repeats, completed, cv, metric, settled FROM run_repeats WHERE group_id = $1")
                .bind(root)
                .fetch_one(&fleet.pool)
                .await?;
        assert!(runs.contains(&repeats) && completed == repeats, "{repeats} runs, {completed} completed");
        assert_eq!(is_settled, settled);
        assert!(cv.is_some_and(|c| c >= 0.0), "the CV reached is reported: {cv:?}");
        assert!(metric.contains("output tokens/s") && metric.contains("no energy"), "{metric}");
        // Every repeat ran exactly the first run's queries.
        let differing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs r
             WHERE r.repeat_of = $1 AND EXISTS (
                 (SELECT query_id FROM run_queries WHERE run_id = r.id)
                 EXCEPT (SELECT query_id FROM run_queries WHERE run_id = $1))",
        )
        .bind(root)
        .fetch_one(&fleet.pool)
        .await?;
        assert_eq!(differing, 0);
        let reported: Option<f64> = sqlx::query_scalar("SELECT repeat_cv FROM ipw_summary WHERE run_id = $1")
            .bind(root)
            .fetch_one(&fleet.pool)
            .await?;
        assert!(reported.zip(cv).is_some_and(|(r, c)| (r - c).abs() <= 1e-12 * c.max(1.0)), "{reported:?} vs {cv:?}");
    }
    Ok(())
}
