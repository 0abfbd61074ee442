-- Telemetry belongs to one lease attempt: an agent that gives a shard back (its engine failed,
-- it was stopping) and leases it again records each attempt's idle baseline and series.
ALTER TABLE power_series DROP CONSTRAINT power_series_shard_id_agent_id_fkey;
ALTER TABLE shard_telemetry ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt > 0);
ALTER TABLE shard_telemetry DROP CONSTRAINT shard_telemetry_pkey;
ALTER TABLE shard_telemetry ADD PRIMARY KEY (shard_id, agent_id, attempt);
ALTER TABLE power_series ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE power_series DROP CONSTRAINT power_series_pkey;
ALTER TABLE power_series ADD PRIMARY KEY (shard_id, agent_id, attempt, source_index, chunk_index);
ALTER TABLE power_series ADD FOREIGN KEY (shard_id, agent_id, attempt)
    REFERENCES shard_telemetry (shard_id, agent_id, attempt) ON DELETE CASCADE;
