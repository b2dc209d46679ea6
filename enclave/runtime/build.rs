//! Embeds the binary's dependency list, so that auditors read what the measured enclave is made of
//! from the enclave itself (`cargo audit bin`, syft, trivy, `nacre image build`'s SBOM).
//!
//! The format is cargo-auditable's: the `auditable-serde` JSON (format 1: proc macros and what
//! they pull in count as build dependencies), zlib-compressed, in a non-allocated ELF section
//! `.dep-v0` held by the symbol `AUDITABLE_VERSION_INFO`. cargo-auditable gets there by wrapping
//! rustc; this script does it with no extra tool: it writes a small relocatable object holding the
//! section and passes it to the linker of the `nacre-enclave` binary.
//!
//! Which packages: those of `cargo build -p nacre-enclave --target $TARGET` with this build's
//! features, normal and build dependencies only, as `cargo tree` resolves them. `cargo metadata`
//! alone (what cargo-auditable uses) resolves features for the whole workspace and lists 14
//! packages more (ring, getrandom 0.2, borsh, …) that are in no enclave; it still supplies the
//! graph's edges, sources and proc-macro targets. The measured enclave is built with `-p`
//! (scripts/build-enclave.sh), so the list is exact for it; a whole-workspace build may unify in
//! features the list does not show.
//!
//! Deterministic: no path, time or host name goes in, packages are sorted by name, version and
//! source, and the same zlib level gives the same bytes; the image's reproducibility
//! (scripts/repro.sh) depends on it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

use auditable_serde::{DependencyKind, Package, Source, VersionInfo};
use serde_json::Value;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// cargo-auditable's symbol name: tools find the section by name, the linker keeps it by symbol.
const SYMBOL: &str = "AUDITABLE_VERSION_INFO";
const SECTION: &str = ".dep-v0";
/// cargo-auditable's level: a few milliseconds for this list.
const ZLIB_LEVEL: u8 = 7;

fn main() {
    if let Err(e) = embed() {
        eprintln!("nacre-enclave build.rs: the dependency list (.dep-v0): {e}");
        std::process::exit(1);
    }
}

fn embed() -> Result<()> {
    println!("cargo::rerun-if-changed=build.rs");
    let env = |k: &str| std::env::var(k).map_err(|e| format!("{k}: {e}"));
    let target = env("TARGET")?;
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let package = env("CARGO_PKG_NAME")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let metadata = cargo_json(
        cargo_command(&cargo)
            .args(["metadata", "--format-version", "1", "--locked", "--filter-platform", &target])
            .args(feature_args(None))
            .arg("--manifest-path")
            .arg(&manifest),
    )?;
    let in_build = tree_packages(&cargo, &manifest, &package, &target)?;
    let info = version_info(&metadata, &in_build)?;

    // Rebuild the list when the lock file or any workspace manifest changes.
    if let Some(root) = metadata["workspace_root"].as_str() {
        println!("cargo::rerun-if-changed={}", Path::new(root).join("Cargo.lock").display());
    }
    for p in metadata["packages"].as_array().into_iter().flatten() {
        if p["source"].is_null()
            && let Some(m) = p["manifest_path"].as_str()
        {
            println!("cargo::rerun-if-changed={m}");
        }
    }

    let json = serde_json::to_vec(&info)?;
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&json, ZLIB_LEVEL);
    std::fs::write(out_dir.join("dep-v0.json"), &json)?;
    if !target.starts_with("x86_64-") || !target.contains("-linux-") {
        // The object below is x86-64 ELF; other targets get no list rather than a broken link.
        println!("cargo::warning=no embedded dependency list for {target} (x86_64 Linux only)");
        return Ok(());
    }
    let object = out_dir.join("dep-v0.o");
    std::fs::write(&object, elf_object(&compressed))?;
    println!("cargo::rustc-link-arg-bins={}", object.display());
    // The linker keeps a section of a command-line object anyway; `-u` says why it is there.
    println!("cargo::rustc-link-arg-bins=-Wl,-u,{SYMBOL}");
    Ok(())
}

/// This build's features of the package, for `cargo metadata`/`cargo tree` (`CARGO_FEATURE_X`
/// is the feature's name upper-cased with `-` as `_`; `known` maps it back).
fn feature_args(known: Option<&[String]>) -> Vec<String> {
    let enabled: BTreeSet<String> =
        std::env::vars().filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned)).collect();
    let mut args = Vec::new();
    if !enabled.contains("DEFAULT") {
        args.push("--no-default-features".to_owned());
    }
    let names: Vec<String> = known
        .unwrap_or_default()
        .iter()
        .filter(|f| *f != "default" && enabled.contains(&f.to_uppercase().replace('-', "_")))
        .cloned()
        .collect();
    if !names.is_empty() {
        args.push("--features".to_owned());
        args.push(names.join(","));
    }
    args
}

