//! The fleet page's live view (`store::fleet::live`): heartbeats carry each agent's state (in
//! flight, a counter of queries finished, power per source) and the coordinator keeps the
//! latest. The power comes from a RAPL zone in the kernel's sysfs format advanced at a known
//! power: a FIXTURE for the path, not a measurement.

use ipw_agent::client;
use ipw_coordinator::domain::fleet::AgentLive;
use ipw_coordinator::store::fleet;
use ipw_e2e::{Fleet, PowercapFixture, metered_agent_service_process};
use ipw_proto::v1::{HeartbeatRequest, PowerReading, RunStatusRequest};
use std::time::Duration;
use uuid::Uuid;

const WATTS: f64 = 25.0;

/// The fleet page's row of agent `id`.
async fn row(fleet: &Fleet, id: &str) -> anyhow::Result<AgentLive> {
    let id = Uuid::parse_str(id)?;
    let agents = fleet::live(&fleet.pool).await?;
    agents.into_iter().find(|a| a.id == id).ok_or_else(|| anyhow::anyhow!("agent {id} is not on the fleet page"))
}

/// What the polls of a running agent saw.
#[derive(Debug, Default)]
struct Seen {
    polls: u32,
    with_lease: u32,
    max_in_flight: i32,
    max_queries_per_s: f64,
    watts: Vec<f64>,
}

impl Seen {
    fn note(&mut self, a: &AgentLive, run_id: Uuid) {
        self.polls += 1;
        if let Some(l) = a.leases.iter().find(|l| l.run_id == run_id) {
            assert_eq!(l.model, "SmolLM2-135M-Instruct");
            assert!(l.expires_at > chrono::Utc::now(), "a current lease has not run out: {l:?}");
            self.with_lease += 1;
        }
        let Some(r) = &a.reported else { return };
        self.max_in_flight = self.max_in_flight.max(r.in_flight);
        self.max_queries_per_s = self.max_queries_per_s.max(r.queries_per_s.unwrap_or(0.0));
        self.watts.extend(r.power.iter().filter_map(|p| p.watts));
    }
}

