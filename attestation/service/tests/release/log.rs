//! The transparency log as a service user sees it (issue 20): what the public routes serve
//! rebuilds into the tree the signed checkpoint names; releases, authentic denials and admin
//! actions are leaves, unauthenticated garbage is not; replicas on one database build one tree;
//! a database from before the log continues its chain in the log.

use std::sync::Arc;

use crate::common::Harness;
use nacre_attestation_service::audit::{Finding, audit_log};
use nacre_attestation_service::store::{AuditEntry, LogKeys, ReleaseCommit, Store};
use nacre_tlog::tree::{leaf_hash, tiles_at_level, verify_inclusion};
use nacre_tlog::{Action, Entry, MemoryTree, open_checkpoint};

/// Splits a C2SP entry bundle into its entries.
fn bundle_entries(mut bundle: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bundle.is_empty() {
        let len = u16::from_be_bytes([bundle[0], bundle[1]]) as usize;
        out.push(bundle[2..2 + len].to_vec());
        bundle = &bundle[2 + len..];
    }
    out
}

/// Fetches the whole log over the public routes and checks it against the signed checkpoint.
/// Returns the decoded entries.
pub async fn check_public_log(h: &Harness) -> Vec<Entry> {
    let client = h.guest();
    let key = h.service.store().log_key().clone();
    let served_key = String::from_utf8(client.log_get("key").await.unwrap()).unwrap();
    assert_eq!(served_key.trim(), key.vkey());
    let note = client.log_get("checkpoint").await.unwrap();
    let checkpoint = open_checkpoint(&note, &key, &[]).unwrap();
    let size = checkpoint.size();
    assert!(size > 0);

    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for tile in tiles_at_level(size, 0) {
        let path = tile.path().replacen("tile/0/", "tile/entries/", 1);
        let bundle = client.log_get(&path).await.unwrap();
        let hashes = client.log_get(&tile.path()).await.unwrap();
        for (k, bytes) in bundle_entries(&bundle).into_iter().enumerate() {
            assert_eq!(&hashes[k * 32..(k + 1) * 32], &leaf_hash(&bytes).0, "hash tile vs entry");
            tree.append(&bytes).unwrap();
            entries.push(Entry::decode(&bytes).unwrap());
        }
    }
    assert_eq!(entries.len() as u64, size);
    assert_eq!(tree.root().unwrap(), checkpoint.root(), "the served entries rebuild the signed root");
    for i in [0, size / 2, size - 1] {
        let proof = h.service.store().log_inclusion(size, i).await.unwrap();
        verify_inclusion(
            &proof,
            size,
            checkpoint.root(),
            i,
            leaf_hash(&entries[i as usize].encode().unwrap()),
        )
        .unwrap();
    }
    // Tiles beyond the tree, and malformed paths, are 404s, never short reads or panics.
    for path in
        ["tile/0/999", "tile/entries/999", "tile/0/000.p/0", "tile/64/000", "tile/../x", "tile/8/0/000"]
    {
        let e = client.log_get(path).await.unwrap_err();
        assert!(e.to_string().contains("not_found") || e.to_string().contains("404"), "{path}: {e}");
    }
    entries
}

