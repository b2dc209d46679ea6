//! nacre-signing against bundles made by the real signer (`model-signing` 1.1.1; see
//! tests/fixtures/make.py and README.md there), plus bundles this test signs itself with a fresh
//! key so that a negative test can change one field of the statement and re-sign it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nacre_signing::{
    Identity, Inconsistency, MAX_BUNDLE_LEN, Manifest, ModelMismatch, SignatureError, Signer, Trust,
    Unsupported, WrongSigner, verify,
};
use serde_json::{Value, json};

/// 2026-12-04T00:00:00Z: inside the fixtures' leaf validity (2026-01-01 .. 2028-01-01).
const NOW: i64 = 1_796_342_400;
const LEAF_NOT_BEFORE: i64 = 1_767_225_600; // 2026-01-01
const LEAF_NOT_AFTER: i64 = 1_830_297_600; // 2028-01-01
const OLD_LEAF_NOT_AFTER: i64 = 1_609_459_200; // 2021-01-01
const MIB: usize = 1_048_576;

/// The fixture model, as make.py writes it: SHA-256 in counter mode over a fixed seed,
/// block i = SHA-256(SEED || i as u64 big-endian), cut to MODEL_LEN.
fn model_bytes() -> Vec<u8> {
    const SEED: &[u8] = b"nacre-oms-fixture-v1";
    const MODEL_LEN: usize = 2 * MIB + MIB / 2 + 7;
    let mut out = Vec::with_capacity(MODEL_LEN + 32);
    let mut i = 0u64;
    while out.len() < MODEL_LEN {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(SEED);
        ctx.update(&i.to_be_bytes());
        out.extend_from_slice(ctx.finish().as_ref());
        i += 1;
    }
    out.truncate(MODEL_LEN);
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn publisher() -> Trust {
    Trust::public_key_pem(&fixture("publisher.pub.pem")).unwrap()
}

fn publisher_ca(identity: Identity) -> Trust {
    Trust::certificate(&fixture("ca.pem"), identity).unwrap()
}

fn email() -> Identity {
    Identity::Email("models@publisher.example".to_owned())
}

fn spki_sha256(pem_name: &str) -> [u8; 32] {
    sha256(pem::parse(fixture(pem_name)).unwrap().contents())
}

// --- The real signer's bundles verify and say what was signed ---

#[test]
fn whole_file_bundle_verifies() {
    let model = model_bytes();
    let v = verify(&fixture("whole-file.sig.json"), &publisher(), NOW).unwrap();
    assert_eq!(v.signer(), &Signer::Key { spki_sha256: spki_sha256("publisher.pub.pem") });
    assert_eq!(v.signing_time(), None);
    assert_eq!(v.checked_at(), None);
    assert_eq!(
        v.manifest(),
        &Manifest::WholeFile { name: "model.onnx".to_owned(), path: ".".to_owned(), sha256: sha256(&model) }
    );
    assert_eq!(v.subject_digest(), sha256(&sha256(&model)));
    v.manifest().check_model(&model).unwrap();
}

#[test]
fn one_mib_shard_bundle_verifies_with_recomputed_shard_digests() {
    let model = model_bytes();
    let v = verify(&fixture("shards-1mib.sig.json"), &publisher(), NOW).unwrap();
    let digests: Vec<[u8; 32]> = model.chunks(MIB).map(sha256).collect();
    assert_eq!(digests.len(), 3);
    assert_eq!(
        v.manifest(),
        &Manifest::Shards {
            name: "model.onnx".to_owned(),
            path: ".".to_owned(),
            shard_size: MIB as u64,
            total_len: model.len() as u64,
            digests: digests.clone(),
        }
    );
    assert_eq!(v.subject_digest(), sha256(&digests.concat()));
    assert_eq!(v.subject_digest(), v.manifest().subject_digest());
    v.manifest().check_model(&model).unwrap();
}

/// The API's default shard size (10^9 bytes, written as the float `1000000000.0`) gives one
/// shard for this model, and so the same subject digest as the whole-file bundle.
#[test]
fn default_shard_size_bundle_verifies() {
    let model = model_bytes();
    let v = verify(&fixture("shards-default.sig.json"), &publisher(), NOW).unwrap();
    let Manifest::Shards { shard_size, total_len, digests, .. } = v.manifest() else {
        panic!("{:?}", v.manifest())
    };
    assert_eq!(*shard_size, 1_000_000_000);
    assert_eq!(*total_len, model.len() as u64);
    assert_eq!(digests, &vec![sha256(&model)]);
    let whole = verify(&fixture("whole-file.sig.json"), &publisher(), NOW).unwrap();
    assert_eq!(v.subject_digest(), whole.subject_digest());
    v.manifest().check_model(&model).unwrap();
}

#[test]
fn p384_key_bundle_verifies() {
    let trust = Trust::public_key_pem(&fixture("p384.pub.pem")).unwrap();
    let v = verify(&fixture("p384.sig.json"), &trust, NOW).unwrap();
    assert_eq!(v.signer(), &Signer::Key { spki_sha256: spki_sha256("p384.pub.pem") });
    v.manifest().check_model(&model_bytes()).unwrap();
}

#[test]
fn certificate_bundle_verifies_against_the_pinned_root() {
    let model = model_bytes();
    let v = verify(&fixture("certificate.sig.json"), &publisher_ca(email()), NOW).unwrap();
    let Signer::Certificate { identity, subject, issuer, not_before, not_after, .. } = v.signer() else {
        panic!("{:?}", v.signer())
    };
    assert_eq!(identity, "email:models@publisher.example");
    assert!(subject.contains("CN=Nacre test model publisher"), "{subject}");
    assert!(issuer.contains("CN=Nacre test signing CA"), "{issuer}");
    assert_eq!((*not_before, *not_after), (LEAF_NOT_BEFORE, LEAF_NOT_AFTER));
    assert_eq!(v.checked_at(), Some(NOW));
    assert_eq!(v.signing_time(), None);
    v.manifest().check_model(&model).unwrap();

    let by_cn = publisher_ca(Identity::CommonName("Nacre test model publisher".to_owned()));
    assert!(verify(&fixture("certificate.sig.json"), &by_cn, NOW).is_ok());
}

// --- Tampered model ---

#[test]
fn tampered_model_is_refused_naming_the_shard() {
    let v = verify(&fixture("shards-1mib.sig.json"), &publisher(), NOW).unwrap();
    let mut model = model_bytes();
    model[MIB + 5] ^= 1;
    let err = v.manifest().check_model(&model).unwrap_err();
    assert!(matches!(err, SignatureError::ModelMismatch(ModelMismatch::ShardDigest { index: 1 })));
    assert!(err.to_string().contains("shard 1 differs"), "{err}");

    let short = &model_bytes()[..2 * MIB];
    let err = v.manifest().check_model(short).unwrap_err();
    assert!(matches!(err, SignatureError::ModelMismatch(ModelMismatch::Length { .. })), "{err}");
}

#[test]
fn tampered_model_is_refused_whole_file() {
    let v = verify(&fixture("whole-file.sig.json"), &publisher(), NOW).unwrap();
    let mut model = model_bytes();
    *model.last_mut().unwrap() ^= 0x80;
    let err = v.manifest().check_model(&model).unwrap_err();
    assert!(matches!(err, SignatureError::ModelMismatch(ModelMismatch::WholeFileDigest)), "{err}");
}

// --- Tampered bundle ---

fn edit_bundle(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut bundle: Value = serde_json::from_slice(&fixture(name)).unwrap();
    edit(&mut bundle);
    serde_json::to_vec(&bundle).unwrap()
}

fn edit_b64(v: &mut Value, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
    edit(&mut bytes);
    *v = Value::String(STANDARD.encode(bytes));
}

#[test]
fn flipped_payload_byte_is_refused() {
    let bundle = edit_bundle("shards-1mib.sig.json", |b| {
        // The first hex digit of the last shard's digest: still valid JSON and a consistent
        // layout, so only the signature can catch it.
        edit_b64(&mut b["dsseEnvelope"]["payload"], |p| {
            let key = b"\"digest\": \"";
            let at = p.windows(key.len()).rposition(|w| w == key).unwrap() + key.len();
            assert!(p[at].is_ascii_hexdigit());
            p[at] = if p[at] == b'0' { b'1' } else { b'0' };
        });
    });
    let err = verify(&bundle, &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn flipped_signature_byte_is_refused() {
    for at in [10, 40] {
        let bundle = edit_bundle("whole-file.sig.json", |b| {
            edit_b64(&mut b["dsseEnvelope"]["signatures"][0]["sig"], |s| s[at] ^= 1);
        });
        let err = verify(&bundle, &publisher(), NOW).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature), "{err}");
    }
}

#[test]
fn flipped_certificate_byte_is_refused() {
    let bundle = edit_bundle("certificate.sig.json", |b| {
        edit_b64(
            &mut b["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"],
            |c| {
                let n = c.len();
                c[n - 10] ^= 1; // inside the issuer's signature
            },
        );
    });
    let err = verify(&bundle, &publisher_ca(email()), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UntrustedChain(_)), "{err}");
}

