//! Kernel modules for the initrd: find the requested ones in a `lib/modules/<version>` tree,
//! add their dependencies (the `depends=` entry of each module's `.modinfo` ELF section), and
//! order them so that every module comes after what it depends on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("module {0} is not in the kernel's module tree (built in, or misspelt?)")]
    NotFound(String),
    #[error("module {name}: {message}")]
    Bad { name: String, message: String },
    #[error("module dependency cycle through {0}")]
    Cycle(String),
}

/// A module to put in the initrd, in load order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (`-` as `_`), as the kernel knows it.
    pub name: String,
    pub path: PathBuf,
    pub data: Vec<u8>,
}

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every `*.ko` under `dir/kernel`, by canonical name. Compressed modules are refused: the
/// kernel packages this builder is pinned to ship them uncompressed.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ModuleError> {
    let io = |p: &Path, e: std::io::Error| ModuleError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let path = entry.map_err(|e| io(&d, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = name.strip_suffix(".ko") {
                out.insert(canonical(stem), path);
            } else if name.contains(".ko.") {
                return Err(ModuleError::Bad {
                    name,
                    message: "compressed modules are not supported".into(),
                });
            }
        }
    }
    Ok(out)
}

/// The `depends=` list of a module, read from its `.modinfo` section.
fn depends(name: &str, data: &[u8]) -> Result<Vec<String>, ModuleError> {
    let bad = |message: String| ModuleError::Bad { name: name.to_owned(), message };
    let file = object::File::parse(data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section = file.section_by_name(".modinfo").ok_or_else(|| bad("no .modinfo section".into()))?;
    let info = section.data().map_err(|e| bad(e.to_string()))?;
    let mut deps = None;
    for field in info.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        if let Some(list) = field.strip_prefix(b"depends=") {
            let list = std::str::from_utf8(list).map_err(|_| bad("depends= is not UTF-8".into()))?;
            if deps.replace(list.split(',').filter(|d| !d.is_empty()).map(canonical).collect()).is_some() {
                return Err(bad("two depends= entries".into()));
            }
        }
    }
    Ok(deps.unwrap_or_default())
}

/// `wanted` and everything they depend on, dependencies first; ties in name order.
pub fn resolve(modules_dir: &Path, wanted: &[String]) -> Result<Vec<Module>, ModuleError> {
    let index = index(modules_dir)?;
    let mut loaded: BTreeMap<String, (PathBuf, Vec<u8>, Vec<String>)> = BTreeMap::new();
    let mut todo: Vec<String> = wanted.iter().map(|w| canonical(w)).collect();
    while let Some(name) = todo.pop() {
        if loaded.contains_key(&name) {
            continue;
        }
        let path = index.get(&name).ok_or_else(|| ModuleError::NotFound(name.clone()))?;
        let data = std::fs::read(path)
            .map_err(|e| ModuleError::Io { path: path.display().to_string(), message: e.to_string() })?;
        let deps = depends(&name, &data)?;
        todo.extend(deps.iter().cloned());
        loaded.insert(name, (path.clone(), data, deps));
    }
    // Kahn's algorithm over a BTreeMap: deterministic.
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < loaded.len() {
        let ready: Vec<String> = loaded
            .iter()
            .filter(|(n, (_, _, deps))| !done.contains(*n) && deps.iter().all(|d| done.contains(d)))
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            let stuck = loaded.keys().find(|n| !done.contains(*n)).cloned().unwrap_or_default();
            return Err(ModuleError::Cycle(stuck));
        }
        for n in ready {
            done.insert(n.clone());
            order.push(n);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|n| loaded.remove(&n).map(|(path, data, _)| Module { name: n, path, data }))
        .collect())
}
