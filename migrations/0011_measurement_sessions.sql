-- Measurement at the engine's operating point. An agent works on a run in a *session* (one
-- engine, one model loaded) that holds the engine at the run's load across shards; the
-- session records its idle baselines, its power series as it is sampled, and its steady-state
-- window. Runs record their load pattern and goodput SLOs.

ALTER TABLE runs
    ADD COLUMN load_pattern text NOT NULL DEFAULT 'closed' CHECK (load_pattern IN ('closed', 'poisson', 'constant')),
    -- Open loop: arrivals per second, and the seed of the Poisson arrivals.
    ADD COLUMN rate_per_s double precision CHECK (rate_per_s > 0),
    ADD COLUMN arrival_seed bigint NOT NULL DEFAULT 0,
    -- Goodput: a request is good when it met every SLO given.
    ADD COLUMN slo_ttft_s double precision CHECK (slo_ttft_s > 0),
    ADD COLUMN slo_tpot_s double precision CHECK (slo_tpot_s > 0),
    ADD CONSTRAINT runs_rate_with_open_loop CHECK ((load_pattern = 'closed') = (rate_per_s IS NULL));

-- One agent on one run. Times are seconds on the session's sampler clock (clock_zero is its
-- wall-clock origin). Uploaded every few seconds while the session runs; the load figures are
-- the latest, and final once `finished`.
CREATE TABLE measurement_sessions (
    id                uuid PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    agent_id          uuid NOT NULL REFERENCES agents (id),
    started_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished          boolean NOT NULL DEFAULT false,
    clock_zero        timestamptz,
    sample_hz         double precision NOT NULL DEFAULT 0 CHECK (sample_hz >= 0),
    attribution       text NOT NULL CHECK (attribution IN ('time-share', 'token-share')),
    -- [{kind, scope, name, details}], in the order of session_power_series.source_index.
    sources           jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(sources) = 'array'),
    -- Why there is no energy, when there are no sources.
    null_reason       text,
    load_pattern      text NOT NULL CHECK (load_pattern IN ('closed', 'poisson', 'constant')),
    -- Requests in flight (closed) or arrivals per second (open loop).
    target            double precision NOT NULL CHECK (target > 0),
    -- From when the load first reached the target to when the run's work ran out.
    steady_from_s     double precision,
    steady_to_s       double precision,
    -- Time-weighted load over the window less its pauses.
    steady_load_mean  double precision CHECK (steady_load_mean >= 0),
    -- Idle re-measurements inside the window, cut out of it.
    paused_s          double precision NOT NULL DEFAULT 0 CHECK (paused_s >= 0),
    -- Energy over the window less its pauses, and the output tokens of the queries inside it.
    steady_energy_j   double precision,
    steady_tokens_out bigint NOT NULL DEFAULT 0 CHECK (steady_tokens_out >= 0),
    -- Coverage: time while any query ran, and the part inside sample intervals no longer than
    -- two sample periods.
    query_time_s      double precision NOT NULL DEFAULT 0 CHECK (query_time_s >= 0),
    covered_time_s    double precision NOT NULL DEFAULT 0 CHECK (covered_time_s >= 0),
    late_starts       bigint NOT NULL DEFAULT 0 CHECK (late_starts >= 0),
    arrivals          bigint NOT NULL DEFAULT 0 CHECK (arrivals >= 0),
    warmup_queries    integer NOT NULL DEFAULT 0 CHECK (warmup_queries >= 0),
    CHECK (steady_to_s >= steady_from_s),
    CHECK (covered_time_s <= query_time_s * (1 + 1e-9) + 1e-9)
);
CREATE INDEX measurement_sessions_run_idx ON measurement_sessions (run_id);

-- Idle power on the warm engine, measured once per session and again at --idle-every.
CREATE TABLE session_idle (
    session_id uuid NOT NULL REFERENCES measurement_sessions (id) ON DELETE CASCADE,
    from_s     double precision NOT NULL,
    seconds    double precision NOT NULL CHECK (seconds > 0),
    power_w    double precision NOT NULL CHECK (power_w >= 0),
    PRIMARY KEY (session_id, from_s)
);

-- The raw series, persisted as it is sampled: cumulative joules per source, in chunks.
CREATE TABLE session_power_series (
    session_id   uuid NOT NULL REFERENCES measurement_sessions (id) ON DELETE CASCADE,
    source_index integer NOT NULL CHECK (source_index >= 0),
    chunk_index  integer NOT NULL CHECK (chunk_index >= 0),
    t_s          double precision[] NOT NULL,
    energy_j     double precision[] NOT NULL,
    PRIMARY KEY (session_id, source_index, chunk_index),
    CHECK (cardinality(t_s) = cardinality(energy_j))
);

-- No foreign key to the session: a result may arrive before its session's first telemetry.
ALTER TABLE results
    ADD COLUMN session_id       uuid,
    ADD COLUMN in_steady_window boolean NOT NULL DEFAULT false,
    ADD COLUMN prefill_energy_j double precision CHECK (prefill_energy_j >= 0),
    ADD COLUMN decode_energy_j  double precision CHECK (decode_energy_j >= 0),
    ADD COLUMN itl_p50_s        double precision CHECK (itl_p50_s >= 0),
    ADD COLUMN itl_p95_s        double precision CHECK (itl_p95_s >= 0),
    ADD COLUMN tpot_s           double precision CHECK (tpot_s >= 0),
    ADD COLUMN start_delay_s    double precision CHECK (start_delay_s >= 0);
