//! Attesters: where the guest gets its evidence. One trait; the backend is chosen from the
//! measured configuration, never from anything the host can change at run time.

pub mod ccel;
pub mod sev_guest;
pub mod sim;
pub mod tsm;

use nacre_wire::Evidence;
use nacre_wire::snp::SnpReport;

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
    /// SNP offers two interfaces (configfs-tsm, then `/dev/sev-guest`); neither answered. Both reasons, since they usually differ (no configfs-tsm on an older kernel, no
    /// device module in the image, ...).
    #[error("no attestation interface answered: configfs-tsm: {tsm}; {device}: {device_error}")]
    Unavailable { tsm: Box<AttestError>, device: &'static str, device_error: Box<AttestError> },
}

pub trait Attester {
    /// Evidence whose REPORT_DATA is exactly `report_data`.
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError>;
}

/// Checks that an SNP (or sim) report binds exactly `report_data`: the answer comes through the
/// host, which could hand back a report made for another request.
pub fn check_snp_report_data(report: &[u8], report_data: &[u8; 64]) -> Result<(), AttestError> {
    let parsed = SnpReport::parse(report).map_err(|e| AttestError::Malformed(e.to_string()))?;
    if &parsed.report.report_data != report_data {
        return Err(AttestError::Malformed("the report binds other REPORT_DATA".into()));
    }
    Ok(())
}

/// TDX quote header length (v4 and v5).
const TDX_QUOTE_HEADER_LEN: usize = 48;
/// TEE type of a TDX quote header.
const TDX_TEE_TYPE: u32 = 0x81;
/// Where REPORTDATA sits in a TD report body (TDREPORT 1.0 / 1.5 / 1.5ex alike), and its size.
const TD_REPORT_DATA_AT: usize = 520;
const TD10_REPORT_LEN: usize = 584;

/// The REPORTDATA of a TDX quote (v4: header ‖ TD report; v5: header ‖ body type u16 ‖ body
/// size u32 ‖ TD report), read from its fixed place. This is a guest-side sanity check of the
/// binding only; the verifier parses and authenticates the whole quote.
pub fn tdx_quote_report_data(quote: &[u8]) -> Result<[u8; 64], AttestError> {
    let bad = |m: String| AttestError::Malformed(format!("TDX quote: {m}"));
    let u16_at = |o: usize| quote.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| quote.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let short = || bad(format!("truncated ({} bytes)", quote.len()));
    let version = u16_at(0).ok_or_else(short)?;
    let tee_type = u32_at(4).ok_or_else(short)?;
    if tee_type != TDX_TEE_TYPE {
        return Err(bad(format!("TEE type {tee_type:#x} is not TDX (0x81)")));
    }
    let body = match version {
        4 => TDX_QUOTE_HEADER_LEN,
        5 => {
            let body_type = u16_at(TDX_QUOTE_HEADER_LEN).ok_or_else(short)?;
            let body_size = u32_at(TDX_QUOTE_HEADER_LEN + 2).ok_or_else(short)? as usize;
            // 2: TD report 1.0, 3: 1.5, 4: 1.5 extended; all start with the 1.0 fields.
            if !(2..=4).contains(&body_type) || body_size < TD10_REPORT_LEN {
                return Err(bad(format!("v5 body type {body_type} of {body_size} bytes is not a TD report")));
            }
            TDX_QUOTE_HEADER_LEN + 6
        }
        other => return Err(bad(format!("unsupported version {other}"))),
    };
    let at = body + TD_REPORT_DATA_AT;
    let rd = quote.get(at..at + 64).ok_or_else(short)?;
    let mut out = [0u8; 64];
    out.copy_from_slice(rd);
    Ok(out)
}

/// Checks that a TDX quote binds exactly `report_data`.
pub fn check_tdx_quote_report_data(quote: &[u8], report_data: &[u8; 64]) -> Result<(), AttestError> {
    if &tdx_quote_report_data(quote)? != report_data {
        return Err(AttestError::Malformed("the quote binds other REPORT_DATA".into()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A quote shaped enough for [`tdx_quote_report_data`]: header, TD report body with
    /// `report_data`, and a few signature bytes.
    pub(crate) fn tdx_quote(version: u16, report_data: &[u8; 64]) -> Vec<u8> {
        let mut q = vec![0u8; TDX_QUOTE_HEADER_LEN];
        q[0..2].copy_from_slice(&version.to_le_bytes());
        q[4..8].copy_from_slice(&TDX_TEE_TYPE.to_le_bytes());
        if version == 5 {
            q.extend_from_slice(&2u16.to_le_bytes());
            q.extend_from_slice(&(TD10_REPORT_LEN as u32).to_le_bytes());
        }
        let mut body = vec![0x55u8; TD10_REPORT_LEN];
        body[TD_REPORT_DATA_AT..].copy_from_slice(report_data);
        q.extend_from_slice(&body);
        q.extend_from_slice(&[0xee; 16]);
        q
    }

    #[test]
    fn reads_report_data_from_v4_and_v5_quotes() {
        let rd = [0x42; 64];
        for v in [4, 5] {
            let q = tdx_quote(v, &rd);
            assert_eq!(tdx_quote_report_data(&q).unwrap(), rd, "v{v}");
            check_tdx_quote_report_data(&q, &rd).unwrap();
            assert!(check_tdx_quote_report_data(&q, &[0x43; 64]).is_err(), "v{v}: other REPORT_DATA");
        }
        // v4: header 48 + REPORTDATA at 520 of the body = bytes 568..632.
        assert_eq!(tdx_quote(4, &rd)[568..632], rd);
        // v5: 6 more bytes of body descriptor.
        assert_eq!(tdx_quote(5, &rd)[574..638], rd);
    }

    #[test]
    fn refuses_quotes_it_cannot_place_report_data_in() {
        let rd = [1; 64];
        let q = tdx_quote(4, &rd);
        assert!(tdx_quote_report_data(&q[..600]).is_err(), "truncated");
        let mut sgx = q.clone();
        sgx[4] = 0;
        assert!(tdx_quote_report_data(&sgx).is_err(), "SGX TEE type");
        let mut v3 = q.clone();
        v3[0] = 3;
        assert!(tdx_quote_report_data(&v3).is_err(), "version 3");
        let mut v5 = tdx_quote(5, &rd);
        v5[48] = 1; // body type 1: an SGX enclave report
        assert!(tdx_quote_report_data(&v5).is_err());
    }

    /// A well-formed SNP report binding `report_data`, signed by a fresh sim hierarchy.
    pub(crate) fn snp_report(report_data: &[u8; 64]) -> Vec<u8> {
        let ca =
            nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
        let mut report = ca.report_template();
        report.report_data = *report_data;
        ca.sign(&report).unwrap().to_vec()
    }

    #[test]
    fn snp_reports_must_bind_our_report_data() {
        let report = snp_report(&[9; 64]);
        check_snp_report_data(&report, &[9; 64]).unwrap();
        assert!(check_snp_report_data(&report, &[8; 64]).is_err(), "other REPORT_DATA");
        assert!(check_snp_report_data(&report[..100], &[9; 64]).is_err(), "not a report");
    }
}
