//! Power telemetry (a shard's, from older agents; a session's), checked on its own before
//! anything is stored.

use super::Invalid;
use ipw_proto::kinds::{Attribution, IpwScope, PowerKind, PowerScope};
use ipw_proto::v1::{LoadSummary, PowerGap, PowerSourceInfo, SeriesChunk, SessionTelemetry, ShardTelemetry};
use uuid::Uuid;

/// Most power sources one shard's telemetry may name.
pub const MAX_TELEMETRY_SOURCES: usize = 64;

/// Checks a telemetry upload on its own; the error names what is wrong.
pub fn validate(t: &ShardTelemetry) -> Result<(), Invalid> {
    let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if !(t.sample_hz.is_finite() && t.sample_hz > 0.0) {
        return Err(Invalid(format!("sample_hz must be > 0, got {}", t.sample_hz)));
    }
    if !finite_nonneg(t.idle_seconds) || t.idle_power_w.is_some_and(|p| !finite_nonneg(p)) {
        return Err("idle_seconds and idle_power_w must be finite and >= 0".into());
    }
    if t.active_energy_j.is_some_and(|e| !finite_nonneg(e)) {
        return Err("active_energy_j must be finite and >= 0".into());
    }
    if t.attribution.parse::<Attribution>().is_err() {
        return Err(Invalid(format!("unknown attribution \"{}\"", t.attribution)));
    }
    check_series(&t.sources, &t.chunks)
}

/// Text the database will store as it is: no NUL, at most the short-text limit.
pub(crate) fn short_text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.contains('\0') {
        return Err(Invalid(format!("{field} holds a NUL character")));
    }
    if value.len() > super::results::MAX_SHORT_TEXT_BYTES {
        return Err(Invalid(format!("{field} is longer than {} bytes", super::results::MAX_SHORT_TEXT_BYTES)));
    }
    Ok(())
}

/// Checks the sources and the series chunks that index them.
fn check_series(sources: &[PowerSourceInfo], chunks: &[SeriesChunk]) -> Result<(), Invalid> {
    if sources.len() > MAX_TELEMETRY_SOURCES {
        return Err(Invalid(format!("{} sources; at most {MAX_TELEMETRY_SOURCES}", sources.len())));
    }
    for s in sources {
        for (field, value) in [("kind", &s.kind), ("scope", &s.scope), ("name", &s.name)] {
            short_text(&format!("source {field}"), value)?;
        }
        // jsonb refuses a NUL even escaped: said here, not as a database error later.
        if s.details_json.contains('\0') || s.details_json.contains("\\u0000") {
            return Err(Invalid(format!("details of source \"{}\" hold a NUL character", s.name)));
        }
        if s.kind.parse::<PowerKind>().is_err() {
            return Err(Invalid(format!("unknown power source \"{}\"", s.kind)));
        }
        if let Err(e) = s.scope.parse::<PowerScope>() {
            return Err(Invalid(format!("source \"{}\": {e}", s.name)));
        }
        if !(s.stated_error.is_finite() && (0.0..1.0).contains(&s.stated_error)) {
            return Err(Invalid(format!(
                "source \"{}\": stated_error {} is not a fraction in [0, 1)",
                s.name, s.stated_error
            )));
        }
        serde_json::from_str::<serde_json::Value>(if s.details_json.is_empty() { "null" } else { &s.details_json })
            .map_err(|e| Invalid(format!("details of {} are not JSON: {e}", s.name)))?;
    }
    for c in chunks {
        if c.source_index as usize >= sources.len() {
            return Err(Invalid(format!(
                "chunk {} names source {} of {}",
                c.chunk_index,
                c.source_index,
                sources.len()
            )));
        }
        if c.t_s.len() != c.energy_j.len() {
            return Err(Invalid(format!(
                "chunk {} has {} times but {} energies",
                c.chunk_index,
                c.t_s.len(),
                c.energy_j.len()
            )));
        }
        if !c.t_s.iter().chain(&c.energy_j).all(|v| v.is_finite()) {
            return Err(Invalid(format!("chunk {} holds a non-finite value", c.chunk_index)));
        }
    }
    Ok(())
}

