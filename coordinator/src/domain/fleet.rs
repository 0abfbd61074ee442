//! The fleet page's live view: the state an agent's heartbeat carries, checked before it is
//! stored, and what the page shows of each agent.

use super::Invalid;
use super::telemetry::{MAX_TELEMETRY_SOURCES, short_text};
use chrono::{DateTime, Utc};
use ipw_proto::kinds::{AgentStatus, PowerKind};
use ipw_proto::v1::HeartbeatRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Heartbeat intervals without a heartbeat after which an agent is shown as stale.
pub const STALE_AFTER_HEARTBEATS: f64 = 3.0;

/// One power source's latest reading, as a heartbeat carries it and `agent_live.power`
/// stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerNow {
    /// The source's kind, e.g. `rapl`.
    pub kind: String,
    /// What it covers, e.g. `cpu-package`.
    pub scope: String,
    /// Device or domain, e.g. `package-0`.
    pub name: String,
    /// Mean power over the last second the agent sampled; `None` when the agent does not know
    /// it (never 0 for unknown).
    pub watts: Option<f64>,
}

/// The state a heartbeat carries, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveState {
    /// Engine requests in flight.
    pub in_flight: i32,
    /// Queries the agent finished since it started (a counter).
    pub queries_done: i64,
    /// Each power source's latest reading; empty for an agent that reads no power.
    pub power: Vec<PowerNow>,
    /// The sampler's rate, without which there is no power.
    pub sample_hz: Option<f64>,
    /// The agent's heartbeat interval, in seconds.
    pub heartbeat_s: f64,
}

/// The state a heartbeat carries, checked; `None` from an agent that reports none (one that
/// predates it). The error names the field that is wrong.
pub fn live_state(beat: &HeartbeatRequest) -> Result<Option<LiveState>, Invalid> {
    let Some(in_flight) = beat.in_flight else { return Ok(None) };
    let in_flight = i32::try_from(in_flight).map_err(|_| Invalid(format!("in_flight {in_flight} is out of range")))?;
    let queries_done = i64::try_from(beat.queries_done)
        .map_err(|_| Invalid(format!("queries_done {} is out of range", beat.queries_done)))?;
    if !(beat.heartbeat_interval_s.is_finite() && beat.heartbeat_interval_s > 0.0) {
        return Err(Invalid(format!("heartbeat_interval_s must be > 0, got {}", beat.heartbeat_interval_s)));
    }
    if let Some(hz) = beat.sample_hz.filter(|hz| !(hz.is_finite() && *hz > 0.0)) {
        return Err(Invalid(format!("sample_hz must be > 0, got {hz}")));
    }
    if beat.power.len() > MAX_TELEMETRY_SOURCES {
        return Err(Invalid(format!("{} power readings; at most {MAX_TELEMETRY_SOURCES}", beat.power.len())));
    }
    let mut power = Vec::with_capacity(beat.power.len());
    for p in &beat.power {
        for (field, value) in [("kind", &p.kind), ("scope", &p.scope), ("name", &p.name)] {
            short_text(&format!("power reading {field}"), value)?;
        }
        if p.kind.parse::<PowerKind>().is_err() {
            return Err(Invalid(format!("power reading of unknown source \"{}\"", p.kind)));
        }
        if let Some(w) = p.watts.filter(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(Invalid(format!(
                "power reading of {} {}: watts must be finite and >= 0, got {w}",
                p.kind, p.name
            )));
        }
        power.push(PowerNow { kind: p.kind.clone(), scope: p.scope.clone(), name: p.name.clone(), watts: p.watts });
    }
    if !power.is_empty() && beat.sample_hz.is_none() {
        return Err("power readings without the sampler's rate (sample_hz)".into());
    }
    Ok(Some(LiveState {
        in_flight,
        queries_done,
        power,
        sample_hz: beat.sample_hz,
        heartbeat_s: beat.heartbeat_interval_s,
    }))
}

/// One accelerator of an agent, as it joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    /// e.g. `nvidia`.
    pub vendor: String,
    /// e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Its memory, in bytes.
    pub memory_bytes: i64,
}

/// A lease an agent holds now (not run out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLease {
    /// The run.
    pub run_id: Uuid,
    /// The run's model.
    pub model: String,
    /// Which shard of the run.
    pub shard_index: i32,
    /// When the lease runs out unless a heartbeat renews it.
    pub expires_at: DateTime<Utc>,
}

/// What the agent's latest heartbeat said of its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// When the heartbeat arrived (the coordinator's clock).
    pub reported_at: DateTime<Utc>,
    /// The agent's heartbeat interval, in seconds.
    pub heartbeat_s: f64,
    /// Engine requests in flight.
    pub in_flight: i32,
    /// Queries finished per second between its last two heartbeats; `None` after its first
    /// heartbeat and after a restart.
    pub queries_per_s: Option<f64>,
    /// Each power source's latest reading; empty for an agent that reads no power.
    pub power: Vec<PowerNow>,
    /// The sampler's rate; `None` without one.
    pub sample_hz: Option<f64>,
}

/// One agent on the fleet page.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLive {
    /// The agent's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its hardware class.
    pub hardware_class: String,
    /// Its accelerators, in index order.
    pub accelerators: Vec<Accelerator>,
    /// Where it stands with the coordinator.
    pub status: AgentStatus,
    /// Its last call that renewed anything (any heartbeat); `None` before the first.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The leases it holds now, soonest to run out first.
    pub leases: Vec<CurrentLease>,
    /// Its latest reported state; `None` from an agent that never reported one.
    pub reported: Option<Reported>,
}

