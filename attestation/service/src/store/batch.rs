//! Group commit of key releases and denials.
//!
//! Each [`Store`] has one writer task. [`Store::commit_release_checked`] and
//! [`Store::commit_denial`] queue their item here and wait; the writer takes everything queued
//! (at most [`MAX_BATCH`] items) and commits it as one write transaction, so a batch of N
//! items costs one chain-head update and one fsync instead of N, and neither releases nor
//! denials queue one by one on the database's write lock (a burst of refused requests once
//! cost a transaction and an fsync each, in front of every release).
//!
//! Invariants, the same as committing each item on its own, in queue order:
//! - The batch is an ordinary write ([`Store::begin_write`]): its first statement advances
//!   the audit chain head, so it is ordered with admin writes and with other replicas'
//!   writes exactly like a single release, and the checks made inside it see every write
//!   committed before it (a revocation or re-import committed before the batch refuses it).
//! - Each item is checked in the order a single commit checks it: its nonce has not expired
//!   by the database's clock, read inside the transaction after the chain head was taken (the
//!   service checked the expiry by its own clock when it decided; a release that waited for
//!   the commit past the expiry, or a replica whose clock lags, is refused here:
//!   [`StoreError::NonceExpired`]); the key version exists and
//!   neither it nor the key is revoked, and the key's current version and release policy are
//!   still the ones the release was decided under (queried once per (key, version) per batch;
//!   [`StoreError::KeyChanged`] otherwise, which the service answers by deciding again on
//!   fresh rows); each reference-values document it was appraised under is still the stored
//!   one (queried once per name per batch); its nonce is new. All nonces go into one multi-row
//!   `INSERT … ON CONFLICT (nonce) DO NOTHING RETURNING nonce` (chunked); a nonce not returned
//!   was used before; of two items with the same nonce, the earlier one in the queue wins and
//!   the other is [`StoreError::NonceReplayed`].
//! - A refused release writes nothing, as a failed single commit wrote nothing. Its caller
//!   gets the typed error and records the denial ([`Store::commit_denial`]), which is queued
//!   like any item and lands in a later batch, so the audit log reads as it did without
//!   batching.
//! - A denial is never refused: it writes its audit record, and its nonce (if it came with an
//!   authentic one) goes into the same multi-row insert with `ON CONFLICT DO NOTHING`, in
//!   queue order with the releases' nonces: a nonce consumed by a denial is
//!   [`StoreError::NonceReplayed`] for a release after it in the queue, as it would be for a
//!   release committed after the denial; a denial whose nonce was already used is recorded
//!   all the same.
//! - The released items and the denials get audit records with consecutive seqs from the
//!   head, in queue order, each chained to the one before; the head ends at the last one. A
//!   batch of denials alone commits like any other. If nothing was written, the transaction
//!   is rolled back (undoing the head's advance).
//! - Nobody is answered before the transaction ends: on COMMIT, each caller gets its own
//!   record or refusal; if any statement or the COMMIT fails, every caller in the batch gets
//!   [`StoreError::BatchFailed`] and nothing was written.

use std::collections::{HashMap, HashSet};

use nacre_protocol::messages::AuditRecord;
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::{AuditEntry, Committed, Store, StoreError, document_digest, new_record};

/// The most items (releases and denials) one transaction commits.
pub(super) const MAX_BATCH: usize = 256;
/// Bound parameters per statement: within SQLite's most conservative limit (999) and far
/// within PostgreSQL's (65,535).
pub(super) const MAX_PARAMS: usize = 999;

/// What one release writes, all or nothing.
#[derive(Debug)]
pub(super) struct Release {
    pub nonce_hex: String,
    pub nonce_expires_at: i64,
    pub key_id: String,
    pub version: u32,
    /// The key's current version and release policy as decided under, if checked.
    pub key: Option<(u32, String)>,
    /// (name, document digest) pairs that must still be the stored ones.
    pub references: Vec<(String, [u8; 32])>,
    pub audit: AuditEntry,
}

/// What one denial writes: its audit record, and the nonce it consumes, if any.
#[derive(Debug)]
pub(super) struct Denial {
    /// (hex, expires_at) of an authentic nonce that came with the denied request.
    pub nonce: Option<(String, i64)>,
    pub audit: AuditEntry,
}

