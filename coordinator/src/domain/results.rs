//! Results as agents send them, validated field by field before anything is written
//! (`store::results` writes them).

use super::Invalid;
use ipw_proto::kinds::{Attribution, PowerKind, parse_power_sources};
use ipw_proto::v1::QueryResult;
use uuid::Uuid;

pub use ipw_proto::limits::{MAX_BATCH_RESULTS, MAX_RESPONSE_BYTES, MAX_SHORT_TEXT_BYTES};

/// Text as PostgreSQL can store it: a NUL (which a model may emit) becomes U+FFFD rather than
/// costing the whole batch a database error. Nothing else changes.
pub fn storable(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_owned() }
}

/// A result that passed validation, in database types.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidResult {
    /// The run.
    pub run_id: Uuid,
    /// The shard it was leased in.
    pub shard_id: Uuid,
    /// The query.
    pub query_id: i64,
    /// Which repetition of the query.
    pub repetition: i32,
    /// Wall-clock start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// End-to-end latency in seconds.
    pub latency_s: f64,
    /// Time to first token in seconds.
    pub ttft_s: Option<f64>,
    /// Mean inter-token latency in seconds.
    pub mean_itl_s: Option<f64>,
    /// Prompt tokens, per the server.
    pub tokens_in: i32,
    /// Completion tokens, per the server.
    pub tokens_out: i32,
    /// The response text.
    pub response: String,
    /// The server's finish reason.
    pub finish_reason: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Raw energy in joules.
    pub energy_j: Option<f64>,
    /// Energy minus idle power times duration.
    pub dynamic_energy_j: Option<f64>,
    /// Where the energy came from.
    pub power_source: String,
    /// What the power source covers.
    pub power_scope: String,
    /// Sampling rate in Hz.
    pub sample_hz: f64,
    /// How concurrent queries split an interval's energy.
    pub energy_attribution: Attribution,
    /// Why energy is missing.
    pub energy_null_reason: Option<String>,
    /// Energy from send to first token, J.
    pub prefill_energy_j: Option<f64>,
    /// Energy from first token to end, J.
    pub decode_energy_j: Option<f64>,
    /// Median inter-token latency, s.
    pub itl_p50_s: Option<f64>,
    /// 95th percentile inter-token latency, s.
    pub itl_p95_s: Option<f64>,
    /// Time per output token after the first, s.
    pub tpot_s: Option<f64>,
    /// The measurement session.
    pub session_id: Option<Uuid>,
    /// Whether the query ran wholly inside its session's steady-state window.
    pub in_steady_window: bool,
    /// Open loop: how late the request started.
    pub start_delay_s: Option<f64>,
    /// Rate-limited (429) answers the request waited out.
    pub rate_limited: i32,
}

/// Checks one result on its own (ownership and membership are checked against the database).
/// The error names the field.
pub fn validate(r: &QueryResult) -> Result<ValidResult, Invalid> {
    let uuid = |field: &str, s: &str| Uuid::parse_str(s).map_err(|_| format!("{field} \"{s}\" is not a UUID"));
    let finite_nonneg = |field: &str, v: f64| {
        if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(format!("{field} must be a finite number >= 0, got {v}")) }
    };
    let short = |field: &str, s: &str| {
        if s.len() <= MAX_SHORT_TEXT_BYTES {
            Ok(storable(s))
        } else {
            Err(format!("{field} is longer than {MAX_SHORT_TEXT_BYTES} bytes"))
        }
    };
    let run_id = uuid("run_id", &r.run_id)?;
    let shard_id = uuid("shard_id", &r.shard_id)?;
    let repetition = i32::try_from(r.repetition).map_err(|_| "repetition out of range".to_owned())?;
    let started_at = chrono::DateTime::from_timestamp_micros(r.started_unix_us)
        .ok_or_else(|| format!("started_unix_us {} is not a valid time", r.started_unix_us))?;
    let latency_s = finite_nonneg("latency_s", r.latency_s)?;
    let ttft_s = r.ttft_s.map(|v| finite_nonneg("ttft_s", v)).transpose()?;
    if ttft_s.is_some_and(|t| t > latency_s) {
        return Err(format!("ttft_s {} exceeds latency_s {latency_s}", ttft_s.unwrap_or_default()).into());
    }
    let mean_itl_s = r.mean_itl_s.map(|v| finite_nonneg("mean_itl_s", v)).transpose()?;
    let tokens = |field: &str, v: u32| i32::try_from(v).map_err(|_| format!("{field} out of range"));
    if r.response.len() > MAX_RESPONSE_BYTES {
        return Err(format!("response is longer than {MAX_RESPONSE_BYTES} bytes").into());
    }
    let energy = r.energy.clone().unwrap_or_default();
    let power_source = if energy.source.is_empty() { "none".to_owned() } else { energy.source.clone() };
    if parse_power_sources(&power_source).is_err() {
        return Err(Invalid(format!(
            "unknown power source \"{power_source}\"; expected none, or one or more of {} joined with '+'",
            PowerKind::NAMES.join(", ")
        )));
    }
    let energy_attribution = if energy.attribution.is_empty() {
        Attribution::TimeShare
    } else {
        energy.attribution.parse().map_err(|_| format!("unknown energy attribution \"{}\"", energy.attribution))?
    };
    let energy_j = energy.energy_j.map(|v| finite_nonneg("energy_j", v)).transpose()?;
    let dynamic_energy_j = match energy.dynamic_energy_j {
        Some(v) if !v.is_finite() => {
            return Err(format!("dynamic_energy_j must be finite, got {v}").into());
        }
        v => v,
    };
    match (energy_j, power_source.as_str(), energy.null_reason.trim().is_empty()) {
        (Some(_), "none", _) => return Err("energy_j is set but power source is \"none\"".into()),
        (None, _, true) => return Err("energy_j is missing and no null_reason says why".into()),
        _ => {}
    }
    let (prefill_energy_j, decode_energy_j) = phases(&energy, energy_j)?;
    let optional = |field: &str, v: Option<f64>| v.map(|v| finite_nonneg(field, v)).transpose();
    let session_id = (!r.session_id.is_empty()).then(|| uuid("session_id", &r.session_id)).transpose()?;
    Ok(ValidResult {
        run_id,
        shard_id,
        query_id: r.query_id,
        repetition,
        started_at,
        latency_s,
        ttft_s,
        mean_itl_s,
        tokens_in: tokens("tokens_in", r.tokens_in)?,
        tokens_out: tokens("tokens_out", r.tokens_out)?,
        response: storable(&r.response),
        finish_reason: short("finish_reason", &r.finish_reason)?,
        error: (!r.error.is_empty()).then(|| short("error", &r.error)).transpose()?,
        energy_j,
        dynamic_energy_j,
        power_source,
        power_scope: short("energy.scope", &energy.scope)?,
        sample_hz: finite_nonneg("energy.sample_hz", energy.sample_hz)?,
        energy_attribution,
        energy_null_reason: energy_j.is_none().then(|| short("energy.null_reason", &energy.null_reason)).transpose()?,
        prefill_energy_j,
        decode_energy_j,
        itl_p50_s: optional("itl_p50_s", r.itl_p50_s)?,
        itl_p95_s: optional("itl_p95_s", r.itl_p95_s)?,
        tpot_s: optional("tpot_s", r.tpot_s)?,
        session_id,
        in_steady_window: r.in_steady_window,
        start_delay_s: optional("start_delay_s", r.start_delay_s)?,
        rate_limited: i32::try_from(r.rate_limited).map_err(|_| "rate_limited out of range".to_owned())?,
    })
}

