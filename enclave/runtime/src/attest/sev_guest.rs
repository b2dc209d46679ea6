//! SEV-SNP through `/dev/sev-guest`, for kernels without configfs-tsm (before 6.7): an extended
//! report request, so that the host's certificate table (ARK, ASK, VCEK or VLEK) comes along
//! when the host provides one.
//!
//! The ioctls are in `nacre-guest-ioctl`; this side parses what they return, strictly: the
//! MSG_REPORT_RSP envelope, the report (which must bind our REPORT_DATA) and the certificate
//! table (host-controlled bytes, parsed by the same bounded parser as configfs-tsm's `auxblob`).

use nacre_guest_ioctl::sev::{
    self as ioctl, GuestRequestError, MAX_CERTS_LEN, REPORT_RESP_LEN, SevGuest, VMM_ERR_INVALID_LEN,
};
use nacre_wire::snp::REPORT_LEN;
use nacre_wire::{Evidence, Tee};

use super::tsm::cert_table;
use super::{AttestError, Attester, check_snp_report_data};

/// The VMPL reports are requested for: 0, where the guest kernel runs when there is no SVSM.
/// (Under an SVSM the kernel runs at a higher VMPL, where only configfs-tsm works.)
pub const VMPL: u32 = 0;

/// MSG_REPORT_RSP (SEV-SNP Firmware ABI, "MSG_REPORT_RSP Message Structure"): STATUS at 0x00,
/// REPORT_SIZE at 0x04, reserved to 0x20, then the report.
const RSP_STATUS: usize = 0x00;
const RSP_REPORT_SIZE: usize = 0x04;
const RSP_RESERVED: core::ops::Range<usize> = 0x08..0x20;
const RSP_REPORT: usize = 0x20;

/// The SNP attester on the guest device.
#[derive(Debug)]
pub struct SevGuestAttester {
    device: SevGuest,
}

impl SevGuestAttester {
    pub fn open() -> Result<Self, AttestError> {
        let device =
            SevGuest::open().map_err(|e| AttestError::NoDevice(format!("{}: {e}", ioctl::DEVICE)))?;
        Ok(SevGuestAttester { device })
    }
}

impl Attester for SevGuestAttester {
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        // The kernel's largest certificate buffer; it zero-fills it when the host has no table.
        let mut table = vec![0u8; MAX_CERTS_LEN];
        let response = match self.device.get_ext_report(report_data, VMPL, &mut table) {
            Ok(r) => r,
            // The host's table is larger than the kernel allows: take the report without it.
            // Nothing is lost that the host could not withhold anyway; the verifier falls back
            // to its collateral cache.
            Err(e) if e.vmm_error == VMM_ERR_INVALID_LEN => {
                table.clear();
                self.device.get_report(report_data, VMPL).map_err(request_error)?
            }
            Err(e) => return Err(request_error(e)),
        };
        evidence_from(&response.data, &table, report_data)
    }
}

/// The firmware or the hypervisor said no (they fill `exitinfo2`), or the kernel did.
fn request_error(e: GuestRequestError) -> AttestError {
    if e.fw_error != 0 || e.vmm_error != 0 {
        AttestError::Refused(format!("{}: {e}", ioctl::DEVICE))
    } else {
        AttestError::Io(format!("{}: {e}", ioctl::DEVICE))
    }
}

/// The report inside a MSG_REPORT_RSP: status 0, exactly one report's size, reserved zero.
pub fn report_from_response(rsp: &[u8; REPORT_RESP_LEN]) -> Result<&[u8], AttestError> {
    let u32_at = |o: usize| u32::from_le_bytes([rsp[o], rsp[o + 1], rsp[o + 2], rsp[o + 3]]);
    let status = u32_at(RSP_STATUS);
    if status != 0 {
        return Err(AttestError::Refused(format!("the secure processor's report status is {status:#x}")));
    }
    let size = u32_at(RSP_REPORT_SIZE);
    if size as usize != REPORT_LEN {
        return Err(AttestError::Malformed(format!(
            "MSG_REPORT_RSP: report size {size}, expected {REPORT_LEN}"
        )));
    }
    if rsp[RSP_RESERVED].iter().any(|b| *b != 0) {
        return Err(AttestError::Malformed("MSG_REPORT_RSP: reserved bytes are not zero".into()));
    }
    Ok(&rsp[RSP_REPORT..RSP_REPORT + REPORT_LEN])
}

