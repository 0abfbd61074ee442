-- The fleet's core schema: enrollment, workloads, runs, shards and results.
-- Applied by ipw-coordinator at start (sqlx embedded migrator).

-- ------------------------------------------------------------------ enrollment

CREATE TABLE join_tokens (
    id           uuid PRIMARY KEY,
    -- sha256 of the token; the token itself is shown once and never stored.
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    max_uses     integer NOT NULL CHECK (max_uses > 0),
    uses         integer NOT NULL DEFAULT 0,
    auto_approve boolean NOT NULL DEFAULT false,
    revoked_at   timestamptz,
    CHECK (uses >= 0 AND uses <= max_uses),
    CHECK (expires_at > created_at)
);

CREATE TABLE agents (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status          text NOT NULL CHECK (status IN ('pending', 'approved', 'revoked')),
    -- sha256 of the per-agent secret.
    credential_hash bytea NOT NULL UNIQUE CHECK (length(credential_hash) = 32),
    join_token_id   uuid NOT NULL REFERENCES join_tokens (id),
    labels          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    -- Canonical accelerator description; agents of one class are interchangeable.
    hardware_class  text NOT NULL,
    hostname        text NOT NULL DEFAULT '',
    os              text NOT NULL DEFAULT '',
    kernel          text NOT NULL DEFAULT '',
    cpu_model       text NOT NULL DEFAULT '',
    cpu_cores       integer NOT NULL DEFAULT 0 CHECK (cpu_cores >= 0),
    memory_bytes    bigint NOT NULL DEFAULT 0 CHECK (memory_bytes >= 0),
    agent_version   text NOT NULL DEFAULT '',
    joined_at       timestamptz NOT NULL DEFAULT now(),
    approved_at     timestamptz,
    last_seen_at    timestamptz,
    CHECK (status <> 'approved' OR approved_at IS NOT NULL)
);

CREATE TABLE accelerators (
    agent_id       uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    idx            integer NOT NULL CHECK (idx >= 0),
    vendor         text NOT NULL,
    model          text NOT NULL,
    memory_bytes   bigint NOT NULL CHECK (memory_bytes >= 0),
    driver_version text NOT NULL DEFAULT '',
    device_uuid    text NOT NULL DEFAULT '',
    PRIMARY KEY (agent_id, idx)
);

-- ------------------------------------------------------------------ workloads

CREATE TABLE workloads (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    format      text NOT NULL CHECK (format IN ('mmlu-pro', 'generic')),
    source      text NOT NULL DEFAULT '',
    n_queries   integer NOT NULL CHECK (n_queries >= 0),
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE queries (
    id          bigserial PRIMARY KEY,
    workload_id uuid NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
    -- The id the workload file gave the query (MMLU-Pro question_id, or the generic `id`).
    external_id text NOT NULL,
    line_no     integer NOT NULL CHECK (line_no > 0),
    prompt      text NOT NULL CHECK (length(prompt) > 0),
    -- Multiple-choice options, in letter order (A, B, ...); NULL for open questions.
    choices     jsonb CHECK (choices IS NULL OR jsonb_typeof(choices) = 'array'),
    answer      text NOT NULL,
    category    text,
    scorer      text NOT NULL CHECK (scorer IN ('mcq', 'exact')),
    UNIQUE (workload_id, external_id),
    CHECK (scorer <> 'mcq' OR (choices IS NOT NULL AND answer ~ '^[A-Z]$'))
);

-- ------------------------------------------------------------------ runs and shards

CREATE TABLE models (
    id         uuid PRIMARY KEY,
    -- The name sent to the engine in `model`.
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id           uuid PRIMARY KEY,
    workload_id  uuid NOT NULL REFERENCES workloads (id),
    model_id     uuid NOT NULL REFERENCES models (id),
    sample_size  integer NOT NULL CHECK (sample_size > 0),
    seed         bigint NOT NULL,
    concurrency  integer NOT NULL CHECK (concurrency BETWEEN 1 AND 1024),
    shard_size   integer NOT NULL CHECK (shard_size > 0),
    repetitions  integer NOT NULL DEFAULT 1 CHECK (repetitions BETWEEN 1 AND 100),
    max_tokens   integer NOT NULL CHECK (max_tokens > 0),
    temperature  real NOT NULL CHECK (temperature >= 0),
    top_p        real NOT NULL CHECK (top_p > 0 AND top_p <= 1),
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    completed_at timestamptz
);

CREATE TABLE shards (
    id               uuid PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    shard_index      integer NOT NULL CHECK (shard_index >= 0),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'leased', 'completed', 'failed')),
    lease_owner      uuid REFERENCES agents (id),
    lease_expires_at timestamptz,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    completed_by     uuid REFERENCES agents (id),
    completed_at     timestamptz,
    UNIQUE (run_id, shard_index),
    CHECK (status <> 'leased' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (status <> 'completed' OR (completed_by IS NOT NULL AND completed_at IS NOT NULL))
);

