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

