#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Negative tests with the test signer: each builds a report from the simulated hierarchy's
//! template, changes exactly one thing, re-signs, and expects the named check to fail.

use nacre_sim::{ASK_SERIAL, EK_SERIAL, SimCa, SimParams};
use nacre_verifier::policy::{Hex, TcbFloor};
use nacre_verifier::{
    Appraiser, CertSet, ChainError, Claims, ExpectedReportData, MalformedError, Policy, PolicyViolation,
    SnpEvidence, SnpRoots, SnpVerifier, Verified, VerifyError,
};
use nacre_wire::WireError;
use nacre_wire::snp::{Product, SigningKey, SnpReport, TcbVersion, policy_bits};
use time::OffsetDateTime;

const NOW: i64 = 1_790_000_000; // 2026-09-21

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).unwrap()
}

struct Fixture {
    ca: SimCa,
    certs: CertSet,
    verifier: SnpVerifier,
}

impl Fixture {
    fn new(params: SimParams) -> Self {
        let ca = SimCa::generate(params).unwrap();
        let certs = CertSet::from_der(ca.chain_der(), vec![ca.crl_der().to_vec()]).unwrap();
        let verifier = SnpVerifier::new(SnpRoots::insecure_sim(ca.ark_der()).unwrap());
        Fixture { ca, certs, verifier }
    }

    fn milan() -> Self {
        Self::new(SimParams::new(now()))
    }

    fn appraise_with(
        &self,
        report: &[u8],
        policy: Policy,
        certs: &CertSet,
    ) -> Result<Verified<Claims>, VerifyError> {
        let rd = SnpReport::parse(report).map(|r| r.report.report_data).unwrap_or([0; 64]);
        Appraiser::new(policy).appraise(
            &self.verifier,
            SnpEvidence { report, certs },
            ExpectedReportData::Exact(rd),
            NOW,
        )
    }

    fn appraise(&self, report: &[u8], policy: Policy) -> Result<Verified<Claims>, VerifyError> {
        self.appraise_with(report, policy, &self.certs)
    }

    /// Signs the template after `change`, appraises under `policy`.
    fn one_change(
        &self,
        policy: Policy,
        change: impl FnOnce(&mut SnpReport),
    ) -> Result<Verified<Claims>, VerifyError> {
        let mut r = self.ca.report_template();
        change(&mut r);
        self.appraise(&self.ca.sign(&r).unwrap(), policy)
    }
}

fn sim_policy(f: impl FnOnce(&mut nacre_verifier::policy::SnpPolicy)) -> Policy {
    let mut p = Policy::default();
    f(&mut p.sim);
    p
}

#[test]
fn the_template_is_accepted() {
    let fx = Fixture::milan();
    let v = fx.one_change(Policy::default(), |_| {}).unwrap();
    assert_eq!(v.tee, nacre_wire::Tee::Sim);
    assert!(v.warnings.iter().any(|w| w.contains("simulated")));
}

#[test]
fn debug_bit() {
    let fx = Fixture::milan();
    let r = fx.one_change(Policy::default(), |r| r.policy |= policy_bits::DEBUG);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Debug { .. }))), "{r:?}");
    assert!(fx.one_change(sim_policy(|p| p.allow_debug = true), |r| r.policy |= policy_bits::DEBUG).is_ok());
}

#[test]
fn vmpl() {
    let fx = Fixture::milan();
    let r = fx.one_change(Policy::default(), |r| r.vmpl = 2);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Vmpl { vmpl: 2, max: 1 }))), "{r:?}");
    let r = fx.one_change(sim_policy(|p| p.max_vmpl = 0), |r| r.vmpl = 1);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Vmpl { vmpl: 1, max: 0 }))), "{r:?}");
}

