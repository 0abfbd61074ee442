-- Repeat a run until its steady-state figure settles, as the Phoronix Test Suite adds runs
-- until results settle: `ipw run create --repeat-until-cv 2% --max-repeats 5`. The first run
-- of a group carries the target; each repeat points to it and runs the same sample.

ALTER TABLE runs
    ADD COLUMN repeat_of uuid REFERENCES runs (id) ON DELETE CASCADE,
    ADD COLUMN repeat_until_cv double precision CHECK (repeat_until_cv > 0),
    ADD COLUMN max_repeats integer CHECK (max_repeats BETWEEN 1 AND 100),
    ADD CONSTRAINT runs_max_repeats_with_cv CHECK ((repeat_until_cv IS NULL) = (max_repeats IS NULL));

-- One row per group of repeats. The figure is the steady-state IPW of each completed run; a
-- group where a run has no energy uses the steady-state output tokens/s per query instead,
-- and says so in `metric`. cv = sample standard deviation / mean over the completed runs
-- (NULL below two).
CREATE VIEW run_repeats AS
WITH member AS (
    SELECT coalesce(r.repeat_of, r.id) AS group_id, r.id AS run_id, r.status, root.repeat_until_cv, root.max_repeats
    FROM runs r JOIN runs root ON root.id = coalesce(r.repeat_of, r.id)
    WHERE root.repeat_until_cv IS NOT NULL
),
per_run AS (
    SELECT m.group_id, m.run_id, m.status, m.repeat_until_cv, m.max_repeats,
           (avg(q.acc) FILTER (WHERE q.in_steady_window AND q.power_w IS NOT NULL))::double precision
               / NULLIF(avg(q.power_w) FILTER (WHERE q.in_steady_window AND q.acc IS NOT NULL), 0) AS steady_ipw,
           avg(q.tokens_out / q.latency_s) FILTER (WHERE q.in_steady_window AND q.error IS NULL AND q.latency_s > 0)
               AS steady_tps
    FROM member m LEFT JOIN query_results q ON q.run_id = m.run_id
    GROUP BY m.group_id, m.run_id, m.status, m.repeat_until_cv, m.max_repeats
),
per_group AS (
    SELECT group_id,
           count(*) AS repeats,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           max(repeat_until_cv) AS target_cv,
           max(max_repeats) AS max_repeats,
           bool_and(steady_ipw IS NOT NULL) FILTER (WHERE status = 'completed') AS with_energy,
           stddev_samp(steady_ipw) FILTER (WHERE status = 'completed')
               / NULLIF(avg(steady_ipw) FILTER (WHERE status = 'completed'), 0) AS ipw_cv,
           stddev_samp(steady_tps) FILTER (WHERE status = 'completed')
               / NULLIF(avg(steady_tps) FILTER (WHERE status = 'completed'), 0) AS tps_cv
    FROM per_run GROUP BY group_id
)
SELECT group_id, repeats, completed, target_cv, max_repeats,
       CASE WHEN with_energy THEN 'steady-state IPW'
            ELSE 'steady-state output tokens/s per query (no energy measured)' END AS metric,
       CASE WHEN with_energy THEN ipw_cv ELSE tps_cv END AS cv,
       coalesce(CASE WHEN with_energy THEN ipw_cv ELSE tps_cv END <= target_cv, false) AS settled
FROM per_group;