/// Checks the gaps: each names a source, spans forward, and says why.
fn check_gaps(sources: &[PowerSourceInfo], gaps: &[PowerGap]) -> Result<(), Invalid> {
    for g in gaps {
        if g.source_index as usize >= sources.len() {
            return Err(Invalid(format!("a gap names source {} of {}", g.source_index, sources.len())));
        }
        if !(g.from_s.is_finite() && g.to_s.is_finite() && g.to_s >= g.from_s) {
            return Err(Invalid(format!("a gap from {} s to {} s does not span forward", g.from_s, g.to_s)));
        }
        if g.reason.trim().is_empty() {
            return Err(Invalid(format!("the gap at {} s does not say why", g.from_s)));
        }
        short_text("gap reason", &g.reason)?;
    }
    Ok(())
}

/// A session's telemetry, checked: its ids, and the load summary in database types.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSession {
    /// The session.
    pub session_id: Uuid,
    /// Its run.
    pub run_id: Uuid,
    /// Wall-clock time of the sampler clock's zero, when there is a sampler.
    pub clock_zero: Option<chrono::DateTime<chrono::Utc>>,
    /// The load summary (all figures finite, durations >= 0).
    pub load: LoadSummary,
    /// Which sources its IPW energy sums.
    pub ipw_scope: IpwScope,
}

/// Checks a session's telemetry on its own; the error names what is wrong.
pub fn validate_session(t: &SessionTelemetry) -> Result<ValidSession, Invalid> {
    let uuid = |field: &str, s: &str| Uuid::parse_str(s).map_err(|_| Invalid(format!("{field} \"{s}\" is not a UUID")));
    let (session_id, run_id) = (uuid("session_id", &t.session_id)?, uuid("run_id", &t.run_id)?);
    if t.attribution.parse::<Attribution>().is_err() {
        return Err(Invalid(format!("unknown attribution \"{}\"", t.attribution)));
    }
    check_series(&t.sources, &t.chunks)?;
    check_gaps(&t.sources, &t.gaps)?;
    let ipw_scope = match t.ipw_scope.as_str() {
        // Agents from before --ipw-scope summed every chip-level source.
        "" => IpwScope::Chips,
        s => s.parse::<IpwScope>().map_err(|e| Invalid(e.to_string()))?,
    };
    if !(t.sources.is_empty() || t.sample_hz.is_finite() && t.sample_hz > 0.0) {
        return Err(Invalid(format!("sample_hz must be > 0, got {}", t.sample_hz)));
    }
    if t.sources.is_empty() && t.null_reason.trim().is_empty() {
        return Err("a session without power sources must say why (null_reason)".into());
    }
    short_text("null_reason", &t.null_reason)?;
    if let Some(i) = t.idle.iter().find(|i| !(i.from_s.is_finite() && i.seconds > 0.0 && i.power_w >= 0.0)) {
        return Err(Invalid(format!("idle baseline at {} s: seconds must be > 0 and power >= 0", i.from_s)));
    }
    let load = t.load.clone().ok_or_else(|| Invalid::new("the load summary is missing"))?;
    if !matches!(load.pattern.as_str(), "closed" | "poisson" | "constant") {
        return Err(Invalid(format!("unknown load pattern \"{}\"", load.pattern)));
    }
    let nonneg = [load.paused_s, load.query_time_s, load.covered_time_s, load.steady_load_mean.unwrap_or(0.0)];
    if !(load.target.is_finite() && load.target > 0.0) || nonneg.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err("the load summary's target must be > 0 and its durations and load finite and >= 0".into());
    }
    if let (Some(a), Some(b)) = (load.steady_from_s, load.steady_to_s)
        && !(a.is_finite() && b.is_finite() && b >= a)
    {
        return Err(Invalid(format!("the steady window {a}..{b} ends before it starts")));
    }
    if load.covered_time_s > load.query_time_s * (1.0 + 1e-9) + 1e-9 {
        return Err("covered time exceeds query time".into());
    }
    let clock_zero =
        (!t.sources.is_empty()).then(|| chrono::DateTime::from_timestamp_micros(t.clock_zero_unix_us)).flatten();
    Ok(ValidSession { session_id, run_id, clock_zero, load, ipw_scope })
}

