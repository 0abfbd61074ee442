-- Hybrid-routing simulation over measured runs on the same queries.
--
-- The candidates are `runs` in the order given, then `fallback` if it is not among them. The
-- queries are those the fallback run has results for. Per (candidate, query), over its
-- repetitions: correct when every repetition was scored correct; energy and cost are the
-- means, NULL when any repetition lacks them.
--
-- The oracle sends each query to the candidate that answered it correctly at the least energy
-- (objective 'energy') or cost ('cost'); ties go to the candidate listed first. A candidate
-- whose figure is NULL cannot be ranked and is passed over. A query no candidate answered goes
-- to the fallback.
--
-- The p-accurate router makes the oracle's choice when draw_a < p, and otherwise one of the
-- other candidates that has a result for the query: the one at index floor(draw_b x n) among
-- those n, in candidate order. The draws are hashes of (seed, query id), computable by hand:
--   draw_a = ((query_id x 2654435761 + seed x 40503) mod 2^32) / 2^32
--   draw_b = ((query_id x 2246822519 + seed x 3266489917) mod 2^32) / 2^32

CREATE FUNCTION routing_draw(query_id bigint, seed integer, salt integer) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((query_id::numeric * CASE salt WHEN 0 THEN 2654435761 ELSE 2246822519 END
             + seed::numeric * CASE salt WHEN 0 THEN 40503 ELSE 3266489917 END) % 4294967296)::double precision
           / 4294967296
$$;

-- One row per query: the oracle's choice, the router's, and what the router's choice gave.
CREATE FUNCTION routing_choices(runs uuid[], fallback uuid, objective text, router_accuracy double precision,
                                seed integer)
RETURNS TABLE (query_id bigint, oracle_run uuid, chosen_run uuid, draw_a double precision,
               answered_by_any boolean, correct boolean, energy_j double precision, cost double precision)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF objective IS NULL OR objective NOT IN ('energy', 'cost') THEN
        RAISE EXCEPTION 'routing objective must be ''energy'' or ''cost'', not %', coalesce(quote_literal(objective), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF router_accuracy IS NULL OR router_accuracy < 0 OR router_accuracy > 1 THEN
        RAISE EXCEPTION 'router accuracy must be between 0 and 1, not %', coalesce(router_accuracy::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fallback IS NULL OR runs IS NULL OR seed IS NULL THEN
        RAISE EXCEPTION 'routing needs runs, a fallback run and a seed' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM results r WHERE r.run_id = fallback) THEN
        RAISE EXCEPTION 'the fallback run % has no results', fallback USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(runs) u(id) LEFT JOIN runs ru ON ru.id = u.id
               WHERE ru.workload_id IS DISTINCT FROM (SELECT workload_id FROM runs WHERE id = fallback)) THEN
        RAISE EXCEPTION 'every run must exist and be on the fallback run''s workload: %',
            (SELECT string_agg(u.id::text, ', ') FROM unnest(runs) u(id) LEFT JOIN runs ru ON ru.id = u.id
             WHERE ru.workload_id IS DISTINCT FROM (SELECT workload_id FROM runs WHERE id = fallback))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH cand AS (
        SELECT c.id AS run_id, min(c.pos) AS pos
        FROM (SELECT u.id, u.pos FROM unnest(runs) WITH ORDINALITY u(id, pos)
              UNION ALL SELECT fallback, 1e9::bigint) c
        GROUP BY c.id
    ),
    per AS (
        SELECT qc.run_id, cand.pos, qc.query_id,
               bool_and(coalesce(qc.acc = 1, false)) AS correct,
               CASE WHEN count(qc.energy_j) = count(*) THEN avg(qc.energy_j) END AS energy_j,
               CASE WHEN count(qc.cost) = count(*) THEN avg(qc.cost) END AS cost
        FROM query_costs qc JOIN cand ON cand.run_id = qc.run_id
        GROUP BY qc.run_id, cand.pos, qc.query_id
    ),
    universe AS (SELECT p.query_id FROM per p WHERE p.run_id = fallback),
    oracle AS (
        SELECT u.query_id,
               coalesce((SELECT p.run_id FROM per p
                         WHERE p.query_id = u.query_id AND p.correct
                           AND (CASE objective WHEN 'energy' THEN p.energy_j ELSE p.cost END) IS NOT NULL
                         ORDER BY CASE objective WHEN 'energy' THEN p.energy_j ELSE p.cost END, p.pos
                         LIMIT 1), fallback) AS run_id,
               EXISTS (SELECT 1 FROM per p WHERE p.query_id = u.query_id AND p.correct) AS answered,
               routing_draw(u.query_id, seed, 0) AS draw_a,
               routing_draw(u.query_id, seed, 1) AS draw_b
        FROM universe u
    ),
    routed AS (
        SELECT o.*,
               CASE WHEN o.draw_a < router_accuracy THEN o.run_id
                    ELSE coalesce((SELECT p.run_id FROM per p
                                   WHERE p.query_id = o.query_id AND p.run_id <> o.run_id
                                   ORDER BY p.pos
                                   OFFSET floor(o.draw_b * (SELECT count(*) FROM per p2
                                                            WHERE p2.query_id = o.query_id AND p2.run_id <> o.run_id))::bigint
                                   LIMIT 1), o.run_id) END AS chosen
        FROM oracle o
    )
    SELECT r.query_id, r.run_id, r.chosen, r.draw_a, r.answered, p.correct, p.energy_j, p.cost
    FROM routed r JOIN per p ON p.run_id = r.chosen AND p.query_id = r.query_id
    ORDER BY r.query_id;
