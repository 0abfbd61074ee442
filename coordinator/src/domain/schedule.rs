//! Sweep schedules: cron expressions (croner) in a time zone, and what to do about a firing
//! that is due. `jobs::scheduler` acts on them.

use super::Invalid;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
pub use ipw_proto::kinds::MissedPolicy;
use std::str::FromStr;
use std::time::Duration;

/// How late a firing may be acted on and still count as on time.
pub const GRACE: Duration = Duration::from_secs(120);
/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// What to do now about a definition whose firing is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The firing to create an instance for, if any.
    pub fire: Option<DateTime<Utc>>,
    /// The next firing after now.
    pub next: DateTime<Utc>,
}

impl Schedule {
    /// Parses a cron expression (5 fields, or 6 with seconds) and an IANA time zone.
    pub fn parse(cron: &str, tz: &str) -> Result<Self, Invalid> {
        let cron = Cron::from_str(cron).map_err(|e| Invalid(format!("cron expression \"{cron}\": {e}")))?;
        let tz = Tz::from_str(tz)
            .map_err(|_| Invalid(format!("unknown time zone \"{tz}\"; use an IANA name like Europe/Berlin")))?;
        Ok(Self { cron, tz })
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .map(|n| n.with_timezone(&Utc))
            .map_err(|e| Invalid(format!("no next firing: {e}")))
    }

    /// Given the stored next firing `due` (<= now), decides the instance to create and the
    /// next firing. A firing within [`GRACE`] of now is on time and always fires; one later
    /// than that was missed and follows `policy`. Earlier firings in between are never
    /// created one by one.
    pub fn plan(&self, due: DateTime<Utc>, now: DateTime<Utc>, policy: MissedPolicy) -> Result<Plan, Invalid> {
        let mut latest = due;
        loop {
            let n = self.next_after(latest)?;
            if n > now {
                break;
            }
            latest = n;
        }
        let on_time = (now - latest).to_std().unwrap_or_default() <= GRACE;
        let fire = (on_time || policy == MissedPolicy::CatchUpOnce).then_some(latest);
        Ok(Plan { fire, next: self.next_after(now)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn firings_follow_the_time_zone() {
        // 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
        let s = Schedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
        assert_eq!(s.next_after(at("2026-01-10T00:00:00Z")).unwrap(), at("2026-01-10T02:00:00Z"));
        assert_eq!(s.next_after(at("2026-07-10T00:00:00Z")).unwrap(), at("2026-07-10T01:00:00Z"));
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        assert!(Schedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err().0.contains("time zone"));
    }

    #[test]
    fn an_on_time_firing_fires_and_a_missed_one_follows_the_policy() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        let due = at("2026-01-10T05:00:00Z");
        let on_time = s.plan(due, at("2026-01-10T05:00:30Z"), MissedPolicy::Skip).unwrap();
        assert_eq!(on_time, Plan { fire: Some(due), next: at("2026-01-10T06:00:00Z") });
        // Down from 05:00 to 08:30: 05, 06, 07 and 08 were missed.
        let late = at("2026-01-10T08:30:00Z");
        let skip = s.plan(due, late, MissedPolicy::Skip).unwrap();
        assert_eq!(skip, Plan { fire: None, next: at("2026-01-10T09:00:00Z") });
        let once = s.plan(due, late, MissedPolicy::CatchUpOnce).unwrap();
        assert_eq!(once, Plan { fire: Some(at("2026-01-10T08:00:00Z")), next: at("2026-01-10T09:00:00Z") });
        // Down until just after 08:00: the 08:00 firing is on time whatever the policy.
        let back = s.plan(due, at("2026-01-10T08:01:00Z"), MissedPolicy::Skip).unwrap();
        assert_eq!(back.fire, Some(at("2026-01-10T08:00:00Z")));
    }
}