/// What the writer commits, in queue order.
#[derive(Debug)]
pub(super) enum Item {
    Release(Release),
    Denial(Denial),
}

impl Item {
    /// The nonce this item would consume.
    fn nonce(&self) -> Option<(&str, i64)> {
        match self {
            Item::Release(r) => Some((&r.nonce_hex, r.nonce_expires_at)),
            Item::Denial(d) => d.nonce.as_ref().map(|(hex, expires_at)| (hex.as_str(), *expires_at)),
        }
    }

    fn audit(&mut self) -> AuditEntry {
        match self {
            Item::Release(r) => std::mem::take(&mut r.audit),
            Item::Denial(d) => std::mem::take(&mut d.audit),
        }
    }
}

type Reply = oneshot::Sender<Result<Committed, StoreError>>;
pub(super) type Queue = mpsc::UnboundedSender<(Item, Reply)>;

/// Starts the writer of `store` (which must not itself hold a queue, or the writer would keep
/// its own channel open forever). It stops when every sender is gone.
///
/// On SQLite (`own_thread`) the writer runs on a thread of its own, with a single-threaded
/// runtime: a batch makes several round trips to SQLite's connection thread, and on a busy
/// multi-threaded runtime each wake-up would wait behind request tasks (TLS, HPKE), which
/// stretches every batch and so every release's latency. sqlx's SQLite connections do not
/// depend on the runtime they were made on. PostgreSQL connections are sockets registered
/// with the runtime that opened them, so there the writer is a task on the caller's runtime.
pub(super) fn spawn(store: Store, own_thread: bool) -> Result<Queue, StoreError> {
    let (tx, rx) = mpsc::unbounded_channel();
    if own_thread {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::BatchFailed(format!("cannot start the release writer: {e}")))?;
        std::thread::Builder::new()
            .name("release-writer".into())
            .spawn(move || runtime.block_on(writer(store, rx)))
            .map_err(|e| StoreError::BatchFailed(format!("cannot start the release writer: {e}")))?;
    } else {
        tokio::spawn(writer(store, rx));
    }
    Ok(tx)
}

/// Queues `item` and waits for the outcome of the batch it lands in.
pub(super) async fn submit(queue: &Queue, item: Item) -> Result<Committed, StoreError> {
    let stopped = || StoreError::BatchFailed("the release writer stopped".into());
    let (reply, answer) = oneshot::channel();
    queue.send((item, reply)).map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

async fn writer(store: Store, mut rx: mpsc::UnboundedReceiver<(Item, Reply)>) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<Item>, Vec<Reply>) = queued.drain(..).unzip();
        match commit(&store, items).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, items = replies.len(), "release and denial batch failed");
                let e = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::BatchFailed(e.clone())));
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum KeyState {
    Live,
    Unknown,
    KeyRevoked,
    VersionRevoked,
}

/// A (key, version) as stored now: its state, and the key's current version and policy.
struct KeyNow {
    state: KeyState,
    current_version: u32,
    policy: String,
}

