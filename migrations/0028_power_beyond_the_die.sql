-- Power beyond the die: node and wall meters (IPMI DCMI, smart plugs, exporters), Jetson and
-- Intel GPUs. A session records every source it sampled and which of them its IPW energy
-- sums (--ipw-scope); the gaps in each source's series; and the sources are cross-checked
-- against each other over the same window (gpu <= chips <= node <= wall).

ALTER TABLE results DROP CONSTRAINT results_power_source_check;
ALTER TABLE results ADD CONSTRAINT results_power_source_check CHECK (
    power_source ~ '^(nvml-counter|nvml-power|rapl|amd-hwmon|apple-ioreport|powermetrics|ipmi-dcmi|shelly|tasmota|json-meter|prometheus|jetson-ina3221|intel-hwmon)(\+(nvml-counter|nvml-power|rapl|amd-hwmon|apple-ioreport|powermetrics|ipmi-dcmi|shelly|tasmota|json-meter|prometheus|jetson-ina3221|intel-hwmon))*$'
    OR power_source = 'none');

-- Which sources the session's IPW energy sums. Sessions from before this flag summed every
-- chip-level source, which is what 'chips' means.
ALTER TABLE measurement_sessions
    ADD COLUMN ipw_scope text NOT NULL DEFAULT 'chips' CHECK (ipw_scope IN ('chips', 'gpu', 'node', 'wall'));

-- Time in which one source's energy is unknown (it did not answer, or its counter went
-- back), from its last good sample to its next. Sent again as it grows: the latest end wins.
CREATE TABLE session_power_gaps (
    session_id   uuid NOT NULL REFERENCES measurement_sessions (id) ON DELETE CASCADE,
    source_index integer NOT NULL CHECK (source_index >= 0),
    from_s       double precision NOT NULL,
    to_s         double precision NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (session_id, source_index, from_s),
    CHECK (to_s >= from_s)
);

-- One source's cumulative energy at `x` seconds on its session's clock, interpolated between
-- the samples around it; NULL outside its series.
CREATE FUNCTION session_source_energy_at(p_session uuid, p_source integer, x double precision)
RETURNS double precision LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT u.t, u.e
        FROM session_power_series p, unnest(p.t_s, p.energy_j) AS u(t, e)
        WHERE p.session_id = p_session AND p.source_index = p_source
    )
    SELECT CASE WHEN b.t = a.t THEN a.e ELSE a.e + (b.e - a.e) * (x - a.t) / (b.t - a.t) END
    FROM (SELECT t, e FROM s WHERE t <= x ORDER BY t DESC LIMIT 1) a,
         (SELECT t, e FROM s WHERE t >= x ORDER BY t LIMIT 1) b
$$;

-- One source's energy between two instants; NULL where its series does not reach both or a
-- gap of that source falls between them (energy is never interpolated across a dead meter).
CREATE FUNCTION session_source_energy(p_session uuid, p_source integer, p_from double precision, p_to double precision)
RETURNS double precision LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (
                    SELECT 1 FROM session_power_gaps g
                    WHERE g.session_id = p_session AND g.source_index = p_source
                      AND g.from_s < p_to AND g.to_s > p_from)
                THEN NULL
                ELSE session_source_energy_at(p_session, p_source, p_to)
                     - session_source_energy_at(p_session, p_source, p_from)
           END
$$;