// --- Wrong signer ---

#[test]
fn wrong_signer_key_is_refused() {
    let other = Trust::public_key_pem(&fixture("other.pub.pem")).unwrap();
    let err = verify(&fixture("whole-file.sig.json"), &other, NOW).unwrap_err();
    assert!(matches!(err, SignatureError::WrongSigner(WrongSigner::KeyHint)), "{err}");
    assert!(err.to_string().contains("names another public key"), "{err}");

    // Without the (unsigned) hint, the signature itself refuses it.
    let no_hint = edit_bundle("whole-file.sig.json", |b| b["verificationMaterial"]["publicKey"] = json!({}));
    let err = verify(&no_hint, &other, NOW).unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature), "{err}");
    assert!(verify(&no_hint, &publisher(), NOW).is_ok());
}

#[test]
fn wrong_certificate_identity_is_refused() {
    let trust = publisher_ca(Identity::Email("someone@else.example".to_owned()));
    let err = verify(&fixture("certificate.sig.json"), &trust, NOW).unwrap_err();
    assert!(matches!(err, SignatureError::WrongSigner(WrongSigner::Identity { .. })), "{err}");
    assert!(err.to_string().contains("models@publisher.example"), "{err}");
}

#[test]
fn untrusted_root_is_refused() {
    let trust = Trust::certificate(&fixture("other-ca.pem"), email()).unwrap();
    let err = verify(&fixture("certificate.sig.json"), &trust, NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UntrustedChain(_)), "{err}");
}

