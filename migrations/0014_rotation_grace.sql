-- A rotated agent keeps its previous credential (and client certificate) until it first uses
-- the new one: a lost reply or a crash before the agent saved the new credential no longer
-- locks it out for good.
ALTER TABLE agents
    ADD COLUMN previous_credential_hash bytea,
    ADD COLUMN previous_client_cert_sha256 bytea;