/// The proof a release response carries verifies as a client would check it, and names the
/// release key the guest sent; it fails for any other key.
pub fn check_release_proof(h: &Harness, released: &nacre_attestation_client::ReleasedKey) {
    let log = released.log.as_ref().expect("a release carries its log leaf");
    let inclusion: Vec<nacre_tlog::Hash> =
        log.inclusion.iter().map(|b| nacre_tlog::Hash(b.as_slice().try_into().unwrap())).collect();
    let proof = nacre_tlog::ReleaseProof::new(&log.entry, log.index, &inclusion, &log.checkpoint);
    let req = nacre_tlog::LogRequirement {
        log: h.service.store().log_key().clone(),
        witnesses: vec![],
        min_cosigners: 0,
        max_clock_skew_s: 300,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let verified = proof.verify(&req, &released.release_key_digest, now).unwrap();
    assert_eq!(verified.entry.measurement.as_deref(), Some(hex::encode(crate::common::MEASUREMENT).as_str()));
    let mut other = released.release_key_digest;
    other[0] ^= 1;
    assert!(matches!(proof.verify(&req, &other, now), Err(nacre_tlog::TlogError::ReleaseKeyMismatch { .. })));
}

/// Every logged entry is public-safe and matches the audit; garbage denials are not logged.
pub async fn check_log_against_audit(h: &Harness) {
    let entries = check_public_log(h).await;
    let records = h.auditor().audit_export().await.unwrap();
    let releases = records.iter().filter(|r| r.action == "release").count();
    assert_eq!(entries.iter().filter(|e| e.action == Action::Release).count(), releases);
    for e in &entries {
        let text = String::from_utf8(e.encode().unwrap()).unwrap();
        assert!(!text.contains("127.0.0.1"), "no client address in a public entry: {text}");
        if e.action == Action::Release {
            assert!(e.release_key_sha256.is_some() && e.policy_sha256.is_some(), "{text}");
        }
        if e.action == Action::Deny {
            assert!(e.measurement.is_some(), "only denials of authentic evidence: {text}");
        }
        if e.decision == "deny" {
            // A refusal's code and check, never its details (expected values, bindings).
            let reason = e.reason.as_deref().unwrap_or_default();
            assert!(!reason.is_empty() && !reason.contains([' ', ':']), "{text}");
        }
    }
    let garbage = records.iter().filter(|r| r.action == "deny" && r.measurement.is_none()).count();
    let logged_denials = entries.iter().filter(|e| e.action == Action::Deny).count();
    assert!(garbage > 0, "the suite sends unauthenticated requests");
    assert_eq!(
        logged_denials,
        records.iter().filter(|r| r.action == "deny" && r.measurement.is_some()).count()
    );
    let admin = records.iter().filter(|r| r.action != "release" && r.action != "deny").count();
    assert_eq!(entries.len(), releases + logged_denials + admin);
}

fn keys() -> LogKeys {
    LogKeys::from_seed("nacre.test/log", &[1; 32]).unwrap()
}

fn release(nonce: &str) -> ReleaseCommit<'_> {
    ReleaseCommit {
        nonce_hex: nonce,
        nonce_expires_at: i64::MAX,
        key_id: "k",
        version: 1,
        audit: AuditEntry {
            action: "release",
            actor: "guest".into(),
            allow: true,
            release_key_sha256: Some("ab".repeat(32)),
            ..AuditEntry::default()
        },
    }
}

/// Reads every entry and checkpoint from the database and checks that every checkpoint is a
/// prefix of one tree: what two replicas wrote concurrently never forked.
async fn one_tree(store: &Store) -> u64 {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT idx, entry FROM log_entries ORDER BY idx").fetch_all(store.pool()).await.unwrap();
    let mut tree = MemoryTree::new();
    let mut roots = vec![nacre_tlog::tree::root(&tree, 0).unwrap()];
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<i64, _>("idx"), k as i64);
        tree.append(row.get::<String, _>("entry").as_bytes()).unwrap();
        roots.push(tree.root().unwrap());
    }
    let checkpoints =
        sqlx::query("SELECT size, note FROM log_checkpoints").fetch_all(store.pool()).await.unwrap();
    assert!(!checkpoints.is_empty());
    for c in &checkpoints {
        let opened = open_checkpoint(c.get::<String, _>("note").as_bytes(), store.log_key(), &[]).unwrap();
        assert_eq!(opened.size(), c.get::<i64, _>("size") as u64);
        assert_eq!(
            opened.root(),
            roots[opened.size() as usize],
            "checkpoint {} is off the tree",
            opened.size()
        );
    }
    rows.len() as u64
}