#[test]
fn signer_kind_must_match_the_trust() {
    let err = verify(&fixture("certificate.sig.json"), &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::WrongSigner(WrongSigner::ExpectedKey)), "{err}");
    let err = verify(&fixture("whole-file.sig.json"), &publisher_ca(email()), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::WrongSigner(WrongSigner::ExpectedCertificate)), "{err}");
}

// --- Certificates outside their validity ---

#[test]
fn expired_certificate_is_refused() {
    let err = verify(&fixture("certificate-expired.sig.json"), &publisher_ca(email()), NOW).unwrap_err();
    match err {
        SignatureError::CertificateExpired { at, not_after } => {
            assert_eq!((at, not_after), (NOW, OLD_LEAF_NOT_AFTER));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn certificate_is_checked_at_now_without_signing_time_evidence() {
    let bundle = fixture("certificate.sig.json");
    let trust = publisher_ca(email());
    let err = verify(&bundle, &trust, LEAF_NOT_AFTER + 1).unwrap_err();
    assert!(matches!(err, SignatureError::CertificateExpired { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    let err = verify(&bundle, &trust, LEAF_NOT_BEFORE - 1).unwrap_err();
    assert!(matches!(err, SignatureError::CertificateNotYetValid { .. }), "{err}");
    assert!(verify(&bundle, &trust, LEAF_NOT_BEFORE).is_ok());
}

// --- Bad input ---

#[test]
fn garbage_and_oversized_input_is_refused() {
    for garbage in [&b""[..], b"not json", b"{}", b"[]", b"{\"mediaType\": 3}", &[0xff; 100]] {
        let err = verify(garbage, &publisher(), NOW).unwrap_err();
        assert!(matches!(err, SignatureError::Parse { .. }), "{err}");
    }
    let mut big = fixture("whole-file.sig.json");
    big.resize(MAX_BUNDLE_LEN + 1, b' ');
    let err = verify(&big, &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::Oversized { .. }), "{err}");
}

#[test]
fn unsupported_schemes_are_refused_by_name() {
    let old_media = edit_bundle("whole-file.sig.json", |b| {
        b["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.2")
    });
    let err = verify(&old_media, &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedMediaType(_)), "{err}");
    assert!(err.to_string().contains("version=0.2"), "{err}");

    let message = edit_bundle("whole-file.sig.json", |b| {
        let envelope = b.as_object_mut().unwrap().remove("dsseEnvelope").unwrap();
        b["messageSignature"] = json!({"signature": envelope["signatures"][0]["sig"]});
    });
    let err = verify(&message, &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedScheme(Unsupported::MessageSignature)));

    let keyless = edit_bundle("certificate.sig.json", |b| {
        b["verificationMaterial"]["tlogEntries"] = json!([{"logIndex": "1"}]);
    });
    let err = verify(&keyless, &publisher_ca(email()), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedScheme(Unsupported::KeylessEvidence)));

    let two = edit_bundle("whole-file.sig.json", |b| {
        let sig = b["dsseEnvelope"]["signatures"][0].clone();
        b["dsseEnvelope"]["signatures"] = json!([sig.clone(), sig]);
    });
    let err = verify(&two, &publisher(), NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedScheme(Unsupported::SignatureCount(2))));
}

// --- Statements this test signs itself: one field changed, then re-signed ---

struct TestSigner {
    key: EcdsaKeyPair,
    trust: Trust,
}

impl TestSigner {
    fn new() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let der = key.public_key().as_der().unwrap();
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", der.as_ref().to_vec()));
        Self { trust: Trust::public_key_pem(pem.as_bytes()).unwrap(), key }
    }

    fn sign(&self, statement: &Value) -> Vec<u8> {
        self.sign_payload("application/vnd.in-toto+json", &serde_json::to_vec(statement).unwrap())
    }

    fn sign_payload(&self, payload_type: &str, payload: &[u8]) -> Vec<u8> {
        let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
        pae.extend_from_slice(payload);
        let sig = self.key.sign(&SystemRandom::new(), &pae).unwrap();
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": STANDARD.encode(payload),
                "payloadType": payload_type,
                "signatures": [{"sig": STANDARD.encode(sig.as_ref()), "keyid": ""}],
            },
        }))
        .unwrap()
    }

    fn verify(&self, statement: &Value) -> Result<nacre_signing::VerifiedSignature, SignatureError> {
        verify(&self.sign(statement), &self.trust, NOW)
    }
}