/// Cargo, without the workspace wrapper `cargo clippy` sets (cargo tree would run clippy-driver
/// for the target's configuration).
fn cargo_command(cargo: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out.stdout)
}

fn cargo_json(cmd: &mut Command) -> Result<Value> {
    Ok(serde_json::from_slice(&run(cmd)?)?)
}

/// `(name, version)` of every package `cargo build -p PACKAGE --target TARGET` compiles for it
/// (normal and build dependencies, this build's features).
fn tree_packages(
    cargo: &std::ffi::OsStr,
    manifest: &Path,
    package: &str,
    target: &str,
) -> Result<HashSet<(String, String)>> {
    // The package's own feature names, to map CARGO_FEATURE_* back to them.
    let own = cargo_json(
        cargo_command(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
            .arg(manifest),
    )?;
    let features: Vec<String> = own["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == package)
        .flat_map(|p| p["features"].as_object().into_iter().flatten().map(|(k, _)| k.clone()))
        .collect();
    let stdout = run(cargo_command(cargo)
        .args(["tree", "--locked", "-e", "normal,build", "--prefix", "none", "-f", "{p}"])
        .args(["-p", package, "--target", target])
        .args(feature_args(Some(&features)))
        .arg("--manifest-path")
        .arg(manifest))?;
    let mut set = HashSet::new();
    for line in String::from_utf8(stdout)?.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(version)) = (words.next(), words.next())
            && let Some(version) = version.strip_prefix('v')
        {
            set.insert((name.to_owned(), version.to_owned()));
        }
    }
    if set.is_empty() {
        return Err("cargo tree listed no packages".into());
    }
    Ok(set)
}

/// Strongest first, as in cargo-auditable: a package reached both ways is a runtime one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Build,
    Runtime,
}

/// The `auditable-serde` list of what the resolve root reaches through normal and build edges,
/// restricted to the packages the build compiles.
fn version_info(metadata: &Value, in_build: &HashSet<(String, String)>) -> Result<VersionInfo> {
    let arr = |v: &Value, what: &str| v.as_array().cloned().ok_or_else(|| format!("metadata: no {what}"));
    let packages = arr(&metadata["packages"], "packages")?;
    let nodes = arr(&metadata["resolve"]["nodes"], "resolve.nodes")?;
    let root = metadata["resolve"]["root"].as_str().ok_or("metadata: no resolve.root")?;
    let by_id: HashMap<&str, &Value> = packages.iter().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let node_of: HashMap<&str, &Value> = nodes.iter().filter_map(|n| Some((n["id"].as_str()?, n))).collect();
    let key = |id: &str| -> Option<(String, String)> {
        let p = by_id.get(id)?;
        Some((p["name"].as_str()?.to_owned(), p["version"].as_str()?.to_owned()))
    };
    let proc_macro = |id: &str| {
        by_id.get(id).is_some_and(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["kind"].as_array().into_iter().flatten().any(|k| k == "proc-macro"))
        })
    };
    // Edges that a build follows: not dev-only, and to a package the build compiles.
    let edges = |id: &str| -> Vec<(String, Kind)> {
        let Some(node) = node_of.get(id) else { return Vec::new() };
        node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let child = d["pkg"].as_str()?;
                let kind = d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| match k["kind"].as_str() {
                        None => Some(Kind::Runtime),
                        Some("build") => Some(Kind::Build),
                        _ => None, // dev
                    })
                    .max()?;
                key(child).filter(|k| in_build.contains(k))?;
                Some((child.to_owned(), kind))
            })
            .collect()
    };

    // Breadth first from the root; a package's kind is the strongest over all paths to it, and a
    // runtime dependency of a build dependency or proc macro is a build dependency.
    let mut kind_of: HashMap<String, Kind> = HashMap::from([(root.to_owned(), Kind::Runtime)]);
    let mut queue = vec![root.to_owned()];
    while let Some(parent) = queue.pop() {
        let parent_kind = kind_of[&parent];
        for (child, edge_kind) in edges(&parent) {
            let mut kind = edge_kind.min(parent_kind);
            if proc_macro(&child) {
                kind = Kind::Build;
            }
            if kind_of.get(&child).is_none_or(|k| *k < kind) {
                kind_of.insert(child.clone(), kind);
                queue.push(child);
            }
        }
    }

    let source = |id: &str| -> String {
        match by_id.get(id).and_then(|p| p["source"].as_str()) {
            None => "local".to_owned(),
            Some("registry+https://github.com/rust-lang/crates.io-index") => "crates.io".to_owned(),
            Some(s) => s.split('+').next().unwrap_or(s).to_owned(),
        }
    };
    // Sorted by what is in the output, never by ids (which hold this checkout's path).
    let mut order: BTreeMap<(String, semver::Version, String), String> = BTreeMap::new();
    for id in kind_of.keys() {
        let (name, version) = key(id).ok_or_else(|| format!("metadata: no package {id}"))?;
        let previous = order.insert((name.clone(), version.parse()?, source(id)), id.clone());
        if previous.is_some() {
            return Err(format!("two packages {name} {version} from one source").into());
        }
    }
    let index: HashMap<&str, usize> = order.values().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut out = Vec::with_capacity(order.len());
    for ((name, version, source), id) in &order {
        let mut dependencies: Vec<usize> = edges(id).iter().map(|(c, _)| index[c.as_str()]).collect();
        dependencies.sort_unstable();
        dependencies.dedup();
        out.push(Package {
            name: name.clone(),
            version: version.clone(),
            source: Source::from(source.as_str()),
            kind: match kind_of[id] {
                Kind::Build => DependencyKind::Build,
                Kind::Runtime => DependencyKind::Runtime,
            },
            dependencies,
            root: id == root,
        });
    }
    Ok(VersionInfo { packages: out, format: 1 })
}

