//! A sweep definition as a request gives it, validated: models x hardware classes x a seeded
//! sample, engine settings, and optionally a schedule.

use super::Invalid;
use super::schedule::{MissedPolicy, Schedule};
use super::settings::Settings;
use chrono::{DateTime, Utc};
use ipw_proto::v1::SweepSpec;
use std::collections::HashMap;

/// A validated sweep definition (the workload is resolved by the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// A unique name.
    pub name: String,
    /// Workload name or id.
    pub workload: String,
    /// Models, as the engines serve them.
    pub models: Vec<String>,
    /// Queries in the sample.
    pub sample: u32,
    /// Sampling seed.
    pub seed: i64,
    /// Sample each category in proportion to its share.
    pub stratify: bool,
    /// Only agents with all these labels.
    pub labels: HashMap<String, String>,
    /// Only hardware classes containing this text.
    pub accelerator: Option<String>,
    /// Engine settings and sharding.
    pub settings: Settings,
    /// The schedule, if the sweep recurs.
    pub schedule: Option<Recurrence>,
    /// What happens to missed firings.
    pub missed_policy: MissedPolicy,
}

/// When a sweep recurs.
#[derive(Debug, Clone, PartialEq)]
pub struct Recurrence {
    /// The cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// The first firing after now.
    pub first: DateTime<Utc>,
}

impl Definition {
    /// Validates a request's sweep, as of `now` (for the first firing).
    pub fn from_spec(spec: &SweepSpec, now: DateTime<Utc>) -> Result<Self, Invalid> {
        let name = spec.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err("a sweep needs a name of 1 to 200 bytes".into());
        }
        let models: Vec<String> = spec.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
        if models.is_empty() {
            return Err("a sweep needs at least one model".into());
        }
        let settings = Settings::from_request(
            spec.concurrency,
            spec.shard_size,
            spec.repetitions,
            spec.warmup,
            spec.params,
            spec.model_memory_bytes,
        )?;
        let missed_policy = match spec.missed_policy.as_str() {
            "" => MissedPolicy::Skip,
            p => p.parse().map_err(|e: ipw_proto::kinds::UnknownValue| Invalid(e.to_string()))?,
        };
        let schedule = match (spec.cron.trim(), spec.timezone.trim()) {
            ("", _) => None,
            (cron, tz) => {
                let tz = if tz.is_empty() { "UTC" } else { tz };
                let first = Schedule::parse(cron, tz)?.next_after(now)?;
                Some(Recurrence { cron: cron.to_owned(), timezone: tz.to_owned(), first })
            }
        };
        Ok(Self {
            name: name.to_owned(),
            workload: spec.workload.clone(),
            models,
            sample: spec.sample,
            seed: spec.seed,
            stratify: spec.stratify,
            labels: spec.labels.clone(),
            accelerator: Some(spec.accelerator.trim().to_owned()).filter(|a| !a.is_empty()),
            settings,
            schedule,
            missed_policy,
        })
    }
}