#[test]
fn each_tcb_component_below_the_floor() {
    let fx = Fixture::milan();
    let tcb = fx.ca.params().tcb;
    let layout = Product::Milan.tcb_layout();
    let floor = sim_policy(|p| p.min_tcb = Some(TcbFloor::Every(tcb)));
    assert!(fx.one_change(floor.clone(), |_| {}).is_ok());
    // The template's TEE SVN is 0: nothing lies below it, so TEE is covered by the floor test
    // at the end instead.
    type Lower = fn(&mut TcbVersion);
    let lowered: [(&str, Lower); 3] =
        [("bootloader", |t| t.bootloader -= 1), ("snp", |t| t.snp -= 1), ("microcode", |t| t.microcode -= 1)];
    for (component, lower) in lowered {
        // LAUNCH_TCB and COMMITTED_TCB are not tied to the VCEK: the floor decides.
        for which in ["LAUNCH_TCB", "COMMITTED_TCB"] {
            let r = fx.one_change(floor.clone(), |r| {
                let mut t = tcb;
                lower(&mut t);
                let raw = t.encode(layout);
                if which == "LAUNCH_TCB" { r.launch_tcb = raw } else { r.committed_tcb = raw }
            });
            match r {
                Err(VerifyError::Policy(PolicyViolation::TcbFloor { which: w, component: c, .. })) => {
                    assert_eq!((w, c), (which, component))
                }
                other => panic!("{which}.{component}: {other:?}"),
            }
        }
        // REPORTED_TCB must equal the VCEK's TCB extension, so lowering it fails there first.
        let r = fx.one_change(floor.clone(), |r| {
            let mut t = tcb;
            lower(&mut t);
            r.reported_tcb = t.encode(layout);
        });
        match r {
            Err(VerifyError::Chain(ChainError::TcbExtension { component: c, .. })) => {
                assert_eq!(c, component)
            }
            other => panic!("REPORTED_TCB.{component}: {other:?}"),
        }
    }
    // A floor above what the VCEK certifies rejects REPORTED_TCB itself.
    let high = sim_policy(|p| p.min_tcb = Some(TcbFloor::Every(TcbVersion { snp: tcb.snp + 1, ..tcb })));
    let r = fx.one_change(high, |_| {});
    assert!(
        matches!(
            r,
            Err(VerifyError::Policy(PolicyViolation::TcbFloor {
                which: "REPORTED_TCB",
                component: "snp",
                ..
            }))
        ),
        "{r:?}"
    );
}

#[test]
fn measurement_allow_list() {
    let fx = Fixture::milan();
    let allowed = sim_policy(|p| p.measurements = Some(vec![Hex([7; 48])]));
    assert!(fx.one_change(allowed.clone(), |r| r.measurement = [7; 48]).is_ok());
    let r = fx.one_change(allowed, |r| r.measurement = [8; 48]);
    assert!(
        matches!(r, Err(VerifyError::Policy(PolicyViolation::NotAllowed { field: "measurement", .. }))),
        "{r:?}"
    );
}

#[test]
fn report_data_binding() {
    let fx = Fixture::milan();
    let mut r = fx.ca.report_template();
    r.report_data = [1; 64];
    let bytes = fx.ca.sign(&r).unwrap();
    let appraiser = Appraiser::new(Policy::default());
    let ev = SnpEvidence { report: &bytes, certs: &fx.certs };
    assert!(appraiser.appraise(&fx.verifier, ev, ExpectedReportData::Exact([1; 64]), NOW).is_ok());
    let mut want = [1u8; 64];
    want[0] = 2;
    let res = appraiser.appraise(&fx.verifier, ev, ExpectedReportData::Exact(want), NOW);
    assert!(matches!(res, Err(VerifyError::Policy(PolicyViolation::ReportData { .. }))), "{res:?}");
}

