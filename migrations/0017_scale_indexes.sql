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
