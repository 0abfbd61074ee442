//! Sweeps: seeded and stratified samples, expansion over hardware classes, matching, sharing
//! shards within a class, pausing, and schedules on a clock the test controls.

use chrono::{DateTime, Utc};
use ipw_agent::client;
use ipw_agent::runner;
use ipw_coordinator::jobs::scheduler;
use ipw_e2e::{Fleet, gpu_box};
use ipw_proto::v1::{AcquireLeaseRequest, GenerationParams, LoadPattern, SweepSpec, SweepStatusRequest};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

const SMOL: &str = "SmolLM2-135M-Instruct";

fn spec(name: &str, workload: &str, sample: u32, seed: i64) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        workload: workload.into(),
        models: vec![SMOL.into()],
        sample,
        seed,
        concurrency: vec![2],
        shard_size: 2,
        repetitions: 1,
        params: Some(GenerationParams { max_tokens: 16, temperature: 0.0, top_p: 1.0 }),
        ..SweepSpec::default()
    }
}

/// The query ids of a run's sample, in order.
async fn sample_of(fleet: &Fleet, run_id: &str) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT query_id FROM run_queries WHERE run_id = $1 ORDER BY position")
        .bind(Uuid::parse_str(run_id)?)
        .fetch_all(&fleet.pool)
        .await?)
}

#[tokio::test]
async fn the_same_seed_gives_the_same_sample_and_strata_keep_their_shares() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    // 2,000 MMLU-Pro questions: several categories.
    fleet.import_mmlu_slice(2000, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    fleet.join_with(&token, "h100", &[], gpu_box("H100", 80)).await?;

    let a = fleet.admin.create_sweep(spec("a", "slice", 100, 42)).await?.into_inner();
    let b = fleet.admin.create_sweep(spec("b", "slice", 100, 42)).await?.into_inner();
    let c = fleet.admin.create_sweep(spec("c", "slice", 100, 43)).await?.into_inner();
    let (sa, sb, sc) = (
        sample_of(&fleet, &a.runs[0].run_id).await?,
        sample_of(&fleet, &b.runs[0].run_id).await?,
        sample_of(&fleet, &c.runs[0].run_id).await?,
    );
    assert_eq!(sa.len(), 100);
    assert_eq!(sa, sb, "same seed, same queries in the same order");
    assert_ne!(sa, sc);

    let stratified =
        fleet.admin.create_sweep(SweepSpec { stratify: true, ..spec("s", "slice", 100, 42) }).await?.into_inner();
    let counts = |sql: &'static str, run: Option<Uuid>| {
        let pool = fleet.pool.clone();
        async move {
            let q = sqlx::query_as::<_, (String, i64)>(sql);
            let q = match run {
                Some(r) => q.bind(r),
                None => q,
            };
            anyhow::Ok(q.fetch_all(&pool).await?.into_iter().collect::<HashMap<String, i64>>())
        }
    };
    let population = counts("SELECT coalesce(category, ''), count(*) FROM queries GROUP BY 1", None).await?;
    let picked = counts(
        "SELECT coalesce(q.category, ''), count(*) FROM run_queries rq JOIN queries q ON q.id = rq.query_id
         WHERE rq.run_id = $1 GROUP BY 1",
        Some(Uuid::parse_str(&stratified.runs[0].run_id)?),
    )
    .await?;
    assert!(population.len() >= 3, "the slice has several categories: {population:?}");
    let total: i64 = population.values().sum();
    for (category, n) in &population {
        let share = 100.0 * *n as f64 / total as f64;
        let got = *picked.get(category).unwrap_or(&0) as f64;
        assert!((got - share).abs() < 1.0, "{category}: {got} picked for a share of {share:.2}");
    }
    assert_eq!(picked.values().sum::<i64>(), 100);
    Ok(())
}

