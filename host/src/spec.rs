//! What to launch: the operator's launch specification (TOML for the CLI, JSON on the agent's
//! API), checked before anything runs.

use std::net::{IpAddr, Ipv4Addr};
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
fn loopback() -> Ipv4Addr {
    Ipv4Addr::LOCALHOST
}

/// `HOST:PORT` where HOST is an IP address (IPv6 in brackets) or a DNS name: checked when
/// parsed, since it ends up in QEMU's command line (a comma there would add options).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceAddr {
    host: String,
    port: u16,
}

impl ServiceAddr {
    /// For `TcpStream::connect`, which resolves a name.
    pub fn host_port(&self) -> (&str, u16) {
        (self.host.trim_start_matches('[').trim_end_matches(']'), self.port)
    }
}

impl TryFrom<String> for ServiceAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ServiceAddr> for String {
    fn from(a: ServiceAddr) -> String {
        a.to_string()
    }
}

impl std::fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for ServiceAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not HOST:PORT (an IP address or a DNS name, and a port)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let is_ip = ip.parse::<IpAddr>().is_ok_and(|a| host.starts_with('[') == a.is_ipv6());
        let is_name = host.len() <= 253
            && host.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !(is_ip || is_name) {
            return Err(bad());
        }
        Ok(ServiceAddr { host: host.to_ascii_lowercase(), port })
    }
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
    /// Host port forwarded to the guest's serving port 8443.
    #[serde(default)]
    pub serve_port: Option<u16>,
    /// The address `serve_port` is bound on. Default 127.0.0.1; in a Kubernetes pod, 0.0.0.0
    /// binds the pod's own address (its network namespace, not the node's), so that a Service
    /// reaches the guest. TLS ends in the guest either way: whoever connects verifies it.
    #[serde(default = "loopback")]
    pub serve_address: Ipv4Addr,
    /// The attestation service as `HOST:PORT` (an IP address, or a DNS name such as its
    /// Kubernetes Service's); the guest reaches it, and nothing else, at `10.0.2.100:8443`.
    #[serde(default)]
    pub attestation_service: Option<ServiceAddr>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_host_and_port_and_nothing_else() {
        for (text, host) in [
            ("127.0.0.1:8443", "127.0.0.1"),
            ("[::1]:8443", "::1"),
            ("nacre-attestation.nacre-attestation.svc:8443", "nacre-attestation.nacre-attestation.svc"),
            ("Service.Example:1", "service.example"),
        ] {
            let a: ServiceAddr = text.parse().unwrap();
            assert_eq!(a.host_port().0, host, "{text}");
        }
        for bad in [
            "",
            "host",
            "host:0",
            "host:65536",
            "::1:8443",
            "[127.0.0.1]:8443",
            "a,b:8443",
            "a b:8443",
            "-a:8443",
            "a..b:8443",
            "x:8443,hostfwd=tcp::22-:22",
            &format!("{}:1", "a".repeat(64)),
        ] {
            assert!(bad.parse::<ServiceAddr>().is_err(), "{bad:?} accepted");
        }
    }
}
