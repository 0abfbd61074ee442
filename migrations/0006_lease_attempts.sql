-- A shard whose lease keeps running out is failed, with the reason, instead of being handed
-- out forever.
ALTER TABLE shards ADD COLUMN failure_reason text;
ALTER TABLE shards ADD CONSTRAINT shards_failed_has_reason CHECK (status <> 'failed' OR failure_reason IS NOT NULL);
