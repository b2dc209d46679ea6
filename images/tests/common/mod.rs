//! The pinned outside inputs (kernel, firmware, reference tools) from `scripts/inputs.sh`,
//! which fetches, verifies and caches them; it is idempotent and cheap once run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cyclonedx;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn input(name: &str) -> PathBuf {
    static INPUTS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let all = INPUTS.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/inputs.sh");
        let out = std::process::Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed (it installs QEMU, OVMF, the pinned kernel and sev-snp-measure):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    });
    PathBuf::from(all.get(name).unwrap_or_else(|| panic!("scripts/inputs.sh gave no {name}")))
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
