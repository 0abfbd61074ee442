-- Scoring as a re-runnable stage, and the analysis views and functions a paper needs.
--
-- A run's results are scored as they arrive (the run's `ingest` scoring). `ipw score RUN`
-- adds another scoring (for example with an LLM judge) and keeps the earlier ones. The views
-- use, per run, the scoring named by the session setting `ipw.scoring`, else the latest
-- finished one:  SET ipw.scoring = '<scoring id>';

-- ------------------------------------------------------------------ scorers

ALTER TABLE queries DROP CONSTRAINT queries_scorer_check;
ALTER TABLE queries ADD CONSTRAINT queries_scorer_check CHECK (scorer IN ('mcq', 'numeric', 'exact', 'judge'));
-- Relative tolerance for numeric answers (default 1e-4 when NULL).
ALTER TABLE queries ADD COLUMN tolerance double precision CHECK (tolerance >= 0);

CREATE TABLE scorings (
    id                uuid PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- ingest: scored as results arrived; rescore: `ipw score`.
    kind              text NOT NULL CHECK (kind IN ('ingest', 'rescore')),
    judge_model       text,
    judge_endpoint    text,
    -- What the judge's endpoint reported about itself (model id, build, fingerprint).
    judge_version     text,
    -- sha256 of the judge prompt template.
    judge_prompt_hash text,
    -- strict: both orders must say equivalent; lenient: either order.
    judge_strictness  text CHECK (judge_strictness IN ('strict', 'lenient')),
    -- Judge every query, not only those whose scorer is `judge`.
    judge_all         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    scored            integer CHECK (scored >= 0),
    failed            integer CHECK (failed >= 0),
    CHECK ((judge_model IS NULL) = (judge_prompt_hash IS NULL)),
    CHECK ((judge_model IS NULL) = (judge_strictness IS NULL))
);
CREATE UNIQUE INDEX scorings_one_ingest_per_run ON scorings (run_id) WHERE kind = 'ingest';

INSERT INTO scorings (id, run_id, kind) SELECT gen_random_uuid(), id, 'ingest' FROM runs;

ALTER TABLE scores ADD COLUMN scoring_id uuid REFERENCES scorings (id) ON DELETE CASCADE;
UPDATE scores s SET scoring_id = sc.id
FROM results r JOIN scorings sc ON sc.run_id = r.run_id AND sc.kind = 'ingest'
WHERE r.id = s.result_id;
ALTER TABLE scores ALTER COLUMN scoring_id SET NOT NULL;
ALTER TABLE scores DROP CONSTRAINT scores_pkey;
ALTER TABLE scores ADD PRIMARY KEY (scoring_id, result_id);
CREATE INDEX scores_result_idx ON scores (result_id);
ALTER TABLE scores DROP CONSTRAINT scores_scorer_check;
ALTER TABLE scores ADD CONSTRAINT scores_scorer_check CHECK (scorer IN ('mcq', 'numeric', 'exact', 'judge'));
-- A failed judgement has no verdict on correctness: it stays unscored, with its error.
ALTER TABLE scores ALTER COLUMN correct DROP NOT NULL;
ALTER TABLE scores ADD COLUMN verdict text;
ALTER TABLE scores ADD COLUMN error text;
ALTER TABLE scores ADD CONSTRAINT scores_correct_or_error CHECK ((correct IS NULL) = (error IS NOT NULL));

-- ------------------------------------------------------------------ views

-- Per run, the scoring the views use: the one named by `ipw.scoring` when it belongs to the
-- run, else the latest finished one (the ingest scoring counts as finished).
CREATE VIEW chosen_scorings AS
SELECT DISTINCT ON (run_id) run_id, id AS scoring_id
FROM scorings
WHERE kind = 'ingest' OR completed_at IS NOT NULL
ORDER BY run_id, (id::text = coalesce(current_setting('ipw.scoring', true), '')) DESC, created_at DESC;

-- One row per result, with its query, model, run, agent, hardware class and score.
-- `acc` is 1 (correct), 0 (wrong, or an engine error) or NULL (not scored, e.g. a failed
-- judgement: never counted as wrong).
CREATE VIEW query_results AS
SELECT r.id AS result_id,
       r.run_id,
       ru.created_at AS run_created_at,
       m.name AS model,
       w.name AS workload,
       q.id AS query_id,
       q.external_id AS query_external_id,
       q.category,
       r.repetition,
       a.id AS agent_id,
       a.name AS agent_name,
       a.hardware_class,
       r.started_at,
       r.latency_s,
       r.ttft_s,
       r.mean_itl_s,
       r.tokens_in,
       r.tokens_out,
       r.error,
       cs.scoring_id,
       s.scorer,
       s.extracted,
       s.correct,
       s.verdict,
       s.error AS score_error,
       CASE WHEN r.error IS NOT NULL THEN 0 WHEN s.correct THEN 1 WHEN s.correct IS NOT NULL THEN 0 END AS acc,
       r.energy_j,
       r.dynamic_energy_j,
       CASE WHEN r.energy_j IS NOT NULL AND r.latency_s > 0 THEN r.energy_j / r.latency_s END AS power_w,
       CASE WHEN r.dynamic_energy_j IS NOT NULL AND r.latency_s > 0 THEN r.dynamic_energy_j / r.latency_s END
           AS dynamic_power_w,
       r.power_source,
       r.power_scope,
       r.sample_hz,
       r.energy_attribution,
       r.energy_null_reason
