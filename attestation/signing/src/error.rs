//! Why a bundle, a trust anchor or a model was refused.
//!
//! One enum, grouped by cause as the variants' docs say: malformed input (the bundle is not a
//! well-formed OMS bundle), unsupported (well-formed, but a scheme this verifier does not check),
//! policy (authentic-looking but not by the pinned signer, or not valid then), model mismatch
//! (the caller's bytes are not what was signed) and misuse (the caller's own trust material).
//! Each `Display` is one sentence that names the reason, since it ends up in `nacre seal`'s
//! output and in the attestation service's refusal.

use std::fmt;

/// A refusal. Nothing was verified when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    // --- Malformed input ---
    /// The bundle is larger than any bundle `model-signing` writes for one file.
    #[error("the signature bundle is {len} bytes, more than the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    /// A part of the bundle does not parse (JSON, base64, DER, a number, a name).
    #[error("the signature bundle's {what} does not parse: {reason}")]
    Parse { what: &'static str, reason: String },
    /// The signed statement is not an OMS model signature (another in-toto statement, or not
    /// in-toto at all).
    #[error("the signed statement is not an OpenSSF model signature: {found}")]
    NotAModelSignature { found: String },
    /// The manifest contradicts itself: the subject digest, the shard layout or the digest
    /// names do not agree.
    #[error("the signed manifest is inconsistent: {0}")]
    ManifestInconsistent(Inconsistency),
    /// The manifest covers several files (or none); a sealed model is one ONNX file.
    #[error(
        "the signature covers {files} files, but Nacre seals exactly one model file: sign the \
         model file itself, not its directory"
    )]
    MultipleFiles { files: usize },

    // --- Well-formed but unsupported ---
    /// The bundle's media type is not the Sigstore bundle v0.3 that `model-signing` writes.
    #[error("unsupported signature bundle media type {0:?} (expected a Sigstore bundle v0.3)")]
    UnsupportedMediaType(String),
    /// A signature scheme, hash or key type that this verifier does not check.
    #[error("unsupported signature scheme: {0}")]
    UnsupportedScheme(Unsupported),

    // --- Policy ---
    /// The DSSE signature does not verify under the signer's key.
    #[error(
        "the signature does not verify under the signer's key (the bundle was altered or signed by another key)"
    )]
    BadSignature,
    /// The bundle is signed, but not by the signer the caller pinned.
    #[error("the bundle is not signed by the pinned signer: {0}")]
    WrongSigner(WrongSigner),
    /// The signing certificate (or a CA above it) had expired at the time it was checked at.
    #[error(
        "the signing certificate chain had expired at {at} (unix seconds): a certificate in it is valid until {not_after}"
    )]
    CertificateExpired { at: i64, not_after: i64 },
    /// The signing certificate (or a CA above it) was not yet valid at the time it was checked at.
    #[error(
        "the signing certificate chain was not yet valid at {at} (unix seconds): a certificate in it is valid from {not_before}"
    )]
    CertificateNotYetValid { at: i64, not_before: i64 },
    /// The certificate chain does not lead to a pinned root, or is otherwise not a valid path.
    #[error("the signing certificate does not chain to a pinned root: {0}")]
    UntrustedChain(String),
    /// The certificate may not sign code: its key usage or extended key usage forbids it.
    #[error("the signing certificate is not for signing: {0}")]
    NotForSigning(&'static str),

    // --- The model does not match ---
    /// The caller's model bytes are not the bytes the manifest lists.
    #[error("the model does not match its signature: {0}")]
    ModelMismatch(ModelMismatch),

    // --- Misuse ---
    /// The caller's trust material (a public key or root certificates) is unusable.
    #[error("the pinned trust material is unusable: {0}")]
    InvalidTrust(String),
}

/// Schemes a bundle may use that this verifier refuses by name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// A bundle signing a raw message (`messageSignature`), not a DSSE envelope.
    MessageSignature,
    /// A DSSE payload type other than in-toto JSON.
    PayloadType(String),
    /// More than one DSSE signature (model-signing writes one).
    SignatureCount(usize),
    /// Transparency-log entries or RFC 3161 timestamps: Sigstore keyless evidence, which this
    /// verifier cannot check yet. It is refused rather than ignored, so that a keyless bundle is
    /// not judged by a short-lived certificate's validity at "now".
    KeylessEvidence,
    /// The pre-1.0 predicate (`https://model_signing/Digests/v0.1`).
    LegacyPredicate,
    /// A serialization method other than "files" or "shards".
    SerializationMethod(String),
    /// A hash other than SHA-256.
    HashType(String),
    /// A signing key type or curve other than ECDSA P-256/P-384/P-521.
    KeyType(String),
    /// The kind of verification material in the bundle (e.g. a keyless single certificate
    /// under a public-key trust).
    VerificationMaterial(&'static str),
}

