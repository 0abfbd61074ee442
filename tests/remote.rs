//! Remote OpenAI-compatible endpoints as comparators (`ipw-agent run --engine-remote`): the
//! key reaches the endpoint, no local power is read for it, and its rate limits (429 with
//! Retry-After) are waited out and counted, or past the retries recorded as errors, never
//! dropped.

use ipw_agent::engine::EngineAccess;
use ipw_agent::runner::{self, RunOptions};
use ipw_e2e::{Fleet, OwnEngine, PowercapFixture, engine_url, metered_agent_process_on};
use ipw_proto::openai::{self, ApiKey, ChatRequest, Client, Message};
use ipw_proto::v1::RunStatusRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const SMOL: &str = "SmolLM2-135M-Instruct";
/// The exact reason a remote endpoint's energy is NULL.
const REMOTE_REASON: &str = "remote endpoint: energy is not observable from the client";

/// error, tokens_out, energy_j, power_source, energy_null_reason, rate_limited.
type ResultRow = (Option<String>, i32, Option<f64>, String, Option<String>, i32);
/// error, rate_limited, started_at, energy_null_reason.
type TimedRow = (Option<String>, i32, chrono::DateTime<chrono::Utc>, Option<String>);

/// A run against a remote endpoint: here a real llama-server that demands an API key. The
/// endpoint refuses a request without the key (401), so the answers prove the agent sent the
/// one in its key file. The agent could read a power source (a RAPL fixture) and was asked
/// for an idle baseline, yet, told `--engine-remote`, reads neither: every result has NULL
/// energy with the remote reason, and the run's provenance says its engine was remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_run_sends_its_key_and_records_no_local_energy() -> anyhow::Result<()> {
    const QUERIES: i64 = 3;
    let engine = OwnEngine::start(&["--api-key", "SECRET", "-np", "2", "-c", "2048"]).await?;
    let chat = ChatRequest {
        model: SMOL.into(),
        messages: vec![Message::user("Say hi.")],
        max_tokens: Some(4),
        ..Default::default()
    };
    let client = Client::new(&engine.url(), Duration::from_secs(60))?;
    for key in [None, ApiKey::new("WRONG")] {
        let refused = client.clone().with_key(key).chat(&chat).await.unwrap_err();
        assert!(matches!(&refused, openai::Error::Status { status, .. } if status.as_u16() == 401), "{refused:?}");
    }
    client.clone().with_key(ApiKey::new("SECRET")).chat(&chat).await?;

    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(50, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "remote").await?;
    let run = fleet.create_run("slice", QUERIES as u32, QUERIES as u32, 1, 16).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;
    let key_file = fleet.dir.path().join("engine.key");
    std::fs::write(&key_file, "SECRET\n")?;
    let power = PowercapFixture::start(fleet.dir.path(), 40.0)?;
    let mut cmd = metered_agent_process_on(fleet.dir.path(), &agent, &engine.url(), &power.root, "2s")?;
    cmd.arg("--engine-remote").arg("--engine-key-file").arg(&key_file).env("RUST_LOG", "debug");
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output()).await??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the agent failed: {stderr}");
    assert!(!stdout.contains("SECRET") && !stderr.contains("SECRET"), "the key is never logged");

    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!(status.status, "completed");
    let rows: Vec<ResultRow> = sqlx::query_as(
        "SELECT error, tokens_out, energy_j, power_source, energy_null_reason, rate_limited
         FROM results WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    assert_eq!(rows.len() as i64, QUERIES);
    for (error, tokens_out, energy_j, source, reason, rate_limited) in rows {
        assert_eq!((error, energy_j, source.as_str()), (None, None, "none"), "answered, with no energy");
        assert!(tokens_out > 0);
        assert_eq!((reason.as_deref(), rate_limited), (Some(REMOTE_REASON), 0));
    }
    let (remote, sha, limit, engine_name): (bool, Option<String>, Option<f64>, String) = sqlx::query_as(
        "SELECT engine_remote, model_sha256, power_limit_w, engine_name FROM run_provenance WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert!(remote, "the run records that its engine was remote");
    // The endpoint names its model file, but that file is on the endpoint's machine.
    assert_eq!((sha, limit, engine_name.as_str()), (None, None, "llama.cpp"));
    let (idles, series, reasons): (i64, i64, Vec<Option<String>>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM session_idle i JOIN measurement_sessions s ON s.id = i.session_id
                 WHERE s.run_id = $1),
                (SELECT count(*) FROM session_power_series p JOIN measurement_sessions s ON s.id = p.session_id
                 WHERE s.run_id = $1),
                (SELECT array_agg(null_reason) FROM measurement_sessions WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((idles, series), (0, 0), "no idle baseline and no power series for a remote engine");
    assert_eq!(reasons, [Some(REMOTE_REASON.to_owned())]);
    Ok(())
}

/// The endpoint rate limits the first two chat requests (429, Retry-After: 1, from a proxy in
/// front of the real llama-server). The agent waits each out and sends the request again:
/// every query is answered, none is an error, the results count the two 429s, the first
/// answer started only after both waits, and the agent's metrics count them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_waited_out_and_counted() -> anyhow::Result<()> {
    const QUERIES: i64 = 3;
    let proxy = RateLimitingProxy::start(|n| n < 2).await?;
    let (mut fleet, run_id, opts) = remote_run(&proxy, QUERIES, 3).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "limited").await?;
    let began = chrono::Utc::now();
    let summary = runner::run(&agent, &fleet.spool("limited"), &opts).await?;
    assert_eq!(summary.committed as i64, QUERIES);

    let rows: Vec<TimedRow> = sqlx::query_as(
        "SELECT error, rate_limited, started_at, energy_null_reason FROM results WHERE run_id = $1 ORDER BY started_at",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    assert_eq!(rows.len() as i64, QUERIES, "nothing dropped");
    assert!(rows.iter().all(|r| r.0.is_none()), "answered, not errors: {rows:?}");
    assert!(rows.iter().all(|r| r.3.as_deref() == Some(REMOTE_REASON)));
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [2, 0, 0], "the first query waited out both 429s");
    let waited = (rows[0].2 - began).to_std()?;
    assert!(waited >= Duration::from_secs(2), "the first answer started {waited:?} after the run began");
    assert_eq!((proxy.refused(), opts.metrics.rate_limited.get()), (2, 2));
    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run_id.to_string() }).await?.into_inner();
    assert_eq!(status.status, "completed");
    Ok(())
}

