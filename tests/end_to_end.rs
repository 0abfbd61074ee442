//! Two agents, one token, a sharded run of real MMLU-Pro questions on the real SmolLM2
//! server, results and IPW in Postgres.

use ipw_agent::runner::{self, RunOptions};
use ipw_e2e::{Fleet, engine_url, mmlu_pro};
use ipw_proto::v1::{
    ApproveAgentRequest, CreateRunRequest, GenerationParams, ReportRequest, RunStatusRequest,
};
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
        fleet
            .admin
            .approve_agent(ApproveAgentRequest {
                agent_id: name.into(),
            })
            .await?;
    }

    let run = fleet
        .admin
        .create_run(CreateRunRequest {
            workload: "mmlu-pro".into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample: 24,
            seed: 7,
            concurrency: 2,
            shard_size: 5,
            repetitions: 1,
            params: Some(GenerationParams {
                max_tokens: 128,
                temperature: 0.0,
                top_p: 1.0,
            }),
        })
        .await?
        .into_inner();
    assert_eq!((run.queries, run.shards), (24, 5));
    let run_id = Uuid::parse_str(&run.run_id)?;

    let opts = RunOptions {
        engine_url: engine_url(),
        exit_when_idle: true,
        upload_batch: 3,
        ..RunOptions::default()
    };
    let (spool_a, spool_b) = (fleet.spool("a"), fleet.spool("b"));
    let (ra, rb) = tokio::join!(
        runner::run(&a, &spool_a, &opts),
        runner::run(&b, &spool_b, &opts)
    );
    let (ra, rb) = (ra?, rb?);
    assert_eq!(ra.committed + rb.committed, 24);
    assert_eq!(ra.duplicates + rb.duplicates, 0);
    assert!(
        spool_a.is_empty()? && spool_b.is_empty()?,
        "acknowledged results leave the spool"
    );

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
    assert_eq!((errors, bad_tokens, bad_ttft), (0, 0, 0));

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
        .get_report(ReportRequest {
            run_id: run.run_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(report.rows.len(), 1, "both agents share one hardware class");
    let row = &report.rows[0];
    assert_eq!(row.queries, 24);
    assert_eq!(row.accuracy, Some(correct as f64 / 24.0));
    assert!(
        row.latency_p50_s.is_some()
            && row.ttft_p95_s.is_some()
            && row.output_tokens_per_s.is_some()
    );
    assert_eq!((row.mean_power_w, row.ipw, row.ipj), (None, None, None));
    assert!(
        row.energy_null_reason
            .starts_with("no readable power source")
    );

    // The shards were spread over both agents, and the run is complete.
    let status = fleet
        .admin
        .get_run_status(RunStatusRequest {
            run_id: run.run_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(status.status, "completed");
    assert_eq!(status.shards_completed, 5);
    assert_eq!(status.agents.len(), 2);
    assert!(
        status.agents.iter().all(|s| s.shards_completed >= 1),
        "{:?}",
        status.agents
    );
    assert_eq!(ra.shards + rb.shards, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_result_is_acknowledged_as_duplicate_and_not_recorded_twice() -> anyhow::Result<()>
{
    let mut fleet = Fleet::start().await?;
    let file = fleet.dir.path().join("two.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"capital\", \"prompt\": \"What is the capital of France? Answer with one word.\", \"answer\": \"Paris\"}\n\
         {\"id\": \"sum\", \"prompt\": \"What is 2+3? Answer with a number only.\", \"answer\": \"5\"}\n",
    )?;
    fleet.import(&file, "tiny").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "solo").await?;
    fleet
        .admin
        .create_run(CreateRunRequest {
            workload: "tiny".into(),
            model: "SmolLM2-135M-Instruct".into(),
            sample: 2,
            seed: 1,
            concurrency: 1,
            shard_size: 2,
            repetitions: 1,
            params: Some(GenerationParams {
                max_tokens: 16,
                temperature: 0.0,
                top_p: 1.0,
            }),
        })
        .await?;
    let spool = fleet.spool("solo");
    let opts = RunOptions {
        engine_url: engine_url(),
        exit_when_idle: true,
        ..RunOptions::default()
    };
    let first = runner::run(&agent, &spool, &opts).await?;
    assert_eq!((first.committed, first.duplicates), (2, 0));

    // Put a committed result back in the spool, as if the ack had been lost in a crash.
    let (run_id, shard_id, query_id): (Uuid, Uuid, i64) =
        sqlx::query_as("SELECT run_id, shard_id, query_id FROM results LIMIT 1")
            .fetch_one(&fleet.pool)
            .await?;
    spool.put(&ipw_proto::v1::QueryResult {
        run_id: run_id.to_string(),
        shard_id: shard_id.to_string(),
        query_id,
        repetition: 0,
        started_unix_us: chrono_now_us(),
        latency_s: 1.0,
        response: "a different answer".into(),
        energy: Some(ipw_proto::v1::Energy {
            source: "none".into(),
            null_reason: "test".into(),
            ..Default::default()
        }),
        ..Default::default()
    })?;
    let second = runner::run(&agent, &spool, &opts).await?;
    assert_eq!((second.committed, second.duplicates), (0, 1));
    assert!(spool.is_empty()?);
    let (rows, kept): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM results), (SELECT response FROM results WHERE query_id = $1)",
    )
    .bind(query_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!(rows, 2);
    assert_ne!(
        kept, "a different answer",
        "the first committed measurement is kept"
    );
    Ok(())
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}