/// How a manifest contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inconsistency {
    /// The subject digest is not SHA-256 over the listed resource digests.
    SubjectDigest,
    /// The statement names other than exactly one subject.
    SubjectCount(usize),
    /// The manifest lists no resources (an empty file signed by shards, or an empty directory).
    NoResources,
    /// A resource's digest algorithm is not the one its serialization produces.
    ResourceAlgorithm { index: usize, found: String, expected: String },
    /// Shards are out of order, overlap, leave a gap, or do not start at offset 0.
    ShardLayout { index: usize },
    /// A shard other than the last is not exactly `shard_size` bytes, or the last is larger.
    ShardSize { index: usize },
    /// The shard size is not a positive integer that fits the format.
    ShardSizeValue,
    /// A field belongs to the other serialization method (e.g. `shard_size` under "files").
    MethodField(&'static str),
}

/// Why the signer is not the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrongSigner {
    /// The bundle's key hint (SHA-256 of the signer's PEM public key) names another key.
    KeyHint,
    /// A public key was pinned but the bundle is signed with a certificate.
    ExpectedKey,
    /// A certificate identity was pinned but the bundle is signed with a bare key.
    ExpectedCertificate,
    /// The certificate chains to a pinned root but names someone else.
    Identity { expected: String, found: Vec<String> },
}

/// How the caller's model differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelMismatch {
    /// The model is not as long as the manifest says.
    Length { expected: u64, found: u64 },
    /// The whole file's SHA-256 differs.
    WholeFileDigest,
    /// The shard at this index (offset `index × shard_size`) differs.
    ShardDigest { index: usize },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MessageSignature => f.write_str("a raw message signature (OMS signs a DSSE envelope)"),
            Self::PayloadType(t) => write!(f, "DSSE payload type {t:?} (expected in-toto JSON)"),
            Self::SignatureCount(n) => write!(f, "{n} DSSE signatures (expected exactly one)"),
            Self::KeylessEvidence => f.write_str(
                "Sigstore keyless evidence (transparency-log entries or timestamps) is not \
                 checked by this verifier",
            ),
            Self::LegacyPredicate => {
                f.write_str("the pre-1.0 model_signing predicate (Digests/v0.1); re-sign with 1.x")
            }
            Self::SerializationMethod(m) => {
                write!(f, "serialization method {m:?} (expected \"files\" or \"shards\")")
            }
            Self::HashType(h) => write!(f, "hash {h:?} (expected \"sha256\")"),
            Self::KeyType(k) => write!(f, "signing key {k} (expected ECDSA P-256, P-384 or P-521)"),
            Self::VerificationMaterial(m) => write!(f, "verification material {m}"),
        }
    }
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SubjectDigest => {
                f.write_str("the subject digest is not SHA-256 over the listed resource digests")
            }
            Self::SubjectCount(n) => write!(f, "{n} subjects (expected exactly one)"),
            Self::NoResources => f.write_str("it lists no resources"),
            Self::ResourceAlgorithm { index, found, expected } => {
                write!(f, "resource {index} is hashed with {found:?} but the serialization says {expected:?}")
            }
            Self::ShardLayout { index } => write!(
                f,
                "shard {index} does not start where the previous one ended (shards must be \
                 contiguous from offset 0, in order)"
            ),
            Self::ShardSize { index } => {
                write!(f, "shard {index} is not shard_size bytes long (only the last may be shorter)")
            }
            Self::ShardSizeValue => f.write_str("shard_size is not a positive integer below 2^53"),
            Self::MethodField(field) => {
                write!(f, "field {field:?} does not belong to this serialization method")
            }
        }
    }
}

impl fmt::Display for WrongSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyHint => f.write_str("the bundle's key hint names another public key"),
            Self::ExpectedKey => {
                f.write_str("a public key is pinned, but the bundle is signed with a certificate")
            }
            Self::ExpectedCertificate => {
                f.write_str("a certificate identity is pinned, but the bundle is signed with a bare key")
            }
            Self::Identity { expected, found } => write!(
                f,
                "the certificate is for {} but {expected} is required",
                if found.is_empty() { "no identity".to_owned() } else { found.join(", ") }
            ),
        }
    }
}

impl fmt::Display for ModelMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { expected, found } => {
                write!(f, "it is {found} bytes long, the signed model {expected}")
            }
            Self::WholeFileDigest => f.write_str("its SHA-256 differs from the signed digest"),
            Self::ShardDigest { index } => {
                write!(f, "shard {index} differs from the signed shard digest")
            }
        }
    }
}

impl SignatureError {
    pub(crate) fn parse(what: &'static str, reason: impl fmt::Display) -> Self {
        Self::Parse { what, reason: reason.to_string() }
    }
}
