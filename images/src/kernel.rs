//! The default guest kernel, pinned by package version and SHA-256 (`images/kernel.pin`):
//! fetched with `apt-get download` (nothing is installed on the host), verified before it is
//! unpacked, and verified again after (the vmlinuz digest).

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::digest::{SHA256, digest};

const PIN: &str = include_str!("../kernel.pin");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPin {
    pub package: String,
    pub version: String,
    pub deb_sha256: String,
    pub vmlinuz_sha256: String,
}

/// The pinned kernel's files.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Tool(String),
    #[error("{what}: SHA-256 {got}, pinned {want}")]
    Digest { what: String, got: String, want: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

pub fn pin() -> KernelPin {
    let get = |key: &str| {
        PIN.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    KernelPin {
        package: get("KERNEL_PKG"),
        version: get("KERNEL_VERSION"),
        deb_sha256: get("KERNEL_DEB_SHA256"),
        vmlinuz_sha256: get("VMLINUZ_SHA256"),
    }
}

fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let data = std::fs::read(path)
        .map_err(|e| KernelError::Io { path: path.display().to_string(), message: e.to_string() })?;
    Ok(hex::encode(digest(&SHA256, &data)))
}

fn run(cmd: &mut Command) -> Result<(), KernelError> {
    let out = cmd.output().map_err(|e| KernelError::Tool(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(KernelError::Tool(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// The pinned kernel under `cache` (fetched and unpacked on first use).
pub fn fetch_pinned(cache: &Path) -> Result<Kernel, KernelError> {
    let pin = pin();
    let io = |p: &Path, e: std::io::Error| KernelError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(cache).map_err(|e| io(cache, e))?;
    let deb = cache.join(format!("{}_{}_amd64.deb", pin.package, pin.version));
    if !deb.exists() || sha256_file(&deb)? != pin.deb_sha256 {
        let tmp = cache.join(format!("download-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let fetched = run(Command::new("apt-get")
            .args(["download", "-q", &format!("{}={}", pin.package, pin.version)])
            .current_dir(&tmp));
        let found = std::fs::read_dir(&tmp)
            .map_err(|e| io(&tmp, e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        let result = fetched.and_then(|()| {
            let got = found.ok_or_else(|| KernelError::Tool("apt-get download produced no .deb".into()))?;
            let sum = sha256_file(&got)?;
            if sum != pin.deb_sha256 {
                return Err(KernelError::Digest {
                    what: got.display().to_string(),
                    got: sum,
                    want: pin.deb_sha256.clone(),
                });
            }
            std::fs::rename(&got, &deb).map_err(|e| io(&deb, e))
        });
        let _ = std::fs::remove_dir_all(&tmp);
        result?;
    }
    let root = cache.join(format!("kernel-{}", pin.version));
    if !root.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&root);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        std::fs::write(root.join(".done"), b"").map_err(|e| io(&root, e))?;
    }
    let release = pin.package.trim_start_matches("linux-image-");
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let sum = sha256_file(&vmlinuz)?;
    if sum != pin.vmlinuz_sha256 {
        return Err(KernelError::Digest {
            what: vmlinuz.display().to_string(),
            got: sum,
            want: pin.vmlinuz_sha256,
        });
    }
    Ok(Kernel { vmlinuz, modules: root.join("lib/modules").join(release) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pin_parses() {
        let p = super::pin();
        assert_eq!(p.package, "linux-image-6.1.0-50-cloud-amd64");
        assert_eq!(p.version, "6.1.176-1");
        assert_eq!(p.deb_sha256.len(), 64);
        assert!(p.vmlinuz_sha256.starts_with("3d616aa8") && p.vmlinuz_sha256.ends_with("9654"));
    }
}
