//! Attesters: where the guest gets its evidence. One trait; the backend is chosen from the
//! measured configuration, never from anything the host can change at run time.

pub mod sim;
pub mod tsm;

use nacre_wire::Evidence;

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("no attestation device: {0}")]
    NoDevice(String),
    #[error("attestation device I/O: {0}")]
    Io(String),
    #[error("the secure processor refused: {0}")]
    Refused(String),
    #[error("malformed answer from the secure processor: {0}")]
    Malformed(String),
}

pub trait Attester {
    /// Evidence whose REPORT_DATA is exactly `report_data`.
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError>;
}