FROM results r
JOIN runs ru ON ru.id = r.run_id
JOIN models m ON m.id = ru.model_id
JOIN workloads w ON w.id = ru.workload_id
JOIN queries q ON q.id = r.query_id
JOIN agents a ON a.id = r.agent_id
LEFT JOIN chosen_scorings cs ON cs.run_id = r.run_id
LEFT JOIN scores s ON s.scoring_id = cs.scoring_id AND s.result_id = r.id;

-- Accuracy with its 95% Wilson interval, from k correct of n.
CREATE FUNCTION wilson_interval(k bigint, n bigint, OUT low double precision, OUT high double precision)
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN n > 0 THEN (p + z2 / (2 * n) - 1.96 * sqrt(p * (1 - p) / n + z2 / (4.0 * n * n))) / (1 + z2 / n) END,
           CASE WHEN n > 0 THEN (p + z2 / (2 * n) + 1.96 * sqrt(p * (1 - p) / n + z2 / (4.0 * n * n))) / (1 + z2 / n) END
    FROM (SELECT CASE WHEN n > 0 THEN k::double precision / n END AS p, 1.96 * 1.96 AS z2) c
$$;

-- Per (run, model, workload, hardware class). IPW = mean(acc) / mean(P) and
-- IPJ = mean(acc) / mean(E), ratios of means over the results that have both a score and
-- energy. Dynamic figures subtract each shard's idle power.
CREATE VIEW ipw_summary AS
SELECT g.*, ci.low AS accuracy_ci_low, ci.high AS accuracy_ci_high
FROM (
    SELECT run_id,
           model,
           workload,
           hardware_class,
           count(*) AS queries,
           count(*) FILTER (WHERE error IS NOT NULL) AS errors,
           count(acc) AS scored,
           count(*) FILTER (WHERE acc IS NULL) AS unscored,
           count(*) FILTER (WHERE acc = 1) AS correct,
           avg(acc)::double precision AS accuracy,
           avg(latency_s) FILTER (WHERE error IS NULL) AS latency_mean_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) FILTER (WHERE error IS NULL) AS latency_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) FILTER (WHERE error IS NULL) AS latency_p95_s,
           avg(ttft_s) AS ttft_mean_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_s) AS ttft_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_s) AS ttft_p95_s,
           avg(tokens_out / latency_s) FILTER (WHERE error IS NULL AND latency_s > 0) AS output_tokens_per_s,
           sum(tokens_out) AS tokens_out,
           avg(energy_j) AS joules_per_query,
           avg(dynamic_energy_j) AS dynamic_joules_per_query,
           avg(power_w) AS mean_power_w,
           avg(dynamic_power_w) AS mean_dynamic_power_w,
           sum(tokens_out) FILTER (WHERE energy_j IS NOT NULL) / NULLIF(sum(energy_j), 0) AS tokens_per_joule,
           (avg(acc) FILTER (WHERE power_w IS NOT NULL))::double precision
               / NULLIF(avg(power_w) FILTER (WHERE acc IS NOT NULL), 0) AS ipw,
           (avg(acc) FILTER (WHERE energy_j IS NOT NULL))::double precision
               / NULLIF(avg(energy_j) FILTER (WHERE acc IS NOT NULL), 0) AS ipj,
           string_agg(DISTINCT power_source, ', ') AS power_sources,
           string_agg(DISTINCT power_scope, ', ') FILTER (WHERE power_scope <> '') AS power_scopes,
           string_agg(DISTINCT energy_null_reason, '; ') AS energy_null_reasons,
           min(scoring_id::text)::uuid AS scoring_id
    FROM query_results
    GROUP BY run_id, model, workload, hardware_class
) g
CROSS JOIN LATERAL wilson_interval(g.correct, g.scored) ci;

-- IPW per (model, workload, hardware class) by the day its runs were created: the
-- longitudinal series. Results of several runs on one day are pooled (ratio of means).
CREATE VIEW ipw_over_time AS
SELECT run_created_at::date AS day,
       model,
       workload,
       hardware_class,
       count(DISTINCT run_id) AS runs,
       count(*) AS queries,
       avg(acc)::double precision AS accuracy,
       avg(power_w) AS mean_power_w,
       (avg(acc) FILTER (WHERE power_w IS NOT NULL))::double precision
           / NULLIF(avg(power_w) FILTER (WHERE acc IS NOT NULL), 0) AS ipw,
       (avg(acc) FILTER (WHERE energy_j IS NOT NULL))::double precision
           / NULLIF(avg(energy_j) FILTER (WHERE acc IS NOT NULL), 0) AS ipj
