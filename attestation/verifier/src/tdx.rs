//! Intel TDX: DCAP quote v4/v5 verification through `dcap-qvl` (PCK chain to the pinned Intel
//! SGX Root CA, PCK and root CRLs, TCB Info and QE Identity signatures and validity, QE report
//! binding, TCB level matching), plus our own strict framing: the quote must end where its
//! signature data says, and only zero padding may follow.
//!
//! Debug TDs are authenticated here and refused (or not) by the pipeline's policy, like SNP.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;

use crate::claims::{Claims, PlatformClaims, TdReport, TdxClaims, TdxTcbStatus};
use crate::error::{ChainError, MalformedError, VerifyError};

/// TEE type of a TDX quote header.
const TEE_TYPE_TDX: u32 = 0x81;
const HEADER_LEN: usize = 48;
const TD10_REPORT_LEN: usize = 584;

/// Reads a collateral file in dcap-qvl's `QuoteCollateralV3` JSON form.
pub fn collateral_from_json(json: &[u8]) -> Result<QuoteCollateralV3, MalformedError> {
    serde_json::from_slice(json)
        .map_err(|e| MalformedError::Collateral(format!("QuoteCollateralV3 JSON: {e}")))
}

/// The length of the quote proper (header, body, signature data), from its own length fields.
pub fn quote_len(quote: &[u8]) -> Result<usize, MalformedError> {
    let u16_at = |o: usize| quote.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| quote.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let short = || MalformedError::Quote(format!("truncated ({} bytes)", quote.len()));
    let version = u16_at(0).ok_or_else(short)?;
    let tee_type = u32_at(4).ok_or_else(short)?;
    if tee_type != TEE_TYPE_TDX {
        return Err(MalformedError::Quote(format!("TEE type {tee_type:#x} is not TDX (0x81)")));
    }
    let sig_len_at = match version {
        4 => HEADER_LEN + TD10_REPORT_LEN,
        5 => {
            let body_type = u16_at(HEADER_LEN).ok_or_else(short)?;
            let body_size = u32_at(HEADER_LEN + 2).ok_or_else(short)? as usize;
            // Types 2 (TD 1.0) and 3 (TD 1.5) have fixed sizes; type 4 (TD 1.5ex) is sized
            // and parsed field by field by dcap-qvl.
            let expected = match body_type {
                2 => Some(TD10_REPORT_LEN),
                3 => Some(TD10_REPORT_LEN + 64),
                4 => None,
                other => {
                    return Err(MalformedError::Quote(format!("v5 body type {other} is not a TD report")));
                }
            };
            if expected.is_some_and(|e| e != body_size) {
                return Err(MalformedError::Quote(format!(
                    "v5 body size {body_size}, expected {expected:?}"
                )));
            }
            HEADER_LEN + 6 + body_size
        }
        other => return Err(MalformedError::Quote(format!("unsupported quote version {other}"))),
    };
    let sig_len = u32_at(sig_len_at).ok_or_else(short)? as usize;
    let end = sig_len_at
        .checked_add(4)
        .and_then(|v| v.checked_add(sig_len))
        .ok_or_else(|| MalformedError::Quote("signature length overflows".into()))?;
    if end > quote.len() {
        return Err(short());
    }
    Ok(end)
}

/// Verifies TDX quotes against the Intel SGX Root CA built into dcap-qvl
/// (`QuoteVerifier::new_prod`): the only root a PCK chain may end at.
pub struct TdxVerifier {
    // Debug is authenticated here and judged by the policy; service-TD binding stays refused
    // (dcap-qvl's default) because no policy field can appraise service TDs yet.
    inner: QuoteVerifier,
}

impl core::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TdxVerifier(Intel SGX Root CA)")
    }
}

impl Default for TdxVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxVerifier {
    pub fn new() -> Self {
        TdxVerifier { inner: QuoteVerifier::new_prod().allow_debug(true) }
    }

    pub fn authenticate(
        &self,
        quote: &[u8],
        collateral: &QuoteCollateralV3,
        now_unix: i64,
    ) -> Result<Claims, VerifyError> {
        let end = quote_len(quote)?;
        let padding = &quote[end..];
        if padding.iter().any(|&b| b != 0) {
            return Err(MalformedError::Quote(format!(
                "{} non-zero bytes after the signature data",
                padding.len()
            ))
            .into());
        }
        let now = u64::try_from(now_unix).map_err(|_| MalformedError::Quote("time before 1970".into()))?;
        let verified = self
            .inner
            .verify(&quote[..end], collateral, now)
            .map_err(|e| ChainError::Tdx(format!("{e:#}")))?;
        let tcb_status = TdxTcbStatus::from_name(&verified.status)
            .ok_or_else(|| ChainError::Tdx(format!("unknown TCB status {:?}", verified.status)))?;
        let td = td_report(quote, &verified.report)?;
        let mut warnings = Vec::new();
        if !padding.is_empty() {
            warnings.push(format!("{} zero bytes of padding after the quote were ignored", padding.len()));
        }
        Ok(Claims {
            tee: nacre_wire::Tee::Tdx,
            measurement: td.mrtd,
            report_data: td.report_data,
            debug: td.debug(),
            // dcap-qvl checked every certificate, CRL, TCB Info and QE Identity window at `now`.
            validity: Vec::new(),
            warnings,
            platform: PlatformClaims::Tdx(Box::new(TdxClaims {
                tcb_status,
                advisory_ids: verified.advisory_ids,
                td,
            })),
        })
    }
}

/// Parses a quote's TD report WITHOUT verifying anything (for `nacre evidence show`).
pub fn parse_unverified(quote: &[u8]) -> Result<TdReport, MalformedError> {
    let end = quote_len(quote)?;
    let parsed =
        dcap_qvl::quote::Quote::parse(&quote[..end]).map_err(|e| MalformedError::Quote(format!("{e:#}")))?;
    td_report(quote, &parsed.report)
}

fn td_report(quote: &[u8], report: &Report) -> Result<TdReport, MalformedError> {
    let td = match report {
        Report::TD10(r) => r,
        Report::TD15(r) => &r.base,
        Report::TD15Ex(r) => &r.base.base,
        Report::SgxEnclave(_) => return Err(MalformedError::Quote("SGX enclave quote, not TDX".into())),
    };
    Ok(TdReport {
        quote_version: u16::from_le_bytes([quote[0], quote[1]]),
        mrtd: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        mrconfigid: td.mr_config_id,
        mrowner: td.mr_owner,
        mrownerconfig: td.mr_owner_config,
        mrseam: td.mr_seam,
        td_attributes: td.td_attributes,
        xfam: td.xfam,
        tee_tcb_svn: td.tee_tcb_svn,
    })
}

/// The FMSPC of the platform that signed `quote` (from the PCK certificate in the quote),
/// used to look up its collateral. Nothing is verified here.
pub fn quote_fmspc(quote: &[u8]) -> Result<[u8; 6], MalformedError> {
    let end = quote_len(quote)?;
    let parsed =
        dcap_qvl::quote::Quote::parse(&quote[..end]).map_err(|e| MalformedError::Quote(format!("{e:#}")))?;
    dcap_qvl::intel::quote_fmspc(&parsed).map_err(|e| MalformedError::Quote(format!("FMSPC: {e:#}")))
}
