//! Guest images and their launch measurements.
//!
//! - [`measure`]: the expected measurement of a boot, computed from the very bytes that are
//!   booted: the SEV-SNP launch digest (through the `sev` crate's measurement module, equal to
//!   `sev-snp-measure`), the TDX MRTD from TDVF metadata, and the simulated TEE's digest.
#![forbid(unsafe_code)]

pub mod build;
pub mod cpio;
pub mod measure;
pub mod modules;
pub mod reference;
