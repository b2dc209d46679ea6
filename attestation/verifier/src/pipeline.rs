//! The one appraisal pipeline (DESIGN.md §3, STYLE.md §6):
//!
//! 1. the platform parses the evidence and verifies its chain over the received bytes
//!    ([`Platform::authenticate`]: the only per-TEE step),
//! 2. every validity window is checked at the injected `now`,
//! 3. REPORT_DATA must equal the expected 64-byte binding exactly,
//! 4. the claims are appraised against the policy.
//!
//! Only the pipeline ([`Appraiser::appraise`]) constructs a [`Verified`], so code that takes
//! a `Verified<Claims>` (key release, attested TLS) cannot be handed unchecked claims. A
//! refusal may carry the authentic claims it refused ([`Refusal`]), never as `Verified`.

use dcap_qvl::QuoteCollateralV3;
use nacre_wire::Tee;
use nacre_wire::snp::{TcbVersion, policy_bits};

use crate::claims::{Claims, PlatformClaims, SnpClaims, TdxClaims};
use crate::error::{ChainError, PolicyViolation, VerifyError};
use crate::policy::{Hex, Policy, SnpPolicy, TdxLaunch, TdxPolicy};
use crate::snp::SnpVerifier;
use crate::tdx::TdxVerifier;
use crate::x509::CertSet;

/// What a platform needs besides the evidence.
#[derive(Clone, Copy, Debug)]
pub struct AuthContext {
    /// Unix seconds.
    pub now: i64,
    pub allow_missing_crl: bool,
}

/// The per-TEE part: parsing and the signature chain, producing claims.
pub trait Platform {
    type Evidence<'a>;
    fn authenticate(&self, evidence: Self::Evidence<'_>, ctx: &AuthContext) -> Result<Claims, VerifyError>;
}

/// An SNP or sim report with its certificates and CRLs.
#[derive(Clone, Copy, Debug)]
pub struct SnpEvidence<'a> {
    pub report: &'a [u8],
    pub certs: &'a CertSet,
}

/// A TDX quote with its collateral, and the TD's event log when it sent one.
#[derive(Clone, Copy, Debug)]
pub struct TdxEvidence<'a> {
    pub quote: &'a [u8],
    pub collateral: &'a QuoteCollateralV3,
    pub event_log: Option<&'a [u8]>,
}

impl Platform for SnpVerifier {
    type Evidence<'a> = SnpEvidence<'a>;
    fn authenticate(&self, e: SnpEvidence<'_>, ctx: &AuthContext) -> Result<Claims, VerifyError> {
        SnpVerifier::authenticate(self, e.report, e.certs, ctx.allow_missing_crl)
    }
}

impl Platform for TdxVerifier {
    type Evidence<'a> = TdxEvidence<'a>;
    fn authenticate(&self, e: TdxEvidence<'_>, ctx: &AuthContext) -> Result<Claims, VerifyError> {
        TdxVerifier::authenticate(self, e.quote, e.collateral, e.event_log, ctx.now)
    }
}

/// What REPORT_DATA must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedReportData {
    /// Exactly these 64 bytes (a binding from `nacre_wire::binding`).
    Exact([u8; 64]),
    /// Not checked: the evidence is authentic but not bound to this exchange (no freshness,
    /// no channel binding). For inspection tools only; recorded as a warning.
    InsecureUnbound,
}

/// Claims that went through the whole pipeline. Only [`Appraiser::appraise_reporting`] creates one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T> {
    inner: T,
}

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.inner
    }
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> core::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// Why an appraisal failed, and, when the evidence itself was authentic and only the binding or
/// the policy refused it, the claims it carried: who was refused (measurement, chip) is worth an
/// audit record. These claims passed no policy; never act on them.
#[derive(Debug)]
pub struct Refusal {
    pub error: VerifyError,
    pub authentic: Option<Box<Claims>>,
}