END
$$;

-- The simulation's outcome: one row per candidate run (its share of the queries, and how many
-- of its results lacked energy or cost), with the totals on every row: accuracy routed and
-- fallback-only, energy and cost routed and fallback-only with the savings in percent, and
-- the queries no candidate answered. A total is NULL when any query in it lacks the figure.
CREATE FUNCTION routing(runs uuid[], fallback uuid, objective text, router_accuracy double precision, seed integer)
RETURNS TABLE (run_id uuid, is_fallback boolean, served bigint, share double precision, served_correct bigint,
               lacks_energy bigint, lacks_cost bigint, queries bigint, accuracy double precision,
               fallback_accuracy double precision, accuracy_kept double precision, energy_j double precision,
               fallback_energy_j double precision, energy_savings_pct double precision, cost double precision,
               fallback_cost double precision, cost_savings_pct double precision, unanswered bigint,
               unanswered_queries bigint[])
LANGUAGE sql STABLE AS $$
    WITH ch AS (SELECT * FROM routing_choices(runs, fallback, objective, router_accuracy, seed)),
    cand AS (
        SELECT c.id, min(c.pos) AS pos
        FROM (SELECT u.id, u.pos FROM unnest(runs) WITH ORDINALITY u(id, pos) UNION ALL SELECT fallback, 1e9::bigint) c
        GROUP BY c.id
    ),
    fb AS (
        SELECT qc.query_id, bool_and(coalesce(qc.acc = 1, false)) AS correct,
               CASE WHEN count(qc.energy_j) = count(*) THEN avg(qc.energy_j) END AS energy_j,
               CASE WHEN count(qc.cost) = count(*) THEN avg(qc.cost) END AS cost
        FROM query_costs qc WHERE qc.run_id = fallback GROUP BY qc.query_id
    ),
    lacking AS (
        SELECT qc.run_id, count(DISTINCT qc.query_id) FILTER (WHERE qc.energy_j IS NULL) AS no_energy,
               count(DISTINCT qc.query_id) FILTER (WHERE qc.cost IS NULL) AS no_cost
        FROM query_costs qc
        WHERE qc.run_id IN (SELECT id FROM cand) AND qc.query_id IN (SELECT query_id FROM fb)
        GROUP BY qc.run_id
    ),
    tot AS (
        SELECT count(*) AS n,
               avg(ch.correct::int)::double precision AS accuracy,
               CASE WHEN count(ch.energy_j) = count(*) THEN sum(ch.energy_j) END AS energy_j,
               CASE WHEN count(ch.cost) = count(*) THEN sum(ch.cost) END AS cost,
               count(*) FILTER (WHERE NOT ch.answered_by_any) AS unanswered,
               coalesce(array_agg(ch.query_id ORDER BY ch.query_id) FILTER (WHERE NOT ch.answered_by_any), '{}') AS unanswered_queries
        FROM ch
    ),
    fbt AS (
        SELECT avg(fb.correct::int)::double precision AS accuracy,
               CASE WHEN count(fb.energy_j) = count(*) THEN sum(fb.energy_j) END AS energy_j,
               CASE WHEN count(fb.cost) = count(*) THEN sum(fb.cost) END AS cost
        FROM fb
    )
    SELECT cand.id, cand.id = fallback,
           count(ch.query_id), count(ch.query_id)::double precision / NULLIF(tot.n, 0),
           count(ch.query_id) FILTER (WHERE ch.correct),
           coalesce(l.no_energy, 0), coalesce(l.no_cost, 0),
           tot.n, tot.accuracy, fbt.accuracy, tot.accuracy / NULLIF(fbt.accuracy, 0),
           tot.energy_j, fbt.energy_j, 100 * (1 - tot.energy_j / NULLIF(fbt.energy_j, 0)),
           tot.cost, fbt.cost, 100 * (1 - tot.cost / NULLIF(fbt.cost, 0)),
           tot.unanswered, tot.unanswered_queries
    FROM cand CROSS JOIN tot CROSS JOIN fbt
    LEFT JOIN ch ON ch.chosen_run = cand.id
    LEFT JOIN lacking l ON l.run_id = cand.id
    GROUP BY cand.id, cand.pos, tot.n, tot.accuracy, tot.energy_j, tot.cost, tot.unanswered, tot.unanswered_queries,
             fbt.accuracy, fbt.energy_j, fbt.cost, l.no_energy, l.no_cost
    ORDER BY cand.pos
$$;