/// A little-endian ELF64 relocatable object for x86-64 with one section, `.dep-v0` (PROGBITS, not
/// allocated: tools read it from the file, nothing loads it), and one global data symbol over it.
/// Layout: header, section data, symbol table, string tables, section headers (ELF spec, "ELF
/// Header", "Sections", "Symbol Table").
fn elf_object(data: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const SHDR: usize = 64;
    const SYM: usize = 24;
    let strtab = [b"\0", SYMBOL.as_bytes(), b"\0"].concat();
    let shstrtab = [b"\0", SECTION.as_bytes(), b"\0.symtab\0.strtab\0.shstrtab\0"].concat();
    let name_at = |n: &str| {
        let needle = [n.as_bytes(), b"\0"].concat();
        shstrtab.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap_or(0) as u32
    };
    let align8 = |n: usize| n.div_ceil(8) * 8;
    let data_off = EHDR;
    let symtab_off = align8(data_off + data.len());
    let strtab_off = symtab_off + 2 * SYM;
    let shstrtab_off = strtab_off + strtab.len();
    let shdr_off = align8(shstrtab_off + shstrtab.len());

    let mut out = Vec::with_capacity(shdr_off + 5 * SHDR);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&1u16.to_le_bytes()); // e_type: ET_REL
    out.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    out.extend_from_slice(&(shdr_off as u64).to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&(SHDR as u16).to_le_bytes()); // e_shentsize
    out.extend_from_slice(&5u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&4u16.to_le_bytes()); // e_shstrndx

    out.extend_from_slice(data);
    out.resize(symtab_off, 0);
    // Symbol 0 is the null symbol; symbol 1: STB_GLOBAL, STT_OBJECT, default visibility, in
    // section 1 at offset 0.
    out.resize(symtab_off + SYM, 0);
    out.extend_from_slice(&1u32.to_le_bytes()); // st_name
    out.push((1 << 4) | 1); // st_info
    out.push(0); // st_other
    out.extend_from_slice(&1u16.to_le_bytes()); // st_shndx
    out.extend_from_slice(&0u64.to_le_bytes()); // st_value
    out.extend_from_slice(&(data.len() as u64).to_le_bytes()); // st_size
    out.extend_from_slice(&strtab);
    out.extend_from_slice(&shstrtab);
    out.resize(shdr_off, 0);

    let sections = [
        Shdr::default(),
        Shdr {
            name: name_at(SECTION),
            kind: SHT_PROGBITS,
            offset: data_off,
            size: data.len(),
            align: 1,
            ..Shdr::default()
        },
        // sh_link: the string table of the names; sh_info: one past the last local symbol.
        Shdr {
            name: name_at(".symtab"),
            kind: SHT_SYMTAB,
            offset: symtab_off,
            size: 2 * SYM,
            link: 3,
            info: 1,
            align: 8,
            entsize: SYM,
        },
        Shdr {
            name: name_at(".strtab"),
            kind: SHT_STRTAB,
            offset: strtab_off,
            size: strtab.len(),
            align: 1,
            ..Shdr::default()
        },
        Shdr {
            name: name_at(".shstrtab"),
            kind: SHT_STRTAB,
            offset: shstrtab_off,
            size: shstrtab.len(),
            align: 1,
            ..Shdr::default()
        },
    ];
    for s in sections {
        out.extend_from_slice(&s.name.to_le_bytes());
        out.extend_from_slice(&s.kind.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // sh_flags: none (not allocated)
        out.extend_from_slice(&0u64.to_le_bytes()); // sh_addr
        for v in [s.offset, s.size] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.extend_from_slice(&s.link.to_le_bytes());
        out.extend_from_slice(&s.info.to_le_bytes());
        for v in [s.align, s.entsize] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }
    out
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;

/// One ELF64 section header, less the fields that are zero here (flags, address).
#[derive(Default)]
struct Shdr {
    name: u32,
    kind: u32,
    offset: usize,
    size: usize,
    link: u32,
    info: u32,
    align: usize,
    entsize: usize,
}
