//! Publisher signatures in the release policy (issue 16, OpenSSF Model Signing).
//!
//! A key's release policy can require that the model be signed by one of a list of signers:
//!
//! ```toml
//! # A bare key (model-signing's `key` method): a PEM public key, ECDSA P-256/P-384/P-521.
//! [[signers]]
//! public_key_pem = """
//! -----BEGIN PUBLIC KEY-----
//! ...
//! -----END PUBLIC KEY-----
//! """
//!
//! # A certificate (model-signing's `certificate` method): pinned roots and the identity the
//! # signing certificate must carry, exactly one of `email`, `uri`, `common_name`.
//! [[signers]]
//! certificate_roots_pem = """
//! -----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----
//! """
//! email = "models@publisher.example"
//! ```
//!
//! At most [`MAX_SIGNERS`] signers, each PEM at most [`MAX_SIGNER_PEM_LEN`] bytes and each
//! identity at most [`MAX_IDENTITY_LEN`]; unknown fields, a signer of neither or both kinds, an
//! unusable key or root, and the same signer twice are refused when the policy is set.
//!
//! **Registration** (key creation or rotation with a [`ModelRegistration`]): the service holds
//! no plaintext, so it verifies the bundle offline against the policy's signers at its own
//! clock ([`register`]) and relates the signed manifest to the sealed header's model identity
//! ([`relate`]): a shard manifest gives the identity itself (same shard digests, same length);
//! a whole-file manifest cannot be related without the plaintext, so its file SHA-256 is
//! recorded and the enclave checks it. The bundle, the identity, the check time and the verdict
//! are stored with the key version.
//!
//! **Release** ([`check_at_release`]): the stored bundle is verified again against the policy
//! in force, at the stored check time (never at release time: a short-lived certificate that
//! was valid when the model was registered stays acceptable, and a policy changed to another
//! signer takes effect at once). The verdict goes into the audit record and the signed
//! attestation result.

use aws_lc_rs::digest;
use nacre_protocol::model::{ModelRegistration, ModelSignature, Sha256, SignedManifest};
use nacre_protocol::{ErrorBody, ErrorCode};
use nacre_signing::{Identity, Manifest, SignatureError, Signer, Trust};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use serde::Deserialize;

/// Most signers one policy names.
pub const MAX_SIGNERS: usize = 16;
/// Longest PEM (a public key, or a set of roots) one signer carries.
pub const MAX_SIGNER_PEM_LEN: usize = 32 * 1024;
/// Longest certificate identity.
pub const MAX_IDENTITY_LEN: usize = 1024;

/// One `[[signers]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignerToml {
    #[serde(default)]
    public_key_pem: Option<String>,
    #[serde(default)]
    certificate_roots_pem: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    common_name: Option<String>,
}

