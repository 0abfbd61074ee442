//! Power beyond the die: meters on the network read in their real formats, a dead meter and
//! a reset counter leaving gaps (never interpolated), a run measured at the wall beside its
//! chips, and the cross-check between scopes.
//!
//! The meters here are FIXTURES (`support::meter`): small HTTP servers answering in each
//! meter's documented format, their counters advanced at a power the test sets. Their figures
//! check the plumbing; they are never a measurement.

use ipw_agent::ledger::QueryEnergy;
use ipw_agent::meter::{Meter, PowerOptions};
use ipw_agent::power::meter_spec::MeterSpec;
use ipw_agent::power::{IpwScope, PowerSource, Reading, json_meter, prometheus, shelly, tasmota};
use ipw_agent::runner;
use ipw_e2e::meter::{FixtureMeter, MeterFormat};
use ipw_e2e::{Fleet, PowercapFixture};
use ipw_proto::v1::analysis_request::Kind;
use ipw_proto::v1::{AnalysisRequest, SourcesQuery};
use std::time::Duration;
use uuid::Uuid;

fn spec(s: &str) -> MeterSpec {
    s.parse().expect("a valid --meter")
}

/// Two readings of a source `wait` apart: the energy counter's rise.
fn rise(source: &mut dyn PowerSource, wait: Duration) -> f64 {
    let Reading::EnergyJ(a) = source.read().unwrap() else { panic!("the counter is preferred") };
    std::thread::sleep(wait);
    let Reading::EnergyJ(b) = source.read().unwrap() else { panic!("the counter is preferred") };
    b - a
}

/// Each HTTP meter against a server in its format: the counter is read in its unit (Wh,
/// kWh, mJ) and preferred to power; an exporter's series is picked by its labels.
#[test]
fn each_http_meter_reads_its_counter_in_its_own_unit() {
    const W: f64 = 400.0;
    let check = |name: &str, joules: f64| {
        // 1.2 s at 400 W with 200 ms polls: 480 J, give or take a poll's worth and rounding.
        assert!((joules - 480.0).abs() < 0.35 * 480.0, "{name}: {joules} J over 1.2 s at {W} W");
    };
    let m = FixtureMeter::start(MeterFormat::Shelly, W).unwrap();
    let mut s = shelly::open(spec(&format!("shelly:{}#every=200ms", m.url))).unwrap();
    check("shelly", rise(&mut s, Duration::from_millis(1200)));
    assert_eq!(s.scope().as_str(), "wall");

    let m = FixtureMeter::start(MeterFormat::Tasmota, W).unwrap();
    let mut s = tasmota::open(spec(&format!("tasmota:{}#every=200ms,scope=node", m.url))).unwrap();
    check("tasmota", rise(&mut s, Duration::from_millis(1200)));
    assert_eq!(s.scope().as_str(), "node");

    let m = FixtureMeter::start(MeterFormat::Json, W).unwrap();
    let url = format!("json:{}/status#every=200ms,energy=/outlet/energy_wh,energy_unit=Wh,power=/outlet/watts", m.url);
    check("json", rise(&mut json_meter::open(spec(&url)).unwrap(), Duration::from_millis(1200)));
    let url = format!("json:{}/status#every=200ms,power=/outlet/watts", m.url);
    assert_eq!(json_meter::open(spec(&url)).unwrap().read().unwrap(), Reading::PowerW(W));

    let m = FixtureMeter::start(MeterFormat::Dcgm, W).unwrap();
    let metrics = format!("{}/metrics", m.url);
    let dcgm = |opts: &str| prometheus::open(spec(&format!("prometheus:{metrics}#every=200ms,{opts}")));
    let mut gpu0 = dcgm("metric=DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION,scope=gpu,gpu=0").unwrap();
    check("dcgm gpu 0", rise(&mut gpu0, Duration::from_millis(1200)));
    let both = dcgm("metric=DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION,scope=gpu").err().unwrap();
    assert!(both.contains("2 DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION series match"), "{both}");
    assert!(dcgm("metric=DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION,gpu=0").err().unwrap().contains("needs #scope="));

    // A meter that is not there is named, with what went wrong.
    drop(m);
    let gone = prometheus::open(spec(&format!("prometheus:{metrics}#metric=X,scope=gpu,unit=J"))).err().unwrap();
    assert!(gone.contains(&metrics), "{gone}");
}

