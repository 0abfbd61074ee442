-- Queries the engine failed (a refused connection, a 5xx, the process gone): not answers,
-- so not results. They go back to the queue; each failure is counted here, and past a limit
-- the query is recorded as a result with an error so that its run can finish.
CREATE TABLE engine_failures (
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    query_id    bigint NOT NULL REFERENCES queries (id),
    repetition  integer NOT NULL CHECK (repetition >= 0),
    failures    integer NOT NULL CHECK (failures > 0),
    last_error  text NOT NULL,
    last_agent  uuid NOT NULL REFERENCES agents (id),
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, query_id, repetition)
);

-- A lease given back on purpose (the engine failed, the agent is stopping) did not run out:
-- only leases that ran out count toward failing a shard.
ALTER TABLE lease_attempts ADD COLUMN released_at timestamptz;
