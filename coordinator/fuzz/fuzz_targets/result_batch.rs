//! Result batches as they arrive from agents: decoding and validation never panic, and a
//! result that passes validation satisfies the `results` table's constraints, so a batch is
//! either refused with a named field or written, never failed by the database.
#![no_main]

use ipw_coordinator::domain::results::{MAX_RESPONSE_BYTES, MAX_SHORT_TEXT_BYTES, validate};
use ipw_proto::kinds::PowerKind;
use ipw_proto::v1::ResultBatch;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = ResultBatch::decode(data) else { return };
    for r in &batch.results {
        let Ok(v) = validate(r) else { continue };
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        assert!(nonneg(v.latency_s) && nonneg(v.sample_hz));
        assert!(v.ttft_s.is_none_or(|t| nonneg(t) && t <= v.latency_s));
        assert!(v.mean_itl_s.is_none_or(nonneg));
        assert!(v.energy_j.is_none_or(nonneg));
        assert!(v.dynamic_energy_j.is_none_or(f64::is_finite));
        assert!(v.tokens_in >= 0 && v.tokens_out >= 0 && v.repetition >= 0);
        assert!(v.response.len() <= MAX_RESPONSE_BYTES);
        assert!(v.energy_j.is_some() || v.energy_null_reason.as_deref().is_some_and(|s| !s.trim().is_empty()));
        assert!(v.energy_j.is_none() || v.power_source != "none");
        assert!(v.power_source == "none" || v.power_source.split('+').all(|k| k.parse::<PowerKind>().is_ok()));
        let texts = [Some(&v.response), Some(&v.finish_reason), v.error.as_ref(), Some(&v.power_scope)];
        for t in texts.into_iter().flatten().chain(v.energy_null_reason.iter()) {
            assert!(!t.contains('\0'), "PostgreSQL text cannot hold NUL: {t:?}");
        }
        for t in [&v.finish_reason, &v.power_scope] {
            assert!(t.len() <= MAX_SHORT_TEXT_BYTES);
        }
    }
});
