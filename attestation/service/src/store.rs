//! Storage on SQLite (default, embedded) or PostgreSQL through one code path (`sqlx::Any`) and
//! one portable schema (`migrations/`).
//!
//! Every write is one transaction whose first statement advances the audit chain head, so
//! audit appends, and the revocation checks made inside them, are totally ordered on either
//! database. A release commits its nonce, its checks and its audit record together; the
//! response is sent only after that commit. Releases and denials are group-committed: one
//! writer per store commits whatever is queued as one such transaction ([`batch`]).

use std::borrow::Cow;

use nacre_protocol::messages::{AuditRecord, GENESIS_HASH};
use nacre_protocol::model::{ModelSignature, Sha256, SignedManifest};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row, Transaction};

mod batch;
mod log;

pub use log::{Leaf, LogKeys, disagreement};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("nonce was already used")]
    NonceReplayed,
    /// The nonce had expired by the database's clock when the release came to commit.
    #[error("the nonce expired before the release committed (by the database's clock)")]
    NonceExpired,
    #[error("key {0} is unknown")]
    UnknownKey(String),
    #[error("key {0} already exists")]
    KeyExists(String),
    #[error("key {key_id} has no version {version}")]
    UnknownVersion { key_id: String, version: u32 },
    #[error("key {key_id} would get version {next}, not the expected {expected}")]
    VersionMismatch { key_id: String, expected: u32, next: u32 },
    #[error("key {0} is revoked")]
    KeyRevoked(String),
    #[error("key {key_id} version {version} is revoked")]
    VersionRevoked { key_id: String, version: u32 },
    #[error("stored value out of range: {0}")]
    Corrupt(String),
    #[error("reference values {0} are not imported")]
    UnknownReference(String),
    #[error("reference values {0} were replaced while the release was decided")]
    ReferenceChanged(String),
    /// The key's current version or release policy changed after the release was decided.
    #[error("key {0} was changed while the release was decided")]
    KeyChanged(String),
    /// The batch this release or denial was in did not commit (nothing in it was written).
    #[error("release batch: {0}")]
    BatchFailed(String),
    /// The transparency log could not be appended to or read (nothing was written).
    #[error("transparency log: {0}")]
    Log(String),
}

/// An audit entry before it is chained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub time_ms: i64,
    pub action: &'static str,
    pub actor: String,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    pub allow: bool,
    pub reason: Option<String>,
    pub tee: Option<String>,
    pub measurement: Option<String>,
    pub chip_id: Option<String>,
    pub source: Option<String>,
    /// For the transparency log's entry (hex SHA-256 each): the key's release policy, the
    /// reference values and the enclave's HPKE release key in force.
    pub policy_sha256: Option<String>,
    pub reference_values_sha256: Option<String>,
    pub release_key_sha256: Option<String>,
    /// For `chain_migrated`: the head of the hash chain the log continues.
    pub legacy_chain_head: Option<String>,
    /// For `reference_import`: the accepted measurements, `<tee>:<hex>`.
    pub reference_measurements: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRow {
    pub version: u32,
    pub kek_id: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub revoked: bool,
    /// The model the version was registered for (`model_registrations`), if any.
    pub model: Option<ModelRow>,
}

pub use crate::signers::ModelRow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub key_id: String,
    pub current_version: u32,
    pub revoked: bool,
    pub policy: String,
    pub versions: Vec<VersionRow>,
}

impl KeyRow {
    pub fn version(&self, v: u32) -> Option<&VersionRow> {
        self.versions.iter().find(|r| r.version == v)
    }
}

/// A committed release or denial: its audit record, and its log leaf with the proof under the
/// checkpoint of its batch (None if it is not logged).
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    pub record: AuditRecord,
    pub log: Option<Leaf>,
}

/// What a release writes, all or nothing.
#[derive(Debug)]
pub struct ReleaseCommit<'a> {
    pub nonce_hex: &'a str,
    pub nonce_expires_at: i64,
    pub key_id: &'a str,
    pub version: u32,
    pub audit: AuditEntry,
}

/// What a release was decided under, for its commit to check under the write lock: the
/// commit refuses the release ([`StoreError::KeyChanged`], [`StoreError::ReferenceChanged`])
/// if any of it is no longer what is stored, so that no decision made on a row that has
/// changed since (a cache, another replica's write) is ever committed.
#[derive(Clone, Debug, Default)]
pub struct DecidedUnder {
    /// The key's current version and release policy text as read for the decision (None:
    /// not checked).
    pub key: Option<(u32, String)>,
    /// (name, document digest) of each reference-values document the evidence was appraised
    /// under.
    pub references: Vec<(String, [u8; 32])>,
}

/// Imported reference values: the signed document and its signature, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceRow {
    pub name: String,
    pub document: String,
    pub signature: String,
    /// Hex Ed25519 public key.
    pub signer: String,
    /// Unix seconds.
    pub imported_at: i64,
}

impl ReferenceRow {
    /// SHA-256 of the document: what caches of its parsed form are keyed by.
    pub fn digest(&self) -> [u8; 32] {
        document_digest(&self.document)
    }
}

