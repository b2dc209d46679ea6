//! Attested TLS (DESIGN.md §7): the guest's inference server proves, inside its TLS certificate,
//! that it is a measured guest serving a given model, and a client verifies that before any
//! input leaves. A second, fresh attestation is bound to the very TLS connection it travels on.
//!
//! - [`cert`] (guest): a fresh ECDSA P-256 key, evidence bound to it, and a self-signed
//!   certificate carrying the evidence, ready for a TLS 1.3 `rustls::ServerConfig`.
//! - [`verify`] (client): a `rustls` server-certificate verifier that accepts a certificate only
//!   if its evidence passes the appraisal pipeline and binds the certificate's key and the
//!   expected model digest; it records what it verified ([`AttestedPeer`]).
//! - [`fresh`] (both): the channel-bound attestation of `GET /v1/attestation?nonce=HEX`.
//! - [`extension`]: the certificate extension's encoding.
//!
//! # What is trusted
//!
//! Nothing about the certificate itself: it is self-signed and chains to no CA, and its names
//! are not checked. Trust comes only from the evidence: a report signed by the TEE's key
//! hierarchy (AMD, Intel; the sim root only when configured insecurely) whose REPORT_DATA binds
//! the certificate's public key and the model digest, appraised against the client's policy
//! (measurement, TCB, debug, …). The TLS 1.3 handshake signature then proves that the server
//! holds that key. So a connection that completes is with *a guest the policy accepts, serving
//! the expected model, holding this certificate's key* — nothing more, in particular not a host
//! name.
//!
//! # The evidence extension
//!
//! | | |
//! |---|---|
//! | OID | [`EVIDENCE_OID`] = `2.25.2147383400` ([`EVIDENCE_OID_STR`]) |
//! | critical | FALSE (omitted, the DER default); a critical one is rejected |
//! | `extnValue` | the DER encoding of an ASN.1 `OCTET STRING` whose contents are the CBOR [`Evidence`] |
//! | count | exactly one; a certificate with any duplicated extension is rejected (RFC 5280 §4.2) |
//!
//! The OID is self-allocated under the UUID arc `2.25` (ITU-T X.667) with a random arc, because
//! Nacre holds no IANA Private Enterprise Number yet; it should move under one before the
//! format is frozen. Every arc stays below 2³¹: Go's `encoding/asn1` refuses larger arcs (so
//! `crypto/x509` could not even parse the certificate), `asn1-rs` will not iterate arcs of
//! more than nine base-128 digits, and `rcgen` encodes only 64-bit arcs. (The arc
//! `1.3.6.1.4.1.57264` sometimes suggested as an example is Sigstore's: its `.1.1` is Fulcio's
//! OIDC-issuer extension.) DER of the OID's contents: `69 87 ff f9 f0 68`.
//!
//! The extension is non-critical because criticality buys nothing here — a client that does
//! not understand the extension cannot trust this self-signed certificate anyway — while a
//! critical unknown extension makes strict X.509 code refuse the certificate outright: webpki,
//! which rustls uses to check the handshake signature and, on the server, the key/certificate
//! match of `with_single_cert`.
//!
//! The CBOR is the `Evidence` map of `nacre-wire` — `{"tee": "snp"|"tdx"|"sim", "report": bstr,
//! "certs": [bstr, …]}` in that key order, definite lengths, shortest integer forms — exactly as
//! it re-encodes: a verifier decodes it, re-encodes it and requires the same bytes, so the
//! extension has one encoding. At most [`MAX_EVIDENCE_LEN`] bytes.
//!
//! # The binding
//!
//! `REPORT_DATA = SHA-512("nacre/v2/tls" || CBOR([spki_sha256, model_identity, guard_digest,
//! release_key_digest, client_nonce, tls_exporter]))` (`nacre_wire::binding::TlsBinding`), all
//! 64 bytes compared, where
//!
//! - `spki_sha256`: `bstr(32)`, SHA-256 of the certificate's whole DER `SubjectPublicKeyInfo`;
//! - `model_identity`: `bstr(32)`, the model identity (docs/sealed-format.md) the enclave
//!   recomputed from the plaintext it serves;
//! - `guard_digest`: `bstr(32)`, SHA-256 of the owner's guard manifest, zeros without one;
//! - `release_key_digest`: `bstr(32)`, SHA-256 of the HPKE public key the enclave sent with its
//!   key-release request (the transparency log's release leaf has the same digest), zeros if the
//!   model was not released by the attestation service;
//! - in the certificate: `client_nonce` and `tls_exporter` are CBOR `null` (`0xf6`);
//! - in a fresh attestation: `client_nonce` is the client's 32-byte nonce and `tls_exporter` is
//!   the 32-byte TLS 1.3 exporter (RFC 8446 §7.5) of the connection the request arrived on, with
//!   label [`EXPORTER_LABEL`] `"EXPORTER-nacre-attestation"` and an empty context. Both are
//!   `bstr(32)`.
//!
//! The three model values also travel in the certificate, in the model binding extension
//! ([`BINDING_OID`]), so that a client can show them and name a mismatch; they are trusted only
//! because the evidence's REPORT_DATA binds them.
//!
//! The certificate's evidence shows which guest holds the key; the fresh evidence shows that the
//! guest itself — not a relay holding a leaked copy of the key — terminates this connection,
//! now: a relay has its own TLS session with the guest and therefore a different exporter.
#![forbid(unsafe_code)]

pub mod cert;
pub mod error;
pub mod extension;
pub mod fresh;
pub mod verify;

pub use cert::{AttestedCert, CertOptions};
pub use error::{AtlsError, CertError, Malformed};
pub use fresh::{Exporter, Nonce, exporter, fresh_report_data, verify_fresh};
pub use nacre_wire::Evidence;
pub use verify::{AttestationPolicy, AttestedPeer, AttestedServerVerifier, verify_certificate};

/// The evidence extension's OID, `2.25.2147383400`, as arcs.
pub const EVIDENCE_OID: &[u64] = &[2, 25, 2_147_383_400];
/// The evidence extension's OID in dotted form.
pub const EVIDENCE_OID_STR: &str = "2.25.2147383400";
/// The model binding extension's OID: the next arc after the evidence's, non-critical, exactly
/// one; its value is a DER `OCTET STRING` of the 96 bytes of `ModelBinding::to_bytes`.
pub const BINDING_OID: &[u64] = &[2, 25, 2_147_383_401];
pub const BINDING_OID_STR: &str = "2.25.2147383401";

/// Largest CBOR evidence accepted in the extension or a fresh-attestation response: the
/// envelope's own limits (a 16 KiB report, 8 certificates of 8 KiB) plus framing.
pub const MAX_EVIDENCE_LEN: usize = 96 * 1024;

/// The TLS exporter label of the channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-nacre-attestation";
/// Length of the exporter value bound into a fresh attestation.
pub const EXPORTER_LEN: usize = 32;
/// Length of a client nonce (64 hex digits in the query).
pub const NONCE_LEN: usize = 32;
