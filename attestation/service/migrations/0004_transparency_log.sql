-- Nacre attestation service schema, version 4: the transparency log (issue 20; nacre-tlog and
-- src/store/log.rs). Portable SQL, like 0001.

-- One row per leaf: the public entry (canonical JSON, nacre_tlog::Entry) and the audit record
-- it was written with. Leaves are appended in the same transaction as their audit record.
CREATE TABLE log_entries (
    idx   BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL UNIQUE,
    entry TEXT NOT NULL
);

-- The tree's stored hashes (Go tlog's layout: each leaf hash, then each subtree it completes),
-- hex. Tiles and proofs are read from here.
CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash TEXT NOT NULL
);

-- The checkpoint signed for each tree size the log reached (one per write transaction), with
-- the witness cosignatures collected for it appended to the note.
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- The tree size, advanced under the same head row every write takes first, so that replicas
-- on one database sequence leaves through it and the tree never forks.
ALTER TABLE audit_head ADD COLUMN log_size BIGINT NOT NULL DEFAULT 0;