/// SHA-256 of a reference-values document.
pub fn document_digest(document: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, document.as_bytes()).as_ref());
    out
}

struct WriteTx {
    tx: Transaction<'static, Any>,
    head: (i64, String),
    /// The transparency log's size, under the same head row.
    log_size: u64,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite allows one writer; queueing writers here (FIFO) instead of in SQLite's busy
    /// handler, which sleeps in growing steps, keeps tail latency flat under concurrency.
    write_lock: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// The writer's queue of releases and denials ([`batch`]); None only in the writer's own
    /// copy.
    writer: Option<batch::Queue>,
    /// SQLite (else PostgreSQL): the few statements that are not portable differ.
    sqlite: bool,
    /// The transparency log's keys.
    log: std::sync::Arc<LogKeys>,
}

/// How long a used nonce is kept after it expired, by the database's clock.
///
/// A release refuses a nonce that has expired by the database's clock inside its commit
/// (see [`batch`]), so a nonce's row is needed only while a commit could still find it
/// unexpired: the row may go once the database's clock is past `expires_at`, plus a margin
/// for what could make a commit read an earlier time than the collector did. Both read the
/// same clock, so replicas' clock skew does not enter; what enters is the database clock
/// stepping back (an NTP correction) and, on PostgreSQL, a commit whose clock reading was
/// taken before the collector's delete but which commits after it (bounded by the commit's
/// latency: SQLite's busy timeout is 10 s, a batch commits in milliseconds). Ten minutes is
/// well above both; the cost is ten minutes of extra rows.
pub const NONCE_GC_MARGIN_SECS: i64 = 600;

