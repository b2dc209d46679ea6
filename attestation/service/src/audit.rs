//! `nacre audit verify` (issue 20): the audit table checked against the transparency log, and
//! the log against a witnessed checkpoint kept outside the database (by `nacre audit monitor`
//! or any tlog client). Someone who can write the database — and even sign with the log key —
//! can rewrite records, leaves, hashes and checkpoints consistently with each other, but not
//! make a witness cosign the rewritten tree: against a checkpoint the witnesses cosigned,
//! deleting the tail, editing, inserting, deleting or reordering records is each found and
//! named.

use std::collections::{HashMap, HashSet};

use nacre_protocol::messages::AuditRecord;
use nacre_tlog::tree::HashStore as _;
use nacre_tlog::{Entry, MemoryTree, OpenedCheckpoint};

use crate::store::{LogKeys, disagreement};

/// One thing wrong, named.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    #[error("tail deleted: the database holds {have} leaves, the witnessed checkpoint {witnessed}")]
    TailDeleted { have: u64, witnessed: u64 },
    #[error("leaf {idx} is missing (leaves around it remain): a deleted record")]
    LeafMissing { idx: u64 },
    #[error("leaf {idx} logs record {seq}, which comes before the previous leaf's: leaves reordered")]
    LeavesReordered { idx: u64, seq: i64 },
    #[error(
        "the first {size} leaves do not hash to the witnessed root: leaves edited, inserted, deleted or reordered (and the tree rebuilt)"
    )]
    RootMismatch { size: u64 },
    #[error("leaf {idx} is not a valid entry: {why}")]
    LeafUnreadable { idx: u64, why: String },
    #[error("record {seq} was edited: its {field} differs from leaf {idx}, which logged it")]
    RecordEdited { seq: i64, idx: u64, field: &'static str },
    #[error("record {seq} was deleted: leaf {idx} logged it")]
    RecordDeleted { seq: i64, idx: u64 },
    #[error("record {seq} was inserted: no leaf logged it")]
    RecordInserted { seq: i64 },
    #[error("records reordered: record {seq} is what leaf {idx} logged as record {logged_as}")]
    RecordsReordered { seq: i64, idx: u64, logged_as: i64 },
    #[error("the database's latest checkpoint: {0}")]
    StoredCheckpoint(String),
    #[error("leaf {idx} logs a record the export lacks (deleted)")]
    LeafUnmatched { idx: u64 },
    #[error("the records from before the log: {0}")]
    LegacyChain(String),
}

/// What was checked, and what was found.
#[derive(Debug)]
pub struct LogAudit {
    pub records: usize,
    pub leaves: u64,
    /// The checkpoint the log was checked against: size, and the witnesses that cosigned it.
    pub anchor: Option<(u64, Vec<String>)>,
    pub findings: Vec<Finding>,
}

/// Identifies a record by what a leaf keeps of it (for naming a reordering).
type Fingerprint = (i64, String, Option<String>, Option<i64>, String, Option<String>);

fn fingerprint_of_entry(e: &Entry) -> Fingerprint {
    (
        e.time_ms,
        e.action.as_str().to_owned(),
        e.key_id.clone(),
        e.key_version,
        e.decision.clone(),
        e.measurement.clone(),
    )
}

fn fingerprint_of_record(r: &AuditRecord) -> Fingerprint {
    (r.time_ms, r.action.clone(), r.key_id.clone(), r.key_version, r.decision.clone(), r.measurement.clone())
}

