//! Shared helpers for the cross-crate tests: where the real vectors live and how to load them.
#![forbid(unsafe_code)]
// Test support: a missing vector is a broken checkout, reported loudly.
#![allow(clippy::panic)]

use std::path::PathBuf;

/// `../shared/vectors` beside the checkout (CI places `shared/` there).
pub fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    assert!(dir.is_dir(), "real evidence vectors not found at {}", dir.display());
    dir
}

/// Reads a file under the vectors directory.
pub fn read_vector(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Unix seconds of an RFC 3339 time.
pub fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .unix_timestamp()
}