#[tokio::test]
async fn an_agent_gets_only_work_it_can_do() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    // 2,000 MMLU-Pro questions: several categories.
    fleet.import_mmlu_slice(2000, "slice").await?;
    let token = fleet.token(3, true, Duration::from_secs(60)).await?;
    let h100 = fleet.join_with(&token, "h100", &[("lab", "a")], gpu_box("H100", 80)).await?;
    let small = fleet.join_with(&token, "4090", &[("lab", "a")], gpu_box("RTX 4090", 24)).await?;
    let elsewhere = fleet.join_with(&token, "b-h100", &[("lab", "b")], gpu_box("H100", 80)).await?;

    // Lab a only, and the model needs 40 GiB: one run per matching class, so H100 and 4090.
    let sweep = fleet
        .admin
        .create_sweep(SweepSpec {
            labels: [("lab".to_owned(), "a".to_owned())].into(),
            model_memory_bytes: 40 << 30,
            ..spec("big", "slice", 4, 1)
        })
        .await?
        .into_inner();
    let classes: Vec<&str> = sweep.runs.iter().map(|r| r.hardware_class.as_str()).collect();
    assert_eq!(classes, ["gpu:nvidia:H100:80GiB:x1", "gpu:nvidia:RTX 4090:24GiB:x1"]);

    let lease = |cfg: &ipw_agent::config::AgentConfig, models: &[&str]| {
        let cfg = cfg.clone();
        let models: Vec<String> = models.iter().map(|m| (*m).to_owned()).collect();
        async move {
            let mut c = client::connect(&cfg).await?;
            anyhow::Ok(
                c.acquire_lease(AcquireLeaseRequest { available_models: models, ..Default::default() })
                    .await?
                    .into_inner()
                    .lease,
            )
        }
    };
    // Without the model on its engine: nothing.
    assert!(lease(&h100, &["some-other-model"]).await?.is_none());
    // 24 GiB for a 40 GiB model: nothing, although its class has a run.
    assert!(lease(&small, &[SMOL]).await?.is_none());
    // Lab b's H100 is of the right class but outside the selector: nothing.
    assert!(lease(&elsewhere, &[SMOL]).await?.is_none());
    // Lab a's H100 gets the H100 run, shard after shard.
    let first = lease(&h100, &[SMOL]).await?.expect("an H100 in lab a with the model gets work");
    let second = lease(&h100, &[SMOL]).await?.expect("and the next shard");
    assert_eq!(first.run_id, second.run_id);
    assert_ne!(first.shard_id, second.shard_id);
    assert_eq!(first.run_id, sweep.runs[0].run_id);

    // Paused, no more leases; resumed, again; cancelled, its runs are cancelled.
    let pause = SweepStatusRequest { sweep_id: sweep.sweep_id.clone(), status: "paused".into() };
    fleet.admin.set_sweep_status(pause).await?;
    assert!(lease(&h100, &[SMOL]).await?.is_none());
    let cancel = SweepStatusRequest { sweep_id: sweep.sweep_id.clone(), status: "cancelled".into() };
    let info = fleet.admin.set_sweep_status(cancel).await?.into_inner();
    assert!(info.runs.iter().all(|r| r.status == "cancelled"), "{:?}", info.runs);
    let resume = SweepStatusRequest { sweep_id: sweep.sweep_id.clone(), status: "active".into() };
    assert!(fleet.admin.set_sweep_status(resume).await.unwrap_err().message().contains("was cancelled"));

    // A selector nobody matches is refused, and nothing is created.
    let e = fleet
        .admin
        .create_sweep(SweepSpec { accelerator: "MI300".into(), ..spec("none", "slice", 4, 1) })
        .await
        .unwrap_err();
    assert!(e.message().contains("no approved agent matches"), "{}", e.message());
    let sweeps: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps").fetch_one(&fleet.pool).await?;
    assert_eq!(sweeps, 1);
    Ok(())
}

/// A sweep takes what `ipw run create` takes: a list of concurrency levels becomes one run per
/// level on one sample, and each run carries the sweep's load pattern, SLOs and repeat rule
/// to the agents that lease it.
#[tokio::test]
async fn a_sweep_expands_concurrency_levels_and_carries_load_slos_and_repeats() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join_with(&token, "l4", &[], gpu_box("L4", 24)).await?;
    let sweep = fleet
        .admin
        .create_sweep(SweepSpec {
            concurrency: vec![4, 1, 4],
            load: Some(LoadPattern { kind: "constant".into(), rate_per_s: 2.5, seed: 0 }),
            slo_ttft_s: 2.0,
            slo_tpot_s: 0.1,
            repeat_until_cv: 0.05,
            max_repeats: 3,
            ..spec("levels", "slice", 6, 9)
        })
        .await?
        .into_inner();
    let levels: Vec<u32> = sweep.runs.iter().map(|r| r.concurrency).collect();
    assert_eq!(levels, [1, 4], "one run per distinct level");
    assert_eq!(sample_of(&fleet, &sweep.runs[0].run_id).await?, sample_of(&fleet, &sweep.runs[1].run_id).await?);

    for run in &sweep.runs {
        let row: String = sqlx::query_scalar(
            "SELECT concat_ws(' ', load_pattern, rate_per_s, slo_ttft_s, slo_tpot_s, repeat_until_cv, max_repeats)
             FROM runs WHERE id = $1",
        )
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_one(&fleet.pool)
        .await?;
        assert_eq!(row, "constant 2.5 2 0.1 0.05 3");
    }
    let mut c = client::connect(&agent).await?;
    let request = AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() };
    let lease = c.acquire_lease(request).await?.into_inner().lease.expect("the L4 gets the sweep's work");
    let load = lease.load.expect("a lease carries its run's load");
    assert_eq!((load.kind.as_str(), load.rate_per_s), ("constant", 2.5));

    // A level out of range is refused and nothing is stored.
    let e = fleet.admin.create_sweep(SweepSpec { concurrency: vec![1, 5000], ..spec("bad", "slice", 6, 9) }).await;
    assert!(e.unwrap_err().message().contains("got 5000"));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_definitions").fetch_one(&fleet.pool).await?;
    assert_eq!(stored, 1);
    Ok(())
}

