//! Engine failures are not answers: a crashed engine's queries go back to the queue and are
//! measured once it is back, while a request the engine refuses stays a result with its error.
//! And a stopped agent (SIGTERM) finishes cleanly: leases back at once, no engine left behind.

use ipw_agent::client;
use ipw_e2e::{Fleet, OwnEngine, agent_service_process_on, http_ok};
use ipw_proto::v1::{AcquireLeaseRequest, RunStatusRequest};
use std::time::Duration;
use uuid::Uuid;

const SMOL: &str = "SmolLM2-135M-Instruct";

async fn wait_completed(fleet: &mut Fleet, run_id: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status =
            fleet.admin.get_run_status(RunStatusRequest { run_id: run_id.to_owned() }).await?.into_inner().status;
        if status == "completed" {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "run {run_id} is {status} after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The agent's llama-server is killed (`kill -9`) mid-shard and started again 2 s later. The
/// queries in flight were not answered: none of them is recorded as a result. The agent gives
/// the shard back, waits for its engine, and the run completes with every query once, none
/// with an error. Before, the queries in flight were recorded as errors ("error sending
/// request") and counted as wrong, and never measured again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_engines_queries_are_measured_again_not_recorded_as_errors() -> anyhow::Result<()> {
    const QUERIES: i64 = 6;
    let mut engine = OwnEngine::start(&["-np", "2", "-c", "4096"]).await?;
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "crashy").await?;
    let run = fleet.create_run("slice", QUERIES as u32, QUERIES as u32, 2, 48).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let spool = fleet.spool("crashy");
    let mut process = agent_service_process_on(fleet.dir.path(), &agent, &engine.url())?.spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while spool.len()? < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent measured nothing in 2 minutes");
        anyhow::ensure!(process.try_wait()?.is_none(), "the agent exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.kill().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.restart().await?;
    wait_completed(&mut fleet, &run.run_id, Duration::from_secs(180)).await?;
    process.kill().await?;

    let (rows, distinct, errors): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (query_id, repetition)), count(*) FILTER (WHERE error IS NOT NULL)
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    let failed: Vec<String> = sqlx::query_scalar("SELECT error FROM results WHERE run_id = $1 AND error IS NOT NULL")
        .bind(run_id)
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!((rows, distinct, errors), (QUERIES, QUERIES, 0), "errors recorded: {failed:?}");
    let counted: i64 = sqlx::query_scalar("SELECT coalesce(sum(failures), 0) FROM engine_failures WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert!(counted >= 1, "the query in flight when the engine died was counted as an engine failure");
    Ok(())
}

/// A prompt longer than the engine's context is refused with a 400: that is the request's
/// failure, not the engine's. It stays a result with its error, counted in `errors` apart
/// from wrong answers, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_the_engine_refuses_stays_a_result_with_its_error() -> anyhow::Result<()> {
    let engine = OwnEngine::start(&["-np", "1", "-c", "256"]).await?;
    let mut fleet = Fleet::start().await?;
    let long = format!(r#"{{"id": "long", "prompt": "{}", "answer": "x"}}"#, "word ".repeat(600));
    fleet.import_lines("mixed", &[r#"{"id": "short", "prompt": "Say hi.", "answer": "hi"}"#, &long]).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "strict").await?;
    let run = fleet.create_run("mixed", 2, 2, 1, 8).await?;
    let opts = ipw_agent::runner::RunOptions { engine_url: engine.url(), ..fleet.run_options() };
    let summary = ipw_agent::runner::run(&agent, &fleet.spool("strict"), &opts).await?;
    assert_eq!((summary.shards, summary.committed), (1, 2));

    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM results WHERE run_id = $1 AND error IS NOT NULL")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("400") && errors[0].contains("context"), "{}", errors[0]);
    let (queries, errored): (i64, i64) = sqlx::query_as("SELECT queries, errors FROM ipw_summary WHERE run_id = $1")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!((queries, errored), (2, 1));
    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!(status.status, "completed");
    Ok(())
}

/// SIGTERM (what `systemctl stop` sends) to a real managed-mode agent mid-shard: it finishes or
/// abandons the queries in flight, uploads what it measured, gives its lease back, stops its
/// llama-server and exits 0. Another agent gets the shard within a second. Before, the agent
/// died on the spot, its llama-server stayed up holding its port, and the shard waited for
/// the lease to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_a_managed_agent_cleanly() -> anyhow::Result<()> {
    let gguf = std::env::var("IPW_TEST_MODEL_FILE").expect("IPW_TEST_MODEL_FILE is set by scripts/test");
    let server = std::env::var("IPW_TEST_LLAMA_SERVER").expect("IPW_TEST_LLAMA_SERVER is set by scripts/test");
    let mut fleet = Fleet::start().await?;
    let models = fleet.dir.path().join("models");
    std::fs::create_dir_all(&models)?;
    std::os::unix::fs::symlink(&gguf, models.join(format!("{SMOL}.Q4_1.gguf")))?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "stopping").await?;
    let other = fleet.join(&token, "other").await?;
    let run = fleet.create_run("slice", 8, 8, 1, 64).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = fleet.agent_service_process(&agent)?;
    cmd.args(["--engine", "managed", "--engine-threads", "1", "--engine-parallel", "1"])
        .arg("--model-dir")
        .arg(&models)
        .arg("--llama-server")
        .arg(&server)
        .arg("--engine-port")
        .arg(port.to_string());
    let mut process = cmd.spawn()?;
    let spool = fleet.spool("stopping");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while spool.len()? < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent measured nothing in 3 minutes");
        anyhow::ensure!(process.try_wait()?.is_none(), "the agent exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(http_ok(port, "/health").await, "the managed llama-server is up");
    let mut rpc = client::connect(&other).await?;
    let pid = process.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status()?.success());
    let status = tokio::time::timeout(Duration::from_secs(60), process.wait()).await??;
    let stopped = tokio::time::Instant::now();
    assert!(status.success(), "the agent exits 0 on SIGTERM, not {status}");

    // Its shard goes to the other agent at once.
    let lease = rpc
        .acquire_lease(AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() })
        .await?
        .into_inner()
        .lease
        .expect("the stopped agent's shard is free");
    assert!(stopped.elapsed() < Duration::from_secs(1), "leased again {:?} after the stop", stopped.elapsed());
    assert_eq!(lease.run_id, run.run_id);
    // What it measured was uploaded, and its llama-server is gone.
    assert!(spool.is_empty()?, "the spool was flushed before exit");
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM results WHERE run_id = $1")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_one(&fleet.pool)
        .await?;
    assert!(committed >= 1, "the results measured before the stop were committed");
    assert_eq!(lease.items.len() as i64, 8 - committed, "only the unanswered queries are handed out again");
    assert!(!http_ok(port, "/health").await, "no llama-server is left on port {port}");
    Ok(())
}

