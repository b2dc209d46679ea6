//! Appraising an [`Evidence`] envelope: pick the platform verifier by the envelope's TEE label,
//! gather endorsements (those in the envelope first, then the collateral cache), and run the
//! one pipeline. Services (key release) and clients (attested TLS) both go through here.

use std::sync::Arc;

use nacre_wire::snp::SnpReport;
use nacre_wire::{Evidence, Tee};

use crate::collateral::CollateralSource;
use crate::error::{ConfigError, MalformedError, VerifyError};
use crate::pipeline::{Appraiser, ExpectedReportData, Refusal, SnpEvidence, TdxEvidence, Verified};
use crate::snp::{SnpRoots, SnpVerifier};
use crate::tdx::{TdxVerifier, quote_fmspc};
use crate::x509;
use crate::{CertSet, Claims, Product};

/// The verifiers a service or client trusts, and where missing endorsements come from.
#[derive(Clone)]
pub struct EvidenceVerifier {
    snp: Arc<SnpVerifier>,
    /// Present only when the insecure sim root was configured explicitly.
    sim: Option<Arc<SnpVerifier>>,
    tdx: Arc<TdxVerifier>,
    collateral: Option<Arc<dyn CollateralSource>>,
}

impl core::fmt::Debug for EvidenceVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EvidenceVerifier")
            .field("sim", &self.sim.is_some())
            .field("collateral", &self.collateral.is_some())
            .finish()
    }
}

impl EvidenceVerifier {
    /// AMD and Intel roots only; sim evidence is refused.
    pub fn new(collateral: Option<Arc<dyn CollateralSource>>) -> Self {
        EvidenceVerifier {
            snp: Arc::new(SnpVerifier::new(SnpRoots::Amd)),
            sim: None,
            tdx: Arc::new(TdxVerifier::new()),
            collateral,
        }
    }

    /// Also accepts sim evidence under `roots` (built by [`SnpRoots::insecure_sim`], which
    /// warns).
    pub fn with_sim(mut self, roots: SnpRoots) -> Self {
        self.sim = Some(Arc::new(SnpVerifier::new(roots)));
        self
    }

    pub fn accepts_sim(&self) -> bool {
        self.sim.is_some()
    }

    /// Verifies `evidence` and appraises it with `appraiser`.
    pub fn appraise(
        &self,
        appraiser: &Appraiser,
        evidence: &Evidence,
        expected: ExpectedReportData,
        now: i64,
    ) -> Result<Verified<Claims>, VerifyError> {
        self.appraise_reporting(appraiser, evidence, expected, now).map_err(|r| r.error)
    }

    /// [`EvidenceVerifier::appraise`], keeping the authentic claims of evidence that the
    /// binding or the policy refused ([`Refusal::authentic`]).
    pub fn appraise_reporting(
        &self,
        appraiser: &Appraiser,
        evidence: &Evidence,
        expected: ExpectedReportData,
        now: i64,
    ) -> Result<Verified<Claims>, Refusal> {
        evidence.check_limits().map_err(|e| VerifyError::from(MalformedError::from(e)))?;
        match evidence.tee {
            Tee::Snp => self.appraise_snp(&self.snp, appraiser, evidence, expected, now),
            Tee::Sim => {
                let sim = self.sim.as_ref().ok_or(VerifyError::from(ConfigError::NoSimRoot))?;
                self.appraise_snp(sim, appraiser, evidence, expected, now)
            }
            Tee::Tdx => {
                let collateral = self
                    .collateral
                    .as_ref()
                    .ok_or_else(|| {
                        VerifyError::from(ConfigError::Collateral(
                            "no TDX collateral source configured".into(),
                        ))
                    })?
                    .tdx_collateral(&quote_fmspc(&evidence.report).map_err(VerifyError::from)?)
                    .map_err(VerifyError::from)?;
                let tdx = TdxEvidence {
                    quote: &evidence.report,
                    collateral: &collateral,
                    event_log: evidence.event_log.as_deref(),
                };
                appraiser.appraise_reporting(self.tdx.as_ref(), tdx, expected, now)
            }
        }
    }

    fn appraise_snp(
        &self,
        verifier: &SnpVerifier,
        appraiser: &Appraiser,
        evidence: &Evidence,
        expected: ExpectedReportData,
        now: i64,
    ) -> Result<Verified<Claims>, Refusal> {
        let mut certs = CertSet::default();
        for der in &evidence.certs {
            certs.add(der).map_err(VerifyError::from)?;
        }
        self.complete_snp(&mut certs, &evidence.report)?;
        let snp = SnpEvidence { report: &evidence.report, certs: &certs };
        appraiser.appraise_reporting(verifier, snp, expected, now)
    }

    /// Fills in from the cache what the envelope lacks (the whole chain when it brought none),
    /// and of the envelope's CRL and the cached one uses the newer, by `thisUpdate`: a host
    /// that hands over an older CRL, one from before a revocation, does not get it past a
    /// cache that holds the newer one, and a cache that lags does not undo a revocation the
    /// host's newer CRL lists. Cached objects are as untrusted as the envelope's and go
    /// through the same checks: the CRL chosen must still verify under the ARK, so a forged
    /// `thisUpdate` only gets the evidence refused.
    fn complete_snp(&self, certs: &mut CertSet, report: &[u8]) -> Result<(), VerifyError> {
        let Some(source) = &self.collateral else { return Ok(()) };
        let parsed = SnpReport::parse(report).map_err(MalformedError::from)?;
        let Some(product) = parsed.report.cpuid.and_then(|c| Product::from_cpuid(c.family, c.model)) else {
            return Ok(()); // v2 reports name no product; the chain check reports what is missing
        };
        let mut cached_crls = Vec::new();
        if certs.certs.is_empty() {
            // Nothing in the envelope: the cache must have the chain.
            let cached = source.snp_certs(product, &parsed.report)?;
            certs.certs = cached.certs;
            cached_crls = cached.crls;
        } else if let Some(crl) = source.snp_crl(product)? {
            cached_crls.push(crl);
        }
        certs.crls = match (certs.crls.as_slice(), cached_crls.as_slice()) {
            (_, []) => return Ok(()),
            ([], _) => cached_crls,
            ([envelope], [cached]) => vec![newer_crl(envelope, cached)?.to_vec()],
            // Several CRLs: left for the chain check to refuse as ambiguous.
            _ => return Ok(()),
        };
        Ok(())
    }
}

