//! Issue 16: the `nacre-enclave` binary carries its dependency list in cargo-auditable's format
//! (`.dep-v0`, zlib JSON), read back here with the image builder's reader (`nacre_images::deps`),
//! the one the SBOM uses. `scripts/audit.sh` checks the release build with `cargo audit bin`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use nacre_images::deps::{self, DependencyKind, Source};

/// `name -> versions` of Cargo.lock's packages.
fn lock_versions() -> HashMap<String, Vec<String>> {
    let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let lock: toml::Table = std::fs::read_to_string(lock).unwrap().parse().unwrap();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for p in lock["package"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_owned();
        out.entry(name).or_default().push(p["version"].as_str().unwrap().to_owned());
    }
    out
}

#[test]
fn the_binary_embeds_the_crates_it_is_built_from() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_nacre-enclave")).unwrap();
    let info = deps::embedded(&binary).unwrap().expect("no .dep-v0 section in nacre-enclave");
    assert_eq!(info.format, 1, "proc macros recorded as build dependencies");
    let root = deps::root(&info).unwrap();
    assert_eq!((root.name.as_str(), root.source.clone()), ("nacre-enclave", Source::Local));
    assert_eq!(root.version.to_string(), env!("CARGO_PKG_VERSION"));

    let lock = lock_versions();
    let find = |name: &str| {
        let found: Vec<_> = info.packages.iter().filter(|p| p.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0]
    };
    for name in ["tract-onnx", "hyper", "rustls", "aws-lc-rs", "tokio"] {
        let p = find(name);
        assert_eq!(p.source, Source::CratesIo, "{name}");
        assert_eq!(p.kind, DependencyKind::Runtime, "{name}");
        assert!(
            lock[name].contains(&p.version.to_string()),
            "{name} {} is not Cargo.lock's {:?}",
            p.version,
            lock[name]
        );
    }
    // Workspace crates are local; proc macros and build scripts' crates are build dependencies.
    assert_eq!(find("nacre-sealed").source, Source::Local);
    assert_eq!(find("serde_derive").kind, DependencyKind::Build);
    assert_eq!(find("cc").kind, DependencyKind::Build);
    // Every listed crate is one of Cargo.lock's, at one of its versions.
    for p in &info.packages {
        let versions = lock.get(&p.name).unwrap_or_else(|| panic!("{} is not in Cargo.lock", p.name));
        assert!(versions.contains(&p.version.to_string()), "{} {}", p.name, p.version);
    }
    // Not in the binary: dev-dependencies, and crates that only other workspace members' features
    // pull in (`cargo metadata`'s workspace-wide resolve has ring; this build does not).
    for absent in ["nacre-attestation-service", "nacre-host", "nacre-sim", "nacre-images", "sqlx", "ring"] {
        assert!(info.packages.iter().all(|p| p.name != absent), "{absent} is listed");
    }
    // The root reaches every listed package (one graph, nothing stray).
    let mut seen = vec![false; info.packages.len()];
    let mut stack = vec![info.packages.iter().position(|p| p.root).unwrap()];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(&info.packages[i].dependencies);
        }
    }
    assert!(seen.iter().all(|s| *s), "packages the root does not reach");
}

/// Nothing of the build machine in the list: it is part of the measured binary, which rebuilds
/// bit for bit elsewhere (scripts/repro.sh).
#[test]
fn the_list_holds_no_path_of_this_machine() {
    let json = std::fs::read(concat!(env!("OUT_DIR"), "/dep-v0.json")).unwrap();
    let json = String::from_utf8(json).unwrap();
    let checkout = env!("CARGO_MANIFEST_DIR").trim_end_matches("/enclave/runtime");
    assert!(!json.contains(checkout), "{checkout} in the list");
    assert!(!json.contains("file://") && !json.contains("/.cargo"), "a path in the list");
    // And it is what the binary holds.
    let binary = std::fs::read(env!("CARGO_BIN_EXE_nacre-enclave")).unwrap();
    assert_eq!(deps::embedded(&binary).unwrap().unwrap(), deps::parse(json.as_bytes()).unwrap());
}
