//! Leases that never strand or falsify work: a heartbeat renews only the leases it names, the
//! last two shards completed at once complete the run, a cancelled run stays cancelled, and an
//! agent told it lost a lease stops and drops what it measured.

use ipw_agent::client::{self, Coordinator};
use ipw_agent::runner;
use ipw_e2e::{Fleet, made_up_result};
use ipw_proto::v1::{
    AcquireLeaseRequest, CompleteShardRequest, Lease, ResultBatch, RunStatusRequest, SweepSpec, SweepStatusRequest,
};
use std::time::Duration;
use uuid::Uuid;

const SMOL: &str = "SmolLM2-135M-Instruct";

/// Leases a shard as `agent`; panics when there is none.
async fn lease(agent: &mut Coordinator) -> anyhow::Result<Lease> {
    let request = AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() };
    Ok(agent.acquire_lease(request).await?.into_inner().lease.expect("a shard to lease"))
}

/// Uploads a made-up answer for every item of the lease (the answers' content does not matter
/// to leasing) and waits for the acknowledgement.
async fn upload_all(agent: &mut Coordinator, lease: &Lease) -> anyhow::Result<()> {
    let results = lease.items.iter().map(|item| made_up_result(lease, item)).collect();
    let batch = ResultBatch { batch_seq: 1, results };
    let mut acks = agent.upload_results(tokio_stream::iter(vec![batch])).await?.into_inner();
    let ack = acks.message().await?.expect("an ack");
    assert_eq!(ack.inserted as usize, lease.items.len());
    Ok(())
}

async fn run_status(fleet: &mut Fleet, run_id: &str) -> anyhow::Result<String> {
    Ok(fleet.admin.get_run_status(RunStatusRequest { run_id: run_id.to_owned() }).await?.into_inner().status)
}

/// Two agents complete a run's last two shards at the same moment. The test holds both
/// shards' row locks until both calls are waiting on them, then lets go, so the two
/// completions run side by side; ten runs in a row. Without the run lock, each saw the
/// other's shard unfinished and the run stayed `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_two_shards_completed_at_once_complete_the_run() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let lines = [r#"{"id": "1", "prompt": "hi", "answer": "a"}"#, r#"{"id": "2", "prompt": "yo", "answer": "b"}"#];
    fleet.import_lines("two", &lines).await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let (mut a, mut b) = (
        client::connect(&fleet.join(&token, "a").await?).await?,
        client::connect(&fleet.join(&token, "b").await?).await?,
    );
    for round in 0..10 {
        let run = fleet.create_run("two", 2, 1, 1, 8).await?;
        let (lease_a, lease_b) = (lease(&mut a).await?, lease(&mut b).await?);
        assert_ne!(lease_a.shard_id, lease_b.shard_id);
        upload_all(&mut a, &lease_a).await?;
        upload_all(&mut b, &lease_b).await?;

        let mut holder = fleet.pool.begin().await?;
        sqlx::query("SELECT id FROM shards WHERE run_id = $1 FOR UPDATE")
            .bind(Uuid::parse_str(&run.run_id)?)
            .execute(&mut *holder)
            .await?;
        let complete = |mut c: Coordinator, shard_id: String| {
            tokio::spawn(async move { c.complete_shard(CompleteShardRequest { shard_id }).await })
        };
        let done_a = complete(a.clone(), lease_a.shard_id.clone());
        let done_b = complete(b.clone(), lease_b.shard_id.clone());
        wait_for_lock_waiters(&fleet.pool, 2).await?;
        holder.commit().await?;
        let (done_a, done_b) = (done_a.await??.into_inner(), done_b.await??.into_inner());
        assert_eq!(run_status(&mut fleet, &run.run_id).await?, "completed", "round {round}");
        assert!(done_a.run_completed ^ done_b.run_completed, "round {round}: exactly one call completed the run");
    }
    Ok(())
}