/// An endpoint that answers nothing but 429: past its retries (here one) each query is
/// recorded as a result with the error and its count of 429s, none is dropped, and the run
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_still_rate_limited_after_its_retries_is_an_error_result() -> anyhow::Result<()> {
    const QUERIES: i64 = 2;
    let proxy = RateLimitingProxy::start(|_| true).await?;
    let (mut fleet, run_id, opts) = remote_run(&proxy, QUERIES, 1).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "refused").await?;
    let summary = runner::run(&agent, &fleet.spool("refused"), &opts).await?;
    assert_eq!(summary.committed as i64, QUERIES);

    let rows: Vec<(Option<String>, i32, Option<f64>)> =
        sqlx::query_as("SELECT error, rate_limited, energy_j FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&fleet.pool)
            .await?;
    assert_eq!(rows.len() as i64, QUERIES, "every query is a result: nothing dropped");
    for (error, rate_limited, energy_j) in &rows {
        let error = error.as_deref().unwrap_or_default();
        assert!(error.starts_with("rate limited 2 times, retries exhausted; last: engine answered 429"), "{error}");
        assert_eq!((*rate_limited, *energy_j), (2, None));
    }
    assert_eq!((proxy.refused(), opts.metrics.rate_limited.get()), (4, 4));
    let errors: i64 = sqlx::query_scalar("SELECT errors FROM ipw_summary WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(errors, QUERIES);
    let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run_id.to_string() }).await?.into_inner();
    assert_eq!(status.status, "completed");
    Ok(())
}