/// A provenance record, checked on its own: text lengths, the model hash, the power limit
/// and the details. Returns the details as JSON.
pub fn validate_provenance(p: &ipw_proto::v1::Provenance) -> Result<serde_json::Value, Invalid> {
    let texts = [
        &p.agent_version,
        &p.agent_git_revision,
        &p.engine_name,
        &p.engine_version,
        &p.engine_model,
        &p.model_digest,
        &p.quantization,
        &p.driver_version,
        &p.cuda_version,
        &p.rocm_version,
        &p.os,
        &p.kernel,
        &p.cpu_model,
    ];
    if texts.iter().any(|t| t.len() > super::results::MAX_SHORT_TEXT_BYTES) || p.details_json.len() > 1 << 16 {
        return Err("a provenance field is too long".into());
    }
    let sha = p.model_sha256.trim().to_lowercase();
    let is_sha256 = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if !sha.is_empty() && !is_sha256 {
        return Err("model_sha256 must be 64 hex digits".into());
    }
    if p.power_limit_w.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
        return Err("power_limit_w must be a positive number".into());
    }
    if p.details_json.is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(&p.details_json).map_err(|e| Invalid(format!("details_json is not JSON: {e}")))
}

/// One agent's power over a run: its session's samples per source, the queries' windows and the
/// steady window, all in seconds on the session's sampler clock. For the run page's figure.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerOverTime {
    /// The session.
    pub session_id: Uuid,
    /// The agent's name.
    pub agent: String,
    /// The wall-clock origin of the session's sampler clock.
    pub clock_zero: Option<chrono::DateTime<chrono::Utc>>,
    /// Per source: its name and scope, and (t_s, cumulative joules) in time order.
    pub sources: Vec<(String, Vec<(f64, f64)>)>,
    /// Each query's (start, end).
    pub queries: Vec<(f64, f64)>,
    /// The steady-state window, if the session reached one.
    pub steady: Option<(f64, f64)>,
    /// Why there is no series, when there are no sources.
    pub null_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_stated_errors_and_gaps_are_checked() {
        let source = |scope: &str, stated_error: f64| PowerSourceInfo {
            kind: "shelly".into(),
            scope: scope.into(),
            name: "plug".into(),
            stated_error,
            ..Default::default()
        };
        assert!(check_series(&[source("wall", 0.01)], &[]).is_ok());
        assert!(check_series(&[source("plug", 0.01)], &[]).unwrap_err().0.contains("unknown power scope \"plug\""));
        assert!(check_series(&[source("wall", 1.5)], &[]).unwrap_err().0.contains("stated_error 1.5"));
        let gap =
            |source_index, from_s, to_s, reason: &str| PowerGap { source_index, from_s, to_s, reason: reason.into() };
        let one = [source("wall", 0.01)];
        assert!(check_gaps(&one, &[gap(0, 1.0, 2.0, "no answer")]).is_ok());
        assert!(check_gaps(&one, &[gap(1, 1.0, 2.0, "no answer")]).unwrap_err().0.contains("source 1 of 1"));
        assert!(check_gaps(&one, &[gap(0, 2.0, 1.0, "no answer")]).unwrap_err().0.contains("does not span forward"));
        assert!(check_gaps(&one, &[gap(0, 1.0, 2.0, " ")]).unwrap_err().0.contains("does not say why"));
    }

    /// A NUL in a source's name used to reach jsonb, fail there, and come back as
    /// `unavailable`, which agents retry for an hour. It is now refused as bad input.
    #[test]
    fn text_the_database_would_refuse_is_refused_first() {
        let source = |name: &str, details: &str| PowerSourceInfo {
            kind: "rapl".into(),
            scope: "cpu-package".into(),
            name: name.into(),
            details_json: details.into(),
            ..Default::default()
        };
        assert!(check_series(&[source("package-0", "{}")], &[]).is_ok());
        let e = check_series(&[source("pkg\0", "{}")], &[]).unwrap_err();
        assert!(e.0.contains("source name holds a NUL"), "{}", e.0);
        let e = check_series(&[source("pkg", r#"{"a": "\u0000"}"#)], &[]).unwrap_err();
        assert!(e.0.contains("NUL"), "{}", e.0);
        let e = check_series(&[source(&"x".repeat(5000), "{}")], &[]).unwrap_err();
        assert!(e.0.contains("longer than 4096 bytes"), "{}", e.0);
    }
}
