-- Sweeps: a definition (models x hardware classes x a seeded workload sample, engine
-- settings, optionally a cron schedule) and its instances, each expanded into one run per
-- (model, hardware class).

CREATE TABLE sweep_definitions (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    workload_id        uuid NOT NULL REFERENCES workloads (id),
    sample_size        integer NOT NULL CHECK (sample_size > 0),
    seed               bigint NOT NULL,
    -- Sample each category in proportion to its share of the workload.
    stratify           boolean NOT NULL DEFAULT false,
    models             text[] NOT NULL CHECK (cardinality(models) > 0),
    -- Agents must carry all these labels...
    label_selector     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(label_selector) = 'object'),
    -- ...and, when set, a hardware class containing this text (e.g. "H100").
    accelerator        text,
    concurrency        integer NOT NULL CHECK (concurrency BETWEEN 1 AND 1024),
    shard_size         integer NOT NULL CHECK (shard_size > 0),
    max_tokens         integer NOT NULL CHECK (max_tokens > 0),
    temperature        real NOT NULL CHECK (temperature >= 0),
    top_p              real NOT NULL CHECK (top_p > 0 AND top_p <= 1),
    repetitions        integer NOT NULL CHECK (repetitions BETWEEN 1 AND 100),
    warmup             integer NOT NULL DEFAULT 0 CHECK (warmup >= 0),
    -- Memory a model needs; agents with less (GPU memory, else RAM) are not given it.
    model_memory_bytes bigint CHECK (model_memory_bytes > 0),
    cron               text,
    timezone           text,
    missed_policy      text NOT NULL DEFAULT 'skip' CHECK (missed_policy IN ('skip', 'catch-up-once')),
    next_fire_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) = (next_fire_at IS NULL)),
    CHECK ((cron IS NULL) = (timezone IS NULL))
);

CREATE TABLE sweeps (
    id            uuid PRIMARY KEY,
    definition_id uuid NOT NULL REFERENCES sweep_definitions (id) ON DELETE CASCADE,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'cancelled')),
    -- The firing this instance is for; NULL for one created by hand.
    scheduled_for timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- A firing creates its instance once, whatever the number of coordinators.
    UNIQUE (definition_id, scheduled_for)
);

ALTER TABLE runs ADD COLUMN sweep_id uuid REFERENCES sweeps (id) ON DELETE CASCADE;
-- Only agents of this class may lease the run's shards; NULL for any class.
ALTER TABLE runs ADD COLUMN hardware_class text;
-- Only agents carrying these labels may lease the run's shards.
ALTER TABLE runs ADD COLUMN label_selector jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(label_selector) = 'object');
ALTER TABLE runs ADD COLUMN warmup integer NOT NULL DEFAULT 0 CHECK (warmup >= 0);
ALTER TABLE runs ADD COLUMN model_memory_bytes bigint CHECK (model_memory_bytes > 0);
CREATE INDEX runs_sweep_idx ON runs (sweep_id);
