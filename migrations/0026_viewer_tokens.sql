-- The dashboard's logins. Viewer tokens are read-only credentials for the web dashboard,
-- stored hashed like the others, expiring and revocable. They have a table of their own so
-- that a viewer token can never join (`Join` reads join_tokens only) and a join token can
-- never log in (the dashboard reads viewer_tokens and admin_credentials only).
CREATE TABLE viewer_tokens (
    id             uuid PRIMARY KEY,
    -- sha256 of the token; the token itself is shown once and never stored.
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    description    text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The admin credential that created it.
    created_by     text,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text,
    CHECK (expires_at > created_at)
);

-- The key that signs the dashboard's session cookies and CSRF tokens. One row, made by the
-- first coordinator that needs it and read by every replica, so a session made by one
-- replica is good on the others.
CREATE TABLE dashboard_keys (
    id         smallint PRIMARY KEY CHECK (id = 1),
    key        bytea NOT NULL CHECK (length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
