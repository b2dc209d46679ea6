#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Whom denials are charged to (issue 14, bounded requests): an admin or auditor token is
//! admitted on its own allowance whatever its address collected; an IPv6 client is one source
//! per /64; the table of tracked callers has a hard cap; a guest's authentic evidence refused
//! by the policy is charged to its chip, not to the address it shares with other guests.

use std::net::IpAddr;

use crate::common::{Harness, MEASUREMENT, policy_for};
use crate::{refused, request};
use hyper::{Method, StatusCode};
use nacre_attestation_service::ratelimit::Charge;
use nacre_protocol::ErrorCode;

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A malformed challenge from the test's address: a denial charged to its source.
async fn bad_request(h: &Harness) -> StatusCode {
    let (status, _) =
        h.guest().raw(Method::POST, "/v1/challenge", "application/cbor", vec![0xa0]).await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_bad_requests_from_the_admins_address_do_not_lock_the_admin_out() {
    let h = Harness::start(None, |t| {
        assert!(t.contains("denial_burst = 10\n"));
        t.replace("denials_per_minute = 30", "denials_per_minute = 1")
    })
    .await;
    // Someone behind the admin's NAT (everyone here is 127.0.0.1): ten bad requests, then
    // bad tokens.
    for _ in 0..10 {
        assert_eq!(bad_request(&h).await, StatusCode::BAD_REQUEST);
    }
    assert_eq!(bad_request(&h).await, StatusCode::TOO_MANY_REQUESTS, "the source's allowance is gone");
    let guesser = h.guest().with_token("nacre_not_a_token");
    for _ in 0..5 {
        assert_eq!(refused(guesser.list_keys().await).code, ErrorCode::RateLimited, "guessing stays limited");
    }
    let (status, _) = h.guest().raw(Method::GET, "/metrics", "application/cbor", vec![]).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "no token: the source's limit");

    // The admin and the auditor, on the same address, are admitted on their tokens.
    let admin = h.admin();
    admin.create_key("k", &[1; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    assert_eq!(admin.list_keys().await.unwrap().len(), 1);
    let auditor = h.auditor();
    assert_eq!(auditor.key("k").await.unwrap().key_id, "k");
    assert!(!auditor.audit_export().await.unwrap().is_empty());
    let (status, _) = auditor.raw(Method::GET, "/metrics", "application/cbor", vec![]).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // A token's own refusals are its own: the auditor overstepping its role uses up the
    // auditor token's allowance, not the admin's.
    for _ in 0..10 {
        assert_eq!(refused(auditor.revoke_key("k", None).await).code, ErrorCode::Forbidden);
    }
    assert_eq!(refused(auditor.list_keys().await).code, ErrorCode::RateLimited);
    assert_eq!(admin.rotate_key("k", &[2; 32], Some(2)).await.unwrap().current_version, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_addresses_in_one_64_share_a_denial_bucket() {
    let h = Harness::start(None, |t| t.replace("denials_per_minute = 30", "denials_per_minute = 1")).await;
    let svc = &h.service;
    for i in 0..10 {
        // A client rotating through its /64: every address is the same source.
        svc.charge(ip(&format!("2001:db8:1:2::{:x}", i + 1)), ErrorCode::Malformed);
    }
    for rotated in ["2001:db8:1:2::1", "2001:db8:1:2::abcd", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        let e = svc.admit(ip(rotated)).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited, "{rotated}");
    }
    assert_eq!(svc.tracked_callers(), 1, "one /64, one bucket");
    svc.admit(ip("2001:db8:1:3::1")).unwrap();
    svc.admit(ip("2001:db8:1:1:ffff:ffff:ffff:ffff")).unwrap();
    // An IPv4-mapped address is its IPv4 address, not a /64 of mapped addresses.
    for _ in 0..10 {
        svc.charge(ip("::ffff:192.0.2.1"), ErrorCode::Malformed);
    }
    svc.admit(ip("192.0.2.1")).unwrap_err();
    svc.admit(ip("::ffff:192.0.2.2")).unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracked_caller_cap_holds() {
    let h = Harness::start(None, |t| {
        t.replace("[limits]\n", "[limits]\nmax_tracked_sources = 64\n")
            .replace("denials_per_minute = 30", "denials_per_minute = 1")
    })
    .await;
    let svc = &h.service;
    let admin = Charge::token(&h.admin_token);
    for i in 0..10_000u32 {
        let v4 = IpAddr::from(i.to_be_bytes());
        let v6 = IpAddr::from((u128::from(i) << 64).to_be_bytes());
        svc.charge(v4, ErrorCode::Malformed);
        svc.charge(v6, ErrorCode::Malformed);
        assert!(svc.tracked_callers() <= 64);
        // Whatever the table holds, eviction only forgets: a caller never charged is admitted.
        svc.admit(admin).unwrap();
    }
    assert_eq!(svc.tracked_callers(), 64);
    // And the server still serves: a fresh source, the admin.
    assert_eq!(bad_request(&h).await, StatusCode::BAD_REQUEST);
    h.admin().list_keys().await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentic_evidence_refused_by_the_policy_is_charged_to_its_chip_not_its_address() {
    let h = Harness::start(None, |t| {
        t.replace("denial_burst = 10", "denial_burst = 2")
            .replace("denials_per_minute = 30", "denials_per_minute = 1")
    })
    .await;
    h.admin().create_key("k", &[0x31; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let guest = h.guest();
    let before = h.service.store().audit_head().await.unwrap();
    // A guest whose image the policy does not allow, behind the address every guest shares.
    let mut bad = Vec::new();
    for _ in 0..3 {
        bad.push(request(&h, &guest, "k", 1, [0x66; 48]).await.0);
    }
    for req in &bad[..2] {
        assert_eq!(refused(guest.release(req).await).code, ErrorCode::Evidence);
    }
    // Its chip's allowance is gone: refused after the appraisal, without a record; that
    // attempt (a chip past its allowance) is charged to the address.
    assert_eq!(refused(guest.release(&bad[2]).await).code, ErrorCode::RateLimited);
    let after = h.service.store().audit_head().await.unwrap();
    assert_eq!(after.0, before.0 + 2, "two denials audited, the rate-limited attempt not");
    let records = h.service.store().audit_page(before.0, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.decision == "deny" && r.chip_id.is_some()), "{records:?}");

    // The chip's two denials left the address its allowance but for that one attempt: other
    // guests behind it get challenges, and a release is never refused for its chip's past
    // denials: once the evidence passes, the key goes.
    let (good, _) = request(&h, &guest, "k", 1, MEASUREMENT).await;
    assert_eq!(guest.release(&good).await.unwrap().key_id, "k");
    // Then one bad request uses the address's last token.
    assert_eq!(bad_request(&h).await, StatusCode::BAD_REQUEST);
    assert_eq!(bad_request(&h).await, StatusCode::TOO_MANY_REQUESTS);
    h.stop().await;
}
