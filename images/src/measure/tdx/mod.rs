//! TDX launch measurements of a direct kernel boot (QEMU `-bios OVMF.fd -kernel -initrd
//! -append` on the q35 machine), computed from the bytes the host boots:
//!
//! - [`tdvf`]: the TDVF metadata of the firmware and MRTD;
//! - [`kernel_patch`]: the kernel as QEMU patches its setup header, which is what the firmware
//!   measures; [`authenticode`]: the PE digest the firmware extends for it;
//! - [`hob`]: the TD HOB QEMU writes, the first RTMR0 event;
//! - [`events`]: every event digest, the expected event lists per RTMR, replay, and the
//!   comparison with a TD's event log.
//!
//! [`measure`] puts them together for one launch shape. MRTD, RTMR1 and RTMR2 are complete;
//! RTMR0 also contains QEMU's ACPI tables, which only the same QEMU build with the same machine
//! and device options produces, so its ACPI event digests are parameters ([`AcpiDigests`]).
//! `docs/measurements.md` ("TDX") has every byte layout, the sources, what was cross-checked
//! and what is uncertain.

pub mod authenticode;
pub mod events;
pub mod hob;
pub mod kernel_patch;
pub mod tdvf;

pub use authenticode::PeError;
pub use events::{AcpiDigests, EventMismatch, ExpectedEvent, Sha384, first_difference, replay};
pub use kernel_patch::KernelError;
pub use tdvf::{Order, PAGE_SIZE, Section, SectionType, Tdvf, mrtd, mrtd_file};

use crate::measure::MeasureError;

/// The host QEMU's version, as far as the measurements depend on it: QEMU 8.x TDX builds add
/// a section's pages before measuring them ([`Order::SectionBySection`]), QEMU ≥ 9 page by page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QemuVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl QemuVersion {
    /// The MRTD page order of this QEMU (dstack-mr's rule; see `docs/measurements.md`).
    pub fn page_order(self) -> Order {
        if self.major == 8 { Order::SectionBySection } else { Order::PageByPage }
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for QemuVersion {
    type Err = MeasureError;
    /// `MAJOR.MINOR.PATCH` (a Debian-style suffix after `+` or `-` is ignored); QEMU before 8
    /// has no TDX and is refused.
    fn from_str(s: &str) -> Result<Self, MeasureError> {
        let bad = |why: &str| MeasureError::Input { what: "QEMU version", message: format!("{s:?}: {why}") };
        let core = s.split(['+', '-']).next().unwrap_or_default();
        let parts: Vec<u16> = core
            .split('.')
            .map(|p| p.parse::<u16>().map_err(|_| bad("not MAJOR.MINOR.PATCH")))
            .collect::<Result<_, _>>()?;
        let [major, minor, patch] = parts[..] else {
            return Err(bad("not MAJOR.MINOR.PATCH"));
        };
        if major < 8 {
            return Err(bad("QEMU before 8.0 cannot launch TDX guests"));
        }
        Ok(QemuVersion { major, minor, patch })
    }
}

/// What the host launches the TD with, beyond the boot files. The vCPU count enters RTMR0 only
/// through the ACPI tables, which are inputs here; it is part of the shape because the ACPI
/// digests (and so RTMR0) hold for one vCPU count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchShape {
    /// Guest RAM (`-m`), a multiple of 4 KiB.
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub qemu: QemuVersion,
}

/// The files the host boots, as bytes.
#[derive(Clone, Copy)]
pub struct BootInputs<'a> {
    /// The TDVF (`-bios`).
    pub firmware: &'a [u8],
    /// The bzImage (`-kernel`).
    pub kernel: &'a [u8],
    /// `-initrd`, if any.
    pub initrd: Option<&'a [u8]>,
    /// `-append` (printable ASCII).
    pub cmdline: &'a str,
}

impl std::fmt::Debug for BootInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootInputs")
            .field("firmware_len", &self.firmware.len())
            .field("kernel_len", &self.kernel.len())
            .field("initrd_len", &self.initrd.map(<[u8]>::len))
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

/// The expected measurements of one launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxMeasurement {
    pub shape: LaunchShape,
    pub mrtd: Sha384,
    /// The kernel's Authenticode digest as the firmware measures it (first RTMR1 event).
    pub kernel_authenticode: Sha384,
    /// SHA-384 of the TD HOB (first RTMR0 event).
    pub td_hob: Sha384,
    /// SHA-384 of the configuration firmware volume (second RTMR0 event).
    pub cfv: Sha384,
    pub rtmr1_events: Vec<ExpectedEvent>,
    pub rtmr2_events: Vec<ExpectedEvent>,
}