/// A statement shaped as model-signing writes one, over shards of `sizes` bytes of `shard_size`.
fn shard_statement(shard_size: Value, ranges: &[(&str, u64, u64)]) -> Value {
    let size = shard_size.as_f64().unwrap() as u64;
    let digests: Vec<[u8; 32]> =
        ranges.iter().map(|(_, s, e)| sha256(format!("{s}-{e}").as_bytes())).collect();
    let resources: Vec<Value> = ranges
        .iter()
        .zip(&digests)
        .map(|((path, s, e), d)| {
            json!({"name": format!("{path}:{s}:{e}"), "algorithm": format!("sha256-sharded-{size}"), "digest": hex::encode(d)})
        })
        .collect();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model.onnx", "digest": {"sha256": hex::encode(sha256(&digests.concat()))}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "resources": resources,
            "serialization": {
                "method": "shards", "hash_type": "sha256", "shard_size": shard_size,
                "allow_symlinks": false, "ignore_paths": [".git"],
            },
        },
    })
}

#[test]
fn self_signed_reference_statement_verifies() {
    let signer = TestSigner::new();
    let v =
        signer.verify(&shard_statement(json!(10), &[(".", 0, 10), (".", 10, 20), (".", 20, 25)])).unwrap();
    let Manifest::Shards { shard_size: 10, total_len: 25, digests, .. } = v.manifest().clone() else {
        panic!()
    };
    assert_eq!(digests.len(), 3);
    // An integral float is the same shard size; unknown predicate fields are ignored (OMS v1.0).
    let mut s = shard_statement(json!(10.0), &[(".", 0, 10), (".", 10, 20)]);
    s["predicate"]["model_card"] = json!({"license": "apache-2.0"});
    signer.verify(&s).unwrap();
}