/// Of the envelope's CRL and the cached one, the one with the later `thisUpdate`, the cached
/// one on a tie (the operator's copy). CRLs of different issuers are not two versions of one
/// list (sim evidence beside an AMD cache, say): the envelope's stays, and the chain check
/// binds it to the envelope's ARK.
fn newer_crl<'a>(envelope: &'a [u8], cached: &'a [u8]) -> Result<&'a [u8], VerifyError> {
    let (e, c) = (x509::parse_crl(envelope)?, x509::parse_crl(cached)?);
    if e.issuer().as_raw() != c.issuer().as_raw() {
        return Ok(envelope);
    }
    Ok(if e.last_update() > c.last_update() { envelope } else { cached })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;
    use crate::collateral::FileCache;
    use crate::error::ChainError;
    use crate::policy::Policy;
    use nacre_sim::{EK_SERIAL, SimCa, SimParams};
    use time::{Duration, OffsetDateTime};

    const NOW: i64 = 1_790_000_000; // 2026-09-21

    /// Appraises the sim template report that brings the chain and `envelope_crl`, with a
    /// collateral cache holding `cached_crl` for its product.
    fn appraise(ca: &SimCa, envelope_crl: &[u8], cached_crl: &[u8]) -> Result<Verified<Claims>, VerifyError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nacre-crl-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let product_dir = dir.join("snp").join(ca.params().product.name());
        std::fs::create_dir_all(&product_dir).unwrap();
        std::fs::write(product_dir.join("crl.pem"), cached_crl).unwrap();
        let verifier = EvidenceVerifier::new(Some(Arc::new(FileCache::new(&dir))));
        let report = ca.sign(&ca.report_template()).unwrap();
        let mut certs = CertSet::from_der(ca.chain_der(), vec![envelope_crl.to_vec()]).unwrap();
        let completed = verifier.complete_snp(&mut certs, &report);
        std::fs::remove_dir_all(&dir).unwrap();
        completed?;
        let sim = SnpVerifier::new(SnpRoots::insecure_sim(ca.ark_der()).unwrap());
        let rd = SnpReport::parse(&report).unwrap().report.report_data;
        Appraiser::new(Policy::default()).appraise(
            &sim,
            SnpEvidence { report: &report, certs: &certs },
            ExpectedReportData::Exact(rd),
            NOW,
        )
    }

    fn revoked(result: Result<Verified<Claims>, VerifyError>) -> bool {
        matches!(result, Err(VerifyError::Chain(ChainError::Revoked { what: "VCEK", .. })))
    }

    /// Issue 12 §6: of the host's CRL and the cached one, the newer (`thisUpdate`) is used,
    /// whichever brought it.
    #[test]
    fn newer_crl_wins() {
        let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let ca = SimCa::generate(SimParams::new(now)).unwrap();
        let crl = |serials: &[u8], age_hours: i64| {
            ca.crl_revoking(serials, now - Duration::hours(age_hours), now + Duration::days(30)).unwrap()
        };
        let (old_clean, new_revoking) = (crl(&[], 48), crl(&[EK_SERIAL], 1));
        let (old_revoking, new_clean) = (crl(&[EK_SERIAL], 48), crl(&[], 1));

        // An older host-supplied CRL, from before the revocation, does not override the newer
        // cached one that lists the VCEK.
        assert!(revoked(appraise(&ca, &old_clean, &new_revoking)));
        // A cache that lags does not undo a revocation the host's newer CRL lists.
        assert!(revoked(appraise(&ca, &new_revoking, &old_clean)));
        // The newer list is the answer either way, also when it no longer lists the serial.
        assert!(appraise(&ca, &new_clean, &old_revoking).is_ok());
        assert!(appraise(&ca, &old_revoking, &new_clean).is_ok());
        // The same list from both: used as is.
        assert!(revoked(appraise(&ca, &new_revoking, &new_revoking)));
        assert!(appraise(&ca, &new_clean, &new_clean).is_ok());
    }

    /// A CRL with a later `thisUpdate` that the ARK did not sign is chosen and then refused:
    /// a forged date cannot push the cached CRL aside.
    #[test]
    fn forged_newer_crl_is_refused_not_preferred_silently() {
        let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let ca = SimCa::generate(SimParams::new(now)).unwrap();
        let other = SimCa::generate(SimParams::new(now)).unwrap();
        let cached =
            ca.crl_revoking(&[EK_SERIAL], now - Duration::hours(48), now + Duration::days(30)).unwrap();
        // Same issuer name (the sim ARK's), signed by another key, dated later.
        let forged = other.crl_revoking(&[], now - Duration::hours(1), now + Duration::days(30)).unwrap();
        let result = appraise(&ca, &forged, &cached);
        assert!(
            matches!(result, Err(VerifyError::Chain(ChainError::BadSignature { what: "CRL" }))),
            "{result:?}"
        );
    }
}
