//! Guest images and their launch measurements.
//!
//! - [`measure`]: the expected measurement of a boot, computed from the very bytes that are
//!   booted: the SEV-SNP launch digest (through the `sev` crate's measurement module, equal to
//!   `sev-snp-measure`), the TDX MRTD from TDVF metadata, and the simulated TEE's digest.
//! - [`sbom`]: the CycloneDX SBOM of an image, with the enclave's crates read from the list it
//!   embeds ([`deps`]).
#![forbid(unsafe_code)]

pub mod build;
pub mod cpio;
pub mod deps;
pub mod kernel;
pub mod measure;
pub mod modules;
pub mod sbom;
/// The signed reference-values format, now in `nacre-protocol` (the image builder writes it,
/// the attestation service and its clients read it); re-exported for the image tools.
pub use nacre_protocol::reference;