/// A query the engine keeps failing is not retried for ever: at the coordinator's limit (3
/// by default) it is recorded as a result with the engine's error, so its run can finish.
#[tokio::test]
async fn a_query_the_engine_always_fails_is_recorded_as_an_error_at_the_limit() -> anyhow::Result<()> {
    use ipw_proto::v1::{EngineFailure, ReleaseLeasesRequest};
    let mut fleet = Fleet::start().await?;
    fleet.import_lines("one", &[r#"{"id": "1", "prompt": "hi", "answer": "a"}"#]).await?;
    let run = fleet.create_run("one", 1, 1, 1, 8).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let mut rpc = client::connect(&fleet.join(&token, "unlucky").await?).await?;
    for attempt in 1..=3 {
        let lease = rpc
            .acquire_lease(AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() })
            .await?
            .into_inner()
            .lease
            .expect("the shard is handed out again");
        assert_eq!(lease.items.len(), 1, "attempt {attempt}: the query is still to be measured");
        let failure = EngineFailure {
            shard_id: lease.shard_id.clone(),
            query_id: lease.items[0].query_id,
            repetition: 0,
            error: "POST /v1/chat/completions: connection refused".into(),
        };
        let request = ReleaseLeasesRequest { shard_ids: vec![lease.shard_id], engine_failures: vec![failure] };
        let released = rpc.release_leases(request).await?.into_inner();
        assert_eq!((released.released, released.recorded_as_errors), (1, u32::from(attempt == 3)));
    }
    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM results WHERE run_id = $1")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!(
        errors,
        ["the engine failed on this query 3 times; last: POST /v1/chat/completions: connection refused"]
    );
    // The shard is then handed out with nothing left to measure, and completes the run.
    let lease = rpc
        .acquire_lease(AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() })
        .await?
        .into_inner()
        .lease
        .expect("the shard, to complete");
    assert!(lease.items.is_empty());
    let done = rpc.complete_shard(ipw_proto::v1::CompleteShardRequest { shard_id: lease.shard_id }).await?;
    assert!(done.into_inner().run_completed);
    Ok(())
}
