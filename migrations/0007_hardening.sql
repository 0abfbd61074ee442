-- Faults and security (issue 6): duplicate measurements, credential rotation and
-- revocation, and per-agent client certificates.

-- A query measured twice (a lease that expired while its agent still ran it, then re-leased):
-- `results` keeps the first committed measurement; every later one is counted here. A re-sent
-- copy of the same measurement (same agent, same start) is a retry, not a duplicate attempt.
CREATE TABLE duplicate_attempts (
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    query_id    bigint NOT NULL,
    repetition  integer NOT NULL,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    shard_id    uuid NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    started_at  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, query_id, repetition, agent_id, started_at)
);

ALTER TABLE agents
    ADD COLUMN revoked_at            timestamptz,
    ADD COLUMN revoked_reason        text,
    ADD COLUMN credential_rotated_at timestamptz,
    -- sha256 of the DER client certificate issued at join or rotation (mTLS).
    ADD COLUMN client_cert_sha256    bytea CHECK (client_cert_sha256 IS NULL OR length(client_cert_sha256) = 32),
    ADD CONSTRAINT agents_revoked_has_time CHECK (status <> 'revoked' OR revoked_at IS NOT NULL);

ALTER TABLE join_tokens ADD COLUMN revoked_reason text;
