-- Admin credentials are named and revocable, stored as hashes like the others; the one the
-- coordinator generates (or is given) at start is named `initial`. Every admin action is
-- recorded with the credential's name, the time and the peer address.
CREATE TABLE admin_credentials (
    id             uuid PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    token_hash     bytea NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The credential that created it (NULL for `initial`).
    created_by     text,
    revoked_at     timestamptz,
    revoked_reason text
);

CREATE TABLE admin_audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    credential text NOT NULL,
    -- The method called, e.g. RevokeAgent.
    action     text NOT NULL,
    -- What it acted on: an agent, token, run or sweep id, a workload or credential name.
    target     text NOT NULL DEFAULT '',
    peer       text
);
CREATE INDEX admin_audit_at ON admin_audit (at);
