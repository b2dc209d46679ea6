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
                let tdx = TdxEvidence { quote: &evidence.report, collateral: &collateral };
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

    /// Fills in from the cache what the envelope lacks: the whole chain when it brought none,
    /// the CRL when it brought certificates only. Cached objects are as untrusted as the
    /// envelope's and go through the same checks.
    fn complete_snp(&self, certs: &mut CertSet, report: &[u8]) -> Result<(), VerifyError> {
        let Some(source) = &self.collateral else { return Ok(()) };
        if !certs.certs.is_empty() && !certs.crls.is_empty() {
            return Ok(());
        }
        let parsed = SnpReport::parse(report).map_err(MalformedError::from)?;
        let Some(product) = parsed.report.cpuid.and_then(|c| Product::from_cpuid(c.family, c.model)) else {
            return Ok(()); // v2 reports name no product; the chain check reports what is missing
        };
        let cached = match source.snp_certs(product, &parsed.report) {
            Ok(cached) => cached,
            // Nothing cached for this chip: verify with what the envelope brought.
            Err(_) if !certs.certs.is_empty() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if certs.certs.is_empty() {
            certs.certs = cached.certs;
        }
        if certs.crls.is_empty() {
            certs.crls = cached.crls;
        }
        Ok(())
    }
}