#[test]
fn inconsistent_manifests_are_refused() {
    let signer = TestSigner::new();
    let cases: Vec<(Value, Inconsistency)> = vec![
        (shard_statement(json!(10), &[(".", 0, 10), (".", 11, 20)]), Inconsistency::ShardLayout { index: 1 }),
        (shard_statement(json!(10), &[(".", 10, 20)]), Inconsistency::ShardLayout { index: 0 }),
        (shard_statement(json!(10), &[(".", 10, 20), (".", 0, 10)]), Inconsistency::ShardLayout { index: 0 }),
        (shard_statement(json!(10), &[(".", 0, 5), (".", 5, 15)]), Inconsistency::ShardSize { index: 0 }),
        (shard_statement(json!(10), &[(".", 0, 10), (".", 10, 30)]), Inconsistency::ShardSize { index: 1 }),
        (shard_statement(json!(10.5), &[(".", 0, 10)]), Inconsistency::ShardSizeValue),
        (shard_statement(json!(0), &[(".", 0, 10)]), Inconsistency::ShardSizeValue),
        (shard_statement(json!(10), &[]), Inconsistency::NoResources),
    ];
    for (statement, why) in cases {
        match signer.verify(&statement) {
            Err(SignatureError::ManifestInconsistent(found)) => assert_eq!(found, why),
            other => panic!("{why:?}: {other:?}"),
        }
    }

    let mut wrong_subject = shard_statement(json!(10), &[(".", 0, 10)]);
    wrong_subject["subject"][0]["digest"]["sha256"] = json!(hex::encode([7u8; 32]));
    let err = signer.verify(&wrong_subject).unwrap_err();
    assert!(matches!(err, SignatureError::ManifestInconsistent(Inconsistency::SubjectDigest)), "{err}");

    let mut wrong_alg = shard_statement(json!(10), &[(".", 0, 10)]);
    wrong_alg["predicate"]["resources"][0]["algorithm"] = json!("sha256-sharded-20");
    let err = signer.verify(&wrong_alg).unwrap_err();
    assert!(matches!(err, SignatureError::ManifestInconsistent(Inconsistency::ResourceAlgorithm { .. })));
}

#[test]
fn several_files_are_refused() {
    let signer = TestSigner::new();
    let s = shard_statement(json!(10), &[("a.onnx", 0, 10), ("b.bin", 0, 10)]);
    let err = signer.verify(&s).unwrap_err();
    assert!(matches!(err, SignatureError::MultipleFiles { files: 2 }), "{err}");
    assert!(err.to_string().contains("exactly one model file"), "{err}");

    let mut files = shard_statement(json!(10), &[(".", 0, 10)]);
    files["predicate"]["serialization"] =
        json!({"method": "files", "hash_type": "sha256", "allow_symlinks": false});
    files["predicate"]["resources"] = json!([
        {"name": "a.onnx", "algorithm": "sha256", "digest": hex::encode([1u8; 32])},
        {"name": "b.bin", "algorithm": "sha256", "digest": hex::encode([2u8; 32])},
    ]);
    let err = signer.verify(&files).unwrap_err();
    assert!(matches!(err, SignatureError::MultipleFiles { files: 2 }), "{err}");
}

