-- Remote OpenAI-compatible endpoints as comparators. An agent told `--engine-remote` records
-- it in its provenance; energy of a remote query is never observable from the client, so its
-- results carry NULL energy with that reason. Rate limits the endpoint imposed are counted
-- per result: how many 429 answers the request waited out before its final outcome.

ALTER TABLE run_provenance
    ADD COLUMN engine_remote boolean NOT NULL DEFAULT false;

ALTER TABLE results
    ADD COLUMN rate_limited integer NOT NULL DEFAULT 0 CHECK (rate_limited >= 0);