#[test]
fn host_data_and_key_digests() {
    let fx = Fixture::milan();
    let p = sim_policy(|p| p.host_data = Some(Hex([3; 32])));
    assert!(fx.one_change(p.clone(), |r| r.host_data = [3; 32]).is_ok());
    let r = fx.one_change(p, |r| r.host_data = [4; 32]);
    assert!(
        matches!(r, Err(VerifyError::Policy(PolicyViolation::Mismatch { field: "host_data", .. }))),
        "{r:?}"
    );
    let p = sim_policy(|p| p.id_key_digests = Some(vec![Hex([5; 48])]));
    let r = fx.one_change(p, |r| r.id_key_digest = [6; 48]);
    assert!(
        matches!(r, Err(VerifyError::Policy(PolicyViolation::NotAllowed { field: "id_key_digest", .. }))),
        "{r:?}"
    );
    let p = sim_policy(|p| p.chip_ids = Some(vec![Hex([9; 64])]));
    let r = fx.one_change(p, |_| {});
    assert!(
        matches!(r, Err(VerifyError::Policy(PolicyViolation::NotAllowed { field: "chip_id", .. }))),
        "{r:?}"
    );
}

#[test]
fn version() {
    let fx = Fixture::milan();
    for v in [0u32, 1, 4, 6] {
        let mut bytes = fx.ca.sign(&fx.ca.report_template()).unwrap();
        bytes[0..4].copy_from_slice(&v.to_le_bytes());
        fx.ca.sign_raw(&mut bytes).unwrap();
        let r = fx.appraise(&bytes, Policy::default());
        assert!(
            matches!(
                r,
                Err(VerifyError::Malformed(MalformedError::Wire(WireError::UnsupportedVersion { .. })))
            ),
            "v{v}: {r:?}"
        );
    }
    // Version 2 (no CPUID) is understood: the product comes from the chain.
    assert!(
        fx.one_change(Policy::default(), |r| {
            r.version = 2;
            r.cpuid = None;
        })
        .is_ok()
    );
    // Version 5 (mitigation vectors) too.
    assert!(
        fx.one_change(Policy::default(), |r| {
            r.version = 5;
            r.launch_mit_vector = Some(0);
            r.current_mit_vector = Some(0);
        })
        .is_ok()
    );
}

#[test]
fn reserved_bytes_with_a_good_signature() {
    let fx = Fixture::milan();
    let good = fx.ca.sign(&fx.ca.report_template()).unwrap();
    for offset in [0x04C, 0x18B, 0x19F, 0x1EB, 0x1F8, 0x29F] {
        let mut bytes = good;
        bytes[offset] = 1;
        fx.ca.sign_raw(&mut bytes).unwrap();
        let r = fx.appraise(&bytes, Policy::default());
        assert!(
            matches!(r, Err(VerifyError::Malformed(MalformedError::Wire(WireError::ReservedNonZero { .. })))),
            "{offset:#x}: {r:?}"
        );
    }
}

#[test]
fn guest_policy_bits() {
    let fx = Fixture::milan();
    let r = fx.one_change(Policy::default(), |r| r.policy |= policy_bits::MIGRATE_MA);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::GuestPolicy { .. }))), "{r:?}");
    let r = fx.one_change(sim_policy(|p| p.require_single_socket = true), |_| {});
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::GuestPolicy { .. }))), "{r:?}");
    let r = fx.one_change(sim_policy(|p| p.allow_smt = false), |_| {});
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::GuestPolicy { .. }))), "{r:?}");
    let min_abi = Policy::from_toml("[sim]\nmin_abi = \"1.51\"").unwrap();
    let r = fx.one_change(min_abi.clone(), |_| {});
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::GuestPolicy { .. }))), "{r:?}");
    assert!(fx.one_change(min_abi, |r| r.policy |= 0x0133).is_ok()); // ABI 1.51
    // A reserved policy bit, even when signed, is malformed.
    let r = fx.one_change(Policy::default(), |r| r.policy |= 1 << 40);
    assert!(matches!(r, Err(VerifyError::Malformed(_))), "{r:?}");
}

#[test]
fn chip_id() {
    let fx = Fixture::milan();
    let r = fx.one_change(Policy::default(), |r| r.chip_id[5] ^= 1);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::ChipId { .. }))), "{r:?}");
    // A masked chip id cannot be matched to a VCEK.
    let r = fx.one_change(Policy::default(), |r| {
        r.mask_chip_key = true;
        r.chip_id = [0; 64];
    });
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::ChipId { .. }))), "{r:?}");
}

