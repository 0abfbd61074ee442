//! The one backoff schedule for every retry in the fleet: agents calling the coordinator, an
//! agent resending a request its engine never received, the coordinator waiting for its
//! database, the judge calling its endpoint.

use std::time::Duration;

/// The wait before retry number `attempt` (0-based): exponential from 250 ms, capped at 30 s,
/// with up to 25% random jitter so that a fleet does not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << attempt.min(7)).min(Duration::from_secs(30));
    base.mul_f64(1.0 + rand::random::<f64>() * 0.25)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert!(backoff(0) >= Duration::from_millis(250) && backoff(0) <= Duration::from_millis(313));
        assert!(backoff(3) >= Duration::from_secs(2) && backoff(3) <= Duration::from_millis(2500));
        assert!(backoff(30) >= Duration::from_secs(30) && backoff(30) <= Duration::from_millis(37_500));
    }
}
