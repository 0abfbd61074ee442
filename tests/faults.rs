//! Faults the fleet must ride out without losing or duplicating a result.

use ipw_agent::runner::{self, RunOptions};
use ipw_e2e::{Fleet, PowercapFixture, metered_agent_process, wait_for_results};
use std::time::Duration;
use uuid::Uuid;

/// The coordinator crashes mid-run and comes back on the same address five seconds later.
/// The agent retries with backoff instead of exiting, re-sends what was not acknowledged from
/// its spool, and finishes the run: every query exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_rides_out_a_coordinator_crash_and_every_query_lands_once() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "steadfast").await?;
    let run = fleet.create_run("slice", 12, 2, 1, 24).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let opts = RunOptions { retry_for: Duration::from_secs(120), ..fleet.run_options() };
    let spool = fleet.spool("steadfast");
    let pool = fleet.pool.clone();
    let coordinator = &mut fleet.coordinator;
    // Crash once some results are in and the run is under way.
    let crash = async {
        let before = wait_for_results(&pool, run_id, 2).await?;
        anyhow::ensure!(before < 12, "the crash must come mid-run");
        coordinator.crash_and_restart(Duration::from_secs(5)).await?;
        anyhow::Ok(before)
    };
    let (summary, before) = tokio::join!(runner::run(&agent, &spool, &opts), crash);
    let before = before?;
    let summary = summary?;
    assert!(before < 12);
    assert_eq!(summary.shards, 6);
    let (rows, distinct, sampled): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (query_id, repetition)),
                (SELECT count(*) FROM run_queries WHERE run_id = $1)
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((rows, distinct, sampled), (12, 12, 12), "every query exactly once");
    assert!(spool.is_empty()?, "the spool ends empty");
    let status: String =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1").bind(run_id).fetch_one(&fleet.pool).await?;
    assert_eq!(status, "completed");
    Ok(())
}

