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