/// While a real run is in flight on a metered agent, the fleet page shows its lease, requests in
/// flight, queries per second and the fixture's watts; afterwards nothing is in flight. An agent
/// with no power source shows no reading at all (not 0 W), and an agent that stops beating is
/// stale after three heartbeat intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_page_shows_each_agents_lease_load_and_power_live() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let lines: Vec<String> = (1..=16)
        .map(|i| {
            format!(r#"{{"id": "{i}", "prompt": "Count from 1 to {}, one number per line.", "answer": "x"}}"#, 20 + i)
        })
        .collect();
    fleet.import_lines("sixteen", &lines.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let token = fleet.token(2, true, Duration::from_secs(60)).await?;
    let metered = fleet.join(&token, "metered").await?;
    let unmetered = fleet.join(&token, "unmetered").await?;
    let run = fleet.create_run("sixteen", 16, 4, 2, 96).await?;
    let run_id = Uuid::parse_str(&run.run_id)?;

    let fixture = PowercapFixture::start(fleet.dir.path(), WATTS)?;
    let mut agent = metered_agent_service_process(fleet.dir.path(), &metered, &fixture.root)?
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let a = row(&fleet, &metered.agent_id).await?;
        seen.note(&a, run_id);
        let status = fleet.admin.get_run_status(RunStatusRequest { run_id: run.run_id.clone() }).await?.into_inner();
        if status.status == "completed" {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the run did not complete: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.with_lease > 0, "the agent's current lease was shown: {seen:?}");
    assert!(seen.max_in_flight > 0, "requests in flight were shown: {seen:?}");
    assert!(seen.max_in_flight <= 2, "no more in flight than the run's concurrency: {seen:?}");
    assert!(seen.max_queries_per_s > 0.0, "queries per second were shown: {seen:?}");
    assert!(!seen.watts.is_empty(), "the fixture's power was shown: {seen:?}");
    for w in &seen.watts {
        assert!((WATTS * 0.8..WATTS * 1.2).contains(w), "{w} W from a {WATTS} W fixture");
    }

    // After the run: a heartbeat sent after its end says nothing is in flight, and no lease is held.
    let ended = chrono::Utc::now();
    let idle = loop {
        let a = row(&fleet, &metered.agent_id).await?;
        if a.reported.as_ref().is_some_and(|r| r.reported_at > ended) {
            break a;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no heartbeat after the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = idle.reported.as_ref().expect("a reported state");
    assert_eq!((r.in_flight, idle.leases.len()), (0, 0), "{idle:?}");
    assert_eq!(r.sample_hz, Some(20.0));
    assert_eq!(r.heartbeat_s, 1.0);
    let rapl: Vec<_> = r.power.iter().map(|p| (p.kind.as_str(), p.scope.as_str(), p.name.as_str())).collect();
    assert_eq!(rapl, [("rapl", "cpu-package", "package-0")]);
    assert!(r.power[0].watts.is_some_and(|w| (WATTS * 0.8..WATTS * 1.2).contains(&w)), "{r:?}");
    assert!(!idle.is_stale(chrono::Utc::now()));
    assert_eq!(idle.hardware_class, metered.hardware_class);
    assert_eq!(idle.labels.get("test").map(String::as_str), Some("metered"));

    // An agent with no power source: its state, with no reading at all.
    let mut bare =
        ipw_e2e::agent_service_process(fleet.dir.path(), &unmetered)?.stdout(std::process::Stdio::null()).spawn()?;
    let b = loop {
        let b = row(&fleet, &unmetered.agent_id).await?;
        if b.reported.is_some() {
            break b;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the unmetered agent reported no state");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = b.reported.as_ref().expect("a reported state");
    assert!(r.power.is_empty() && r.sample_hz.is_none(), "no power source, no reading: {r:?}");
    assert_eq!(b.total_watts(), None);

    // The metered agent stops: after three heartbeat intervals without one, it is stale.
    agent.kill().await?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(row(&fleet, &metered.agent_id).await?.is_stale(chrono::Utc::now()));
    assert!(!row(&fleet, &unmetered.agent_id).await?.is_stale(chrono::Utc::now()));
    bare.kill().await?;
    Ok(())
}

/// A heartbeat without a state (an agent older than it) records none; queries per second are
/// the counter's growth over the time between two heartbeats, and none after the counter went
/// back (a restarted agent); a bad reading is refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_per_second_come_from_the_agents_counter() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let token = fleet.token(1, true, Duration::from_secs(60)).await?;
    let agent = fleet.join(&token, "counter").await?;
    let mut coord = client::connect(&agent).await?;
    coord.heartbeat(HeartbeatRequest::default()).await?;
    let a = row(&fleet, &agent.agent_id).await?;
    assert!(a.last_seen_at.is_some() && a.reported.is_none(), "{a:?}");

    let beat = |done: u64| HeartbeatRequest {
        in_flight: Some(1),
        queries_done: done,
        heartbeat_interval_s: 5.0,
        ..Default::default()
    };
    coord.heartbeat(beat(10)).await?;
    let first = row(&fleet, &agent.agent_id).await?.reported.expect("a state");
    assert_eq!((first.in_flight, first.queries_per_s), (1, None), "no rate from one heartbeat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    coord.heartbeat(beat(31)).await?;
    let second = row(&fleet, &agent.agent_id).await?.reported.expect("a state");
    let between = (second.reported_at - first.reported_at).as_seconds_f64();
    let rate = second.queries_per_s.expect("a rate from two heartbeats");
    assert!((rate - 21.0 / between).abs() < 1e-6 * rate, "{rate} /s for 21 queries in {between} s");
    coord.heartbeat(beat(2)).await?;
    assert_eq!(row(&fleet, &agent.agent_id).await?.reported.expect("a state").queries_per_s, None);

    let bad = HeartbeatRequest {
        sample_hz: Some(20.0),
        power: vec![PowerReading {
            kind: "rapl".into(),
            scope: "cpu-package".into(),
            name: "p".into(),
            watts: Some(-3.0),
        }],
        ..beat(2)
    };
    let e = coord.heartbeat(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("heartbeat state: power reading of rapl p: watts must be finite"), "{}", e.message());
    Ok(())
}
