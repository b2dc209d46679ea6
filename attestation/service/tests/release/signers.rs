//! Issue 16, signers in the release policy: registration with the publisher's signature and
//! release under the policy's signers, with the bundles `model-signing` 1.1.1 made
//! (attestation/signing/tests/fixtures, README.md there for their provenance). The model is
//! regenerated as the fixtures' make.py and nacre-signing's tests do.

use aws_lc_rs::digest;
use nacre_attestation_client::{Client, ClientError, ModelRegistration};
use nacre_protocol::ErrorCode;
use nacre_protocol::messages::AuditRecord;
use nacre_protocol::model::{ModelSignature, SignedManifest};
use nacre_protocol::result::SUBMOD;

use super::common::{Harness, MEASUREMENT, policy_for};
use super::refused;

const MIB: usize = 1_048_576;
const EMAIL: &str = "models@publisher.example";

/// The fixture model: block i = SHA-256("nacre-oms-fixture-v1" || i as u64 BE), cut to
/// 2,621,447 bytes.
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

/// The sealed format v2's identity of `model` in `shard`-byte shards, computed here from the
/// plaintext as `nacre model digest` does (docs/sealed-format.md), not from any manifest.
fn identity(model: &[u8], shard: usize) -> [u8; 32] {
    let mut manifest = b"NACRE-MODEL-IDENTITY-2".to_vec();
    manifest.extend_from_slice(&(model.len() as u64).to_be_bytes());
    manifest.extend_from_slice(&(shard as u64).to_be_bytes());
    for chunk in model.chunks(shard) {
        manifest.extend_from_slice(&sha256(chunk));
    }
    sha256(&manifest)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../signing/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// A release policy that lets the harness's sim guest in and requires `signers` (TOML).
fn policy(signers: &str) -> String {
    format!("{}{signers}", policy_for(&MEASUREMENT))
}

fn key_signer(pem: &str) -> String {
    format!("[[signers]]\npublic_key_pem = \"\"\"\n{}\"\"\"\n", text(pem))
}

fn certificate_signer(roots: &str, email: &str) -> String {
    format!("[[signers]]\ncertificate_roots_pem = \"\"\"\n{}\"\"\"\nemail = \"{email}\"\n", text(roots))
}

/// `key:sha256:<hex>` of a PEM public key fixture: the SHA-256 of its DER SubjectPublicKeyInfo.
fn key_name(pem: &str) -> String {
    let b64: String = text(pem).lines().filter(|l| !l.starts_with("-----")).collect();
    format!("key:sha256:{}", hex::encode(sha256(&base64_decode(&b64))))
}

/// Standard base64 (the PEM body), without another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The bundle with one base64 character of its signed DSSE payload changed.
fn tampered(bundle: &[u8]) -> Vec<u8> {
    let mut b = bundle.to_vec();
    let at = String::from_utf8_lossy(&b).find("\"payload\":\"").unwrap() + 11 + 200;
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    b
}

fn registration(identity: [u8; 32], bundle: Option<Vec<u8>>) -> Option<ModelRegistration> {
    Some(ModelRegistration::new(identity, bundle))
}

/// Releases `key_id` v`version` to the harness's guest: the signed result's model signature.
async fn release(h: &Harness, key_id: &str, version: u32) -> Result<Option<ModelSignature>, ClientError> {
    let c = h.guest();
    let result_key = c.result_key().await.unwrap();
    let released = c
        .fetch_key(key_id, version, &result_key, |rd| {
            let e = h.evidence(rd, MEASUREMENT);
            async move { Ok(e) }
        })
        .await?;
    Ok(released.result.submods[SUBMOD].model_signature.clone())
}

async fn last_record(admin: &Client, key_id: &str, action: &str) -> AuditRecord {
    let all = admin.audit_export().await.unwrap();
    all.into_iter()
        .rev()
        .find(|r| r.key_id.as_deref() == Some(key_id) && r.action == action)
        .unwrap_or_else(|| panic!("no {action} record for {key_id}"))
}

pub async fn suite(database: Option<&str>) {
    let h = Harness::start(database, |t| t.replace("denial_burst = 10", "denial_burst = 1000")).await;
    let admin = h.admin();
    let model = model_bytes();
    let id = identity(&model, MIB);
    let publisher = key_name("publisher.pub.pem");
    let by_publisher = policy(&key_signer("publisher.pub.pem"));
    let by_other = policy(&key_signer("other.pub.pem"));
    let shards = fixture("shards-1mib.sig.json");

    // ---- a matching shard bundle registers and releases -------------------------------------
    let info = admin
        .create_key_for_model("shards", &[0x51; 32], &by_publisher, registration(id, Some(shards.clone())))
        .await
        .unwrap();
    let m = info.versions[0].model.as_ref().unwrap();
    assert_eq!(m.model_identity.0, id);
    assert!(m.signature_bundle);
    let s = m.signature.as_ref().unwrap();
    assert_eq!(
        (s.signer.as_str(), s.manifest, s.file_sha256.as_ref()),
        (publisher.as_str(), SignedManifest::Shards, None)
    );
    let digests: Vec<u8> = model.chunks(MIB).flat_map(sha256).collect();
    assert_eq!(s.subject_digest.0, sha256(&digests));
    let created = last_record(&admin, "shards", "key_create").await;
    assert!(
        created.reason.as_deref().unwrap().contains(&format!("signed by {publisher} (shards")),
        "{created:?}"
    );

    let claim = release(&h, "shards", 1).await.unwrap().unwrap();
    assert_eq!(&claim, s, "the signed result carries the stored verdict");
    assert_eq!(claim.model_identity.0, id);
    let released = last_record(&admin, "shards", "release").await;
    assert_eq!(released.decision, "allow");
    assert!(
        released.reason.as_deref().unwrap().contains(&format!("model signed by {publisher}")),
        "{released:?}"
    );

    // ---- each refusal names its reason, and registers nothing --------------------------------
    let cases: [(&str, &str, Option<ModelRegistration>, ErrorCode, &str); 6] = [
        (
            "wrong-signer",
            &by_other,
            registration(id, Some(shards.clone())),
            ErrorCode::UntrustedSigner,
            "key hint",
        ),
        (
            "tampered",
            &by_publisher,
            registration(id, Some(tampered(&shards))),
            ErrorCode::BadSignature,
            "does not verify",
        ),
        (
            "other-model",
            &by_publisher,
            registration(identity(&model[1..], MIB), Some(shards.clone())),
            ErrorCode::ModelMismatch,
            "gives model identity",
        ),
        (
            // The same model, signed in 10^9-byte shards: not the sealed identity's sharding.
            "other-sharding",
            &by_publisher,
            registration(id, Some(fixture("shards-default.sig.json"))),
            ErrorCode::ModelMismatch,
            "1 shards of 1000000000 bytes",
        ),
        (
            "unsigned",
            &by_publisher,
            registration(id, None),
            ErrorCode::SignatureRequired,
            "has no signature bundle",
        ),
        ("no-model", &by_publisher, None, ErrorCode::SignatureRequired, "no model was registered"),
    ];
    for (key_id, policy, registration, code, reason) in cases {
        let e = refused(admin.create_key_for_model(key_id, &[0x52; 32], policy, registration).await);
        assert_eq!(e.code, code, "{key_id}: {e}");
        assert!(e.reason.contains(reason), "{key_id}: {e}");
        assert_eq!(refused(admin.key(key_id).await).code, ErrorCode::UnknownKey, "{key_id} was created");
        let record = last_record(&admin, key_id, "key_create").await;
        assert_eq!(record.decision, "deny");
        assert!(record.reason.as_deref().unwrap().starts_with(code.as_str()), "{record:?}");
    }
    // An old client's create (no model) under a policy with signers: the same refusal.
    let e = refused(admin.create_key("old-client", &[0x52; 32], &by_publisher).await);
    assert_eq!(e.code, ErrorCode::SignatureRequired, "{e}");

    // ---- rotation registers the new version's model under the key's policy ------------------
    let e = refused(admin.rotate_key("shards", &[0x53; 32], Some(2)).await);
    assert_eq!(e.code, ErrorCode::SignatureRequired, "{e}");
    let e = refused(
        admin
            .rotate_key_for_model("shards", &[0x53; 32], Some(2), registration(id, Some(tampered(&shards))))
            .await,
    );
    assert_eq!(e.code, ErrorCode::BadSignature, "{e}");
    assert_eq!(admin.key("shards").await.unwrap().versions.len(), 1, "a refused rotation adds no version");
    let info = admin
        .rotate_key_for_model("shards", &[0x53; 32], Some(2), registration(id, Some(shards.clone())))
        .await
        .unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(info.versions[1].model.as_ref().unwrap().signature.as_ref().unwrap().signer, publisher);
    assert_eq!(release(&h, "shards", 2).await.unwrap().unwrap().signer, publisher);
    assert!(last_record(&admin, "shards", "key_rotate").await.reason.unwrap().contains("signed by"));

    // ---- a whole-file bundle: recorded for the enclave to check -------------------------------
    let info = admin
        .create_key_for_model(
            "whole",
            &[0x54; 32],
            &by_publisher,
            registration(id, Some(fixture("whole-file.sig.json"))),
        )
        .await
        .unwrap();
    let s = info.versions[0].model.as_ref().unwrap().signature.clone().unwrap();
    assert_eq!(s.manifest, SignedManifest::WholeFile);
    assert_eq!(s.file_sha256.map(|d| d.0), Some(sha256(&model)));
    let claim = release(&h, "whole", 1).await.unwrap().unwrap();
    assert_eq!(claim.file_sha256.map(|d| d.0), Some(sha256(&model)), "the enclave gets the digest to check");
    assert!(last_record(&admin, "whole", "release").await.reason.unwrap().contains("checked by the enclave"));

    // ---- a certificate signer: checked at registration, named by its pinned identity ----------
    let by_ca = policy(&certificate_signer("ca.pem", EMAIL));
    let info = admin
        .create_key_for_model(
            "cert",
            &[0x55; 32],
            &by_ca,
            registration(id, Some(fixture("certificate.sig.json"))),
        )
        .await
        .unwrap();
    let s = info.versions[0].model.as_ref().unwrap().signature.clone().unwrap();
    assert_eq!(s.signer, format!("email:{EMAIL}"));
    assert!(s.certificate_subject.as_deref().unwrap().contains("Nacre test model publisher"), "{s:?}");
    assert!(s.checked_at > 0);
    assert_eq!(release(&h, "cert", 1).await.unwrap().unwrap(), s);
    for (key_id, policy, bundle, reason) in [
        ("cert-expired", &by_ca, "certificate-expired.sig.json", "expired"),
        (
            "cert-other-identity",
            &policy(&certificate_signer("ca.pem", "other@publisher.example")),
            "certificate.sig.json",
            "other@publisher.example",
        ),
        (
            "cert-other-root",
            &policy(&certificate_signer("other-ca.pem", EMAIL)),
            "certificate.sig.json",
            "pinned root",
        ),
        ("cert-for-key", &by_publisher, "certificate.sig.json", "signed with a certificate"),
    ] {
        let e = refused(
            admin
                .create_key_for_model(key_id, &[0x56; 32], policy, registration(id, Some(fixture(bundle))))
                .await,
        );
        assert_eq!(e.code, ErrorCode::UntrustedSigner, "{key_id}: {e}");
        assert!(e.reason.contains(reason), "{key_id}: {e}");
    }
    // Several signers: the one that signed is found, whichever its place.
    let either = policy(&format!("{}{}", key_signer("other.pub.pem"), certificate_signer("ca.pem", EMAIL)));
    let info = admin
        .create_key_for_model(
            "either",
            &[0x57; 32],
            &either,
            registration(id, Some(fixture("certificate.sig.json"))),
        )
        .await
        .unwrap();
    assert_eq!(
        info.versions[0].model.as_ref().unwrap().signature.as_ref().unwrap().signer,
        format!("email:{EMAIL}")
    );
    let e = refused(
        admin
            .create_key_for_model("neither", &[0x57; 32], &either, registration(id, Some(shards.clone())))
            .await,
    );
    assert_eq!(e.code, ErrorCode::UntrustedSigner, "{e}");
    assert!(e.reason.contains("none of the policy's 2 signers"), "{e}");

    // ---- a policy without signers works as before, with or without a model -------------------
    admin.create_key("plain", &[0x58; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    assert_eq!(release(&h, "plain", 1).await.unwrap(), None, "no signer claim without signers");
    assert_eq!(last_record(&admin, "plain", "release").await.reason, None);
    let info = admin
        .create_key_for_model(
            "kept",
            &[0x59; 32],
            &policy_for(&MEASUREMENT),
            registration(id, Some(shards.clone())),
        )
        .await
        .unwrap();
    let m = info.versions[0].model.as_ref().unwrap();
    assert!(m.signature_bundle && m.signature.is_none(), "stored, not checked: no signers to check against");
    assert_eq!(release(&h, "kept", 1).await.unwrap(), None);

    // ---- the policy in force decides at release ----------------------------------------------
    // To another signer: refused, named, audited.
    admin.set_policy("shards", &by_other).await.unwrap();
    let e = refused(release(&h, "shards", 2).await);
    assert_eq!(e.code, ErrorCode::UntrustedSigner, "{e}");
    let denied = last_record(&admin, "shards", "deny").await;
    let reason = denied.reason.as_deref().unwrap();
    assert!(reason.starts_with("untrusted_signer") && reason.contains("key hint"), "{denied:?}");
    // Back to the publisher: released again (the stored bundle, checked at registration time).
    admin.set_policy("shards", &by_publisher).await.unwrap();
    assert_eq!(release(&h, "shards", 2).await.unwrap().unwrap().signer, publisher);
    // A version registered without a model, or with an unchecked bundle, meets signers later.
    admin.set_policy("plain", &by_publisher).await.unwrap();
    let e = refused(release(&h, "plain", 1).await);
    assert_eq!(e.code, ErrorCode::SignatureRequired, "{e}");
    // The guest gets the code and a generic reason; the audit record has the details.
    let denied = last_record(&admin, "plain", "deny").await;
    assert!(denied.reason.as_deref().unwrap().contains("registered without a model"), "{denied:?}");
    admin.set_policy("kept", &by_publisher).await.unwrap();
    let claim = release(&h, "kept", 1).await.unwrap().unwrap();
    assert_eq!(claim.signer, publisher);
    assert_eq!(admin.key("kept").await.unwrap().versions[0].model.as_ref().unwrap().signature, None);
    admin.set_policy("kept", &policy(&certificate_signer("ca.pem", EMAIL))).await.unwrap();
    assert_eq!(refused(release(&h, "kept", 1).await).code, ErrorCode::UntrustedSigner);

    // The audit chain holds every record above.
    let (records, head) = h.service.store().audit_snapshot().await.unwrap().read_all().await.unwrap();
    nacre_attestation_service::store::verify_legacy_chain(&records, Some((head.0, &head.1))).unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_sqlite() {
    suite(None).await;
}