/// A signer a release policy accepts, parsed into usable trust.
#[derive(Debug, Clone)]
pub struct PolicySigner {
    /// How refusals name it: `key:sha256:<hex SPKI digest>` (as the verdict names a key
    /// signer), or the identity and the roots' digest.
    pub name: String,
    trust: Trust,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

fn parse_one(i: usize, raw: SignerToml) -> Result<PolicySigner, String> {
    let at = |m: String| format!("signers[{i}]: {m}");
    let pem_len = |pem: &str| {
        if pem.len() > MAX_SIGNER_PEM_LEN {
            Err(at(format!("the PEM is {} bytes, more than {MAX_SIGNER_PEM_LEN}", pem.len())))
        } else {
            Ok(())
        }
    };
    let identities = [
        raw.email.map(Identity::Email),
        raw.uri.map(Identity::Uri),
        raw.common_name.map(Identity::CommonName),
    ];
    let mut identities = identities.into_iter().flatten();
    let identity = identities.next();
    if identities.next().is_some() {
        return Err(at("give exactly one of `email`, `uri`, `common_name`".into()));
    }
    match (raw.public_key_pem, raw.certificate_roots_pem, identity) {
        (Some(pem), None, None) => {
            pem_len(&pem)?;
            let trust = Trust::public_key_pem(pem.as_bytes()).map_err(|e| at(e.to_string()))?;
            let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| at(format!("public_key_pem: {e}")))?;
            Ok(PolicySigner { name: format!("key:sha256:{}", hex::encode(sha256(spki.as_ref()))), trust })
        }
        (None, Some(pem), Some(identity)) => {
            pem_len(&pem)?;
            let text = identity.to_string();
            if text.len() > MAX_IDENTITY_LEN || text.ends_with(':') {
                return Err(at(format!("the identity must be 1-{MAX_IDENTITY_LEN} characters")));
            }
            let trust = Trust::certificate(pem.as_bytes(), identity).map_err(|e| at(e.to_string()))?;
            let mut roots = digest::Context::new(&digest::SHA256);
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.update(cert.map_err(|e| at(format!("certificate_roots_pem: {e}")))?.as_ref());
            }
            Ok(PolicySigner { name: format!("{text} (roots sha256:{})", hex::encode(roots.finish())), trust })
        }
        (None, Some(_), None) => Err(at("a certificate signer needs `email`, `uri` or `common_name`".into())),
        (Some(_), None, Some(_)) => {
            Err(at("`email`, `uri` and `common_name` belong to a certificate signer, not a key".into()))
        }
        (Some(_), Some(_), _) => Err(at("give `public_key_pem` or `certificate_roots_pem`, not both".into())),
        (None, None, _) => Err(at("give `public_key_pem` or `certificate_roots_pem`".into())),
    }
}

/// The policy's `[[signers]]`, checked.
pub(crate) fn parse(raw: Vec<SignerToml>) -> Result<Vec<PolicySigner>, String> {
    if raw.len() > MAX_SIGNERS {
        return Err(format!("signers: {} signers, at most {MAX_SIGNERS}", raw.len()));
    }
    let mut out: Vec<PolicySigner> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let signer = parse_one(i, s)?;
        if out.iter().any(|o| o.name == signer.name) {
            return Err(format!("signers[{i}]: {} is named twice", signer.name));
        }
        out.push(signer);
    }
    Ok(out)
}

/// A model as stored with a key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRow {
    /// The sealed header's model identity.
    pub identity: [u8; 32],
    /// The publisher's signature bundle (JSON), byte for byte.
    pub bundle: Option<String>,
    /// Unix seconds of the registration: the time every check of the bundle is made at.
    pub registered_at: i64,
    /// The verdict at registration, when the policy then named signers.
    pub signature: Option<ModelSignature>,
}

/// The sealed format v2's model identity of a model of `len` bytes in `shard_size`-byte shards
/// with these digests (docs/sealed-format.md): the sealed crate's own computation, so that the
/// service and the enclave cannot disagree.
pub fn model_identity(len: u64, shard_size: u64, digests: &[[u8; 32]]) -> [u8; 32] {
    nacre_sealed::ModelIdentity { len, shard_size, shard_digests: digests.to_vec() }.identity()
}

/// Does `manifest` match the model `identity`? A shard manifest does when the identity
/// computed from its shard digests, shard size and length is `identity`; a whole-file manifest
/// cannot be told without the plaintext, so its file digest is returned for the enclave to
/// check. `Err` names the mismatch.
pub fn relate(
    manifest: &Manifest,
    identity: &[u8; 32],
) -> Result<(SignedManifest, Option<[u8; 32]>), String> {
    match manifest {
        Manifest::Shards { shard_size, total_len, digests, .. } => {
            let signed = model_identity(*total_len, *shard_size, digests);
            if signed == *identity {
                Ok((SignedManifest::Shards, None))
            } else {
                Err(format!(
                    "the signed shard manifest ({} shards of {shard_size} bytes, {total_len} bytes) gives model \
                     identity {}, but the model's is {}",
                    digests.len(),
                    hex::encode(signed),
                    hex::encode(identity)
                ))
            }
        }
        Manifest::WholeFile { sha256, .. } => Ok((SignedManifest::WholeFile, Some(*sha256))),
        _ => Err("the signed manifest is of a kind this service does not know".into()),
    }
}

