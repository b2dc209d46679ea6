//! The attestation result the service signs on every release: EAR-style claims
//! (draft-ietf-rats-ear: `eat_profile`, `iat`, `ear.verifier-id`, `submods` with `ear.status`)
//! in a COSE_Sign1 envelope signed with the service's Ed25519 key. The enclave can show it to
//! clients as a second opinion on its own evidence.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::cbor;
use crate::model::ModelSignature;

/// The profile this result follows.
pub const EAR_PROFILE: &str = "tag:nacre.dev,2026:ear/v1";
/// The one submodule: the attested guest.
pub const SUBMOD: &str = "guest";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierId {
    pub developer: String,
    pub build: String,
}

/// What the service concluded about the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestAppraisal {
    /// `affirming`, or `warning` when the verdict carried warnings (e.g. the sim root).
    #[serde(rename = "ear.status")]
    pub status: String,
    #[serde(rename = "nacre.tee")]
    pub tee: String,
    #[serde(rename = "nacre.measurement")]
    pub measurement: ByteBuf,
    #[serde(rename = "nacre.report-data")]
    pub report_data: ByteBuf,
    #[serde(rename = "nacre.key-id")]
    pub key_id: String,
    #[serde(rename = "nacre.key-version")]
    pub key_version: u32,
    #[serde(rename = "nacre.warnings")]
    pub warnings: Vec<String>,
    /// Who signed the released key version's model, when the key's release policy requires
    /// signers (checked at the model's registration and again against the policy of this
    /// release). Absent otherwise, so results of keys without signers are unchanged.
    #[serde(rename = "nacre.model-signature", default, skip_serializing_if = "Option::is_none")]
    pub model_signature: Option<ModelSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationResult {
    pub eat_profile: String,
    /// Unix seconds.
    pub iat: i64,
    /// Unix seconds.
    pub exp: i64,
    pub eat_nonce: ByteBuf,
    #[serde(rename = "ear.verifier-id")]
    pub verifier_id: VerifierId,
    pub submods: std::collections::BTreeMap<String, GuestAppraisal>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("COSE: {0}")]
    Cose(String),
    #[error("attestation result signature does not verify")]
    BadSignature,
    #[error("attestation result: {0}")]
    Claims(String),
    #[error("result signing key: {0}")]
    Key(String),
}

/// The service's result-signing key.
pub struct ResultSigner {
    key: Ed25519KeyPair,
}

impl core::fmt::Debug for ResultSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ResultSigner({})", hex::encode(self.public_key()))
    }
}

impl ResultSigner {
    /// A new key as PKCS#8 v2 DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, ResultError> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| ResultError::Key(e.to_string()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ResultError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|key| ResultSigner { key })
            .map_err(|e| ResultError::Key(e.to_string()))
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    pub fn sign(&self, result: &AttestationResult) -> Result<Vec<u8>, ResultError> {
        let payload = cbor::to_vec(result).map_err(|e| ResultError::Claims(e.to_string()))?;
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_type("application/eat+cbor".into())
            .build();
        CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(b"", |data| self.key.sign(data).as_ref().to_vec())
            .build()
            .to_vec()
            .map_err(|e| ResultError::Cose(e.to_string()))
    }
}

/// Verifies a signed result against the service's Ed25519 public key and decodes it. Checks
/// the algorithm, the signature and the profile; the caller checks the claims it relies on.
pub fn verify(signed: &[u8], public_key: &[u8]) -> Result<AttestationResult, ResultError> {
    let sign1 = CoseSign1::from_slice(signed).map_err(|e| ResultError::Cose(e.to_string()))?;
    if sign1.protected.header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA)) {
        return Err(ResultError::Cose("algorithm is not EdDSA".into()));
    }
    sign1
        .verify_signature(b"", |sig, data| UnparsedPublicKey::new(&ED25519, public_key).verify(data, sig))
        .map_err(|_| ResultError::BadSignature)?;
    let payload = sign1.payload.as_deref().ok_or_else(|| ResultError::Cose("detached payload".into()))?;
    let result: AttestationResult =
        cbor::from_slice(payload).map_err(|e| ResultError::Claims(e.to_string()))?;
    if result.eat_profile != EAR_PROFILE {
        return Err(ResultError::Claims(format!("profile {:?}", result.eat_profile)));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AttestationResult {
        let guest = GuestAppraisal {
            status: "affirming".into(),
            tee: "sim".into(),
            measurement: ByteBuf::from(vec![1; 48]),
            report_data: ByteBuf::from(vec![2; 64]),
            key_id: "m".into(),
            key_version: 1,
            warnings: vec![],
            model_signature: None,
        };
        AttestationResult {
            eat_profile: EAR_PROFILE.into(),
            iat: 1,
            exp: 2,
            eat_nonce: ByteBuf::from(vec![3; 41]),
            verifier_id: VerifierId { developer: "nacre".into(), build: "test".into() },
            submods: [(SUBMOD.to_owned(), guest)].into(),
        }
    }

    #[test]
    fn signs_and_verifies() {
        let signer = ResultSigner::from_pkcs8(&ResultSigner::generate_pkcs8().unwrap()).unwrap();
        let signed = signer.sign(&sample()).unwrap();
        assert_eq!(verify(&signed, signer.public_key()).unwrap(), sample());
        // Another key, or one flipped byte anywhere, fails.
        let other = ResultSigner::from_pkcs8(&ResultSigner::generate_pkcs8().unwrap()).unwrap();
        assert!(matches!(verify(&signed, other.public_key()), Err(ResultError::BadSignature)));
        for i in [0, signed.len() / 2, signed.len() - 1] {
            let mut bad = signed.clone();
            bad[i] ^= 0x40;
            assert!(verify(&bad, signer.public_key()).is_err(), "byte {i}");
        }
    }

    /// Issue 16: the model's signer travels in the signed result; a result without one encodes
    /// as before (no key), so readers of keys without signers see no change.
    #[test]
    fn model_signature_claim_round_trips_and_is_optional() {
        use crate::model::SignedManifest;
        let signer = ResultSigner::from_pkcs8(&ResultSigner::generate_pkcs8().unwrap()).unwrap();
        let plain = cbor::to_vec(&sample()).unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("nacre.model-signature"));
        let mut result = sample();
        let guest = result.submods.get_mut(SUBMOD).unwrap();
        guest.model_signature = Some(ModelSignature {
            signer: "email:models@publisher.example".into(),
            certificate_subject: Some("CN=publisher".into()),
            certificate_issuer: Some("CN=ca".into()),
            model_identity: crate::model::Sha256([4; 32]),
            manifest: SignedManifest::WholeFile,
            subject_digest: crate::model::Sha256([5; 32]),
            file_sha256: Some(crate::model::Sha256([6; 32])),
            checked_at: 1_796_342_400,
        });
        let signed = signer.sign(&result).unwrap();
        assert_eq!(verify(&signed, signer.public_key()).unwrap(), result);
    }
}
