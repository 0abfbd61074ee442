//! Who may join, and who may get work.

use ipw_agent::client;
use ipw_agent::config::AgentConfig;
use ipw_e2e::Fleet;
use ipw_proto::v1::{AcquireLeaseRequest, ApproveAgentRequest, HeartbeatRequest, ListAgentsRequest};
use std::time::Duration;
use tonic::Code;

fn refusal(e: anyhow::Error) -> String {
    format!("{e:#}")
}

#[tokio::test]
async fn wrong_expired_and_used_up_tokens_are_refused_with_the_reason() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;

    let e = refusal(fleet.join("not-a-real-token", "x").await.unwrap_err());
    assert!(e.contains("join token not recognised"), "{e}");

    let short = fleet.token(5, false, Duration::from_secs(1)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = refusal(fleet.join(&short, "late").await.unwrap_err());
    assert!(e.contains("join token expired"), "{e}");

    let once = fleet.token(1, false, Duration::from_secs(60)).await?;
    fleet.join(&once, "first").await?;
    let e = refusal(fleet.join(&once, "second").await.unwrap_err());
    assert!(e.contains("used up (1 of 1 uses)"), "{e}");

    // Refusals change nothing: only the one good join left an agent behind.
    let agents = fleet.admin.list_agents(ListAgentsRequest {}).await?.into_inner().agents;
    assert_eq!(agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["first"]);
    Ok(())
}

#[tokio::test]
async fn an_unapproved_agent_gets_no_lease_until_approved() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let token = fleet.token(1, false, Duration::from_secs(60)).await?;
    let cfg = fleet.join(&token, "pending-box").await?;
    let mut coord = client::connect(&cfg).await?;

    assert_eq!(coord.heartbeat(HeartbeatRequest::default()).await?.into_inner().status, "pending");
    let e = coord.acquire_lease(AcquireLeaseRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains(&format!("ipw agents approve {}", cfg.agent_id)), "{}", e.message());

    fleet.admin.approve_agent(ApproveAgentRequest { agent_id: cfg.agent_id.clone() }).await?;
    let lease = coord.acquire_lease(AcquireLeaseRequest::default()).await?.into_inner().lease;
    assert!(lease.is_none(), "approved, and there is simply no work yet");
    Ok(())
}

#[tokio::test]
async fn an_agent_whose_engine_is_down_takes_no_work() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.one_query_run().await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let cfg = fleet.join(&token, "no-engine").await?;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let opts = ipw_agent::runner::RunOptions { engine_url: format!("http://{dead}"), ..fleet.run_options() };
    let e = format!("{:#}", ipw_agent::runner::run(&cfg, &fleet.spool("x"), &opts).await.unwrap_err());
    assert!(e.contains("the engine is not answering"), "{e}");
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM lease_attempts").fetch_one(&fleet.pool).await?;
    assert_eq!(leased, 0);
    Ok(())
}

#[tokio::test]
async fn forged_credentials_and_admin_tokens_are_refused() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let cfg = fleet.join(&token, "real").await?;

    let forged = format!("{}.{}", cfg.agent_id, "0".repeat(64));
    let mut coord = client::connect(&AgentConfig { credential: forged, ..cfg.clone() }).await?;
    let e = coord.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().starts_with("agent credential rejected"), "{}", e.message());

    let unknown = format!("{}.{}", uuid::Uuid::new_v4(), "0".repeat(64));
    let mut coord = client::connect(&AgentConfig { credential: unknown, ..cfg.clone() }).await?;
    let e = coord.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().starts_with("unknown agent"), "{}", e.message());

    let mut wrong_admin = ipw_coordinator::cli::connect(&fleet.coordinator.url(), None, "wrong").await?;
    let e = wrong_admin.list_agents(ListAgentsRequest {}).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "admin token rejected"));
    Ok(())
}

/// An agent may report and complete only its own leases.
#[tokio::test]
async fn another_agents_lease_is_refused() -> anyhow::Result<()> {
    use ipw_proto::v1::{CompleteShardRequest, Energy, QueryResult, ResultBatch};
    let mut fleet = Fleet::start().await?;
    fleet.one_query_run().await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let (owner, intruder) = (fleet.join(&token, "owner").await?, fleet.join(&token, "intruder").await?);
    let mut owner_rpc = client::connect(&owner).await?;
    let mut intruder_rpc = client::connect(&intruder).await?;
    let models = vec!["SmolLM2-135M-Instruct".to_owned()];
    let lease = owner_rpc
        .acquire_lease(AcquireLeaseRequest { available_models: models, ..Default::default() })
        .await?
        .into_inner()
        .lease
        .expect("the owner leases the only shard");

    // A result for the owner's shard, sent by the intruder: refused, nothing recorded.
    let forged = QueryResult {
        shard_id: lease.shard_id.clone(),
        run_id: lease.run_id.clone(),
        query_id: lease.items[0].query_id,
        latency_s: 1.0,
        started_unix_us: 1_700_000_000_000_000,
        response: "The answer is hello".into(),
        energy: Some(Energy { source: "none".into(), null_reason: "test".into(), ..Default::default() }),
        ..Default::default()
    };
    let batch = ResultBatch { batch_seq: 1, results: vec![forged] };
    let mut acks = intruder_rpc.upload_results(tokio_stream::iter(vec![batch])).await?.into_inner();
    let e = acks.message().await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("was never leased to this agent"), "{}", e.message());
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM results").fetch_one(&fleet.pool).await?;
    assert_eq!(recorded, 0);

    // Completing the owner's shard: refused too.
    let e = intruder_rpc.complete_shard(CompleteShardRequest { shard_id: lease.shard_id.clone() }).await.unwrap_err();
    assert_eq!((e.code(), e.message().contains("not leased to this agent")), (Code::PermissionDenied, true));
    Ok(())
}
