//! The default guest kernel, pinned by package version, pool path and SHA-256
//! (`images/kernel.pin`): fetched by its pool path from a Debian mirror with `curl` (no apt
//! source to add, nothing installed on the host), verified before it is unpacked, and verified
//! again after (the vmlinuz digest).

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::digest::{SHA256, digest};

const PIN: &str = include_str!("../kernel.pin");

/// Where the pinned package is fetched from unless `$NACRE_DEBIAN_MIRROR` names another
/// mirror. Any mirror will do, since the digest is checked; once Debian has removed the pinned
/// version, a snapshot.debian.org archive URL
/// (`https://snapshot.debian.org/archive/debian/<YYYYMMDDThhmmssZ>`) still has it.
pub const DEFAULT_MIRROR: &str = "https://deb.debian.org/debian";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPin {
    pub package: String,
    pub version: String,
    /// The .deb's path under a mirror's root (`pool/main/…`).
    pub deb_path: String,
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
        deb_path: get("KERNEL_DEB_PATH"),
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

/// `$NACRE_DEBIAN_MIRROR`, else [`DEFAULT_MIRROR`].
pub fn mirror() -> String {
    std::env::var("NACRE_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
        .trim_end_matches('/')
        .to_owned()
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
        let tmp = cache.join(format!("download-{}.deb", std::process::id()));
        let url = format!("{}/{}", mirror(), pin.deb_path);
        let result = run(Command::new("curl")
            .args(["-fsSL", "--retry", "3", "--proto", "=https,http", "-o"])
            .arg(&tmp)
            .arg(&url))
        .and_then(|()| {
            let sum = sha256_file(&tmp)?;
            if sum != pin.deb_sha256 {
                return Err(KernelError::Digest {
                    what: url.clone(),
                    got: sum,
                    want: pin.deb_sha256.clone(),
                });
            }
            std::fs::rename(&tmp, &deb).map_err(|e| io(&deb, e))
        });
        let _ = std::fs::remove_file(&tmp);
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
    // Trixie's packages install modules under /usr (merged /usr); bookworm's under /lib.
    let modules = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| root.join(d).join(release))
        .find(|d| d.is_dir())
        .ok_or_else(|| KernelError::Io {
            path: root.display().to_string(),
            message: format!("no usr/lib/modules/{release} or lib/modules/{release} in the package"),
        })?;
    Ok(Kernel { vmlinuz, modules })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pin_parses() {
        let p = super::pin();
        assert_eq!(p.package, "linux-image-6.12.117+deb13-cloud-amd64");
        assert_eq!(p.version, "6.12.117-1");
        // The pool path names the same package and version (a refresh that changes one but not
        // the other would fetch another file and fail on its digest).
        assert!(p.deb_path.starts_with("pool/main/l/linux-signed-amd64/"), "{}", p.deb_path);
        assert!(p.deb_path.ends_with(&format!("/{}_{}_amd64.deb", p.package, p.version)), "{}", p.deb_path);
        for sum in [&p.deb_sha256, &p.vmlinuz_sha256] {
            assert!(sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert!(p.vmlinuz_sha256.starts_with("ed8f0dbd") && p.vmlinuz_sha256.ends_with("87b0"));
    }
}