/// Commits `items` in one transaction: the outcome of each, in order. `Err` if the
/// transaction failed (nothing was written).
async fn commit(
    store: &Store,
    mut items: Vec<Item>,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let mut w = store.begin_write().await?;
    let conn: &mut AnyConnection = &mut w.tx;
    // After the head: the time at which this transaction holds the chain.
    let now = store.db_now(conn).await?;

    // Revocation and reference values, once per (key, version) and per name.
    let mut keys: HashMap<(String, u32), KeyNow> = HashMap::new();
    let mut documents: HashMap<String, Option<[u8; 32]>> = HashMap::new();
    let mut outcomes: Vec<Option<Result<Committed, StoreError>>> = Vec::with_capacity(items.len());
    // Releases that passed their checks, and every denial, in queue order.
    let mut checked = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let r = match item {
            Item::Release(r) => r,
            Item::Denial(_) => {
                outcomes.push(None);
                checked.push(i);
                continue;
            }
        };
        if now > r.nonce_expires_at {
            outcomes.push(Some(Err(StoreError::NonceExpired)));
            continue;
        }
        let key = key_now(conn, &mut keys, &r.key_id, r.version).await?;
        let refusal = match key.state {
            KeyState::Unknown => Some(StoreError::UnknownKey(r.key_id.clone())),
            KeyState::KeyRevoked => Some(StoreError::KeyRevoked(r.key_id.clone())),
            KeyState::VersionRevoked => {
                Some(StoreError::VersionRevoked { key_id: r.key_id.clone(), version: r.version })
            }
            KeyState::Live => match &r.key {
                Some((current, policy)) if *current != key.current_version || *policy != key.policy => {
                    Some(StoreError::KeyChanged(r.key_id.clone()))
                }
                _ => reference_refusal(conn, &mut documents, &r.references).await?,
            },
        };
        outcomes.push(refusal.map(Err));
        if outcomes[i].is_none() {
            checked.push(i);
        }
    }

    // Nonces; then the audit records of the denials and of the releases whose nonce was new,
    // in queue order. The first item in the queue with a nonce takes it.
    let mut fresh = insert_nonces(conn, checked.iter().filter_map(|&i| items[i].nonce())).await?;
    let mut seq = w.head.0;
    let mut records = Vec::with_capacity(checked.len());
    let mut leaves = Vec::with_capacity(checked.len());
    for i in checked {
        let new = items[i].nonce().is_some_and(|(nonce, _)| fresh.remove(nonce));
        if matches!(items[i], Item::Release(_)) && !new {
            outcomes[i] = Some(Err(StoreError::NonceReplayed));
            continue;
        }
        let audit = items[i].audit();
        if let Some(entry) = store.log.entry_of(&audit) {
            leaves.push((seq, entry));
        }
        let record = new_record(audit, seq);
        seq += 1;
        records.push((i, record));
    }

    let mut log_of: HashMap<i64, super::Leaf> = HashMap::new();
    if records.is_empty() {
        w.tx.rollback().await?;
    } else {
        insert_records(conn, records.iter().map(|(_, r)| r)).await?;
        let (logged, _) =
            super::log::append(conn, &store.log, w.log_size, leaves, now.saturating_mul(1000)).await?;
        let mut by_seq: HashMap<i64, super::Leaf> = logged.into_iter().map(|l| (l.seq, l)).collect();
        for (_, record) in &records {
            if let Some(leaf) = by_seq.remove(&record.seq) {
                log_of.insert(record.seq, leaf);
            }
        }
        sqlx::query("UPDATE audit_head SET seq = $1 WHERE id = 1").bind(seq - 1).execute(&mut *conn).await?;
        w.tx.commit().await?;
    }
    for (i, record) in records {
        let log = log_of.remove(&record.seq);
        outcomes[i] = Some(Ok(Committed { record, log }));
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::Corrupt("an item in the batch got no outcome".into())))
        .collect()
}

async fn key_now<'c>(
    conn: &mut AnyConnection,
    cache: &'c mut HashMap<(String, u32), KeyNow>,
    key_id: &str,
    version: u32,
) -> Result<&'c KeyNow, StoreError> {
    let id = (key_id.to_owned(), version);
    if !cache.contains_key(&id) {
        let row = sqlx::query(
            "SELECT k.revoked AS key_revoked, v.revoked AS version_revoked, k.current_version, k.policy \
             FROM keys k JOIN key_versions v ON v.key_id = k.key_id WHERE k.key_id = $1 AND v.version = $2",
        )
        .bind(key_id.to_owned())
        .bind(i64::from(version))
        .fetch_optional(&mut *conn)
        .await?;
        let now = match row {
            None => KeyNow { state: KeyState::Unknown, current_version: 0, policy: String::new() },
            Some(r) => KeyNow {
                state: if r.try_get::<i64, _>("key_revoked")? != 0 {
                    KeyState::KeyRevoked
                } else if r.try_get::<i64, _>("version_revoked")? != 0 {
                    KeyState::VersionRevoked
                } else {
                    KeyState::Live
                },
                current_version: super::u32_of(r.try_get("current_version")?, "current_version")?,
                policy: r.try_get("policy")?,
            },
        };
        cache.insert(id.clone(), now);
    }
    cache.get(&id).ok_or_else(|| StoreError::Corrupt("key state cache".into()))
}

