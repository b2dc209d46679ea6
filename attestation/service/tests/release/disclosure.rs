#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! What errors and metrics reveal (issue 12 §5): an unauthenticated caller learns the code and
//! the check, never the details; `/metrics` needs a token of the metrics role or above; a failure of the service's
//! own configuration or collateral is a server error, not the guest's denial.

use crate::common;

use common::{Harness, MEASUREMENT, policy_for};
use hyper::{Method, StatusCode};
use nacre_attestation_client::{Client, ClientError};
use nacre_attestation_service::http::public_reason;
use nacre_protocol::messages::ReleaseRequest;
use nacre_protocol::wrap::RecipientKey;
use nacre_protocol::{ErrorBody, ErrorCode, cbor};
use nacre_wire::binding::KeyReleaseBinding;
use serde_bytes::ByteBuf;

/// A release request for `key_id` v`version` bound to a fresh challenge, with sim evidence.
async fn request(
    h: &Harness,
    c: &Client,
    key_id: &str,
    version: u32,
    measurement: [u8; 48],
) -> ReleaseRequest {
    let challenge = c.challenge(key_id).await.unwrap();
    let recipient = RecipientKey::generate();
    let rd = KeyReleaseBinding { nonce: &challenge.nonce, hpke_public_key: recipient.public_key(), key_id }
        .report_data()
        .unwrap();
    ReleaseRequest {
        key_id: key_id.into(),
        key_version: version,
        nonce: challenge.nonce,
        hpke_public_key: ByteBuf::from(recipient.public_key().to_vec()),
        evidence: h.evidence(rd, measurement),
    }
}

/// Sends `req` as the guest does and returns the status, the raw body as text (lossy: CBOR
/// strings are UTF-8) and the decoded error.
async fn release_raw(c: &Client, req: &ReleaseRequest) -> (StatusCode, String, ErrorBody) {
    let (status, body) =
        c.raw(Method::POST, "/v1/release", "application/cbor", cbor::to_vec(req).unwrap()).await.unwrap();
    let error: ErrorBody = cbor::from_slice(&body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), error)
}

