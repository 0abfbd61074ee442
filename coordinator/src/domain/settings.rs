//! Engine settings and sharding shared by every run of a request or a sweep.

use super::Invalid;
use ipw_proto::v1::GenerationParams;

/// Default completion budget when a run does not set one.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

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
        })
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
}
