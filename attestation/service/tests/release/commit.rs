#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! What the database decides at commit (issue 12 §6): the audit chain is checked against its
//! head in one snapshot, a nonce's expiry is checked again inside the commit by the database's
//! clock, and used nonces are kept a margin past their expiry. On SQLite, and on PostgreSQL
//! (`NACRE_TEST_POSTGRES_URL`, or a throwaway server from scripts/postgres.sh).

use crate::common;

use common::{Harness, MEASUREMENT, policy_for};
use nacre_attestation_client::ClientError;
use nacre_attestation_service::store::{
    AuditEntry, ChainBreak, NONCE_GC_MARGIN_SECS, ReleaseCommit, Store, StoreError, verify_legacy_chain,
};
use nacre_protocol::ErrorCode;
use nacre_protocol::messages::ReleaseRequest;
use nacre_protocol::wrap::RecipientKey;
use nacre_wire::binding::KeyReleaseBinding;
use serde_bytes::ByteBuf;
use sqlx::Row;

fn admin(action: &'static str) -> AuditEntry {
    AuditEntry {
        action,
        actor: "admin".into(),
        allow: true,
        release_key_sha256: Some("ab".repeat(32)),
        ..AuditEntry::default()
    }
}

fn release(nonce: &str, expires_at: i64) -> ReleaseCommit<'_> {
    ReleaseCommit {
        nonce_hex: nonce,
        nonce_expires_at: expires_at,
        key_id: "k",
        version: 1,
        audit: AuditEntry {
            action: "release",
            release_key_sha256: Some("ab".repeat(32)),
            actor: nonce.into(),
            allow: true,
            ..AuditEntry::default()
        },
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn nonces(store: &Store) -> Vec<String> {
    let rows =
        sqlx::query("SELECT nonce FROM used_nonces ORDER BY nonce").fetch_all(store.pool()).await.unwrap();
    rows.iter().map(|r| r.try_get::<String, _>("nonce").unwrap()).collect()
}

/// `nacre audit verify --config` read the records, then the head: a release committed in
/// between moved the head past the records read, a truncation that was not there.
async fn audit_verify_sees_one_snapshot(url: &str) {
    let store = Store::connect(url, 4, test_log_keys()).await.unwrap();
    store.create_key("k", "", "kek", b"w", None, admin("create")).await.unwrap();
    store.commit_release(release("first", i64::MAX)).await.unwrap();

    let mut snapshot = store.audit_snapshot().await.unwrap();
    let records = snapshot.page(0, 10_000).await.unwrap();
    // A release commits between the two reads.
    store.commit_release(release("between", i64::MAX)).await.unwrap();
    let head = snapshot.head().await.unwrap();
    assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0));
    drop(snapshot);
    // The head read apart from the records: the false truncation of the finding.
    let moved = store.audit_head().await.unwrap();
    assert!(matches!(
        verify_legacy_chain(&records, Some((moved.0, &moved.1))),
        Err(ChainBreak::Truncated { .. })
    ));

    // A later snapshot has the new record, and still verifies.
    let (all, head) = store.audit_snapshot().await.unwrap().read_all().await.unwrap();
    assert_eq!(all.len(), records.len() + 1);
    assert_eq!(verify_legacy_chain(&all, Some((head.0, &head.1))), Ok(0));
    // A real truncation is still one.
    assert!(matches!(
        verify_legacy_chain(&all[..all.len() - 1], Some((head.0, &head.1))),
        Err(ChainBreak::Truncated { .. })
    ));
    store.close().await;
}

/// The service checks a nonce's expiry by its own clock when it decides; the commit checks it
/// again, by the database's clock, so that a release that waited past the expiry (or was
/// decided on a replica whose clock lags) is refused, and writes nothing.
async fn expired_nonce_is_refused_at_commit(url: &str) {
    let store = Store::connect(url, 4, test_log_keys()).await.unwrap();
    store.create_key("k", "", "kek", b"w", None, admin("create")).await.unwrap();
    let head = store.audit_head().await.unwrap();
    assert!(matches!(store.commit_release(release("late", now() - 2)).await, Err(StoreError::NonceExpired)));
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing was written");
    assert!(nonces(&store).await.is_empty(), "the nonce was not consumed");
    // Unexpired: released.
    store.commit_release(release("in-time", now() + 60)).await.unwrap();
    store.close().await;
}

/// Used nonces stay until the database's clock is [`NONCE_GC_MARGIN_SECS`] past their expiry.
async fn nonce_gc_keeps_the_margin(url: &str) {
    let store = Store::connect(url, 4, test_log_keys()).await.unwrap();
    let t = now();
    for (nonce, expires_at) in [
        ("live", t + 60),
        ("expired-within-margin", t - NONCE_GC_MARGIN_SECS + 30),
        ("expired-past-margin", t - NONCE_GC_MARGIN_SECS - 30),
    ] {
        store.commit_denial(admin("deny"), Some((nonce, expires_at))).await.unwrap();
    }
    assert_eq!(store.gc_nonces().await.unwrap(), 1);
    assert_eq!(nonces(&store).await, ["expired-within-margin", "live"]);
    store.close().await;
}

