//! Scheduled sweeps: cron expressions (croner) in a time zone. Each firing creates one sweep
//! instance. With several coordinators, the one holding a Postgres advisory lock schedules,
//! and a firing's instance is unique in the database, so it is created exactly once.

use crate::sweeps;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// How late a firing may be acted on and still count as on time.
pub const GRACE: Duration = Duration::from_secs(120);
/// The advisory lock key of the scheduler ("ipw-sched").
pub const LOCK_KEY: i64 = 0x6970_772d_7363_6864;

/// What happens to firings that were missed (the coordinators were down, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedPolicy {
    /// Missed firings create nothing; the schedule resumes at the next one.
    Skip,
    /// However many were missed, one instance is created for the latest of them.
    CatchUpOnce,
}

impl MissedPolicy {
    /// Parses `skip` or `catch-up-once`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(MissedPolicy::Skip),
            "catch-up-once" => Ok(MissedPolicy::CatchUpOnce),
            _ => Err(format!("unknown missed-firing policy \"{s}\"; expected skip or catch-up-once")),
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::CatchUpOnce => "catch-up-once",
        }
    }
}

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
    pub fn parse(cron: &str, tz: &str) -> Result<Self, String> {
        let cron = Cron::from_str(cron).map_err(|e| format!("cron expression \"{cron}\": {e}"))?;
        let tz =
            Tz::from_str(tz).map_err(|_| format!("unknown time zone \"{tz}\"; use an IANA name like Europe/Berlin"))?;
        Ok(Self { cron, tz })
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .map(|n| n.with_timezone(&Utc))
            .map_err(|e| format!("no next firing: {e}"))
    }

    /// Given the stored next firing `due` (<= now), decides the instance to create and the
    /// next firing. A firing within [`GRACE`] of now is on time and always fires; one later
    /// than that was missed and follows `policy`. Earlier firings in between are never
    /// created one by one.
    pub fn plan(&self, due: DateTime<Utc>, now: DateTime<Utc>, policy: MissedPolicy) -> Result<Plan, String> {
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

/// Runs due schedules as of `now`, if this coordinator holds the scheduler lock; returns the
/// instances created. Safe to call from several coordinators at once.
pub async fn tick(pool: &sqlx::PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut lock = pool.acquire().await?;
    let leader: bool =
        sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "l!""#, LOCK_KEY).fetch_one(&mut *lock).await?;
    if !leader {
        return Ok(Vec::new());
    }
    let outcome = run_due(pool, now).await;
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "u!""#, LOCK_KEY).fetch_one(&mut *lock).await?;
    outcome
}

async fn run_due(pool: &sqlx::PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    let due: Vec<Uuid> =
        sqlx::query_scalar!("SELECT id FROM sweep_definitions WHERE next_fire_at <= $1", now).fetch_all(pool).await?;
    let mut created = Vec::new();
    for id in due {
        let mut tx = pool.begin().await?;
        // Locked and re-checked: another coordinator may have handled it meanwhile.
        let Some(d) = sqlx::query!(
            r#"SELECT name, cron AS "cron!", timezone AS "timezone!", missed_policy, next_fire_at AS "next_fire_at!"
               FROM sweep_definitions WHERE id = $1 AND next_fire_at <= $2 FOR UPDATE"#,
            id,
            now
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            continue;
        };
        let plan = Schedule::parse(&d.cron, &d.timezone)
            .and_then(|s| s.plan(d.next_fire_at, now, MissedPolicy::parse(&d.missed_policy)?));
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(sweep = %d.name, error = %e, "schedule cannot be evaluated; left as is");
                continue;
            }
        };
        if let Some(fire) = plan.fire {
            match sweeps::instantiate(&mut tx, id, Some(fire)).await {
                Ok(Some(sweep)) => created.push(sweep),
                Ok(None) => {}
                Err(status) => {
                    tracing::warn!(sweep = %d.name, firing = %fire, "scheduled sweep not started: {}", status.message())
                }
            }
        } else {
            tracing::warn!(sweep = %d.name, missed = %d.next_fire_at, "missed firing skipped (policy skip)");
        }
        sqlx::query!("UPDATE sweep_definitions SET next_fire_at = $2 WHERE id = $1", id, plan.next)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(created)
}

/// Ticks every `every` until the process ends.
pub async fn run_forever(pool: sqlx::PgPool, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        if let Err(e) = tick(&pool, Utc::now()).await {
            tracing::error!(error = %e, "scheduler tick failed");
        }
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
        assert!(Schedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err().contains("time zone"));
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
