-- What each agent ran each run with: agent build, engine, model file, drivers, OS, CPU and
-- power settings. One row per (run, agent); the first report is kept.

CREATE TABLE run_provenance (
    run_id             uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    agent_id           uuid NOT NULL REFERENCES agents (id),
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    agent_version      text NOT NULL,
    agent_git_revision text NOT NULL,
    engine_name        text NOT NULL,
    engine_version     text NOT NULL,
    engine_model       text NOT NULL,
    model_sha256       text CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
    model_digest       text,
    quantization       text,
    driver_version     text,
    cuda_version       text,
    rocm_version       text,
    os                 text NOT NULL,
    kernel             text NOT NULL,
    cpu_model          text NOT NULL,
    power_limit_w      double precision CHECK (power_limit_w > 0),
    details            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, agent_id)
);

-- Provenance next to what a paper groups by: the run's model, workload, date and the
-- agent's hardware class.
CREATE VIEW run_provenance_by_run AS
SELECT p.*, r.created_at AS run_created_at, m.name AS model, w.name AS workload, a.name AS agent_name,
       a.hardware_class
FROM run_provenance p
JOIN runs r ON r.id = p.run_id
JOIN models m ON m.id = r.model_id
JOIN workloads w ON w.id = r.workload_id
JOIN agents a ON a.id = p.agent_id;