#[test]
fn unsigned_and_wrongly_signed() {
    let fx = Fixture::milan();
    let r = fx.one_change(Policy::default(), |r| r.signing_key = SigningKey::None);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::Unsigned))), "{r:?}");
    // Claims a VLEK signature while the chain holds a VCEK.
    let r = fx.one_change(Policy::default(), |r| r.signing_key = SigningKey::Vlek);
    assert!(r.is_err(), "{r:?}");
    // Signed by another chip's VCEK (same ASK) but presented with this chip's VCEK.
    let mut other = fx.ca.params().clone();
    other.chip_id = [0x42; 64];
    let (_, other_signer) = fx.ca.endorse_other(&other).unwrap();
    let mut r = fx.ca.report_template();
    r.chip_id = [0x42; 64];
    let res = fx.appraise(&other_signer.sign(&r).unwrap(), Policy::default());
    assert!(res.is_err(), "{res:?}");
}

#[test]
fn vcek_of_another_chip() {
    let fx = Fixture::milan();
    let mut other = fx.ca.params().clone();
    other.chip_id = [0x42; 64];
    let (other_vcek, other_signer) = fx.ca.endorse_other(&other).unwrap();
    let certs = CertSet::from_der(
        vec![fx.ca.ark_der().to_vec(), fx.ca.ask_der().to_vec(), other_vcek],
        vec![fx.ca.crl_der().to_vec()],
    )
    .unwrap();
    // Correctly signed by the other chip, but CHIP_ID says this chip.
    let bytes = other_signer.sign(&fx.ca.report_template()).unwrap();
    let r = fx.appraise_with(&bytes, Policy::default(), &certs);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::ChipId { .. }))), "{r:?}");
}

#[test]
fn revoked_serials() {
    let fx = Fixture::milan();
    let report = fx.ca.sign(&fx.ca.report_template()).unwrap();
    for (serial, what) in [(ASK_SERIAL, "ASK"), (EK_SERIAL, "VCEK")] {
        let crl = fx
            .ca
            .crl_revoking(&[serial], now() - time::Duration::days(1), now() + time::Duration::days(30))
            .unwrap();
        let certs = CertSet::from_der(fx.ca.chain_der(), vec![crl]).unwrap();
        let r = fx.appraise_with(&report, Policy::default(), &certs);
        match r {
            Err(VerifyError::Chain(ChainError::Revoked { what: w, .. })) => assert_eq!(w, what),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn crl_must_be_current_and_present() {
    let fx = Fixture::milan();
    let report = fx.ca.sign(&fx.ca.report_template()).unwrap();
    let stale =
        fx.ca.crl_revoking(&[], now() - time::Duration::days(60), now() - time::Duration::days(30)).unwrap();
    let certs = CertSet::from_der(fx.ca.chain_der(), vec![stale]).unwrap();
    let r = fx.appraise_with(&report, Policy::default(), &certs);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::NotValidNow { what: "CRL", .. }))), "{r:?}");
    let none = CertSet::from_der(fx.ca.chain_der(), vec![]).unwrap();
    let r = fx.appraise_with(&report, Policy::default(), &none);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::CrlMissing))), "{r:?}");
    let allow = Policy { insecure_allow_missing_crl: true, ..Policy::default() };
    let v = fx.appraise_with(&report, allow, &none).unwrap();
    assert!(v.warnings.iter().any(|w| w.contains("no CRL")));
    // A CRL from another ARK does not count as this ARK's CRL.
    let foreign = Fixture::milan();
    let certs = CertSet::from_der(fx.ca.chain_der(), vec![foreign.ca.crl_der().to_vec()]).unwrap();
    assert!(fx.appraise_with(&report, Policy::default(), &certs).is_err());
}

#[test]
fn certificate_validity_windows() {
    let mut params = SimParams::new(now());
    params.not_before = now() + time::Duration::days(1);
    params.not_after = now() + time::Duration::days(10);
    let fx = Fixture::new(params);
    let report = fx.ca.sign(&fx.ca.report_template()).unwrap();
    let r = fx.appraise(&report, Policy::default());
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::NotValidNow { what: "ARK", .. }))), "{r:?}");
}