impl AgentLive {
    /// Whether the agent's state is old at `now`: no heartbeat for more than
    /// [`STALE_AFTER_HEARTBEATS`] of its intervals, or none ever reported.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.reported.as_ref().is_none_or(|r| {
            let age = (now - r.reported_at).as_seconds_f64();
            age > STALE_AFTER_HEARTBEATS * r.heartbeat_s
        })
    }

    /// The summed power of its sources, when every source's is known.
    pub fn total_watts(&self) -> Option<f64> {
        let power = &self.reported.as_ref()?.power;
        power.iter().map(|p| p.watts).sum::<Option<f64>>().filter(|_| !power.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::PowerReading;

    fn beat(power: Vec<PowerReading>) -> HeartbeatRequest {
        HeartbeatRequest {
            in_flight: Some(3),
            queries_done: 42,
            sample_hz: Some(20.0),
            heartbeat_interval_s: 5.0,
            power,
            ..Default::default()
        }
    }

    fn rapl(watts: Option<f64>) -> PowerReading {
        PowerReading { kind: "rapl".into(), scope: "cpu-package".into(), name: "package-0".into(), watts }
    }

    #[test]
    fn a_heartbeat_without_state_records_nothing() {
        assert_eq!(live_state(&HeartbeatRequest { shard_ids: vec!["x".into()], ..Default::default() }), Ok(None));
    }

    #[test]
    fn a_reading_keeps_unknown_watts_unknown() {
        let s = live_state(&beat(vec![rapl(Some(25.0)), rapl(None)])).unwrap().unwrap();
        assert_eq!((s.in_flight, s.queries_done, s.sample_hz, s.heartbeat_s), (3, 42, Some(20.0), 5.0));
        assert_eq!(s.power.iter().map(|p| p.watts).collect::<Vec<_>>(), [Some(25.0), None]);
        let json = serde_json::to_value(&s.power).unwrap();
        assert_eq!(
            json[1],
            serde_json::json!({"kind": "rapl", "scope": "cpu-package", "name": "package-0", "watts": null})
        );
        assert_eq!(serde_json::from_value::<Vec<PowerNow>>(json).unwrap(), s.power);
    }

    #[test]
    fn an_agent_without_power_sends_no_rate() {
        let s = live_state(&HeartbeatRequest { sample_hz: None, ..beat(Vec::new()) }).unwrap().unwrap();
        assert!(s.power.is_empty() && s.sample_hz.is_none());
    }

    #[test]
    fn bad_state_is_refused_naming_the_field() {
        let cases = [
            (beat(vec![rapl(Some(f64::NAN))]), "watts must be finite"),
            (beat(vec![rapl(Some(-1.0))]), "watts must be finite and >= 0, got -1"),
            (beat(vec![PowerReading { kind: "magic".into(), ..rapl(None) }]), "unknown source \"magic\""),
            (beat(vec![PowerReading { name: "a\0b".into(), ..rapl(None) }]), "power reading name holds a NUL"),
            (beat(vec![rapl(None); MAX_TELEMETRY_SOURCES + 1]), "65 power readings; at most 64"),
            (HeartbeatRequest { sample_hz: None, ..beat(vec![rapl(None)]) }, "without the sampler's rate"),
            (HeartbeatRequest { sample_hz: Some(0.0), ..beat(Vec::new()) }, "sample_hz must be > 0"),
            (HeartbeatRequest { heartbeat_interval_s: 0.0, ..beat(Vec::new()) }, "heartbeat_interval_s must be > 0"),
            (
                HeartbeatRequest { in_flight: Some(u32::MAX), ..beat(Vec::new()) },
                "in_flight 4294967295 is out of range",
            ),
            (HeartbeatRequest { queries_done: u64::MAX, ..beat(Vec::new()) }, "queries_done"),
        ];
        for (b, want) in cases {
            let e = live_state(&b).unwrap_err();
            assert!(e.0.contains(want), "{e} should say {want}");
        }
    }

    fn agent(reported: Option<Reported>) -> AgentLive {
        AgentLive {
            id: Uuid::nil(),
            name: "a".into(),
            labels: BTreeMap::new(),
            hardware_class: "cpu".into(),
            accelerators: Vec::new(),
            status: AgentStatus::Approved,
            last_seen_at: None,
            leases: Vec::new(),
            reported,
        }
    }

    #[test]
    fn an_agent_is_stale_after_three_missed_heartbeats() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let r = Reported {
            reported_at: at,
            heartbeat_s: 5.0,
            in_flight: 0,
            queries_per_s: None,
            power: vec![PowerNow {
                kind: "rapl".into(),
                scope: "cpu-package".into(),
                name: "p".into(),
                watts: Some(7.5),
            }],
            sample_hz: Some(20.0),
        };
        let a = agent(Some(r.clone()));
        assert!(!a.is_stale(at + chrono::Duration::seconds(15)));
        assert!(a.is_stale(at + chrono::Duration::milliseconds(15_001)));
        assert!(agent(None).is_stale(at));
        assert_eq!(a.total_watts(), Some(7.5));
        let unknown = PowerNow { watts: None, ..r.power[0].clone() };
        assert_eq!(agent(Some(Reported { power: vec![r.power[0].clone(), unknown], ..r.clone() })).total_watts(), None);
        assert_eq!(agent(Some(Reported { power: Vec::new(), ..r })).total_watts(), None);
    }
}