/// The error code a refusal of the bundle gets.
fn code_of(e: &SignatureError) -> ErrorCode {
    match e {
        SignatureError::Oversized { .. }
        | SignatureError::Parse { .. }
        | SignatureError::NotAModelSignature { .. }
        | SignatureError::ManifestInconsistent(_)
        | SignatureError::MultipleFiles { .. }
        | SignatureError::UnsupportedMediaType(_)
        | SignatureError::UnsupportedScheme(_) => ErrorCode::Malformed,
        SignatureError::BadSignature => ErrorCode::BadSignature,
        SignatureError::ModelMismatch(_) => ErrorCode::ModelMismatch,
        _ => ErrorCode::UntrustedSigner,
    }
}

/// Verifies `bundle` against each of `signers` at `at` (unix seconds) and relates the first
/// verdict to `identity`. Refused: with the most telling code among the signers' refusals
/// (malformed, then a bad signature, then an untrusted signer), naming each.
fn verify_any(
    signers: &[PolicySigner],
    bundle: &[u8],
    identity: &[u8; 32],
    at: i64,
) -> Result<ModelSignature, ErrorBody> {
    let mut refusals: Vec<(&PolicySigner, SignatureError)> = Vec::with_capacity(signers.len());
    for s in signers {
        let verified = match nacre_signing::verify(bundle, &s.trust, at) {
            Ok(v) => v,
            Err(e) => {
                refusals.push((s, e));
                continue;
            }
        };
        let (manifest, file_sha256) = relate(verified.manifest(), identity).map_err(|reason| {
            ErrorBody::new(
                ErrorCode::ModelMismatch,
                format!("the model signature's subject does not match: {reason}"),
            )
        })?;
        let (signer, certificate_subject, certificate_issuer) = match verified.signer() {
            Signer::Key { spki_sha256 } => (format!("key:sha256:{}", hex::encode(spki_sha256)), None, None),
            Signer::Certificate { identity, subject, issuer, .. } => {
                (identity.clone(), Some(subject.clone()), Some(issuer.clone()))
            }
            _ => (s.name.clone(), None, None),
        };
        return Ok(ModelSignature {
            signer,
            certificate_subject,
            certificate_issuer,
            model_identity: Sha256(*identity),
            manifest,
            subject_digest: Sha256(verified.subject_digest()),
            file_sha256: file_sha256.map(Sha256),
            checked_at: verified.checked_at().unwrap_or(at),
        });
    }
    let codes: Vec<ErrorCode> = refusals.iter().map(|(_, e)| code_of(e)).collect();
    let code = [ErrorCode::Malformed, ErrorCode::BadSignature]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(ErrorCode::UntrustedSigner);
    let reason = match refusals.as_slice() {
        [(_, e)] => format!("the model's signature bundle is refused: {e}"),
        // A bundle that does not parse fails alike under every signer: say it once.
        _ if code == ErrorCode::Malformed => {
            let e = refusals.iter().find(|(_, e)| code_of(e) == code).map(|(_, e)| e.to_string());
            format!("the model's signature bundle is refused: {}", e.unwrap_or_default())
        }
        all => format!(
            "the model's signature verifies under none of the policy's {} signers: {}",
            all.len(),
            all.iter().map(|(s, e)| format!("{}: {e}", s.name)).collect::<Vec<_>>().join("; ")
        ),
    };
    Err(ErrorBody::new(code, reason))
}

fn required(signers: &[PolicySigner], what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::SignatureRequired,
        format!(
            "the key's release policy requires a model signed by one of its {} signers, but {what}",
            signers.len()
        ),
    )
}