-- Called when a run completes: if its group has not settled, has no repeat still going and
-- is below its limit, creates the next repeat over the same sample and shards (pending, for
-- agents to lease) and returns its id.
CREATE FUNCTION repeat_if_unsettled(finished uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    g run_repeats%ROWTYPE;
    next_id uuid := gen_random_uuid();
BEGIN
    SELECT * INTO g FROM run_repeats WHERE group_id = (SELECT coalesce(repeat_of, id) FROM runs WHERE id = finished);
    IF NOT FOUND OR g.settled OR g.repeats >= g.max_repeats OR g.completed < g.repeats THEN
        RETURN NULL;
    END IF;
    INSERT INTO runs (id, workload_id, model_id, sample_size, seed, concurrency, shard_size, repetitions, max_tokens,
                      temperature, top_p, warmup, model_memory_bytes, hardware_class, sweep_id, label_selector,
                      load_pattern, rate_per_s, arrival_seed, slo_ttft_s, slo_tpot_s, repeat_of)
    SELECT next_id, workload_id, model_id, sample_size, seed, concurrency, shard_size, repetitions, max_tokens,
           temperature, top_p, warmup, model_memory_bytes, hardware_class, sweep_id, label_selector,
           load_pattern, rate_per_s, arrival_seed, slo_ttft_s, slo_tpot_s, g.group_id
    FROM runs WHERE id = finished;
    INSERT INTO shards (id, run_id, shard_index)
    SELECT gen_random_uuid(), next_id, shard_index FROM shards WHERE run_id = finished;
    INSERT INTO run_queries (run_id, query_id, position, shard_id)
    SELECT next_id, rq.query_id, rq.position, ns.id
    FROM run_queries rq
    JOIN shards os ON os.id = rq.shard_id
    JOIN shards ns ON ns.run_id = next_id AND ns.shard_index = os.shard_index
    WHERE rq.run_id = finished;
    INSERT INTO scorings (id, run_id, kind) VALUES (gen_random_uuid(), next_id, 'ingest');
    RETURN next_id;
END
$$;

-- The report carries the group's CV (and which figure it was taken over).
CREATE OR REPLACE VIEW ipw_summary AS
SELECT g.*, ci.low AS accuracy_ci_low, ci.high AS accuracy_ci_high,
       st.load_pattern, st.load_target, st.steady_s, st.paused_s, st.steady_load_mean,
       st.steady_power_w, st.steady_output_tokens_per_s, st.power_coverage, st.late_starts,
       CASE WHEN st.run_id IS NULL THEN NULL
            ELSE st.instability IS NULL AND coalesce(g.steady_joules_per_output_token > 0, true) END AS stable,
       nullif(concat_ws('; ', st.instability,
           CASE WHEN g.steady_joules_per_output_token <= 0 THEN 'energy per output token is not positive' END), '')
           AS instability,
       rr.group_id AS repeat_group, rr.repeats, rr.cv AS repeat_cv, rr.metric AS repeat_cv_metric
FROM (
    SELECT qr.run_id,
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
           string_agg(DISTINCT power_source, ', ') AS power_source,
           string_agg(DISTINCT power_scope, ', ') FILTER (WHERE power_scope <> '') AS power_scope,
           string_agg(DISTINCT energy_null_reason, '; ') AS energy_null_reason,
           min(scoring_id::text)::uuid AS scoring_id,
           avg(prefill_energy_j) AS prefill_joules_per_query,
           avg(decode_energy_j) AS decode_joules_per_query,
           avg(tpot_s) AS tpot_mean_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY itl_p50_s) AS itl_p50_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY itl_p95_s) AS itl_p95_s,
           (count(*) FILTER (WHERE meets_slo)
               / NULLIF(extract(epoch FROM max(ended_at) - min(started_at)), 0))::double precision AS goodput_per_s,
           (count(*) FILTER (WHERE meets_slo))::double precision / count(*) AS slo_attainment,
           count(*) FILTER (WHERE in_steady_window) AS steady_queries,
           sum(energy_j) FILTER (WHERE in_steady_window)
               / NULLIF(sum(tokens_out) FILTER (WHERE in_steady_window AND energy_j IS NOT NULL), 0)
               AS steady_joules_per_output_token,
           (avg(acc) FILTER (WHERE in_steady_window AND power_w IS NOT NULL))::double precision
               / NULLIF(avg(power_w) FILTER (WHERE in_steady_window AND acc IS NOT NULL), 0) AS steady_ipw
    FROM query_results qr
    GROUP BY qr.run_id, model, workload, hardware_class
) g
CROSS JOIN LATERAL wilson_interval(g.correct, g.scored) ci
LEFT JOIN run_steady_state st ON st.run_id = g.run_id
LEFT JOIN runs ru ON ru.id = g.run_id
LEFT JOIN run_repeats rr ON rr.group_id = coalesce(ru.repeat_of, ru.id);