FROM query_results
GROUP BY 1, model, workload, hardware_class;

-- ------------------------------------------------------------------ functions

-- Coverage of a set of runs over the queries every one of them scored (first repetition):
-- one row per run (its model alone), then a `best-of-local` row, the share answered
-- correctly by at least one of them.
CREATE FUNCTION coverage(run_ids uuid[])
RETURNS TABLE (label text, run_id uuid, model text, hardware_class text, queries bigint, correct bigint, share double precision)
LANGUAGE sql STABLE AS $$
    WITH per AS (
        SELECT qr.run_id, qr.model, qr.query_id, max(qr.acc) AS acc,
               string_agg(DISTINCT qr.hardware_class, ', ') AS hardware_class
        FROM query_results qr
        WHERE qr.run_id = ANY (run_ids) AND qr.repetition = 0 AND qr.acc IS NOT NULL
        GROUP BY qr.run_id, qr.model, qr.query_id
    ),
    common AS (
        SELECT query_id FROM per GROUP BY query_id
        HAVING count(DISTINCT run_id) = (SELECT count(DISTINCT r) FROM unnest(run_ids) r)
    ),
    scoped AS (SELECT per.* FROM per JOIN common USING (query_id))
    SELECT 'model' AS label, s.run_id, s.model, min(s.hardware_class), count(*), count(*) FILTER (WHERE s.acc = 1),
           avg(s.acc)::double precision
    FROM scoped s GROUP BY s.run_id, s.model
    UNION ALL
    SELECT 'best-of-local', NULL, NULL, NULL, count(*), count(*) FILTER (WHERE best = 1), avg(best)::double precision
    FROM (SELECT query_id, max(acc) AS best FROM scoped GROUP BY query_id) b
$$;

-- Splits the IPW ratio between two (model, hardware class) points into a model factor and a
-- hardware factor with the two-factor Shapley decomposition over the 2x2 grid:
--   ratio    = IPW(mb, hb) / IPW(ma, ha) = model_factor * hardware_factor
--   model    = sqrt( IPW(mb,ha)/IPW(ma,ha) * IPW(mb,hb)/IPW(ma,hb) )
--   hardware = sqrt( IPW(ma,hb)/IPW(ma,ha) * IPW(mb,hb)/IPW(mb,ha) )
-- Each cell is the pooled IPW of every result for that model on that hardware class
-- (optionally one workload). With a cell unmeasured (or at IPW 0), the factors are NULL and
-- `missing` names it.
CREATE FUNCTION attribution(model_a text, hardware_a text, model_b text, hardware_b text, in_workload text DEFAULT NULL)
RETURNS TABLE (ipw_a double precision, ipw_b double precision, ratio double precision,
               model_factor double precision, hardware_factor double precision, missing text[])
LANGUAGE sql STABLE AS $$
    WITH cells AS (
        SELECT c.m, c.h,
               (SELECT (avg(acc) FILTER (WHERE power_w IS NOT NULL))::double precision
                       / NULLIF(avg(power_w) FILTER (WHERE acc IS NOT NULL), 0)
                FROM query_results qr
                WHERE qr.model = c.m AND qr.hardware_class = c.h
                  AND (in_workload IS NULL OR qr.workload = in_workload)) AS ipw
        FROM (VALUES (model_a, hardware_a), (model_b, hardware_a), (model_a, hardware_b), (model_b, hardware_b)) AS c(m, h)
    ),
    g AS (
        SELECT max(ipw) FILTER (WHERE m = model_a AND h = hardware_a) AS aa,
               max(ipw) FILTER (WHERE m = model_b AND h = hardware_a) AS ba,
               max(ipw) FILTER (WHERE m = model_a AND h = hardware_b) AS ab,
               max(ipw) FILTER (WHERE m = model_b AND h = hardware_b) AS bb,
               array_agg(DISTINCT format('%s on %s%s', m, h, CASE WHEN ipw = 0 THEN ' (IPW is 0)' ELSE '' END))
                   FILTER (WHERE ipw IS NULL OR ipw = 0) AS missing
        FROM cells
    )
    SELECT aa, bb, bb / NULLIF(aa, 0),
           CASE WHEN missing IS NULL THEN sqrt((ba / aa) * (bb / ab)) END,
           CASE WHEN missing IS NULL THEN sqrt((ab / aa) * (bb / ba)) END,
           coalesce(missing, '{}')
    FROM g
$$;
