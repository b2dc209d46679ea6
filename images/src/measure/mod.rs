//! Launch measurements: what an attestation service should expect for a given boot.

pub mod launch_digest;
pub mod sim;
pub mod snp;
pub mod tdx;

/// Why a measurement could not be computed. Inputs are files the operator named, so every
/// error says which input and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("{what}: {message}")]
    Input { what: &'static str, message: String },
    #[error("SNP measurement: {0}")]
    Snp(String),
    #[error("TDX firmware: {0}")]
    Tdvf(String),
    /// The kernel, its command line or the initrd cannot be booted as modelled.
    #[error("kernel: {0}")]
    Kernel(#[from] tdx::KernelError),
    /// The kernel's EFI (PE/COFF) image is malformed.
    #[error("kernel EFI image: {0}")]
    Pe(#[from] tdx::PeError),
}

pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path)
        .map_err(|e| MeasureError::Io { path: path.display().to_string(), message: e.to_string() })
}
