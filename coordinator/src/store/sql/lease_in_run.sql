-- Leases one shard of run $1 to agent $2 for $3 seconds: a lease that ran out first (the
-- oldest), else the next pending shard in order. Each branch reads one index entry; SKIP
-- LOCKED lets many agents (and replicas) take different shards at once. The pending branch
-- runs only when no lease has run out, and must use `shards_pending_idx`
-- (tests/scale.rs checks the plan).
WITH next AS (
    SELECT id, true AS reclaimed FROM (SELECT id FROM shards
                    WHERE run_id = $1 AND status = 'leased' AND lease_expires_at < now()
                    ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED) expired
    UNION ALL
    SELECT id, false FROM (SELECT id FROM shards
                    WHERE run_id = $1 AND status = 'pending'
                    ORDER BY shard_index LIMIT 1 FOR UPDATE SKIP LOCKED) pending
    LIMIT 1)
UPDATE shards s
SET status = 'leased', lease_owner = $2, attempts = s.attempts + 1,
    lease_expires_at = now() + make_interval(secs => $3)
FROM next WHERE s.id = next.id
RETURNING s.id, s.run_id, s.shard_index, s.attempts, s.lease_expires_at AS "expires_at!",
          next.reclaimed AS "reclaimed!"
