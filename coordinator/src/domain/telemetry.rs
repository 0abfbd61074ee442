//! A shard's power telemetry, checked on its own before anything is stored.

use super::Invalid;
use ipw_proto::kinds::{Attribution, PowerKind};
use ipw_proto::v1::ShardTelemetry;

/// Most power sources one shard's telemetry may name.
pub const MAX_TELEMETRY_SOURCES: usize = 64;

/// Checks a telemetry upload on its own; the error names what is wrong.
pub fn validate(t: &ShardTelemetry) -> Result<(), Invalid> {
    let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if t.sources.len() > MAX_TELEMETRY_SOURCES {
        return Err(Invalid(format!("{} sources; at most {MAX_TELEMETRY_SOURCES}", t.sources.len())));
    }
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
    for s in &t.sources {
        if s.kind.parse::<PowerKind>().is_err() {
            return Err(Invalid(format!("unknown power source \"{}\"", s.kind)));
        }
        serde_json::from_str::<serde_json::Value>(if s.details_json.is_empty() { "null" } else { &s.details_json })
            .map_err(|e| Invalid(format!("details of {} are not JSON: {e}", s.name)))?;
    }
    for c in &t.chunks {
        if c.source_index as usize >= t.sources.len() {
            return Err(Invalid(format!(
                "chunk {} names source {} of {}",
                c.chunk_index,
                c.source_index,
                t.sources.len()
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
