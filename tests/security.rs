//! Who gets in, over what: TLS with a pinned CA, mTLS, revocation, rotation, rate limits, and
//! a result stream cut mid-message.

use ipw_agent::client;
use ipw_agent::config::AgentConfig;
use ipw_agent::join::{self, Trust};
use ipw_coordinator::api::State;
use ipw_coordinator::infra::rate_limit::RateLimiter;
use ipw_e2e::{Fleet, fresh_database};
use ipw_proto::v1::{
    AcquireLeaseRequest, HeartbeatRequest, ListTokensRequest, QueryResult, ResultBatch, RevokeRequest,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

const SMOL: &str = "SmolLM2-135M-Instruct";

/// A coordinator serving TLS and requiring client certificates: an agent joins by the CA's
/// fingerprint, gets a client certificate, and runs a real shard over mTLS. Without its
/// certificate, or with another agent's, the same credential is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_joins_by_fingerprint_and_runs_over_mtls() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_tls(true).await?;
    assert!(fleet.coordinator.url().starts_with("https://"));
    fleet.import_mmlu_slice(50, "slice").await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "tls-box").await?;
    assert!(agent.ca_pem.is_some() && agent.client_cert.is_some(), "the join kept the CA and a client certificate");
    let other = fleet.join(&token, "other-box").await?;

    let run = fleet.create_run("slice", 2, 2, 2, 16).await?;
    let summary = ipw_agent::runner::run(&agent, &fleet.spool("tls-box"), &fleet.run_options()).await?;
    assert_eq!((summary.shards, summary.committed), (1, 2));
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM results WHERE run_id = $1")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(results, 2);

    let without_cert = AgentConfig { client_cert: None, ..agent.clone() };
    let e = client::connect(&without_cert).await?.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("requires the agent's client certificate"), "{}", e.message());

    let borrowed_cert = AgentConfig { client_cert: other.client_cert.clone(), ..agent.clone() };
    let e = client::connect(&borrowed_cert).await?.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("not the one issued to agent"), "{}", e.message());
    Ok(())
}

/// A wrong CA fingerprint fails the join before any token is sent; so does plain text
/// against a TLS coordinator, and TLS without a fingerprint.
#[tokio::test]
async fn a_wrong_ca_fingerprint_is_refused_and_nothing_joins() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_tls(false).await?;
    let token = fleet.token(3, true, Duration::from_secs(60)).await?;
    let url = fleet.coordinator.url();
    let labels = std::collections::BTreeMap::new();

    let impostor = ipw_coordinator::infra::tls::Authority::generate()?.fingerprint();
    let e = format!(
        "{:#}",
        join::join(&url, &Trust::Pinned(impostor.clone()), &token, "x", labels.clone()).await.unwrap_err()
    );
    assert!(e.contains(&format!("does not match --ca-cert-hash {impostor}")), "{e}");
    let Trust::Pinned(real) = fleet.trust() else { unreachable!("the fleet serves TLS") };
    assert!(e.contains(&real), "the error names what was presented: {e}");

    let e = format!("{:#}", join::join(&url, &Trust::Insecure, &token, "x", labels.clone()).await.unwrap_err());
    assert!(e.contains("pass the --ca-cert-hash"), "{e}");

    let plain = url.replace("https://", "http://");
    let e = format!("{:#}", join::join(&plain, &Trust::Insecure, &token, "x", labels.clone()).await.unwrap_err());
    assert!(e.contains("if the coordinator serves TLS"), "plain text gets nowhere, and says why: {e}");

    let uses: i32 = sqlx::query_scalar("SELECT uses FROM join_tokens").fetch_one(&fleet.pool).await?;
    assert_eq!(uses, 0, "no refused join used the token");
    join::join(&url, &fleet.trust(), &token, "right", labels).await?;
    Ok(())
}

/// Revoking an agent refuses its very next call and puts its lease back in the queue for
/// another agent; its committed results stay.
#[tokio::test]
async fn a_revoked_agent_is_refused_at_once_and_its_lease_goes_back() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.one_query_run().await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let (bad, good) = (fleet.join(&token, "stolen").await?, fleet.join(&token, "good").await?);
    let models = || AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() };

    let mut bad_rpc = client::connect(&bad).await?;
    assert!(bad_rpc.acquire_lease(models()).await?.into_inner().lease.is_some());
    let mut good_rpc = client::connect(&good).await?;
    assert!(good_rpc.acquire_lease(models()).await?.into_inner().lease.is_none(), "leased to the other agent");

    let revoked = fleet
        .admin
        .revoke_agent(RevokeRequest { id: "stolen".into(), reason: "laptop stolen".into() })
        .await?
        .into_inner();
    assert_eq!(revoked.status, "revoked");
    let e = bad_rpc.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("was revoked (laptop stolen)"), "{}", e.message());
    assert!(good_rpc.acquire_lease(models()).await?.into_inner().lease.is_some(), "the shard went back at once");
    // A revoked agent's run loop stops, saying why, instead of waiting.
    let e =
        format!("{:#}", ipw_agent::runner::run(&bad, &fleet.spool("stolen"), &fleet.run_options()).await.unwrap_err());
    assert!(e.contains("was revoked (laptop stolen)"), "{e}");
    Ok(())
}