/// Waits until `n` database sessions are blocked on a lock (ten seconds at most).
async fn wait_for_lock_waiters(pool: &sqlx::PgPool, n: i64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        if waiting >= n {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{waiting} of {n} calls waiting on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A one-off sweep over the fleet's agents, for runs that can be cancelled.
fn sweep(name: &str, workload: &str, sample: u32) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        workload: workload.into(),
        models: vec![SMOL.into()],
        sample,
        concurrency: vec![1],
        shard_size: 1,
        ..Default::default()
    }
}

/// A run cancelled (with its sweep) stays cancelled: when an agent then completes its last
/// shard, and when its last shard's lease runs out for good.
#[tokio::test]
async fn a_cancelled_run_stays_cancelled() -> anyhow::Result<()> {
    use ipw_coordinator::api::State;
    use ipw_coordinator::infra::pool::connect_and_migrate;
    let pool = connect_and_migrate(ipw_e2e::fresh_database().await?).await?;
    let state = State { lease_ttl: Duration::from_millis(300), max_attempts: 1, ..State::new(pool) };
    let mut fleet = Fleet::start_with(state).await?;
    fleet.import_lines("one", &[r#"{"id": "1", "prompt": "hi", "answer": "a"}"#]).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let mut agent = client::connect(&fleet.join(&token, "a").await?).await?;
    let cancel = |sweep_id: String| SweepStatusRequest { sweep_id, status: "cancelled".into() };

    // Cancelled while the agent finishes the only shard, which it then completes.
    let finished = fleet.admin.create_sweep(sweep("finished", "one", 1)).await?.into_inner();
    let shard = lease(&mut agent).await?;
    upload_all(&mut agent, &shard).await?;
    fleet.admin.set_sweep_status(cancel(finished.sweep_id.clone())).await?;
    agent.complete_shard(CompleteShardRequest { shard_id: shard.shard_id.clone() }).await?;
    assert_eq!(run_status(&mut fleet, &finished.runs[0].run_id).await?, "cancelled", "not completed");

    // Cancelled while the only shard is leased; its lease then runs out with no attempt left.
    let abandoned = fleet.admin.create_sweep(sweep("abandoned", "one", 1)).await?.into_inner();
    lease(&mut agent).await?;
    fleet.admin.set_sweep_status(cancel(abandoned.sweep_id.clone())).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let request = AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() };
    assert!(agent.acquire_lease(request).await?.into_inner().lease.is_none(), "a cancelled run hands out nothing");
    assert_eq!(run_status(&mut fleet, &abandoned.runs[0].run_id).await?, "cancelled", "not failed");
    Ok(())
}

/// The coordinator moves an agent's lease away mid-shard (as when it ran out and another agent
/// took it). The agent's next heartbeat is told so: it stops the shard's queries, drops what it
/// measured since, and never completes the shard. Results it streamed while it held the lease
/// stay: they were measured on a lease it held, and the first result of a query is the one
/// that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_told_its_lease_is_lost_stops_and_drops_its_results() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let loser = fleet.join(&token, "loser").await?;
    let taker = fleet.join(&token, "taker").await?;
    let run = fleet.create_run("slice", 8, 8, 1, 64).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let spool = fleet.spool("loser");
    let mut opts = fleet.run_options();
    opts.heartbeat_interval = Duration::from_millis(100);
    // The lease moves to the other agent, as if it had run out and been taken, once the agent
    // has measured something.
    let taker_id = Uuid::parse_str(&taker.agent_id)?;
    let move_lease = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while spool.len()? < 1 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent measured nothing in 2 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let moved_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "WITH moved AS (
                 UPDATE shards SET lease_owner = $2, attempts = attempts + 1,
                                   lease_expires_at = now() + interval '1 hour'
                 WHERE run_id = $1 RETURNING id, attempts),
             attempt AS (
                 INSERT INTO lease_attempts (shard_id, attempt, agent_id) SELECT id, attempts, $2 FROM moved)
             SELECT now()",
        )
        .bind(run_id)
        .bind(taker_id)
        .fetch_one(&fleet.pool)
        .await?;
        anyhow::Ok(moved_at)
    };
    let working = tokio::time::timeout(Duration::from_secs(120), runner::run(&loser, &spool, &opts));
    let (summary, moved_at) = tokio::join!(working, move_lease);
    let (summary, moved_at) = (summary??, moved_at?);
    assert_eq!(summary.shards, 0, "the lost shard is never completed");
    let (by_loser, started_after_heard): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE started_at > $2 + interval '500 milliseconds')
         FROM results WHERE run_id = $1 AND agent_id = (SELECT id FROM agents WHERE name = 'loser')",
    )
    .bind(run_id)
    .bind(moved_at)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!(by_loser as u64, summary.committed);
    assert!(by_loser < 8, "the agent stopped: {by_loser} of 8 committed");
    assert_eq!(started_after_heard, 0, "nothing started after the heartbeat said the lease was lost");
    assert!(spool.is_empty()?, "and what it measured since is gone from the spool");
    Ok(())
}

