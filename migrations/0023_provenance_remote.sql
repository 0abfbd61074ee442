-- `run_provenance_by_run` was created with `p.*` as it stood, so it lacks `engine_remote`
-- (0018): the column is appended here.
CREATE OR REPLACE VIEW run_provenance_by_run AS
SELECT p.run_id, p.agent_id, p.recorded_at, p.agent_version, p.agent_git_revision, p.engine_name, p.engine_version,
       p.engine_model, p.model_sha256, p.model_digest, p.quantization, p.driver_version, p.cuda_version,
       p.rocm_version, p.os, p.kernel, p.cpu_model, p.power_limit_w, p.details,
       r.created_at AS run_created_at, m.name AS model, w.name AS workload, a.name AS agent_name, a.hardware_class,
       p.engine_remote
FROM run_provenance p
JOIN runs r ON r.id = p.run_id
JOIN models m ON m.id = r.model_id
JOIN workloads w ON w.id = r.workload_id
JOIN agents a ON a.id = p.agent_id;