-- Each source of each session over one window: the steady window where the session has one,
-- else the span every source's series covers.
CREATE VIEW session_source_energy AS
WITH w AS (
    SELECT m.id AS session_id, m.run_id, m.agent_id, m.ipw_scope, m.sources,
           m.steady_from_s IS NOT NULL AND m.steady_to_s IS NOT NULL AS window_is_steady,
           CASE WHEN m.steady_to_s IS NOT NULL THEN m.steady_from_s ELSE span.from_s END AS from_s,
           CASE WHEN m.steady_to_s IS NOT NULL THEN m.steady_to_s ELSE span.to_s END AS to_s
    FROM measurement_sessions m
    LEFT JOIN LATERAL (
        SELECT max(first_t) AS from_s, min(last_t) AS to_s
        FROM (SELECT source_index, min(t_s[1]) AS first_t, max(t_s[cardinality(t_s)]) AS last_t
              FROM session_power_series
              WHERE session_id = m.id AND cardinality(t_s) > 0
              GROUP BY source_index) per_source
    ) span ON true
)
SELECT w.session_id, w.run_id, w.agent_id, w.ipw_scope,
       (src.ord - 1)::integer AS source_index,
       src.s ->> 'kind' AS kind,
       src.s ->> 'scope' AS scope,
       src.s ->> 'name' AS name,
       -- Sources recorded before stated errors were: NVML's 5 %.
       coalesce(nullif((src.s ->> 'stated_error')::double precision, 0), 0.05) AS stated_error,
       -- Sessions recorded before --ipw-scope summed every source.
       coalesce((src.s ->> 'in_ipw_scope')::boolean, true) AS in_ipw_scope,
       w.from_s, w.to_s, w.window_is_steady,
       session_source_energy(w.session_id, (src.ord - 1)::integer, w.from_s, w.to_s) AS energy_j,
       (SELECT string_agg(format('%s s..%s s: %s', round(g.from_s::numeric, 1), round(g.to_s::numeric, 1), g.reason), '; '
                          ORDER BY g.from_s)
        FROM session_power_gaps g
        WHERE g.session_id = w.session_id AND g.source_index = src.ord - 1
          AND g.from_s < w.to_s AND g.to_s > w.from_s) AS gaps
FROM w, jsonb_array_elements(w.sources) WITH ORDINALITY AS src(s, ord)
WHERE w.to_s > w.from_s;

-- Per session, the energy of each level over the same window, and whether they nest:
-- gpu <= chips <= node <= wall, each allowed its stated error (the largest of a level's
-- sources). A level with a source whose energy is unknown is unknown.
CREATE VIEW source_crosscheck AS
WITH levels AS (
    SELECT session_id, run_id, agent_id, ipw_scope, from_s, to_s, window_is_steady,
           CASE WHEN bool_and(energy_j IS NOT NULL) FILTER (WHERE scope = 'gpu')
                THEN sum(energy_j) FILTER (WHERE scope = 'gpu') END AS gpu_j,
           max(stated_error) FILTER (WHERE scope = 'gpu') AS gpu_error,
           CASE WHEN bool_and(energy_j IS NOT NULL) FILTER (WHERE scope IN ('gpu', 'cpu-package', 'dram', 'soc'))
                THEN sum(energy_j) FILTER (WHERE scope IN ('gpu', 'cpu-package', 'dram', 'soc')) END AS chips_j,
           max(stated_error) FILTER (WHERE scope IN ('gpu', 'cpu-package', 'dram', 'soc')) AS chips_error,
           count(*) FILTER (WHERE scope IN ('cpu-package', 'dram', 'soc')) > 0 AS chips_beyond_gpu,
           CASE WHEN bool_and(energy_j IS NOT NULL) FILTER (WHERE scope = 'node')
                THEN sum(energy_j) FILTER (WHERE scope = 'node') END AS node_j,
           max(stated_error) FILTER (WHERE scope = 'node') AS node_error,
           CASE WHEN bool_and(energy_j IS NOT NULL) FILTER (WHERE scope = 'wall')
                THEN sum(energy_j) FILTER (WHERE scope = 'wall') END AS wall_j,
           max(stated_error) FILTER (WHERE scope = 'wall') AS wall_error
    FROM session_source_energy
    GROUP BY session_id, run_id, agent_id, ipw_scope, from_s, to_s, window_is_steady
),
checks AS (
    SELECT l.*,
           array_remove(ARRAY[
               CASE WHEN l.gpu_j * (1 - l.gpu_error) > l.node_j * (1 + l.node_error)
                    THEN format('gpu %s J > node %s J', round(l.gpu_j::numeric, 1), round(l.node_j::numeric, 1)) END,
               CASE WHEN l.chips_beyond_gpu AND l.chips_j * (1 - l.chips_error) > l.node_j * (1 + l.node_error)
                    THEN format('chips %s J > node %s J', round(l.chips_j::numeric, 1), round(l.node_j::numeric, 1)) END,
               CASE WHEN l.gpu_j * (1 - l.gpu_error) > l.wall_j * (1 + l.wall_error)
                    THEN format('gpu %s J > wall %s J', round(l.gpu_j::numeric, 1), round(l.wall_j::numeric, 1)) END,
               CASE WHEN l.chips_beyond_gpu AND l.chips_j * (1 - l.chips_error) > l.wall_j * (1 + l.wall_error)
                    THEN format('chips %s J > wall %s J', round(l.chips_j::numeric, 1), round(l.wall_j::numeric, 1)) END,
               CASE WHEN l.node_j * (1 - l.node_error) > l.wall_j * (1 + l.wall_error)
                    THEN format('node %s J > wall %s J', round(l.node_j::numeric, 1), round(l.wall_j::numeric, 1)) END
           ], NULL) AS violations,
           (l.gpu_j IS NOT NULL)::int + (l.chips_beyond_gpu AND l.chips_j IS NOT NULL)::int
               + (l.node_j IS NOT NULL)::int + (l.wall_j IS NOT NULL)::int AS levels_known
    FROM levels l
)
SELECT session_id, run_id, agent_id, ipw_scope, from_s, to_s, window_is_steady,
       gpu_j, chips_j, node_j, wall_j,
       gpu_j / nullif(node_j, 0) AS gpu_share_of_node,
       chips_j / nullif(node_j, 0) AS chips_share_of_node,
       node_j / nullif(wall_j, 0) AS node_share_of_wall,
       -- Unknown with fewer than two levels to compare.
       CASE WHEN levels_known >= 2 THEN cardinality(violations) = 0 END AS consistent,
       nullif(array_to_string(violations, '; ') || ' (beyond their stated errors)', ' (beyond their stated errors)') AS problem
