-- Each agent's latest state, from its heartbeats, for the dashboard's fleet page: one row per
-- agent, replaced by every heartbeat that carries a state (agents that predate it have none).

CREATE TABLE agent_live (
    agent_id        uuid PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    -- When the heartbeat arrived (the coordinator's clock). The page calls the agent stale
    -- after three heartbeat intervals without one.
    reported_at     timestamptz NOT NULL,
    heartbeat_s     double precision NOT NULL CHECK (heartbeat_s > 0),
    in_flight       integer NOT NULL CHECK (in_flight >= 0),
    -- The agent's counter of queries finished since it started, and the rate derived from the
    -- previous heartbeat's; NULL on the first heartbeat and after the counter went back (the
    -- agent restarted).
    queries_done    bigint NOT NULL CHECK (queries_done >= 0),
    queries_per_s   double precision CHECK (queries_per_s >= 0),
    -- [{kind, scope, name, watts}], watts null when the agent does not know it; [] for an
    -- agent that reads no power.
    power           jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(power) = 'array'),
    -- The sampler's rate; NULL without one.
    sample_hz       double precision CHECK (sample_hz > 0)
);