/// A fleet with a run of `queries` MMLU-Pro questions (one shard, one at a time), and agent
/// options for the endpoint behind `proxy`, remote, with `retries` rate-limit retries.
async fn remote_run(
    proxy: &RateLimitingProxy,
    queries: i64,
    retries: u32,
) -> anyhow::Result<(Fleet, Uuid, RunOptions)> {
    let mut fleet = Fleet::start().await?;
    fleet.import_mmlu_slice(50, "slice").await?;
    let run = fleet.create_run("slice", queries as u32, queries as u32, 1, 8).await?;
    let opts = RunOptions {
        engine_url: proxy.url.clone(),
        engine_access: EngineAccess { remote: true, key: None, rate_limit_retries: retries },
        ..fleet.run_options()
    };
    Ok((fleet, Uuid::parse_str(&run.run_id)?, opts))
}

/// An HTTP proxy in front of the test engine that answers the n-th chat request (from 0) with
/// `429 Too Many Requests` and `Retry-After: 1` when `refuse(n)`, and passes every other
/// request through. One request per connection. Stops when dropped.
struct RateLimitingProxy {
    url: String,
    refused: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl RateLimitingProxy {
    async fn start(refuse: fn(u32) -> bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let upstream = engine_url().trim_start_matches("http://").trim_end_matches('/').to_owned();
        let (chats, refused) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let counters = (chats, refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, (chats, refused)) = (upstream.clone(), counters.clone());
                tokio::spawn(async move {
                    let _ = proxy_one(client, &upstream, refuse, &chats, &refused).await;
                });
            }
        });
        Ok(Self { url, refused, task })
    }

    /// How many 429s it has answered.
    fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for RateLimitingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one request on `client`: a 429, or the engine's answer with the connection closed
/// after it.
async fn proxy_one(
    mut client: TcpStream,
    upstream: &str,
    refuse: fn(u32) -> bool,
    chats: &AtomicU32,
    refused: &AtomicU32,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut client).await?;
    if head.starts_with("POST /v1/chat/completions ") && refuse(chats.fetch_add(1, Ordering::SeqCst)) {
        refused.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"error":{"code":429,"message":"slow down","type":"rate_limit_error"}}"#;
        let reply = format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(reply.as_bytes()).await?;
        return client.shutdown().await;
    }
    // The engine closes the connection after its answer, so each request comes through here.
    let mut forwarded: String = head
        .lines()
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut engine = TcpStream::connect(upstream).await?;
    engine.write_all(forwarded.as_bytes()).await?;
    engine.write_all(&body).await?;
    tokio::io::copy(&mut engine, &mut client).await?;
    client.shutdown().await
}

/// One HTTP/1.1 request: its head (request line and headers) and its body.
async fn read_request(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((head, buf[end..end + length].to_vec()))
}

/// `--engine-url https://...` is spoken over TLS (rustls with this machine's roots). Against
/// the coordinator's TLS port the handshake fails inside TLS (its gRPC server wants HTTP/2,
/// and its certificate has no trusted root), and the error says so. Before, the client had no
/// TLS at all and refused the scheme.
#[tokio::test]
async fn an_https_endpoint_is_spoken_to_over_tls() -> anyhow::Result<()> {
    let fleet = Fleet::start_tls(false).await?;
    let client = Client::new(&format!("https://{}", fleet.coordinator.addr), Duration::from_secs(10))?;
    let refused = client.models().await.expect_err("not an OpenAI endpoint, nor a trusted one");
    let text = format!("{:#}", anyhow::Error::from(refused));
    assert!(text.contains("fatal alert") || text.contains("certificate"), "a TLS failure: {text}");
    assert!(!text.contains("scheme"), "{text}");
    Ok(())
}