/// The first of `references` that is no longer imported or no longer the stored document.
async fn reference_refusal(
    conn: &mut AnyConnection,
    cache: &mut HashMap<String, Option<[u8; 32]>>,
    references: &[(String, [u8; 32])],
) -> Result<Option<StoreError>, StoreError> {
    for (name, digest) in references {
        let stored = match cache.get(name) {
            Some(stored) => *stored,
            None => {
                let stored = sqlx::query("SELECT document FROM reference_values WHERE name = $1")
                    .bind(name.clone())
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|r| r.try_get::<String, _>("document").map(|d| document_digest(&d)))
                    .transpose()?;
                cache.insert(name.clone(), stored);
                stored
            }
        };
        match stored {
            None => return Ok(Some(StoreError::UnknownReference(name.clone()))),
            Some(stored) if stored != *digest => return Ok(Some(StoreError::ReferenceChanged(name.clone()))),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// `($1, $2), ($3, $4), …`: `rows` rows of `columns` placeholders.
pub(super) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `nonces` (hex, expires_at); returns those that were new (each once).
async fn insert_nonces<'a>(
    conn: &mut AnyConnection,
    nonces: impl Iterator<Item = (&'a str, i64)>,
) -> Result<HashSet<String>, StoreError> {
    let nonces: Vec<(&str, i64)> = nonces.collect();
    let mut fresh = HashSet::with_capacity(nonces.len());
    for chunk in nonces.chunks(MAX_PARAMS / 2) {
        let sql = format!(
            "INSERT INTO used_nonces (nonce, expires_at) VALUES {} ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
            placeholders(chunk.len(), 2)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &(nonce, expires_at) in chunk {
            q = q.bind(nonce.to_owned()).bind(expires_at);
        }
        for row in q.fetch_all(&mut *conn).await? {
            fresh.insert(row.try_get::<String, _>("nonce")?);
        }
    }
    Ok(fresh)
}

async fn insert_records<'a>(
    conn: &mut AnyConnection,
    records: impl Iterator<Item = &'a AuditRecord>,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 14;
    let records: Vec<&AuditRecord> = records.collect();
    for chunk in records.chunks(MAX_PARAMS / COLUMNS) {
        let sql = format!(
            "INSERT INTO audit_log (seq, time_ms, action, actor, key_id, key_version, decision, reason, \
             tee, measurement, chip_id, source, prev_hash, hash) VALUES {}",
            placeholders(chunk.len(), COLUMNS)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.seq)
                .bind(r.time_ms)
                .bind(r.action.clone())
                .bind(r.actor.clone())
                .bind(r.key_id.clone())
                .bind(r.key_version)
                .bind(r.decision.clone())
                .bind(r.reason.clone())
                .bind(r.tee.clone())
                .bind(r.measurement.clone())
                .bind(r.chip_id.clone())
                .bind(r.source.clone())
                .bind(r.prev_hash.clone())
                .bind(r.hash.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;
    use crate::store::verify_legacy_chain;

    fn release(nonce: &str, key_id: &str, version: u32, references: &[(&str, [u8; 32])]) -> Item {
        Item::Release(Release {
            nonce_hex: nonce.into(),
            nonce_expires_at: i64::MAX,
            key_id: key_id.into(),
            version,
            key: None,
            references: references.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect(),
            audit: AuditEntry {
                action: "release",
                release_key_sha256: Some("ab".repeat(32)),
                actor: nonce.into(),
                allow: true,
                ..AuditEntry::default()
            },
        })
    }

    fn denial(nonce: Option<&str>, actor: &str) -> Item {
        Item::Denial(Denial {
            nonce: nonce.map(|n| (n.to_owned(), i64::MAX)),
            audit: AuditEntry { action: "deny", actor: actor.into(), allow: false, ..AuditEntry::default() },
        })
    }

    fn denial_entry() -> AuditEntry {
        AuditEntry { action: "deny", allow: false, ..AuditEntry::default() }
    }

    fn bend(item: Item, f: impl FnOnce(&mut Release)) -> Item {
        match item {
            Item::Release(mut r) => {
                f(&mut r);
                Item::Release(r)
            }
            denial => denial,
        }
    }

    fn admin(action: &'static str) -> AuditEntry {
        AuditEntry {
            action,
            actor: "admin".into(),
            allow: true,
            release_key_sha256: Some("ab".repeat(32)),
            ..AuditEntry::default()
        }
    }

    /// One deterministic batch with every kind of item, denials interleaved, on SQLite, or on
    /// PostgreSQL when `NACRE_TEST_POSTGRES_URL` names an empty database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_with_releases_denials_and_refusals() {
        let dir = std::env::temp_dir().join(format!("nacre-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = std::env::var("NACRE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| format!("sqlite:{}", dir.join("store.db").display()));
        let store =
            Store::connect(&url, 4, crate::store::LogKeys::from_seed("nacre.test/log", &[1; 32]).unwrap())
                .await
                .unwrap();
        store.create_key("k", "", "kek", b"w", None, admin("create")).await.unwrap();
        store.create_key("r", "", "kek", b"w", None, admin("create")).await.unwrap();
        store.rotate("k", None, "kek", |_| Ok(b"w2".to_vec()), None, None, admin("rotate")).await.unwrap();
        store.revoke("r", None, admin("revoke")).await.unwrap();
        store.revoke("k", Some(2), admin("revoke")).await.unwrap();
        let document = "{\"reference\": 1}";
        let row = crate::store::ReferenceRow {
            name: "img".into(),
            document: document.into(),
            signature: String::new(),
            signer: String::new(),
            imported_at: 0,
        };
        store.import_reference(&row, admin("import")).await.unwrap();
        let digest = document_digest(document);
        // Used before the batch.
        store
            .commit_release(super::super::ReleaseCommit {
                nonce_hex: "old",
                nonce_expires_at: i64::MAX,
                key_id: "k",
                version: 1,
                audit: admin("release"),
            })
            .await
            .unwrap();
        let head = store.audit_head().await.unwrap();
        let current = store.key("k").await.unwrap().unwrap().current_version;
        let under = |nonce: &str, key: (u32, &str)| {
            bend(release(nonce, "k", 1, &[]), |r| r.key = Some((key.0, key.1.to_owned())))
        };

        let batch = vec![
            release("a", "k", 1, &[("img", digest)]),
            release("dup", "k", 1, &[]),
            release("dup", "k", 1, &[]),
            release("old", "k", 1, &[]),
            // A denial takes its nonce before a release behind it in the queue.
            denial(Some("x"), "deny-x"),
            release("x", "k", 1, &[]),
            release("b", "r", 1, &[]),
            release("c", "k", 2, &[]),
            release("d", "k", 9, &[]),
            denial(None, "deny-no-nonce"),
            release("e", "k", 1, &[("img", [0; 32])]),
            release("f", "k", 1, &[("gone", digest)]),
            release("g", "k", 1, &[("img", digest)]),
            // Denials whose nonce is already used (in this batch, before it) are recorded.
            denial(Some("g"), "deny-g"),
            denial(Some("old"), "deny-old"),
            under("h", (current, "")),
            under("i", (current, "edited")),
            under("j", (current + 1, "")),
            // Expired by the database's clock, though everything else would release it.
            bend(release("late", "k", 1, &[]), |r| r.nonce_expires_at = 1),
        ];
        let outcomes = commit(&store, batch).await.unwrap();
        let seqs: Vec<Option<i64>> = outcomes.iter().map(|o| o.as_ref().ok().map(|r| r.record.seq)).collect();
        // Each release carries its leaf, proven under the one checkpoint of the batch; the
        // denials here (of nothing authentic) are not logged.
        let key = store.log_key().clone();
        let mut checkpoints = HashSet::new();
        for c in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
            assert_eq!(c.log.is_some(), c.record.action == "release", "{:?}", c.record);
            if let Some(leaf) = &c.log {
                let cp = nacre_tlog::open_checkpoint(&leaf.checkpoint, &key, &[]).unwrap();
                let hash = nacre_tlog::tree::leaf_hash(&leaf.entry);
                nacre_tlog::tree::verify_inclusion(&leaf.inclusion, cp.size(), cp.root(), leaf.index, hash)
                    .unwrap();
                checkpoints.insert(leaf.checkpoint.to_vec());
            }
        }
        assert_eq!(checkpoints.len(), 1, "one checkpoint per batch");
        let (s, n) = (head.0 + 1, None);
        assert_eq!(
            seqs,
            [
                Some(s),
                Some(s + 1),
                n,
                n,
                Some(s + 2),
                n,
                n,
                n,
                n,
                Some(s + 3),
                n,
                n,
                Some(s + 4),
                Some(s + 5),
                Some(s + 6),
                Some(s + 7),
                n,
                n,
                n
            ],
            "{outcomes:?}"
        );
        assert!(matches!(outcomes[2], Err(StoreError::NonceReplayed)));
        assert!(matches!(outcomes[3], Err(StoreError::NonceReplayed)));
        assert!(matches!(outcomes[5], Err(StoreError::NonceReplayed)));
        assert!(matches!(&outcomes[6], Err(StoreError::KeyRevoked(k)) if k == "r"));
        assert!(matches!(&outcomes[7], Err(StoreError::VersionRevoked { version: 2, .. })));
        assert!(matches!(&outcomes[8], Err(StoreError::UnknownKey(k)) if k == "k"));
        assert!(matches!(&outcomes[10], Err(StoreError::ReferenceChanged(n)) if n == "img"));
        assert!(matches!(&outcomes[11], Err(StoreError::UnknownReference(n)) if n == "gone"));
        assert!(matches!(&outcomes[16], Err(StoreError::KeyChanged(k)) if k == "k"));
        assert!(matches!(&outcomes[17], Err(StoreError::KeyChanged(k)) if k == "k"));
        assert!(matches!(&outcomes[18], Err(StoreError::NonceExpired)));

        let records = store.audit_page(0, 1000).await.unwrap();
        let written: Vec<(&str, &str)> =
            records[head.0 as usize..].iter().map(|r| (r.actor.as_str(), r.decision.as_str())).collect();
        assert_eq!(
            written,
            [
                ("a", "allow"),
                ("dup", "allow"),
                ("deny-x", "deny"),
                ("deny-no-nonce", "deny"),
                ("g", "allow"),
                ("deny-g", "deny"),
                ("deny-old", "deny"),
                ("h", "allow")
            ]
        );
        let head = store.audit_head().await.unwrap();
        assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0));

        // Nothing to release: rolled back, the head does not move; the refused nonces are unused.
        let outcomes =
            commit(&store, vec![release("b", "r", 1, &[]), release("a", "k", 1, &[])]).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_err()), "{outcomes:?}");
        assert_eq!(store.audit_head().await.unwrap(), head);
        let outcomes = commit(&store, vec![release("b", "k", 1, &[])]).await.unwrap();
        assert_eq!(outcomes[0].as_ref().unwrap().record.seq, head.0 + 1);

        // A batch of denials alone commits; the nonce a denial consumed stays consumed.
        let outcomes =
            commit(&store, vec![denial(Some("y"), "deny-y"), denial(None, "deny-z")]).await.unwrap();
        let seqs: Vec<i64> = outcomes.iter().map(|o| o.as_ref().unwrap().record.seq).collect();
        assert_eq!(seqs, [head.0 + 2, head.0 + 3]);
        let outcomes =
            commit(&store, vec![release("y", "k", 1, &[]), release("x", "k", 1, &[])]).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Err(StoreError::NonceReplayed))), "{outcomes:?}");
        let head = store.audit_head().await.unwrap();
        let records = store.audit_page(0, 1000).await.unwrap();
        assert_eq!(verify_legacy_chain(&records, Some((head.0, &head.1))), Ok(0));
        assert_eq!(records.last().unwrap().actor, "deny-z");

        // Through the writer's queue, as the service calls it.
        let record = store
            .commit_denial(AuditEntry { actor: "queued".into(), ..denial_entry() }, Some(("q", i64::MAX)))
            .await
            .unwrap();
        assert_eq!(record.seq, head.0 + 1);
        assert!(matches!(
            store
                .commit_release(super::super::ReleaseCommit {
                    nonce_hex: "q",
                    nonce_expires_at: i64::MAX,
                    key_id: "k",
                    version: 1,
                    audit: admin("release"),
                })
                .await,
            Err(StoreError::NonceReplayed)
        ));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