fn migrator() -> Migrator {
    let migration = |version, name, sql| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(sql),
            false,
        )
    };
    Migrator {
        migrations: Cow::Owned(vec![
            migration(1, "initial", include_str!("../migrations/0001_initial.sql")),
            migration(2, "reference values", include_str!("../migrations/0002_reference_values.sql")),
            migration(3, "model registrations", include_str!("../migrations/0003_model_registrations.sql")),
            migration(4, "transparency log", include_str!("../migrations/0004_transparency_log.sql")),
            migration(
                5,
                "witnessed checkpoints",
                include_str!("../migrations/0005_witnessed_checkpoints.sql"),
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v}")))
}

fn hex_of(text: &str, what: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(text).map_err(|_| StoreError::Corrupt(format!("{what} is not hex")))
}

impl Store {
    /// Connects, applies the SQLite durability settings (WAL, `synchronous=FULL`, foreign
    /// keys) on every connection, and runs pending migrations.
    pub async fn connect(url: &str, max_connections: u32, log: LogKeys) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains('?') { format!("{url}?mode=rwc") } else { url.to_owned() };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            // A ping before every checkout is a round trip per statement batch; an embedded
            // SQLite connection cannot have gone away (PostgreSQL's can: keep it there).
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .execute(conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        migrator().run(&pool).await?;
        let write_lock = sqlite.then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        let mut store = Store { pool, write_lock, writer: None, sqlite, log: std::sync::Arc::new(log) };
        store.migrate_chain().await?;
        store.writer = Some(batch::spawn(store.clone(), sqlite)?);
        Ok(store)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database's clock, in Unix seconds, as an SQL expression. PostgreSQL's
    /// `clock_timestamp()` is the time the statement runs (`now()` would be the start of the
    /// transaction, which may be before its wait for the chain head).
    fn db_now_sql(&self) -> &'static str {
        if self.sqlite {
            "CAST(strftime('%s', 'now') AS INTEGER)"
        } else {
            "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)"
        }
    }

    /// The database's clock, in Unix seconds, read on `conn` (in its transaction, if any).
    async fn db_now(&self, conn: &mut sqlx::AnyConnection) -> Result<i64, StoreError> {
        let sql = format!("SELECT {} AS now", self.db_now_sql());
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(conn).await?.try_get("now")?)
    }

    /// Waits for open connections to finish and closes the pool (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction whose first statement takes the audit chain head.
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        // The connection first: the write lock is then held only while the head is advanced
        // and the transaction's own statements run. (SQLite's BEGIN is deferred: it takes no
        // database lock until the first write, the head update below.)
        let mut tx = self.pool.begin().await?;
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash, log_size")
                .fetch_one(&mut *tx)
                .await?;
        let log_size = u64::try_from(head.try_get::<i64, _>("log_size")?)
            .map_err(|_| StoreError::Corrupt("negative log size".into()))?;
        let head = (head.try_get::<i64, _>("seq")?, head.try_get::<String, _>("hash")?);
        Ok(WriteTx { tx, head, log_size, _guard: guard })
    }

    /// Appends `entry` at `seq`, and its log leaf after `log_size` leaves, inside the caller's
    /// transaction. (The head's hash is the pre-log chain's, frozen: the log replaced it.)
    async fn append(
        &self,
        tx: &mut Transaction<'static, Any>,
        ((seq, _), log_size): ((i64, String), u64),
        entry: AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let leaf = self.log.entry_of(&entry).map(|e| vec![(seq, e)]).unwrap_or_default();
        log::append(tx, &self.log, log_size, leaf, entry.time_ms).await?;
        let rec = new_record(entry, seq);
        sqlx::query(
            "INSERT INTO audit_log (seq, time_ms, action, actor, key_id, key_version, decision, reason, \
             tee, measurement, chip_id, source, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(rec.seq)
        .bind(rec.time_ms)
        .bind(rec.action.clone())
        .bind(rec.actor.clone())
        .bind(rec.key_id.clone())
        .bind(rec.key_version)
        .bind(rec.decision.clone())
        .bind(rec.reason.clone())
        .bind(rec.tee.clone())
        .bind(rec.measurement.clone())
        .bind(rec.chip_id.clone())
        .bind(rec.source.clone())
        .bind(rec.prev_hash.clone())
        .bind(rec.hash.clone())
        .execute(&mut **tx)
        .await?;
        Ok(rec)
    }

    async fn key_in(exec: &mut sqlx::AnyConnection, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        let Some(k) =
            sqlx::query("SELECT key_id, current_version, revoked, policy FROM keys WHERE key_id = $1")
                .bind(key_id.to_owned())
                .fetch_optional(&mut *exec)
                .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT v.version, v.kek_id, v.wrapped_key, v.created_at, v.revoked, {MODEL_COLUMNS} \
             FROM key_versions v LEFT JOIN model_registrations m \
             ON m.key_id = v.key_id AND m.version = v.version \
             WHERE v.key_id = $1 ORDER BY v.version"
        )))
        .bind(key_id.to_owned())
        .fetch_all(&mut *exec)
        .await?;
        let versions = rows.iter().map(|r| version_row_of(r, true)).collect::<Result<_, _>>()?;
        Ok(Some(KeyRow {
            key_id: k.try_get("key_id")?,
            current_version: u32_of(k.try_get("current_version")?, "current_version")?,
            revoked: k.try_get::<i64, _>("revoked")? != 0,
            policy: k.try_get("policy")?,
            versions,
        }))
    }

    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        Self::key_in(&mut *self.pool.acquire().await?, key_id).await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let ids: Vec<String> = sqlx::query("SELECT key_id FROM keys ORDER BY key_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("key_id"))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.key(&id).await?);
        }
        Ok(out)
    }

    /// Commits a release: re-checks revocation under the chain lock, consumes the nonce and
    /// appends the audit record. Fails (and writes nothing) on replay or revocation.
    pub async fn commit_release(&self, c: ReleaseCommit<'_>) -> Result<AuditRecord, StoreError> {
        Ok(self.commit_release_checked(c, &DecidedUnder::default()).await?.record)
    }

    /// [`Store::commit_release`] for a release decided under `basis`: the key's current
    /// version and policy and each (name, document digest) must still be the stored ones under
    /// the chain lock, so an admin change or an import committed before this release commits
    /// always takes effect (no stale decision).
    pub async fn commit_release_checked(
        &self,
        c: ReleaseCommit<'_>,
        basis: &DecidedUnder,
    ) -> Result<Committed, StoreError> {
        let release = batch::Release {
            nonce_hex: c.nonce_hex.to_owned(),
            nonce_expires_at: c.nonce_expires_at,
            key_id: c.key_id.to_owned(),
            version: c.version,
            key: basis.key.clone(),
            references: basis.references.clone(),
            audit: c.audit,
        };
        self.submit(batch::Item::Release(release)).await
    }

    /// Records a denial; an authentic nonce that came with it is consumed too, so evidence
    /// cannot be retried against it. Committed by the writer with whatever else is queued
    /// ([`batch`]): in a batch with releases, in queue order.
    pub async fn commit_denial(
        &self,
        audit: AuditEntry,
        nonce: Option<(&str, i64)>,
    ) -> Result<AuditRecord, StoreError> {
        let nonce = nonce.map(|(hex, expires_at)| (hex.to_owned(), expires_at));
        Ok(self.submit(batch::Item::Denial(batch::Denial { nonce, audit })).await?.record)
    }

    async fn submit(&self, item: batch::Item) -> Result<Committed, StoreError> {
        let queue =
            self.writer.as_ref().ok_or_else(|| StoreError::BatchFailed("this store has no writer".into()))?;
        batch::submit(queue, item).await
    }

    /// Creates a key at version 1, registered for `model` if given.
    pub async fn create_key(
        &self,
        key_id: &str,
        policy: &str,
        kek_id: &str,
        wrapped: &[u8],
        model: Option<&ModelRow>,
        audit: AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let now = audit.time_ms / 1000;
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
                let exists = sqlx::query("SELECT 1 AS one FROM keys WHERE key_id = $1")
                    .bind(key_id.to_owned())
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_some() {
                    return Err(StoreError::KeyExists(key_id.to_owned()));
                }
                sqlx::query(
                    "INSERT INTO keys (key_id, current_version, revoked, policy, created_at, updated_at) \
                 VALUES ($1, 1, 0, $2, $3, $3)",
                )
                .bind(key_id.to_owned())
                .bind(policy.to_owned())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                insert_version(tx, key_id, 1, kek_id, wrapped, now).await?;
                if let Some(model) = model {
                    insert_model(tx, key_id, 1, model).await?;
                }
                self.append(tx, head, audit).await
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    /// Adds the next version and makes it current, registered for `model` if given. Returns
    /// the new version. With `policy`, the key's release policy must still be that text (the
    /// model was checked under it), else [`StoreError::KeyChanged`] and nothing is written.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate(
        &self,
        key_id: &str,
        expected: Option<u32>,
        kek_id: &str,
        wrap: impl FnOnce(u32) -> Result<Vec<u8>, StoreError>,
        model: Option<&ModelRow>,
        policy: Option<&str>,
        mut audit: AuditEntry,
    ) -> Result<(u32, AuditRecord), StoreError> {
        let now = audit.time_ms / 1000;
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
                let key = live_key(tx, key_id).await?;
                if policy.is_some_and(|p| p != key.policy) {
                    return Err(StoreError::KeyChanged(key_id.to_owned()));
                }
                let next = key.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                if let Some(expected) = expected.filter(|&e| e != next) {
                    return Err(StoreError::VersionMismatch { key_id: key_id.to_owned(), expected, next });
                }
                insert_version(tx, key_id, next, kek_id, &wrap(next)?, now).await?;
                if let Some(model) = model {
                    insert_model(tx, key_id, next, model).await?;
                }
                sqlx::query("UPDATE keys SET current_version = $1, updated_at = $2 WHERE key_id = $3")
                    .bind(i64::from(next))
                    .bind(now)
                    .bind(key_id.to_owned())
                    .execute(&mut **tx)
                    .await?;
                audit.key_version = Some(next);
                Ok::<_, StoreError>((next, self.append(tx, head, audit).await?))
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    /// Revokes the whole key (`version` = None) or one version. Irreversible.
    pub async fn revoke(
        &self,
        key_id: &str,
        version: Option<u32>,
        audit: AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let now = audit.time_ms / 1000;
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
                let key =
                    Self::key_in(tx, key_id).await?.ok_or_else(|| StoreError::UnknownKey(key_id.into()))?;
                match version {
                    None => {
                        sqlx::query("UPDATE keys SET revoked = 1, updated_at = $1 WHERE key_id = $2")
                            .bind(now)
                            .bind(key_id.to_owned())
                            .execute(&mut **tx)
                            .await?;
                    }
                    Some(v) => {
                        key.version(v).ok_or_else(|| StoreError::UnknownVersion {
                            key_id: key_id.into(),
                            version: v,
                        })?;
                        sqlx::query("UPDATE key_versions SET revoked = 1 WHERE key_id = $1 AND version = $2")
                            .bind(key_id.to_owned())
                            .bind(i64::from(v))
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                self.append(tx, head, audit).await
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    /// Re-points the current version to an existing, unrevoked version.
    pub async fn rollback(
        &self,
        key_id: &str,
        version: u32,
        audit: AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let now = audit.time_ms / 1000;
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
                let key = live_key(tx, key_id).await?;
                let v = key
                    .version(version)
                    .ok_or_else(|| StoreError::UnknownVersion { key_id: key_id.into(), version })?;
                if v.revoked {
                    return Err(StoreError::VersionRevoked { key_id: key_id.into(), version });
                }
                sqlx::query("UPDATE keys SET current_version = $1, updated_at = $2 WHERE key_id = $3")
                    .bind(i64::from(version))
                    .bind(now)
                    .bind(key_id.to_owned())
                    .execute(&mut **tx)
                    .await?;
                self.append(tx, head, audit).await
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    pub async fn set_policy(
        &self,
        key_id: &str,
        policy: &str,
        audit: AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let now = audit.time_ms / 1000;
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
                live_key(tx, key_id).await?;
                sqlx::query("UPDATE keys SET policy = $1, updated_at = $2 WHERE key_id = $3")
                    .bind(policy.to_owned())
                    .bind(now)
                    .bind(key_id.to_owned())
                    .execute(&mut **tx)
                    .await?;
                self.append(tx, head, audit).await
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    /// Re-encrypts every data key version with `rewrap` (master-key rotation), in one
    /// transaction, and audits it. Returns how many rows changed.
    pub async fn rewrap(
        &self,
        new_kek_id: &str,
        rewrap: impl Fn(&VersionRow, &str) -> Result<Option<Vec<u8>>, StoreError>,
        audit: AuditEntry,
    ) -> Result<usize, StoreError> {
        {
            let mut w = self.begin_write().await?;
            let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
            let out = async {
            let rows = sqlx::query(
                "SELECT key_id, version, kek_id, wrapped_key, created_at, revoked FROM key_versions \
                 ORDER BY key_id, version",
            )
            .fetch_all(&mut **tx)
            .await?;
            let mut changed = 0;
            for r in &rows {
                let key_id: String = r.try_get("key_id")?;
                let v = version_row(r)?;
                if let Some(wrapped) = rewrap(&v, &key_id)? {
                    sqlx::query(
                        "UPDATE key_versions SET kek_id = $1, wrapped_key = $2 WHERE key_id = $3 AND version = $4",
                    )
                    .bind(new_kek_id.to_owned())
                    .bind(hex::encode(wrapped))
                    .bind(key_id)
                    .bind(i64::from(v.version))
                    .execute(&mut **tx)
                    .await?;
                    changed += 1;
                }
            }
            let mut audit = audit;
            audit.reason = Some(format!("{changed} data key versions re-wrapped under {new_kek_id}"));
            self.append(tx, head, audit).await?;
            Ok::<_, StoreError>(changed)
            }
            .await?;
            w.tx.commit().await?;
            Ok(out)
        }
    }

    /// Imports reference values: inserts `row`, or replaces the row of the same name, and
    /// appends `audit` (whose reason gets the replaced document's digest) in one transaction.
    /// Returns the digest of the document it replaced, if any.
    pub async fn import_reference(
        &self,
        row: &ReferenceRow,
        mut audit: AuditEntry,
    ) -> Result<(Option<[u8; 32]>, AuditRecord), StoreError> {
        let mut w = self.begin_write().await?;
        let (tx, head) = (&mut w.tx, (w.head.clone(), w.log_size));
        let out = async {
            let previous = sqlx::query("SELECT document FROM reference_values WHERE name = $1")
                .bind(row.name.clone())
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.try_get::<String, _>("document").map(|d| document_digest(&d)))
                .transpose()?;
            sqlx::query(
                "INSERT INTO reference_values (name, document, signature, signer, imported_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
                 document = excluded.document, signature = excluded.signature, \
                 signer = excluded.signer, imported_at = excluded.imported_at",
            )
            .bind(row.name.clone())
            .bind(row.document.clone())
            .bind(row.signature.clone())
            .bind(row.signer.clone())
            .bind(row.imported_at)
            .execute(&mut **tx)
            .await?;
            if let (Some(old), Some(reason)) = (previous, audit.reason.as_mut()) {
                reason.push_str(&format!("; replaces document sha256 {}", hex::encode(old)));
            }
            Ok::<_, StoreError>((previous, self.append(tx, head, audit).await?))
        }
        .await?;
        w.tx.commit().await?;
        Ok(out)
    }

    /// The reference values named `names` that exist, in the order of `names` (a missing name
    /// is simply absent from the result).
    pub async fn references(&self, names: &[String]) -> Result<Vec<ReferenceRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let row = sqlx::query(
                "SELECT name, document, signature, signer, imported_at FROM reference_values WHERE name = $1",
            )
            .bind(name.clone())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(r) = row {
                out.push(reference_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Every imported reference-values row, by name.
    pub async fn list_references(&self) -> Result<Vec<ReferenceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, document, signature, signer, imported_at FROM reference_values ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(reference_row).collect()
    }

    /// Audit records with `seq > after`, at most `limit`, in order.
    pub async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        audit_page_in(&mut *self.pool.acquire().await?, after, limit).await
    }

    /// The chain head as the database records it: (seq, hash).
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        head_in(&mut *self.pool.acquire().await?).await
    }

    /// A read-only view of the audit log and its head as of one moment, for checking the chain
    /// against the head: read apart, a write committed between the two reads makes the head
    /// run ahead of the records, a truncation that is not there.
    ///
    /// SQLite (WAL) keeps a read transaction on the snapshot its first read took; PostgreSQL
    /// does so under REPEATABLE READ (its default, READ COMMITTED, takes a new snapshot for
    /// every statement).
    pub async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !self.sqlite {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(AuditSnapshot { tx })
    }

    /// Deletes the nonces that expired more than [`NONCE_GC_MARGIN_SECS`] ago by the
    /// database's clock (a commit refuses them by that clock anyway).
    /// A database from before the log carries its hash chain's head into the log as the first
    /// leaf (`chain_migrated`), once, so the log commits to every record before it too. Records
    /// from before the migration keep their chain; the log covers everything after.
    async fn migrate_chain(&self) -> Result<(), StoreError> {
        let (seq, _) = head_in(&mut *self.pool.acquire().await?).await?;
        if seq == 0 || self.log_size().await? != 0 {
            return Ok(());
        }
        let mut w = self.begin_write().await?;
        if w.log_size != 0 {
            // Another replica migrated first.
            w.tx.rollback().await?;
            return Ok(());
        }
        let audit = AuditEntry {
            time_ms: now_ms(),
            action: "chain_migrated",
            actor: "service".into(),
            allow: true,
            reason: Some(format!("{} audit records before the transparency log", w.head.0 - 1)),
            legacy_chain_head: Some(w.head.1.clone()),
            ..AuditEntry::default()
        };
        let head = (w.head.clone(), w.log_size);
        self.append(&mut w.tx, head, audit).await?;
        w.tx.commit().await?;
        tracing::info!(records = seq, "hash-chained audit log continued in the transparency log");
        Ok(())
    }

    /// The log's public checkpoint key.
    pub fn log_key(&self) -> &nacre_tlog::NoteKey {
        self.log.public()
    }

    /// The number of leaves committed.
    pub async fn log_size(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("SELECT log_size FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
        u64::try_from(r.try_get::<i64, _>("log_size")?)
            .map_err(|_| StoreError::Corrupt("negative log size".into()))
    }

    /// The latest checkpoint note (size, bytes), cosignatures included; None while the log is
    /// empty.
    pub async fn log_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        log::latest_checkpoint(&mut *self.pool.acquire().await?).await
    }

    /// A C2SP hash tile, if the tree of `size` leaves (at most the committed size) holds it.
    pub async fn log_tile(&self, size: u64, tile: nacre_tlog::tree::HashTile) -> Result<Vec<u8>, StoreError> {
        log::tile(&mut *self.pool.acquire().await?, size.min(self.log_size().await?), tile).await
    }

    /// Entries `start..start + count` as a C2SP entry bundle (all committed, or an error).
    pub async fn log_entry_bundle(&self, start: u64, count: u64) -> Result<Vec<u8>, StoreError> {
        if start.saturating_add(count) > self.log_size().await? {
            return Err(StoreError::Log("entries beyond the log's size".into()));
        }
        log::entry_bundle(&mut *self.pool.acquire().await?, start, count).await
    }

    /// The inclusion proof of leaf `index` under the tree of `size` leaves.
    pub async fn log_inclusion(&self, size: u64, index: u64) -> Result<Vec<nacre_tlog::Hash>, StoreError> {
        if size > self.log_size().await? {
            return Err(StoreError::Log(format!("no tree of {size} leaves yet")));
        }
        log::inclusion(&mut *self.pool.acquire().await?, size, index).await
    }

    /// The consistency proof from the tree of `old` leaves to that of `new`.
    pub async fn log_consistency(&self, old: u64, new: u64) -> Result<Vec<nacre_tlog::Hash>, StoreError> {
        if new > self.log_size().await? {
            return Err(StoreError::Log(format!("no tree of {new} leaves yet")));
        }
        log::consistency(&mut *self.pool.acquire().await?, old, new).await
    }

    /// Adds a witness's cosignature `lines` to the checkpoint of `size`, verified against
    /// `witness`; returns how many cosignatures the checkpoint now carries. Replicas and
    /// witnesses add concurrently: a compare-and-swap on the note retries a lost update.
    pub async fn log_add_cosignatures(
        &self,
        size: u64,
        lines: &[u8],
        witness: &nacre_tlog::NoteKey,
    ) -> Result<usize, StoreError> {
        for _ in 0..16 {
            let row = sqlx::query("SELECT note FROM log_checkpoints WHERE size = $1")
                .bind(size as i64)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::Log(format!("no checkpoint of {size} leaves")))?;
            let old: String = row.try_get("note")?;
            let mut opened = nacre_tlog::open_checkpoint(old.as_bytes(), self.log_key(), &[])
                .map_err(|e| StoreError::Corrupt(format!("stored checkpoint {size}: {e}")))?;
            opened
                .add_cosignatures(lines, std::slice::from_ref(witness))
                .map_err(|e| StoreError::Log(e.to_string()))?;
            let note = String::from_utf8(opened.to_bytes())
                .map_err(|_| StoreError::Log("a cosignature is not UTF-8".into()))?;
            let cosigners = log::cosignature_lines(&note);
            let done = sqlx::query(
                "UPDATE log_checkpoints SET note = $1, cosigners = $2 WHERE size = $3 AND note = $4",
            )
            .bind(&note)
            .bind(cosigners as i32)
            .bind(size as i64)
            .bind(&old)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if done == 1 {
                return Ok(cosigners);
            }
        }
        Err(StoreError::Log(format!("checkpoint {size}: too many concurrent cosignature updates")))
    }

    /// The best witnessed checkpoint covering leaf `index` — the most cosignatures, then the
    /// largest — with the leaf's entry and inclusion proof under it (entry, checkpoint,
    /// proof). None while no checkpoint covers it.
    pub async fn log_witnessed(
        &self,
        index: u64,
    ) -> Result<Option<(Vec<u8>, Vec<u8>, Vec<nacre_tlog::Hash>)>, StoreError> {
        let row = sqlx::query(
            "SELECT size, note FROM log_checkpoints WHERE size > $1 ORDER BY cosigners DESC, size DESC LIMIT 1",
        )
        .bind(index as i64)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let size = row.try_get::<i64, _>("size")? as u64;
        let note: String = row.try_get("note")?;
        let entry: String = sqlx::query("SELECT entry FROM log_entries WHERE idx = $1")
            .bind(index as i64)
            .fetch_one(&self.pool)
            .await?
            .try_get("entry")?;
        let proof = log::inclusion(&mut *self.pool.acquire().await?, size, index).await?;
        Ok(Some((entry.into_bytes(), note.into_bytes(), proof)))
    }

    /// The leaf that logs audit record `seq`, if it was logged.
    pub async fn log_leaf_of(&self, seq: i64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT idx, entry FROM log_entries WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get::<i64, _>("idx")? as u64, r.try_get::<String, _>("entry")?.into_bytes())))
            .transpose()
    }

    pub async fn gc_nonces(&self) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM used_nonces WHERE expires_at < {} - $1", self.db_now_sql());
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(NONCE_GC_MARGIN_SECS)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// The audit log and its head as of one moment ([`Store::audit_snapshot`]).
pub struct AuditSnapshot {
    tx: Transaction<'static, Any>,
}

