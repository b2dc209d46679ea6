//! Signed reference values: what an image is (digests of its boot inputs) and the measurement
//! each TEE should report for it, signed with an image-signing key (Ed25519). A cross-component
//! format: the image builder (`nacre image build`) writes it, the attestation service imports
//! it (only when it trusts the signer) and release policies name it.
//!
//! On disk: `reference-values.json` (the signed bytes, exactly) and `reference-values.sig`
//! (`{"algorithm":"ed25519","public_key":HEX,"signature":HEX}`). Ed25519 signatures are
//! deterministic, so a rebuild with the same key gives identical files.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use nacre_wire::Tee;
use nacre_wire::snp::TcbFloor;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "nacre-reference-values/v2";
/// The first format. It gave a TDX image its MRTD alone, which covers the firmware and not the
/// kernel, command line or initrd (RTMR1/RTMR2). Documents signed in v1 still verify and their
/// SNP and sim entries still apply; their TDX entries never do (see
/// [`ReferenceValues::applicable`]). Rebuild the image to get v2 TDX entries.
pub const FORMAT_V1: &str = "nacre-reference-values/v1";
/// Largest reference-values document accepted.
pub const MAX_LEN: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceValues {
    /// [`FORMAT`] or [`FORMAT_V1`].
    pub format: String,
    /// A name policies refer to, e.g. `fraud-mlp-guest`.
    pub name: String,
    pub image: ImageDigests,
    pub measurements: Vec<Expected>,
    /// An SNP firmware floor the image's publisher requires (v2). A policy that applies these
    /// values takes, per product and component, the higher of its own floor and this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp_min_tcb: Option<TcbFloor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDigests {
    pub vmlinuz_sha256: String,
    pub initrd_sha256: String,
    pub cmdline: String,
    /// SHA-256 of the image's CycloneDX SBOM (`sbom.cdx.json`, written beside the image by
    /// `nacre image build`), so that the signature over these values covers the SBOM too (v2;
    /// optional: documents signed before the SBOM existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_sha256: Option<String>,
}

/// The launch measurement a TEE reports for this image under one launch shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// TDX (v2, required): guest memory in MiB. The TD HOB (RTMR0) and the kernel's initrd
    /// address (RTMR1) depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// TDX (v2, required): the QEMU version the values hold for. QEMU's ACPI tables (RTMR0) and
    /// its MRTD page order depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_version: Option<String>,
    /// TDX (v2, required): RTMR0 (the firmware's configuration: TD HOB, CFV, EFI variables,
    /// QEMU's ACPI tables), hex, 48 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr0: Option<String>,
    /// TDX (v2, required): RTMR1 (the kernel as QEMU patched it, and the boot's EFI events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<String>,
    /// TDX (v2, required): RTMR2 (the command line and the initrd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<String>,
}

impl Expected {
    /// The launch shape, for people: what the values hold for.
    pub fn shape(&self) -> String {
        let mut out = format!("{} firmware {}", self.tee, &self.firmware_sha256[..16]);
        if let Some(m) = self.memory_mib {
            out.push_str(&format!(", {m} MiB"));
        }
        if let Some(v) = self.vcpus {
            out.push_str(&format!(", {v} vCPU"));
        }
        if let Some(t) = &self.vcpu_type {
            out.push_str(&format!(" {t}"));
        }
        if let Some(q) = &self.qemu_version {
            out.push_str(&format!(", QEMU {q}"));
        }
        out
    }
}

