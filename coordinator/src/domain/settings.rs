//! Engine settings and sharding shared by every run of a request or a sweep.

use super::Invalid;
use ipw_proto::v1::{GenerationParams, LoadPattern};

/// Default completion budget when a run does not set one.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// How a run is measured beyond its concurrency: load pattern, goodput SLOs, repeat rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// closed (concurrency), poisson or constant (arrivals at `rate_per_s`).
    pub load_pattern: String,
    /// Open loop: arrivals per second.
    pub rate_per_s: Option<f64>,
    /// Seeds Poisson arrivals.
    pub arrival_seed: i64,
    /// Goodput SLO on time to first token, s.
    pub slo_ttft_s: Option<f64>,
    /// Goodput SLO on time per output token, s.
    pub slo_tpot_s: Option<f64>,
    /// Repeat until the steady-state figure's coefficient of variation is at most this.
    pub repeat_until_cv: Option<f64>,
    /// Runs in all, at most, when repeating.
    pub max_repeats: Option<i32>,
}

impl Default for Measurement {
    /// Closed loop, no SLOs, run once.
    fn default() -> Self {
        Self {
            load_pattern: "closed".into(),
            rate_per_s: None,
            arrival_seed: 0,
            slo_ttft_s: None,
            slo_tpot_s: None,
            repeat_until_cv: None,
            max_repeats: None,
        }
    }
}

/// Engine settings and sharding, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Queries in flight at once on an agent.
    pub concurrency: i32,
    /// Queries per shard.
    pub shard_size: i32,
    /// Times each query is run.
    pub repetitions: i32,
    /// Completion budget.
    pub max_tokens: i32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: f32,
    /// Unmeasured queries run first on each shard.
    pub warmup: i32,
    /// Memory a model needs; agents with less are not given it.
    pub model_memory_bytes: Option<i64>,
    /// Load pattern, goodput SLOs and the repeat rule.
    pub measurement: Measurement,
}

impl Settings {
    /// Validates user-given settings, filling defaults (max tokens, top-p, repetitions).
    pub fn from_request(
        concurrency: u32,
        shard_size: u32,
        repetitions: u32,
        warmup: u32,
        params: Option<GenerationParams>,
        model_memory_bytes: u64,
    ) -> Result<Self, Invalid> {
        let bad = |m: &str| Err(Invalid::new(m));
        if shard_size == 0 {
            return bad("the shard size must be at least 1");
        }
        if !(1..=1024).contains(&concurrency) {
            return bad("the concurrency must be between 1 and 1024");
        }
        let repetitions = repetitions.max(1);
        if repetitions > 100 {
            return bad("the repetitions must be between 1 and 100");
        }
        let params = params.unwrap_or_default();
        let max_tokens = if params.max_tokens == 0 { DEFAULT_MAX_TOKENS } else { params.max_tokens };
        let top_p = if params.top_p == 0.0 { 1.0 } else { params.top_p };
        if !(params.temperature.is_finite() && params.temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0) {
            return bad("temperature must be >= 0 and top-p in (0, 1]");
        }
        let int = |v: u32, what: &str| i32::try_from(v).map_err(|_| Invalid(format!("the {what} is too large")));
        Ok(Self {
            concurrency: concurrency as i32,
            shard_size: int(shard_size, "shard size")?,
            repetitions: repetitions as i32,
            max_tokens: int(max_tokens, "max tokens")?,
            temperature: params.temperature,
            top_p,
            warmup: int(warmup, "warm-up")?,
            model_memory_bytes: (model_memory_bytes > 0)
                .then(|| i64::try_from(model_memory_bytes))
                .transpose()
                .map_err(|_| Invalid::new("the model memory is too large"))?,
            measurement: Measurement::default(),
        })
    }

    /// Repeats the run until the coefficient of variation is at most `cv` (0: once), with
    /// `max_repeats` runs in all (0: 5).
    pub fn with_repeats(mut self, cv: f64, max_repeats: u32) -> Result<Self, Invalid> {
        if cv == 0.0 {
            return if max_repeats == 0 {
                Ok(self)
            } else {
                Err(Invalid::new("--max-repeats needs --repeat-until-cv"))
            };
        }
        if !(cv.is_finite() && cv > 0.0 && cv < 1.0) {
            return Err(Invalid(format!("the target coefficient of variation must be between 0 and 100%, got {cv}")));
        }
        let max = if max_repeats == 0 { 5 } else { max_repeats };
        if !(2..=100).contains(&max) {
            return Err(Invalid::new("the maximum repeats must be between 2 and 100"));
        }
        (self.measurement.repeat_until_cv, self.measurement.max_repeats) = (Some(cv), Some(max as i32));
        Ok(self)
    }

