//! Signed reference values: what an image is (digests of its boot inputs) and the measurement
//! each TEE should report for it, signed with an image-signing key (Ed25519). A cross-component
//! format: the image builder (`nacre image build`) writes it, the attestation service imports
//! it (only when it trusts the signer) and release policies name it.
//!
//! On disk: `reference-values.json` (the signed bytes, exactly) and `reference-values.sig`
//! (`{"algorithm":"ed25519","public_key":HEX,"signature":HEX}`). Ed25519 signatures are
//! deterministic, so a rebuild with the same key gives identical files.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "nacre-reference-values/v1";
/// Format v1 gives a TDX image its MRTD alone, which covers the firmware and not the kernel,
/// command line or initrd (RTMR1/RTMR2). Its TDX entries are therefore never applied: see
/// [`ReferenceValues::applicable`].
/// Largest reference-values document accepted.
pub const MAX_LEN: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceValues {
    pub format: String,
    /// A name policies refer to, e.g. `fraud-mlp-guest`.
    pub name: String,
    pub image: ImageDigests,
    pub measurements: Vec<Expected>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDigests {
    pub vmlinuz_sha256: String,
    pub initrd_sha256: String,
    pub cmdline: String,
}

/// The launch measurement a TEE reports for this image under one launch shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// `sim`, `snp` or `tdx`.
    pub tee: String,
    /// Hex, 48 bytes: SNP/sim MEASUREMENT or TDX MRTD.
    pub measurement: String,
    pub firmware_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    pub public_key: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("reference values: {0}")]
    Format(String),
    #[error("reference values are signed by {0}, which is not a trusted signer")]
    UntrustedSigner(String),
    #[error("reference values: the signature does not verify")]
    BadSignature,
    #[error("signing key: {0}")]
    Key(String),
}

/// Longest reference-values name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a reference-values name: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ReferenceError::Format(format!("name {name:?}: 1–{MAX_NAME_LEN} of [A-Za-z0-9._-]")));
    }
    Ok(())
}

