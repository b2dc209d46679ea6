//! The transparency log inside the store (issue 20): every write transaction that appends
//! loggable audit records also appends their public entries as leaves, stores the hashes the
//! tree gains, and signs one checkpoint for the new size, all before it commits.
//!
//! What is logged: releases, denials of authentic evidence (the denial has a measurement), and
//! every admin action. A denial whose evidence never verified is counted, not logged, so that
//! nobody can spam a public log.
//!
//! Hashes are read in two passes: a pass over an in-memory view records which stored hashes a
//! computation needs (the indexes depend on sizes only), one query fetches them, and the second
//! pass computes. Appends need only the old tree's right edge (≤ 64 hashes).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use nacre_tlog::tree::{self, Hash, HashReader, HashStore, TreeError};
use nacre_tlog::{Action, Entry, NoteSigner, sign_checkpoint};
use sqlx::{AnyConnection, Row};
use zeroize::Zeroizing;

use super::{AuditEntry, StoreError};

/// The log's keys: the checkpoint signer, and the key chip ids are hashed under.
pub struct LogKeys {
    signer: NoteSigner,
    chip_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeys").field("signer", &self.signer).finish_non_exhaustive()
    }
}

impl LogKeys {
    /// The log's keys from its 32-byte seed: the checkpoint key under `origin`, and a chip-id
    /// hashing key derived from the same seed (so chip hashes link entries of one log only).
    pub fn from_seed(origin: &str, seed: &[u8; 32]) -> Result<Self, StoreError> {
        let signer = NoteSigner::from_seed(origin, nacre_tlog::KeyKind::Checkpoint, seed)
            .map_err(|e| StoreError::Log(e.to_string()))?;
        let chip_key = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, seed),
            b"nacre/v1/log/chip-id",
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(chip_key.as_ref());
        Ok(Self { signer, chip_key: key })
    }

    pub fn public(&self) -> &nacre_tlog::NoteKey {
        self.signer.public()
    }

    fn chip_hmac(&self, chip_id: &str) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &*self.chip_key);
        hex::encode(aws_lc_rs::hmac::sign(&key, chip_id.as_bytes()))
    }

    /// The public entry for an audit record, or None if it is not logged (a denial of evidence
    /// that never verified). Fields that would make an invalid entry are dropped, never allowed
    /// to fail the write they come with.
    pub(super) fn entry_of(&self, audit: &AuditEntry) -> Option<Entry> {
        let action = Action::parse(audit.action)?;
        if action == Action::Deny && audit.measurement.is_none() {
            return None;
        }
        let hex_or_none = |v: &Option<String>, max: usize| {
            v.as_ref()
                .filter(|s| s.len() <= max && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .filter(|s| s.len() % 2 == 0)
                .cloned()
        };
        let entry = Entry {
            v: nacre_tlog::entry::ENTRY_VERSION,
            time_ms: audit.time_ms,
            action,
            actor: truncated(&audit.actor, 128),
            key_id: audit.key_id.as_deref().map(|k| truncated(k, 128)),
            key_version: audit.key_version.map(i64::from),
            decision: if audit.allow { "allow" } else { "deny" }.to_owned(),
            reason: audit.reason.as_deref().map(|r| public_reason(audit.allow, r)),
            tee: audit.tee.as_deref().map(|t| truncated(t, 16)),
            measurement: hex_or_none(&audit.measurement, 192),
            chip_id_hmac: audit.chip_id.as_deref().map(|c| self.chip_hmac(c)),
            policy_sha256: hex_or_none(&audit.policy_sha256, 64),
            reference_values_sha256: hex_or_none(&audit.reference_values_sha256, 64),
            release_key_sha256: hex_or_none(&audit.release_key_sha256, 64),
            legacy_chain_head: hex_or_none(&audit.legacy_chain_head, 64),
            reference_measurements: audit.reference_measurements.clone(),
        };
        // An entry that would not encode (a reference document past the size bound, a field
        // off its format) is logged without what made it fail, never dropped.
        if entry.encode().is_err() {
            tracing::warn!(
                action = audit.action,
                "log entry over its bounds: logged without the reference list"
            );
            return Some(Entry { reference_measurements: None, ..entry });
        }
        Some(entry)
    }
}