impl core::fmt::Debug for AuditSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuditSnapshot")
    }
}

impl AuditSnapshot {
    /// Records with `seq > after`, at most `limit`, in order, as of the snapshot.
    pub async fn page(&mut self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        audit_page_in(&mut self.tx, after, limit).await
    }

    /// The chain head as of the snapshot.
    pub async fn head(&mut self) -> Result<(i64, String), StoreError> {
        head_in(&mut self.tx).await
    }

    /// Every log leaf as of the snapshot: (index, audit seq, entry bytes), by index.
    pub async fn log_leaves(&mut self) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT idx, seq, entry FROM log_entries ORDER BY idx")
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get("idx")?, r.try_get("seq")?, r.try_get::<String, _>("entry")?.into_bytes()))
            })
            .collect()
    }

    /// The latest checkpoint stored, as of the snapshot.
    pub async fn log_checkpoint(&mut self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        log::latest_checkpoint(&mut self.tx).await
    }

    /// Every record and the head, as of the snapshot; ends it.
    pub async fn read_all(mut self) -> Result<(Vec<AuditRecord>, (i64, String)), StoreError> {
        let mut all: Vec<AuditRecord> = Vec::new();
        loop {
            let page = self.page(all.last().map_or(0, |r| r.seq), 10_000).await?;
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        let head = self.head().await?;
        self.tx.rollback().await?;
        Ok((all, head))
    }
}

