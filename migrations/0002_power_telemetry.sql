-- Power telemetry: per-shard idle baselines and raw power series (the audit trail), and
-- results measured by several sources at once ("nvml-counter+rapl").

ALTER TABLE results DROP CONSTRAINT results_power_source_check;
ALTER TABLE results ADD CONSTRAINT results_power_source_check CHECK (
    power_source ~ '^(nvml-counter|nvml-power|rapl|amd-hwmon|apple-ioreport|powermetrics)(\+(nvml-counter|nvml-power|rapl|amd-hwmon|apple-ioreport|powermetrics))*$'
    OR power_source = 'none');

-- What an agent measured around one shard: its idle power just before, and how.
CREATE TABLE shard_telemetry (
    shard_id        uuid NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL REFERENCES agents (id),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    idle_power_w    double precision CHECK (idle_power_w >= 0),
    idle_seconds    double precision NOT NULL CHECK (idle_seconds >= 0),
    sample_hz       double precision NOT NULL CHECK (sample_hz > 0),
    attribution     text NOT NULL CHECK (attribution IN ('time-share', 'token-share')),
    -- [{kind, scope, name, details}], in the order of power_series.source_index.
    sources         jsonb NOT NULL CHECK (jsonb_typeof(sources) = 'array'),
    clock_zero      timestamptz NOT NULL,
    active_energy_j double precision CHECK (active_energy_j >= 0),
    PRIMARY KEY (shard_id, agent_id)
);

-- The raw series: cumulative joules per source at monotonic seconds, in chunks of arrays.
CREATE TABLE power_series (
    shard_id     uuid NOT NULL,
    agent_id     uuid NOT NULL,
    source_index integer NOT NULL CHECK (source_index >= 0),
    chunk_index  integer NOT NULL CHECK (chunk_index >= 0),
    t_s          double precision[] NOT NULL,
    energy_j     double precision[] NOT NULL,
    PRIMARY KEY (shard_id, agent_id, source_index, chunk_index),
    FOREIGN KEY (shard_id, agent_id) REFERENCES shard_telemetry (shard_id, agent_id) ON DELETE CASCADE,
    CHECK (cardinality(t_s) = cardinality(energy_j))
);

-- Both raw and dynamic (minus idle) figures, appended to the views.
CREATE OR REPLACE VIEW query_results AS
SELECT r.id AS result_id,
       r.run_id,
       m.name AS model,
       w.name AS workload,
       q.external_id AS query_external_id,
       q.category,
       r.repetition,
       a.id AS agent_id,
       a.name AS agent_name,
       a.hardware_class,
       r.started_at,
       r.latency_s,
       r.ttft_s,
       r.mean_itl_s,
       r.tokens_in,
       r.tokens_out,
       r.error,
       s.scorer,
       s.extracted,
       s.correct,
       r.energy_j,
       r.dynamic_energy_j,
       CASE WHEN r.energy_j IS NOT NULL AND r.latency_s > 0 THEN r.energy_j / r.latency_s END AS power_w,
       r.power_source,
       r.power_scope,
       r.sample_hz,
       r.energy_attribution,
       r.energy_null_reason,
       CASE WHEN r.dynamic_energy_j IS NOT NULL AND r.latency_s > 0 THEN r.dynamic_energy_j / r.latency_s END
           AS dynamic_power_w
FROM results r
JOIN runs ru ON ru.id = r.run_id
JOIN models m ON m.id = ru.model_id
JOIN workloads w ON w.id = ru.workload_id
JOIN queries q ON q.id = r.query_id
JOIN agents a ON a.id = r.agent_id
LEFT JOIN scores s ON s.result_id = r.id AND s.scorer = q.scorer;

CREATE OR REPLACE VIEW ipw_summary AS
SELECT run_id,
       model,
       workload,
       hardware_class,
       count(*) AS queries,
       count(*) FILTER (WHERE error IS NOT NULL) AS errors,
       count(correct) AS scored,
       avg(CASE WHEN error IS NOT NULL THEN 0.0 WHEN correct THEN 1.0 WHEN correct IS NOT NULL THEN 0.0 END) AS accuracy,
       avg(latency_s) FILTER (WHERE error IS NULL) AS latency_mean_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) FILTER (WHERE error IS NULL) AS latency_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) FILTER (WHERE error IS NULL) AS latency_p95_s,
       avg(ttft_s) AS ttft_mean_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_s) AS ttft_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_s) AS ttft_p95_s,
       avg(tokens_out / latency_s) FILTER (WHERE error IS NULL AND latency_s > 0) AS output_tokens_per_s,
       sum(tokens_out) AS tokens_out,
       avg(energy_j) AS energy_per_query_j,
       avg(power_w) AS mean_power_w,
       avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE power_w IS NOT NULL)
           / NULLIF(avg(power_w), 0) AS ipw,
       avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE energy_j IS NOT NULL)
           / NULLIF(avg(energy_j), 0) AS ipj,
       string_agg(DISTINCT power_source, ', ') AS power_sources,
       string_agg(DISTINCT energy_null_reason, '; ') AS energy_null_reasons,
       avg(dynamic_energy_j) AS dynamic_energy_per_query_j,
       avg(dynamic_power_w) AS mean_dynamic_power_w,
       string_agg(DISTINCT power_scope, ', ') FILTER (WHERE power_scope <> '') AS power_scopes
FROM query_results
GROUP BY run_id, model, workload, hardware_class;
