//! The SEV-SNP launch digest of OVMF + direct kernel boot with kernel hashes, via the `sev`
//! crate's measurement module (which reproduces `sev-snp-measure`; our tests compare the two).

use std::path::PathBuf;

use sev::measurement::snp::{SnpMeasurementArgs, snp_calc_launch_digest};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

use super::MeasureError;

/// A QEMU EPYC vCPU model, by its QEMU name (`EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`, …): the
/// VMSA carries its CPUID signature, so the digest depends on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VcpuType(pub CpuType);

impl std::str::FromStr for VcpuType {
    type Err = MeasureError;
    fn from_str(s: &str) -> Result<Self, MeasureError> {
        use CpuType::*;
        const ALL: [CpuType; 18] = [
            Epyc,
            EpycV1,
            EpycV2,
            EpycIBPB,
            EpycV3,
            EpycV4,
            EpycRome,
            EpycRomeV1,
            EpycRomeV2,
            EpycRomeV3,
            EpycMilan,
            EpycMilanV1,
            EpycMilanV2,
            EpycGenoa,
            EpycGenoaV1,
            EpycTurin,
            EpycTurinV1,
            EpycTurinV2,
        ];
        ALL.into_iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
            .map(VcpuType)
            .ok_or_else(|| MeasureError::Input {
                what: "vCPU type",
                message: format!("{s:?} is not a QEMU EPYC model (EPYC, EPYC-v1…v4, EPYC-Rome[-v1…v3], EPYC-Milan[-v1,v2], EPYC-Genoa[-v1], EPYC-Turin[-v1,v2])"),
            })
    }
}

impl std::fmt::Display for VcpuType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What an SNP guest boots.
#[derive(Clone, Debug)]
pub struct SnpLaunch {
    /// An AmdSev OVMF build (with the SEV hashes table section when a kernel is given).
    pub ovmf: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub vcpus: u32,
    pub vcpu_type: VcpuType,
    /// SEV_FEATURES of the VMSA (QEMU's default is 0x1, SNPActive).
    pub guest_features: u64,
}

/// The 48-byte launch digest (the report's MEASUREMENT).
pub fn launch_digest(l: &SnpLaunch) -> Result<[u8; 48], MeasureError> {
    if l.vcpus == 0 || l.vcpus > 512 {
        return Err(MeasureError::Input { what: "vCPUs", message: format!("{} is not in 1..=512", l.vcpus) });
    }
    if l.kernel.is_none() && (l.initrd.is_some() || l.append.is_some()) {
        return Err(MeasureError::Input {
            what: "kernel",
            message: "an initrd or cmdline needs a kernel".into(),
        });
    }
    for p in [Some(&l.ovmf), l.kernel.as_ref(), l.initrd.as_ref()].into_iter().flatten() {
        // The crate's own error for a missing file does not name it.
        std::fs::metadata(p)
            .map_err(|e| MeasureError::Io { path: p.display().to_string(), message: e.to_string() })?;
    }
    let digest = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: l.vcpus,
        vcpu_type: l.vcpu_type.0,
        ovmf_file: l.ovmf.clone(),
        guest_features: GuestFeatures(l.guest_features),
        kernel_file: l.kernel.clone(),
        initrd_file: l.initrd.clone(),
        append: l.append.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    })
    .map_err(|e| MeasureError::Snp(e.to_string()))?;
    let mut out = [0u8; 48];
    hex::decode_to_slice(digest.get_hex_ld(), &mut out).map_err(|e| MeasureError::Snp(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The 4 KiB tail of an AmdSev OVMF build that the `sev` crate ships with its tests.
    pub(crate) fn amdsev_tail() -> PathBuf {
        let meta = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
        let sev =
            v["packages"].as_array().unwrap().iter().find(|p| p["name"] == "sev").expect("the sev package");
        let manifest = PathBuf::from(sev["manifest_path"].as_str().unwrap());
        manifest.parent().unwrap().join("tests/measurement/ovmf_AmdSev_suffix.bin")
    }

    #[test]
    fn vcpu_names_round_trip() {
        for name in [
            "EPYC",
            "EPYC-v2",
            "EPYC-v4",
            "EPYC-Rome",
            "EPYC-Milan",
            "EPYC-Milan-v2",
            "EPYC-Genoa",
            "EPYC-Turin",
        ] {
            assert_eq!(name.parse::<VcpuType>().unwrap().to_string(), name);
        }
        assert!("Skylake".parse::<VcpuType>().is_err());
    }
}