/// Checks `records` and `leaves` (read in one snapshot) against each other and against
/// `anchor`, a checkpoint whose signatures the caller verified; `stored` is the database's
/// latest checkpoint, checked against its own leaves.
pub fn audit_log(
    keys: &LogKeys,
    records: &[AuditRecord],
    leaves: &[(i64, i64, Vec<u8>)],
    anchor: Option<&OpenedCheckpoint>,
    stored: Option<&OpenedCheckpoint>,
) -> LogAudit {
    let mut findings = Vec::new();
    let mut tree = MemoryTree::default();
    let mut by_seq: HashMap<i64, (u64, Entry)> = HashMap::new();
    let mut by_print: HashMap<Fingerprint, Vec<(u64, i64)>> = HashMap::new();
    let mut last_seq = i64::MIN;
    let mut expected_idx = 0u64;
    for (idx, seq, bytes) in leaves {
        let idx = *idx as u64;
        while expected_idx < idx {
            findings.push(Finding::LeafMissing { idx: expected_idx });
            expected_idx += 1;
        }
        expected_idx = idx + 1;
        if *seq <= last_seq {
            findings.push(Finding::LeavesReordered { idx, seq: *seq });
        }
        last_seq = last_seq.max(*seq);
        if let Err(e) = tree.append(bytes) {
            findings.push(Finding::LeafUnreadable { idx, why: e.to_string() });
        }
        match Entry::decode(bytes) {
            Ok(entry) => {
                by_print.entry(fingerprint_of_entry(&entry)).or_default().push((idx, *seq));
                by_seq.insert(*seq, (idx, entry));
            }
            Err(e) => findings.push(Finding::LeafUnreadable { idx, why: e.to_string() }),
        }
    }
    let have = tree.size();
    let gaps = findings.iter().any(|f| matches!(f, Finding::LeafMissing { .. }));
    let root_at = |size: u64| (size <= have).then(|| nacre_tlog::tree::root(&tree, size).ok()).flatten();

    // With a leaf missing the tree cannot be rebuilt: the gap is the finding.
    if let Some(a) = anchor.filter(|_| !gaps) {
        if have < a.size() {
            findings.push(Finding::TailDeleted { have, witnessed: a.size() });
        } else if root_at(a.size()) != Some(a.root()) {
            findings.push(Finding::RootMismatch { size: a.size() });
        }
    }
    if let Some(s) = stored.filter(|_| !gaps)
        && (s.size() != have || root_at(s.size()) != Some(s.root()))
    {
        findings.push(Finding::StoredCheckpoint(format!(
            "it names {} leaves and another root than the {have} leaves stored",
            s.size()
        )));
    }

    // Records: those from before the log (a migrated database) are covered by the
    // chain_migrated leaf's commitment to the old chain's head; every later one is logged.
    // Each is matched to its leaf by seq, or, if renumbered or moved, by what the leaf keeps
    // of it; leaves no record matches are deleted records.
    let first_logged = leaves.first().map_or(i64::MAX, |(_, seq, _)| *seq);
    let mut matched: HashSet<i64> = HashSet::new();
    let mut moved: Vec<(i64, u64, i64)> = Vec::new();
    for r in records.iter().filter(|r| r.seq >= first_logged) {
        if let Some((idx, entry)) = by_seq.get(&r.seq)
            && !matched.contains(&r.seq)
            && keys.disagreement(r, entry).is_none()
        {
            matched.insert(r.seq);
            moved.push((r.seq, *idx, r.seq));
            continue;
        }
        let elsewhere = by_print.get(&fingerprint_of_record(r)).and_then(|candidates| {
            candidates.iter().find(|(_, logged)| {
                !matched.contains(logged) && by_seq.get(logged).is_some_and(|(_, e)| keys.agrees(r, e))
            })
        });
        match (elsewhere, by_seq.get(&r.seq)) {
            (Some((idx, logged)), _) => {
                matched.insert(*logged);
                moved.push((r.seq, *idx, *logged));
            }
            (None, Some((idx, entry))) if !matched.contains(&r.seq) => {
                matched.insert(r.seq);
                let field = keys.disagreement(r, entry).unwrap_or("content");
                findings.push(Finding::RecordEdited { seq: r.seq, idx: *idx, field });
            }
            (None, _) if LogKeys::logs(r) => findings.push(Finding::RecordInserted { seq: r.seq }),
            (None, _) => {}
        }
    }
    // Renumbering around a deletion or insertion keeps the logged order; a move breaks it.
    if moved.windows(2).any(|w| w[1].2 < w[0].2) {
        for (seq, idx, logged_as) in moved.iter().filter(|(seq, _, logged)| seq != logged) {
            findings.push(Finding::RecordsReordered { seq: *seq, idx: *idx, logged_as: *logged_as });
        }
    }
    let mut deleted: Vec<(i64, u64)> =
        by_seq.iter().filter(|(seq, _)| !matched.contains(seq)).map(|(seq, (idx, _))| (*seq, *idx)).collect();
    deleted.sort_unstable();
    findings.extend(deleted.into_iter().map(|(seq, idx)| Finding::RecordDeleted { seq, idx }));

    LogAudit {
        records: records.len(),
        leaves: have,
        anchor: anchor.map(|a| (a.size(), a.cosigned().keys().cloned().collect())),
        findings,
    }
}

