-- Prices and cost. A remote endpoint bills tokens at the model's price; a local engine costs
-- the electricity it drew. Both sit side by side per query, and nothing is estimated: a cost
-- with no price, or no measured energy, is NULL with the reason.

-- What a model's tokens cost on an API, per million, over a validity window. Keyed by the
-- model's name as runs use it; a price may be set before any run of the model exists.
CREATE TABLE prices (
    id              bigserial PRIMARY KEY,
    model           text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    input_per_mtok  numeric NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok numeric NOT NULL CHECK (output_per_mtok >= 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from      timestamptz NOT NULL,
    -- NULL: still valid.
    valid_to        timestamptz,
    -- Where the figure came from (a pricing page and the day it was read).
    source          text NOT NULL CHECK (length(source) > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX prices_model_idx ON prices (model, valid_from);

-- The electricity a local engine draws, per kWh, over a validity window.
CREATE TABLE electricity_prices (
    id         bigserial PRIMARY KEY,
    per_kwh    numeric NOT NULL CHECK (per_kwh >= 0),
    currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    source     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

-- At most one price of a model (one electricity price) at any instant: overlapping windows
-- would make a query's cost depend on which row a join met first.
CREATE FUNCTION reject_overlapping_prices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('prices:' || NEW.model, 0));
    IF EXISTS (SELECT 1 FROM prices p
               WHERE p.model = NEW.model AND p.id <> NEW.id
                 AND tstzrange(p.valid_from, p.valid_to) && tstzrange(NEW.valid_from, NEW.valid_to)) THEN
        RAISE EXCEPTION 'a price of model % already covers part of [%, %)', NEW.model, NEW.valid_from,
            coalesce(NEW.valid_to::text, 'open') USING ERRCODE = 'exclusion_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER prices_no_overlap BEFORE INSERT OR UPDATE ON prices
    FOR EACH ROW EXECUTE FUNCTION reject_overlapping_prices();

CREATE FUNCTION reject_overlapping_electricity_prices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('electricity_prices', 0));
    IF EXISTS (SELECT 1 FROM electricity_prices p
               WHERE p.id <> NEW.id AND tstzrange(p.valid_from, p.valid_to) && tstzrange(NEW.valid_from, NEW.valid_to)) THEN
        RAISE EXCEPTION 'an electricity price already covers part of [%, %)', NEW.valid_from,
            coalesce(NEW.valid_to::text, 'open') USING ERRCODE = 'exclusion_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER electricity_prices_no_overlap BEFORE INSERT OR UPDATE ON electricity_prices
    FOR EACH ROW EXECUTE FUNCTION reject_overlapping_electricity_prices();

-- One row per result with its cost. A remote run's queries cost their tokens at the price valid
-- when the query started (`api_cost`), and their electricity is unobservable. A local run's
-- queries cost nothing on an API and their measured energy at the electricity price
-- (`energy_cost`). `cost` is the one that applies; NULL, with `cost_null_reason`, when its
-- price or energy is missing.
CREATE VIEW query_costs AS
SELECT qr.result_id, qr.run_id, qr.query_id, qr.repetition, qr.model, qr.workload, qr.hardware_class,
       qr.agent_id, qr.category, qr.acc, qr.error, qr.tokens_in, qr.tokens_out, qr.energy_j,
       qr.power_w, qr.energy_null_reason, qr.started_at, qr.latency_s, qr.ttft_s,
       coalesce(p.engine_remote, false) AS engine_remote,
       CASE WHEN coalesce(p.engine_remote, false) THEN pr.currency ELSE ep.currency END AS currency,
       CASE WHEN NOT coalesce(p.engine_remote, false) THEN 0
            ELSE (qr.tokens_in * pr.input_per_mtok + qr.tokens_out * pr.output_per_mtok) / 1e6 END
           ::double precision AS api_cost,
       CASE WHEN NOT coalesce(p.engine_remote, false) THEN qr.energy_j / 3.6e6 * ep.per_kwh::double precision END
           AS energy_cost,
       CASE WHEN coalesce(p.engine_remote, false)
            THEN (qr.tokens_in * pr.input_per_mtok + qr.tokens_out * pr.output_per_mtok)::double precision / 1e6
            ELSE qr.energy_j / 3.6e6 * ep.per_kwh::double precision END AS cost,
       CASE WHEN coalesce(p.engine_remote, false) THEN
                CASE WHEN pr.id IS NULL THEN format('no price of model %s when it ran (ipw price set)', qr.model) END
            WHEN qr.energy_j IS NULL THEN 'energy unknown: ' || coalesce(qr.energy_null_reason, 'no reason recorded')
            WHEN ep.id IS NULL THEN 'no electricity price when it ran (ipw price electricity)'
       END AS cost_null_reason,
       CASE WHEN coalesce(p.engine_remote, false) THEN 'api' ELSE 'electricity' END AS cost_basis
FROM query_results qr
LEFT JOIN run_provenance p ON p.run_id = qr.run_id AND p.agent_id = qr.agent_id
LEFT JOIN prices pr ON coalesce(p.engine_remote, false) AND pr.model = qr.model
     AND qr.started_at >= pr.valid_from AND (pr.valid_to IS NULL OR qr.started_at < pr.valid_to)
LEFT JOIN electricity_prices ep ON NOT coalesce(p.engine_remote, false)
     AND qr.started_at >= ep.valid_from AND (ep.valid_to IS NULL OR qr.started_at < ep.valid_to);

-- The leaderboard over the runs given: one row per model x hardware class x workload (and
-- whether the engine was remote). Accuracy with its Wilson 95% interval, IPW and IPJ, joules
-- per query and tokens per joule, cost per query and per correct answer, TTFT and latency.
-- A cost per correct answer needs every query costed; `costed` says how many were.
CREATE FUNCTION leaderboard_of(run_ids uuid[])
RETURNS TABLE (
    model text, hardware_class text, workload text, engine_remote boolean, runs bigint, queries bigint,
    scored bigint, correct bigint, accuracy double precision, accuracy_ci_low double precision,
    accuracy_ci_high double precision, ipw double precision, ipj double precision,
    joules_per_query double precision, tokens_per_joule double precision, currency text,
    cost_basis text, costed bigint, cost_per_query double precision, cost_per_correct double precision,
    api_cost_per_query double precision, energy_cost_per_query double precision,
    ttft_p50_s double precision, latency_p50_s double precision, latency_p95_s double precision,
    energy_null_reason text, cost_null_reason text
) LANGUAGE sql STABLE AS $$
    WITH g AS (
        SELECT c.model, c.hardware_class, c.workload, c.engine_remote,
               count(DISTINCT c.run_id) AS runs, count(*) AS queries, count(c.acc) AS scored,
               count(*) FILTER (WHERE c.acc = 1) AS correct,
               avg(c.acc)::double precision AS accuracy,
               (avg(c.acc) FILTER (WHERE c.power_w IS NOT NULL))::double precision
                   / NULLIF(avg(c.power_w) FILTER (WHERE c.acc IS NOT NULL), 0) AS ipw,
               (avg(c.acc) FILTER (WHERE c.energy_j IS NOT NULL))::double precision
                   / NULLIF(avg(c.energy_j) FILTER (WHERE c.acc IS NOT NULL), 0) AS ipj,
               avg(c.energy_j) AS joules_per_query,
               sum(c.tokens_out) FILTER (WHERE c.energy_j IS NOT NULL) / NULLIF(sum(c.energy_j), 0) AS tokens_per_joule,
               CASE WHEN count(DISTINCT c.currency) <= 1 THEN min(c.currency) END AS currency,
               count(DISTINCT c.currency) > 1 AS mixed_currency,
               min(c.cost_basis) AS cost_basis,
               count(c.cost) AS costed,
               avg(c.cost) AS cost_per_query,
               sum(c.cost) AS cost_sum,
               avg(c.api_cost) AS api_cost_per_query,
               avg(c.energy_cost) AS energy_cost_per_query,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY c.ttft_s) AS ttft_p50_s,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_s) FILTER (WHERE c.error IS NULL) AS latency_p50_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_s) FILTER (WHERE c.error IS NULL) AS latency_p95_s,
               string_agg(DISTINCT c.energy_null_reason, '; ') AS energy_null_reason,
               string_agg(DISTINCT c.cost_null_reason, '; ') AS cost_null_reason
        FROM query_costs c
        WHERE c.run_id = ANY (run_ids)
        GROUP BY c.model, c.hardware_class, c.workload, c.engine_remote
    )
    SELECT g.model, g.hardware_class, g.workload, g.engine_remote, g.runs, g.queries, g.scored, g.correct,
           g.accuracy, ci.low, ci.high, g.ipw, g.ipj, g.joules_per_query, g.tokens_per_joule, g.currency,
           g.cost_basis, g.costed,
           CASE WHEN NOT g.mixed_currency THEN g.cost_per_query END,
           CASE WHEN NOT g.mixed_currency AND g.costed = g.queries THEN g.cost_sum / NULLIF(g.correct, 0) END,
           CASE WHEN NOT g.mixed_currency THEN g.api_cost_per_query END,
           CASE WHEN NOT g.mixed_currency THEN g.energy_cost_per_query END,
           g.ttft_p50_s, g.latency_p50_s, g.latency_p95_s, g.energy_null_reason,
           nullif(concat_ws('; ', g.cost_null_reason,
               CASE WHEN g.mixed_currency THEN 'prices in more than one currency' END), '')
    FROM g CROSS JOIN LATERAL wilson_interval(g.correct, g.scored) ci
    ORDER BY g.workload, g.ipw DESC NULLS LAST, g.accuracy DESC NULLS LAST, g.model, g.hardware_class
$$;

-- The leaderboard of every completed run.
CREATE VIEW leaderboard AS
SELECT * FROM leaderboard_of(ARRAY(SELECT id FROM runs WHERE status = 'completed'));