async fn head_in(conn: &mut sqlx::AnyConnection) -> Result<(i64, String), StoreError> {
    let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(conn).await?;
    Ok((r.try_get("seq")?, r.try_get("hash")?))
}

async fn audit_page_in(
    conn: &mut sqlx::AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, time_ms, action, actor, key_id, key_version, decision, reason, tee, measurement, \
         chip_id, source, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(audit_record).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `entry` as the record at `seq`. Records are no longer hash-chained: the transparency log
/// commits to them (their `prev_hash` and `hash` are empty; only pre-log records carry them).
fn new_record(entry: AuditEntry, seq: i64) -> AuditRecord {
    AuditRecord {
        seq,
        time_ms: entry.time_ms,
        action: entry.action.to_owned(),
        actor: entry.actor,
        key_id: entry.key_id,
        key_version: entry.key_version.map(i64::from),
        decision: if entry.allow { "allow" } else { "deny" }.to_owned(),
        reason: entry.reason,
        tee: entry.tee,
        measurement: entry.measurement,
        chip_id: entry.chip_id,
        source: entry.source,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

async fn live_key(tx: &mut Transaction<'static, Any>, key_id: &str) -> Result<KeyRow, StoreError> {
    let key = Store::key_in(tx, key_id).await?.ok_or_else(|| StoreError::UnknownKey(key_id.into()))?;
    if key.revoked {
        return Err(StoreError::KeyRevoked(key_id.into()));
    }
    Ok(key)
}

async fn insert_version(
    tx: &mut Transaction<'static, Any>,
    key_id: &str,
    version: u32,
    kek_id: &str,
    wrapped: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO key_versions (key_id, version, kek_id, wrapped_key, created_at, revoked) \
         VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(key_id.to_owned())
    .bind(i64::from(version))
    .bind(kek_id.to_owned())
    .bind(hex::encode(wrapped))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A version row, with its model when `with_model` (the query selected [`MODEL_COLUMNS`]).
fn version_row_of(r: &AnyRow, with_model: bool) -> Result<VersionRow, StoreError> {
    Ok(VersionRow {
        version: u32_of(r.try_get("version")?, "version")?,
        kek_id: r.try_get("kek_id")?,
        wrapped_key: hex_of(&r.try_get::<String, _>("wrapped_key")?, "wrapped_key")?,
        created_at: r.try_get("created_at")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        model: if with_model { model_row(r)? } else { None },
    })
}

fn version_row(r: &AnyRow) -> Result<VersionRow, StoreError> {
    version_row_of(r, false)
}

/// The `model_registrations` columns a version query selects (as `m_…`, NULL without a model).
const MODEL_COLUMNS: &str = "m.model_identity AS m_identity, m.signature_bundle AS m_bundle, \
     m.registered_at AS m_registered_at, m.signer AS m_signer, m.certificate_subject AS m_subject, \
     m.certificate_issuer AS m_issuer, m.manifest AS m_manifest, m.subject_digest AS m_subject_digest, \
     m.file_sha256 AS m_file_sha256, m.checked_at AS m_checked_at";

fn digest_of(text: &str, what: &str) -> Result<[u8; 32], StoreError> {
    hex_of(text, what)?.try_into().map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

fn model_row(r: &AnyRow) -> Result<Option<ModelRow>, StoreError> {
    let Some(identity) = r.try_get::<Option<String>, _>("m_identity")? else { return Ok(None) };
    let identity = digest_of(&identity, "model_identity")?;
    let registered_at: i64 = r.try_get("m_registered_at")?;
    let signature = match r.try_get::<Option<String>, _>("m_signer")? {
        None => None,
        Some(signer) => {
            let text = |c: &str| r.try_get::<Option<String>, _>(c);
            let manifest = match text("m_manifest")?.as_deref() {
                Some("shards") => SignedManifest::Shards,
                Some("whole_file") => SignedManifest::WholeFile,
                other => return Err(StoreError::Corrupt(format!("model manifest {other:?}"))),
            };
            let subject_digest = text("m_subject_digest")?
                .ok_or_else(|| StoreError::Corrupt("model subject_digest is NULL".into()))?;
            Some(ModelSignature {
                signer,
                certificate_subject: text("m_subject")?,
                certificate_issuer: text("m_issuer")?,
                model_identity: Sha256(identity),
                manifest,
                subject_digest: Sha256(digest_of(&subject_digest, "subject_digest")?),
                file_sha256: text("m_file_sha256")?
                    .map(|d| digest_of(&d, "file_sha256").map(Sha256))
                    .transpose()?,
                checked_at: r.try_get::<Option<i64>, _>("m_checked_at")?.unwrap_or(registered_at),
            })
        }
    };
    Ok(Some(ModelRow { identity, bundle: r.try_get("m_bundle")?, registered_at, signature }))
}

async fn insert_model(
    tx: &mut Transaction<'static, Any>,
    key_id: &str,
    version: u32,
    m: &ModelRow,
) -> Result<(), StoreError> {
    let s = m.signature.as_ref();
    let hex_of_buf = |b: &Sha256| hex::encode(b.0);
    sqlx::query(
        "INSERT INTO model_registrations (key_id, version, model_identity, signature_bundle, registered_at, \
         signer, certificate_subject, certificate_issuer, manifest, subject_digest, file_sha256, checked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(key_id.to_owned())
    .bind(i64::from(version))
    .bind(hex::encode(m.identity))
    .bind(m.bundle.clone())
    .bind(m.registered_at)
    .bind(s.map(|s| s.signer.clone()))
    .bind(s.and_then(|s| s.certificate_subject.clone()))
    .bind(s.and_then(|s| s.certificate_issuer.clone()))
    .bind(s.map(|s| s.manifest.as_str().to_owned()))
    .bind(s.map(|s| hex_of_buf(&s.subject_digest)))
    .bind(s.and_then(|s| s.file_sha256.as_ref().map(hex_of_buf)))
    .bind(s.map(|s| s.checked_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn reference_row(r: &AnyRow) -> Result<ReferenceRow, StoreError> {
    Ok(ReferenceRow {
        name: r.try_get("name")?,
        document: r.try_get("document")?,
        signature: r.try_get("signature")?,
        signer: r.try_get("signer")?,
        imported_at: r.try_get("imported_at")?,
    })
}

fn audit_record(r: &AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        time_ms: r.try_get("time_ms")?,
        action: r.try_get("action")?,
        actor: r.try_get("actor")?,
        key_id: r.try_get("key_id")?,
        key_version: r.try_get("key_version")?,
        decision: r.try_get("decision")?,
        reason: r.try_get("reason")?,
        tee: r.try_get("tee")?,
        measurement: r.try_get("measurement")?,
        chip_id: r.try_get("chip_id")?,
        source: r.try_get("source")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// A break in the audit chain, naming the record where it shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record seq {seq}: its hash does not match its contents (edited)")]
    Edited { seq: i64 },
    #[error(
        "record seq {seq}: expected seq {expected} (a record was deleted, inserted or reordered before it)"
    )]
    Sequence { seq: i64, expected: i64 },
    #[error(
        "record seq {seq}: prev_hash does not link to the record before it (deleted, inserted or reordered)"
    )]
    Link { seq: i64 },
    #[error("the chain ends at seq {last} but the head says {head_seq} (records deleted at the end)")]
    Truncated { last: i64, head_seq: i64 },
    #[error("the last record's hash differs from the head's hash")]
    HeadMismatch,
}

/// Verifies the hash chain of the records written before the transparency log: a chained
/// prefix from the first record, then only unchained records (the log covers those); every seq
/// in order. With `head`, also that the chain's end is the head's (frozen) hash and the last
/// seq the head's. Returns how many records are chained.
pub fn verify_legacy_chain(records: &[AuditRecord], head: Option<(i64, &str)>) -> Result<usize, ChainBreak> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut chained = 0;
    for (i, r) in records.iter().enumerate() {
        let expected = i as i64 + 1;
        if r.seq != expected {
            return Err(ChainBreak::Sequence { seq: r.seq, expected });
        }
        if r.hash.is_empty() && r.prev_hash.is_empty() {
            continue;
        }
        if chained != i {
            // A chained record after an unchained one: written into the log's era by hand.
            return Err(ChainBreak::Link { seq: r.seq });
        }
        if r.compute_hash() != r.hash {
            return Err(ChainBreak::Edited { seq: r.seq });
        }
        if r.prev_hash != prev {
            return Err(ChainBreak::Link { seq: r.seq });
        }
        prev = r.hash.clone();
        chained += 1;
    }
    if let Some((head_seq, head_hash)) = head {
        let last = records.len() as i64;
        if last != head_seq {
            return Err(ChainBreak::Truncated { last, head_seq });
        }
        if prev != head_hash {
            return Err(ChainBreak::HeadMismatch);
        }
    }
    Ok(chained)
}
