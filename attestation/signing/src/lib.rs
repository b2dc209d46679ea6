//! Offline verification of OpenSSF Model Signing (OMS) v1.0 bundles, as `model-signing` 1.x
//! writes them: a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an
//! in-toto Statement v1 with the `https://model_signing/signature/v1.0` predicate, a manifest of
//! file or shard digests.
//!
//! `nacre seal --signature` calls [`verify`] before sealing, and the attestation service calls it
//! at registration. Nothing here touches the network, the file system or the clock: the caller
//! passes the bundle, the pinned trust and the time.
//!
//! # What is verified
//! - The bundle: at most [`MAX_BUNDLE_LEN`] bytes, media type v0.3, strict JSON (unknown fields
//!   and duplicate keys refused), exactly one DSSE signature.
//! - The signer: [`Trust::public_key_pem`] (ECDSA P-256/P-384/P-521 with the curve's hash, as
//!   model-signing's `key` method), or [`Trust::certificate`] (model-signing's `certificate`
//!   method): the bundle's chain leads to a pinned root, every certificate on the path and the
//!   root itself are valid at the checking time, the leaf is not a CA, may sign (key usage
//!   digitalSignature / code-signing EKU) and carries the pinned identity.
//! - The DSSE signature over PAE("application/vnd.in-toto+json", payload), over the payload
//!   bytes received; the statement is parsed only afterwards, from those bytes.
//! - The statement: in-toto Statement v1, the OMS v1.0 predicate, one subject whose SHA-256 is
//!   recomputed over the resource digests, SHA-256 resources, one file (Nacre seals one ONNX
//!   file), and for shards: contiguous from 0, in order, every shard `shard_size` long but the
//!   last.
//!
//! Both manifests are accepted: [`Manifest::WholeFile`] (the model-signing CLI's only mode) and
//! [`Manifest::Shards`] (its Python API). Whether sealing takes whole-file bundles, at the cost
//! of one sequential SHA-256 in the enclave, is the caller's policy. The OMS subject digest is
//! SHA-256 over the resource digests alone; for shards the file length is bound through the
//! signed `path:start:end` names ([`Manifest::Shards::total_len`] comes from them), for a whole
//! file it is not stated at all.
//!
//! # What is not
//! - The model bytes: [`verify`] never sees them. [`Manifest::check_model`] recomputes them for a
//!   caller that holds the plaintext; the attestation service, which does not, compares the
//!   subject or shard digests with the sealed header's identity instead.
//! - Sigstore keyless bundles (Fulcio certificates with Rekor entries or RFC 3161 timestamps):
//!   their evidence is refused by name ([`Unsupported::KeylessEvidence`]), not ignored. So the
//!   signing time is never proven today, [`VerifiedSignature::signing_time`] is `None`, and
//!   certificates are checked at the caller's `now`.
//! - Revocation: no CRL or OCSP for the pinned CA's certificates.
//! - model-signing's pre-1.0 formats (the `Digests/v0.1` predicate and its PAE bug).
//!
//! # Dependencies, and why no Sigstore crate
//! `sigstore-verify` (sigstore-rust) checks keyless bundles against a trusted root, but it
//! refuses bundles without log or timestamp evidence, which is every bundle the OMS `key` and
//! `certificate` methods write: in 0.15.1 its structural check (`sigstore-bundle`'s
//! `validate_common`) returns `MissingSigningTimeEvidence` for a bundle with neither tlog
//! entries nor RFC 3161 timestamps, even under `PublicKeyVerificationPolicy::skip_tlog_unsafe`.
//! OMS's own checks (the in-toto statement, the predicate, the shard manifest) would remain ours
//! regardless. So this crate composes what is already in the tree: `aws-lc-rs` (SHA-256, ECDSA,
//! as everywhere in Nacre), `rustls-webpki` (certificate path validation, the validator rustls
//! already uses here, aws-lc-rs algorithms only), `x509-parser` (key usage, SAN, names),
//! `serde_json` (strict parsing), `base64`, `hex`, `pem`; tests add `rcgen` and `proptest`, also
//! already in the tree. DSSE's PAE is four lines. Keyless support, when it comes, needs Rekor
//! inclusion-proof and SET checks against a supplied `trusted_root.json`, and is the place to
//! reconsider `sigstore-verify`.

#![forbid(unsafe_code)]

mod bundle;
mod certificate;
mod dsse;
mod error;
mod key;
mod manifest;
mod statement;

use std::fmt;

pub use bundle::MAX_BUNDLE_LEN;
pub use error::{Inconsistency, ModelMismatch, SignatureError, Unsupported, WrongSigner};
pub use manifest::Manifest;

use bundle::Material;
use certificate::CertificateTrust;
use key::PublicKey;

/// Whom the caller trusts to sign the model. Built by parsing the caller's PEM, so that a
/// `Trust` is always usable.
#[derive(Debug, Clone)]
pub struct Trust(TrustKind);

#[derive(Debug, Clone)]
enum TrustKind {
    PublicKey(PublicKey),
    Certificate(CertificateTrust),
}

impl Trust {
    /// A bare signing key: a PEM `PUBLIC KEY` (ECDSA P-256, P-384 or P-521), as given to
    /// `model_signing verify key --public_key`.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, SignatureError> {
        Ok(Self(TrustKind::PublicKey(PublicKey::from_pem(pem)?)))
    }

    /// A certificate signer: one or more pinned root certificates (PEM) and the identity the
    /// signing certificate must carry. The roots are the only trust anchors; the system's store
    /// is never consulted (model-signing falls back to it when given no roots).
    pub fn certificate(roots_pem: &[u8], identity: Identity) -> Result<Self, SignatureError> {
        Ok(Self(TrustKind::Certificate(CertificateTrust::from_pem(roots_pem, identity)?)))
    }
}

