//! Nacre's evidence wire formats: the SEV-SNP attestation report (also used, byte for byte, by
//! the simulated TEE), the TD's CCEL event log, and the REPORT_DATA bindings of DESIGN.md §3.
//!
//! This crate parses and encodes; it verifies nothing and does no I/O. Verification lives in
//! `nacre-verifier`, which checks signatures over the bytes this crate hands back unchanged.
#![forbid(unsafe_code)]

pub mod binding;
pub mod ccel;
pub mod error;
pub mod evidence;
pub mod snp;
pub mod sp;

pub use error::WireError;
pub use evidence::Evidence;

/// The kinds of trusted execution environment Nacre accepts evidence from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The simulated TEE: an SNP-format report signed by a test hierarchy. No confidentiality.
    Sim,
}

impl Tee {
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
            Tee::Sim => "sim",
        }
    }
}

impl core::fmt::Display for Tee {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
