//! The evidence envelope every protocol carries (DESIGN.md §3):
//! `Evidence { tee, report, certs, event_log }`.
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
/// Largest TDX event log (the used part of the CCEL log area, without its padding). A
/// direct-boot TDVF log is about 2 KiB, a td-shim log 10 KiB, a grub boot 15-20 KiB (the
/// published CCEL samples of confidential-containers/trustee); 64 KiB is the log area TDVF
/// reserves, so no log it writes can exceed it, and it keeps an envelope's memory bounded.
pub const MAX_EVENT_LOG_LEN: usize = 64 * 1024;

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
    /// TDX only: the TD's event log ([`crate::ccel`]), which the verifier replays against the
    /// quote's RTMRs. Absent (and then not encoded at all, so SNP and sim envelopes are what
    /// they were) when the guest has none.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub event_log: Option<Vec<u8>>,
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
        if let Some(log) = &self.event_log {
            // Only a TD has a CCEL log; an SNP or sim envelope carrying one is not what any
            // attester of ours sends.
            if self.tee != Tee::Tdx {
                return Err(crate::WireError::Inconsistent {
                    what: "evidence.event_log on non-TDX evidence",
                });
            }
            if log.is_empty() || log.len() > MAX_EVENT_LOG_LEN {
                return Err(OutOfRange { field: "evidence.event_log length", value: log.len() as u64 });
            }
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
            .field("event_log_len", &self.event_log.as_ref().map(Vec::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn encode(e: &impl Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(e, &mut out).unwrap();
        out
    }

    fn evidence(tee: Tee, event_log: Option<Vec<u8>>) -> Evidence {
        Evidence { tee, report: vec![7; 64], certs: vec![serde_bytes::ByteBuf::from(vec![1, 2])], event_log }
    }

    /// The three-field envelope of before the event log, for byte comparison.
    #[derive(Serialize)]
    struct Before<'a> {
        tee: Tee,
        #[serde(with = "serde_bytes")]
        report: &'a [u8],
        certs: &'a [serde_bytes::ByteBuf],
    }

    #[test]
    fn envelopes_without_a_log_encode_as_before() {
        for tee in [Tee::Snp, Tee::Sim, Tee::Tdx] {
            let e = evidence(tee, None);
            assert_eq!(encode(&e), encode(&Before { tee, report: &e.report, certs: &e.certs }));
            let back: Evidence = ciborium::from_reader(&encode(&e)[..]).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_tdx_log_round_trips_and_is_bounded() {
        let e = evidence(Tee::Tdx, Some(vec![1; 100]));
        let back: Evidence = ciborium::from_reader(&encode(&e)[..]).unwrap();
        assert_eq!(back, e);
        e.check_limits().unwrap();
        evidence(Tee::Tdx, Some(vec![1; MAX_EVENT_LOG_LEN])).check_limits().unwrap();
        let too_big = evidence(Tee::Tdx, Some(vec![1; MAX_EVENT_LOG_LEN + 1]));
        assert!(matches!(too_big.check_limits(), Err(crate::WireError::OutOfRange { .. })));
        // Present but empty is not "absent": refused rather than silently dropped.
        assert!(evidence(Tee::Tdx, Some(Vec::new())).check_limits().is_err());
    }

    #[test]
    fn only_tdx_evidence_carries_a_log() {
        for tee in [Tee::Snp, Tee::Sim] {
            let e = evidence(tee, Some(vec![1; 100]));
            assert!(matches!(e.check_limits(), Err(crate::WireError::Inconsistent { .. })), "{tee}");
        }
    }
}
