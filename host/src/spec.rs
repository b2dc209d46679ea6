//! What to launch: the operator's launch specification (TOML for the CLI, JSON on the agent's
//! API), checked before anything runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which TEE the VM runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// QEMU with TCG plus the host's simulated secure processor. INSECURE: for development.
    Sim,
    /// AMD SEV-SNP (QEMU ≥ 9.1, `sev-snp-guest`, kernel hashes, AmdSev OVMF).
    Snp,
    /// Intel TDX (QEMU ≥ 10.1, `tdx-guest`, TDVF, quote-generation socket).
    Tdx,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            Backend::Snp => "snp",
            Backend::Tdx => "tdx",
        }
    }
}

fn one() -> u32 {
    1
}
fn memory() -> u32 {
    1024
}
/// A model QEMU 7.2 (TCG, sim) and QEMU ≥ 9.1 (SNP) both know.
fn epyc() -> String {
    "EPYC-Milan".into()
}
fn cbitpos() -> u8 {
    51
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// `[a-z0-9-]{1,32}`: names the VM's state directory.
    pub name: String,
    pub backend: Backend,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// sim: the BIOS QEMU boots (default: Debian's SeaBIOS); snp: an AmdSev OVMF; tdx: a TDVF
    /// that measures into RTMR0–2 (`NACRE_TDVF` from scripts/inputs.sh, Debian trixie's
    /// OVMF.fd; bookworm's leaves them zero, so its TDs attest the firmware alone).
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    #[serde(default = "one")]
    pub vcpus: u32,
    /// QEMU EPYC model for sim and snp (it is part of the measurement).
    #[serde(default = "epyc")]
    pub vcpu_type: String,
    #[serde(default = "memory")]
    pub memory_mib: u32,
    /// The sealed model, given to the guest as a read-only virtio disk.
    #[serde(default)]
    pub sealed_model: Option<PathBuf>,
    /// Host port on 127.0.0.1 forwarded to the guest's serving port 8443.
    #[serde(default)]
    pub serve_port: Option<u16>,
    /// The attestation service on the host's loopback; the guest reaches it, and nothing
    /// else, at `10.0.2.100:8443`.
    #[serde(default)]
    pub attestation_service: Option<SocketAddr>,
    /// 32 bytes, hex: the launch's HOST_DATA (sim and snp).
    #[serde(default)]
    pub host_data: Option<String>,
    /// SEV-SNP: the C-bit position of this host (51 on Milan/Genoa).
    #[serde(default = "cbitpos")]
    pub cbitpos: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("launch spec: {0}")]
pub struct SpecError(pub String);

pub const MIN_MEMORY_MIB: u32 = 128;
pub const MAX_MEMORY_MIB: u32 = 256 * 1024;
pub const MAX_VCPUS: u32 = 64;

impl LaunchSpec {
    pub fn check(&self) -> Result<(), SpecError> {
        let bad = |m: String| Err(SpecError(m));
        if self.name.is_empty()
            || self.name.len() > 32
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(format!("name {:?}: 1–32 of [a-z0-9-]", self.name));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus {}: 1..={MAX_VCPUS}", self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return bad(format!("memory_mib {}: {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}", self.memory_mib));
        }
        if self.cmdline.trim() != self.cmdline
            || self.cmdline.len() > 2048
            || !self.cmdline.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return bad("cmdline: printable ASCII without leading/trailing blanks, ≤ 2048 bytes".into());
        }
        if self.vcpu_type.parse::<nacre_images::measure::snp::VcpuType>().is_err() {
            return bad(format!("vcpu_type {:?} is not a QEMU EPYC model", self.vcpu_type));
        }
        if let Some(h) = &self.host_data
            && (h.len() != 64 || hex::decode(h).is_err())
        {
            return bad("host_data: 64 hex digits".into());
        }
        if let Some(a) = self.attestation_service
            && !a.ip().is_loopback()
        {
            return bad(format!("attestation_service {a}: must be a loopback address"));
        }
        if self.backend != Backend::Sim && self.firmware.is_none() {
            return bad(format!("{}: firmware is required (AmdSev OVMF or TDVF)", self.backend.as_str()));
        }
        Ok(())
    }

    pub fn host_data(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(h) = &self.host_data {
            let _ = hex::decode_to_slice(h, &mut out);
        }
        out
    }
}
