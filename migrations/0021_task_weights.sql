-- Task-weighted IPW. A weight set gives each workload category a weight (for example its
-- share of work in an occupational task-share dataset, mapped to the categories); weighted
-- accuracy is sum(w x accuracy_c) / sum(w) over the categories a run has results in.

CREATE TABLE weight_sets (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    -- Where the weights came from, and how they were mapped to the categories.
    source      text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_weights (
    set_name text NOT NULL REFERENCES weight_sets (name) ON DELETE CASCADE,
    category text NOT NULL CHECK (length(category) > 0),
    weight   double precision NOT NULL CHECK (weight >= 0 AND weight < 'Infinity'),
    PRIMARY KEY (set_name, category)
);

-- Per run (and hardware class): accuracy and IPW, plain and weighted by the set `name`.
-- `missing_categories` have a weight but no results in the run; `unweighted_categories` have
-- results but no weight (left out of the weighted figures). Queries with no category count as
-- the category '(none)'.
CREATE FUNCTION ipw_weighted(name text)
RETURNS TABLE (run_id uuid, model text, workload text, hardware_class text, queries bigint,
               accuracy double precision, weighted_accuracy double precision, mean_power_w double precision,
               ipw double precision, weighted_ipw double precision, categories_weighted bigint,
               weight_covered double precision, missing_categories text[], unweighted_categories text[])
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM weight_sets ws WHERE ws.name = ipw_weighted.name) THEN
        RAISE EXCEPTION 'no weight set named % (ipw weights import FILE.csv --name NAME)', quote_literal(ipw_weighted.name)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY
    WITH w AS (SELECT tw.category, tw.weight FROM task_weights tw WHERE tw.set_name = ipw_weighted.name),
    per_cat AS (
        SELECT qr.run_id, qr.model, qr.workload, qr.hardware_class, coalesce(qr.category, '(none)') AS category,
               count(*) AS n, count(qr.acc) AS scored, sum(qr.acc) AS acc_sum, avg(qr.acc)::double precision AS acc,
               sum(qr.power_w) FILTER (WHERE qr.acc IS NOT NULL) AS power_sum,
               count(qr.power_w) FILTER (WHERE qr.acc IS NOT NULL) AS power_n,
               sum(qr.acc) FILTER (WHERE qr.power_w IS NOT NULL) AS acc_powered_sum,
               count(qr.acc) FILTER (WHERE qr.power_w IS NOT NULL) AS acc_powered_n
        FROM query_results qr
        GROUP BY qr.run_id, qr.model, qr.workload, qr.hardware_class, coalesce(qr.category, '(none)')
    ),
    per_run AS (
        SELECT pc.run_id, pc.model, pc.workload, pc.hardware_class, sum(pc.n)::bigint AS queries,
               sum(pc.acc_sum)::double precision / NULLIF(sum(pc.scored), 0) AS accuracy,
               sum(w.weight * pc.acc) FILTER (WHERE pc.acc IS NOT NULL)
                   / NULLIF(sum(w.weight) FILTER (WHERE pc.acc IS NOT NULL), 0) AS weighted_accuracy,
               sum(pc.power_sum) / NULLIF(sum(pc.power_n), 0) AS mean_power_w,
               sum(pc.acc_powered_sum)::double precision / NULLIF(sum(pc.acc_powered_n), 0) AS acc_powered,
               count(w.category) FILTER (WHERE pc.acc IS NOT NULL) AS categories_weighted,
               sum(w.weight) FILTER (WHERE pc.acc IS NOT NULL) AS weight_present,
               coalesce(array_agg(pc.category ORDER BY pc.category) FILTER (WHERE w.category IS NULL), '{}')
                   AS unweighted_categories,
               array_agg(pc.category) AS categories
        FROM per_cat pc LEFT JOIN w ON w.category = pc.category
        GROUP BY pc.run_id, pc.model, pc.workload, pc.hardware_class
    )
    SELECT r.run_id, r.model, r.workload, r.hardware_class, r.queries, r.accuracy, r.weighted_accuracy,
           r.mean_power_w, r.acc_powered / NULLIF(r.mean_power_w, 0), r.weighted_accuracy / NULLIF(r.mean_power_w, 0),
           r.categories_weighted, r.weight_present / NULLIF((SELECT sum(w.weight) FROM w), 0),
           coalesce((SELECT array_agg(w.category ORDER BY w.category) FROM w WHERE w.category <> ALL (r.categories)), '{}'),
           r.unweighted_categories
    FROM per_run r
    ORDER BY r.workload, r.model, r.hardware_class, r.run_id;
END
$$;
