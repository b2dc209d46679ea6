//! Can this host run the requested backend? Checked before every SNP or TDX launch, so that
//! an operator gets a list of what is missing instead of a QEMU error (or worse, a VM that
//! silently runs without protection).

use std::path::Path;
use std::process::Command;

use crate::spec::Backend;

/// What the probe looked at (paths are parameters so tests can point at fixtures).
#[derive(Clone, Debug)]
pub struct Host<'a> {
    pub qemu: &'a Path,
    pub sysfs_module: &'a Path,
    pub dev: &'a Path,
}

impl Default for Host<'_> {
    fn default() -> Self {
        Host {
            qemu: Path::new("qemu-system-x86_64"),
            sysfs_module: Path::new("/sys/module"),
            dev: Path::new("/dev"),
        }
    }
}

/// A QEMU version, from `qemu-system-x86_64 --version`.
pub fn qemu_version(qemu: &Path) -> Result<(u32, u32), String> {
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {}: {e}", qemu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| format!("unexpected --version output: {text:?}"))?;
    let mut parts = v.split(['.', '+', '(']).map(|x| x.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(format!("unexpected QEMU version {v:?}")),
    }
}

/// Whether this QEMU knows the CPU model `name` (`-cpu help`).
pub fn has_cpu_model(qemu: &Path, name: &str) -> bool {
    Command::new(qemu)
        .args(["-cpu", "help"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| l.split_whitespace().nth(1) == Some(name))
        })
        .unwrap_or(false)
}

fn object_types(qemu: &Path) -> String {
    Command::new(qemu)
        .args(["-object", "help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn param(host: &Host<'_>, module: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(host.sysfs_module.join(module).join("parameters").join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn enabled(v: Option<String>) -> bool {
    matches!(v.as_deref(), Some("Y" | "y" | "1"))
}

/// Every reason `backend` cannot run here; empty when it can.
pub fn missing(host: &Host<'_>, backend: Backend) -> Vec<String> {
    let mut why = missing_hardware(host, backend);
    let (need, object) = match backend {
        Backend::Sim => {
            if let Err(e) = qemu_version(host.qemu) {
                why.push(e);
            }
            return why;
        }
        Backend::Snp => ((9, 1), "sev-snp-guest"),
        Backend::Tdx => ((10, 1), "tdx-guest"),
    };
    match qemu_version(host.qemu) {
        Ok(v) if v < need => why.push(format!(
            "QEMU {}.{} is too old for {}: needs ≥ {}.{}",
            v.0,
            v.1,
            backend.as_str(),
            need.0,
            need.1
        )),
        Ok(_) => {}
        Err(e) => why.push(e),
    }
    if !object_types(host.qemu).lines().any(|l| l.trim() == object) {
        why.push(format!("this QEMU has no `{object}` object type (`-object help`)"));
    }
    why
}

/// Every reason this host's devices, firmware or kernel cannot run `backend`, QEMU aside: a
/// host agent in a container brings its own QEMU, so a node's capability is this alone.
pub fn missing_hardware(host: &Host<'_>, backend: Backend) -> Vec<String> {
    let mut why = Vec::new();
    if backend == Backend::Sim {
        return why;
    }
    if !host.dev.join("kvm").exists() {
        why.push("/dev/kvm is missing (KVM is not available)".into());
    }
    match backend {
        Backend::Snp => {
            if !host.dev.join("sev").exists() {
                why.push("/dev/sev is missing (no AMD secure processor driver: ccp module, SEV enabled in firmware?)".into());
            }
            if !enabled(param(host, "kvm_amd", "sev_snp")) {
                why.push(
                    "kvm_amd parameter sev_snp is not Y (no SEV-SNP support in the host kernel or firmware)"
                        .into(),
                );
            }
        }
        _ => {
            if !enabled(param(host, "kvm_intel", "tdx")) {
                why.push(
                    "kvm_intel parameter tdx is not Y (no TDX support in the host kernel, BIOS or CPU)"
                        .into(),
                );
            }
        }
    }
    why
}

/// The Kubernetes node label that marks a node able to run `backend`'s guests: published by
/// Node Feature Discovery from a local feature file (`nacre doctor --node-labels`), selected
/// by the host agent's DaemonSet (deploy/base/host-agent).
pub fn node_label(backend: Backend) -> String {
    format!("feature.node.kubernetes.io/nacre-tee-{}", backend.as_str())
}

/// The node labels of this host's hardware: `node_label(b)=true` for each hardware backend
/// it can run, none when it has no TEE.
pub fn node_labels(host: &Host<'_>) -> Vec<String> {
    [Backend::Snp, Backend::Tdx]
        .into_iter()
        .filter(|b| missing_hardware(host, *b).is_empty())
        .map(|b| format!("{}=true", node_label(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// On this machine (no SEV-SNP or TDX, QEMU 7.2) both are refused, each with its reasons.
    #[test]
    fn snp_and_tdx_are_refused_here_with_reasons() {
        let host = Host::default();
        if qemu_version(host.qemu).is_err() {
            panic!("qemu-system-x86_64 is not installed: run scripts/inputs.sh");
        }
        let snp = missing(&host, Backend::Snp);
        assert!(snp.iter().any(|r| r.contains("/dev/sev")), "{snp:?}");
        assert!(snp.iter().any(|r| r.contains("sev-snp-guest")), "{snp:?}");
        let tdx = missing(&host, Backend::Tdx);
        assert!(tdx.iter().any(|r| r.contains("kvm_intel parameter tdx")), "{tdx:?}");
        assert!(tdx.iter().any(|r| r.contains("too old") || r.contains("tdx-guest")), "{tdx:?}");
        assert!(missing(&host, Backend::Sim).is_empty());
        assert_eq!(node_labels(&host), Vec::<String>::new(), "no TEE label here");
        assert!(has_cpu_model(host.qemu, "EPYC-Milan"));
        assert!(!has_cpu_model(host.qemu, "EPYC-Nonexistent"));
    }

    /// A host that has everything but an old QEMU is refused for that alone.
    #[test]
    fn only_the_missing_piece_is_named() {
        let root = std::env::temp_dir().join(format!("nacre-probe-{}", std::process::id()));
        let params = root.join("sys/kvm_amd/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(params.join("sev_snp"), "Y\n").unwrap();
        std::fs::write(root.join("dev/kvm"), "").unwrap();
        std::fs::write(root.join("dev/sev"), "").unwrap();
        let host = Host {
            qemu: Path::new("qemu-system-x86_64"),
            sysfs_module: &root.join("sys"),
            dev: &root.join("dev"),
        };
        let why = missing(&host, Backend::Snp);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("QEMU 7.2 is too old for snp: needs ≥ 9.1"), "{why:?}");
        // The node's hardware can: it is labelled for SNP (its QEMU is the container's).
        assert!(missing_hardware(&host, Backend::Snp).is_empty());
        assert_eq!(node_labels(&host), ["feature.node.kubernetes.io/nacre-tee-snp=true"]);
        std::fs::remove_file(root.join("dev/sev")).unwrap();
        assert_eq!(node_labels(&host), Vec::<String>::new(), "no /dev/sev, no label");
        let _ = std::fs::remove_dir_all(&root);
    }
}
