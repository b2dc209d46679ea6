#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! The attestation service end to end over loopback HTTPS with sim evidence: key release and
//! every refusal the issue lists, admin roles, limits and the audit chain. The same suite runs
//! on SQLite and on a real PostgreSQL server (scripts/postgres.sh).

mod common;
// One test binary for the service (each binary links the whole service): the commit-path,
// disclosure and rate-limit suites are modules of it.
#[path = "release/commit.rs"]
mod commit;
#[path = "release/disclosure.rs"]
mod disclosure;
#[path = "release/limits.rs"]
mod limits;
#[path = "release/log.rs"]
mod log;
#[path = "release/signers.rs"]
mod signers;

use common::{Harness, MEASUREMENT, policy_for};
use nacre_attestation_client::{Client, ClientError};
use nacre_attestation_service::store::{
    AuditEntry, ChainBreak, DecidedUnder, ReleaseCommit, StoreError, verify_legacy_chain,
};
use nacre_protocol::ErrorCode;
use nacre_protocol::messages::ReleaseRequest;
use nacre_protocol::wrap::RecipientKey;
use nacre_wire::binding::KeyReleaseBinding;
use serde_bytes::ByteBuf;

fn under(references: &[(String, [u8; 32])]) -> DecidedUnder {
    DecidedUnder { key: None, references: references.to_vec() }
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> nacre_protocol::ErrorBody {
    match r {
        Err(ClientError::Refused(body)) => body,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A release request for `key_id` v`version` bound to a fresh challenge, built by hand so
/// tests can bend one part of it.
async fn request(
    h: &Harness,
    c: &Client,
    key_id: &str,
    version: u32,
    measurement: [u8; 48],
) -> (ReleaseRequest, RecipientKey) {
    let challenge = c.challenge(key_id).await.unwrap();
    let recipient = RecipientKey::generate();
    let rd = KeyReleaseBinding { nonce: &challenge.nonce, hpke_public_key: recipient.public_key(), key_id }
        .report_data()
        .unwrap();
    let req = ReleaseRequest {
        key_id: key_id.into(),
        key_version: version,
        nonce: challenge.nonce,
        hpke_public_key: ByteBuf::from(recipient.public_key().to_vec()),
        evidence: h.evidence(rd, measurement),
    };
    (req, recipient)
}

async fn fetch(h: &Harness, key_id: &str, version: u32) -> Result<[u8; 32], ClientError> {
    let c = h.guest();
    let result_key = c.result_key().await.unwrap();
    let released = c
        .fetch_key(key_id, version, &result_key, |rd| {
            let e = h.evidence(rd, MEASUREMENT);
            async move { Ok(e) }
        })
        .await?;
    Ok(*released.data_key)
}

async fn suite(database: Option<&str>) {
    // This suite collects many denials from one address; the limiter has its own test.
    let h = Harness::start(database, |t| t.replace("denial_burst = 10", "denial_burst = 1000")).await;
    let admin = h.admin();
    let guest = h.guest();

    // ---- release -----------------------------------------------------------------------
    let key1 = [0x11; 32];
    admin.create_key("fraud-mlp", &key1, &policy_for(&MEASUREMENT)).await.unwrap();
    assert_eq!(fetch(&h, "fraud-mlp", 1).await.unwrap(), key1);

    // The signed result names the guest's measurement and verifies under the served key.
    let c = h.guest();
    let rk = c.result_key().await.unwrap();
    let released = c
        .fetch_key("fraud-mlp", 1, &rk, |rd| {
            let e = h.evidence(rd, MEASUREMENT);
            async move { Ok(e) }
        })
        .await
        .unwrap();
    let guest_claims = &released.result.submods["guest"];
    assert_eq!(guest_claims.measurement.as_slice(), &MEASUREMENT);
    // The release came with its log leaf, proven under a checkpoint the log key signed, naming
    // the release key the guest sent (and so the one an enclave binds into its TLS evidence).
    log::check_release_proof(&h, &released);
    assert_eq!(guest_claims.tee, "sim");
    assert_eq!(guest_claims.status, "warning", "the sim root is a warning");

    // ---- refusals ------------------------------------------------------------------------
    // Replayed nonce.
    let (req, _) = request(&h, &guest, "fraud-mlp", 1, MEASUREMENT).await;
    guest.release(&req).await.unwrap();
    assert_eq!(refused(guest.release(&req).await).code, ErrorCode::NonceReplayed);

    // A nonce issued for another key.
    admin.create_key("other", &[0x22; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let (mut req, _) = request(&h, &guest, "other", 1, MEASUREMENT).await;
    req.key_id = "fraud-mlp".into();
    assert_eq!(refused(guest.release(&req).await).code, ErrorCode::NonceOtherKey);

    // A forged nonce.
    let (mut req, _) = request(&h, &guest, "fraud-mlp", 1, MEASUREMENT).await;
    req.nonce[10] ^= 1;
    assert_eq!(refused(guest.release(&req).await).code, ErrorCode::NonceInvalid);

    // REPORT_DATA bound to a different HPKE key than the one sent.
    let (mut req, _) = request(&h, &guest, "fraud-mlp", 1, MEASUREMENT).await;
    req.hpke_public_key = ByteBuf::from(RecipientKey::generate().public_key().to_vec());
    let e = refused(guest.release(&req).await);
    assert_eq!((e.code, e.check.as_deref()), (ErrorCode::Evidence, Some("report_data")), "{e}");

    // A measurement the key's policy does not allow.
    let (req, _) = request(&h, &guest, "fraud-mlp", 1, [0x66; 48]).await;
    let e = refused(guest.release(&req).await);
    assert_eq!(e.code, ErrorCode::Evidence, "{e}");
    assert_eq!(e.check.as_deref(), Some("measurement"), "{e}");
    // Its denial is audited with the TEE, measurement and chip of the (authentic) evidence.
    let records = h.service.store().audit_page(0, 10_000).await.unwrap();
    let denial = records.last().unwrap();
    assert_eq!((denial.action.as_str(), denial.tee.as_deref()), ("deny", Some("sim")), "{denial:?}");
    assert_eq!(denial.measurement.as_deref(), Some(hex::encode([0x66; 48]).as_str()), "{denial:?}");
    assert!(denial.chip_id.as_deref().is_some_and(|c| c.len() == 128), "{denial:?}");
    // Evidence that is not authentic names no measurement.
    let (mut req, _) = request(&h, &guest, "fraud-mlp", 1, MEASUREMENT).await;
    req.evidence.report[0x90] ^= 1; // a measurement byte: the signature no longer verifies
    assert_eq!(refused(guest.release(&req).await).code, ErrorCode::Evidence);
    let records = h.service.store().audit_page(0, 10_000).await.unwrap();
    let denial = records.last().unwrap();
    assert_eq!((denial.action.as_str(), denial.measurement.as_deref()), ("deny", None), "{denial:?}");

    // Unknown key.
    let (req, _) = request(&h, &guest, "nope", 1, MEASUREMENT).await;
    assert_eq!(refused(guest.release(&req).await).code, ErrorCode::UnknownKey);

    // ---- versions: rotate, rollback, revoke ----------------------------------------------
    let key2 = [0x12; 32];
    // A model sealed for version 5 cannot be registered as version 2.
    assert_eq!(refused(admin.rotate_key("fraud-mlp", &key2, Some(5)).await).code, ErrorCode::Conflict);
    let info = admin.rotate_key("fraud-mlp", &key2, Some(2)).await.unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(fetch(&h, "fraud-mlp", 2).await.unwrap(), key2);
    assert_eq!(refused(fetch(&h, "fraud-mlp", 1).await).code, ErrorCode::VersionNotAllowed);
    admin.rollback_key("fraud-mlp", 1).await.unwrap();
    assert_eq!(fetch(&h, "fraud-mlp", 1).await.unwrap(), key1);
    assert_eq!(refused(fetch(&h, "fraud-mlp", 2).await).code, ErrorCode::VersionNotAllowed);
    // A policy can keep an old version releasable.
    admin
        .set_policy("fraud-mlp", &format!("allowed_versions = [2]\n{}", policy_for(&MEASUREMENT)))
        .await
        .unwrap();
    assert_eq!(fetch(&h, "fraud-mlp", 2).await.unwrap(), key2);
    admin.revoke_key("fraud-mlp", Some(2)).await.unwrap();
    assert_eq!(refused(fetch(&h, "fraud-mlp", 2).await).code, ErrorCode::VersionRevoked);
    assert_eq!(fetch(&h, "fraud-mlp", 1).await.unwrap(), key1);
    admin.revoke_key("fraud-mlp", None).await.unwrap();
    assert_eq!(refused(fetch(&h, "fraud-mlp", 1).await).code, ErrorCode::KeyRevoked);
    assert_eq!(refused(admin.rotate_key("fraud-mlp", &[1; 32], None).await).code, ErrorCode::KeyRevoked);
    assert_eq!(refused(admin.rollback_key("other", 7).await).code, ErrorCode::NotFound);

    // ---- admin: tokens and roles ---------------------------------------------------------
    let bad_policy = refused(admin.create_key("x", &[1; 32], "[appraisal]\n").await);
    assert_eq!(bad_policy.code, ErrorCode::Malformed);
    assert_eq!(
        refused(admin.create_key("other", &[1; 32], &policy_for(&MEASUREMENT)).await).code,
        ErrorCode::Conflict
    );
    assert_eq!(refused(guest.list_keys().await).code, ErrorCode::Unauthorized);
    let wrong = h.guest().with_token("nacre_0000");
    assert_eq!(refused(wrong.list_keys().await).code, ErrorCode::Unauthorized);
    let auditor = h.auditor();
    let keys = auditor.list_keys().await.unwrap();
    assert_eq!(keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["fraud-mlp", "other"]);
    assert_eq!(
        refused(auditor.create_key("y", &[1; 32], &policy_for(&MEASUREMENT)).await).code,
        ErrorCode::Forbidden
    );
    assert_eq!(refused(auditor.revoke_key("other", None).await).code, ErrorCode::Forbidden);

    // ---- audit ---------------------------------------------------------------------------
    let records = auditor.audit_export().await.unwrap();
    let head = h.service.store().audit_head().await.unwrap();
    assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0), "the log replaced the chain");
    let count = |action: &str, decision: &str| {
        records.iter().filter(|r| r.action == action && r.decision == decision).count()
    };
    assert_eq!(count("key_create", "allow"), 2);
    assert_eq!(count("release", "allow"), 7);
    let reasons: Vec<_> =
        records.iter().filter(|r| r.action == "deny").map(|r| r.reason.clone().unwrap_or_default()).collect();
    assert_eq!(reasons.len(), 11, "every denial is audited: {reasons:#?}");
    assert_eq!(count("key_create", "deny"), 1, "the auditor's attempt is audited");
    let denial =
        records.iter().find(|r| r.reason.as_deref().is_some_and(|r| r.contains("nonce_replayed"))).unwrap();
    assert_eq!(denial.source.as_deref(), Some("127.0.0.1"));
    assert_eq!(denial.measurement.as_deref(), Some(hex::encode(MEASUREMENT).as_str()));
    assert!(denial.chip_id.as_deref().unwrap().starts_with(&hex::encode(b"NACRE-SIM-CHIP")));

    // Records from before the log keep their hash chain, and every kind of tampering with it
    // is named (records from the log's era: log::tampering_is_named).
    let mut prev = nacre_protocol::messages::GENESIS_HASH.to_owned();
    let records: Vec<_> = records
        .into_iter()
        .map(|mut r| {
            r.prev_hash = prev.clone();
            r.hash = r.compute_hash();
            prev = r.hash.clone();
            r
        })
        .collect();
    let head = (head.0, prev.clone());
    assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(records.len()));
    let mut edited = records.clone();
    edited[3].actor.push_str("-edited");
    assert_eq!(verify_legacy_chain(&edited, None), Err(ChainBreak::Edited { seq: 4 }));
    let mut deleted = records.clone();
    deleted.remove(2);
    assert_eq!(verify_legacy_chain(&deleted, None), Err(ChainBreak::Sequence { seq: 4, expected: 3 }));
    let mut reordered = records.clone();
    reordered.swap(4, 5);
    assert_eq!(verify_legacy_chain(&reordered, None), Err(ChainBreak::Sequence { seq: 6, expected: 5 }));
    let mut inserted = records.clone();
    let mut fake = records[1].clone();
    fake.prev_hash = records[1].hash.clone();
    fake.hash = fake.compute_hash();
    inserted.insert(2, fake);
    assert!(matches!(
        verify_legacy_chain(&inserted, None),
        Err(ChainBreak::Sequence { seq: 2, expected: 3 })
    ));
    let truncated = &records[..records.len() - 1];
    assert!(matches!(
        verify_legacy_chain(truncated, Some((head.0, &head.1))),
        Err(ChainBreak::Truncated { .. })
    ));

    // ---- metrics -------------------------------------------------------------------------
    let text = h.service.metrics.encode();
    assert!(text.contains("nacre_attestation_releases_total 7"), "{text}");
    assert!(text.contains("reason=\"nonce_replayed\""), "{text}");
    assert!(text.contains("stage=\"verify\""), "{text}");
    assert!(!text.contains(&hex::encode(key1)), "no key material in metrics");

    // ---- transparency log ----------------------------------------------------------------
    log::check_log_against_audit(&h).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    suite(None).await;
}

/// Signed reference values for `name` allowing `sim` measurements (and one SNP measurement).
fn reference_values(pkcs8: &[u8], name: &str, sim: &[[u8; 48]]) -> (Vec<u8>, Vec<u8>) {
    use nacre_protocol::reference::{Expected, FORMAT, ImageDigests, ReferenceValues};
    let expected = |tee: &str, m: &[u8; 48]| Expected {
        tee: tee.into(),
        measurement: hex::encode(m),
        firmware_sha256: "f".repeat(64),
        vcpus: Some(1),
        vcpu_type: Some("EPYC-v4".into()),
        ..Default::default()
    };
    let mut measurements: Vec<Expected> = sim.iter().map(|m| expected("sim", m)).collect();
    measurements.push(expected("snp", &[0x44; 48]));
    let values = ReferenceValues {
        format: FORMAT.into(),
        name: name.into(),
        image: ImageDigests {
            vmlinuz_sha256: "a".repeat(64),
            initrd_sha256: "b".repeat(64),
            cmdline: "console=ttyS0".into(),
            sbom_sha256: None,
        },
        measurements,
        snp_min_tcb: None,
    };
    let (doc, sig) = values.sign(pkcs8).unwrap();
    // reference-values.sig as `nacre image build` writes it (JSON).
    let sig = format!(
        "{{\n  \"algorithm\": \"{}\",\n  \"public_key\": \"{}\",\n  \"signature\": \"{}\"\n}}",
        sig.algorithm, sig.public_key, sig.signature
    );
    (doc, sig.into_bytes())
}

/// Reference values end to end: import (trusted signer only, every refusal audited), a policy
/// naming them, release-time resolution (a re-import takes effect at once, on every replica),
/// fail-closed when they go away or their signer is no longer trusted.
async fn reference_suite(database: Option<&str>) {
    use nacre_protocol::reference::generate_signing_key;
    let (key, pk) = generate_signing_key().unwrap();
    let (untrusted, untrusted_pk) = generate_signing_key().unwrap();
    let trust = move |t: String| {
        t.replace("denial_burst = 10", "denial_burst = 1000")
            .replace("[limits]", &format!("trusted_image_signers = [\"{}\"]\n\n[limits]", hex::encode(pk)))
    };
    let h = Harness::start(database, trust).await;
    assert_eq!(h.config.image_signers().unwrap(), [pk]);
    let (admin, guest, auditor) = (h.admin(), h.guest(), h.auditor());
    let other_measurement = [0x66; 48];

    // ---- import ----------------------------------------------------------------------------
    let (doc, sig) = reference_values(&key, "img", &[MEASUREMENT]);
    let info = admin.import_reference_values(&doc, &sig).await.unwrap();
    assert_eq!((info.name.as_str(), info.signer.clone()), ("img", hex::encode(pk)));
    assert_eq!(info.measurements.len(), 2);

    // Signed by a key the service does not trust (a valid signature all the same).
    let (udoc, usig) = reference_values(&untrusted, "img", &[MEASUREMENT, other_measurement]);
    let e = refused(admin.import_reference_values(&udoc, &usig).await);
    assert_eq!(e.code, ErrorCode::UntrustedSigner, "{e}");
    assert_eq!(e.code.http_status(), 403);
    // One measurement edited after signing.
    let tampered = String::from_utf8(doc.clone())
        .unwrap()
        .replace(&hex::encode(MEASUREMENT), &hex::encode(other_measurement))
        .into_bytes();
    assert_ne!(tampered, doc);
    let e = refused(admin.import_reference_values(&tampered, &sig).await);
    assert_eq!(e.code, ErrorCode::BadSignature, "{e}");
    // Not a signature file at all.
    assert_eq!(refused(admin.import_reference_values(&doc, b"{}").await).code, ErrorCode::Malformed);
    // Auditors may list but not import.
    assert_eq!(refused(auditor.import_reference_values(&doc, &sig).await).code, ErrorCode::Forbidden);
    assert_eq!(refused(guest.list_reference_values().await).code, ErrorCode::Unauthorized);
    let listed = auditor.list_reference_values().await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&info));

    // ---- issue 12 §2: sim_reference_entry_unlocks_no_key_without_the_keys_opt_in -------------
    // The image's sim entry is in the document (as `nacre image build` always writes it), the
    // service trusts the sim root, the report is correctly bound and carries that measurement:
    // a key whose policy names the document without `insecure_sim` is still denied.
    admin.create_key("no-sim", &[0x32; 32], "reference_values = [\"img\"]\n").await.unwrap();
    let e = refused(fetch(&h, "no-sim", 1).await);
    assert_eq!(e.code, ErrorCode::Evidence, "{e}");
    let e = refused(
        admin
            .set_policy(
                "no-sim",
                &format!("[appraisal.sim]\nmeasurements = [\"{}\"]\n", hex::encode(MEASUREMENT)),
            )
            .await,
    );
    assert!(e.reason.contains("insecure_sim"), "{e}");

    // ---- policies naming them ----------------------------------------------------------------
    let policy = "reference_values = [\"img\"]\ninsecure_sim = true\n";
    let e = refused(admin.create_key("r", &[0x31; 32], "reference_values = [\"nope\"]\n").await);
    assert_eq!(e.code, ErrorCode::UnknownReference, "{e}");
    assert!(e.reason.contains("nope"), "{e}");
    admin.create_key("r", &[0x31; 32], policy).await.unwrap();
    let e = refused(admin.set_policy("r", "reference_values = [\"img\", \"nope\"]\n").await);
    assert_eq!(e.code, ErrorCode::UnknownReference, "{e}");
    assert_eq!(admin.key("r").await.unwrap().policy, policy, "the refused policy was not stored");

    // The guest whose sim measurement the reference values list gets the key; another does not.
    assert_eq!(fetch(&h, "r", 1).await.unwrap(), [0x31; 32]);
    let (req, _) = request(&h, &guest, "r", 1, other_measurement).await;
    let e = refused(guest.release(&req).await);
    assert_eq!(e.code, ErrorCode::Evidence, "{e}");

    // A second replica on the same database resolves (and caches) the same reference values.
    let replica = nacre_attestation_service::service::Service::start(&h.config).await.unwrap();
    let source: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let (req, _) = request(&h, &guest, "r", 1, MEASUREMENT).await;
    replica.release(req, source).await.unwrap();

    // ---- re-import without that measurement: the very next release is denied, everywhere -----
    let (doc2, sig2) = reference_values(&key, "img", &[other_measurement]);
    let info2 = admin.import_reference_values(&doc2, &sig2).await.unwrap();
    assert_ne!(info2.document_sha256, info.document_sha256);
    let e = refused(fetch(&h, "r", 1).await);
    assert_eq!(e.code, ErrorCode::Evidence, "{e}");
    let (req, _) = request(&h, &guest, "r", 1, MEASUREMENT).await;
    assert_eq!(replica.release(req, source).await.unwrap_err().code, ErrorCode::Evidence);
    let (req, _) = request(&h, &guest, "r", 1, other_measurement).await;
    guest.release(&req).await.unwrap();
    assert_eq!(auditor.list_reference_values().await.unwrap(), std::slice::from_ref(&info2));

    // ---- a policy change made through one replica holds at once on the other -----------------
    // The replica has the key's row cached from its release above. Narrowed elsewhere: its
    // next release, decided on the cached row, does not commit and is decided again, denied.
    let (req, _) = request(&h, &guest, "r", 1, other_measurement).await;
    replica.release(req, source).await.unwrap();
    admin.set_policy("r", &policy_for(&[0x77; 48])).await.unwrap();
    let (req, _) = request(&h, &guest, "r", 1, other_measurement).await;
    let e = replica.release(req, source).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Evidence, "{e}");
    // Widened elsewhere: its cached row denies, the stored one does not, so the release goes on.
    admin.set_policy("r", policy).await.unwrap();
    let (req, _) = request(&h, &guest, "r", 1, other_measurement).await;
    let seq = replica.release(req, source).await.unwrap().audit_seq;
    let audited = auditor.audit_export().await.unwrap();
    let last_denial = audited.iter().rev().find(|r| r.action == "deny").unwrap();
    assert!(last_denial.seq < seq && last_denial.reason.as_deref().unwrap_or("").contains("evidence"));

    // A release decided under replaced reference values does not commit (no stale decision).
    let store = h.service.store();
    let stale = [("img".to_owned(), [0u8; 32])];
    let commit = |tag: &'static str| ReleaseCommit {
        nonce_hex: tag,
        nonce_expires_at: i64::MAX,
        key_id: "r",
        version: 1,
        audit: AuditEntry {
            action: "release",
            release_key_sha256: Some("ab".repeat(32)),
            allow: true,
            ..AuditEntry::default()
        },
    };
    let head = store.audit_head().await.unwrap();
    assert!(matches!(
        store.commit_release_checked(commit("stale"), &under(&stale)).await,
        Err(StoreError::ReferenceChanged(n)) if n == "img"
    ));
    let gone = [("gone".to_owned(), [0u8; 32])];
    assert!(matches!(
        store.commit_release_checked(commit("gone"), &under(&gone)).await,
        Err(StoreError::UnknownReference(n)) if n == "gone"
    ));
    // Nor one decided under a key row whose policy or current version changed since.
    let row = store.key("r").await.unwrap().unwrap();
    let edited = DecidedUnder {
        key: Some((row.current_version, format!("{}# edited\n", row.policy))),
        references: vec![],
    };
    assert!(matches!(
        store.commit_release_checked(commit("stale-policy"), &edited).await,
        Err(StoreError::KeyChanged(k)) if k == "r"
    ));
    let moved = DecidedUnder { key: Some((row.current_version + 1, row.policy.clone())), references: vec![] };
    assert!(matches!(
        store.commit_release_checked(commit("stale-version"), &moved).await,
        Err(StoreError::KeyChanged(k)) if k == "r"
    ));
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing was written");

    // ---- audit ---------------------------------------------------------------------------------
    let records = auditor.audit_export().await.unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0), "the log replaced the chain");
    let imports: Vec<_> = records.iter().filter(|r| r.action == "reference_import").collect();
    let reason = |r: &&nacre_protocol::messages::AuditRecord| r.reason.clone().unwrap_or_default();
    let allowed: Vec<_> = imports.iter().filter(|r| r.decision == "allow").map(reason).collect();
    assert_eq!(allowed.len(), 2, "{allowed:#?}");
    assert!(allowed[0].contains("img") && allowed[0].contains(&hex::encode(pk)), "{}", allowed[0]);
    assert!(allowed[0].contains("2 measurements (sim 1, snp 1, tdx 0)"), "{}", allowed[0]);
    assert!(
        allowed[1].contains(&format!("replaces document sha256 {}", info.document_sha256)),
        "{}",
        allowed[1]
    );
    let denied: Vec<_> = imports.iter().filter(|r| r.decision == "deny").map(reason).collect();
    assert_eq!(denied.len(), 4, "every refused import is audited: {denied:#?}");
    assert!(denied[0].starts_with("untrusted_signer") && denied[0].contains(&hex::encode(untrusted_pk)));
    assert!(denied[1].starts_with("bad_signature"), "{}", denied[1]);
    assert!(denied[2].starts_with("malformed"), "{}", denied[2]);
    assert!(denied[3].contains("reference_import needs the admin role"), "{}", denied[3]);
    assert!(imports.iter().all(|r| r.key_id.is_none() && r.source.as_deref() == Some("127.0.0.1")));
    replica.store().close().await;

    // ---- fail closed ---------------------------------------------------------------------------
    // The signer is no longer trusted (a replica configured without it): no release.
    let h = h.restart(|t| t.replace(&format!("trusted_image_signers = [\"{}\"]", hex::encode(pk)), "")).await;
    assert!(h.config.trusted_image_signers.is_empty());
    let e = refused(h.admin().import_reference_values(&doc2, &sig2).await);
    assert_eq!(e.code, ErrorCode::UntrustedSigner);
    assert!(e.reason.contains("trusted_image_signers is empty"), "{e}");
    let (req, _) = request(&h, &h.guest(), "r", 1, other_measurement).await;
    let e = refused(h.guest().release(&req).await);
    assert_eq!(e.code, ErrorCode::UntrustedSigner, "{e}");
    // Trusted again, but the named reference values have gone from the database.
    let h = h.restart(trust).await;
    let (req, _) = request(&h, &h.guest(), "r", 1, other_measurement).await;
    h.guest().release(&req).await.unwrap();
    sqlx::query("DELETE FROM reference_values WHERE name = 'img'")
        .execute(h.service.store().pool())
        .await
        .unwrap();
    let (req, _) = request(&h, &h.guest(), "r", 1, other_measurement).await;
    let e = refused(h.guest().release(&req).await);
    assert_eq!(e.code, ErrorCode::UnknownReference, "{e}");
    assert_eq!(e.reason, nacre_attestation_service::http::public_reason(e.code), "details only in the audit");
    let records = h.service.store().audit_page(0, 10_000).await.unwrap();
    let last = records.last().unwrap();
    assert_eq!((last.action.as_str(), last.decision.as_str()), ("deny", "deny"));
    assert!(last.reason.as_deref().unwrap().starts_with("unknown_reference"), "{last:?}");
    assert!(records.iter().any(|r| {
        r.reason.as_deref().is_some_and(|r| r.starts_with("untrusted_signer: reference values \"img\""))
    }));
    assert_eq!(verify_legacy_chain(&records, None), Ok(0), "the log replaced the chain");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_values_sqlite() {
    reference_suite(None).await;
}