fn sqlite(name: &str) -> String {
    format!("sqlite://{}", common::scratch(name).join("store.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reads_records_and_head_in_one_snapshot() {
    audit_verify_sees_one_snapshot(&sqlite("snapshot")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_expired_by_the_database_clock_is_refused_at_commit() {
    expired_nonce_is_refused_at_commit(&sqlite("expiry")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_gc_keeps_a_margin_past_expiry() {
    nonce_gc_keeps_the_margin(&sqlite("gc")).await;
}

/// The guest's view: a release decided in time whose commit waits past the nonce's expiry (the
/// chain head held by another transaction) is refused with `nonce_expired`, and audited.
async fn nonce_expiring_before_commit(database: Option<&str>) {
    let h =
        Harness::start(database, |t| t.replace("challenge_ttl_secs = 60", "challenge_ttl_secs = 3")).await;
    h.admin().create_key("k", &[7; 32], &policy_for(&MEASUREMENT)).await.unwrap();
    let guest = h.guest();
    let challenge = guest.challenge("k").await.unwrap();
    let recipient = RecipientKey::generate();
    let rd =
        KeyReleaseBinding { nonce: &challenge.nonce, hpke_public_key: recipient.public_key(), key_id: "k" }
            .report_data()
            .unwrap();
    let req = ReleaseRequest {
        key_id: "k".into(),
        key_version: 1,
        nonce: challenge.nonce,
        hpke_public_key: ByteBuf::from(recipient.public_key().to_vec()),
        evidence: h.evidence(rd, MEASUREMENT),
    };

    // Another connection holds the chain head: every commit waits for it.
    let holder =
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&h.config.database).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1").execute(&mut *held).await.unwrap();
    let released = tokio::spawn(async move { guest.release(&req).await });
    // Past the expiry (whole seconds), then let the commit go on.
    tokio::time::sleep(std::time::Duration::from_millis(
        challenge.expires_at.saturating_sub(now()) as u64 * 1000 + 2500,
    ))
    .await;
    held.rollback().await.unwrap();
    holder.close().await;

    match released.await.unwrap() {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NonceExpired, "{e}"),
        other => panic!("expected nonce_expired, got {other:?}"),
    }
    // Refused at the commit, not at the decision: the audit record says which clock.
    let records = h.service.store().audit_page(0, 10_000).await.unwrap();
    let denial = records.last().unwrap();
    assert_eq!((denial.action.as_str(), denial.decision.as_str()), ("deny", "deny"));
    assert!(denial.reason.as_deref().unwrap().contains("database's clock"), "{denial:?}");
    assert_eq!(records.iter().filter(|r| r.action == "release").count(), 0, "no key left");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_expiring_before_commit_is_refused() {
    nonce_expiring_before_commit(None).await;
}

/// The same on PostgreSQL: `NACRE_TEST_POSTGRES_URL`, or a throwaway server started with
/// scripts/postgres.sh; a fresh database per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (url, started) = match std::env::var("NACRE_TEST_POSTGRES_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let dir =
                std::path::PathBuf::from("/tmp").join(format!("nacre-pg-commit-{}", std::process::id()));
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
    let admin_pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let fresh = |case: &str| {
        let db = format!("nacre_commit_{}_{case}", std::process::id());
        let admin_pool = admin_pool.clone();
        let url = format!("{base}/{db}");
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                .execute(&admin_pool)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&admin_pool)
                .await
                .unwrap();
            url
        }
    };
    audit_verify_sees_one_snapshot(&fresh("snapshot").await).await;
    crate::log::replicas_build_one_tree(&fresh("replicas").await).await;
    crate::log::pre_log_database_continues_its_chain(&fresh("migrate").await).await;
    let mut tamper = std::collections::HashMap::new();
    for case in ["clean", "tail", "edit", "delete", "insert", "reorder", "rewrite"] {
        tamper.insert(case.to_owned(), fresh(&format!("tamper_{case}")).await);
    }
    crate::log::tampering_is_named(|case| tamper[case].clone()).await;
    expired_nonce_is_refused_at_commit(&fresh("expiry").await).await;
    nonce_gc_keeps_the_margin(&fresh("gc").await).await;
    nonce_expiring_before_commit(Some(&fresh("release").await)).await;
    admin_pool.close().await;
    if let Some(dir) = started {
        let _ = std::process::Command::new(repo.join("scripts/postgres.sh")).arg("stop").arg(&dir).status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn test_log_keys() -> nacre_attestation_service::store::LogKeys {
    nacre_attestation_service::store::LogKeys::from_seed("nacre.test/log", &[1; 32]).unwrap()
}