/// What a policy may allow from one entry of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applicable {
    /// An SNP or sim launch measurement.
    Measurement { tee: Tee, value: [u8; 48] },
    /// A whole TDX boot chain for one launch shape: MRTD and RTMR0–2 (RTMR3 is the guest's own,
    /// extended at run time).
    TdxLaunch { shape: String, mrtd: [u8; 48], rtmr: [[u8; 48]; 3] },
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

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        let v1 = match self.format.as_str() {
            FORMAT => false,
            FORMAT_V1 => true,
            other => return bad(format!("format {other:?}, expected {FORMAT:?} (or {FORMAT_V1:?})")),
        };
        check_name(&self.name)?;
        if !is_hex(&self.image.vmlinuz_sha256, 32) || !is_hex(&self.image.initrd_sha256, 32) {
            return bad("image digests must be 64 lowercase hex digits".into());
        }
        if self.measurements.is_empty() {
            return bad("no measurements".into());
        }
        if v1 && self.snp_min_tcb.is_some() {
            return bad("snp_min_tcb is a v2 field".into());
        }
        if let Some(sbom) = &self.image.sbom_sha256 {
            if v1 {
                return bad("image.sbom_sha256 is a v2 field".into());
            }
            if !is_hex(sbom, 32) {
                return bad("image.sbom_sha256 must be 64 lowercase hex digits".into());
            }
        }
        for m in &self.measurements {
            if !["sim", "snp", "tdx"].contains(&m.tee.as_str()) {
                return bad(format!("unknown TEE {:?}", m.tee));
            }
            if !is_hex(&m.measurement, 48) || !is_hex(&m.firmware_sha256, 32) {
                return bad(format!(
                    "{}: measurement must be 96 and firmware_sha256 64 lowercase hex digits",
                    m.tee
                ));
            }
            let tdx_fields = [&m.rtmr0, &m.rtmr1, &m.rtmr2];
            let tdx_v2 = m.tee == "tdx" && !v1;
            if !tdx_v2 {
                // v1 had none of these; in v2 they describe TDX entries only.
                if tdx_fields.iter().any(|f| f.is_some())
                    || m.memory_mib.is_some()
                    || m.qemu_version.is_some()
                {
                    return bad(format!(
                        "{} entry of a {} document: rtmr0–2, memory_mib and qemu_version are v2 TDX fields",
                        m.tee, self.format
                    ));
                }
                continue;
            }
            // A TDX entry is the whole boot chain for one launch shape, or it is refused.
            for (name, value) in ["rtmr0", "rtmr1", "rtmr2"].into_iter().zip(tdx_fields) {
                if !value.as_deref().is_some_and(|v| is_hex(v, 48)) {
                    return bad(format!("tdx entry: {name} is required (96 lowercase hex digits)"));
                }
            }
            let shape_ok = m.memory_mib.is_some_and(|mib| mib > 0)
                && m.vcpus.is_some_and(|v| v > 0)
                && m.qemu_version.as_deref().is_some_and(|q| {
                    !q.is_empty()
                        && q.len() <= 32
                        && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
                });
            if !shape_ok {
                return bad("tdx entry: its launch shape needs memory_mib, vcpus and qemu_version".into());
            }
        }
        Ok(())
    }

    /// What a policy may allow from this document. `sim` entries only when `with_sim` (the
    /// caller's explicit opt-in into simulated-TEE evidence). TDX entries only from v2
    /// documents: a v1 TDX entry carries the MRTD alone (the firmware), and allowing it would
    /// accept any kernel and initrd booted on that firmware.
    pub fn applicable(&self, with_sim: bool) -> Result<Vec<Applicable>, ReferenceError> {
        let v1 = self.format == FORMAT_V1;
        let hex48 = |field: &str, s: &str| {
            let mut value = [0u8; 48];
            hex::decode_to_slice(s, &mut value)
                .map_err(|_| ReferenceError::Format(format!("{}: bad {field}", self.name)))?;
            Ok::<_, ReferenceError>(value)
        };
        let mut out = Vec::with_capacity(self.measurements.len());
        for m in &self.measurements {
            let tee = match m.tee.as_str() {
                "sim" if with_sim => Tee::Sim,
                "snp" => Tee::Snp,
                "tdx" if !v1 => {
                    let rtmr = |field, v: &Option<String>| hex48(field, v.as_deref().unwrap_or_default());
                    out.push(Applicable::TdxLaunch {
                        shape: m.shape(),
                        mrtd: hex48("mrtd", &m.measurement)?,
                        rtmr: [rtmr("rtmr0", &m.rtmr0)?, rtmr("rtmr1", &m.rtmr1)?, rtmr("rtmr2", &m.rtmr2)?],
                    });
                    continue;
                }
                "sim" | "tdx" => continue,
                other => return Err(ReferenceError::Format(format!("{}: unknown TEE {other:?}", self.name))),
            };
            out.push(Applicable::Measurement { tee, value: hex48("measurement", &m.measurement)? });
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
                sbom_sha256: None,
            },
            measurements: vec![Expected {
                tee: "sim".into(),
                measurement: "c".repeat(96),
                firmware_sha256: "d".repeat(64),
                vcpus: Some(1),
                vcpu_type: Some("EPYC-v4".into()),
                ..Default::default()
            }],
            snp_min_tcb: None,
        }
    }

    fn tdx_entry() -> Expected {
        Expected {
            tee: "tdx".into(),
            measurement: "1".repeat(96),
            firmware_sha256: "d".repeat(64),
            vcpus: Some(1),
            memory_mib: Some(2048),
            qemu_version: Some("10.1.0".into()),
            rtmr0: Some("2".repeat(96)),
            rtmr1: Some("3".repeat(96)),
            rtmr2: Some("4".repeat(96)),
            ..Default::default()
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

    /// Issue 12 §1 and §2, issue 13: a v1 TDX entry (MRTD alone) is never applied, a v2 one
    /// applies as the whole boot chain; sim entries only on the caller's opt-in.
    #[test]
    fn tdx_entries_of_v1_documents_and_sim_without_opt_in_are_not_applied() {
        let mut doc = sample();
        doc.format = FORMAT_V1.into();
        doc.measurements.push(Expected { tee: "tdx".into(), ..doc.measurements[0].clone() });
        doc.measurements.push(Expected {
            tee: "snp".into(),
            measurement: "e".repeat(96),
            ..doc.measurements[0].clone()
        });
        doc.check().unwrap();
        let tees = |doc: &ReferenceValues, with_sim| {
            doc.applicable(with_sim)
                .unwrap()
                .into_iter()
                .map(|a| match a {
                    Applicable::Measurement { tee, .. } => tee,
                    Applicable::TdxLaunch { .. } => Tee::Tdx,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(tees(&doc, false), [Tee::Snp]);
        assert_eq!(tees(&doc, true), [Tee::Sim, Tee::Snp]);
        assert_eq!(
            doc.applicable(false).unwrap()[0],
            Applicable::Measurement { tee: Tee::Snp, value: [0xee; 48] }
        );
        // The same document in v2: its MRTD-only TDX entry is refused outright.
        doc.format = FORMAT.into();
        assert!(matches!(doc.check(), Err(ReferenceError::Format(m)) if m.contains("rtmr0 is required")));
        doc.measurements[1] = tdx_entry();
        doc.check().unwrap();
        assert_eq!(tees(&doc, false), [Tee::Tdx, Tee::Snp]);
        let Applicable::TdxLaunch { shape, mrtd, rtmr } = &doc.applicable(false).unwrap()[0] else {
            panic!()
        };
        assert_eq!((*mrtd, *rtmr), ([0x11; 48], [[0x22; 48], [0x33; 48], [0x44; 48]]));
        assert_eq!(shape, "tdx firmware dddddddddddddddd, 2048 MiB, 1 vCPU, QEMU 10.1.0");
    }

    /// Issue 13: a v2 TDX entry is the whole boot chain of one stated launch shape; v2 fields
    /// appear nowhere else.
    #[test]
    fn tdx_entries_need_every_boot_register_and_their_shape() {
        let mut doc = sample();
        doc.measurements.push(tdx_entry());
        doc.check().unwrap();
        let refused = |edit: fn(&mut Expected)| {
            let mut d = doc.clone();
            edit(&mut d.measurements[1]);
            d.check().unwrap_err().to_string()
        };
        assert!(refused(|e| e.rtmr1 = None).contains("rtmr1 is required"));
        assert!(refused(|e| e.rtmr2 = Some("4".repeat(94))).contains("rtmr2 is required"));
        assert!(refused(|e| e.memory_mib = None).contains("launch shape"));
        assert!(refused(|e| e.vcpus = None).contains("launch shape"));
        assert!(refused(|e| e.qemu_version = Some("10 1".into())).contains("launch shape"));
        let mut d = doc.clone();
        d.measurements[0].rtmr0 = Some("2".repeat(96));
        assert!(d.check().unwrap_err().to_string().contains("v2 TDX fields"));
        let mut d = doc.clone();
        d.format = FORMAT_V1.into();
        assert!(d.check().unwrap_err().to_string().contains("v2 TDX fields"));
        d.format = "nacre-reference-values/v3".into();
        assert!(d.check().is_err());
    }

    /// A v2 document carries an SNP floor; a v1 one cannot.
    #[test]
    fn snp_floor_round_trips_in_v2_only() {
        let (key, pk) = generate_signing_key().unwrap();
        let mut doc = sample();
        doc.snp_min_tcb = Some(
            serde_json::from_str(r#"{"genoa":{"bootloader":10,"tee":0,"snp":23,"microcode":84}}"#).unwrap(),
        );
        let (bytes, sig) = doc.sign(&key).unwrap();
        let back = ReferenceValues::verify(&bytes, &serde_json::to_vec(&sig).unwrap(), &[pk]).unwrap();
        assert_eq!(back, doc);
        doc.format = FORMAT_V1.into();
        assert!(doc.sign(&key).is_err());
    }

    /// Issue 16: the SBOM's digest is signed with the values (v2 only, 64 lowercase hex digits);
    /// a document without one still verifies, and a reader refuses fields it does not know.
    #[test]
    fn sbom_digest_is_signed_in_v2_only() {
        let (key, pk) = generate_signing_key().unwrap();
        let mut doc = sample();
        doc.image.sbom_sha256 = Some("e".repeat(64));
        let (bytes, sig) = doc.sign(&key).unwrap();
        assert!(
            String::from_utf8_lossy(&bytes).contains(&format!("\"sbom_sha256\": \"{}\"", "e".repeat(64)))
        );
        let back = ReferenceValues::verify(&bytes, &serde_json::to_vec(&sig).unwrap(), &[pk]).unwrap();
        assert_eq!(back, doc);
        // Without one: the field is left out, not written as null.
        let (bytes, _) = sample().sign(&key).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("sbom"));
        for (value, reason) in [("E".repeat(64), "sbom_sha256"), ("e".repeat(63), "sbom_sha256")] {
            doc.image.sbom_sha256 = Some(value);
            assert!(doc.check().unwrap_err().to_string().contains(reason));
        }
        doc.image.sbom_sha256 = Some("e".repeat(64));
        doc.format = FORMAT_V1.into();
        assert!(doc.check().unwrap_err().to_string().contains("v2 field"));
        // Strict: a field this reader does not know is refused.
        let (bytes, _) = sample().sign(&key).unwrap();
        let odd = String::from_utf8(bytes)
            .unwrap()
            .replace("\"cmdline\"", "\"sbom_sha512\": \"x\",\n    \"cmdline\"");
        assert!(
            ReferenceValues::parse_unverified(odd.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
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
