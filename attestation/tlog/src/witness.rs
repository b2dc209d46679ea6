//! A witness (C2SP tlog-witness): it keeps, per log, the latest checkpoint it cosigned, and
//! cosigns a new one only if a consistency proof shows the new tree extends it. It refuses a
//! fork (same size, other root) and a rollback (a smaller tree) with the protocol's statuses.
//!
//! The check of the old size and the write of the new state happen under one lock, and the
//! state is on disk (written, synced, renamed) before the cosignature is returned, so a crash
//! can never make the witness cosign two views of one log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::TlogError;
use crate::checkpoint::open_checkpoint;
use crate::cosign::cosign;
use crate::keys::{KeyKind, NoteKey, NoteSigner};
use crate::tree::{Hash, verify_consistency};

/// The most consistency-proof lines a request may carry (the protocol's bound).
pub const MAX_PROOF_LINES: usize = 63;
/// The largest request body a witness reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// An `add-checkpoint` request body.
#[derive(Clone, Debug, PartialEq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend(format!("{}\n", B64.encode(h.0)).into_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::Malformed(why.to_owned());
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("request body too large"));
        }
        let mut rest = body;
        let next_line = |rest: &mut &[u8]| -> Option<Vec<u8>> {
            let end = rest.iter().position(|b| *b == b'\n')?;
            let line = rest[..end].to_vec();
            *rest = &rest[end + 1..];
            Some(line)
        };
        let first = next_line(&mut rest).ok_or_else(|| bad("no old size line"))?;
        let size = first.strip_prefix(b"old ").ok_or_else(|| bad("first line is not `old <size>`"))?;
        let old_size = parse_decimal(size).ok_or_else(|| bad("old size is not a canonical decimal"))?;
        let mut proof = Vec::new();
        loop {
            let line = next_line(&mut rest).ok_or_else(|| bad("no empty line before the checkpoint"))?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let raw = B64.decode(&line).map_err(|_| bad("a proof line is not base64"))?;
            let hash: [u8; 32] = raw.try_into().map_err(|_| bad("a proof line is not a 32-byte hash"))?;
            proof.push(Hash(hash));
        }
        if old_size == 0 && !proof.is_empty() {
            return Err(bad("a proof from old size 0 must be empty"));
        }
        Ok(Self { old_size, proof, checkpoint: rest.to_vec() })
    }
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(s).ok()?;
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    valid.then(|| text.parse().ok()).flatten()
}

/// Why a witness did not cosign, with the protocol's HTTP status.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown log origin {0:?}")]
    UnknownLog(String),
    #[error("no signature from a trusted key of log {0:?} verifies")]
    Unsigned(String),
    #[error("old size {old} is above the checkpoint's size {size}")]
    OldAboveSize { old: u64, size: u64 },
    #[error("rollback refused: the checkpoint has {size} leaves but this witness cosigned {latest}")]
    Rollback { size: u64, latest: u64 },
    #[error(
        "fork refused: a checkpoint of {size} leaves with another root than the one this witness cosigned"
    )]
    Fork { size: u64 },
    #[error("old size {old} does not match the latest cosigned size {latest}")]
    Conflict { old: u64, latest: u64 },
    #[error("the consistency proof from {old} to {size} does not verify")]
    BadProof { old: u64, size: u64 },
    #[error("witness state: {0}")]
    State(String),
}

impl Refusal {
    /// The status tlog-witness assigns; 409s carry the latest size as `text/x.tlog.size`.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldAboveSize { .. } => 400,
            Refusal::Unsigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Rollback { .. } | Refusal::Fork { .. } | Refusal::Conflict { .. } => 409,
            Refusal::BadProof { .. } => 422,
            Refusal::State(_) => 500,
        }
    }

    /// The latest cosigned size, for a 409's body.
    pub fn latest_size(&self) -> Option<u64> {
        match self {
            Refusal::Rollback { latest, .. } | Refusal::Conflict { latest, .. } => Some(*latest),
            Refusal::Fork { size } => Some(*size),
            _ => None,
        }
    }
}

/// What the witness remembers of one log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosigned {
    pub size: u64,
    /// Base64 root hash.
    pub root: String,
    /// POSIX seconds of the cosignature.
    pub time: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// The witness's key, so a state file is never reused under another identity.
    witness: String,
    logs: BTreeMap<String, Cosigned>,
}

/// A witness: its key, the logs it follows, and its durable state.
#[derive(Debug)]
pub struct Witness {
    signer: NoteSigner,
    logs: BTreeMap<String, NoteKey>,
    state_path: PathBuf,
    state: Mutex<State>,
}

