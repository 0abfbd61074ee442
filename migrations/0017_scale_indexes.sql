-- Leasing at a million queries: each lease finds its shard through an index, instead of
-- walking past every shard already leased.
--
-- The next pending shard of a run, in shard order (lease_in_run.sql).
CREATE INDEX shards_pending_idx ON shards (run_id, shard_index) WHERE status = 'pending';
-- Leases that ran out: re-leased first, and counted by `fail_exhausted`.
CREATE INDEX shards_lease_expiry_idx ON shards (run_id, lease_expires_at) WHERE status = 'leased';
CREATE INDEX shards_leased_expiry_idx ON shards (lease_expires_at) WHERE status = 'leased';
-- The open-shard index served both, and is no longer used.
DROP INDEX shards_open_idx;

-- A run of a million queries writes a million rows into `run_queries`. Each foreign key
-- checked every row on its own, and each index took the rows in random order: 35 s for
-- `ipw run create --sample 1000000`. The rows are written only by set-based statements that
-- draw them from the run's own workload and shards (store/runs.rs, and
-- `repeat_if_unsettled`), so those checks only ever confirmed what the statement built; results
-- still reference `run_queries`, so nothing outside a run's sample can be measured. The rows
-- are inserted in query order, so the primary key grows at its end. A run's rows go with it
-- (the trigger below, in place of ON DELETE CASCADE); the position needs no index of its own
-- (a shard's queries are read through `run_queries_shard_idx` and sorted).
ALTER TABLE run_queries DROP CONSTRAINT run_queries_query_id_fkey;
ALTER TABLE run_queries DROP CONSTRAINT run_queries_shard_id_fkey;
ALTER TABLE run_queries DROP CONSTRAINT run_queries_run_id_fkey;
ALTER TABLE run_queries DROP CONSTRAINT run_queries_run_id_position_key;

CREATE FUNCTION forget_run_queries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_queries WHERE run_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$;
CREATE TRIGGER runs_deleted_take_their_queries AFTER DELETE ON runs
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION forget_run_queries();

-- A run's sample and shard layout copied to another run (new, pending shards): the other runs
-- of a sweep instance (store/runs.rs) and each repeat of a run (`repeat_if_unsettled`). Rows
-- go in key order, as the draw writes them.
CREATE FUNCTION copy_sample(from_run uuid, to_run uuid) RETURNS void LANGUAGE sql AS $$
    INSERT INTO shards (id, run_id, shard_index)
    SELECT gen_random_uuid(), to_run, shard_index FROM shards WHERE run_id = from_run;
    INSERT INTO run_queries (run_id, query_id, position, shard_id)
    SELECT to_run, rq.query_id, rq.position, ns.id
    FROM run_queries rq
    JOIN shards os ON os.id = rq.shard_id
    JOIN shards ns ON ns.run_id = to_run AND ns.shard_index = os.shard_index
    WHERE rq.run_id = from_run
    ORDER BY rq.query_id;
$$;

CREATE OR REPLACE FUNCTION repeat_if_unsettled(finished uuid) RETURNS uuid LANGUAGE plpgsql AS $$
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
    PERFORM copy_sample(finished, next_id);
    INSERT INTO scorings (id, run_id, kind) VALUES (gen_random_uuid(), next_id, 'ingest');
    RETURN next_id;
END
$$;