#[test]
fn other_statements_and_hashes_are_refused_by_name() {
    let signer = TestSigner::new();
    let base = shard_statement(json!(10), &[(".", 0, 10)]);

    let mut s = base.clone();
    s["predicateType"] = json!("https://slsa.dev/provenance/v1");
    let err = signer.verify(&s).unwrap_err();
    assert!(matches!(err, SignatureError::NotAModelSignature { .. }), "{err}");
    assert!(err.to_string().contains("slsa.dev"), "{err}");

    let mut s = base.clone();
    s["_type"] = json!("https://in-toto.io/Statement/v0.1");
    assert!(matches!(signer.verify(&s), Err(SignatureError::NotAModelSignature { .. })));

    let mut s = base.clone();
    s["predicateType"] = json!("https://model_signing/Digests/v0.1");
    assert!(matches!(
        signer.verify(&s),
        Err(SignatureError::UnsupportedScheme(Unsupported::LegacyPredicate))
    ));

    let mut s = base.clone();
    s["predicate"]["serialization"]["hash_type"] = json!("blake2");
    assert!(matches!(signer.verify(&s), Err(SignatureError::UnsupportedScheme(Unsupported::HashType(_)))));

    let mut s = base.clone();
    s["predicate"]["serialization"]["method"] = json!("digest");
    assert!(matches!(
        signer.verify(&s),
        Err(SignatureError::UnsupportedScheme(Unsupported::SerializationMethod(_)))
    ));

    // A new serialization parameter could change what the digests mean: refused.
    let mut s = base.clone();
    s["predicate"]["serialization"]["chunk_size"] = json!(4096);
    assert!(matches!(signer.verify(&s), Err(SignatureError::Parse { .. })));

    let bundle = signer.sign_payload("text/plain", b"hello");
    let err = verify(&bundle, &signer.trust, NOW).unwrap_err();
    assert!(matches!(err, SignatureError::UnsupportedScheme(Unsupported::PayloadType(_))), "{err}");
}

#[test]
fn trust_material_is_checked_when_built() {
    assert!(matches!(Trust::public_key_pem(b"nope"), Err(SignatureError::InvalidTrust(_))));
    assert!(matches!(Trust::public_key_pem(&fixture("ca.pem")), Err(SignatureError::InvalidTrust(_))));
    assert!(matches!(Trust::certificate(b"", email()), Err(SignatureError::InvalidTrust(_))));
    assert!(matches!(
        Trust::certificate(&fixture("publisher.pub.pem"), email()),
        Err(SignatureError::InvalidTrust(_))
    ));
}

// --- Certificate chains this test issues itself: one property changed per case ---