/// A shard whose lease keeps running out (an agent that takes work and vanishes, again and
/// again) is failed after three attempts, with the reason, and the run with it; it is not
/// handed out forever.
#[tokio::test]
async fn a_shard_that_keeps_expiring_fails_with_its_reason() -> anyhow::Result<()> {
    use ipw_proto::v1::{AcquireLeaseRequest, RunStatusRequest};
    let mut fleet = Fleet::start_with_lease_ttl(Duration::from_millis(300)).await?;
    fleet.import_lines("one", &[r#"{"id": "1", "prompt": "hi", "answer": "hello"}"#]).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let cfg = fleet.join(&token, "vanishing").await?;
    let run = fleet.create_run("one", 1, 1, 1, 8).await?;
    let mut coord = ipw_agent::client::connect(&cfg).await?;
    let lease = || AcquireLeaseRequest { available_models: vec!["SmolLM2-135M-Instruct".into()], ..Default::default() };
    for attempt in 1..=3 {
        let got = coord.acquire_lease(lease()).await?.into_inner().lease;
        assert!(got.is_some(), "attempt {attempt} gets the shard again");
        tokio::time::sleep(Duration::from_millis(400)).await; // and lets the lease run out
    }
    assert!(coord.acquire_lease(lease()).await?.into_inner().lease.is_none());
    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!((status.status.as_str(), status.shards_failed), ("failed", 1));
    assert_eq!(
        status.failures,
        ["shard 0: its lease ran out 3 times without the shard completing (last agent: vanishing)"]
    );
    Ok(())
}

/// `kill -9` of a real agent process mid-run, while it streams results and samples a fixture
/// power counter. Another agent takes the shards once their leases run out and finishes the
/// run; the killed agent, restarted, re-sends what its spool kept. Every query has exactly one
/// result, and the killed agent lost energy only for the queries of its last seconds: what it
/// measured earlier reached the coordinator with its energy, and its power series was
/// persisted up to a few seconds before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_run_loses_no_result_and_at_most_its_last_seconds_of_energy() -> anyhow::Result<()> {
    const QUERIES: usize = 24;
    // What a kill may lose: results not yet attributed (the ledger runs every second and waits
    // for the sampler) and the series not yet uploaded (every five seconds).
    const ENERGY_LAG_S: f64 = 3.0;
    const SERIES_LAG_S: f64 = 7.0;
    let ttl = Duration::from_secs(3);
    let mut fleet = Fleet::start_with_lease_ttl(ttl).await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let doomed = fleet.join(&token, "doomed").await?;
    let rescuer = fleet.join(&token, "rescuer").await?;
    let run = fleet.create_run("slice", QUERIES as u32, 6, 2, 24).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;
    let fixture = PowercapFixture::start(fleet.dir.path(), 25.0)?;

    // Kill once results have been streaming for a while, well before the run ends.
    let committed = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await
    };
    let doomed_spool = fleet.spool("doomed");
    let mut child = metered_agent_process(fleet.dir.path(), &doomed, &fixture.root)?.spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while committed().await? < 8 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent committed little in 3 minutes");
        anyhow::ensure!(child.try_wait()?.is_none(), "the agent exited before it was killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await?; // SIGKILL: no cleanup, no flush
    let killed_at = chrono::Utc::now();
    let (committed_at_kill, spooled_at_kill) = (committed().await?, doomed_spool.len()?);
    eprintln!("killed the agent with {committed_at_kill} committed and {spooled_at_kill} spooled of {QUERIES}");
    assert!((committed_at_kill as usize) < QUERIES, "killed mid-run, not after it");

    // The rescuer gets the rest once the dead agent's leases have run out.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    runner::run(&rescuer, &fleet.spool("rescuer"), &fleet.run_options()).await?;

    // The killed agent comes back: its spool goes first, then there is no work left.
    let restarted = metered_agent_process(fleet.dir.path(), &doomed, &fixture.root)?.output().await?;
    let stdout = String::from_utf8_lossy(&restarted.stdout);
    assert!(restarted.status.success(), "restart failed: {}", String::from_utf8_lossy(&restarted.stderr));
    assert!(stdout.contains(&format!("{spooled_at_kill} duplicates ignored")), "restart said: {stdout}");
    assert!(doomed_spool.is_empty()?, "the spool ends empty");
    drop(fixture);

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (query_id, repetition)) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!((rows, distinct), (QUERIES as i64, QUERIES as i64), "every query exactly once");
    let status =
        fleet.admin.get_run_status(ipw_proto::v1::RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!(status.status, "completed");

    // Energy: every result of the killed agent that ended more than a few seconds before the
    // kill has its energy; those without it say why.
    let doomed_results: Vec<(Option<f64>, Option<String>, f64)> = sqlx::query_as(
        "SELECT energy_j, energy_null_reason,
                extract(epoch FROM $2 - (started_at + make_interval(secs => latency_s)))::float8
         FROM results WHERE run_id = $1 AND agent_id = (SELECT id FROM agents WHERE name = 'doomed')",
    )
    .bind(run_id)
    .bind(killed_at)
    .fetch_all(&fleet.pool)
    .await?;
    assert!(doomed_results.iter().any(|r| r.0.is_some()), "energy reached the coordinator before the kill");
    for (energy, reason, ended_before_kill_s) in &doomed_results {
        if energy.is_none() {
            assert!(
                *ended_before_kill_s < ENERGY_LAG_S,
                "energy lost for a query that ended {ended_before_kill_s} s before the kill"
            );
            assert!(reason.as_deref().is_some_and(|r| r.contains("stopped before")), "{reason:?}");
        }
    }
    // The series reached the coordinator up to a few seconds before the kill.
    let series_gap_s: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM $2 - (m.clock_zero + make_interval(secs => max(t)))::timestamptz)::float8
         FROM measurement_sessions m JOIN session_power_series p ON p.session_id = m.id, unnest(p.t_s) t
         WHERE m.run_id = $1 AND m.agent_id = (SELECT id FROM agents WHERE name = 'doomed')
         GROUP BY m.id, m.clock_zero ORDER BY m.clock_zero LIMIT 1",
    )
    .bind(run_id)
    .bind(killed_at)
    .fetch_one(&fleet.pool)
    .await?;
    assert!(series_gap_s < SERIES_LAG_S, "the persisted series ends {series_gap_s} s before the kill");
    Ok(())
}

/// A spool disk below its free-space floor: the agent takes no work and says why.
#[tokio::test]
async fn a_full_spool_disk_takes_no_work_and_says_so() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(20, "slice").await?;
    fleet.create_run("slice", 2, 2, 1, 8).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "full").await?;
    let opts = RunOptions { spool_min_free: u64::MAX, ..fleet.run_options() };
    let e = format!("{:#}", runner::run(&agent, &fleet.spool("full"), &opts).await.unwrap_err());
    assert!(e.contains("MiB free, less than the") && e.contains("not taking work"), "{e}");
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM lease_attempts").fetch_one(&fleet.pool).await?;
    assert_eq!(leased, 0, "no lease was taken");
    Ok(())
}

/// The spool disk fills up mid-shard (writes of two results fail with the kernel's ENOSPC,
/// from /dev/full): those results are kept in memory and uploaded with the rest. None is
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_the_spool_cannot_take_are_still_uploaded() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(50, "slice").await?;
    let run = fleet.create_run("slice", 4, 4, 2, 16).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "filling").await?;
    let spool = fleet.spool("filling");
    let queries: Vec<i64> =
        sqlx::query_scalar("SELECT query_id FROM run_queries WHERE run_id = $1 ORDER BY query_id LIMIT 2")
            .bind(run_id)
            .fetch_all(&fleet.pool)
            .await?;
    for q in &queries {
        // The spool writes `<key>.tmp` first: for these two, that write hits a full device.
        std::os::unix::fs::symlink("/dev/full", spool.dir().join(format!("{run_id}_{q}_0.tmp")))?;
    }
    let summary = runner::run(&agent, &spool, &fleet.run_options()).await?;
    assert_eq!((summary.shards, summary.committed), (1, 4));
    let landed: Vec<i64> = sqlx::query_scalar("SELECT query_id FROM results WHERE run_id = $1 AND query_id = ANY($2)")
        .bind(run_id)
        .bind(&queries)
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!(landed.len(), 2, "the unspooled results landed too");
    assert!(spool.is_empty()?, "nothing is left behind");
    Ok(())
}

