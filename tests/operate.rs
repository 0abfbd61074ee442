//! Running the fleet as a service: traces exported over OTLP and joined across gRPC, the
//! Prometheus metrics of both sides during a real run, and readiness that follows PostgreSQL.

use anyhow::Context;
use ipw_e2e::{CoordinatorProcess, OwnPostgres, free_addr, http_get};
use ipw_proto::v1::{CreateRunRequest, CreateTokenRequest, GenerationParams};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received: its service, ids and attributes.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    resource: BTreeMap<String, String>,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/gRPC trace receiver, the collector's own service from the published protos.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Received {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> anyhow::Result<(Self, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((receiver, addr))
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

/// A coordinator process with a workload of MMLU-Pro, an auto-approving token, an agent
/// joined, and a run of `queries` queries created.
struct Service {
    dir: tempfile::TempDir,
    _coordinator: CoordinatorProcess,
    agent: ipw_agent::config::AgentConfig,
    run_id: uuid::Uuid,
    database_url: String,
}

impl Service {
    async fn start(queries: u32, flags: &[String], env: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let database_url = ipw_e2e::fresh_database_url().await?;
        let coordinator =
            CoordinatorProcess::start_with(dir.path().join("coordinator"), &database_url, "10m", flags, env).await?;
        let mut admin = coordinator.admin().await?;
        let slice = dir.path().join("slice.jsonl");
        let text = std::fs::read_to_string(ipw_e2e::mmlu_pro())?;
        std::fs::write(&slice, text.lines().take(20).collect::<Vec<_>>().join("\n"))?;
        ipw_coordinator::cli::workloads::import_workload(&mut admin, &slice, "slice").await?;
        let token = admin
            .create_token(CreateTokenRequest { ttl_seconds: 60, max_uses: 1, auto_approve: true, ..Default::default() })
            .await?
            .into_inner();
        let trust = ipw_agent::join::Trust::Pinned(coordinator.fingerprint()?);
        let agent =
            ipw_agent::join::join(&coordinator.url, &trust, &token.token, "observed", Default::default()).await?;
        let run = admin
            .create_run(CreateRunRequest {
                workload: "slice".into(),
                model: "SmolLM2-135M-Instruct".into(),
                sample: queries,
                seed: 3,
                concurrency: 1,
                shard_size: 2,
                repetitions: 1,
                params: Some(GenerationParams { max_tokens: 16, temperature: 0.0, top_p: 1.0 }),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(Self { dir, _coordinator: coordinator, agent, run_id: run.run_id.parse()?, database_url })
    }
}

fn otlp_env(receiver: SocketAddr) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{receiver}")),
        // Export every 200 ms, so the test need not wait for the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ]
}

/// The span tree of one trace, indented, for the eye (and the closing note).
fn tree(spans: &[Received], trace: &str) -> String {
    fn walk(spans: &[Received], trace: &str, parent: &str, depth: usize, out: &mut String) {
        for s in spans.iter().filter(|s| s.trace_id == trace && s.parent == parent) {
            out.push_str(&format!("{}{} [{}]\n", "  ".repeat(depth), s.name, s.service));
            walk(spans, trace, &s.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for root in spans.iter().filter(|s| s.trace_id == trace && !ids.contains(s.parent.as_str())) {
        out.push_str(&format!("{} [{}]\n", root.name, root.service));
        walk(spans, trace, &root.span_id, 1, &mut out);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_upload_from_the_agent_through_the_coordinator_into_postgres() -> anyhow::Result<()> {
    let (receiver, addr) = Receiver::start().await?;
    let env = otlp_env(addr);
    let s = Service::start(2, &[], &env).await?;
    let status = ipw_e2e::agent_process(s.dir.path(), &s.agent)?
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    assert!(status.success());

    // The agent flushed its spans at exit; the coordinator exports within 200 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (upload, ingest) = loop {
        let spans = receiver.spans();
        let ingest = spans.iter().find(|s| s.name == "ingest result batch").cloned();
        let upload = ingest.as_ref().and_then(|i| {
            spans.iter().find(|s| s.name == "upload results" && s.trace_id == i.trace_id && s.service == "ipw-agent")
        });
        if let (Some(u), Some(i)) = (upload, &ingest) {
            break (u.clone(), i.clone());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no joined upload trace; got {spans:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spans = receiver.spans();
    let trace = upload.trace_id.clone();
    println!("trace {trace}:\n{}", tree(&spans, &trace));
    assert_eq!(ingest.service, "ipw-coordinator");
    // agent upload → coordinator's gRPC call → ingest → the INSERT into PostgreSQL.
    let call = spans.iter().find(|s| s.span_id == ingest.parent).context("the ingest's parent span")?;
    assert_eq!(call.name, "ipw.v1.AgentService/UploadResults");
    assert_eq!(call.attributes.get("rpc.system").map(String::as_str), Some("grpc"));
    assert_eq!(call.parent, upload.span_id, "the coordinator's call is a child of the agent's upload");
    let insert = spans.iter().find(|s| s.parent == ingest.span_id && s.name == "INSERT results");
    assert_eq!(insert.context("the INSERT span")?.attributes.get("db.system").map(String::as_str), Some("postgresql"));
    // The agent says who it is.
    assert_eq!(upload.resource.get("ipw.agent.id"), Some(&s.agent.agent_id));
    assert_eq!(upload.resource.get("ipw.agent.name").map(String::as_str), Some("observed"));
    assert_eq!(upload.resource.get("ipw.hardware_class"), Some(&s.agent.hardware_class));
    // Each query, each lease and the spool flush have their spans too.
    let agent_spans: Vec<&str> = spans.iter().filter(|s| s.service == "ipw-agent").map(|s| s.name.as_str()).collect();
    assert_eq!(agent_spans.iter().filter(|n| **n == "engine request").count(), 2, "{agent_spans:?}");
    assert!(agent_spans.contains(&"acquire lease") && agent_spans.contains(&"flush spool"), "{agent_spans:?}");
    Ok(())
}

/// One sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Every sample of a scrape, by name and labels.
fn scrape_values(text: &str) -> anyhow::Result<Vec<Sample>> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).context("a Prometheus text exposition")?;
    Ok(scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((s.metric, s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), value))
        })
        .collect())
}

/// The value of `name` whose labels include `labels`, summed.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Prometheus naming conventions, checked on the `# TYPE` and `# UNIT` lines and the samples:
/// `ipw_` prefix, snake case, counters end in `_total`, a unit is the name's suffix, and
/// no gauge claims to be a total.
fn naming_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let snake = regex::Regex::new("^[a-z][a-z0-9_]*$").unwrap();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["#", "TYPE", name, kind] => {
                types.insert(name.to_string(), kind.to_string());
            }
            ["#", "UNIT", name, unit] if !name.ends_with(&format!("_{unit}")) => {
                problems.push(format!("{name}: unit {unit} is not its suffix"))
            }
            _ => {}
        }
    }
    for (name, kind) in &types {
        if !name.starts_with("ipw_") || !snake.is_match(name) {
            problems.push(format!("{name}: not ipw_ snake case"));
        }
        if kind == "gauge" && name.ends_with("_total") {
            problems.push(format!("{name}: a gauge named like a counter"));
        }
        if name.ends_with("_ms") || name.contains("milliseconds") || name.contains("kilo") {
            problems.push(format!("{name}: not in base units"));
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let sample = line.split(['{', ' ']).next().unwrap_or_default();
        let family = types.keys().filter(|f| sample.starts_with(f.as_str())).max_by_key(|f| f.len());
        match family.map(|f| (f, &types[f])) {
            Some((f, kind))
                if kind == "counter" && sample != format!("{f}_total") && sample != format!("{f}_created") =>
            {
                problems.push(format!("{sample}: a counter sample not ending in _total"))
            }
            None => problems.push(format!("{sample}: no # TYPE line")),
            _ => {}
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_a_real_run_completes_and_follow_prometheus_conventions() -> anyhow::Result<()> {
    let coordinator_metrics = free_addr()?;
    let s = Service::start(6, &[format!("--metrics-listen={coordinator_metrics}")], &[]).await?;
    let agent_metrics = free_addr()?;
    // A service agent (it keeps running), so it can be scraped after the last result.
    let mut agent = ipw_e2e::agent_service_process(s.dir.path(), &s.agent)?
        .arg(format!("--metrics-listen={agent_metrics}"))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pool = sqlx::PgPool::connect(&s.database_url).await?;
    let mut answered_seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        if let Ok((200, text)) = http_get(agent_metrics, "/metrics").await {
            let samples = scrape_values(&text)?;
            answered_seen.push(value(&samples, "ipw_agent_queries_total", &[("outcome", "answered")]).unwrap_or(0.0));
        }
        let results: i64 = sqlx::query_scalar("SELECT count(*) FROM results WHERE run_id = $1")
            .bind(s.run_id)
            .fetch_one(&pool)
            .await?;
        if results == 6 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the run did not finish in time");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Wait for the agent's upload to be acknowledged, then scrape both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, agent_text) = http_get(agent_metrics, "/metrics").await?;
    assert_eq!(code, 200);
    let (code, coordinator_text) = http_get(coordinator_metrics, "/metrics").await?;
    assert_eq!(code, 200);
    println!("agent scrape:\n{agent_text}\ncoordinator scrape:\n{coordinator_text}");
    let a = scrape_values(&agent_text)?;
    let c = scrape_values(&coordinator_text)?;

    // The counters moved while the queries completed: seen part-way, then all six.
    assert!(answered_seen.windows(2).all(|w| w[0] <= w[1]), "monotonic: {answered_seen:?}");
    assert!(answered_seen.iter().any(|v| *v > 0.0 && *v < 6.0), "seen mid-run: {answered_seen:?}");
    assert_eq!(value(&a, "ipw_agent_queries_total", &[("outcome", "answered")]), Some(6.0));
    assert_eq!(value(&a, "ipw_agent_queries_total", &[("outcome", "error")]), Some(0.0), "present at zero");
    assert_eq!(value(&a, "ipw_agent_results_uploaded_total", &[]), Some(6.0));
    assert_eq!(value(&a, "ipw_agent_request_duration_seconds_count", &[]), Some(6.0), "{agent_text}");
    assert_eq!(value(&a, "ipw_agent_requests_in_flight", &[]), Some(0.0));
    assert_eq!(value(&a, "ipw_agent_spool_results", &[]), Some(0.0));
    assert!(value(&a, "ipw_agent_spool_free_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(value(&a, "ipw_agent_last_upload_timestamp_seconds", &[]).unwrap_or(0.0) > 1.7e9);
    // No power source here: no power is reported, rather than a made-up one.
    assert_eq!(value(&a, "ipw_agent_power_watts", &[]), None);

    assert_eq!(value(&c, "ipw_results_ingested_total", &[]), Some(6.0));
    assert_eq!(value(&c, "ipw_results_duplicate_total", &[]), Some(0.0));
    assert_eq!(value(&c, "ipw_leases_granted_total", &[]), Some(3.0), "three shards of two");
    assert_eq!(value(&c, "ipw_leases_expired_total", &[]), Some(0.0));
    assert_eq!(value(&c, "ipw_agents", &[("status", "approved")]), Some(1.0));
    assert!(value(&c, "ipw_agent_last_seen_age_seconds", &[("agent_name", "observed")]).is_some_and(|v| v < 30.0));
    assert!(value(&c, "ipw_ingest_batch_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert!(value(&c, "ipw_db_pool_max_connections", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(value(&c, "ipw_scheduler_firings_total", &[("outcome", "created")]), Some(0.0), "present at zero");

    for text in [&agent_text, &coordinator_text] {
        assert_eq!(naming_problems(text), Vec::<String>::new());
    }
    // Health and readiness: the agent has its credential, its coordinator and its engine.
    let (code, ready) = http_get(agent_metrics, "/readyz").await?;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("[+]credential") && ready.contains("[+]coordinator") && ready.contains("[+]engine"));
    assert_eq!(http_get(agent_metrics, "/healthz").await?.0, 200);
    agent.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_while_postgresql_is_down_and_ready_again_when_it_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pg = OwnPostgres::start(&dir.path().join("pg")).await?;
    let ops = free_addr()?;
    let flags = [format!("--metrics-listen={ops}"), "--db-wait=60s".into()];
    let _coordinator =
        CoordinatorProcess::start_with(dir.path().join("coordinator"), &pg.url, "10m", &flags, &[]).await?;
    let (code, body) = http_get(ops, "/readyz").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]postgres") && body.contains("[+]migrations"), "{body}");

    pg.stop().await?;
    let (code, body) = http_get(ops, "/readyz").await?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]postgres"), "{body}");
    // Alive all the same: a liveness probe must not restart it for its database.
    assert_eq!(http_get(ops, "/healthz").await?.0, 200);

    pg.pg_ctl("start").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(ops, "/readyz").await?;
        if code == 200 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "still unready after PostgreSQL returned: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_releases_its_leases_and_its_agent_stops_its_queries() -> anyhow::Result<()> {
    use ipw_proto::v1::{CancelRunRequest, ListRunsRequest};
    let mut fleet = ipw_e2e::Fleet::start().await?;
    fleet.import_mmlu_slice(40, "slice").await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "cancelled").await?;
    let run = fleet.create_run("slice", 40, 2, 1, 32).await?;
    let run_id: uuid::Uuid = run.run_id.parse()?;
    let mut process = fleet.agent_service_process(&agent)?.stdout(std::process::Stdio::null()).spawn()?;
    ipw_e2e::wait_for_results(&fleet.pool, run_id, 2).await?;

    let listed = |statuses: &[&str]| ListRunsRequest {
        statuses: statuses.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let running = fleet.admin.list_runs(listed(&["running"])).await?.into_inner().runs;
    assert_eq!(running.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [run.run_id.as_str()]);
    assert_eq!(running[0].shards, 20);

    let cancelled = fleet.admin.cancel_run(CancelRunRequest { run_id: run.run_id.clone() }).await?.into_inner();
    assert_eq!(cancelled.previous_status, "running");
    // The agent holds the shard it runs, and may have leased the next ahead.
    assert!((1..=2).contains(&cancelled.leases_released), "{}", cancelled.leases_released);
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM shards WHERE run_id = $1 AND status = 'leased'")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(leased, 0);

    // Within a heartbeat (1 s) the agent drops the run's work; then nothing more arrives.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&fleet.pool)
            .await
    };
    let settled = count().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count().await?, settled, "no results after the cancel settled");
    assert!(settled < 40, "the run stopped part-way: {settled} of 40");
    assert!(process.try_wait()?.is_none(), "the agent keeps running, waiting for other work");

    assert!(fleet.admin.list_runs(listed(&["running"])).await?.into_inner().runs.is_empty());
    assert_eq!(fleet.admin.list_runs(listed(&["cancelled"])).await?.into_inner().runs.len(), 1);
    let again = fleet.admin.cancel_run(CancelRunRequest { run_id: run.run_id.clone() }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(again.message().contains("cancelled already"), "{}", again.message());
    process.kill().await?;
    Ok(())
}

/// The power and energy of each source reach `/metrics`, as Zeus users graph them. The source
/// is a RAPL zone in the kernel's sysfs format advanced at a known power: a FIXTURE for the
/// path, not a measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_power_source_reports_its_watts_and_a_growing_energy_counter() -> anyhow::Result<()> {
    let mut fleet = ipw_e2e::Fleet::start().await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "metered").await?;
    let fixture = ipw_e2e::PowercapFixture::start(fleet.dir.path(), 25.0)?;
    let addr = free_addr()?;
    let mut process = ipw_e2e::metered_agent_service_process(fleet.dir.path(), &agent, &fixture.root)?
        .arg(format!("--metrics-listen={addr}"))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let reading = || async {
        let (_, text) = http_get(addr, "/metrics").await.ok()?;
        let samples = scrape_values(&text).ok()?;
        let rapl = [("kind", "rapl")];
        Some((
            value(&samples, "ipw_agent_power_watts", &rapl)?,
            value(&samples, "ipw_agent_energy_joules_total", &rapl)?,
        ))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (watts, joules) = loop {
        if let Some(r) = reading().await {
            break r;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no power reading reached /metrics");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!((20.0..30.0).contains(&watts), "{watts} W from a 25 W fixture");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, later) = reading().await.context("a second reading")?;
    let grown = later - joules;
    assert!((50.0..100.0).contains(&grown), "{grown} J in about 3 s at 25 W");
    process.kill().await?;
    Ok(())
}
