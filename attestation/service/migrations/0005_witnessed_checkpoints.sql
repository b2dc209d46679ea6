-- Nacre attestation service schema, version 5: witness cosignatures (issue 20). How many
-- witnesses have cosigned each checkpoint, so that the best witnessed checkpoint covering a
-- leaf is one indexed query (GET /v1/log/witnessed/<index>).
ALTER TABLE log_checkpoints ADD COLUMN cosigners INTEGER NOT NULL DEFAULT 0;
CREATE INDEX log_checkpoints_witnessed ON log_checkpoints (cosigners, size);