CREATE INDEX results_session_idx ON results (session_id) WHERE session_id IS NOT NULL;

CREATE OR REPLACE VIEW query_results AS
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
       r.energy_null_reason,
       r.session_id,
       r.in_steady_window,
       r.prefill_energy_j,
       r.decode_energy_j,
       r.itl_p50_s,
       r.itl_p95_s,
       r.tpot_s,
       r.start_delay_s,
       -- Good under the run's SLOs: no error, and every SLO given met.
       (r.error IS NULL
        AND (ru.slo_ttft_s IS NULL OR r.ttft_s <= ru.slo_ttft_s)
        AND (ru.slo_tpot_s IS NULL OR coalesce(r.tpot_s, 0) <= ru.slo_tpot_s)) AS meets_slo,
       r.started_at + make_interval(secs => r.latency_s) AS ended_at
FROM results r
JOIN runs ru ON ru.id = r.run_id
JOIN models m ON m.id = ru.model_id
JOIN workloads w ON w.id = ru.workload_id
JOIN queries q ON q.id = r.query_id
JOIN agents a ON a.id = r.agent_id
LEFT JOIN chosen_scorings cs ON cs.run_id = r.run_id
LEFT JOIN scores s ON s.scoring_id = cs.scoring_id AND s.result_id = r.id;

-- Per run, over its sessions: the steady-state window and the stability rules. A run is
-- unstable, with the reasons, when a session's steady window is shorter than 20 s, its mean
-- load is below 0.85 of the target, or the power samples cover less than 99% of the time
-- queries ran (gaps over two sample periods count as uncovered).
CREATE VIEW run_steady_state AS
SELECT g.*,
       nullif(concat_ws('; ',
           CASE WHEN g.shortest_window_s < 20
                THEN format('steady window %s s is shorter than 20 s', round(g.shortest_window_s::numeric, 1)) END,
           CASE WHEN g.lowest_load_ratio < 0.85
                THEN format('mean load %s of the target is below 0.85', round(g.lowest_load_ratio::numeric, 3)) END,
           CASE WHEN g.power_coverage < 0.99
                THEN format('power samples cover %s%% of query time, below 99%%', round(100 * g.power_coverage::numeric, 1)) END
       ), '') AS instability
FROM (
    SELECT run_id,
           count(*) AS sessions,
           min(load_pattern) AS load_pattern,
           max(target) AS load_target,
           sum(steady_to_s - steady_from_s - paused_s) AS steady_s,
           min(steady_to_s - steady_from_s - paused_s) AS shortest_window_s,
           sum(paused_s) AS paused_s,
           sum(steady_load_mean * (steady_to_s - steady_from_s - paused_s))
               / NULLIF(sum(steady_to_s - steady_from_s - paused_s), 0) AS steady_load_mean,
           min(steady_load_mean / target) AS lowest_load_ratio,
           sum(steady_energy_j) / NULLIF(sum(steady_to_s - steady_from_s - paused_s)
               FILTER (WHERE steady_energy_j IS NOT NULL), 0) AS steady_power_w,
           sum(steady_tokens_out) / NULLIF(sum(steady_to_s - steady_from_s - paused_s), 0) AS steady_output_tokens_per_s,
           sum(covered_time_s) FILTER (WHERE sample_hz > 0)
               / NULLIF(sum(query_time_s) FILTER (WHERE sample_hz > 0), 0) AS power_coverage,
           sum(late_starts)::bigint AS late_starts,
           sum(arrivals) AS arrivals
    FROM measurement_sessions
    GROUP BY run_id
) g;

DROP VIEW ipw_summary;
-- Per (run, model, workload, hardware class). IPW = mean(acc) / mean(P) and
-- IPJ = mean(acc) / mean(E), ratios of means over the results that have both a score and
-- energy. Dynamic figures subtract the session's idle power. Steady-state figures use only
-- the queries wholly inside their session's steady window; joules per output token there is
-- their attributed energy over their output tokens.
CREATE VIEW ipw_summary AS
SELECT g.*, ci.low AS accuracy_ci_low, ci.high AS accuracy_ci_high,
       st.load_pattern, st.load_target, st.steady_s, st.paused_s, st.steady_load_mean,
       st.steady_power_w, st.steady_output_tokens_per_s, st.power_coverage, st.late_starts,
       CASE WHEN st.run_id IS NULL THEN NULL
            ELSE st.instability IS NULL AND coalesce(g.steady_joules_per_output_token > 0, true) END AS stable,
       nullif(concat_ws('; ', st.instability,
           CASE WHEN g.steady_joules_per_output_token <= 0 THEN 'energy per output token is not positive' END), '')
           AS instability
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
LEFT JOIN run_steady_state st ON st.run_id = g.run_id;

COMMENT ON COLUMN ipw_summary.steady_joules_per_output_token IS
    'sum(energy_j) / sum(tokens_out) over the queries wholly inside their session''s steady-state window';