/// The energy's prefill and decode parts (kept only beside a measured energy), which must be
/// finite, >= 0 and sum to it.
fn phases(energy: &ipw_proto::v1::Energy, energy_j: Option<f64>) -> Result<(Option<f64>, Option<f64>), Invalid> {
    let part = |field: &str, v: Option<f64>| match v {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            Err(Invalid(format!("{field} must be a finite number >= 0, got {v}")))
        }
        v => Ok(v.filter(|_| energy_j.is_some())),
    };
    let prefill = part("energy.prefill_energy_j", energy.prefill_energy_j)?;
    let decode = part("energy.decode_energy_j", energy.decode_energy_j)?;
    if let (Some(e), Some(p), Some(d)) = (energy_j, prefill, decode)
        && (p + d - e).abs() > 1e-6 * e.max(1.0)
    {
        return Err(Invalid(format!("prefill ({p} J) and decode ({d} J) energy do not sum to energy_j ({e} J)")));
    }
    Ok((prefill, decode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::Energy;

    fn ok_result() -> QueryResult {
        QueryResult {
            shard_id: Uuid::new_v4().to_string(),
            run_id: Uuid::new_v4().to_string(),
            query_id: 7,
            repetition: 0,
            started_unix_us: 1_700_000_000_000_000,
            latency_s: 2.0,
            ttft_s: Some(0.1),
            mean_itl_s: Some(0.01),
            tokens_in: 100,
            tokens_out: 50,
            response: "The answer is (A)".into(),
            finish_reason: "stop".into(),
            error: String::new(),
            energy: Some(Energy { source: "none".into(), null_reason: "no power source".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_result_passes() {
        let v = validate(&ok_result()).unwrap();
        assert_eq!(v.energy_j, None);
        assert_eq!(v.energy_null_reason.as_deref(), Some("no power source"));
        assert_eq!(v.energy_attribution, Attribution::TimeShare);
        assert_eq!(v.error, None);
    }

    #[test]
    fn nul_characters_become_replacement_characters() {
        let mut r = ok_result();
        r.response = "a\0b".into();
        r.error = "e\0".into();
        let v = validate(&r).unwrap();
        assert_eq!((v.response.as_str(), v.error.as_deref()), ("a\u{FFFD}b", Some("e\u{FFFD}")));
    }

    #[test]
    fn several_sources_are_joined_with_plus() {
        let mut r = ok_result();
        r.energy = Some(Energy { energy_j: Some(3.0), source: "nvml-counter+rapl".into(), ..Default::default() });
        assert_eq!(validate(&r).unwrap().power_source, "nvml-counter+rapl");
        r.energy.as_mut().unwrap().source = "rapl+guess".into();
        assert!(validate(&r).unwrap_err().0.contains("unknown power source"));
    }

    #[test]
    fn malformed_results_are_refused_by_field() {
        type Mutation = Box<dyn Fn(&mut QueryResult)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.run_id = "x".into()), "run_id"),
            (Box::new(|r| r.latency_s = f64::NAN), "latency_s"),
            (Box::new(|r| r.ttft_s = Some(3.0)), "exceeds latency_s"),
            (Box::new(|r| r.energy = None), "no null_reason"),
            (Box::new(|r| r.energy.as_mut().unwrap().energy_j = Some(1.0)), "power source is \"none\""),
            (Box::new(|r| r.energy.as_mut().unwrap().source = "guess".into()), "unknown power source"),
            (Box::new(|r| r.response = "x".repeat(MAX_RESPONSE_BYTES + 1)), "response"),
            (Box::new(|r| r.repetition = u32::MAX), "repetition"),
        ];
        for (mutate, want) in cases {
            let mut r = ok_result();
            mutate(&mut r);
            let e = validate(&r).unwrap_err().0;
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
