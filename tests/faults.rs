//! Faults the fleet must ride out without losing or duplicating a result.

use ipw_agent::runner::{self, RunOptions};
use ipw_e2e::{Fleet, wait_for_results};
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
    let file = fleet.dir.path().join("one.jsonl");
    std::fs::write(&file, "{\"id\": \"1\", \"prompt\": \"hi\", \"answer\": \"hello\"}\n")?;
    fleet.import(&file, "one").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let cfg = fleet.join(&token, "vanishing").await?;
    let run = fleet.create_run("one", 1, 1, 1, 8).await?;
    let mut coord = ipw_agent::client::connect(&cfg.coordinator, &cfg.credential).await?;
    let lease = || AcquireLeaseRequest { available_models: vec!["SmolLM2-135M-Instruct".into()] };
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
