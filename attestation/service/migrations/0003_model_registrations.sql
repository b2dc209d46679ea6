-- Nacre attestation service schema, version 3: the model each key version was registered for,
-- and the publisher's signature over it (issue 16; see src/signers.rs). Portable SQL, like 0001.

-- At most one row per key version, written with the version and never changed: a release under
-- a policy with signers re-verifies signature_bundle against the policy in force, at
-- registered_at. The verdict columns are the check made at registration (NULL when the policy
-- then named no signers), for the admin API and the audit.
CREATE TABLE model_registrations (
    key_id              TEXT NOT NULL,
    version             BIGINT NOT NULL,
    model_identity      TEXT NOT NULL,   -- hex, the sealed header's identity
    signature_bundle    TEXT,            -- the OMS bundle (JSON), byte for byte
    registered_at       BIGINT NOT NULL, -- unix seconds: the time the bundle is checked at
    signer              TEXT,            -- key:sha256:<hex> or email:/uri:/cn:<identity>
    certificate_subject TEXT,
    certificate_issuer  TEXT,
    manifest            TEXT,            -- shards or whole_file
    subject_digest      TEXT,            -- hex OMS subject digest
    file_sha256         TEXT,            -- hex, whole_file only: the enclave checks it
    checked_at          BIGINT,
    PRIMARY KEY (key_id, version),
    FOREIGN KEY (key_id, version) REFERENCES key_versions (key_id, version)
);