/// Registers `model` under a policy with `signers`, at `now` (the service's clock): what to
/// store with the key version. A policy without signers takes any model (and none); its bundle
/// is stored unchecked, for a later policy with signers to check at this registration's time.
pub fn register(
    signers: &[PolicySigner],
    model: Option<&ModelRegistration>,
    now: i64,
) -> Result<Option<ModelRow>, ErrorBody> {
    let Some(model) = model else {
        return if signers.is_empty() {
            Ok(None)
        } else {
            Err(required(signers, "no model was registered with the key"))
        };
    };
    let identity = model.check()?;
    let bundle = match &model.signature_bundle {
        Some(b) => Some(String::from_utf8(b.to_vec()).map_err(|_| {
            ErrorBody::new(ErrorCode::Malformed, "the model's signature bundle is not UTF-8 JSON")
        })?),
        None => None,
    };
    let signature = match (&bundle, signers.is_empty()) {
        (_, true) => None,
        (None, false) => return Err(required(signers, "the model has no signature bundle")),
        (Some(b), false) => Some(verify_any(signers, b.as_bytes(), &identity, now)?),
    };
    Ok(Some(ModelRow { identity, bundle, registered_at: now, signature }))
}

/// The signature a release under a policy with `signers` relies on: the key version's stored
/// bundle verified against them at its registration time. Every refusal is a denial
/// ([`ErrorCode::is_denial`]): a stored bundle that no signer of the policy verifies is,
/// whatever the details, not signed by one of them.
pub fn check_at_release(
    signers: &[PolicySigner],
    version: u32,
    model: Option<&ModelRow>,
) -> Result<ModelSignature, ErrorBody> {
    let Some(model) = model else {
        return Err(required(signers, &format!("version {version} was registered without a model")));
    };
    let Some(bundle) = &model.bundle else {
        return Err(required(signers, &format!("version {version}'s model has no signature bundle")));
    };
    verify_any(signers, bundle.as_bytes(), &model.identity, model.registered_at).map_err(|mut body| {
        if !body.code.is_denial() {
            body.code = ErrorCode::UntrustedSigner;
        }
        body
    })
}

/// What an audit record says about a registered model.
pub fn describe(model: Option<&ModelRow>) -> Option<String> {
    let model = model?;
    let identity = hex::encode(model.identity);
    Some(match (&model.signature, &model.bundle) {
        (Some(s), _) => format!("model identity {identity}; {}", describe_signature(s)),
        (None, Some(_)) => {
            format!(
                "model identity {identity}; signature bundle stored unchecked (the policy names no signers)"
            )
        }
        (None, None) => format!("model identity {identity}; unsigned"),
    })
}

