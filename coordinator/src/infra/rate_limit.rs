//! A per-address token bucket for what anyone may try: `Join`, and the dashboard's login. A
//! guessing client is slowed to a trickle while a lab enrolling a rack at once is not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most. Past it, a new address is refused until idle buckets have
/// been forgotten: memory stays bounded however many addresses a client has.
const MAX_TRACKED: usize = 10_000;
/// How often full (idle) buckets are forgotten: one pass per interval, not one per call.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Allows `burst` calls at once per address, refilled at `per_minute`. An IPv6 client is one
/// /64 (a host usually holds a whole one), an IPv4-mapped address its IPv4 address.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_client: HashMap<IpAddr, (f64, Instant)>,
    swept_at: Option<Instant>,
}

/// The bucket an address counts against.
fn client_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl RateLimiter {
    /// A limiter allowing `burst` calls at once and `per_minute` sustained, per address.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            state: Mutex::new(Buckets { by_client: HashMap::new(), swept_at: None }),
        }
    }

    /// Takes one call's token for `addr`, or says how long until one is free.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        self.check_at(addr, Instant::now())
    }

    /// Gives back the token a call took (a login that succeeded): only failures count.
    pub fn refund(&self, addr: IpAddr) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some((tokens, _)) = state.by_client.get_mut(&client_of(addr)) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let client = client_of(addr);
        let mut state = self.state.lock().expect("not poisoned");
        if state.swept_at.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            let (burst, rate) = (self.burst, self.per_second);
            state.by_client.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            state.swept_at = Some(now);
        }
        let full = state.by_client.len() >= MAX_TRACKED;
        if full && !state.by_client.contains_key(&client) {
            return Err(SWEEP_EVERY);
        }
        let (tokens, at) = state.by_client.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_address() {
        let limiter = RateLimiter::new(3, 6); // one token every 10 s
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(a, t0).is_ok());
        }
        let wait = limiter.check_at(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 10.0).abs() < 0.01, "{wait:?}");
        assert!(limiter.check_at(b, t0).is_ok(), "another address has its own bucket");
        assert!(limiter.check_at(a, t0 + Duration::from_secs(5)).is_err());
        assert!(limiter.check_at(a, t0 + Duration::from_secs(10)).is_ok());
        assert!(limiter.check_at(a, t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn a_refunded_call_does_not_count() {
        let limiter = RateLimiter::new(2, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check_at(a, t0).is_ok());
            limiter.refund(a);
        }
        assert!(limiter.check_at(a, t0).is_ok() && limiter.check_at(a, t0).is_ok());
        assert!(limiter.check_at(a, t0).is_err(), "two unrefunded calls used the burst");
        limiter.refund("10.0.0.9".parse().unwrap());
        assert_eq!(limiter.state.lock().unwrap().by_client.len(), 1, "a refund tracks no new client");
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_idle_buckets_are_forgotten() {
        let limiter = RateLimiter::new(1, 60);
        let t0 = Instant::now();
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        assert!(limiter.check_at(first, t0).is_ok());
        // Another address in the same /64 is the same client.
        assert!(limiter.check_at("2001:db8:1:2:ffff::9".parse().unwrap(), t0).is_err());
        assert!(limiter.check_at("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        assert!(limiter.check_at("::ffff:10.0.0.7".parse().unwrap(), t0).is_ok());
        assert!(limiter.check_at("10.0.0.7".parse().unwrap(), t0).is_err(), "IPv4-mapped is IPv4");
        // Refilled buckets are forgotten at the next sweep.
        let later = t0 + SWEEP_EVERY;
        assert!(limiter.check_at("10.0.0.8".parse().unwrap(), later).is_ok());
        assert_eq!(limiter.state.lock().unwrap().by_client.len(), 1);
    }

    #[test]
    fn at_capacity_new_clients_wait_and_known_ones_go_on() {
        let limiter = RateLimiter::new(2, 1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            assert!(limiter.check_at(IpAddr::V4(i.into()), t0).is_ok());
        }
        assert!(limiter.check_at(IpAddr::V4(u32::MAX.into()), t0).is_err(), "memory stays bounded");
        assert!(limiter.check_at(IpAddr::V4(5u32.into()), t0).is_ok(), "a known client keeps its bucket");
    }
}