/// Two agents of one class share a run's shards; an agent of another class runs the whole
/// sample on its own; all on the real SmolLM2 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_of_one_class_share_shards_and_each_class_runs_the_whole_sample() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    // 2,000 MMLU-Pro questions: several categories.
    fleet.import_mmlu_slice(2000, "slice").await?;
    let token = fleet.token(3, true, Duration::from_secs(60)).await?;
    let a1 = fleet.join_with(&token, "a1", &[], gpu_box("L4", 24)).await?;
    let a2 = fleet.join_with(&token, "a2", &[], gpu_box("L4", 24)).await?;
    let b1 = fleet.join_with(&token, "b1", &[], gpu_box("A10", 24)).await?;
    let sweep = fleet.admin.create_sweep(spec("share", "slice", 6, 5)).await?.into_inner();
    assert_eq!(sweep.runs.len(), 2);

    let opts = fleet.run_options();
    let (s1, s2, s3) = (fleet.spool("a1"), fleet.spool("a2"), fleet.spool("b1"));
    let (r1, r2, r3) =
        tokio::join!(runner::run(&a1, &s1, &opts), runner::run(&a2, &s2, &opts), runner::run(&b1, &s3, &opts));
    let (r1, r2, r3) = (r1?, r2?, r3?);
    assert_eq!(r3.shards, 3, "the only A10 runs its class's whole sample");
    assert!(r1.shards >= 1 && r2.shards >= 1 && r1.shards + r2.shards == 3, "{} + {}", r1.shards, r2.shards);

    let info = fleet.admin.get_sweep(ipw_proto::v1::SweepRequest { sweep_id: sweep.sweep_id }).await?.into_inner();
    assert_eq!(info.status, "completed");
    for run in &info.runs {
        assert_eq!((run.results, run.expected_results, run.eta_seconds), (6, 6, Some(0.0)));
    }
    let per_class: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.hardware_class, count(DISTINCT r.query_id) FROM results r JOIN agents a ON a.id = r.agent_id
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&fleet.pool)
    .await?;
    assert_eq!(per_class, [("gpu:nvidia:A10:24GiB:x1".to_owned(), 6), ("gpu:nvidia:L4:24GiB:x1".to_owned(), 6)]);
    Ok(())
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("a valid time").with_timezone(&Utc)
}