FROM checks;

-- Per run: how many of its sessions could be cross-checked, how many failed, and why; and
-- the GPU's share of the node's energy over their windows.
CREATE VIEW run_source_checks AS
SELECT run_id,
       count(*) FILTER (WHERE consistent IS NOT NULL) AS sessions_checked,
       count(*) FILTER (WHERE NOT consistent) AS sessions_inconsistent,
       string_agg(problem, '; ') FILTER (WHERE NOT consistent) AS problems,
       sum(gpu_j) FILTER (WHERE gpu_j IS NOT NULL AND node_j IS NOT NULL)
           / nullif(sum(node_j) FILTER (WHERE gpu_j IS NOT NULL AND node_j IS NOT NULL), 0) AS gpu_share_of_node
FROM source_crosscheck
GROUP BY run_id;

-- `ipw report --sources`: per run (every run when the list is empty), each session's sources
-- over its window, their energy, their share of the IPW scope's, the node's and the wall's
-- energy, and the session's cross-check.
CREATE FUNCTION source_report(p_runs uuid[])
RETURNS TABLE (run_id uuid, model text, agent text, session_id uuid, window_s double precision,
               window_is_steady boolean, source text, name text, scope text, in_ipw_scope boolean,
               energy_j double precision, mean_power_w double precision, share_of_ipw double precision,
               share_of_node double precision, share_of_wall double precision, stated_error double precision,
               gaps text, consistent boolean, problem text)
LANGUAGE sql STABLE AS $$
    SELECT e.run_id, mo.name, a.name, e.session_id, e.to_s - e.from_s, e.window_is_steady,
           e.kind, e.name, e.scope, e.in_ipw_scope,
           e.energy_j, e.energy_j / nullif(e.to_s - e.from_s, 0),
           CASE WHEN bool_and(e.energy_j IS NOT NULL) FILTER (WHERE e.in_ipw_scope) OVER s
                THEN e.energy_j / nullif(sum(e.energy_j) FILTER (WHERE e.in_ipw_scope) OVER s, 0) END,
           e.energy_j / nullif(c.node_j, 0),
           e.energy_j / nullif(c.wall_j, 0),
           e.stated_error, e.gaps, c.consistent, c.problem
    FROM session_source_energy e
    JOIN source_crosscheck c USING (session_id)
    JOIN runs r ON r.id = e.run_id
    JOIN models mo ON mo.id = r.model_id
    JOIN agents a ON a.id = e.agent_id
    WHERE cardinality(p_runs) = 0 OR e.run_id = ANY (p_runs)
    WINDOW s AS (PARTITION BY e.session_id)
    ORDER BY r.created_at, e.run_id, a.name, e.session_id, e.source_index
$$;