/// The agent's meter on a Shelly at the wall, which stops answering and later restarts with
/// its counter at zero: each leaves a gap with its reason, energy across a gap is unknown
/// (never interpolated), and energy on either side of it is still measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_meter_and_a_reset_counter_leave_gaps_never_interpolated() -> anyhow::Result<()> {
    const W: f64 = 300.0;
    let dir = tempfile::tempdir()?;
    let plug = FixtureMeter::start(MeterFormat::Shelly, W)?;
    let mut opts = PowerOptions { ipw_scope: IpwScope::Wall, ..PowerOptions::default() };
    opts.discovery.powercap_root = dir.path().join("none");
    opts.discovery.drm_root = dir.path().join("none");
    opts.discovery.i2c_root = dir.path().join("none");
    opts.discovery.ipmitool = dir.path().join("none");
    opts.discovery.gpus = Some(String::new());
    opts.discovery.meters = vec![spec(&format!("shelly:{}#every=200ms", plug.url))];
    let meter = Meter::start(&opts);
    assert!(meter.is_measuring(), "{:?}", meter.null_reason());
    let now = || meter.clock(std::time::Instant::now());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = meter.energy_between(0.3, now() - 0.2).expect("measured before the gap");
    let span = now() - 0.5;
    assert!((before / span - W).abs() < 0.35 * W, "{before} J over {span} s at {W} W");

    plug.set_answering(false);
    let dead_from = now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    plug.set_answering(true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dead_to = now();
    let why = meter.gap_reason(dead_from, dead_to).expect("the dead meter's gap");
    assert!(why.contains("shelly") && why.contains("not interpolated"), "{why}");
    assert_eq!(meter.energy_between(dead_from - 0.5, dead_to), None, "no energy across a dead meter");
    // A query across the gap: its energy is NULL with the reason, never a number.
    let record = meter.energy_record(Ok(QueryEnergy { prefill_j: f64::NAN, ..Default::default() }));
    assert_eq!((record.energy_j, record.source.as_str()), (None, "none"));

    plug.reset_counter();
    let reset_at = now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let why = meter.gap_reason(reset_at - 0.5, now()).expect("the reset's gap");
    assert!(why.contains("went back"), "{why}");
    // Well after it, energy is measured again.
    let t = now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = meter.energy_between(t, now() - 0.2).expect("measured after the reset");
    assert!(after > 0.0);

    // The telemetry carries both gaps and leaves the dead samples out of the series.
    let telemetry = meter.session_telemetry(&Uuid::new_v4().to_string(), &Uuid::new_v4().to_string(), 0.0, now(), 0);
    let reasons: Vec<&str> = telemetry.gaps.iter().map(|g| g.reason.as_str()).collect();
    assert!(reasons.len() >= 2, "{reasons:?}");
    assert!(telemetry.chunks.iter().all(|c| c.energy_j.iter().all(|e| e.is_finite())));
    assert_eq!(telemetry.ipw_scope, "wall");
    assert!(telemetry.sources[0].in_ipw_scope);
    Ok(())
}

/// An IPW scope with no source of its own here: nothing is summed in its place, energy is
/// NULL, and the reason names what was sampled beside it.
#[tokio::test]
async fn a_scope_without_a_source_is_null_and_says_what_was_sampled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let package = PowercapFixture::start(dir.path(), 25.0)?;
    let mut opts = PowerOptions { ipw_scope: IpwScope::Node, ..PowerOptions::default() };
    opts.discovery.powercap_root = package.root.clone();
    opts.discovery.drm_root = dir.path().join("none");
    opts.discovery.i2c_root = dir.path().join("none");
    opts.discovery.ipmitool = dir.path().join("none");
    opts.discovery.gpus = Some(String::new());
    let meter = Meter::start(&opts);
    assert!(!meter.is_measuring());
    let reason = meter.null_reason().expect("a reason").to_owned();
    assert!(reason.contains("--ipw-scope node") && reason.contains("rapl package-0 (cpu-package)"), "{reason}");
    let record = meter.energy_record(Ok(QueryEnergy { prefill_j: 1.0, ..Default::default() }));
    assert_eq!((record.energy_j, record.null_reason), (None, reason));
    // The package is still recorded beside it, for the cross-check.
    let t = meter.session_telemetry(&Uuid::new_v4().to_string(), &Uuid::new_v4().to_string(), 0.0, 1e9, 0);
    assert_eq!((t.sources.len(), t.sources[0].in_ipw_scope, t.ipw_scope.as_str()), (1, false, "node"));
    Ok(())
}