/// Group commit (src/store/batch.rs). Which releases share a transaction depends on timing;
/// the outcomes must not: exactly one release per nonce, refusals write nothing (their denial
/// is audited on its own), released records are consecutive and the chain verifies.
async fn batch_suite(database: Option<&str>) {
    let h = Harness::start(database, |t| t.replace("denial_burst = 10", "denial_burst = 1000")).await;
    let (admin, guest) = (h.admin(), h.guest());
    admin.create_key("b", &[0x41; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    admin.create_key("gone", &[0x42; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let store = h.service.store().clone();
    let source: std::net::IpAddr = "127.0.0.3".parse().unwrap();

    // The same request twice at once: one release; the other is a replay, audited as denied.
    let (req, _) = request(&h, &guest, "b", 1, MEASUREMENT).await;
    let replayed_nonce = hex::encode(&req.nonce);
    let before = store.audit_head().await.unwrap();
    let (a, b) = tokio::join!(h.service.release(req.clone(), source), h.service.release(req, source));
    let (released, denied) = match (a, b) {
        (Ok(r), Err(e)) | (Err(e), Ok(r)) => (r, e),
        (a, b) => panic!("expected one release and one refusal, got {a:?} and {b:?}"),
    };
    assert_eq!(denied.code, ErrorCode::NonceReplayed, "{denied}");
    let records = store.audit_page(before.0, 100).await.unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let allow = records.iter().find(|r| r.seq == released.audit_seq).unwrap();
    assert_eq!((allow.action.as_str(), allow.decision.as_str()), ("release", "allow"));
    let deny = records.iter().find(|r| r.seq != released.audit_seq).unwrap();
    assert_eq!(deny.decision, "deny");
    assert!(deny.reason.as_deref().unwrap().starts_with("nonce_replayed"), "{deny:?}");

    // Many commits at once, as decided before `gone` was revoked (a revocation between decide
    // and commit), mixing releases and every refusal a commit can make.
    admin.revoke_key("gone", None).await.unwrap();
    let none: Vec<(String, [u8; 32])> = Vec::new();
    type Case = (String, &'static str, u32, Vec<(String, [u8; 32])>); // nonce, key, version, references
    let mut cases: Vec<Case> = (0..8).map(|i| (format!("fresh-{i}"), "b", 1, none.clone())).collect();
    cases.push(("dup".into(), "b", 1, none.clone())); // 8 and 9: one nonce
    cases.push(("dup".into(), "b", 1, none.clone()));
    cases.push(("revoked".into(), "gone", 1, none.clone())); // 10
    cases.push(("no-version".into(), "b", 7, none.clone())); // 11
    cases.push(("no-reference".into(), "b", 1, vec![("nope".into(), [0; 32])])); // 12
    cases.push((replayed_nonce, "b", 1, none.clone())); // 13: used by the release above
    cases.push(("after-refusals".into(), "b", 1, none)); // 14
    let before = store.audit_head().await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for (i, (nonce, key_id, version, references)) in cases.into_iter().enumerate() {
        let store = store.clone();
        set.spawn(async move {
            let commit = ReleaseCommit {
                nonce_hex: &nonce,
                nonce_expires_at: i64::MAX,
                key_id,
                version,
                audit: AuditEntry {
                    action: "release",
                    release_key_sha256: Some("ab".repeat(32)),
                    actor: format!("case-{i}"),
                    key_id: Some(key_id.into()),
                    key_version: Some(version),
                    allow: true,
                    ..AuditEntry::default()
                },
            };
            (i, store.commit_release_checked(commit, &DecidedUnder { key: None, references }).await)
        });
    }
    let mut outcomes: Vec<_> = set.join_all().await;
    outcomes.sort_by_key(|(i, _)| *i);
    let mut released = Vec::new();
    for (i, outcome) in &outcomes {
        match (i, outcome) {
            (0..=7 | 14, Ok(r)) => released.push(r.record.clone()),
            (8 | 9, Ok(r)) => released.push(r.record.clone()),
            (8 | 9, Err(StoreError::NonceReplayed)) => {}
            (10, Err(StoreError::KeyRevoked(k))) if k == "gone" => {}
            (11, Err(StoreError::UnknownKey(k))) if k == "b" => {}
            (12, Err(StoreError::UnknownReference(n))) if n == "nope" => {}
            (13, Err(StoreError::NonceReplayed)) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(released.len(), 10, "8 fresh, one of the two duplicates, and the last: {outcomes:?}");
    // The records are the stored ones, consecutive after the head, and nothing else was written.
    released.sort_by_key(|r| r.seq);
    let stored = store.audit_page(before.0, 100).await.unwrap();
    assert_eq!(stored, released);
    assert!(stored.iter().zip(before.0 + 1..).all(|(r, seq)| r.seq == seq && r.decision == "allow"));
    let head = store.audit_head().await.unwrap();
    assert_eq!(head.0, before.0 + 10);
    // A refused commit consumed nothing: its nonce still commits once the cause is gone.
    let retry = ReleaseCommit {
        nonce_hex: "no-version",
        nonce_expires_at: i64::MAX,
        key_id: "b",
        version: 1,
        audit: AuditEntry {
            action: "release",
            release_key_sha256: Some("ab".repeat(32)),
            allow: true,
            ..AuditEntry::default()
        },
    };
    assert_eq!(store.commit_release(retry).await.unwrap().seq, head.0 + 1);

    let records = store.audit_page(0, 10_000).await.unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0), "the log replaced the chain");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_sqlite() {
    batch_suite(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_limits_and_rate_limiting() {
    // A burst of 8: the three malformed bodies, the oversized one (and its retries, if any),
    // then refusals until the allowance is gone.
    let h = Harness::start(None, |t| t.replace("denial_burst = 10", "denial_burst = 8")).await;
    let c = h.guest();
    use hyper::Method;
    // Malformed CBOR, a well-formed but wrong message, unknown fields, trailing bytes.
    for body in [vec![0xff, 0x00], vec![0xa0], {
        let mut v =
            nacre_protocol::cbor::to_vec(&nacre_protocol::messages::ChallengeRequest { key_id: "k".into() })
                .unwrap();
        v.push(0);
        v
    }] {
        let (status, body) = c.raw(Method::POST, "/v1/challenge", "application/cbor", body).await.unwrap();
        assert_eq!(status, 400);
        let e: nacre_protocol::ErrorBody = nacre_protocol::cbor::from_slice(&body).unwrap();
        assert_eq!(e.code, ErrorCode::Malformed);
    }
    // Oversized: refused by its declared length, before it is read. The server may answer and
    // close while the client is still writing the body; then the client sees a broken
    // connection instead of the 413, so it tries again (each try is a refusal).
    let mut status = None;
    for _ in 0..5 {
        match c.raw(Method::POST, "/v1/release", "application/cbor", vec![0; 70_000]).await {
            Ok((s, _)) => {
                status = Some(s);
                break;
            }
            Err(ClientError::Http(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(status, Some(hyper::StatusCode::PAYLOAD_TOO_LARGE));
    // Once the source has used its allowance, everything is refused up front. (A new client: the
    // server closes the connection after refusing an unread body, and a request racing that
    // close would fail on the old one. The limit is per source address, so it carries over.)
    let c = h.guest();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, _) = c.raw(Method::POST, "/v1/challenge", "application/cbor", vec![0xa0]).await.unwrap();
        statuses.push(status.as_u16());
        if status == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.len() <= 5, "more refusals than the burst of 8 allows: {statuses:?}");
    h.stop().await;

    let h = Harness::start(None, |t| t).await;
    let c = h.guest();
    let (status, _) = c.raw(Method::POST, "/v1/challenge", "application/json", b"{}".to_vec()).await.unwrap();
    assert_eq!(status, 415);
    let (status, _) = c.raw(Method::GET, "/v2/anything", "application/cbor", vec![]).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) =
        c.raw(Method::GET, "/v1/admin/audit?after=x", "application/cbor", vec![]).await.unwrap();
    assert_eq!(status, 401, "authentication comes before parsing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_nonce_is_refused() {
    let h = Harness::start(None, |t| t.replace("challenge_ttl_secs = 60", "challenge_ttl_secs = 1")).await;
    h.admin().create_key("k", &[3; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let c = h.guest();
    let (req, _) = request(&h, &c, "k", 1, MEASUREMENT).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(refused(c.release(&req).await).code, ErrorCode::NonceExpired);
    h.stop().await;
}

/// The same suite on PostgreSQL: `NACRE_TEST_POSTGRES_URL`, or a throwaway server started
/// with scripts/postgres.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (url, started) = match std::env::var("NACRE_TEST_POSTGRES_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let dir = std::path::PathBuf::from("/tmp").join(format!("nacre-pg-{}", std::process::id()));
            let out = std::process::Command::new(repo.join("scripts/postgres.sh"))
                .arg("start")
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "scripts/postgres.sh start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (String::from_utf8(out.stdout).unwrap().trim().to_owned(), Some(dir))
        }
    };
    // A fresh database per run.
    let db = format!("nacre_test_{}", std::process::id());
    let admin_pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&admin_pool).await.unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    suite(Some(&format!("{base}/{db}"))).await;
    let refs_db = format!("{db}_refs");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {refs_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {refs_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    reference_suite(Some(&format!("{base}/{refs_db}"))).await;
    let batch_db = format!("{db}_batch");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {batch_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {batch_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    batch_suite(Some(&format!("{base}/{batch_db}"))).await;
    let signers_db = format!("{db}_signers");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {signers_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {signers_db}")))
        .execute(&admin_pool)
        .await
        .unwrap();
    signers::suite(Some(&format!("{base}/{signers_db}"))).await;
    admin_pool.close().await;
    if let Some(dir) = started {
        let _ = std::process::Command::new(repo.join("scripts/postgres.sh")).arg("stop").arg(&dir).status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Master-key rotation as README documents it: the new key becomes current with the old one
/// as previous (both readable), `rewrap_data_keys` moves every version, then the old key goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation() {
    let h = Harness::start(None, |c| c).await;
    let admin = h.admin();
    let (key1, key2) = ([0x21; 32], [0x22; 32]);
    admin.create_key("m", &key1, &policy_for(&MEASUREMENT)).await.unwrap();
    admin.rotate_key("m", &key2, Some(2)).await.unwrap();
    let new_master = nacre_attestation_service::master::MasterKey::generate_hex().unwrap();
    std::fs::write(h.dir.join("master2.key"), new_master.as_bytes()).unwrap();

    // Step 1: new current, old as previous. Versions under the old key still open.
    let h = h
        .restart(|c| {
            c.replace(
                "master_key_file = \"master.key\"",
                "master_key_file = \"master2.key\"\nprevious_master_key_files = [\"master.key\"]",
            )
        })
        .await;
    assert_eq!(fetch(&h, "m", 2).await.unwrap(), key2);

    // Step 2: re-wrap; a second run has nothing left to do.
    let config = h.config.clone();
    let svc = nacre_attestation_service::service::rewrap_data_keys;
    assert_eq!(svc(&config, "operator:test").await.unwrap(), 2);
    assert_eq!(svc(&config, "operator:test").await.unwrap(), 0);

    // Step 3: the old key is gone; every version still opens, to the same data key.
    let h = h.restart(|c| c.replace("previous_master_key_files = [\"master.key\"]\n", "")).await;
    assert!(h.config.previous_master_key_files.is_empty());
    assert_eq!(fetch(&h, "m", 2).await.unwrap(), key2);
    h.admin().rollback_key("m", 1).await.unwrap();
    assert_eq!(fetch(&h, "m", 1).await.unwrap(), key1);
    let records = h.service.store().audit_page(0, 1000).await.unwrap();
    assert_eq!(records.iter().filter(|r| r.action == "master_rewrap").count(), 2);
    assert_eq!(verify_legacy_chain(&records, None), Ok(0), "the log replaced the chain");
    h.stop().await;
}