impl Witness {
    /// Opens (or starts) the state at `state_path`. The state must belong to this witness key.
    pub fn open(signer: NoteSigner, logs: Vec<NoteKey>, state_path: &Path) -> Result<Self, TlogError> {
        if signer.public().kind() != KeyKind::Cosignature {
            return Err(TlogError::KeyKind("a witness needs a cosignature (0x04) key"));
        }
        let mut by_origin = BTreeMap::new();
        for log in logs {
            if log.kind() != KeyKind::Checkpoint {
                return Err(TlogError::VerifierKey(format!(
                    "log key {} is not a checkpoint key",
                    log.name()
                )));
            }
            if by_origin.insert(log.name().to_owned(), log).is_some() {
                return Err(TlogError::VerifierKey("two keys for one log origin".into()));
            }
        }
        let state = match std::fs::read(state_path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| TlogError::WitnessState(format!("{}: {e}", state_path.display())))?;
                if state.witness != signer.public().vkey() {
                    return Err(TlogError::WitnessState(format!(
                        "{} belongs to witness {}, not {}",
                        state_path.display(),
                        state.witness,
                        signer.public().vkey()
                    )));
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                State { witness: signer.public().vkey(), logs: BTreeMap::new() }
            }
            Err(e) => return Err(TlogError::WitnessState(format!("{}: {e}", state_path.display()))),
        };
        Ok(Self { signer, logs: by_origin, state_path: state_path.to_owned(), state: Mutex::new(state) })
    }

    pub fn key(&self) -> &NoteKey {
        self.signer.public()
    }

    /// The latest checkpoint cosigned for `origin`.
    pub fn latest(&self, origin: &str) -> Option<Cosigned> {
        self.lock().logs.get(origin).cloned()
    }

    /// Handles an `add-checkpoint` body at time `now` (POSIX seconds): the cosignature line(s)
    /// to answer with, or why not.
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Result<Vec<u8>, Refusal> {
        let req = AddCheckpoint::parse(body)?;
        let origin = origin_line(&req.checkpoint)?;
        let log = self.logs.get(&origin).ok_or_else(|| Refusal::UnknownLog(origin.clone()))?;
        let opened = open_checkpoint(&req.checkpoint, log, &[]).map_err(|e| match e {
            TlogError::Malformed(m) => Refusal::Malformed(m),
            _ => Refusal::Unsigned(origin.clone()),
        })?;
        let (size, root) = (opened.size(), opened.root());
        if req.old_size > size {
            return Err(Refusal::OldAboveSize { old: req.old_size, size });
        }

        let mut state = self.lock();
        let latest = state.logs.get(&origin).cloned();
        let (latest_size, latest_root) = match &latest {
            Some(c) => (c.size, decode_root(&c.root).map_err(Refusal::State)?),
            None => (0, tlog_tiles::EMPTY_HASH),
        };
        if size < latest_size {
            return Err(Refusal::Rollback { size, latest: latest_size });
        }
        if size == latest_size && latest.is_some() && root != latest_root {
            return Err(Refusal::Fork { size });
        }
        if req.old_size != latest_size {
            return Err(Refusal::Conflict { old: req.old_size, latest: latest_size });
        }
        if latest_size > 0 {
            verify_consistency(&req.proof, latest_size, latest_root, size, root).map_err(|e| match e {
                TlogError::Fork { size } => Refusal::Fork { size },
                _ => Refusal::BadProof { old: latest_size, size },
            })?;
        }
        let line = cosign(&self.signer, opened.text(), now).map_err(|e| Refusal::State(e.to_string()))?;
        let record = Cosigned { size, root: B64.encode(root.0), time: now };
        let previous = state.logs.insert(origin.clone(), record);
        if let Err(e) = persist(&self.state_path, &state) {
            // Not on disk, so not cosigned: restore what the disk still says.
            match previous {
                Some(p) => state.logs.insert(origin, p),
                None => state.logs.remove(&origin),
            };
            return Err(Refusal::State(e));
        }
        Ok(line)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the in-memory state as the disk has it (the
        // insert is undone on a failed write), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn origin_line(note: &[u8]) -> Result<String, Refusal> {
    let end =
        note.iter().position(|b| *b == b'\n').ok_or_else(|| Refusal::Malformed("empty checkpoint".into()))?;
    String::from_utf8(note[..end].to_vec()).map_err(|_| Refusal::Malformed("origin is not UTF-8".into()))
}

fn decode_root(b64: &str) -> Result<Hash, String> {
    let raw = B64.decode(b64).map_err(|e| format!("stored root: {e}"))?;
    Ok(Hash(raw.try_into().map_err(|_| "stored root is not 32 bytes".to_owned())?))
}

fn persist(path: &Path, state: &State) -> Result<(), String> {
    persist_bytes(path, &serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?)
}

/// Writes `bytes` to `path` durably: a synced temporary file renamed over it, the directory
/// synced.
pub(crate) fn persist_bytes(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}