impl TdxMeasurement {
    pub fn rtmr1(&self) -> Sha384 {
        events::replay_register(&self.rtmr1_events, 1)
    }

    pub fn rtmr2(&self) -> Sha384 {
        events::replay_register(&self.rtmr2_events, 2)
    }

    /// The RTMR0 events, with QEMU's ACPI digests for this shape.
    pub fn rtmr0_events(&self, acpi: &AcpiDigests) -> Vec<ExpectedEvent> {
        events::rtmr0_events(self.td_hob, self.cfv, acpi)
    }

    pub fn rtmr0(&self, acpi: &AcpiDigests) -> Sha384 {
        events::replay_register(&self.rtmr0_events(acpi), 0)
    }

    /// Every expected event of RTMR0, RTMR1, RTMR2 (grouped by register; compare a log with
    /// [`first_difference`], which follows each register's own order).
    pub fn expected_events(&self, acpi: &AcpiDigests) -> Vec<ExpectedEvent> {
        let mut all = self.rtmr0_events(acpi);
        all.extend(self.rtmr1_events.iter().cloned());
        all.extend(self.rtmr2_events.iter().cloned());
        all
    }
}

/// The expected MRTD and RTMR events of a direct kernel boot of these files in this shape.
pub fn measure(shape: &LaunchShape, boot: &BootInputs<'_>) -> Result<TdxMeasurement, MeasureError> {
    if shape.vcpus == 0 {
        return Err(MeasureError::Input { what: "vCPUs", message: "0 vCPUs".into() });
    }
    let tdvf = Tdvf::parse(boot.firmware)?;
    let mrtd = tdvf.mrtd(shape.qemu.page_order())?;
    let td_hob = events::sha384(&hob::td_hob(tdvf.sections(), shape.memory_bytes)?);
    let cfv = events::sha384(tdvf.cfv()?);
    let patched = kernel_patch::qemu_patched_kernel(
        boot.kernel,
        boot.cmdline,
        boot.initrd.map(<[u8]>::len),
        shape.memory_bytes,
    )?;
    let kernel_authenticode = authenticode::authenticode_sha384(&patched)?;
    Ok(TdxMeasurement {
        shape: *shape,
        mrtd,
        kernel_authenticode,
        td_hob,
        cfv,
        rtmr1_events: events::rtmr1_events(kernel_authenticode),
        rtmr2_events: events::rtmr2_events(boot.cmdline, boot.initrd),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn qemu_versions() {
        let v: QemuVersion = "9.2.0".parse().unwrap();
        assert_eq!(v.page_order(), Order::PageByPage);
        assert_eq!("8.2.2+ds-0ubuntu1".parse::<QemuVersion>().unwrap().page_order(), Order::SectionBySection);
        assert_eq!("10.1.0".parse::<QemuVersion>().unwrap().page_order(), Order::PageByPage);
        for bad in ["7.2.0", "9.2", "9.x.0", "", "9.2.0.1"] {
            assert!(bad.parse::<QemuVersion>().is_err(), "{bad}");
        }
        assert_eq!(v.to_string(), "9.2.0");
    }

    /// The TD HOB digests for Debian 12's OVMF.fd in `../shared/research/tdx-measurement.md`
    /// (recorded abbreviated, from dstack-mr's model): 2 GiB `0b8772e5…a749`, 4 GiB
    /// `5b684faf…89de`. Fails, not skips, without the file (as `debian_ovmf_mrtd`).
    #[test]
    fn bookworm_td_hob_matches_the_research_note() {
        let fw = std::fs::read("/usr/share/ovmf/OVMF.fd")
            .unwrap_or_else(|e| panic!("/usr/share/ovmf/OVMF.fd: {e}. Install the Debian package `ovmf`."));
        let tdvf = Tdvf::parse(&fw).unwrap();
        for (memory, head, tail) in [(2u64 << 30, "0b8772e5", "a749"), (4 << 30, "5b684faf", "89de")] {
            let d = hex::encode(events::sha384(&hob::td_hob(tdvf.sections(), memory).unwrap()));
            assert!(d.starts_with(head) && d.ends_with(tail), "{memory:#x}: {d}");
        }
    }
}