-- The work queue's hot path: the next pending or expired shard of an active run.
CREATE INDEX shards_open_idx ON shards (run_id, shard_index) WHERE status IN ('pending', 'leased');

-- Every lease ever handed out: who measured what, and when.
CREATE TABLE lease_attempts (
    shard_id  uuid NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    attempt   integer NOT NULL CHECK (attempt > 0),
    agent_id  uuid NOT NULL REFERENCES agents (id),
    leased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shard_id, attempt)
);

-- The seeded sample of a run: which queries, in which order, in which shard.
CREATE TABLE run_queries (
    run_id   uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    query_id bigint NOT NULL REFERENCES queries (id),
    position integer NOT NULL CHECK (position >= 0),
    shard_id uuid NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, query_id),
    UNIQUE (run_id, position)
);
CREATE INDEX run_queries_shard_idx ON run_queries (shard_id);

-- ------------------------------------------------------------------ results

CREATE TABLE results (
    id               bigserial PRIMARY KEY,
    run_id           uuid NOT NULL,
    query_id         bigint NOT NULL,
    repetition       integer NOT NULL CHECK (repetition >= 0),
    shard_id         uuid NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    agent_id         uuid NOT NULL REFERENCES agents (id),
    started_at       timestamptz NOT NULL,
    latency_s        double precision NOT NULL CHECK (latency_s >= 0),
    ttft_s           double precision CHECK (ttft_s >= 0),
    mean_itl_s       double precision CHECK (mean_itl_s >= 0),
    tokens_in        integer NOT NULL CHECK (tokens_in >= 0),
    tokens_out       integer NOT NULL CHECK (tokens_out >= 0),
    response         text NOT NULL,
    finish_reason    text NOT NULL DEFAULT '',
    -- NULL on success.
    error            text,
    energy_j         double precision CHECK (energy_j >= 0),
    dynamic_energy_j double precision,
    power_source     text NOT NULL CHECK (power_source IN
                     ('nvml-counter', 'nvml-power', 'rapl', 'amd-hwmon', 'apple-ioreport', 'powermetrics', 'none')),
    power_scope      text NOT NULL DEFAULT '',
    sample_hz        double precision NOT NULL DEFAULT 0 CHECK (sample_hz >= 0),
    energy_attribution text NOT NULL DEFAULT 'time-share'
                     CHECK (energy_attribution IN ('time-share', 'token-share')),
    energy_null_reason text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- A retried upload or a re-leased shard never records a query twice.
    UNIQUE (run_id, query_id, repetition),
    -- Only queries sampled into the run can have results.
    FOREIGN KEY (run_id, query_id) REFERENCES run_queries (run_id, query_id) ON DELETE CASCADE,
    CHECK (ttft_s IS NULL OR ttft_s <= latency_s),
    -- Never an unexplained hole: missing energy always carries its reason.
    CHECK (energy_j IS NOT NULL OR energy_null_reason IS NOT NULL),
    CHECK (energy_j IS NULL OR power_source <> 'none')
);
CREATE INDEX results_shard_idx ON results (shard_id);

-- Server-side scores; a result may be scored by several scorers over time.
CREATE TABLE scores (
    result_id bigint NOT NULL REFERENCES results (id) ON DELETE CASCADE,
    scorer    text NOT NULL CHECK (scorer IN ('mcq', 'exact')),
    -- What the scorer read out of the response (the letter for mcq); NULL when nothing was found.
    extracted text,
    correct   boolean NOT NULL,
    scored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (result_id, scorer)
);