/// Rotation: the new credential works, the old one is refused from that moment.
#[tokio::test]
async fn a_rotated_credential_replaces_the_old_one() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_tls(true).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let old = fleet.join(&token, "rotating").await?;
    let new = join::rotate(&old).await?;
    assert_ne!(new.credential, old.credential);
    assert_ne!(new.client_cert, old.client_cert, "a new client certificate too");
    client::connect(&new).await?.heartbeat(HeartbeatRequest::default()).await?;

    let e = client::connect(&old).await?.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().starts_with("agent credential rejected"), "{}", e.message());
    // The new secret with the old certificate is refused too.
    let mixed = AgentConfig { client_cert: old.client_cert.clone(), ..new.clone() };
    let e = client::connect(&mixed).await?.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert!(e.message().contains("not the one issued"), "{}", e.message());
    Ok(())
}

/// A revoked token enrolls no one, with the reason; `ipw token list` shows it revoked.
#[tokio::test]
async fn a_revoked_token_enrolls_no_one() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let token = fleet.token(5, true, Duration::from_secs(600)).await?;
    fleet.join(&token, "before").await?;
    let listed = fleet.admin.list_tokens(ListTokensRequest {}).await?.into_inner().tokens;
    let id = listed[0].token_id.clone();
    fleet.admin.revoke_token(RevokeRequest { id: id.clone(), reason: "posted in chat".into() }).await?;

    let e = format!("{:#}", fleet.join(&token, "after").await.unwrap_err());
    assert!(e.contains("join token was revoked (posted in chat)"), "{e}");
    let t = &fleet.admin.list_tokens(ListTokensRequest {}).await?.into_inner().tokens[0];
    assert_eq!((t.uses, t.revoked_reason.as_str()), (1, "posted in chat"));
    assert!(t.revoked_unix_us > 0);
    let e = fleet.admin.revoke_token(RevokeRequest { id: Uuid::nil().to_string(), reason: String::new() }).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound);
    Ok(())
}

/// `Join` from one address is limited: after the burst, attempts are refused with how long
/// to wait, before any token is looked at.
#[tokio::test]
async fn join_attempts_are_rate_limited_per_address() -> anyhow::Result<()> {
    let pool = ipw_coordinator::infra::pool::connect_and_migrate(fresh_database().await?).await?;
    let fleet = Fleet::start_with(State { join_limiter: Arc::new(RateLimiter::new(3, 1)), ..State::new(pool) }).await?;
    for i in 0..3 {
        let e = format!("{:#}", fleet.join("guess", &format!("g{i}")).await.unwrap_err());
        assert!(e.contains("join token not recognised"), "attempt {i}: {e}");
    }
    let e = format!("{:#}", fleet.join("guess", "g3").await.unwrap_err());
    assert!(e.contains("too many join attempts from 127.0.0.1; try again in 60 s"), "{e}");
    Ok(())
}

/// A result stream cut in the middle of a message: the batch before it is committed and
/// acknowledged, the cut one writes nothing, and the stream ends with an error that says so.
#[tokio::test]
async fn a_truncated_result_stream_commits_nothing_of_the_cut_batch() -> anyhow::Result<()> {
    use bytes::{BufMut, Bytes, BytesMut};
    use prost::Message;
    let mut fleet = Fleet::start().await?;
    let lines = [r#"{"id": "1", "prompt": "hi", "answer": "a"}"#, r#"{"id": "2", "prompt": "yo", "answer": "b"}"#];
    fleet.import_lines("two", &lines).await?;
    let run = fleet.create_run("two", 2, 2, 1, 8).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "cut").await?;
    let lease = client::connect(&agent)
        .await?
        .acquire_lease(AcquireLeaseRequest { available_models: vec![SMOL.into()], ..Default::default() })
        .await?
        .into_inner()
        .lease
        .expect("the shard");
    let result = |i: usize| ipw_e2e::made_up_result(&lease, &lease.items[i]);
    // gRPC framing: 1 byte "compressed", 4 bytes length, then the message.
    let frame = |seq: u64, r: QueryResult| -> Bytes {
        let body = ResultBatch { batch_seq: seq, results: vec![r] }.encode_to_vec();
        let mut b = BytesMut::with_capacity(body.len() + 5);
        b.put_u8(0);
        b.put_u32(body.len() as u32);
        b.put_slice(&body);
        b.freeze()
    };

    let tcp = tokio::net::TcpStream::connect(fleet.coordinator.addr).await?;
    let (h2c, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(connection);
    let mut h2c = h2c.ready().await?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{}/ipw.v1.AgentService/UploadResults", fleet.coordinator.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", agent.credential))
        .body(())?;
    let (response, mut send) = h2c.send_request(request, false)?;
    send.send_data(frame(1, result(0)), false)?;
    let mut body = response.await?.into_body();
    // Wait for the first batch's ack before cutting the second.
    let first_ack = body.data().await.expect("an ack")?;
    assert!(first_ack.len() > 5);
    let cut = frame(2, result(1));
    send.send_data(cut.slice(..cut.len() / 2), true)?;
    while let Some(chunk) = body.data().await {
        chunk?;
    }
    let trailers = body.trailers().await?.expect("trailers with the status");
    assert_eq!(trailers["grpc-status"], (Code::Aborted as i32).to_string());
    let message = trailers["grpc-message"].to_str()?;
    assert!(message.contains("cut%20off") || message.contains("cut off"), "{message}");

    let committed: Vec<i64> = sqlx::query_scalar("SELECT query_id FROM results WHERE run_id = $1")
        .bind(Uuid::parse_str(&run.run_id)?)
        .fetch_all(&fleet.pool)
        .await?;
    assert_eq!(committed, [lease.items[0].query_id], "only the whole batch is written");
    Ok(())
}