impl ReferenceValues {
    fn check(&self) -> Result<(), ReferenceError> {
        let bad = |m: String| Err(ReferenceError::Format(m));
        if self.format != FORMAT {
            return bad(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        check_name(&self.name)?;
        let hex_of = |s: &str, n: usize| {
            s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex_of(&self.image.vmlinuz_sha256, 32) || !hex_of(&self.image.initrd_sha256, 32) {
            return bad("image digests must be 64 lowercase hex digits".into());
        }
        if self.measurements.is_empty() {
            return bad("no measurements".into());
        }
        for m in &self.measurements {
            if !["sim", "snp", "tdx"].contains(&m.tee.as_str()) {
                return bad(format!("unknown TEE {:?}", m.tee));
            }
            if !hex_of(&m.measurement, 48) || !hex_of(&m.firmware_sha256, 32) {
                return bad(format!(
                    "{}: measurement must be 96 and firmware_sha256 64 lowercase hex digits",
                    m.tee
                ));
            }
        }
        Ok(())
    }

    /// The measurements a policy may allow from this document, per TEE. TDX entries are left
    /// out: in this format they carry the MRTD alone (the firmware), and allowing it would
    /// accept any kernel and initrd booted on that firmware. `sim` entries are returned only when
    /// `with_sim` (the caller's explicit opt-in into simulated-TEE evidence).
    pub fn applicable(&self, with_sim: bool) -> Result<Vec<(nacre_wire::Tee, [u8; 48])>, ReferenceError> {
        use nacre_wire::Tee;
        let mut out = Vec::with_capacity(self.measurements.len());
        for m in &self.measurements {
            let tee = match m.tee.as_str() {
                "sim" if with_sim => Tee::Sim,
                "snp" => Tee::Snp,
                "sim" | "tdx" => continue,
                other => return Err(ReferenceError::Format(format!("{}: unknown TEE {other:?}", self.name))),
            };
            let mut value = [0u8; 48];
            hex::decode_to_slice(&m.measurement, &mut value)
                .map_err(|_| ReferenceError::Format(format!("{}: bad {} measurement", self.name, m.tee)))?;
            out.push((tee, value));
        }
        Ok(out)
    }

    /// The canonical document bytes (pretty JSON, field order fixed by the types) and its
    /// signature by `pkcs8` (an Ed25519 private key).
    pub fn sign(&self, pkcs8: &[u8]) -> Result<(Vec<u8>, Signature), ReferenceError> {
        self.check()?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| ReferenceError::Key(e.to_string()))?;
        let mut doc = serde_json::to_vec_pretty(self).map_err(|e| ReferenceError::Format(e.to_string()))?;
        doc.push(b'\n');
        let sig = Signature {
            algorithm: "ed25519".into(),
            public_key: hex::encode(key.public_key().as_ref()),
            signature: hex::encode(key.sign(&doc).as_ref()),
        };
        Ok((doc, sig))
    }

    /// Verifies `sig` over the exact bytes of `doc`, by one of `trusted` (Ed25519 public keys),
    /// then parses `doc` strictly. The signer is checked before anything is parsed.
    pub fn verify(doc: &[u8], sig: &[u8], trusted: &[[u8; 32]]) -> Result<ReferenceValues, ReferenceError> {
        Self::verify_signed(doc, sig, trusted).map(|(values, _)| values)
    }

    /// Parses and checks a document WITHOUT verifying any signature: for showing documents that
    /// were verified before (e.g. when they were imported), never for trusting new ones.
    pub fn parse_unverified(doc: &[u8]) -> Result<ReferenceValues, ReferenceError> {
        if doc.len() > MAX_LEN {
            return Err(ReferenceError::Format("too large".into()));
        }
        let values: ReferenceValues =
            serde_json::from_slice(doc).map_err(|e| ReferenceError::Format(e.to_string()))?;
        values.check()?;
        Ok(values)
    }

    /// [`ReferenceValues::verify`], also returning the signer's public key.
    pub fn verify_signed(
        doc: &[u8],
        sig: &[u8],
        trusted: &[[u8; 32]],
    ) -> Result<(ReferenceValues, [u8; 32]), ReferenceError> {
        if doc.len() > MAX_LEN || sig.len() > 4096 {
            return Err(ReferenceError::Format("too large".into()));
        }
        let sig: Signature =
            serde_json::from_slice(sig).map_err(|e| ReferenceError::Format(format!("signature: {e}")))?;
        if sig.algorithm != "ed25519" {
            return Err(ReferenceError::Format(format!("signature algorithm {:?}", sig.algorithm)));
        }
        let mut pk = [0u8; 32];
        hex::decode_to_slice(&sig.public_key, &mut pk)
            .map_err(|_| ReferenceError::Format("public_key: 64 hex digits".into()))?;
        if !trusted.contains(&pk) {
            return Err(ReferenceError::UntrustedSigner(sig.public_key));
        }
        let signature = hex::decode(&sig.signature).map_err(|_| ReferenceError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, &pk)
            .verify(doc, &signature)
            .map_err(|_| ReferenceError::BadSignature)?;
        Ok((Self::parse_unverified(doc)?, pk))
    }
}

/// A new Ed25519 image-signing key (PKCS#8 v2 DER) and its public key.
pub fn generate_signing_key() -> Result<(Vec<u8>, [u8; 32]), ReferenceError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|e| ReferenceError::Key(e.to_string()))?;
    let key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| ReferenceError::Key(e.to_string()))?;
    let mut pk = [0u8; 32];
    pk.copy_from_slice(key.public_key().as_ref());
    Ok((doc.as_ref().to_vec(), pk))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> ReferenceValues {
        ReferenceValues {
            format: FORMAT.into(),
            name: "guest".into(),
            image: ImageDigests {
                vmlinuz_sha256: "a".repeat(64),
                initrd_sha256: "b".repeat(64),
                cmdline: "console=ttyS0".into(),
            },
            measurements: vec![Expected {
                tee: "sim".into(),
                measurement: "c".repeat(96),
                firmware_sha256: "d".repeat(64),
                vcpus: Some(1),
                vcpu_type: Some("EPYC-v4".into()),
            }],
        }
    }

    #[test]
    fn sign_verify_and_every_refusal() {
        let (key, pk) = generate_signing_key().unwrap();
        let (other, other_pk) = generate_signing_key().unwrap();
        let (doc, sig) = sample().sign(&key).unwrap();
        let sig_json = serde_json::to_vec(&sig).unwrap();
        assert_eq!(ReferenceValues::verify(&doc, &sig_json, &[other_pk, pk]).unwrap(), sample());
        assert_eq!(ReferenceValues::verify_signed(&doc, &sig_json, &[other_pk, pk]).unwrap().1, pk);
        assert_eq!(ReferenceValues::parse_unverified(&doc).unwrap(), sample());
        // Deterministic.
        assert_eq!(sample().sign(&key).unwrap(), (doc.clone(), sig.clone()));
        // Untrusted signer, even with a valid signature.
        let (doc2, sig2) = sample().sign(&other).unwrap();
        assert!(matches!(
            ReferenceValues::verify(&doc2, &serde_json::to_vec(&sig2).unwrap(), &[pk]),
            Err(ReferenceError::UntrustedSigner(_))
        ));
        // One changed byte of the document.
        let mut edited = doc.clone();
        let i = edited.iter().position(|b| *b == b'c').unwrap();
        edited[i] = b'e';
        assert!(matches!(
            ReferenceValues::verify(&edited, &sig_json, &[pk]),
            Err(ReferenceError::BadSignature)
        ));
        // A signed but malformed document is still refused.
        let mut odd = sample();
        odd.measurements[0].tee = "sgx".into();
        assert!(odd.sign(&key).is_err());
    }

    /// Issue 12 §1 and §2: a v1 TDX entry (MRTD alone) is never applied; sim entries only on
    /// the caller's opt-in.
    #[test]
    fn tdx_entries_of_v1_documents_and_sim_without_opt_in_are_not_applied() {
        let mut doc = sample();
        doc.measurements.push(Expected { tee: "tdx".into(), ..doc.measurements[0].clone() });
        doc.measurements.push(Expected {
            tee: "snp".into(),
            measurement: "e".repeat(96),
            ..doc.measurements[0].clone()
        });
        let tees =
            |with_sim| doc.applicable(with_sim).unwrap().into_iter().map(|(t, _)| t).collect::<Vec<_>>();
        assert_eq!(tees(false), [nacre_wire::Tee::Snp]);
        assert_eq!(tees(true), [nacre_wire::Tee::Sim, nacre_wire::Tee::Snp]);
        assert_eq!(doc.applicable(false).unwrap()[0].1, [0xee; 48]);
    }

    #[test]
    fn names() {
        for good in ["img", "fraud-mlp_guest.v2", &"a".repeat(MAX_NAME_LEN)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "ä", "x/y", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
