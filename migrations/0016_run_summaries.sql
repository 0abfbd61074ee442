-- A million results: summaries kept per (run, scoring), so a report does not rescan them.
--
-- `run_summary_live` is the per-(run, model, workload, hardware class) aggregate that
-- `ipw_summary` has always computed from every result. `run_summaries` keeps its rows for a
-- run under one scoring, filled when the run is over (the coordinator's summaries job, or
-- `SELECT refresh_run_summary(run)`), and dropped by triggers whenever a result or score of
-- the run changes, so a stored row is always what the live aggregate would give.
-- `ipw_summary` reads the stored rows of the chosen scoring where there are some, and
-- computes the rest live, one run at a time.

CREATE VIEW run_summary_live AS
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
GROUP BY qr.run_id, model, workload, hardware_class;

CREATE TABLE run_summaries AS SELECT * FROM run_summary_live WITH NO DATA;
ALTER TABLE run_summaries
    ADD PRIMARY KEY (run_id, scoring_id, hardware_class),
    ADD FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE,
    ADD FOREIGN KEY (scoring_id) REFERENCES scorings (id) ON DELETE CASCADE,
    ADD COLUMN computed_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX run_summaries_scoring_idx ON run_summaries (scoring_id);

-- The aggregate part of ipw_summary: stored rows for the chosen scoring, else live.
CREATE VIEW run_summary_rows AS
SELECT s.run_id, s.model, s.workload, s.hardware_class, s.queries, s.errors, s.scored, s.unscored, s.correct,
       s.accuracy, s.latency_mean_s, s.latency_p50_s, s.latency_p95_s, s.ttft_mean_s, s.ttft_p50_s, s.ttft_p95_s,
       s.output_tokens_per_s, s.tokens_out, s.joules_per_query, s.dynamic_joules_per_query, s.mean_power_w,
       s.mean_dynamic_power_w, s.tokens_per_joule, s.ipw, s.ipj, s.power_source, s.power_scope,
       s.energy_null_reason, s.scoring_id, s.prefill_joules_per_query, s.decode_joules_per_query, s.tpot_mean_s,
       s.itl_p50_s, s.itl_p95_s, s.goodput_per_s, s.slo_attainment, s.steady_queries,
       s.steady_joules_per_output_token, s.steady_ipw
FROM run_summaries s JOIN chosen_scorings cs ON cs.run_id = s.run_id AND cs.scoring_id = s.scoring_id
UNION ALL
SELECT l.*
FROM runs ru
-- OFFSET 0 keeps the subquery from being flattened: each run not stored is aggregated on its
-- own, through the results index, instead of every result being aggregated and then filtered.
CROSS JOIN LATERAL (SELECT * FROM run_summary_live l WHERE l.run_id = ru.id OFFSET 0) l
WHERE EXISTS (SELECT 1 FROM results r WHERE r.run_id = ru.id)
  AND NOT EXISTS (SELECT 1 FROM run_summaries s JOIN chosen_scorings cs
                  ON cs.run_id = s.run_id AND cs.scoring_id = s.scoring_id
                  WHERE s.run_id = ru.id);

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
FROM run_summary_rows g
CROSS JOIN LATERAL wilson_interval(g.correct, g.scored) ci
LEFT JOIN run_steady_state st ON st.run_id = g.run_id
LEFT JOIN runs ru ON ru.id = g.run_id
LEFT JOIN run_repeats rr ON rr.group_id = coalesce(ru.repeat_of, ru.id);

-- Stores the run's rows under its chosen scoring (the latest, or `ipw.scoring`); returns how
-- many. Waits for batches of the run still being written, so none is left out.
CREATE FUNCTION refresh_run_summary(run uuid) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('ipw_summary:' || run::text, 0));
    DELETE FROM run_summaries
    WHERE run_id = run AND scoring_id = (SELECT scoring_id FROM chosen_scorings WHERE run_id = run);
    INSERT INTO run_summaries SELECT *, now() FROM run_summary_live WHERE run_id = run;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- A change to a run's results drops its stored rows. The shared lock makes a refresh that
-- started first wait for this transaction, and one that started later see it.
CREATE FUNCTION forget_run_summaries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('ipw_summary:' || run_id::text, 0))
    FROM (SELECT DISTINCT run_id FROM changed ORDER BY run_id) c;
    DELETE FROM run_summaries WHERE run_id IN (SELECT run_id FROM changed);
    RETURN NULL;
END
$$;

CREATE TRIGGER results_inserted_forget_summaries AFTER INSERT ON results
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_run_summaries();
CREATE TRIGGER results_updated_forget_summaries AFTER UPDATE ON results
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_run_summaries();
CREATE TRIGGER results_deleted_forget_summaries AFTER DELETE ON results
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_run_summaries();

-- Likewise for scores, under their scoring only.
CREATE FUNCTION forget_scoring_summaries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('ipw_summary:' || sc.run_id::text, 0))
    FROM (SELECT DISTINCT s.run_id FROM scorings s WHERE s.id IN (SELECT scoring_id FROM changed)
          ORDER BY s.run_id) sc;
    DELETE FROM run_summaries WHERE scoring_id IN (SELECT scoring_id FROM changed);
    RETURN NULL;
END
$$;

CREATE TRIGGER scores_inserted_forget_summaries AFTER INSERT ON scores
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_scoring_summaries();
CREATE TRIGGER scores_updated_forget_summaries AFTER UPDATE ON scores
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_scoring_summaries();
CREATE TRIGGER scores_deleted_forget_summaries AFTER DELETE ON scores
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forget_scoring_summaries();

-- An agent's hardware class is part of every row it measured.
CREATE FUNCTION forget_all_summaries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_summaries;
    RETURN NULL;
END
$$;
CREATE TRIGGER agents_reclassed_forget_summaries AFTER UPDATE OF hardware_class ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION forget_all_summaries();
