//! The one backoff schedule for every retry in the fleet: agents calling the coordinator, an
//! agent resending a request its engine never received or waiting out its rate limit, the coordinator waiting for its
//! database, the judge calling its endpoint.

use std::time::Duration;

/// The wait before retry number `attempt` (0-based): exponential from 250 ms, capped at 30 s,
/// with up to 25% random jitter so that a fleet does not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << attempt.min(7)).min(Duration::from_secs(30));
    base.mul_f64(1.0 + rand::random::<f64>() * 0.25)
}

/// The longest a `Retry-After` is waited for: a server asking for more is asked again sooner,
/// and the request's retry budget decides when to give up.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// The wait before retry number `attempt` (0-based) of a request the server refused as rate
/// limited (429): its `Retry-After`, capped at [`RETRY_AFTER_CAP`], or [`backoff`] when it gave
/// none.
pub fn after_rate_limit(retry_after: Option<Duration>, attempt: u32) -> Duration {
    retry_after.map_or_else(|| backoff(attempt), |d| d.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::{RETRY_AFTER_CAP, after_rate_limit, backoff};
    use std::time::Duration;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert!(backoff(0) >= Duration::from_millis(250) && backoff(0) <= Duration::from_millis(313));
        assert!(backoff(3) >= Duration::from_secs(2) && backoff(3) <= Duration::from_millis(2500));
        assert!(backoff(30) >= Duration::from_secs(30) && backoff(30) <= Duration::from_millis(37_500));
    }

    #[test]
    fn a_rate_limit_waits_its_retry_after_capped_else_backs_off() {
        assert_eq!(after_rate_limit(Some(Duration::from_secs(2)), 5), Duration::from_secs(2));
        assert_eq!(after_rate_limit(Some(Duration::from_secs(3600)), 0), RETRY_AFTER_CAP);
        assert_eq!(after_rate_limit(Some(Duration::ZERO), 0), Duration::ZERO);
        let fallback = after_rate_limit(None, 3);
        assert!(fallback >= Duration::from_secs(2) && fallback <= Duration::from_millis(2500));
    }
}
