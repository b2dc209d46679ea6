-- Nacre attestation service schema, version 2: imported reference values (see
-- nacre_protocol::reference). Portable SQL, like 0001.

-- One row per reference-values name; an import of the same name replaces the row. The
-- document and its signature are kept byte for byte (both are JSON text), so every replica can
-- re-verify them under its own trusted signers when a release policy names them.
CREATE TABLE reference_values (
    name        TEXT PRIMARY KEY,
    document    TEXT NOT NULL,
    signature   TEXT NOT NULL,
    signer      TEXT NOT NULL, -- hex Ed25519 public key
    imported_at BIGINT NOT NULL
);