impl LogKeys {
    /// Whether `record` must have a leaf (see [`Self::entry_of`]).
    pub fn logs(record: &nacre_protocol::messages::AuditRecord) -> bool {
        match Action::parse(&record.action) {
            Some(Action::Deny) => record.measurement.is_some(),
            Some(_) => true,
            None => false,
        }
    }

    /// The first field in which the logged `entry` disagrees with the audit `record` it was
    /// written with, if any: what an edit of either leaves behind.
    pub fn disagreement(
        &self,
        record: &nacre_protocol::messages::AuditRecord,
        entry: &Entry,
    ) -> Option<&'static str> {
        disagreement(Some(self), record, entry)
    }
}

/// [`LogKeys::disagreement`]; without the log's keys (an auditor holding an export and the
/// public log) the chip id, which the log keeps only as a keyed hash, is not compared.
pub fn disagreement(
    keys: Option<&LogKeys>,
    record: &nacre_protocol::messages::AuditRecord,
    entry: &Entry,
) -> Option<&'static str> {
    let allow = record.decision == "allow";
    let checks: [(&'static str, bool); 10] = [
        ("time", entry.time_ms == record.time_ms),
        ("action", entry.action.as_str() == record.action),
        ("actor", entry.actor == truncated(&record.actor, 128)),
        ("key id", entry.key_id == record.key_id.as_deref().map(|k| truncated(k, 128))),
        ("key version", entry.key_version == record.key_version),
        ("decision", entry.decision == record.decision),
        ("reason", entry.reason == record.reason.as_deref().map(|r| public_reason(allow, r))),
        ("tee", entry.tee == record.tee.as_deref().map(|t| truncated(t, 16))),
        ("measurement", entry.measurement == record.measurement),
        (
            "chip id",
            keys.is_none_or(|k| entry.chip_id_hmac == record.chip_id.as_deref().map(|c| k.chip_hmac(c))),
        ),
    ];
    checks.into_iter().find(|(_, ok)| !ok).map(|(field, _)| field)
}

impl LogKeys {
    /// Whether `entry` logs `record`: every field it keeps agrees (the seq is not among them).
    pub fn agrees(&self, record: &nacre_protocol::messages::AuditRecord, entry: &Entry) -> bool {
        self.disagreement(record, entry).is_none()
    }
}

/// A refusal's reason in the audit record is `<code>[/<check>]: <details>`; the details (expected
/// measurements, bindings, versions) are for the auditor, as they are kept from unauthenticated
/// callers, so a public entry keeps the code and check only. An allowed action's reason (the
/// model's signer, an import's digest and counts) is public.
fn public_reason(allow: bool, reason: &str) -> String {
    if allow {
        return truncated(reason, 512);
    }
    let code = reason.split(':').next().unwrap_or_default();
    truncated(code.split_whitespace().next().unwrap_or_default(), 64)
}

fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The stored hashes a computation has: fetched ones and those the transaction adds.
#[derive(Default)]
struct View {
    size: u64,
    known: BTreeMap<u64, Hash>,
    missing: RefCell<BTreeSet<u64>>,
}

impl HashReader for View {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
        // Unknown hashes are recorded and read as zeros: the first pass only learns which.
        Ok(indexes
            .iter()
            .map(|i| {
                self.known.get(i).copied().unwrap_or_else(|| {
                    self.missing.borrow_mut().insert(*i);
                    Hash([0; 32])
                })
            })
            .collect())
    }
}

impl HashStore for View {
    fn size(&self) -> u64 {
        self.size
    }
}

impl View {
    /// Runs `f` twice: once to learn the hashes it needs, then with them fetched.
    async fn run<T>(
        &mut self,
        conn: &mut AnyConnection,
        f: impl Fn(&View) -> Result<T, nacre_tlog::TlogError>,
    ) -> Result<T, StoreError> {
        let first = f(self);
        let missing: Vec<u64> = std::mem::take(&mut *self.missing.borrow_mut()).into_iter().collect();
        if missing.is_empty() {
            return first.map_err(log_error);
        }
        self.fetch(conn, &missing).await?;
        let second = f(self).map_err(log_error)?;
        if !self.missing.borrow().is_empty() {
            return Err(StoreError::Corrupt("the log is missing stored hashes".into()));
        }
        Ok(second)
    }