/// `kill -9` of a real agent mid-shard, restarted at once (as systemd does) with the same
/// identity and left running. Its heartbeats name only the shards the new life works on, so
/// the earlier life's lease runs out and goes back to the queue within two lease TTLs, and the
/// run completes with every query once. Before, the restarted agent renewed the dead lease for
/// ever and the run never completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_lets_its_earlier_lifes_lease_run_out() -> anyhow::Result<()> {
    const QUERIES: i64 = 6;
    let ttl = Duration::from_secs(3);
    let mut fleet = Fleet::start_with_lease_ttl(ttl).await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "phoenix").await?;
    let run = fleet.create_run("slice", QUERIES as u32, 3, 1, 24).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let spool = fleet.spool("phoenix");
    let mut first = fleet.agent_process(&agent)?.spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while spool.len()? < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the agent spooled nothing in 2 minutes");
        anyhow::ensure!(first.try_wait()?.is_none(), "the agent exited before it was killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await?;
    let dead_shard: Uuid = sqlx::query_scalar("SELECT id FROM shards WHERE run_id = $1 AND status = 'leased'")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    let mut second = fleet.agent_service_process(&agent)?.spawn()?;
    let restarted = tokio::time::Instant::now();

    // Within two TTLs of the restart, the dead life's lease has run out or moved on.
    tokio::time::sleep(2 * ttl).await;
    let (expired, attempts): (bool, i32) =
        sqlx::query_as("SELECT coalesce(lease_expires_at < now(), true), attempts FROM shards WHERE id = $1")
            .bind(dead_shard)
            .fetch_one(&fleet.pool)
            .await?;
    assert!(
        expired || attempts > 1,
        "the earlier life's lease is still renewed {:?} after the restart",
        restarted.elapsed()
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while run_status(&mut fleet, &run.run_id).await? != "completed" {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the run did not complete in 3 minutes");
        anyhow::ensure!(second.try_wait()?.is_none(), "the restarted agent exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.kill().await?;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (query_id, repetition)) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!((rows, distinct), (QUERIES, QUERIES), "every query once");
    Ok(())
}

/// One shard fails for good while another is still being worked on: when that one
/// completes, the run ends `failed`, with nothing left open. Before, it stayed `running`.
#[tokio::test]
async fn a_run_whose_shard_failed_ends_when_its_last_shard_completes() -> anyhow::Result<()> {
    use ipw_coordinator::api::State;
    use ipw_coordinator::infra::pool::connect_and_migrate;
    let pool = connect_and_migrate(ipw_e2e::fresh_database().await?).await?;
    let state = State { lease_ttl: Duration::from_millis(300), max_attempts: 1, ..State::new(pool) };
    let mut fleet = Fleet::start_with(state).await?;
    let lines = [r#"{"id": "1", "prompt": "hi", "answer": "a"}"#, r#"{"id": "2", "prompt": "yo", "answer": "b"}"#];
    fleet.import_lines("two", &lines).await?;
    let run = fleet.create_run("two", 2, 1, 1, 8).await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let mut quitter = client::connect(&fleet.join(&token, "quitter").await?).await?;
    let mut finisher = client::connect(&fleet.join(&token, "finisher").await?).await?;
    lease(&mut quitter).await?; // and never heard from again
    tokio::time::sleep(Duration::from_millis(400)).await;
    let shard = lease(&mut finisher).await?; // the other shard; the quitter's now fails
    assert_eq!(run_status(&mut fleet, &run.run_id).await?, "running", "a shard is still leased");
    upload_all(&mut finisher, &shard).await?;
    finisher.complete_shard(CompleteShardRequest { shard_id: shard.shard_id.clone() }).await?;
    assert_eq!(run_status(&mut fleet, &run.run_id).await?, "failed");
    Ok(())
}

/// An agent that gives a shard back and leases it again keeps each attempt's telemetry: the
/// second idle baseline and series are not dropped as a repeat of the first.
#[tokio::test]
async fn each_lease_attempt_keeps_its_own_telemetry() -> anyhow::Result<()> {
    use ipw_proto::v1::{PowerSourceInfo, ReleaseLeasesRequest, ShardTelemetry};
    let mut fleet = Fleet::start().await?;
    fleet.import_lines("one", &[r#"{"id": "1", "prompt": "hi", "answer": "a"}"#]).await?;
    fleet.create_run("one", 1, 1, 1, 8).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let mut agent = client::connect(&fleet.join(&token, "twice").await?).await?;
    for idle_w in [10.0, 12.0] {
        let shard = lease(&mut agent).await?;
        let telemetry = ShardTelemetry {
            shard_id: shard.shard_id.clone(),
            idle_power_w: Some(idle_w),
            idle_seconds: 10.0,
            sample_hz: 20.0,
            attribution: "time-share".into(),
            sources: vec![PowerSourceInfo { kind: "rapl".into(), scope: "cpu-package".into(), ..Default::default() }],
            clock_zero_unix_us: chrono::Utc::now().timestamp_micros(),
            ..Default::default()
        };
        agent.upload_shard_telemetry(telemetry).await?;
        agent.release_leases(ReleaseLeasesRequest { shard_ids: vec![shard.shard_id], ..Default::default() }).await?;
    }
    let idle: Vec<(i32, f64)> = sqlx::query_as("SELECT attempt, idle_power_w FROM shard_telemetry ORDER BY attempt")
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!(idle, [(1, 10.0), (2, 12.0)]);
    Ok(())
}

/// An agent dies between uploading its shard's last result and completing the shard (as when
/// its coordinator is killed at that moment). When the lease runs out, the next agent is
/// leased the shard with nothing left to run: it completes it, rather than giving it back to
/// come round for ever, and the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_completes_a_leased_shard_whose_results_all_landed() -> anyhow::Result<()> {
    use ipw_coordinator::api::State;
    use ipw_coordinator::infra::pool::connect_and_migrate;
    let pool = connect_and_migrate(ipw_e2e::fresh_database().await?).await?;
    let state = State { lease_ttl: Duration::from_secs(2), ..State::new(pool) };
    let mut fleet = Fleet::start_with(state).await?;
    let lines = [r#"{"id": "1", "prompt": "hi", "answer": "a"}"#, r#"{"id": "2", "prompt": "ho", "answer": "b"}"#];
    fleet.import_lines("two", &lines).await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let mut first = client::connect(&fleet.join(&token, "first").await?).await?;
    let second = fleet.join(&token, "second").await?;
    let run = fleet.create_run("two", 2, 1, 1, 8).await?;

    let finished = lease(&mut first).await?;
    upload_all(&mut first, &finished).await?;
    // No completion and no heartbeat: the lease runs out.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let status = fleet.agent_process(&second)?.stdout(std::process::Stdio::null()).status();
    let status = tokio::time::timeout(Duration::from_secs(120), status).await??;
    assert!(status.success());
    assert_eq!(run_status(&mut fleet, &run.run_id).await?, "completed");
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shards WHERE run_id = $1::uuid AND status = 'completed'")
            .bind(&run.run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!(completed, 2);
    Ok(())
}
