//! The simulated TEE's measurement: the SNP launch-digest algorithm over exactly what the sim
//! backend boots: the firmware image, a page holding the SHA-256 of kernel, initrd and command
//! line (QEMU's SEV hashes table, as with `kernel-hashes=on`), and one VMSA per vCPU of the
//! chosen model. Any changed byte of any of them changes the digest.
//!
//! The caller passes the bytes it hands to QEMU (read once; the host agent boots private
//! copies of exactly these buffers), so what is measured is what is booted.

use aws_lc_rs::digest::{SHA256, digest};
use sev::measurement::vmsa::{GuestFeatures, VMMType, VMSA};

use super::MeasureError;
use super::launch_digest::{LaunchDigest, PAGE, PageType};
use super::snp::VcpuType;

/// Where the sim digest places the hashes page (sim-specific: no firmware reads it).
pub const HASHES_GPA: u64 = 0x0080_0000;
/// Reset vector of the application processors in the sim VMSAs (the x86 reset vector).
const AP_EIP: u64 = 0xFFFF_FFF0;
const MAX_FIRMWARE: usize = 16 << 20;

/// What a sim guest boots.
#[derive(Clone, Copy, Debug)]
pub struct SimLaunch<'a> {
    pub firmware: &'a [u8],
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    pub vcpus: u32,
    pub vcpu_type: VcpuType,
}

pub fn digest_of(l: &SimLaunch<'_>) -> Result<[u8; 48], MeasureError> {
    let input = |what, message: String| MeasureError::Input { what, message };
    if l.firmware.is_empty() || !l.firmware.len().is_multiple_of(PAGE) || l.firmware.len() > MAX_FIRMWARE {
        return Err(input("firmware", format!("{} bytes: not whole pages up to 16 MiB", l.firmware.len())));
    }
    if l.kernel.is_empty() {
        return Err(input("kernel", "empty".into()));
    }
    if l.cmdline.trim() != l.cmdline || l.cmdline.contains('\0') {
        // QEMU hashes the trimmed line; refuse anything whose booted and hashed forms differ.
        return Err(input("cmdline", "leading/trailing whitespace or NUL".into()));
    }
    if l.vcpus == 0 || l.vcpus > 512 {
        return Err(input("vCPUs", format!("{} is not in 1..=512", l.vcpus)));
    }
    let mut ld = LaunchDigest::new();
    let bad = |e: super::launch_digest::BlockSize| input("firmware", e.to_string());
    ld.add_pages(PageType::Normal, (1u64 << 32) - l.firmware.len() as u64, l.firmware).map_err(bad)?;
    ld.add_pages(PageType::Normal, HASHES_GPA, &hashes_page(l.kernel, l.initrd, l.cmdline)).map_err(bad)?;
    let vmsa = VMSA::new(AP_EIP, l.vcpu_type.0, VMMType::QEMU, Some(u64::from(l.vcpus)), GuestFeatures(1));
    let pages = vmsa.pages(l.vcpus as usize).map_err(|e| MeasureError::Snp(e.to_string()))?;
    for page in &pages {
        ld.add_pages(PageType::Vmsa, 0, page).map_err(bad)?;
    }
    Ok(ld.finish())
}

/// QEMU's SEV hashes table (`SevHashTable`, padded to 16 bytes) at the start of a zero page:
/// header GUID ‖ length, then cmdline, initrd and kernel entries of GUID ‖ length ‖ SHA-256.
pub fn hashes_page(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Vec<u8> {
    const HEADER: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
    const KERNEL: &str = "4de79437-abd2-427f-b835-d5b172d2045b";
    const INITRD: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
    const CMDLINE: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    let mut page = Vec::with_capacity(PAGE);
    page.extend_from_slice(&guid_le(HEADER));
    page.extend_from_slice(&(16u16 + 2 + 3 * 50).to_le_bytes());
    for (guid, data) in [(CMDLINE, line.as_slice()), (INITRD, initrd), (KERNEL, kernel)] {
        page.extend_from_slice(&guid_le(guid));
        page.extend_from_slice(&50u16.to_le_bytes());
        page.extend_from_slice(digest(&SHA256, data).as_ref());
    }
    page.resize(PAGE, 0);
    page
}

/// A GUID in its mixed-endian binary form (the first three fields little-endian).
fn guid_le(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn launch<'a>(fw: &'a [u8], kernel: &'a [u8], initrd: &'a [u8], cmdline: &'a str) -> SimLaunch<'a> {
        SimLaunch { firmware: fw, kernel, initrd, cmdline, vcpus: 1, vcpu_type: "EPYC-v4".parse().unwrap() }
    }

    /// Our table is byte for byte the one the `sev` crate builds for QEMU.
    #[test]
    fn hashes_page_equals_sev() {
        let dir = std::env::temp_dir().join(format!("nacre-sim-hashes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), b"kernel bytes").unwrap();
        std::fs::write(dir.join("i"), b"initrd bytes").unwrap();
        let theirs = sev::measurement::sev_hashes::SevHashes::new(
            dir.join("k"),
            Some(dir.join("i")),
            Some("console=ttyS0 nacre.x=1"),
        )
        .unwrap()
        .construct_page(0)
        .unwrap();
        assert_eq!(hashes_page(b"kernel bytes", b"initrd bytes", "console=ttyS0 nacre.x=1"), theirs);
    }

    #[test]
    fn every_input_changes_the_digest() {
        let fw = vec![0x90u8; 2 * PAGE];
        let base = digest_of(&launch(&fw, b"k", b"i", "c")).unwrap();
        assert_eq!(base, digest_of(&launch(&fw, b"k", b"i", "c")).unwrap(), "deterministic");
        let mut fw2 = fw.clone();
        fw2[100] ^= 1;
        let mut two = launch(&fw, b"k", b"i", "c");
        two.vcpus = 2;
        let mut milan = launch(&fw, b"k", b"i", "c");
        milan.vcpu_type = "EPYC-Milan".parse().unwrap();
        for other in [
            launch(&fw2, b"k", b"i", "c"),
            launch(&fw, b"K", b"i", "c"),
            launch(&fw, b"k", b"j", "c"),
            launch(&fw, b"k", b"i", "d"),
            two,
            milan,
        ] {
            assert_ne!(digest_of(&other).unwrap(), base, "{other:?}");
        }
    }

    #[test]
    fn ambiguous_inputs_are_refused() {
        let fw = vec![0u8; PAGE];
        assert!(digest_of(&launch(&fw[..100], b"k", b"", "c")).is_err());
        assert!(digest_of(&launch(&fw, b"", b"", "c")).is_err());
        assert!(digest_of(&launch(&fw, b"k", b"", " c")).is_err());
        assert!(digest_of(&launch(&fw, b"k", b"", "c\0")).is_err());
    }
}