    /// Sets the load pattern (none or `closed`: today's concurrency) and the goodput SLOs
    /// (0: none).
    pub fn with_load(mut self, load: Option<LoadPattern>, slo_ttft_s: f64, slo_tpot_s: f64) -> Result<Self, Invalid> {
        let load = load.unwrap_or_default();
        match load.kind.as_str() {
            "" | "closed" if load.rate_per_s == 0.0 => {}
            "" | "closed" => return Err(Invalid::new("a rate needs an open-loop pattern: poisson or constant")),
            "poisson" | "constant" if load.rate_per_s.is_finite() && load.rate_per_s > 0.0 => {
                self.measurement.load_pattern = load.kind.clone();
                self.measurement.rate_per_s = Some(load.rate_per_s);
                self.measurement.arrival_seed = load.seed as i64;
            }
            "poisson" | "constant" => {
                return Err(Invalid::new("the arrival rate must be a positive number per second"));
            }
            other => {
                return Err(Invalid(format!("unknown load pattern \"{other}\"; expected closed, poisson or constant")));
            }
        }
        let slo = |v: f64, what: &str| match v {
            0.0 => Ok(None),
            v if v.is_finite() && v > 0.0 => Ok(Some(v)),
            _ => Err(Invalid(format!("the {what} SLO must be a positive number of seconds"))),
        };
        self.measurement.slo_ttft_s = slo(slo_ttft_s, "ttft")?;
        self.measurement.slo_tpot_s = slo(slo_tpot_s, "tpot")?;
        Ok(self)
    }

    /// The load pattern as a lease carries it.
    pub fn load(&self) -> LoadPattern {
        let m = &self.measurement;
        LoadPattern {
            kind: m.load_pattern.clone(),
            rate_per_s: m.rate_per_s.unwrap_or(0.0),
            seed: m.arrival_seed as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_bad_values_are_named() {
        let s = Settings::from_request(2, 10, 0, 0, None, 0).unwrap();
        assert_eq!((s.repetitions, s.max_tokens, s.top_p, s.model_memory_bytes), (1, 1024, 1.0, None));
        assert!(Settings::from_request(2, 0, 1, 0, None, 0).unwrap_err().0.contains("shard size"));
        assert!(Settings::from_request(0, 1, 1, 0, None, 0).unwrap_err().0.contains("concurrency"));
        assert!(Settings::from_request(1, 1, 101, 0, None, 0).unwrap_err().0.contains("repetitions"));
    }

    #[test]
    fn load_patterns_and_slos_are_checked() {
        let base = Settings::from_request(2, 10, 1, 0, None, 0).unwrap();
        let open = |kind: &str, rate: f64| Some(LoadPattern { kind: kind.into(), rate_per_s: rate, seed: 7 });
        let s = base.clone().with_load(open("poisson", 5.0), 2.0, 0.1).unwrap();
        let m = &s.measurement;
        assert_eq!(
            (m.load_pattern.as_str(), m.rate_per_s, m.slo_ttft_s, m.slo_tpot_s),
            ("poisson", Some(5.0), Some(2.0), Some(0.1))
        );
        assert_eq!(s.load().seed, 7);
        assert_eq!(base.clone().with_load(None, 0.0, 0.0).unwrap(), base);
        assert!(base.clone().with_load(open("poisson", 0.0), 0.0, 0.0).unwrap_err().0.contains("positive"));
        assert!(base.clone().with_load(open("closed", 3.0), 0.0, 0.0).unwrap_err().0.contains("open-loop"));
        assert!(base.clone().with_load(open("burst", 3.0), 0.0, 0.0).unwrap_err().0.contains("unknown load pattern"));
        assert!(base.clone().with_load(None, -1.0, 0.0).unwrap_err().0.contains("ttft"));
        let r = base.clone().with_repeats(0.02, 0).unwrap();
        assert_eq!((r.measurement.repeat_until_cv, r.measurement.max_repeats), (Some(0.02), Some(5)));
        assert!(base.clone().with_repeats(0.0, 3).unwrap_err().0.contains("--repeat-until-cv"));
        assert!(base.clone().with_repeats(2.0, 3).unwrap_err().0.contains("between 0 and 100%"));
        assert!(base.with_repeats(0.02, 1).unwrap_err().0.contains("between 2 and 100"));
    }
}
