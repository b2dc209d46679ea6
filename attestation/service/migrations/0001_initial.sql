-- Nacre attestation service schema, version 1. Portable SQL: the same file runs on SQLite and
-- PostgreSQL. Binary values are stored as lower-case hex TEXT so that both databases, exports
-- and audit hashes see the same strings.

-- One row per key id: its release policy (TOML) and which version is current.
CREATE TABLE keys (
    key_id          TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,
    revoked         BIGINT NOT NULL DEFAULT 0, -- 0 or 1 (sqlx::Any has no SQLite boolean)
    policy          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Data key versions, envelope-encrypted under a master key named by kek_id.
CREATE TABLE key_versions (
    key_id      TEXT NOT NULL REFERENCES keys (key_id),
    version     BIGINT NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, version)
);

-- Nonces that were presented with a release request. The primary key makes each nonce usable
-- once across every replica; rows past expires_at are garbage-collected.
CREATE TABLE used_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);

-- The hash-chained audit log (see nacre_protocol::messages::AuditRecord::compute_hash).
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    key_id      TEXT,
    key_version BIGINT,
    decision    TEXT NOT NULL,
    reason      TEXT,
    tee         TEXT,
    measurement TEXT,
    chip_id     TEXT,
    source      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

-- The chain head. Every write transaction updates this single row first, which serialises
-- audit appends (and the checks made under them) across connections and replicas.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