/// A spooled result the coordinator will never take (here: for a shard this agent never
/// leased) is set aside as `.rejected` instead of blocking the spool forever; the agent then
/// runs its work as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_the_coordinator_refuses_is_set_aside_not_retried_forever() -> anyhow::Result<()> {
    use ipw_proto::v1::{Energy, QueryResult};
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(20, "slice").await?;
    let run = fleet.create_run("slice", 2, 2, 2, 8).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "stale-spool").await?;
    let spool = fleet.spool("stale-spool");
    let stray = QueryResult {
        shard_id: Uuid::new_v4().to_string(),
        run_id: run.run_id.clone(),
        query_id: 1,
        latency_s: 1.0,
        energy: Some(Energy { source: "none".into(), null_reason: "test".into(), ..Default::default() }),
        ..Default::default()
    };
    spool.put(&stray)?;
    let summary = runner::run(&agent, &spool, &fleet.run_options()).await?;
    assert_eq!((summary.shards, summary.committed), (1, 2), "the run went ahead");
    assert!(spool.is_empty()?);
    let rejected: Vec<_> = std::fs::read_dir(spool.dir())?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "the stray result is kept, set aside");
    Ok(())
}

/// `kill -9` of a real `ipw-coordinator` process mid-run, with a real agent process talking
/// TLS to it. The coordinator comes back on the same port with the same CA (so the agent's
/// pin still holds), the agent rides out the gap, and every query lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_coordinator_process_comes_back_and_every_query_lands_once() -> anyhow::Result<()> {
    use ipw_e2e::{CoordinatorProcess, fresh_database_url};
    let dir = tempfile::tempdir()?;
    let database_url = fresh_database_url().await?;
    let mut coordinator = CoordinatorProcess::start(dir.path().join("coordinator"), &database_url, "60s").await?;
    let fingerprint = coordinator.fingerprint()?;
    let mut admin = coordinator.admin().await?;
    let slice = dir.path().join("slice.jsonl");
    let text = std::fs::read_to_string(ipw_e2e::mmlu_pro())?;
    std::fs::write(&slice, text.lines().take(200).collect::<Vec<_>>().join("\n"))?;
    ipw_coordinator::cli::workloads::import_workload(&mut admin, &slice, "slice").await?;
    let token = admin
        .create_token(ipw_proto::v1::CreateTokenRequest {
            ttl_seconds: 60,
            max_uses: 1,
            auto_approve: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(token.ca_cert_hash, fingerprint, "the join command pins this CA");
    let run = admin
        .create_run(ipw_proto::v1::CreateRunRequest {
            workload: "slice".into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample: 12,
            seed: 7,
            concurrency: 1,
            shard_size: 2,
            repetitions: 1,
            params: Some(ipw_proto::v1::GenerationParams { max_tokens: 24, temperature: 0.0, top_p: 1.0 }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let run_id = Uuid::parse_str(&run.run_id)?;

    let trust = ipw_agent::join::Trust::Pinned(fingerprint.clone());
    let agent = ipw_agent::join::join(&coordinator.url, &trust, &token.token, "survivor", Default::default()).await?;
    let spool = ipw_e2e::agent_spool(dir.path(), "survivor");
    let mut child = ipw_e2e::agent_process(dir.path(), &agent)?.stdout(std::process::Stdio::null()).spawn()?;

    let pool = sqlx::PgPool::connect(&database_url).await?;
    let before = wait_for_results(&pool, run_id, 3).await?;
    anyhow::ensure!(before < 12, "the kill must come mid-run");
    coordinator.kill().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    coordinator.restart().await?;
    assert_eq!(coordinator.fingerprint()?, fingerprint, "the CA survived the restart");

    let status = tokio::time::timeout(Duration::from_secs(180), child.wait()).await??;
    assert!(status.success(), "the agent finished the run");
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (query_id, repetition)) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&pool)
            .await?;
    assert_eq!((rows, distinct), (12, 12), "every query exactly once");
    assert!(spool.is_empty()?, "the spool ends empty");
    let run_status: String =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1").bind(run_id).fetch_one(&pool).await?;
    assert_eq!(run_status, "completed");
    eprintln!("killed the coordinator process with {before} of 12 results committed");
    Ok(())
}