    async fn fetch(&mut self, conn: &mut AnyConnection, indexes: &[u64]) -> Result<(), StoreError> {
        for chunk in indexes.chunks(super::batch::MAX_PARAMS) {
            let list = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!("SELECT idx, hash FROM log_hashes WHERE idx IN ({list})");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in chunk {
                q = q.bind(i64::try_from(*i).map_err(|_| StoreError::Corrupt("hash index".into()))?);
            }
            for row in q.fetch_all(&mut *conn).await? {
                let idx: i64 = row.try_get("idx")?;
                let hash = parse_hash(&row.try_get::<String, _>("hash")?)?;
                self.known.insert(idx as u64, hash);
            }
        }
        Ok(())
    }
}

fn parse_hash(hex_text: &str) -> Result<Hash, StoreError> {
    let raw =
        hex::decode(hex_text).map_err(|_| StoreError::Corrupt("a stored log hash is not hex".into()))?;
    Ok(Hash(raw.try_into().map_err(|_| StoreError::Corrupt("a stored log hash is not 32 bytes".into()))?))
}

fn log_error(e: nacre_tlog::TlogError) -> StoreError {
    StoreError::Log(e.to_string())
}

/// A leaf appended in a transaction, with its proof under the checkpoint signed for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    pub index: u64,
    /// The audit record it logs.
    pub seq: i64,
    /// The entry's canonical bytes.
    pub entry: Vec<u8>,
    /// Inclusion proof under `checkpoint`.
    pub inclusion: Vec<Hash>,
    /// The checkpoint signed for the transaction's tree.
    pub checkpoint: std::sync::Arc<Vec<u8>>,
}