/// A run measured at the wall (`--ipw-scope wall`) beside a CPU package (a FIXTURE powercap
/// counter): results carry the plug's energy and provenance, the package is recorded beside
/// it, and `ipw report --sources` shows both with their ratio and a passing cross-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_measured_at_the_wall_is_reported_beside_its_chips() -> anyhow::Result<()> {
    const WALL_W: f64 = 60.0;
    const PACKAGE_W: f64 = 25.0;
    let mut fleet = Fleet::start().await?;
    let lines: Vec<String> = (1..=6)
        .map(|i| format!("{{\"id\": \"{i}\", \"prompt\": \"Count from 1 to {}.\", \"answer\": \"x\"}}", i + 3))
        .collect();
    fleet.import_lines("six", &lines.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "at-the-wall").await?;
    let run = fleet.create_run("six", 6, 3, 2, 48).await?;

    let package = PowercapFixture::start(fleet.dir.path(), PACKAGE_W)?;
    let plug = FixtureMeter::start(MeterFormat::Shelly, WALL_W)?;
    let mut opts = fleet.run_options();
    opts.power.ipw_scope = IpwScope::Wall;
    opts.power.discovery.powercap_root = package.root.clone();
    opts.power.discovery.meters = vec![spec(&format!("shelly:{}#every=200ms,error=1%", plug.url))];
    let summary = runner::run(&agent, &fleet.spool("at-the-wall"), &opts).await;
    drop((package, plug));
    assert_eq!(summary?.committed, 6);
    let run_id = Uuid::parse_str(&run.run_id)?;

    let rows: Vec<(Option<f64>, String, String)> =
        sqlx::query_as("SELECT energy_j, power_source, power_scope FROM results WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&fleet.pool)
            .await?;
    assert_eq!(rows.len(), 6);
    for (energy, source, scope) in &rows {
        assert_eq!((source.as_str(), scope.as_str()), ("shelly", "wall"));
        assert!(energy.is_some_and(|e| e > 0.0), "{energy:?}");
    }
    let ipw_scope: String = sqlx::query_scalar("SELECT ipw_scope FROM measurement_sessions WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&fleet.pool)
        .await?;
    assert_eq!(ipw_scope, "wall");

    // The report: the plug in the IPW scope, the package beside it at its share of the wall.
    type Row = (String, String, bool, Option<f64>, Option<f64>, Option<bool>);
    let report: Vec<Row> = sqlx::query_as(
        "SELECT source, scope, in_ipw_scope, mean_power_w, share_of_wall, consistent FROM source_report(ARRAY[$1]::uuid[])",
    )
    .bind(run_id)
    .fetch_all(&fleet.pool)
    .await?;
    let by = |s: &str| report.iter().find(|r| r.0 == s).cloned().unwrap_or_else(|| panic!("{s} in {report:?}"));
    let (wall, rapl) = (by("shelly"), by("rapl"));
    assert_eq!((wall.1.as_str(), wall.2, rapl.1.as_str(), rapl.2), ("wall", true, "cpu-package", false));
    let wall_w = wall.3.expect("the plug's power over the window");
    assert!((wall_w - WALL_W).abs() < 0.25 * WALL_W, "{wall_w} W at the plug");
    let share = rapl.4.expect("the package's share of the wall");
    assert!((share - PACKAGE_W / WALL_W).abs() < 0.25 * PACKAGE_W / WALL_W, "package share {share}");
    assert_eq!(rapl.5, Some(true), "chips inside the wall: {report:?}");

    // The same through the admin API, as `ipw report --sources` asks for it.
    let request = AnalysisRequest { kind: Some(Kind::Sources(SourcesQuery { run_ids: vec![run.run_id.clone()] })) };
    let table = fleet.admin.analyze(request).await?.into_inner();
    assert_eq!(table.rows_json.len(), 2);
    for column in ["source", "scope", "in_ipw_scope", "energy_j", "share_of_ipw", "share_of_node", "consistent"] {
        assert!(table.columns.iter().any(|c| c == column), "{column} in {:?}", table.columns);
    }
    Ok(())
}

/// A plug that stops answering in the middle of a run: the queries that ran while it was
/// dead have NULL energy with the reason, the gap is stored with the session, and the
/// queries before and after it keep their energy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_run_while_the_meter_was_dead_have_null_energy_with_the_reason() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let lines: Vec<String> = (1..=16)
        .map(|i| format!("{{\"id\": \"{i}\", \"prompt\": \"Count from 1 to {}.\", \"answer\": \"x\"}}", i + 5))
        .collect();
    fleet.import_lines("sixteen", &lines.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "flaky-plug").await?;
    let run = fleet.create_run("sixteen", 16, 4, 1, 48).await?;

    let plug = std::sync::Arc::new(FixtureMeter::start(MeterFormat::Shelly, 60.0)?);
    let mut opts = fleet.run_options();
    opts.power.ipw_scope = IpwScope::Wall;
    opts.power.discovery.meters = vec![spec(&format!("shelly:{}#every=200ms", plug.url))];
    let outage = {
        let plug = plug.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2500));
            plug.set_answering(false);
            std::thread::sleep(Duration::from_millis(2000));
            plug.set_answering(true);
        })
    };
    let summary = runner::run(&agent, &fleet.spool("flaky-plug"), &opts).await;
    outage.join().expect("the outage thread");
    assert_eq!(summary?.committed, 16);
    let run_id = Uuid::parse_str(&run.run_id)?;

    let rows: Vec<(Option<f64>, Option<String>)> =
        sqlx::query_as("SELECT energy_j, energy_null_reason FROM results WHERE run_id = $1 ORDER BY started_at")
            .bind(run_id)
            .fetch_all(&fleet.pool)
            .await?;
    let unknown: Vec<&String> = rows.iter().filter_map(|r| r.1.as_ref()).collect();
    assert!(!unknown.is_empty(), "some query ran while the plug was dead: {rows:?}");
    for reason in &unknown {
        assert!(reason.contains("a gap in the power series") && reason.contains("shelly"), "{reason}");
    }
    assert!(rows.iter().any(|r| r.0.is_some()), "the queries outside the outage keep their energy");
    assert!(rows.iter().all(|r| r.0.is_some() != r.1.is_some()));
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM session_power_gaps g JOIN measurement_sessions m ON m.id = g.session_id WHERE m.run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&fleet.pool)
    .await?;
    assert!(gaps >= 1, "the outage is stored with the session");
    Ok(())
}

