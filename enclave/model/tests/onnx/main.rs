//! Models made by `scripts/models.py` (the pinned virtualenv of `scripts/inputs.sh`), run
//! through Nacre's model layer and compared with independent implementations: every datatype
//! against onnxruntime, explanations against the `shap` package's golden values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::path::PathBuf;

mod dtypes;
mod shap;

/// Runs `scripts/models.py ARGS` with the models virtualenv's Python (idempotent, cached).
fn models_py(args: &[&OsStr]) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("bash").arg(repo.join("scripts/inputs.sh")).output().unwrap();
    assert!(out.status.success(), "scripts/inputs.sh: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let python = stdout.lines().find_map(|l| l.strip_prefix("NACRE_PYTHON=")).expect("NACRE_PYTHON");
    let status =
        std::process::Command::new(python).arg(repo.join("scripts/models.py")).args(args).status().unwrap();
    assert!(status.success(), "models.py {args:?}");
}