/// Two replicas (two stores, each with its own writer and pool) append to one database at once.
pub async fn replicas_build_one_tree(url: &str) {
    let a = Store::connect(url, 4, keys()).await.unwrap();
    let b = Store::connect(url, 4, keys()).await.unwrap();
    let admin =
        AuditEntry { action: "key_create", actor: "admin".into(), allow: true, ..AuditEntry::default() };
    a.create_key("k", "", "kek", b"w", None, admin).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let nonce = format!("replica-{i}");
            store.commit_release(release(&nonce)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(one_tree(&a).await, 61);
    assert_eq!(a.log_size().await.unwrap(), 61);
    a.close().await;
    b.close().await;
}

/// A database from before the log: its chain's head becomes the log's first leaf on start.
pub async fn pre_log_database_continues_its_chain(url: &str) {
    let store = Store::connect(url, 2, keys()).await.unwrap();
    let admin =
        AuditEntry { action: "key_create", actor: "admin".into(), allow: true, ..AuditEntry::default() };
    store.create_key("k", "", "kek", b"w", None, admin).await.unwrap();
    store.commit_release(release("before")).await.unwrap();
    // Make it look like a pre-log database: the chain, no log.
    for sql in [
        "DELETE FROM log_entries",
        "DELETE FROM log_hashes",
        "DELETE FROM log_checkpoints",
        "UPDATE audit_head SET log_size = 0 WHERE id = 1",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let (seq, chain_head) = store.audit_head().await.unwrap();
    store.close().await;

    let store = Store::connect(url, 2, keys()).await.unwrap();
    let (_, first) = store.log_entry_bundle(0, 1).await.map(|b| (0, bundle_entries(&b))).unwrap();
    let first = Entry::decode(&first[0]).unwrap();
    assert_eq!(first.action, Action::ChainMigrated);
    assert_eq!(first.legacy_chain_head.as_deref(), Some(chain_head.as_str()));
    assert!(first.reason.unwrap().starts_with(&format!("{seq} audit records")));
    // Once only: a restart does not log it again, and later writes follow it.
    store.commit_release(release("after")).await.unwrap();
    store.close().await;
    let store = Store::connect(url, 2, keys()).await.unwrap();
    assert_eq!(store.log_size().await.unwrap(), 2);
    assert_eq!(one_tree(&store).await, 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_on_sqlite() {
    let dir = crate::common::scratch("log");
    replicas_build_one_tree(&format!("sqlite:{}", dir.join("replicas.db").display())).await;
    pre_log_database_continues_its_chain(&format!("sqlite:{}", dir.join("migrate.db").display())).await;
}

/// A release gets cosigned by a real witness server the service pushes to in the background;
/// the witnessed proof satisfies a client requiring K = 1 of the named witness, not K = 2, and
/// the witness speaks the protocol's refusals over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_cosigns_releases() {
    let h = Harness::start(None, |t| t).await;
    let log_vkey = h.service.store().log_key().vkey();
    let wdir = crate::common::scratch("witness");
    let init = nacre_witness::setup::init(
        &wdir,
        "witness.test/w1",
        "127.0.0.1:0".parse().unwrap(),
        &[],
        std::slice::from_ref(&log_vkey),
    )
    .unwrap();
    let wconfig = nacre_witness::Config::load(&init.config).unwrap();
    let witness = Arc::new(nacre_witness::server::open(&wconfig).unwrap());
    let listener = tokio::net::TcpListener::bind(wconfig.listen).await.unwrap();
    let wurl = format!("https://{}", listener.local_addr().unwrap());
    let served = witness.clone();
    tokio::spawn(async move {
        nacre_witness::server::serve(served, &wconfig, listener, std::future::pending()).await.unwrap();
    });
    let h = h
        .restart(|t| {
            format!(
                "{t}\n[[witnesses]]\nurl = {wurl:?}\nca = {:?}\nvkey = {:?}\n",
                init.ca_cert.display().to_string(),
                init.vkey
            )
        })
        .await;

    h.admin()
        .create_key("witnessed", &[0x33; 32], &crate::common::policy_for(&crate::common::MEASUREMENT))
        .await
        .unwrap();
    let c = h.guest();
    let rk = c.result_key().await.unwrap();
    let released = c
        .fetch_key("witnessed", 1, &rk, |rd| {
            let e = h.evidence(rd, crate::common::MEASUREMENT);
            async move { Ok(e) }
        })
        .await
        .unwrap();
    let index = released.log.as_ref().unwrap().index;

    // The pusher runs in the background: wait for a cosigned checkpoint covering the release.
    let witness_key = nacre_tlog::NoteKey::parse(&init.vkey).unwrap();
    let log_key = h.service.store().log_key().clone();
    let mut witnessed = None;
    for _ in 0..100 {
        let got = c.log_witnessed(index).await.unwrap();
        let opened = open_checkpoint(&got.checkpoint, &log_key, std::slice::from_ref(&witness_key)).unwrap();
        if opened.cosigned().len() == 1 {
            witnessed = Some(got);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = witnessed.expect("the witness cosigned a checkpoint covering the release within 10 s");
    assert_eq!(got.entry, released.log.as_ref().unwrap().entry);
    let inclusion: Vec<nacre_tlog::Hash> =
        got.inclusion.iter().map(|b| nacre_tlog::Hash(b.as_slice().try_into().unwrap())).collect();
    let proof = nacre_tlog::ReleaseProof::new(&got.entry, index, &inclusion, &got.checkpoint);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut req = nacre_tlog::LogRequirement {
        log: log_key.clone(),
        witnesses: vec![witness_key.clone()],
        min_cosigners: 1,
        max_clock_skew_s: 300,
    };
    proof.verify(&req, &released.release_key_digest, now).unwrap();
    req.min_cosigners = 2;
    assert!(matches!(
        proof.verify(&req, &released.release_key_digest, now),
        Err(nacre_tlog::TlogError::NotEnoughCosignatures { need: 2, .. })
    ));
    // The witness's durable state holds what it cosigned.
    let held = witness.latest(log_key.name()).unwrap();
    assert!(held.size > index);

    // Protocol refusals over HTTPS: a malformed body (400), a stale old size (409 with the
    // size the witness holds, as text/x.tlog.size), a log it does not follow (404).
    let wc = nacre_attestation_client::Client::new(&wurl, &std::fs::read(&init.ca_cert).unwrap()).unwrap();
    let (status, _) =
        wc.raw(hyper::Method::POST, "/add-checkpoint", "text/plain", b"garbage".to_vec()).await.unwrap();
    assert_eq!(status, 400);
    let (_, note) = h.service.store().log_checkpoint().await.unwrap().unwrap();
    let stale = nacre_tlog::witness::AddCheckpoint { old_size: 0, proof: vec![], checkpoint: note }.encode();
    let (status, body) = wc.raw(hyper::Method::POST, "/add-checkpoint", "text/plain", stale).await.unwrap();
    assert_eq!(status, 409);
    let held = witness.latest(log_key.name()).unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), format!("{}\n", held.size));
    let stranger =
        nacre_tlog::NoteSigner::from_seed("other.example/log", nacre_tlog::KeyKind::Checkpoint, &[7; 32])
            .unwrap();
    let foreign = nacre_tlog::sign_checkpoint(&stranger, 1, nacre_tlog::Hash([1; 32])).unwrap();
    let body =
        nacre_tlog::witness::AddCheckpoint { old_size: 0, proof: vec![], checkpoint: foreign }.encode();
    let (status, _) = wc.raw(hyper::Method::POST, "/add-checkpoint", "text/plain", body).await.unwrap();
    assert_eq!(status, 404);
}

/// A log of a key creation and six releases, and its latest checkpoint cosigned by a witness
/// (the anchor an auditor keeps outside the database).
async fn witnessed_log(url: &str) -> (Store, Vec<u8>) {
    let store = Store::connect(url, 2, keys()).await.unwrap();
    let admin =
        AuditEntry { action: "key_create", actor: "admin".into(), allow: true, ..AuditEntry::default() };
    store.create_key("k", "", "kek", b"w", None, admin).await.unwrap();
    for i in 0..6u8 {
        let nonce = format!("tamper-{i}");
        let mut r = release(&nonce);
        r.audit.measurement = Some(hex::encode([i; 48]));
        r.audit.tee = Some("sim".into());
        store.commit_release(r).await.unwrap();
    }
    let (_, note) = store.log_checkpoint().await.unwrap().unwrap();
    let witness =
        nacre_tlog::NoteSigner::from_seed("witness.test/w", nacre_tlog::KeyKind::Cosignature, &[3; 32])
            .unwrap();
    let mut opened = open_checkpoint(&note, store.log_key(), &[]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let line = nacre_tlog::cosign::cosign(&witness, opened.text(), now).unwrap();
    opened.add_cosignatures(&line, std::slice::from_ref(witness.public())).unwrap();
    (store, opened.to_bytes())
}

/// `nacre audit verify`'s check: one snapshot of records and leaves against the anchor.
async fn findings(store: &Store, anchor: &[u8]) -> Vec<Finding> {
    let mut snap = store.audit_snapshot().await.unwrap();
    let leaves = snap.log_leaves().await.unwrap();
    let stored =
        snap.log_checkpoint().await.unwrap().map(|(_, n)| open_checkpoint(&n, store.log_key(), &[]).unwrap());
    let (records, _) = snap.read_all().await.unwrap();
    let anchor = open_checkpoint(anchor, store.log_key(), &[]).unwrap();
    audit_log(&keys(), &records, &leaves, Some(&anchor), stored.as_ref()).findings
}

async fn sql(store: &Store, statements: &[&str]) {
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(*s)).execute(store.pool()).await.unwrap();
    }
}

/// Points the head at the last record, as someone with write access would after a change:
/// sequence numbers then run on, with no hash chain to betray it.
async fn reset_head(store: &Store) {
    let records = store.audit_page(0, 1000).await.unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1 WHERE id = 1")
        .bind(records.last().unwrap().seq)
        .execute(store.pool())
        .await
        .unwrap();
    let (records, head) = store.audit_snapshot().await.unwrap().read_all().await.unwrap();
    nacre_attestation_service::store::verify_legacy_chain(&records, Some((head.0, &head.1))).unwrap();
}

/// Issue 20: tampering by someone who can write the database is found against the witnessed
/// checkpoint, and named.
pub async fn tampering_is_named(url_of: impl Fn(&str) -> String) {
    // Untouched: nothing to report.
    let (store, anchor) = witnessed_log(&url_of("clean")).await;
    assert_eq!(findings(&store, &anchor).await, vec![]);

    // An export (records, no seq on the public leaves) against the public log.
    let records = store.audit_page(0, 1000).await.unwrap();
    let mut snap = store.audit_snapshot().await.unwrap();
    let entries: Vec<Vec<u8>> = snap.log_leaves().await.unwrap().into_iter().map(|(_, _, e)| e).collect();
    let (_, note) = snap.log_checkpoint().await.unwrap().unwrap();
    snap.read_all().await.unwrap();
    let latest = open_checkpoint(&note, store.log_key(), &[]).unwrap();
    let witnessed = open_checkpoint(&anchor, store.log_key(), &[]).unwrap();
    let export = |records: &[nacre_protocol::messages::AuditRecord]| {
        nacre_attestation_service::audit::audit_export(records, &entries, &latest, Some(&witnessed)).findings
    };
    assert_eq!(export(&records), vec![]);
    let mut edited = records.clone();
    edited[2].measurement = Some("ee".repeat(48));
    assert_eq!(export(&edited), vec![Finding::RecordEdited { seq: 3, idx: 2, field: "measurement" }]);
    let mut deleted = records.clone();
    deleted.remove(3);
    assert_eq!(export(&deleted), vec![Finding::LeafUnmatched { idx: 3 }]);
    assert_eq!(export(&records[..6]), vec![Finding::LeafUnmatched { idx: 6 }]);
    let mut swapped = records.clone();
    swapped.swap(2, 3);
    assert_eq!(export(&swapped), vec![Finding::RecordsReordered { seq: 4, idx: 3, logged_as: 3 }]);
    let mut inserted = records.clone();
    let mut fake = records[2].clone();
    fake.measurement = Some("dd".repeat(48));
    inserted.insert(3, fake);
    assert_eq!(export(&inserted), vec![Finding::RecordInserted { seq: 3 }]);
    store.close().await;

    // The tail deleted, the head reset: records 6 and 7, their leaves, hashes and checkpoints.
    let (store, anchor) = witnessed_log(&url_of("tail")).await;
    let hashes = nacre_tlog::tree::stored_hash_count(5);
    sql(
        &store,
        &[
            "DELETE FROM audit_log WHERE seq > 5",
            "DELETE FROM log_entries WHERE idx >= 5",
            &format!("DELETE FROM log_hashes WHERE idx >= {hashes}"),
            "DELETE FROM log_checkpoints WHERE size > 5",
            "UPDATE audit_head SET log_size = 5 WHERE id = 1",
        ],
    )
    .await;
    reset_head(&store).await;
    assert_eq!(findings(&store, &anchor).await, vec![Finding::TailDeleted { have: 5, witnessed: 7 }]);
    store.close().await;

    // A record edited, every later hash recomputed.
    let (store, anchor) = witnessed_log(&url_of("edit")).await;
    sql(&store, &[&format!("UPDATE audit_log SET measurement = '{}' WHERE seq = 3", "ee".repeat(48))]).await;
    reset_head(&store).await;
    assert_eq!(
        findings(&store, &anchor).await,
        vec![Finding::RecordEdited { seq: 3, idx: 2, field: "measurement" }]
    );
    store.close().await;

    // A middle record deleted and the later ones renumbered: alone, then with its leaf.
    let (store, anchor) = witnessed_log(&url_of("delete")).await;
    sql(
        &store,
        &[
            "DELETE FROM audit_log WHERE seq = 4",
            "UPDATE audit_log SET seq = -seq WHERE seq > 4",
            "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0",
        ],
    )
    .await;
    reset_head(&store).await;
    assert_eq!(findings(&store, &anchor).await, vec![Finding::RecordDeleted { seq: 4, idx: 3 }]);
    sql(&store, &["DELETE FROM log_entries WHERE idx = 3"]).await;
    assert_eq!(findings(&store, &anchor).await, vec![Finding::LeafMissing { idx: 3 }]);
    store.close().await;

    // A release record inserted.
    let (store, anchor) = witnessed_log(&url_of("insert")).await;
    sql(&store, &[
        "INSERT INTO audit_log (seq, time_ms, action, actor, key_id, key_version, decision, prev_hash, hash) \
         VALUES (8, 1, 'release', 'guest', 'k', 1, 'allow', '', '')",
    ])
    .await;
    reset_head(&store).await;
    assert_eq!(findings(&store, &anchor).await, vec![Finding::RecordInserted { seq: 8 }]);
    store.close().await;

    // Two records swapped.
    let (store, anchor) = witnessed_log(&url_of("reorder")).await;
    sql(
        &store,
        &[
            "UPDATE audit_log SET seq = -3 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 5",
            "UPDATE audit_log SET seq = 5 WHERE seq = -3",
        ],
    )
    .await;
    reset_head(&store).await;
    assert_eq!(
        findings(&store, &anchor).await,
        vec![
            Finding::RecordsReordered { seq: 3, idx: 4, logged_as: 5 },
            Finding::RecordsReordered { seq: 5, idx: 2, logged_as: 3 },
        ]
    );
    store.close().await;

    // A leaf rewritten with its record, by someone who also holds the log key and re-signs:
    // the database agrees with itself, not with what the witness cosigned.
    let (store, anchor) = witnessed_log(&url_of("rewrite")).await;
    let (_, _, entry) = {
        let mut snap = store.audit_snapshot().await.unwrap();
        let leaves = snap.log_leaves().await.unwrap();
        snap.read_all().await.unwrap();
        leaves[2].clone()
    };
    let mut e = Entry::decode(&entry).unwrap();
    e.measurement = Some("ee".repeat(48));
    let forged = String::from_utf8(e.encode().unwrap()).unwrap();
    sqlx::query("UPDATE log_entries SET entry = $1 WHERE idx = 2")
        .bind(&forged)
        .execute(store.pool())
        .await
        .unwrap();
    sql(&store, &[&format!("UPDATE audit_log SET measurement = '{}' WHERE seq = 3", "ee".repeat(48))]).await;
    reset_head(&store).await;
    let found = findings(&store, &anchor).await;
    assert!(found.contains(&Finding::RootMismatch { size: 7 }), "{found:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_named_on_sqlite() {
    let dir = crate::common::scratch("tamper");
    tampering_is_named(|name| format!("sqlite:{}", dir.join(format!("{name}.db")).display())).await;
}
