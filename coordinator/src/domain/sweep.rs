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
    /// Concurrency levels: one run per level, model and hardware class.
    pub concurrency_levels: Vec<i32>,
    /// Engine settings, sharding and measurement (its concurrency is the first level's).
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
        let concurrency_levels = concurrency_levels(&spec.concurrency)?;
        let settings = Settings::from_request(
            concurrency_levels[0] as u32,
            spec.shard_size,
            spec.repetitions,
            spec.warmup,
            spec.params,
            spec.model_memory_bytes,
        )?
        .with_load(spec.load.clone(), spec.slo_ttft_s, spec.slo_tpot_s)?
        .with_repeats(spec.repeat_until_cv, spec.max_repeats)?;
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
            concurrency_levels,
            settings,
            schedule,
            missed_policy,
        })
    }
}

/// The distinct levels, in the order given: 1 to 32 of them, each 1 to 1024.
fn concurrency_levels(levels: &[u32]) -> Result<Vec<i32>, Invalid> {
    if levels.is_empty() || levels.len() > 32 {
        return Err("a sweep needs 1 to 32 concurrency levels".into());
    }
    let mut distinct: Vec<i32> = Vec::with_capacity(levels.len());
    for &level in levels {
        if !(1..=1024).contains(&level) {
            return Err(Invalid(format!("each concurrency level must be between 1 and 1024, got {level}")));
        }
        if !distinct.contains(&(level as i32)) {
            distinct.push(level as i32);
        }
    }
    Ok(distinct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::LoadPattern;

    fn spec(concurrency: Vec<u32>) -> SweepSpec {
        SweepSpec {
            name: "s".into(),
            workload: "w".into(),
            models: vec!["m".into()],
            sample: 4,
            concurrency,
            shard_size: 2,
            ..SweepSpec::default()
        }
    }

    #[test]
    fn levels_load_and_repeats_are_validated_as_for_a_run() {
        let d = Definition::from_spec(
            &SweepSpec {
                load: Some(LoadPattern { kind: "constant".into(), rate_per_s: 3.0, seed: 0 }),
                slo_ttft_s: 2.0,
                repeat_until_cv: 0.02,
                ..spec(vec![4, 1, 4, 16])
            },
            Utc::now(),
        )
        .unwrap();
        assert_eq!(d.concurrency_levels, [4, 1, 16]);
        let m = &d.settings.measurement;
        assert_eq!((m.load_pattern.as_str(), m.rate_per_s, m.slo_ttft_s), ("constant", Some(3.0), Some(2.0)));
        assert_eq!((m.repeat_until_cv, m.max_repeats), (Some(0.02), Some(5)));

        let err = |s: SweepSpec| Definition::from_spec(&s, Utc::now()).unwrap_err().0;
        assert!(err(spec(vec![])).contains("1 to 32 concurrency levels"));
        assert!(err(spec(vec![1, 2000])).contains("got 2000"));
        assert!(err(SweepSpec { max_repeats: 3, ..spec(vec![1]) }).contains("--repeat-until-cv"));
        let burst = Some(LoadPattern { kind: "burst".into(), rate_per_s: 1.0, seed: 0 });
        assert!(err(SweepSpec { load: burst, ..spec(vec![1]) }).contains("unknown load pattern"));
    }
}
