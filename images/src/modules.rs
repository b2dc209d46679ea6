//! Kernel modules for the initrd: find the requested ones in a `lib/modules/<version>` tree,
//! add their dependencies (the `depends=` entry of each module's `.modinfo` ELF section), and
//! order them so that every module comes after what it depends on.
//!
//! A module the kernel has built in (listed in the tree's `modules.builtin`) needs no loading and
//! is left out; a module that is neither built in nor in the tree is an error, so an image never
//! silently lacks a driver. `.ko.xz` files (Debian's kernels since 6.12 compress every module)
//! are decompressed here, so the initrd holds plain `.ko` files that busybox `insmod` loads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("module {0} is neither in the kernel's module tree nor built in (misspelt, or another kernel?)")]
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

/// A decompressed module larger than this is refused (the largest in Debian's 6.12 cloud kernel
/// is under 4 MiB); the bound only keeps a corrupt archive from filling memory.
const MAX_MODULE: usize = 64 << 20;

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module names the kernel has built in, from `dir/modules.builtin` (one path per line,
/// `kernel/drivers/virtio/virtio_pci.ko`). A tree without that file has none listed.
fn builtin(dir: &Path) -> Result<BTreeSet<String>, ModuleError> {
    let path = dir.join("modules.builtin");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(ModuleError::Io { path: path.display().to_string(), message: e.to_string() }),
    };
    Ok(text.lines().filter_map(|l| l.trim().rsplit('/').next()?.strip_suffix(".ko")).map(canonical).collect())
}

/// Every `*.ko` and `*.ko.xz` under `dir/kernel`, by canonical name. Other compressions
/// (`.ko.gz`, `.ko.zst`) are refused by name: no kernel this builder is pinned to uses them.
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
            } else if let Some(stem) = name.strip_suffix(".ko").or_else(|| name.strip_suffix(".ko.xz")) {
                if let Some(other) = out.insert(canonical(stem), path) {
                    return Err(ModuleError::Bad {
                        name,
                        message: format!("found twice (also {})", other.display()),
                    });
                }
            } else if name.contains(".ko.") {
                return Err(ModuleError::Bad {
                    name,
                    message: "only uncompressed and xz-compressed modules are supported".into(),
                });
            }
        }
    }
    Ok(out)
}

/// A module file's bytes, decompressed when it is a `.ko.xz`.
fn read_module(name: &str, path: &Path) -> Result<Vec<u8>, ModuleError> {
    let data = std::fs::read(path)
        .map_err(|e| ModuleError::Io { path: path.display().to_string(), message: e.to_string() })?;
    if path.extension().is_none_or(|x| x != "xz") {
        return Ok(data);
    }
    let mut out = Bounded(Vec::new());
    lzma_rs::xz_decompress(&mut data.as_slice(), &mut out).map_err(|e| ModuleError::Bad {
        name: name.to_owned(),
        message: format!("{}: xz: {e}", path.display()),
    })?;
    Ok(out.0)
}

/// A `Vec` that refuses to grow past [`MAX_MODULE`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_MODULE {
            return Err(std::io::Error::other(format!("decompresses to more than {MAX_MODULE} bytes")));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// `wanted` and everything they depend on, dependencies first; ties in name order. Built-in
/// modules are satisfied already and left out.
pub fn resolve(modules_dir: &Path, wanted: &[String]) -> Result<Vec<Module>, ModuleError> {
    let index = index(modules_dir)?;
    let builtin = builtin(modules_dir)?;
    let mut loaded: BTreeMap<String, (PathBuf, Vec<u8>, Vec<String>)> = BTreeMap::new();
    let mut todo: Vec<String> = wanted.iter().map(|w| canonical(w)).collect();
    while let Some(name) = todo.pop() {
        if loaded.contains_key(&name) {
            continue;
        }
        let Some(path) = index.get(&name) else {
            if builtin.contains(&name) {
                continue;
            }
            return Err(ModuleError::NotFound(name));
        };
        let data = read_module(&name, path)?;
        let mut deps = depends(&name, &data)?;
        deps.retain(|d| !builtin.contains(d));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A module tree under the test's own directory: `kernel/` plus `modules.builtin`.
    fn tree(name: &str, builtin: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nacre-modules-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel/drivers")).unwrap();
        std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
        dir
    }

    #[test]
    fn a_builtin_module_needs_no_file_and_a_missing_one_is_an_error() {
        let dir =
            tree("builtin", "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n");
        assert_eq!(resolve(&dir, &["virtio-pci".into(), "virtio_console".into()]).unwrap(), vec![]);
        let err = resolve(&dir, &["virtio_pci".into(), "tdx_guest".into()]).unwrap_err();
        assert!(matches!(err, ModuleError::NotFound(ref m) if m == "tdx_guest"), "{err}");
        // No modules.builtin: nothing counts as built in.
        std::fs::remove_file(dir.join("modules.builtin")).unwrap();
        assert!(matches!(resolve(&dir, &["virtio_pci".into()]), Err(ModuleError::NotFound(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A `.ko.xz` is read decompressed: an xz-packed file that is not a module fails on its
    /// contents ("no .modinfo"), not on its container.
    #[test]
    fn xz_modules_are_decompressed_other_compressions_refused() {
        let dir = tree("xz", "");
        let mut packed = Vec::new();
        lzma_rs::xz_compress(&mut std::fs::read("/bin/true").unwrap().as_slice(), &mut packed).unwrap();
        std::fs::write(dir.join("kernel/drivers/fake.ko.xz"), &packed).unwrap();
        let err = resolve(&dir, &["fake".into()]).unwrap_err();
        assert!(matches!(err, ModuleError::Bad { ref message, .. } if message.contains(".modinfo")), "{err}");
        std::fs::write(dir.join("kernel/drivers/fake.ko.xz"), b"not xz").unwrap();
        let err = resolve(&dir, &["fake".into()]).unwrap_err();
        assert!(matches!(err, ModuleError::Bad { ref message, .. } if message.contains("xz")), "{err}");
        std::fs::write(dir.join("kernel/drivers/other.ko.zst"), b"").unwrap();
        let err = resolve(&dir, &["fake".into()]).unwrap_err();
        assert!(
            matches!(err, ModuleError::Bad { ref message, .. } if message.contains("xz-compressed")),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_module_twice_is_refused() {
        let dir = tree("twice", "");
        std::fs::write(dir.join("kernel/drivers/dup.ko"), b"").unwrap();
        std::fs::write(dir.join("kernel/drivers/dup.ko.xz"), b"").unwrap();
        let err = resolve(&dir, &["dup".into()]).unwrap_err();
        assert!(matches!(err, ModuleError::Bad { ref message, .. } if message.contains("twice")), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let mut out = Bounded(Vec::new());
        out.write_all(&vec![0; MAX_MODULE]).unwrap();
        assert!(out.write_all(&[0]).is_err());
        assert_eq!(out.0.len(), MAX_MODULE);
    }
}