/// The cross-check on fixture series: a GPU that reads more than its node is flagged, beyond
/// the stated errors; one inside it is not, and its share of the node is given; a node meter
/// with a gap is unknown over the window, not compared.
#[tokio::test]
async fn a_gpu_reading_more_than_its_node_is_flagged() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    fleet.import_lines("one", &[r#"{"id": "1", "prompt": "Hi", "answer": "x"}"#]).await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "checked").await?;
    let run = Uuid::parse_str(&fleet.create_run("one", 1, 1, 1, 8).await?.run_id)?;
    let agent_id = Uuid::parse_str(&agent.agent_id)?;
    // (gpu W, node W, wall W, node gap): 10 s each, sources at 5 %, 5 % and 1 %.
    let cases = [(500.0, 400.0, 600.0, false), (300.0, 400.0, 450.0, false), (300.0, 400.0, 450.0, true)];
    let mut sessions = Vec::new();
    for (gpu, node, wall, gap) in cases {
        sessions.push(fixture_session(&fleet.pool, run, agent_id, [gpu, node, wall], gap).await?);
    }
    type Row = (Option<f64>, Option<f64>, Option<f64>, Option<bool>, Option<String>);
    let check = |session: Uuid| {
        sqlx::query_as::<_, Row>(
            "SELECT gpu_j, node_j, gpu_share_of_node, consistent, problem FROM source_crosscheck WHERE session_id = $1",
        )
        .bind(session)
        .fetch_one(&fleet.pool)
    };
    let (gpu, node, _, consistent, problem) = check(sessions[0]).await?;
    assert_eq!((gpu.map(f64::round), node.map(f64::round), consistent), (Some(5000.0), Some(4000.0), Some(false)));
    assert_eq!(problem.as_deref(), Some("gpu 5000.0 J > node 4000.0 J (beyond their stated errors)"));
    let (_, _, share, consistent, problem) = check(sessions[1]).await?;
    assert!((share.unwrap() - 0.75).abs() < 1e-9 && consistent == Some(true) && problem.is_none());
    let (_, node, _, consistent, _) = check(sessions[2]).await?;
    assert_eq!(node, None, "a node meter with a gap is unknown over the window");
    assert_eq!(consistent, Some(true), "gpu and wall are still compared");
    let gaps: Option<String> =
        sqlx::query_scalar("SELECT gaps FROM session_source_energy WHERE session_id = $1 AND scope = 'node'")
            .bind(sessions[2])
            .fetch_one(&fleet.pool)
            .await?;
    assert!(gaps.unwrap().contains("BMC did not answer"));
    // The run is flagged: one of its three sessions failed the check.
    let (checked, failed, problems): (i64, i64, Option<String>) = sqlx::query_as(
        "SELECT sessions_checked, sessions_inconsistent, problems FROM run_source_checks WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&fleet.pool)
    .await?;
    assert_eq!((checked, failed), (3, 1));
    assert!(problems.unwrap().starts_with("gpu 5000.0 J > node 4000.0 J"));
    Ok(())
}

/// Stores a session with three sources (nvml gpu, ipmi node, shelly wall) drawing `watts`
/// for 10 s at 10 Hz, its steady window the whole span; optionally a gap in the node's.
async fn fixture_session(
    pool: &sqlx::PgPool,
    run: Uuid,
    agent: Uuid,
    watts: [f64; 3],
    node_gap: bool,
) -> anyhow::Result<Uuid> {
    let id = Uuid::new_v4();
    let sources = serde_json::json!([
        {"kind": "nvml-counter", "scope": "gpu", "name": "GPU 0", "stated_error": 0.05, "in_ipw_scope": false},
        {"kind": "ipmi-dcmi", "scope": "node", "name": "BMC (in band)", "stated_error": 0.05, "in_ipw_scope": true},
        {"kind": "shelly", "scope": "wall", "name": "shelly plug", "stated_error": 0.01, "in_ipw_scope": false},
    ]);
    sqlx::query(
        "INSERT INTO measurement_sessions (id, run_id, agent_id, sample_hz, attribution, sources, load_pattern, target,
                                           steady_from_s, steady_to_s, ipw_scope)
         VALUES ($1, $2, $3, 10, 'time-share', $4, 'closed', 1, 0, 10, 'node')",
    )
    .bind(id)
    .bind(run)
    .bind(agent)
    .bind(sources)
    .execute(pool)
    .await?;
    let t: Vec<f64> = (0..=100).map(|i| f64::from(i) / 10.0).collect();
    for (source, w) in watts.iter().enumerate() {
        let energy: Vec<f64> = t.iter().map(|t| t * w).collect();
        sqlx::query(
            "INSERT INTO session_power_series (session_id, source_index, chunk_index, t_s, energy_j)
             VALUES ($1, $2, 0, $3, $4)",
        )
        .bind(id)
        .bind(source as i32)
        .bind(&t)
        .bind(&energy)
        .execute(pool)
        .await?;
    }
    if node_gap {
        sqlx::query(
            "INSERT INTO session_power_gaps (session_id, source_index, from_s, to_s, reason)
             VALUES ($1, 1, 4.0, 6.0, 'BMC did not answer: ipmitool did not answer in 5s')",
        )
        .bind(id)
        .execute(pool)
        .await?;
    }
    Ok(id)
}
