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

-- A run of a million queries wrote a million rows into `run_queries`, each checked by two
-- row-by-row foreign-key triggers. The rows come from one `INSERT ... SELECT` over the run's
-- own workload and shards (store/runs.rs); one check per statement now says the same: every
-- query is one of the run's workload, every shard one of the run's. Nothing can delete a
-- query under a run (runs.workload_id keeps the workload), and a run's shards go only with
-- the run, which takes its `run_queries` with it (run_id stays a foreign key).
ALTER TABLE run_queries DROP CONSTRAINT run_queries_query_id_fkey;
ALTER TABLE run_queries DROP CONSTRAINT run_queries_shard_id_fkey;

CREATE FUNCTION check_run_queries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.run_id, n.query_id, n.shard_id,
           q.id IS NULL AS foreign_query, s.id IS NULL AS foreign_shard INTO bad
    FROM added n
    JOIN runs r ON r.id = n.run_id
    LEFT JOIN queries q ON q.id = n.query_id AND q.workload_id = r.workload_id
    LEFT JOIN shards s ON s.id = n.shard_id AND s.run_id = n.run_id
    WHERE q.id IS NULL OR s.id IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format(
            'run %s: query %s is not one of its workload''s, or shard %s is not one of its shards',
            bad.run_id, bad.query_id, bad.shard_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER run_queries_belong_to_their_run AFTER INSERT ON run_queries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION check_run_queries();
CREATE TRIGGER run_queries_updated_belong_to_their_run AFTER UPDATE ON run_queries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION check_run_queries();
