//! PostgreSQL restarts mid-run (the test cluster is stopped and started again): the
//! coordinator's calls fail as unavailable meanwhile, the agent retries with backoff, and the
//! run completes with every query exactly once. Alone in its test binary, because it takes the
//! shared test cluster down.

use ipw_agent::runner::{self, RunOptions};
use ipw_e2e::{Fleet, wait_for_results};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

/// Runs `pg_ctl` on the test cluster, as its owner.
fn pg_ctl(args: &[&str]) -> anyhow::Result<()> {
    let data = std::env::var("IPW_TEST_PGDATA").expect("IPW_TEST_PGDATA is set by scripts/test");
    let bin = std::env::var("IPW_TEST_PG_BIN").expect("IPW_TEST_PG_BIN is set by scripts/test");
    let pg_ctl = format!("{bin}/pg_ctl");
    let log = format!("{data}/../postgres.log");
    let mut full: Vec<&str> = vec![&pg_ctl, "-D", &data, "-l", &log, "-w"];
    full.extend_from_slice(args);
    let output = match std::env::var("IPW_TEST_PG_RUN_AS").ok().filter(|u| !u.is_empty()) {
        Some(user) => Command::new("runuser").args(["-u", &user, "--"]).args(&full).output()?,
        None => Command::new(full[0]).args(&full[1..]).output()?,
    };
    anyhow::ensure!(output.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_run_survives_a_postgres_restart_and_every_query_lands_once() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(200, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "patient").await?;
    let run = fleet.create_run("slice", 12, 2, 1, 24).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let opts = RunOptions { retry_for: Duration::from_secs(120), ..fleet.run_options() };
    let spool = fleet.spool("patient");
    let pool = fleet.pool.clone();
    let restart = async {
        let before = wait_for_results(&pool, run_id, 2).await?;
        // Blocking pg_ctl off the async threads; the database is down for about 4 s.
        tokio::task::spawn_blocking(|| pg_ctl(&["-m", "fast", "stop"])).await??;
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::spawn_blocking(|| pg_ctl(&["start"])).await??;
        anyhow::Ok(before)
    };
    let (summary, before) = tokio::join!(runner::run(&agent, &spool, &opts), restart);
    let before = before?;
    let summary = summary?;
    assert!(before < 12, "the restart came mid-run ({before} of 12 in)");
    assert_eq!(summary.shards, 6);
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (query_id, repetition)) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await?;
    assert_eq!((rows, distinct), (12, 12), "every query exactly once");
    assert!(spool.is_empty()?, "the spool ends empty");
    Ok(())
}