/// Appends `entries` (with the audit seqs they log) after the `size` leaves the head says the
/// tree has, inside the caller's write transaction; signs a checkpoint for the new size and
/// advances the head's size. Returns the leaves and the new size.
pub(super) async fn append(
    conn: &mut AnyConnection,
    keys: &LogKeys,
    size: u64,
    entries: Vec<(i64, Entry)>,
    now_ms: i64,
) -> Result<(Vec<Leaf>, u64), StoreError> {
    if entries.is_empty() {
        return Ok((Vec::new(), size));
    }
    let mut view = View { size, ..View::default() };
    // The old tree's right edge: every hash an append reads.
    let edge = sub_tree_edge(size);
    view.fetch(conn, &edge).await?;
    let mut rows_entries = Vec::with_capacity(entries.len());
    let mut rows_hashes = Vec::with_capacity(entries.len() * 2);
    let mut appended = Vec::with_capacity(entries.len());
    for (seq, entry) in entries {
        let bytes = entry.encode().map_err(log_error)?;
        let index = view.size;
        let new = tree::new_stored_hashes(&view, tree::leaf_hash(&bytes)).map_err(log_error)?;
        if !view.missing.borrow().is_empty() {
            return Err(StoreError::Corrupt("the log's right edge is missing stored hashes".into()));
        }
        let first = tree::stored_hash_count(index);
        for (k, h) in new.into_iter().enumerate() {
            view.known.insert(first + k as u64, h);
            rows_hashes.push((first + k as u64, h));
        }
        view.size += 1;
        appended.push((index, seq));
        rows_entries.push((index, seq, bytes));
    }
    let new_size = view.size;
    let root = view.run(conn, |v| tree::root(v, new_size)).await?;
    let note = sign_checkpoint(&keys.signer, new_size, root).map_err(log_error)?;
    let checkpoint = std::sync::Arc::new(note.clone());
    let mut leaves = Vec::with_capacity(appended.len());
    for (k, (index, seq)) in appended.into_iter().enumerate() {
        // The new leaves' siblings are the old right edge and this batch's hashes: in the view.
        let inclusion = view.run(conn, |v| tree::prove_inclusion(v, new_size, index)).await?;
        let entry = rows_entries[k].2.clone();
        leaves.push(Leaf { index, seq, entry, inclusion, checkpoint: checkpoint.clone() });
    }

    insert_rows(conn, "log_entries (idx, seq, entry)", 3, &rows_entries, |q, (idx, seq, bytes)| {
        q.bind(*idx as i64).bind(*seq).bind(String::from_utf8_lossy(bytes).into_owned())
    })
    .await?;
    insert_rows(conn, "log_hashes (idx, hash)", 2, &rows_hashes, |q, (idx, h)| {
        q.bind(*idx as i64).bind(hex::encode(h.0))
    })
    .await?;
    sqlx::query("INSERT INTO log_checkpoints (size, root, note, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(new_size as i64)
        .bind(hex::encode(root.0))
        .bind(String::from_utf8(note).map_err(|_| StoreError::Log("checkpoint is not UTF-8".into()))?)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE audit_head SET log_size = $1 WHERE id = 1")
        .bind(new_size as i64)
        .execute(&mut *conn)
        .await?;
    Ok((leaves, new_size))
}

/// The stored-hash indexes of the complete subtrees that make up a tree of `size` leaves.
fn sub_tree_edge(size: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            out.push(tree::stored_hash_index(level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

async fn insert_rows<T>(
    conn: &mut AnyConnection,
    table: &str,
    columns: usize,
    rows: &[T],
    bind: impl for<'q> Fn(Query<'q>, &'q T) -> Query<'q>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(super::batch::MAX_PARAMS / columns) {
        let sql = format!("INSERT INTO {table} VALUES {}", super::batch::placeholders(chunk.len(), columns));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The latest signed checkpoint (with its cosignatures), if the log has any leaf.
pub(super) async fn latest_checkpoint(
    conn: &mut AnyConnection,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let row = sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((r.try_get::<i64, _>("size")? as u64, r.try_get::<String, _>("note")?.into_bytes())))
        .transpose()
}

/// How many cosignatures a stored checkpoint note carries: its signature lines but the log's.
pub(super) fn cosignature_lines(note: &str) -> usize {
    let sigs = note.split_once("\n\n").map_or("", |(_, s)| s);
    sigs.lines().filter(|l| l.starts_with("\u{2014} ")).count().saturating_sub(1)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub(super) async fn inclusion(
    conn: &mut AnyConnection,
    size: u64,
    index: u64,
) -> Result<Vec<Hash>, StoreError> {
    View { size, ..View::default() }.run(conn, |v| tree::prove_inclusion(v, size, index)).await
}

/// The consistency proof from `old` to `new` leaves.
pub(super) async fn consistency(
    conn: &mut AnyConnection,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, StoreError> {
    View { size: new, ..View::default() }.run(conn, |v| tree::prove_consistency(v, old, new)).await
}

/// A hash tile's bytes under the tree of `size` leaves.
pub(super) async fn tile(
    conn: &mut AnyConnection,
    size: u64,
    tile: tree::HashTile,
) -> Result<Vec<u8>, StoreError> {
    View { size, ..View::default() }.run(conn, |v| tile.read(v, size)).await
}

/// C2SP entry bundle `tile/entries/<N>[.p/<W>]`: entries `N*256 ..` as u16-length-prefixed bytes.
pub(super) async fn entry_bundle(
    conn: &mut AnyConnection,
    start: u64,
    count: u64,
) -> Result<Vec<u8>, StoreError> {
    let rows = sqlx::query("SELECT idx, entry FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
        .bind(start as i64)
        .bind((start + count) as i64)
        .fetch_all(conn)
        .await?;
    if rows.len() as u64 != count {
        return Err(StoreError::Corrupt(format!(
            "log entries {start}..{} are not all stored",
            start + count
        )));
    }
    let mut out = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        if row.try_get::<i64, _>("idx")? as u64 != start + k as u64 {
            return Err(StoreError::Corrupt("log entries out of order".into()));
        }
        let entry: String = row.try_get("entry")?;
        let len =
            u16::try_from(entry.len()).map_err(|_| StoreError::Corrupt("a log entry over 64 KiB".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry.as_bytes());
    }
    Ok(out)
}
