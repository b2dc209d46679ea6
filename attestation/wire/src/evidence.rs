//! The evidence envelope every protocol carries (DESIGN.md §3):
//! `Evidence { tee, report, certs }`.
//!
//! The envelope only frames bytes; the `tee` label is a routing hint, never a claim. A verifier
//! picks its trust root from the label and the chain then has to hold under that root, so a sim
//! report labelled `snp` fails AMD's chain rather than passing as hardware evidence.

use serde::{Deserialize, Serialize};

use crate::Tee;

/// Largest report or quote accepted inside an envelope (a TDX v5 quote with its PCK chain is
/// about 5 KiB; SNP reports are 1184 bytes).
pub const MAX_REPORT_LEN: usize = 16 * 1024;
/// Most certificates and CRLs an envelope may carry (ARK, ASK/ASVK, VCEK/VLEK, CRL).
pub const MAX_CERTS: usize = 8;
/// Largest single certificate or CRL.
pub const MAX_CERT_LEN: usize = 8 * 1024;

/// Evidence as produced by an attester.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub tee: Tee,
    /// SNP/sim: the 1184-byte attestation report. TDX: the DCAP quote.
    #[serde(with = "serde_bytes")]
    pub report: Vec<u8>,
    /// DER certificates and CRLs that came with the report (the SNP extended-report table);
    /// may be empty when the verifier has them cached.
    pub certs: Vec<serde_bytes::ByteBuf>,
}

impl Evidence {
    /// Checks the envelope's size limits (the contents are checked by the verifier).
    pub fn check_limits(&self) -> Result<(), crate::WireError> {
        use crate::WireError::OutOfRange;
        if self.report.is_empty() || self.report.len() > MAX_REPORT_LEN {
            return Err(OutOfRange { field: "evidence.report length", value: self.report.len() as u64 });
        }
        if self.certs.len() > MAX_CERTS {
            return Err(OutOfRange { field: "evidence.certs count", value: self.certs.len() as u64 });
        }
        if let Some(c) = self.certs.iter().find(|c| c.is_empty() || c.len() > MAX_CERT_LEN) {
            return Err(OutOfRange { field: "evidence.certs[] length", value: c.len() as u64 });
        }
        Ok(())
    }
}

impl core::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Evidence")
            .field("tee", &self.tee)
            .field("report_len", &self.report.len())
            .field("certs", &self.certs.len())
            .finish()
    }
}