/// Checks an export (records, in order) against the public log: `entries`, every leaf of the
/// tree `latest` names (its signatures verified by the caller), and `anchor` as in
/// [`audit_log`]. Without the seq on public leaves, records and leaves are paired in order;
/// a deleted, inserted or swapped record shows as a step out of that pairing.
pub fn audit_export(
    records: &[AuditRecord],
    entries: &[Vec<u8>],
    latest: &OpenedCheckpoint,
    anchor: Option<&OpenedCheckpoint>,
) -> LogAudit {
    let mut findings = Vec::new();
    let mut tree = MemoryTree::default();
    let mut decoded = Vec::with_capacity(entries.len());
    for (idx, bytes) in entries.iter().enumerate() {
        if let Err(e) = tree.append(bytes) {
            findings.push(Finding::LeafUnreadable { idx: idx as u64, why: e.to_string() });
        }
        match Entry::decode(bytes) {
            Ok(e) => decoded.push(e),
            Err(e) => findings.push(Finding::LeafUnreadable { idx: idx as u64, why: e.to_string() }),
        }
    }
    let have = tree.size();
    let root_at = |size: u64| (size <= have).then(|| nacre_tlog::tree::root(&tree, size).ok()).flatten();
    if latest.size() != have || root_at(have) != Some(latest.root()) {
        findings.push(Finding::StoredCheckpoint(format!(
            "the served entries do not hash to the log's checkpoint of {} leaves",
            latest.size()
        )));
    }
    if let Some(a) = anchor {
        if have < a.size() {
            findings.push(Finding::TailDeleted { have, witnessed: a.size() });
        } else if root_at(a.size()) != Some(a.root()) {
            findings.push(Finding::RootMismatch { size: a.size() });
        }
    }
    if decoded.len() == entries.len() {
        // Records of the log's era: all of them, or from the migration's record on.
        let start = records.iter().position(|r| r.action == "chain_migrated").unwrap_or(0);
        let logged: Vec<&AuditRecord> = records[start..].iter().filter(|r| LogKeys::logs(r)).collect();
        let agree = |r: &AuditRecord, e: &Entry| disagreement(None, r, e).is_none();
        let (mut i, mut k) = (0, 0);
        while i < logged.len() && k < decoded.len() {
            let (r, e) = (logged[i], &decoded[k]);
            if agree(r, e) {
                (i, k) = (i + 1, k + 1);
            } else if logged.get(i + 1).is_some_and(|n| agree(n, e))
                && decoded.get(k + 1).is_some_and(|n| agree(r, n))
            {
                findings.push(Finding::RecordsReordered {
                    seq: r.seq,
                    idx: k as u64 + 1,
                    logged_as: logged[i + 1].seq,
                });
                (i, k) = (i + 2, k + 2);
            } else if decoded.get(k + 1).is_some_and(|n| agree(r, n)) {
                findings.push(Finding::LeafUnmatched { idx: k as u64 });
                k += 1;
            } else if logged.get(i + 1).is_some_and(|n| agree(n, e)) {
                findings.push(Finding::RecordInserted { seq: r.seq });
                i += 1;
            } else {
                let field = disagreement(None, r, e).unwrap_or("content");
                findings.push(Finding::RecordEdited { seq: r.seq, idx: k as u64, field });
                (i, k) = (i + 1, k + 1);
            }
        }
        findings.extend((k..decoded.len()).map(|idx| Finding::LeafUnmatched { idx: idx as u64 }));
        findings.extend(logged[i..].iter().map(|r| Finding::RecordInserted { seq: r.seq }));
    }
    LogAudit {
        records: records.len(),
        leaves: have,
        anchor: anchor.map(|a| (a.size(), a.cosigned().keys().cloned().collect())),
        findings,
    }
}
