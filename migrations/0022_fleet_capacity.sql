-- The installed base as capacity: per hardware class of the approved agents, how many there
-- are, their power envelope, and the best IPW measured on the class, per workload.
--
-- The power limit of an agent is the latest one it reported in a run's provenance (NVML's
-- enforced limit, for example); the class's `power_limit_w` is their sum, NULL unless every
-- agent of the class reported one. Two products of it, each named for what it is:
--   ipw_x_power_limit = best IPW (accuracy per watt) x power_limit_w: the accuracy-weighted
--                       power envelope the seed's "installed base" argument multiplies out;
--   correct_per_s     = best IPJ (accuracy per joule) x power_limit_w: accuracy-weighted
--                       queries per second the class could serve at its power limit.
-- A class with no measured run has one row, with workload and the measured figures NULL.
CREATE VIEW fleet_capacity AS
WITH agent_limits AS (
    SELECT a.id, a.hardware_class,
           (SELECT p.power_limit_w FROM run_provenance p
            WHERE p.agent_id = a.id AND p.power_limit_w IS NOT NULL
            ORDER BY p.recorded_at DESC LIMIT 1) AS power_limit_w,
           (SELECT count(*) FROM accelerators ac WHERE ac.agent_id = a.id) AS accelerators
    FROM agents a
    WHERE a.status = 'approved'
),
classes AS (
    SELECT hardware_class, count(*) AS agents, sum(accelerators)::bigint AS accelerators,
           count(power_limit_w) AS agents_with_power_limit,
           CASE WHEN count(power_limit_w) = count(*) THEN sum(power_limit_w) END AS power_limit_w
    FROM agent_limits GROUP BY hardware_class
),
best AS (
    SELECT DISTINCT ON (s.hardware_class, s.workload) s.hardware_class, s.workload, s.run_id, s.model, s.ipw, s.ipj
    FROM ipw_summary s
    WHERE s.ipw IS NOT NULL
    ORDER BY s.hardware_class, s.workload, s.ipw DESC, s.run_id
)
SELECT c.hardware_class, c.agents, c.accelerators, c.agents_with_power_limit, c.power_limit_w,
       b.workload, b.run_id AS best_run_id, b.model AS best_model, b.ipw AS best_ipw, b.ipj AS best_ipj,
       b.ipw * c.power_limit_w AS ipw_x_power_limit,
       b.ipj * c.power_limit_w AS correct_per_s,
       nullif(concat_ws('; ',
           CASE WHEN b.run_id IS NULL THEN 'no run on this class has a measured IPW' END,
           CASE WHEN c.power_limit_w IS NULL
                THEN format('%s of %s agents never reported a power limit', c.agents - c.agents_with_power_limit, c.agents)
           END), '') AS null_reason
FROM classes c
LEFT JOIN best b ON b.hardware_class = c.hardware_class
ORDER BY c.hardware_class, b.workload;
