//! Intel TDX: DCAP quote v4/v5 verification through `dcap-qvl` (PCK chain to the pinned Intel
//! SGX Root CA, PCK and root CRLs, TCB Info and QE Identity signatures and validity, QE report
//! binding, TCB level matching), plus our own strict framing: the quote must end where its
//! signature data says, and only zero padding may follow.
//!
//! Debug TDs are authenticated here and refused (or not) by the pipeline's policy, like SNP.
//!
//! When the TD sent its event log (the CCEL log area, `nacre_wire::ccel`), the log is replayed
//! once the quote is authentic and must give the quote's RTMR0-3 exactly; its events then go
//! into the claims. A TD without a log is still judged by its RTMRs, with a warning.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;

use nacre_wire::ccel::EventLog;

use crate::claims::{Claims, LoggedEvent, PlatformClaims, TdReport, TdxClaims, TdxTcbStatus};
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
        event_log: Option<&[u8]>,
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
        let event_log = match event_log {
            Some(log) => Some(check_event_log(log, &td.rtmr)?),
            None => {
                warnings.push(
                    "no TDX event log was supplied: RTMR0-3 are judged as quoted, event by event nothing can be shown"
                        .into(),
                );
                None
            }
        };
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
                event_log,
            })),
        })
    }
}

/// Parses a TD event log, replays it and compares the result with the RTMRs of the quote it
/// came with (`quoted`, from an authenticated quote): any difference refuses the evidence,
/// naming the first register that differs. Returns the events for the claims.
pub fn check_event_log(log: &[u8], quoted: &[[u8; 48]; 4]) -> Result<Vec<LoggedEvent>, VerifyError> {
    let parsed = EventLog::parse(log).map_err(MalformedError::from)?;
    let replayed = parsed.replay();
    const NAMES: [&str; 4] = ["RTMR0", "RTMR1", "RTMR2", "RTMR3"];
    if let Some(i) = (0..4).find(|&i| replayed[i] != quoted[i]) {
        return Err(ChainError::EventLogMismatch {
            register: NAMES[i],
            replayed: hex::encode(replayed[i]),
            quoted: hex::encode(quoted[i]),
        }
        .into());
    }
    Ok(logged_events(&parsed))
}

/// The events of a parsed log as claims (also for showing an unverified log).
pub fn logged_events(log: &EventLog<'_>) -> Vec<LoggedEvent> {
    log.events
        .iter()
        .enumerate()
        .map(|(index, e)| LoggedEvent {
            index,
            rtmr: e.rtmr().map(|r| r as u8),
            event_type: e.event_type,
            digest: *e.sha384(),
            description: e.description(),
            data_is_digested: e.data_is_digested(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;
    use nacre_wire::ccel::event_type;

    fn ccel(name: &str) -> Vec<u8> {
        let path = format!("{}/../wire/tests/data/ccel/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect(&path)
    }

    /// The RTMRs trustee publishes for `CCEL_data_ovmf` (PROVENANCE.md there).
    fn ovmf_rtmrs() -> [[u8; 48]; 4] {
        [
            "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
            "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
            "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a",
            "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ]
        .map(|h| {
            let mut out = [0u8; 48];
            hex::decode_to_slice(h, &mut out).unwrap();
            out
        })
    }

    #[test]
    fn a_log_that_replays_to_the_quoted_rtmrs_gives_its_events() {
        let events = check_event_log(&ccel("CCEL_data_ovmf"), &ovmf_rtmrs()).unwrap();
        assert_eq!(events.len(), 20);
        let exit = &events[19];
        assert_eq!((exit.index, exit.rtmr, exit.event_type), (19, Some(1), event_type::EV_EFI_ACTION));
        assert_eq!(exit.description.as_deref(), Some("Exit Boot Services Returned with Success"));
        assert_eq!(exit.event_type_name(), Some("EV_EFI_ACTION"));
        assert!(exit.data_is_digested);
        // The initrd's tag event extends RTMR2.
        assert_eq!((events[17].rtmr, events[17].description.as_deref()), (Some(2), Some("Linux initrd")));
    }

    /// Issue 13, the event log: a log whose replay differs from the quote is refused, naming the
    /// register. One byte of one digest is changed in each register's events in turn.
    #[test]
    fn a_log_that_does_not_match_the_quote_is_refused_naming_the_register() {
        let good = ccel("CCEL_data_ovmf");
        let parsed = EventLog::parse(&good).unwrap();
        for (register, name) in [(0, "RTMR0"), (1, "RTMR1"), (2, "RTMR2")] {
            let event = parsed.events.iter().find(|e| e.rtmr() == Some(register)).unwrap();
            let mut bad = good.clone();
            bad[event.offset + 12 + 2 + 47] ^= 0x80; // the last byte of its SHA-384 digest
            match check_event_log(&bad, &ovmf_rtmrs()) {
                Err(VerifyError::Chain(ChainError::EventLogMismatch { register: r, quoted, .. })) => {
                    assert_eq!(r, name);
                    assert_eq!(quoted, hex::encode(ovmf_rtmrs()[register]));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // The log unchanged, the quote's RTMR3 extended by something the log does not show.
        let mut quoted = ovmf_rtmrs();
        quoted[3][0] = 1;
        let err = check_event_log(&good, &quoted).unwrap_err();
        assert!(matches!(err, VerifyError::Chain(ChainError::EventLogMismatch { register: "RTMR3", .. })));
        assert_eq!(err.check(), "event_log");
        assert!(err.to_string().contains("does not match the quote"), "{err}");
    }

    #[test]
    fn a_malformed_log_is_refused_as_malformed() {
        let good = ccel("CCEL_data_ovmf");
        let err = check_event_log(&good[..2000], &ovmf_rtmrs()).unwrap_err();
        assert!(matches!(err, VerifyError::Malformed(MalformedError::EventLog(_))), "{err:?}");
        assert_eq!(err.check(), "parse");
    }

    fn vector(path: &str) -> Vec<u8> {
        let path = format!("{}/../../../shared/vectors/tdx/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect(&path)
    }

    /// A real quote: without a log it is authenticated with a warning; with trustee's td-shim
    /// log, which is not this TD's (its replay gives other registers), it is refused at RTMR0.
    #[test]
    fn real_quote_with_and_without_a_log() {
        let quote = vector("x-v4-50806f-debug-trustee/quote.bin");
        let collateral = collateral_from_json(&vector("x-v4-50806f-debug-trustee/collateral.json")).unwrap();
        let now = 1_687_939_200;
        let verifier = TdxVerifier::new();
        let claims = verifier.authenticate(&quote, &collateral, None, now).unwrap();
        assert!(claims.warnings.iter().any(|w| w.contains("no TDX event log")), "{:?}", claims.warnings);
        let PlatformClaims::Tdx(t) = &claims.platform else { panic!() };
        assert_eq!(t.event_log, None);

        let log = ccel("CCEL_data");
        let err = verifier.authenticate(&quote, &collateral, Some(&log), now).unwrap_err();
        assert!(
            matches!(err, VerifyError::Chain(ChainError::EventLogMismatch { register: "RTMR0", .. })),
            "{err:?}"
        );
    }
}