impl From<VerifyError> for Refusal {
    fn from(error: VerifyError) -> Self {
        Refusal { error, authentic: None }
    }
}

/// Appraises evidence against one policy.
#[derive(Debug, Clone)]
pub struct Appraiser {
    policy: Policy,
    allow_missing_crl: bool,
}

impl Appraiser {
    /// Logs every dangerous setting of the policy once, as a service must at start-up.
    pub fn new(policy: Policy) -> Self {
        for danger in policy.dangers() {
            tracing::warn!("policy: {danger}");
        }
        let allow_missing_crl = policy.insecure_allow_missing_crl;
        Appraiser { policy, allow_missing_crl }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs the pipeline. `now` is Unix seconds, injected so tests can pin it.
    pub fn appraise<P: Platform>(
        &self,
        platform: &P,
        evidence: P::Evidence<'_>,
        expected: ExpectedReportData,
        now: i64,
    ) -> Result<Verified<Claims>, VerifyError> {
        self.appraise_reporting(platform, evidence, expected, now).map_err(|r| r.error)
    }

    /// [`Appraiser::appraise`], keeping the authentic claims of evidence that the binding or
    /// the policy refused ([`Refusal::authentic`]).
    pub fn appraise_reporting<P: Platform>(
        &self,
        platform: &P,
        evidence: P::Evidence<'_>,
        expected: ExpectedReportData,
        now: i64,
    ) -> Result<Verified<Claims>, Refusal> {
        let ctx = AuthContext { now, allow_missing_crl: self.allow_missing_crl };
        let mut claims = platform.authenticate(evidence, &ctx)?;
        check_validity(&claims, now).map_err(VerifyError::from)?;
        let refused =
            |error: VerifyError, claims: Claims| Refusal { error, authentic: Some(Box::new(claims)) };
        match expected {
            ExpectedReportData::Exact(want) if want != claims.report_data => {
                let error = PolicyViolation::ReportData {
                    expected: hex::encode(want),
                    actual: hex::encode(claims.report_data),
                };
                return Err(refused(error.into(), claims));
            }
            ExpectedReportData::Exact(_) => {}
            ExpectedReportData::InsecureUnbound => {
                claims.warnings.push("REPORT_DATA was not checked against a binding: no freshness".into())
            }
        }
        match self.check_policy(&mut claims) {
            Ok(()) => Ok(Verified { inner: claims }),
            Err(e) => Err(refused(e, claims)),
        }
    }

    fn check_policy(&self, claims: &mut Claims) -> Result<(), VerifyError> {
        let allow_debug = match (&claims.platform, claims.tee) {
            (PlatformClaims::Snp(_), tee @ (Tee::Snp | Tee::Sim)) => self.policy.snp_section(tee).allow_debug,
            (PlatformClaims::Tdx(_), Tee::Tdx) => self.policy.tdx.allow_debug,
            (_, tee) => return Err(PolicyViolation::NoSection { tee: tee.as_str() }.into()),
        };
        if claims.debug && !allow_debug {
            let detail = if claims.tee == Tee::Tdx { "TD attribute DEBUG" } else { "guest policy DEBUG bit" };
            return Err(PolicyViolation::Debug { detail }.into());
        }
        // Pinning a TEE means pinning all of what it runs: a TDX launch is its whole boot chain
        // (the type has no other form), an SNP measurement needs its firmware floor too.
        let pinned = match &claims.platform {
            PlatformClaims::Tdx(t) => match self.policy.tdx.launches.as_deref() {
                Some(launches) => {
                    check_tdx_launch(launches, t)?;
                    true
                }
                None => {
                    claims.warnings.push("TDX boot chain (MRTD, RTMR0–2) not pinned by the policy".into());
                    false
                }
            },
            PlatformClaims::Snp(_) => match self.policy.snp_section(claims.tee).measurements.as_deref() {
                Some(list) => {
                    one_of("measurement", &claims.measurement, list)?;
                    !list.is_empty()
                }
                None => {
                    claims.warnings.push("measurement not pinned by the policy".into());
                    false
                }
            },
        };
        match &claims.platform {
            PlatformClaims::Snp(s) => {
                let section = self.policy.snp_section(claims.tee);
                let floor = section.min_tcb.as_ref().and_then(|f| f.for_product(s.product));
                match floor {
                    None if claims.tee == Tee::Snp && pinned => {
                        return Err(PolicyViolation::NoTcbFloor { product: s.product.name() }.into());
                    }
                    None => claims.warnings.push(format!("no TCB floor for {}", s.product.name())),
                    Some(_) => {}
                }
                check_snp(section, floor, s)
            }
            PlatformClaims::Tdx(t) => check_tdx(&self.policy.tdx, t, &mut claims.warnings),
        }
    }
}

fn check_validity(claims: &Claims, now: i64) -> Result<(), ChainError> {
    for v in &claims.validity {
        if now < v.not_before || now > v.not_after {
            return Err(ChainError::NotValidNow {
                what: v.what,
                now,
                not_before: v.not_before,
                not_after: v.not_after,
            });
        }
    }
    Ok(())
}

fn one_of<const N: usize>(
    field: &'static str,
    value: &[u8; N],
    allowed: &[Hex<N>],
) -> Result<(), PolicyViolation> {
    if allowed.iter().any(|a| &a.0 == value) {
        Ok(())
    } else {
        Err(PolicyViolation::NotAllowed { field, value: hex::encode(value) })
    }
}

fn exactly<const N: usize>(
    field: &'static str,
    value: &[u8; N],
    want: Option<&Hex<N>>,
) -> Result<(), PolicyViolation> {
    match want {
        Some(w) if &w.0 != value => {
            Err(PolicyViolation::Mismatch { field, expected: hex::encode(w.0), actual: hex::encode(value) })
        }
        _ => Ok(()),
    }
}

fn check_snp(p: &SnpPolicy, floor: Option<&TcbVersion>, s: &SnpClaims) -> Result<(), VerifyError> {
    let r = &s.report;
    if r.vmpl > p.max_vmpl {
        return Err(PolicyViolation::Vmpl { vmpl: r.vmpl, max: p.max_vmpl }.into());
    }
    let guest = |what: String| -> VerifyError { PolicyViolation::GuestPolicy { what }.into() };
    if r.policy & policy_bits::MIGRATE_MA != 0 && !p.allow_migration_agent {
        return Err(guest("MIGRATE_MA is set and the policy forbids a migration agent".into()));
    }
    if r.policy & policy_bits::SMT != 0 && !p.allow_smt {
        return Err(guest("SMT is allowed by the guest and the policy forbids SMT".into()));
    }
    if r.policy & policy_bits::SINGLE_SOCKET == 0 && p.require_single_socket {
        return Err(guest("SINGLE_SOCKET is not set and the policy requires it".into()));
    }
    if let Some(min) = p.min_abi {
        let (major, minor) = (((r.policy >> 8) & 0xFF) as u8, (r.policy & 0xFF) as u8);
        if (major, minor) < (min.major, min.minor) {
            return Err(guest(format!(
                "ABI {major}.{minor} is below the required {}.{}",
                min.major, min.minor
            )));
        }
    }
    if r.guest_svn < p.min_guest_svn {
        return Err(PolicyViolation::Mismatch {
            field: "guest_svn",
            expected: format!(">= {}", p.min_guest_svn),
            actual: r.guest_svn.to_string(),
        }
        .into());
    }
    if let Some(floor) = floor {
        for (which, tcb) in [
            ("REPORTED_TCB", &s.reported_tcb),
            ("COMMITTED_TCB", &s.committed_tcb),
            ("LAUNCH_TCB", &s.launch_tcb),
        ] {
            tcb_floor(which, tcb, floor)?;
        }
    }
    exactly("host_data", &r.host_data, p.host_data.as_ref())?;
    if let Some(list) = &p.id_key_digests {
        one_of("id_key_digest", &r.id_key_digest, list)?;
    }
    if let Some(list) = &p.author_key_digests {
        one_of("author_key_digest", &r.author_key_digest, list)?;
    }
    if let Some(list) = &p.chip_ids {
        one_of("chip_id", &r.chip_id, list)?;
    }
    Ok(())
}

fn tcb_floor(which: &'static str, tcb: &TcbVersion, floor: &TcbVersion) -> Result<(), PolicyViolation> {
    for (component, value, min) in [
        ("fmc", tcb.fmc, floor.fmc),
        ("bootloader", tcb.bootloader, floor.bootloader),
        ("tee", tcb.tee, floor.tee),
        ("snp", tcb.snp, floor.snp),
        ("microcode", tcb.microcode, floor.microcode),
    ] {
        if value < min {
            return Err(PolicyViolation::TcbFloor { which, component, value, floor: min });
        }
    }
    Ok(())
}

/// The TD's MRTD and RTMR0–2 must equal one allowed launch's. On refusal, name the allowed
/// launch that differs in the fewest registers, and how.
fn check_tdx_launch(launches: &[TdxLaunch], t: &TdxClaims) -> Result<(), VerifyError> {
    let reported = [&t.td.mrtd, &t.td.rtmr[0], &t.td.rtmr[1], &t.td.rtmr[2]];
    let differing = |l: &TdxLaunch| -> Vec<String> {
        l.registers()
            .iter()
            .zip(reported)
            .filter(|((_, want), got)| want != got)
            .map(|((name, want), got)| format!("{name} {} (allowed {})", hex::encode(got), hex::encode(want)))
            .collect()
    };
    let mut closest: Option<(&TdxLaunch, Vec<String>)> = None;
    for launch in launches {
        let diff = differing(launch);
        if diff.is_empty() {
            return Ok(());
        }
        if closest.as_ref().is_none_or(|(_, best)| diff.len() < best.len()) {
            closest = Some((launch, diff));
        }
    }
    let closest = match closest {
        None => "the policy allows no TDX launch".to_owned(),
        Some((launch, diff)) => {
            let name = if launch.shape.is_empty() { "an allowed launch" } else { launch.shape.as_str() };
            format!("closest is {name}, which differs in {}", diff.join(", "))
        }
    };
    Err(PolicyViolation::TdxLaunch { closest }.into())
}

fn check_tdx(p: &TdxPolicy, t: &TdxClaims, warnings: &mut Vec<String>) -> Result<(), VerifyError> {
    if !p.allowed_tcb_statuses.contains(&t.tcb_status) {
        let allowed: Vec<&str> = p.allowed_tcb_statuses.iter().map(|s| s.as_str()).collect();
        return Err(PolicyViolation::TdxTcbStatus {
            status: t.tcb_status.as_str().into(),
            allowed: allowed.join(", "),
        }
        .into());
    }
    if let Some(id) = t.advisory_ids.iter().find(|id| p.rejected_advisories.contains(id)) {
        return Err(PolicyViolation::Advisory { id: id.clone() }.into());
    }
    if !t.advisory_ids.is_empty() {
        warnings.push(format!("TDX advisories apply: {}", t.advisory_ids.join(", ")));
    }
    for (field, value, want) in [
        ("rtmr3", &t.td.rtmr[3], p.rtmr3.as_ref()),
        ("mrconfigid", &t.td.mrconfigid, p.mrconfigid.as_ref()),
        ("mrowner", &t.td.mrowner, p.mrowner.as_ref()),
        ("mrownerconfig", &t.td.mrownerconfig, p.mrownerconfig.as_ref()),
    ] {
        exactly(field, value, want)?;
    }
    exactly("xfam", &t.td.xfam, p.xfam.as_ref())?;
    Ok(())
}