/// Nothing in an unauthenticated refusal beyond the code, the check and the code's one message.
fn reveals_only_the_code(body: &str, e: &ErrorBody, secrets: &[&str]) {
    assert_eq!(e.reason, public_reason(e.code), "{e}");
    for word in ["expected", "requires", "allow-list", "policy", "current", "/"] {
        assert!(!body.contains(word), "{word:?} in {body:?}");
    }
    for secret in secrets {
        assert!(!body.contains(secret), "{secret:?} in {body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_denial_reveals_only_the_code() {
    let h = Harness::start(None, |t| t.replace("denial_burst = 10", "denial_burst = 1000")).await;
    let (admin, guest) = (h.admin(), h.guest());
    admin.create_key("k", &[0x11; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    admin.rotate_key("k", &[0x12; 32], Some(2)).await.unwrap();
    let (allowed, other) = (hex::encode(MEASUREMENT), hex::encode([0x66; 48]));

    // A measurement the policy does not allow: the check is named, neither measurement is.
    let req = request(&h, &guest, "k", 2, [0x66; 48]).await;
    let (status, body, e) = release_raw(&guest, &req).await;
    assert_eq!(
        (status, e.code, e.check.as_deref()),
        (StatusCode::FORBIDDEN, ErrorCode::Evidence, Some("measurement"))
    );
    reveals_only_the_code(&body, &e, &[&allowed, &other]);
    // The details are in the audit record of the denial.
    let records = h.service.store().audit_page(0, 10_000).await.unwrap();
    let denial = records.last().unwrap();
    assert_eq!(denial.action, "deny");
    assert!(denial.reason.as_deref().unwrap().contains(&other), "{denial:?}");

    // REPORT_DATA bound to another HPKE key: the expected binding is not revealed.
    let mut req = request(&h, &guest, "k", 2, MEASUREMENT).await;
    req.hpke_public_key = ByteBuf::from(RecipientKey::generate().public_key().to_vec());
    let expected =
        KeyReleaseBinding { nonce: &req.nonce, hpke_public_key: &req.hpke_public_key, key_id: "k" }
            .report_data()
            .unwrap();
    let (_, body, e) = release_raw(&guest, &req).await;
    assert_eq!((e.code, e.check.as_deref()), (ErrorCode::Evidence, Some("report_data")));
    reveals_only_the_code(&body, &e, &[&hex::encode(expected), &allowed]);

    // A version that is not current: the current version is not revealed.
    let req = request(&h, &guest, "k", 1, MEASUREMENT).await;
    let (_, body, e) = release_raw(&guest, &req).await;
    assert_eq!(e.code, ErrorCode::VersionNotAllowed);
    reveals_only_the_code(&body, &e, &[]);
    assert!(!e.reason.contains('2'), "{e}");

    // An unknown key, a malformed body: the code and its message only.
    let req = request(&h, &guest, "no-such-key", 1, MEASUREMENT).await;
    let (_, body, e) = release_raw(&guest, &req).await;
    assert_eq!(e.code, ErrorCode::UnknownKey);
    reveals_only_the_code(&body, &e, &["no-such-key"]);
    let (status, body) =
        guest.raw(Method::POST, "/v1/challenge", "application/cbor", vec![0xa0]).await.unwrap();
    let e: ErrorBody = cbor::from_slice(&body).unwrap();
    assert_eq!((status, e.code), (StatusCode::BAD_REQUEST, ErrorCode::Malformed));
    reveals_only_the_code(&String::from_utf8_lossy(&body), &e, &["key_id"]);

    // Authenticated callers keep the details.
    let e = match h.auditor().key("no-such-key").await {
        Err(ClientError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(e.reason.contains("no-such-key"), "{e}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_metrics_token_which_reads_nothing_else() {
    // A scraper's token, from a `tokens_file` (as a Kubernetes Secret mounts it).
    let (scraper, digest) = nacre_attestation_service::tokens::generate().unwrap();
    let file = common::scratch("tokens").join("tokens.toml");
    std::fs::write(
        &file,
        format!("[[tokens]]\nname = \"prometheus\"\nrole = \"metrics\"\nsha256 = \"{digest}\"\n"),
    )
    .unwrap();
    let h =
        Harness::start(None, |t| t.replace("[limits]", &format!("tokens_file = {file:?}\n\n[limits]"))).await;
    let get = |c: Client| async move { c.raw(Method::GET, "/metrics", "text/plain", vec![]).await.unwrap() };

    let (status, body) = get(h.guest()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!String::from_utf8_lossy(&body).contains("nacre_"), "no metrics without a token");
    let (status, _) = get(h.guest().with_token("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for c in [h.guest().with_token(scraper.clone()), h.auditor(), h.admin()] {
        let (status, body) = get(c).await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("nacre_attestation"), "metrics text");
    }
    // The scraper's token reads no key list and no audit log.
    let scraper = h.guest().with_token(scraper);
    for route in [nacre_protocol::messages::path::KEYS, nacre_protocol::messages::path::AUDIT] {
        let (status, body) = scraper.raw(Method::GET, route, "application/cbor", vec![]).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}");
        let e: ErrorBody = cbor::from_slice(&body).unwrap();
        assert!(e.reason.contains("needs the auditor role; prometheus is metrics"), "{e}");
    }
    // Liveness and readiness answer without a token (the kubelet has none).
    for route in [nacre_protocol::messages::path::HEALTHZ, nacre_protocol::messages::path::READYZ] {
        let (status, _) = h.guest().raw(Method::GET, route, "text/plain", vec![]).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{route}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collateral_failure_is_a_server_error_not_the_guests_denial() {
    // An empty collateral cache and a burst of two denials per source.
    let h = Harness::start(None, |t| {
        t.replace("denial_burst = 10", "denial_burst = 2")
            .replace("denials_per_minute = 30", "denials_per_minute = 1")
            .replace("[limits]", "collateral_dir = \"collateral\"\n\n[limits]")
    })
    .await;
    let (admin, guest) = (h.admin(), h.guest());
    admin.create_key("k", &[0x21; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let before = h.service.store().audit_head().await.unwrap();

    // SNP evidence without its certificates, for a chip the cache does not have: the service
    // cannot appraise it. Server error, each time: never charged (no 429 after the burst).
    for _ in 0..4 {
        let mut req = request(&h, &guest, "k", 1, MEASUREMENT).await;
        req.evidence.tee = nacre_wire::Tee::Snp;
        req.evidence.certs.clear();
        let (status, body, e) = release_raw(&guest, &req).await;
        assert_eq!(
            (status, e.code, e.check.as_deref()),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, Some("config"))
        );
        reveals_only_the_code(&body, &e, &["collateral", ".der", ".pem"]);
    }
    // Nothing audited as the guest's denial.
    assert_eq!(h.service.store().audit_head().await.unwrap(), before, "no record");
    // And its allowance is whole: two real denials before the 429. (The evidence is
    // authentic, so these are charged to its chip, not to the address; see `limits`.)
    let mut requests = Vec::new();
    for _ in 0..3 {
        requests.push(request(&h, &guest, "k", 1, [0x66; 48]).await);
    }
    let mut codes = Vec::new();
    for req in &requests {
        codes.push(release_raw(&guest, req).await.2.code);
    }
    assert_eq!(codes, [ErrorCode::Evidence, ErrorCode::Evidence, ErrorCode::RateLimited]);
    h.stop().await;
}
