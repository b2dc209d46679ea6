//! The RFC 6962 Merkle tree: stored hashes in Go tlog's layout (every complete subtree's hash,
//! in append order), inclusion and consistency proofs, and C2SP tlog-tiles of height 8.
//!
//! The hashing and proof algorithms are `tlog_tiles`'s; this module adds the storage a log
//! needs, strict tile paths, and typed proof checks.

use tlog_tiles::Tile;
pub use tlog_tiles::{Error as TreeError, Hash, HashReader, record_hash as leaf_hash, stored_hash_index};

use crate::TlogError;

/// C2SP tlog-tiles fixes the tile height at 8: 256 hashes (8 KiB) a full tile.
pub const TILE_HEIGHT: u8 = 8;
const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// Where a tree's stored hashes live: memory here, the service's database there.
pub trait HashStore: HashReader {
    /// The number of leaves integrated.
    fn size(&self) -> u64;
}

/// The stored hashes of a tree, in memory (a witness's check, a monitor's replay, tests).
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl HashStore for MemoryTree {
    fn size(&self) -> u64 {
        self.size
    }
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf (its entry bytes) and returns its index.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, TlogError> {
        self.append_leaf_hash(leaf_hash(entry))
    }

    /// Appends a leaf by its leaf hash.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> Result<u64, TlogError> {
        let index = self.size;
        let new = new_stored_hashes(self, leaf)?;
        self.hashes.extend(new);
        self.size += 1;
        Ok(index)
    }

    pub fn root(&self) -> Result<Hash, TlogError> {
        root(self, self.size)
    }
}

/// The stored hashes that appending the leaf `leaf` to `store` adds, in order: the leaf's own
/// hash, then the hash of every subtree it completes. A database store appends exactly these.
pub fn new_stored_hashes<S: HashStore>(store: &S, leaf: Hash) -> Result<Vec<Hash>, TlogError> {
    tlog_tiles::stored_hashes_for_record_hash(store.size(), leaf, store).map_err(TlogError::Tree)
}

/// The number of stored hashes a tree of `size` leaves has.
pub fn stored_hash_count(size: u64) -> u64 {
    tlog_tiles::stored_hash_count(size)
}

/// The root hash of the first `size` leaves of `store`.
pub fn root<S: HashStore>(store: &S, size: u64) -> Result<Hash, TlogError> {
    in_tree(store, size)?;
    tlog_tiles::tree_hash(size, store).map_err(TlogError::Tree)
}

/// The inclusion proof (RFC 6962 audit path) of leaf `index` in the tree of `size` leaves.
pub fn prove_inclusion<S: HashStore>(store: &S, size: u64, index: u64) -> Result<Vec<Hash>, TlogError> {
    in_tree(store, size)?;
    if index >= size {
        return Err(TlogError::Range(format!("leaf {index} is not in a tree of {size}")));
    }
    tlog_tiles::prove_record(size, index, store).map_err(TlogError::Tree)
}

/// The consistency proof (RFC 6962 §2.1.2) from the tree of `old` leaves to that of `new`.
pub fn prove_consistency<S: HashStore>(store: &S, old: u64, new: u64) -> Result<Vec<Hash>, TlogError> {
    in_tree(store, new)?;
    if old > new {
        return Err(TlogError::Range(format!("no consistency proof from {old} down to {new}")));
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    tlog_tiles::prove_tree(new, old, store).map_err(TlogError::Tree)
}

/// Checks that leaf `index` with hash `leaf` is in the tree of `size` leaves with root `root`.
pub fn verify_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), TlogError> {
    if index >= size {
        return Err(TlogError::Range(format!("leaf {index} is not in a tree of {size}")));
    }
    if proof.len() > 63 {
        return Err(TlogError::InclusionProof);
    }
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf).map_err(|_| TlogError::InclusionProof)
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of `new`
/// leaves with root `new_root`.
pub fn verify_consistency(
    proof: &[Hash],
    old: u64,
    old_root: Hash,
    new: u64,
    new_root: Hash,
) -> Result<(), TlogError> {
    match (old, old.cmp(&new)) {
        (_, std::cmp::Ordering::Greater) => Err(TlogError::Rollback { old, new }),
        (_, std::cmp::Ordering::Equal) if proof.is_empty() && old_root == new_root => Ok(()),
        (_, std::cmp::Ordering::Equal) => Err(TlogError::Fork { size: old }),
        (0, _) if proof.is_empty() => Ok(()),
        _ if proof.len() > 63 => Err(TlogError::ConsistencyProof),
        _ => tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root)
            .map_err(|_| TlogError::ConsistencyProof),
    }
}