mod chains {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, date_time_ymd,
    };

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(from_year: i32, to_year: i32) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Nacre generated root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(from_year, 1, 1);
        params.not_after = date_time_ymd(to_year, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A leaf under `ca` valid 2026–2028 with the SAN e-mail, `edit` applied, and a bundle over
    /// a one-shard statement signed by its key.
    fn bundle(ca: &Ca, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Nacre generated publisher");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.subject_alt_names = vec![SanType::Rfc822Name("models@publisher.example".try_into().unwrap())];
        params.not_before = date_time_ymd(2026, 1, 1);
        params.not_after = date_time_ymd(2028, 1, 1);
        edit(&mut params);
        let leaf = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();

        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der()).unwrap();
        let payload = serde_json::to_vec(&shard_statement(json!(10), &[(".", 0, 10)])).unwrap();
        let ptype = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {ptype} {} ", ptype.len(), payload.len()).into_bytes();
        pae.extend_from_slice(&payload);
        let sig = signer.sign(&SystemRandom::new(), &pae).unwrap();
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "x509CertificateChain": {"certificates": [{"rawBytes": STANDARD.encode(leaf.der())}]},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": STANDARD.encode(&payload),
                "payloadType": ptype,
                "signatures": [{"sig": STANDARD.encode(sig.as_ref()), "keyid": ""}],
            },
        }))
        .unwrap()
    }

    fn check(ca: &Ca, identity: Identity, bundle: &[u8]) -> Result<Signer, SignatureError> {
        let trust = Trust::certificate(ca.pem.as_bytes(), identity).unwrap();
        verify(bundle, &trust, NOW).map(|v| v.signer().clone())
    }

    #[test]
    fn generated_chain_verifies() {
        let ca = ca(2025, 2035);
        let signer = check(&ca, email(), &bundle(&ca, |_| {})).unwrap();
        assert!(matches!(signer, Signer::Certificate { .. }));
    }

    #[test]
    fn uri_identity_matches() {
        let ca = ca(2025, 2035);
        let uri = "https://ci.publisher.example/workflows/release";
        let b = bundle(&ca, |p| p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())]);
        let Signer::Certificate { identity, .. } = check(&ca, Identity::Uri(uri.to_owned()), &b).unwrap()
        else {
            panic!()
        };
        assert_eq!(identity, format!("uri:{uri}"));
        let err = check(&ca, email(), &b).unwrap_err();
        assert!(matches!(err, SignatureError::WrongSigner(WrongSigner::Identity { .. })), "{err}");
    }

    /// webpki's trust anchors have no validity; the root's own is checked too.
    #[test]
    fn expired_root_is_refused() {
        let ca = ca(2020, 2026);
        let err = check(&ca, email(), &bundle(&ca, |_| {})).unwrap_err();
        match err {
            SignatureError::CertificateExpired { at, not_after } => {
                assert_eq!((at, not_after), (NOW, LEAF_NOT_BEFORE));
            }
            other => panic!("{other}"),
        }
    }

    type Edit = Box<dyn FnOnce(&mut CertificateParams)>;

    #[test]
    fn leaf_that_may_not_sign_is_refused() {
        let ca = ca(2025, 2035);
        let cases: [(&str, Edit); 3] = [
            (
                "key usage without digitalSignature",
                Box::new(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
            ),
            (
                "EKU without codeSigning",
                Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
            ),
            (
                "neither key usage nor EKU",
                Box::new(|p| {
                    p.key_usages = vec![];
                    p.extended_key_usages = vec![];
                }),
            ),
        ];
        for (what, edit) in cases {
            let err = check(&ca, email(), &bundle(&ca, edit)).unwrap_err();
            assert!(matches!(err, SignatureError::NotForSigning(_)), "{what}: {err}");
        }
        // EKU codeSigning alone (no key usage) is enough, as for model-signing.
        let b = bundle(&ca, |p| p.key_usages = vec![]);
        assert!(check(&ca, email(), &b).is_ok());
    }

    #[test]
    fn ca_certificate_as_signer_is_refused() {
        let ca = ca(2025, 2035);
        let b = bundle(&ca, |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
        let err = check(&ca, email(), &b).unwrap_err();
        assert!(matches!(err, SignatureError::UntrustedChain(_)), "{err}");
    }
}

// --- Any change to a bundle: refused, or the same verdict (never a panic, never another model) ---

mod mutation {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Flipping bits anywhere in a real bundle either makes it fail, or leaves what it
        /// vouches for unchanged (e.g. a flip inside the unsigned, unused `keyid`).
        #[test]
        fn mutated_bundle_never_vouches_for_something_else(at in any::<prop::sample::Index>(), bits in 1u8..=255) {
            let original = fixture("shards-1mib.sig.json");
            let expected = verify(&original, &publisher(), NOW).unwrap();
            let mut bundle = original.clone();
            let i = at.index(bundle.len());
            bundle[i] ^= bits;
            if let Ok(v) = verify(&bundle, &publisher(), NOW) {
                prop_assert_eq!(v, expected);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = verify(&bytes, &publisher(), NOW);
        }
    }
}
