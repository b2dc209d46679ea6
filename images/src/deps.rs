//! The dependency list a binary carries in cargo-auditable's format: the `auditable-serde` JSON,
//! zlib-compressed, in the ELF section `.dep-v0` (`nacre-enclave` writes it from its build
//! script, enclave/runtime/build.rs). The image builder reads it back from the very bytes it puts
//! into the initrd, so that the SBOM lists the crates of that binary and no other.
//!
//! The input is a file the image's builder chose, not an attacker's, but it is parsed as if it
//! were: the decompressed size is bounded and the list must be one rooted, acyclic graph
//! (`auditable-serde`'s checks) whose indices are in range.

pub use auditable_serde::{DependencyKind, Package, Source, VersionInfo};

/// The section cargo-auditable (and `cargo audit bin`, syft, trivy) read.
pub const SECTION: &str = ".dep-v0";
/// Largest decompressed list accepted (the enclave's is about 40 KiB).
pub const MAX_JSON: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepsError {
    #[error("not an ELF executable: {0}")]
    NotElf(String),
    #[error("{SECTION}: {0}")]
    Malformed(String),
}

/// The list embedded in `elf`, `None` when it has no `.dep-v0` section.
pub fn embedded(elf: &[u8]) -> Result<Option<VersionInfo>, DepsError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| DepsError::NotElf(e.to_string()))?;
    let Some(section) = file.section_by_name(SECTION) else { return Ok(None) };
    let bad = |m: String| DepsError::Malformed(m);
    let compressed = section.data().map_err(|e| bad(e.to_string()))?;
    let json = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed, MAX_JSON)
        .map_err(|e| bad(format!("zlib: {:?} (or more than {MAX_JSON} bytes)", e.status)))?;
    parse(&json).map(Some)
}

/// Parses the decompressed JSON of a `.dep-v0` section.
pub fn parse(json: &[u8]) -> Result<VersionInfo, DepsError> {
    let bad = |m: String| DepsError::Malformed(m);
    let info: VersionInfo = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let n = info.packages.len();
    if let Some(p) = info.packages.iter().find(|p| p.dependencies.iter().any(|d| *d >= n)) {
        return Err(bad(format!("{} {}: a dependency index past the {n} packages", p.name, p.version)));
    }
    if !info.packages.iter().any(|p| p.root) {
        return Err(bad("no root package".into()));
    }
    Ok(info)
}

/// The list's root package (the binary's own crate).
pub fn root(info: &VersionInfo) -> Option<&Package> {
    info.packages.iter().find(|p| p.root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_out_of_range_indices_cycles_two_roots_and_no_root() {
        let ok =
            br#"{"packages":[{"name":"a","version":"1.0.0","source":"local","dependencies":[1],"root":true},
            {"name":"b","version":"0.1.0","source":"crates.io","kind":"build"}],"format":1}"#;
        let info = parse(ok).unwrap();
        assert_eq!(root(&info).unwrap().name, "a");
        assert_eq!(info.packages[1].kind, DependencyKind::Build);
        for (json, reason) in [
            (&br#"{"packages":[{"name":"a","version":"1.0.0","source":"local","dependencies":[5],"root":true}]}"#[..], "index"),
            (br#"{"packages":[{"name":"a","version":"1.0.0","source":"local","dependencies":[0],"root":true}]}"#, "cyclic"),
            (br#"{"packages":[{"name":"a","version":"1.0.0","source":"local","root":true},{"name":"b","version":"1.0.0","source":"local","root":true}]}"#, "root"),
            (br#"{"packages":[{"name":"a","version":"1.0.0","source":"local"}]}"#, "no root"),
            (br#"{"packages":[{"name":"a","version":"one","source":"local","root":true}]}"#, "version"),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains(reason), "{e} should mention {reason}");
        }
    }

    #[test]
    fn a_binary_without_the_section_has_no_list_and_junk_is_refused() {
        // An ELF file header alone (no sections): parses, holds no list.
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        elf.extend_from_slice(&[2, 0, 62, 0, 1, 0, 0, 0]);
        elf.resize(64, 0);
        elf[52] = 64; // e_ehsize
        assert!(embedded(&elf).unwrap().is_none());
        assert!(matches!(embedded(b"not an executable"), Err(DepsError::NotElf(_))));
    }
}