fn in_tree<S: HashStore>(store: &S, size: u64) -> Result<(), TlogError> {
    if size > store.size() {
        return Err(TlogError::Range(format!("tree of {size} leaves, but the log holds {}", store.size())));
    }
    Ok(())
}

/// A C2SP tlog-tiles hash tile: `tile/<L>/<N>[.p/<W>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashTile(Tile);

impl HashTile {
    /// Parses a tile path strictly (the canonical form only; widths 1..=255 for partial tiles).
    pub fn parse(path: &str) -> Result<Self, TlogError> {
        let bad = || TlogError::TilePath(path.chars().take(80).collect());
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (level, index) = rest.split_once('/').ok_or_else(bad)?;
        let canonical = level == "0" || !level.starts_with('0');
        if !canonical || level.is_empty() || level.len() > 2 || !level.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let level: u8 = level.parse().map_err(|_| bad())?;
        // tlog_tiles asserts (panics) on these; refuse them here instead.
        if level >= 64 || index.ends_with(".p/0") {
            return Err(bad());
        }
        let tile = Tile::from_path(&format!("tile/{TILE_HEIGHT}/{level}/{index}")).map_err(|_| bad())?;
        Ok(Self(tile))
    }

    /// The tile's index N within its level.
    pub fn index(&self) -> u64 {
        self.0.level_index()
    }

    /// How many hashes the tile holds (256 when full).
    pub fn width(&self) -> u32 {
        self.0.width()
    }

    pub fn level(&self) -> u8 {
        self.0.level()
    }

    pub fn path(&self) -> String {
        // tlog_tiles writes Go's sumdb form `tile/H/L/...`; C2SP drops the fixed height.
        let sumdb = self.0.path();
        let prefix = format!("tile/{TILE_HEIGHT}/");
        format!("tile/{}", &sumdb[prefix.len()..])
    }

    /// The tile's bytes (its hashes, 32 bytes each), if the tree of `size` leaves holds all of
    /// them; served tiles are immutable, so a tile not yet complete to its width is refused.
    pub fn read<S: HashStore>(&self, store: &S, size: u64) -> Result<Vec<u8>, TlogError> {
        in_tree(store, size)?;
        let level_nodes = size >> (u32::from(self.0.level()) * u32::from(TILE_HEIGHT));
        let end = (self.0.level_index() << TILE_HEIGHT) + u64::from(self.0.width());
        if end > level_nodes {
            return Err(TlogError::Range(format!("{} is beyond the tree of {size}", self.path())));
        }
        self.0.read_data(store).map_err(TlogError::Tree)
    }
}

/// Every tile path a tree of `size` leaves serves at level `level`, in order (for monitors and
/// tests); full tiles then the partial one.
pub fn tiles_at_level(size: u64, level: u8) -> Vec<HashTile> {
    let nodes = size >> (u32::from(level) * u32::from(TILE_HEIGHT));
    let mut out: Vec<HashTile> = (0..nodes / TILE_WIDTH)
        .map(|n| HashTile(Tile::new(TILE_HEIGHT, level, n, TILE_WIDTH as u32, false)))
        .collect();
    if !nodes.is_multiple_of(TILE_WIDTH) {
        out.push(HashTile(Tile::new(
            TILE_HEIGHT,
            level,
            nodes / TILE_WIDTH,
            (nodes % TILE_WIDTH) as u32,
            false,
        )));
    }
    out
}