/// A verdict in one line: who signed, and what is left for the enclave to check.
pub fn describe_signature(s: &ModelSignature) -> String {
    match (s.manifest, &s.file_sha256) {
        (SignedManifest::WholeFile, Some(d)) => {
            format!("signed by {} (whole-file manifest, sha256 {}: checked by the enclave)", s.signer, d)
        }
        _ => format!("signed by {} ({} manifest, identity checked)", s.signer, s.manifest.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real model-signing publisher key (attestation/signing/tests/fixtures).
    const KEY: &str = include_str!("../../signing/tests/fixtures/publisher.pub.pem");

    fn raw(text: &str) -> Result<Vec<PolicySigner>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct T {
            signers: Vec<SignerToml>,
        }
        parse(toml::from_str::<T>(text).map_err(|e| e.to_string())?.signers)
    }

    #[test]
    fn identity_is_the_sealed_formula() {
        // SHA-256("NACRE-MODEL-IDENTITY-2" || 3 as u64 BE || 1 MiB as u64 BE || [1; 32]).
        let mut m = b"NACRE-MODEL-IDENTITY-2".to_vec();
        m.extend_from_slice(&3u64.to_be_bytes());
        m.extend_from_slice(&(1u64 << 20).to_be_bytes());
        m.extend_from_slice(&[1; 32]);
        assert_eq!(model_identity(3, 1 << 20, &[[1; 32]]), sha256(&m));
    }

    #[test]
    fn signers_parse_strictly() {
        let one = raw(&format!("[[signers]]\npublic_key_pem = \"\"\"\n{KEY}\"\"\"\n")).unwrap();
        assert!(one[0].name.starts_with("key:sha256:"), "{}", one[0].name);
        for (bad, reason) in [
            ("[[signers]]\n", "give `public_key_pem` or"),
            (&format!("[[signers]]\npublic_key_pem = \"\"\"\n{KEY}\"\"\"\nemail = \"a@b\"\n"), "not a key"),
            ("[[signers]]\ncertificate_roots_pem = \"x\"\n", "needs `email`"),
            ("[[signers]]\ncertificate_roots_pem = \"x\"\nemail = \"a\"\nuri = \"b\"\n", "exactly one"),
            ("[[signers]]\npublic_key_pem = \"not a key\"\n", "signers[0]"),
            ("[[signers]]\nkey = \"x\"\n", "unknown field"),
            (
                &format!("[[signers]]\npublic_key_pem = \"{}\"\n", "a".repeat(MAX_SIGNER_PEM_LEN + 1)),
                "more than",
            ),
        ] {
            let e = raw(bad).unwrap_err();
            assert!(e.contains(reason), "{bad}: {e}");
        }
        let twice = format!("[[signers]]\npublic_key_pem = \"\"\"\n{KEY}\"\"\"\n").repeat(2);
        assert!(raw(&twice).unwrap_err().contains("named twice"));
        let many = "[[signers]]\npublic_key_pem = \"x\"\n".repeat(MAX_SIGNERS + 1);
        assert!(raw(&many).unwrap_err().contains("at most"));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../signing/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn key(pem: &str) -> String {
        format!("[[signers]]\npublic_key_pem = \"\"\"\n{}\"\"\"\n", String::from_utf8(fixture(pem)).unwrap())
    }

    fn ca(roots: &str, email: &str) -> String {
        let pem = String::from_utf8(fixture(roots)).unwrap();
        format!("[[signers]]\ncertificate_roots_pem = \"\"\"\n{pem}\"\"\"\nemail = \"{email}\"\n")
    }

    /// The identity of the fixture model in 1 MiB shards, from the signed manifest's digests
    /// (tests/release/signers.rs recomputes it from the model's bytes).
    fn fixture_identity() -> [u8; 32] {
        let v = nacre_signing::verify(
            &fixture("shards-1mib.sig.json"),
            &raw(&key("publisher.pub.pem")).unwrap()[0].trust,
            0,
        )
        .unwrap();
        let Manifest::Shards { shard_size, total_len, digests, .. } = v.manifest() else { panic!() };
        model_identity(*total_len, *shard_size, digests)
    }

    /// Every subset of four signers, in both orders: a bundle registers exactly when its signer
    /// is among them, the verdict names that signer whatever its place, and a refusal is
    /// `untrusted_signer` naming each signer's reason.
    #[test]
    fn the_signer_is_found_among_any_set_of_signers() {
        let all = [
            key("publisher.pub.pem"),
            key("other.pub.pem"),
            ca("ca.pem", "models@publisher.example"),
            ca("other-ca.pem", "models@publisher.example"),
        ];
        let id = fixture_identity();
        let bundles = [
            ("shards-1mib.sig.json", 0, "key:sha256:"),
            ("certificate.sig.json", 2, "email:models@publisher.example"),
        ];
        for set in 1u32..16 {
            for reversed in [false, true] {
                let mut chosen: Vec<usize> = (0..4).filter(|i| set & (1 << i) != 0).collect();
                if reversed {
                    chosen.reverse();
                }
                let signers = raw(&chosen.iter().map(|&i| all[i].as_str()).collect::<String>()).unwrap();
                for (bundle, signer, name) in bundles {
                    let m = ModelRegistration::new(id, Some(fixture(bundle)));
                    // 2026-12-04, inside the certificate's validity.
                    match register(&signers, Some(&m), 1_796_342_400) {
                        Ok(row) => {
                            assert!(chosen.contains(&signer), "{set} {bundle}");
                            assert!(row.unwrap().signature.unwrap().signer.starts_with(name));
                        }
                        Err(e) => {
                            assert!(!chosen.contains(&signer), "{set} {bundle}: {e}");
                            assert_eq!(e.code, ErrorCode::UntrustedSigner, "{set} {bundle}: {e}");
                            if chosen.len() > 1 {
                                assert!(
                                    e.reason
                                        .contains(&format!("none of the policy's {} signers", chosen.len())),
                                    "{e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A certificate signer is judged at the registration time stored with the model, never at
    /// the release's: the same stored row passes or fails by its own time alone.
    #[test]
    fn certificates_are_checked_at_the_registration_time() {
        let signers = raw(&ca("ca.pem", "models@publisher.example")).unwrap();
        let m = ModelRegistration::new(fixture_identity(), Some(fixture("certificate.sig.json")));
        let mut row = register(&signers, Some(&m), 1_796_342_400).unwrap().unwrap();
        let at_registration = check_at_release(&signers, 1, Some(&row)).unwrap();
        assert_eq!(Some(&at_registration), row.signature.as_ref());
        assert_eq!(at_registration.checked_at, 1_796_342_400);
        // The leaf is valid 2026-01-01 .. 2028-01-01: a row registered in 2029 fails, by its
        // own time, and as a denial.
        row.registered_at = 1_861_920_000;
        let e = check_at_release(&signers, 1, Some(&row)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UntrustedSigner, "{e}");
        assert!(e.reason.contains("expired"), "{e}");
        // A key signer has no validity to check.
        let signers = raw(&key("publisher.pub.pem")).unwrap();
        let m = ModelRegistration::new(fixture_identity(), Some(fixture("shards-1mib.sig.json")));
        let row = register(&signers, Some(&m), 0).unwrap().unwrap();
        assert_eq!(check_at_release(&signers, 1, Some(&row)).unwrap().checked_at, 0);
        // Another key at release: a denial, whatever nacre-signing calls it.
        let other = raw(&key("other.pub.pem")).unwrap();
        assert!(check_at_release(&other, 1, Some(&row)).unwrap_err().code.is_denial());
    }

    /// The release policy reads `[[signers]]` through this module, strictly; none is no
    /// requirement.
    #[test]
    fn release_policies_take_signers() {
        use crate::policy::ReleasePolicy;
        let base = format!("insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n", "a".repeat(96));
        assert!(ReleasePolicy::parse(&base).unwrap().signers.is_empty());
        let ca = include_str!("../../signing/tests/fixtures/ca.pem");
        let p = ReleasePolicy::parse(&format!(
            "{base}[[signers]]\npublic_key_pem = \"\"\"\n{KEY}\"\"\"\n\
             [[signers]]\ncertificate_roots_pem = \"\"\"\n{ca}\"\"\"\nuri = \"https://ci.example/release\"\n"
        ))
        .unwrap();
        assert_eq!(p.signers.len(), 2);
        assert!(
            p.signers[1].name.starts_with("uri:https://ci.example/release (roots sha256:"),
            "{}",
            p.signers[1].name
        );
        let e = ReleasePolicy::parse(&format!("{base}[[signers]]\nemail = \"a@b\"\n")).unwrap_err();
        assert!(e.contains("signers[0]"), "{e}");
        let e = ReleasePolicy::parse(&format!("{base}signers = 1\n")).unwrap_err();
        assert!(e.contains("signers"), "{e}");
    }

    #[test]
    fn no_model_needs_no_signers() {
        assert_eq!(register(&[], None, 1).unwrap(), None);
        let row =
            register(&[], Some(&ModelRegistration::new([2; 32], Some(b"{}".to_vec()))), 5).unwrap().unwrap();
        assert_eq!(
            (row.identity, row.bundle.as_deref(), row.registered_at, row.signature),
            ([2; 32], Some("{}"), 5, None)
        );
        let signers = raw(&format!("[[signers]]\npublic_key_pem = \"\"\"\n{KEY}\"\"\"\n")).unwrap();
        assert_eq!(register(&signers, None, 1).unwrap_err().code, ErrorCode::SignatureRequired);
        let unsigned = ModelRegistration::new([2; 32], None);
        assert_eq!(register(&signers, Some(&unsigned), 1).unwrap_err().code, ErrorCode::SignatureRequired);
        let garbage = ModelRegistration::new([2; 32], Some(b"{}".to_vec()));
        assert_eq!(register(&signers, Some(&garbage), 1).unwrap_err().code, ErrorCode::Malformed);
        assert_eq!(check_at_release(&signers, 1, None).unwrap_err().code, ErrorCode::SignatureRequired);
    }
}