/// Evidence from a MSG_REPORT_RSP and the certificate buffer (empty when none was asked for).
fn evidence_from(
    rsp: &[u8; REPORT_RESP_LEN],
    table: &[u8],
    report_data: &[u8; 64],
) -> Result<Evidence, AttestError> {
    let report = report_from_response(rsp)?;
    check_snp_report_data(report, report_data)?;
    let certs = if table.is_empty() { Vec::new() } else { cert_table(table)? };
    let evidence = Evidence { tee: Tee::Snp, report: report.to_vec(), certs, event_log: None };
    evidence.check_limits().map_err(|e| AttestError::Malformed(e.to_string()))?;
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::attest::tests::snp_report;
    use crate::attest::tsm::tests::table;
    use crate::attest::tsm::{GUID_ARK, GUID_VCEK};

    fn response(report: &[u8]) -> Box<[u8; REPORT_RESP_LEN]> {
        let mut rsp = Box::new([0u8; REPORT_RESP_LEN]);
        rsp[4..8].copy_from_slice(&(report.len() as u32).to_le_bytes());
        rsp[0x20..0x20 + report.len()].copy_from_slice(report);
        rsp
    }

    fn certs_buffer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = table(entries);
        buf.resize(MAX_CERTS_LEN, 0);
        buf
    }

    #[test]
    fn builds_evidence_with_the_hosts_certificates() {
        let rd = [0x5a; 64];
        let report = snp_report(&rd);
        let buf = certs_buffer(&[(GUID_VCEK, b"vcek"), (GUID_ARK, b"ark")]);
        let ev = evidence_from(&response(&report), &buf, &rd).unwrap();
        assert_eq!(ev.tee, Tee::Snp);
        assert_eq!(ev.report, report);
        assert_eq!(ev.certs.iter().map(|c| c.as_slice()).collect::<Vec<_>>(), vec![&b"ark"[..], b"vcek"]);
    }

    #[test]
    fn no_table_means_no_certificates() {
        let rd = [1; 64];
        let report = snp_report(&rd);
        let zeros = vec![0u8; MAX_CERTS_LEN]; // what the kernel leaves when the host has none
        assert!(evidence_from(&response(&report), &zeros, &rd).unwrap().certs.is_empty());
        assert!(evidence_from(&response(&report), &[], &rd).unwrap().certs.is_empty());
    }

    #[test]
    fn refuses_a_report_for_other_report_data() {
        let report = snp_report(&[1; 64]);
        let err = evidence_from(&response(&report), &[], &[2; 64]).unwrap_err();
        assert!(matches!(err, AttestError::Malformed(ref m) if m.contains("REPORT_DATA")), "{err}");
    }

    #[test]
    fn refuses_a_malformed_response_envelope() {
        let rd = [1; 64];
        let report = snp_report(&rd);
        let mut failed = response(&report);
        failed[0] = 0x16; // INVALID_PARAM
        assert!(matches!(report_from_response(&failed), Err(AttestError::Refused(_))));
        let mut short = response(&report);
        short[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(report_from_response(&short), Err(AttestError::Malformed(_))));
        let mut reserved = response(&report);
        reserved[0x1f] = 1;
        assert!(matches!(report_from_response(&reserved), Err(AttestError::Malformed(_))));
        assert_eq!(report_from_response(&response(&report)).unwrap(), &report[..]);
    }

    #[test]
    fn refuses_a_hostile_certificate_table() {
        let rd = [1; 64];
        let report = snp_report(&rd);
        // An entry pointing past the buffer, and a table without a terminator.
        let mut far = certs_buffer(&[(GUID_ARK, b"ark")]);
        far[16..20].copy_from_slice(&(MAX_CERTS_LEN as u32 - 2).to_le_bytes());
        assert!(matches!(evidence_from(&response(&report), &far, &rd), Err(AttestError::Malformed(_))));
        let endless = vec![0xffu8; MAX_CERTS_LEN];
        assert!(matches!(evidence_from(&response(&report), &endless, &rd), Err(AttestError::Malformed(_))));
    }

    #[test]
    fn refusals_and_failures_are_told_apart() {
        let err = |fw_error, vmm_error| GuestRequestError {
            os: std::io::Error::from_raw_os_error(5),
            fw_error,
            vmm_error,
            certs_len_needed: None,
        };
        assert!(matches!(request_error(err(0x16, 0)), AttestError::Refused(_)));
        assert!(matches!(request_error(err(0, 2)), AttestError::Refused(_)));
        assert!(matches!(request_error(err(0, 0)), AttestError::Io(_)));
    }
}