/// An identity a signing certificate can carry. Matched exactly (case-sensitive), against the
/// certificate's subject alternative names or subject common names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// A SAN rfc822Name, e.g. `models@publisher.example`.
    Email(String),
    /// A SAN URI, e.g. a CI workflow's identity.
    Uri(String),
    /// A subject common name. Only as strong as the pinned CA's naming rules.
    CommonName(String),
}

impl Identity {
    fn find_in(&self, found: &[Identity]) -> Option<String> {
        found.contains(self).then(|| self.to_string())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Email(e) => write!(f, "email:{e}"),
            Self::Uri(u) => write!(f, "uri:{u}"),
            Self::CommonName(cn) => write!(f, "cn:{cn}"),
        }
    }
}

/// Who signed: what the audit record and the attested configuration show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signer {
    /// A bare key, named by SHA-256 of its DER SubjectPublicKeyInfo.
    Key { spki_sha256: [u8; 32] },
    /// A certificate that chained to a pinned root. `identity` is the pinned identity it carried
    /// (as `email:…`, `uri:…` or `cn:…`); `subject` and `issuer` are its distinguished names;
    /// the validity bounds are unix seconds.
    Certificate {
        identity: String,
        subject: String,
        issuer: String,
        not_before: i64,
        not_after: i64,
        spki_sha256: [u8; 32],
    },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key { spki_sha256 } => write!(f, "key (SPKI SHA-256 {})", hex::encode(spki_sha256)),
            Signer::Certificate { identity, issuer, .. } => {
                write!(f, "{identity}, certificate issued by {issuer}")
            }
        }
    }
}

/// A bundle that verified. Only [`verify`] builds one and its fields are read-only, so holding
/// one means the checks above were made on exactly what it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    signer: Signer,
    signing_time: Option<i64>,
    checked_at: Option<i64>,
    manifest: Manifest,
    subject_digest: [u8; 32],
}

impl VerifiedSignature {
    /// Who signed.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The signing time proven by log or timestamp evidence, in unix seconds. Always `None`
    /// today (see the crate docs): such evidence is refused, not trusted unchecked.
    pub fn signing_time(&self) -> Option<i64> {
        self.signing_time
    }

    /// The instant the certificate chain was checked at (the signing time if proven, else the
    /// caller's `now`); `None` for a bare key, which has no validity.
    pub fn checked_at(&self) -> Option<i64> {
        self.checked_at
    }

    /// What was signed.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The statement's subject digest, equal to `manifest().subject_digest()`.
    pub fn subject_digest(&self) -> [u8; 32] {
        self.subject_digest
    }
}

/// The manifest a bundle states, **without verifying its signature or signer**: for a bundle
/// that was verified elsewhere and reached the caller over an authenticated path. The enclave
/// uses it on the bundle in its sealed header (authenticated under the data key; the service
/// verified the signer at registration) to check that the bundle names the model it opened.
/// Parsing is as strict as [`verify`]'s.
pub fn signed_manifest(bundle_json: &[u8]) -> Result<Manifest, SignatureError> {
    let bundle = bundle::parse(bundle_json)?;
    if bundle.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
        return Err(SignatureError::UnsupportedScheme(Unsupported::PayloadType(bundle.payload_type)));
    }
    statement::parse(&bundle.payload)
}

/// Verifies an OMS bundle (`bundle_json`, the `.sig` file's bytes) against `trust`, checking
/// certificates at `now` (unix seconds) unless the bundle proves its signing time.
///
/// Never touches the network. Returns the signer and the signed manifest; the caller then
/// compares the manifest with the model (see [`Manifest::check_model`]).
pub fn verify(bundle_json: &[u8], trust: &Trust, now: i64) -> Result<VerifiedSignature, SignatureError> {
    let bundle = bundle::parse(bundle_json)?;
    if bundle.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
        return Err(SignatureError::UnsupportedScheme(Unsupported::PayloadType(bundle.payload_type)));
    }

    // No evidence of the signing time is accepted yet (bundle::parse refuses it), so this is
    // `None` and the chain is checked at `now`.
    let signing_time = bundle.signing_time;
    let (key, signer, checked_at) = match (&trust.0, &bundle.material) {
        (TrustKind::PublicKey(key), Material::PublicKey { hint }) => {
            // The hint is unsigned, but a mismatch says plainly that another key signed.
            if hint.is_some_and(|h| h != key.pem_hint()) {
                return Err(SignatureError::WrongSigner(WrongSigner::KeyHint));
            }
            let signer = Signer::Key { spki_sha256: key.spki_sha256() };
            (key.clone(), signer, None)
        }
        (TrustKind::Certificate(roots), Material::Chain(chain)) => {
            let at = signing_time.unwrap_or(now);
            let leaf = roots.verify(chain, at)?;
            let signer = Signer::Certificate {
                identity: leaf.identity,
                subject: leaf.subject,
                issuer: leaf.issuer,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                spki_sha256: leaf.key.spki_sha256(),
            };
            (leaf.key, signer, Some(at))
        }
        (TrustKind::PublicKey(_), Material::Chain(_)) => {
            return Err(SignatureError::WrongSigner(WrongSigner::ExpectedKey));
        }
        (TrustKind::Certificate(_), Material::PublicKey { .. }) => {
            return Err(SignatureError::WrongSigner(WrongSigner::ExpectedCertificate));
        }
    };

    dsse::verify(&key, &bundle.payload_type, &bundle.payload, &bundle.signature)?;
    let manifest = statement::parse(&bundle.payload)?;
    Ok(VerifiedSignature {
        signer,
        signing_time,
        checked_at,
        subject_digest: manifest.subject_digest(),
        manifest,
    })
}