#[tokio::test]
async fn schedules_fire_once_across_coordinators_and_follow_the_missed_policy() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    // 2,000 MMLU-Pro questions: several categories.
    fleet.import_mmlu_slice(2000, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    fleet.join_with(&token, "h100", &[], gpu_box("H100", 80)).await?;
    let scheduled = SweepSpec { cron: "*/10 * * * *".into(), timezone: "UTC".into(), ..spec("nightly", "slice", 4, 1) };
    let created = fleet.admin.create_sweep(scheduled).await?.into_inner();
    assert_eq!((created.status.as_str(), created.sweep_id.as_str()), ("scheduled", ""));
    // The test owns the clock: the first firing is at 00:00.
    sqlx::query("UPDATE sweep_definitions SET next_fire_at = '2026-01-01T00:00:00Z'").execute(&fleet.pool).await?;
    let instances = || async {
        anyhow::Ok(
            sqlx::query_scalar::<_, DateTime<Utc>>("SELECT scheduled_for FROM sweeps ORDER BY scheduled_for")
                .fetch_all(&fleet.pool)
                .await?,
        )
    };

    // Two coordinators (two pools on one database) tick at the same moment: one instance.
    let other =
        ipw_coordinator::infra::pool::connect_and_migrate(fleet.pool.connect_options().as_ref().clone()).await?;
    let now = at("2026-01-01T00:00:30Z");
    let (x, y) = tokio::join!(scheduler::tick(&fleet.pool, now), scheduler::tick(&other, now));
    assert_eq!(x?.len() + y?.len(), 1);
    assert_eq!(instances().await?, [at("2026-01-01T00:00:00Z")]);
    // Ticking again at the same time changes nothing.
    assert!(scheduler::tick(&other, now).await?.is_empty());

    // On time at 00:10.
    assert_eq!(scheduler::tick(&fleet.pool, at("2026-01-01T00:10:05Z")).await?.len(), 1);
    // Down from 00:15 to 00:55: 00:20..00:50 were missed, and `skip` creates nothing.
    assert!(scheduler::tick(&fleet.pool, at("2026-01-01T00:55:00Z")).await?.is_empty());
    let next: DateTime<Utc> =
        sqlx::query_scalar("SELECT next_fire_at FROM sweep_definitions").fetch_one(&fleet.pool).await?;
    assert_eq!(next, at("2026-01-01T01:00:00Z"));
    // With `catch-up-once`, a long outage gives exactly one instance, for the latest firing.
    sqlx::query("UPDATE sweep_definitions SET missed_policy = 'catch-up-once'").execute(&fleet.pool).await?;
    assert_eq!(scheduler::tick(&fleet.pool, at("2026-01-01T01:35:00Z")).await?.len(), 1);
    assert_eq!(
        instances().await?,
        [at("2026-01-01T00:00:00Z"), at("2026-01-01T00:10:00Z"), at("2026-01-01T01:30:00Z")]
    );
    // Each instance is a full sweep: its run over the sample.
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE sweep_id IS NOT NULL").fetch_one(&fleet.pool).await?;
    assert_eq!(runs, 3);
    Ok(())
}

/// Managed mode: one agent starts llama-server for each run's model from a model directory,
/// switches when the next lease wants the other one, and records each file's sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_engine_switches_models_and_records_each_file() -> anyhow::Result<()> {
    let gguf = std::env::var("IPW_TEST_MODEL_FILE").expect("IPW_TEST_MODEL_FILE is set by scripts/test");
    let server = std::env::var("IPW_TEST_LLAMA_SERVER").expect("IPW_TEST_LLAMA_SERVER is set by scripts/test");
    let mut fleet = Fleet::start().await?;
    let models = fleet.dir.path().join("models");
    std::fs::create_dir_all(&models)?;
    // The same SmolLM2 file under two model names.
    for name in ["smol-a.Q4_1.gguf", "smol-b.Q4_1.gguf"] {
        std::os::unix::fs::symlink(&gguf, models.join(name))?;
    }
    let lines = [
        r#"{"id": "1", "prompt": "Say hi.", "answer": "hi"}"#,
        r#"{"id": "2", "prompt": "Say bye.", "answer": "bye"}"#,
    ];
    fleet.import_lines("two", &lines).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "managed").await?;
    for model in ["smol-a", "smol-b"] {
        let run = ipw_proto::v1::CreateRunRequest {
            workload: "two".into(),
            model: model.into(),
            sample: 2,
            concurrency: 1,
            shard_size: 2,
            params: Some(GenerationParams { max_tokens: 8, temperature: 0.0, top_p: 1.0 }),
            ..Default::default()
        };
        fleet.admin.create_run(run).await?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut opts = fleet.run_options();
    opts.managed = Some(ipw_agent::managed::ManagedOptions {
        model_dir: models.clone(),
        server: server.into(),
        port,
        threads: 1,
        parallel: 1,
        extra_args: Vec::new(),
        gpus: None,
    });
    let summary = runner::run(&agent, &fleet.spool("managed"), &opts).await?;
    assert_eq!((summary.shards, summary.committed), (2, 4));

    let provenance: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT model, engine_model, model_sha256 FROM run_provenance_by_run ORDER BY model")
            .fetch_all(&fleet.pool)
            .await?;
    let sha256sum = std::process::Command::new("sha256sum").arg(&gguf).output()?;
    let expected = String::from_utf8_lossy(&sha256sum.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(provenance.len(), 2);
    for ((model, served, sha), name) in provenance.iter().zip(["smol-a", "smol-b"]) {
        assert_eq!(model, name);
        assert!(served.ends_with(&format!("{name}.Q4_1.gguf")), "{served} serves {name}");
        assert_eq!(sha.as_deref(), Some(expected.as_str()));
    }
    // The server is stopped when the agent stops.
    let url = format!("http://127.0.0.1:{port}/health");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "{url} still answers");
    Ok(())
}
