//! `run_provenance`: what a run was measured with, once per (run, agent).

use super::Result;
use ipw_proto::v1::Provenance;
use sqlx::PgPool;
use uuid::Uuid;

/// Stores an agent's provenance for a run; the first record is kept. `p` must have passed
/// `domain::telemetry::validate_provenance`, which gave `details`.
pub async fn insert(
    pool: &PgPool,
    run_id: Uuid,
    agent_id: Uuid,
    p: &Provenance,
    details: serde_json::Value,
) -> Result<()> {
    let blank = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let sha = p.model_sha256.trim().to_lowercase();
    sqlx::query!(
        "INSERT INTO run_provenance (run_id, agent_id, agent_version, agent_git_revision, engine_name,
             engine_version, engine_model, model_sha256, model_digest, quantization, driver_version, cuda_version,
             rocm_version, os, kernel, cpu_model, power_limit_w, details, engine_remote)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (run_id, agent_id) DO NOTHING",
        run_id,
        agent_id,
        p.agent_version,
        p.agent_git_revision,
        p.engine_name,
        p.engine_version,
        p.engine_model,
        blank(&sha),
        blank(&p.model_digest),
        blank(&p.quantization),
        blank(&p.driver_version),
        blank(&p.cuda_version),
        blank(&p.rocm_version),
        p.os,
        p.kernel,
        p.cpu_model,
        p.power_limit_w,
        details,
        p.engine_remote,
    )
    .execute(pool)
    .await?;
    Ok(())
}