#[test]
fn roots_are_never_mixed() {
    // A sim report presented as SNP: the sim ARK is not an AMD root.
    let fx = Fixture::milan();
    let report = fx.ca.sign(&fx.ca.report_template()).unwrap();
    let amd = SnpVerifier::new(SnpRoots::Amd);
    let r = Appraiser::new(Policy::default()).appraise(
        &amd,
        SnpEvidence { report: &report, certs: &fx.certs },
        ExpectedReportData::InsecureUnbound,
        NOW,
    );
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::UntrustedRoot { .. }))), "{r:?}");
    // Another sim CA's chain under this sim root.
    let other = Fixture::milan();
    let report = other.ca.sign(&other.ca.report_template()).unwrap();
    let r = fx.appraise_with(&report, Policy::default(), &other.certs);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::UntrustedRoot { .. }))), "{r:?}");
}

#[test]
fn turin_and_vlek_shapes_verify() {
    let mut turin = SimParams::new(now());
    turin.product = Product::Turin;
    turin.tcb = TcbVersion { fmc: 1, bootloader: 2, tee: 0, snp: 3, microcode: 80 };
    let fx = Fixture::new(turin);
    fx.one_change(Policy::default(), |_| {}).unwrap();
    // Turin hwID is 8 bytes: a change after them in CHIP_ID is refused.
    let r = fx.one_change(Policy::default(), |r| r.chip_id[20] = 1);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::ChipId { .. }))), "{r:?}");
    let r = fx.one_change(Policy::default(), |r| r.cpuid = Some(Product::Genoa.cpuid()));
    assert!(r.is_err(), "Turin chain with Genoa CPUID accepted: {r:?}");

    let mut vlek = SimParams::new(now());
    vlek.key = SigningKey::Vlek;
    let fx = Fixture::new(vlek);
    assert!(fx.one_change(Policy::default(), |_| {}).is_ok());
}

#[test]
fn certificate_sets_are_strict() {
    let fx = Fixture::milan();
    let report = fx.ca.sign(&fx.ca.report_template()).unwrap();
    // Missing the ASK.
    let certs = CertSet::from_der(
        vec![fx.ca.ark_der().to_vec(), fx.ca.endorsement_der().to_vec()],
        vec![fx.ca.crl_der().to_vec()],
    )
    .unwrap();
    let r = fx.appraise_with(&report, Policy::default(), &certs);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::Missing { role: "ASK" }))), "{r:?}");
    // Two endorsement keys.
    let mut other = fx.ca.params().clone();
    other.chip_id = [1; 64];
    let (vcek2, _) = fx.ca.endorse_other(&other).unwrap();
    let mut chain = fx.ca.chain_der();
    chain.push(vcek2);
    let certs = CertSet::from_der(chain, vec![fx.ca.crl_der().to_vec()]).unwrap();
    let r = fx.appraise_with(&report, Policy::default(), &certs);
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::Ambiguous { .. }))), "{r:?}");
    // Garbage and trailing bytes are malformed.
    let mut set = CertSet::default();
    assert!(set.add(b"not a certificate").is_err());
    let mut der = fx.ca.ark_der().to_vec();
    der.push(0);
    assert!(set.add(&der).is_err());
}

#[test]
fn signer_round_trips_through_disk() {
    let fx = Fixture::milan();
    let dir = std::env::temp_dir().join(format!("nacre-sim-test-{}", std::process::id()));
    fx.ca.write_to(&dir).unwrap();
    let signer = nacre_sim::SimSigner::load(&dir).unwrap();
    let report = signer.sign(&nacre_sim::report_template(signer.chip().unwrap())).unwrap();
    assert!(fx.appraise(&report, Policy::default()).is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("vcek.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "private key readable by others");
    std::fs::remove_dir_all(&dir).unwrap();
}
