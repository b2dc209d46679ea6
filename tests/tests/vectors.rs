#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Every real vector in ../shared/vectors with its expected outcome (see its README).

use nacre_tests::{read_vector, unix, vectors_dir};
use nacre_verifier::claims::PlatformClaims;
use nacre_verifier::tdx::collateral_from_json;
use nacre_verifier::{
    Appraiser, CertSet, ChainError, ExpectedReportData, MalformedError, Policy, PolicyViolation, Product,
    SnpEvidence, SnpRoots, SnpVerifier, TdxEvidence, TdxTcbStatus, TdxVerifier, VerifyError,
};
use nacre_wire::snp::{SnpReport, TcbVersion};

const SNP_NOW: &str = "2025-10-01T00:00:00Z";

struct SnpCase {
    dir: &'static str,
    measurement: &'static str,
    has_crl: bool,
    debug: bool,
}

const SNP_CASES: [SnpCase; 5] = [
    SnpCase {
        dir: "milan-v2-virtee-sev",
        measurement: "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f",
        has_crl: true,
        debug: false,
    },
    SnpCase {
        dir: "milan-v2-debug-go-sev-guest",
        measurement: "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
        has_crl: true,
        debug: true,
    },
    SnpCase {
        dir: "milan-v3-vlek-trustee",
        measurement: "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0",
        has_crl: false,
        debug: false,
    },
    SnpCase {
        dir: "genoa-v3-azure-trustee",
        measurement: "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae",
        has_crl: true,
        debug: false,
    },
    SnpCase {
        dir: "turin-v5-oak",
        measurement: "f924dd18f168df60fbea937f0b086284d51b1b376de872bac43694f61134d57967c318018de7335503023dbb50dee624",
        has_crl: false,
        debug: false,
    },
];

/// Loads every certificate and CRL file of an SNP vector directory.
fn snp_certs(dir: &str) -> CertSet {
    let mut set = CertSet::default();
    let path = vectors_dir().join("snp").join(dir);
    let mut names: Vec<_> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    for name in names {
        // The VLEK directory also carries the ASVK+ARK bundle it was split from.
        if name == "report.bin" || name.ends_with(".hex") || name == "ask_ark_milan_vlek.pem" {
            continue;
        }
        if name.ends_with(".pem") || name.ends_with(".der") {
            set.add(&std::fs::read(path.join(&name)).unwrap())
                .unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
        }
    }
    set
}

fn appraise_snp(
    dir: &str,
    policy: Policy,
    now: &str,
) -> Result<nacre_verifier::Verified<nacre_verifier::Claims>, VerifyError> {
    let report = read_vector(&format!("snp/{dir}/report.bin"));
    let certs = snp_certs(dir);
    let verifier = SnpVerifier::new(SnpRoots::Amd);
    Appraiser::new(policy).appraise(
        &verifier,
        SnpEvidence { report: &report, certs: &certs },
        ExpectedReportData::InsecureUnbound,
        unix(now),
    )
}

fn lenient() -> Policy {
    let mut p = Policy { insecure_allow_missing_crl: true, ..Policy::default() };
    p.snp.allow_debug = true;
    p
}

#[test]
fn ark_pins_match_amd_roots() {
    for (p, file) in [(Product::Milan, "milan"), (Product::Genoa, "genoa"), (Product::Turin, "turin")] {
        let mut set = CertSet::default();
        set.add(&read_vector(&format!("roots/amd_{file}_ark.pem"))).unwrap();
        let cert = nacre_verifier::x509::parse_cert(&set.certs[0]).unwrap();
        assert_eq!(
            nacre_verifier::x509::spki_sha256(&cert),
            nacre_verifier::snp::ark_spki_sha256(p),
            "{file}"
        );
    }
}

#[test]
fn every_snp_vector_has_its_expected_outcome_by_default() {
    for case in &SNP_CASES {
        let result = appraise_snp(case.dir, Policy::default(), SNP_NOW);
        match (case.has_crl, case.debug) {
            (true, false) => {
                let v = result.unwrap_or_else(|e| panic!("{}: {e}", case.dir));
                assert_eq!(hex::encode(v.measurement), case.measurement, "{}", case.dir);
            }
            (true, true) => assert!(
                matches!(result, Err(VerifyError::Policy(PolicyViolation::Debug { .. }))),
                "{}: {result:?}",
                case.dir
            ),
            (false, _) => {
                assert!(
                    matches!(result, Err(VerifyError::Chain(ChainError::CrlMissing))),
                    "{}: {result:?}",
                    case.dir
                )
            }
        }
    }
}

#[test]
fn every_snp_vector_is_genuine_under_an_explicit_lenient_policy() {
    for case in &SNP_CASES {
        let v = appraise_snp(case.dir, lenient(), SNP_NOW).unwrap_or_else(|e| panic!("{}: {e}", case.dir));
        assert_eq!(hex::encode(v.measurement), case.measurement, "{}", case.dir);
        assert_eq!(v.debug, case.debug, "{}", case.dir);
        let PlatformClaims::Snp(s) = &v.platform else { panic!("not SNP") };
        assert_eq!(s.crl_checked, case.has_crl);
        assert_eq!(v.warnings.iter().any(|w| w.contains("no CRL")), !case.has_crl, "{}", case.dir);
    }
}

#[test]
fn snp_claims_match_the_vector_readme() {
    let v = appraise_snp("turin-v5-oak", lenient(), SNP_NOW).unwrap();
    let PlatformClaims::Snp(s) = &v.platform else { panic!() };
    assert_eq!(s.product, Product::Turin);
    assert_eq!(s.reported_tcb, TcbVersion { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 });
    assert_eq!(s.report.launch_mit_vector, Some(0));
    let v = appraise_snp("milan-v3-vlek-trustee", lenient(), SNP_NOW).unwrap();
    let PlatformClaims::Snp(s) = &v.platform else { panic!() };
    assert_eq!(s.product, Product::Milan);
    assert_eq!(s.report.vmpl, 1);
    assert_eq!(s.reported_tcb, TcbVersion { fmc: 0, bootloader: 4, tee: 0, snp: 24, microcode: 217 });
    assert_eq!(s.current_tcb.microcode, 220);
    let v = appraise_snp("genoa-v3-azure-trustee", Policy::default(), SNP_NOW).unwrap();
    let PlatformClaims::Snp(s) = &v.platform else { panic!() };
    assert_eq!(s.product, Product::Genoa);
    assert_eq!(s.report.guest_svn, 65547);
    assert_eq!(
        hex::encode(s.report.report_data),
        "b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f0000000000000000000000000000000000000000000000000000000000000000"
    );
}

/// The `sev` crate parses the same fields from the same bytes (differential check).
#[test]
fn parser_agrees_with_the_sev_crate() {
    use sev::parser::ByteParser;
    for case in &SNP_CASES {
        let bytes = read_vector(&format!("snp/{}/report.bin", case.dir));
        let ours = SnpReport::parse(&bytes).unwrap().report;
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
        assert_eq!(ours.version, theirs.version, "{}", case.dir);
        assert_eq!(ours.measurement, theirs.measurement);
        assert_eq!(ours.report_data, theirs.report_data);
        assert_eq!(ours.chip_id, theirs.chip_id);
        assert_eq!(ours.host_data, theirs.host_data);
        assert_eq!(ours.vmpl, theirs.vmpl);
        assert_eq!(ours.guest_svn, theirs.guest_svn);
        assert_eq!(ours.id_key_digest, theirs.id_key_digest);
        assert_eq!(ours.report_id, theirs.report_id);
        assert_eq!(ours.cpuid.map(|c| c.family), theirs.cpuid_fam_id);
        assert_eq!(ours.encode().unwrap().as_slice(), bytes.as_slice(), "re-encoding differs: {}", case.dir);
    }
}

/// Every byte of the signed region, and of the signature, flipped: rejected.
#[test]
fn every_flipped_byte_of_a_real_report_is_rejected() {
    let verifier = SnpVerifier::new(SnpRoots::Amd);
    let appraiser = Appraiser::new(lenient());
    let now = unix(SNP_NOW);
    for case in &SNP_CASES {
        let good = read_vector(&format!("snp/{}/report.bin", case.dir));
        let certs = snp_certs(case.dir);
        let ev = |r: &[u8]| {
            appraiser.appraise(
                &verifier,
                SnpEvidence { report: r, certs: &certs },
                ExpectedReportData::InsecureUnbound,
                now,
            )
        };
        assert!(ev(&good).is_ok());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(ev(&bad).is_err(), "{}: flipped byte {i:#x} accepted", case.dir);
        }
    }
}

/// Appraises a vector's report with certificate files picked from anywhere in the vectors.
fn appraise_mixed(
    report: &str,
    files: [&str; 4],
) -> Result<nacre_verifier::Verified<nacre_verifier::Claims>, VerifyError> {
    let report = read_vector(report);
    let mut certs = CertSet::default();
    for f in files {
        certs.add(&read_vector(f)).unwrap();
    }
    Appraiser::new(Policy::default()).appraise(
        &SnpVerifier::new(SnpRoots::Amd),
        SnpEvidence { report: &report, certs: &certs },
        ExpectedReportData::InsecureUnbound,
        unix(SNP_NOW),
    )
}

#[test]
fn wrong_product_root_is_refused() {
    // The Genoa report with Milan's ARK and ASK: the CPUID says Genoa, so only Genoa's pin fits.
    let r = appraise_mixed(
        "snp/genoa-v3-azure-trustee/report.bin",
        [
            "roots/amd_milan_ark.pem",
            "roots/amd_milan_ask.pem",
            "roots/amd_milan_vcek_crl.pem",
            "snp/genoa-v3-azure-trustee/vcek.pem",
        ],
    );
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::UntrustedRoot { .. }))), "{r:?}");
}

#[test]
fn vcek_of_another_chip_is_refused() {
    // milan-v2-virtee-sev's report with the debug vector's VCEK (another Milan chip).
    let r = appraise_mixed(
        "snp/milan-v2-virtee-sev/report.bin",
        [
            "roots/amd_milan_ark.pem",
            "roots/amd_milan_ask.pem",
            "roots/amd_milan_vcek_crl.pem",
            "snp/milan-v2-debug-go-sev-guest/vcek.der",
        ],
    );
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::ReportSignature { .. }))), "{r:?}");
}

#[test]
fn times_outside_each_window_are_refused() {
    // VCEK of milan-v2-virtee-sev: 2023-04-03 .. 2030-04-03; CRL: 2025-05-06 .. 2026-05-12.
    for (now, what) in
        [("2023-01-01T00:00:00Z", "VCEK"), ("2025-05-01T00:00:00Z", "CRL"), ("2026-06-01T00:00:00Z", "CRL")]
    {
        let r = appraise_snp("milan-v2-virtee-sev", Policy::default(), now);
        match r {
            Err(VerifyError::Chain(ChainError::NotValidNow { what: w, .. })) => assert_eq!(w, what, "{now}"),
            other => panic!("{now}: {other:?}"),
        }
    }
    // The VLEK expires 2025-12-10.
    let r = appraise_snp("milan-v3-vlek-trustee", lenient(), "2025-12-11T00:00:00Z");
    assert!(matches!(r, Err(VerifyError::Chain(ChainError::NotValidNow { what: "VLEK", .. }))), "{r:?}");
}

#[test]
fn explicit_policy_decides_vmpl_and_measurement() {
    let mut p = lenient();
    p.snp.max_vmpl = 0;
    let r = appraise_snp("milan-v3-vlek-trustee", p, SNP_NOW);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Vmpl { vmpl: 1, max: 0 }))), "{r:?}");
    let p = Policy::from_toml(&format!(
        "[snp]\nmeasurements = [\"{}\"]\n{GENOA_FLOOR}",
        SNP_CASES[3].measurement
    ))
    .unwrap();
    assert!(appraise_snp("genoa-v3-azure-trustee", p.clone(), SNP_NOW).is_ok());
    let r = appraise_snp("milan-v2-virtee-sev", p, SNP_NOW);
    assert!(
        matches!(r, Err(VerifyError::Policy(PolicyViolation::NotAllowed { field: "measurement", .. }))),
        "{r:?}"
    );
}

/// The TCB of `genoa-v3-azure-trustee` (the vectors' README), as a per-product floor.
const GENOA_FLOOR: &str = "[snp.min_tcb.genoa]\nbootloader = 10\ntee = 0\nsnp = 23\nmicrocode = 84\n";

/// Firmware floors (issue 12 §3): a real report below the floor is refused with the component
/// and the TCB it failed; a pinned SNP policy without a floor for the report's product refuses
/// it, naming the product.
#[test]
fn snp_vector_below_the_firmware_floor_is_refused() {
    let pinned = format!("[snp]\nmeasurements = [\"{}\"]\n", SNP_CASES[3].measurement);
    let above = Policy::from_toml(&format!(
        "{pinned}min_tcb = {{ bootloader = 10, tee = 0, snp = 23, microcode = 85 }}"
    ))
    .unwrap();
    let r = appraise_snp("genoa-v3-azure-trustee", above, SNP_NOW);
    assert!(
        matches!(
            r,
            Err(VerifyError::Policy(PolicyViolation::TcbFloor {
                which: "REPORTED_TCB",
                component: "microcode",
                value: 84,
                floor: 85
            }))
        ),
        "{r:?}"
    );
    let milan_only = Policy::from_toml(&format!(
        "{pinned}[snp.min_tcb.milan]\nbootloader = 3\ntee = 0\nsnp = 8\nmicrocode = 115\n"
    ))
    .unwrap();
    let r = appraise_snp("genoa-v3-azure-trustee", milan_only, SNP_NOW);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::NoTcbFloor { product: "Genoa" }))), "{r:?}");
    let none = Policy::from_toml(&pinned).unwrap();
    let r = appraise_snp("genoa-v3-azure-trustee", none, SNP_NOW);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::NoTcbFloor { product: "Genoa" }))), "{r:?}");
    let at = Policy::from_toml(&format!("{pinned}{GENOA_FLOOR}")).unwrap();
    assert!(appraise_snp("genoa-v3-azure-trustee", at, SNP_NOW).is_ok());
}

#[test]
fn report_data_binding_is_exact() {
    let report = read_vector("snp/genoa-v3-azure-trustee/report.bin");
    let certs = snp_certs("genoa-v3-azure-trustee");
    let parsed = SnpReport::parse(&report).unwrap().report;
    let verifier = SnpVerifier::new(SnpRoots::Amd);
    let appraiser = Appraiser::new(Policy::default());
    let ev = SnpEvidence { report: &report, certs: &certs };
    assert!(
        appraiser
            .appraise(&verifier, ev, ExpectedReportData::Exact(parsed.report_data), unix(SNP_NOW))
            .is_ok()
    );
    // The real value is 32 bytes of hash and 32 zero bytes; a caller that expects only the
    // first 32 bytes followed by anything else must fail.
    let mut other = parsed.report_data;
    other[63] = 1;
    let r = appraiser.appraise(&verifier, ev, ExpectedReportData::Exact(other), unix(SNP_NOW));
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::ReportData { .. }))), "{r:?}");
}

// ---------------------------------------------------------------------------------- TDX

struct TdxCase {
    dir: &'static str,
    now: i64,
}

const TDX_UPTODATE: TdxCase = TdxCase { dir: "v4-b0c06f-phala", now: 1_751_623_200 };
const TDX_OUTDATED: TdxCase = TdxCase { dir: "v5-90c06f-phala-outdated", now: 1_772_704_800 };
const TDX_DEBUG: TdxCase = TdxCase { dir: "x-v4-50806f-debug-trustee", now: 1_687_939_200 };

fn appraise_tdx(
    case: &TdxCase,
    quote: &[u8],
    policy: Policy,
    now: i64,
) -> Result<nacre_verifier::Verified<nacre_verifier::Claims>, VerifyError> {
    let collateral =
        collateral_from_json(&read_vector(&format!("tdx/{}/collateral.json", case.dir))).unwrap();
    Appraiser::new(policy).appraise(
        &TdxVerifier::new(),
        TdxEvidence { quote, collateral: &collateral, event_log: None },
        ExpectedReportData::InsecureUnbound,
        now,
    )
}

fn quote(case: &TdxCase) -> Vec<u8> {
    read_vector(&format!("tdx/{}/quote.bin", case.dir))
}

#[test]
fn tdx_v4_up_to_date_is_accepted_with_typed_claims() {
    let v = appraise_tdx(&TDX_UPTODATE, &quote(&TDX_UPTODATE), Policy::default(), TDX_UPTODATE.now).unwrap();
    let PlatformClaims::Tdx(t) = &v.platform else { panic!() };
    assert_eq!(t.tcb_status, TdxTcbStatus::UpToDate);
    assert!(t.advisory_ids.is_empty());
    assert_eq!(t.td.quote_version, 4);
    assert_eq!(
        hex::encode(t.td.mrtd),
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    assert_eq!(
        hex::encode(t.td.rtmr[0]),
        "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"
    );
    assert_eq!(hex::encode(t.td.rtmr[3]), "0".repeat(96));
    assert_eq!(hex::encode(t.td.xfam), "e702060000000000");
    assert_eq!(hex::encode(t.td.td_attributes), "0000001000000000");
    assert!(!v.debug);
    assert_eq!(
        hex::encode(v.report_data),
        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
    );
    // 70 zero bytes of padding follow the signature data.
    assert!(v.warnings.iter().any(|w| w.contains("70 zero bytes")), "{:?}", v.warnings);
}

#[test]
fn tdx_outdated_platform_is_refused() {
    let r = appraise_tdx(&TDX_OUTDATED, &quote(&TDX_OUTDATED), Policy::default(), TDX_OUTDATED.now);
    match r {
        Err(VerifyError::Chain(ChainError::Tdx(msg))) => {
            assert!(msg.contains("No matching TCB level"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tdx_debug_td_needs_an_explicit_policy() {
    let q = quote(&TDX_DEBUG);
    let r = appraise_tdx(&TDX_DEBUG, &q, Policy::default(), TDX_DEBUG.now);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Debug { .. }))), "{r:?}");
    let p = Policy::from_toml("[tdx]\nallow_debug = true").unwrap();
    let v = appraise_tdx(&TDX_DEBUG, &q, p, TDX_DEBUG.now).unwrap();
    assert!(v.debug);
}

#[test]
fn tdx_policy_fields_are_enforced() {
    let q = quote(&TDX_UPTODATE);
    let p = Policy::from_toml(&format!("[tdx]\nrtmr3 = \"{}\"", "11".repeat(48))).unwrap();
    let r = appraise_tdx(&TDX_UPTODATE, &q, p, TDX_UPTODATE.now);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::Mismatch { field: "rtmr3", .. }))), "{r:?}");
    let p = Policy::from_toml(&format!(
        "[[tdx.launches]]\nmrtd = \"{0}\"\nrtmr0 = \"{0}\"\nrtmr1 = \"{0}\"\nrtmr2 = \"{0}\"",
        "22".repeat(48)
    ))
    .unwrap();
    let r = appraise_tdx(&TDX_UPTODATE, &q, p, TDX_UPTODATE.now);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::TdxLaunch { .. }))), "{r:?}");
    let p = Policy::from_toml("[tdx]\nallowed_tcb_statuses = []").unwrap();
    let r = appraise_tdx(&TDX_UPTODATE, &q, p, TDX_UPTODATE.now);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::TdxTcbStatus { .. }))), "{r:?}");
}

/// Issue 12 §1, issue 13: MRTD covers the firmware only, so a TDX launch is MRTD and RTMR0–2
/// together. The real quote passes a policy whose launch has its four registers; one wrong
/// register refuses it, and the refusal names that register and the closest launch's shape.
#[test]
fn tdx_release_on_the_firmware_measurement_alone_is_refused() {
    let q = quote(&TDX_UPTODATE);
    let v = appraise_tdx(&TDX_UPTODATE, &q, Policy::default(), TDX_UPTODATE.now).unwrap();
    assert!(
        v.warnings.iter().any(|w| w.contains("boot chain (MRTD, RTMR0–2) not pinned")),
        "{:?}",
        v.warnings
    );
    let PlatformClaims::Tdx(t) = &v.platform else { panic!() };
    let (mrtd, rtmr) = (hex::encode(t.td.mrtd), t.td.rtmr.map(hex::encode));
    assert!(
        Policy::from_toml(&format!("[tdx]\nmrtd = [\"{mrtd}\"]\n")).is_err(),
        "MRTD alone cannot be written"
    );
    let launch = |r0: &str, r1: &str, r2: &str| {
        format!(
            "[[tdx.launches]]\nshape = \"2048 MiB\"\nmrtd = \"{mrtd}\"\nrtmr0 = \"{r0}\"\nrtmr1 = \"{r1}\"\nrtmr2 = \"{r2}\"\n"
        )
    };
    let p = Policy::from_toml(&launch(&rtmr[0], &rtmr[1], &rtmr[2])).unwrap();
    assert!(p.pins_a_measurement());
    assert!(appraise_tdx(&TDX_UPTODATE, &q, p, TDX_UPTODATE.now).is_ok());
    let zero = "00".repeat(48);
    for (i, text) in [
        launch(&zero, &rtmr[1], &rtmr[2]),
        launch(&rtmr[0], &zero, &rtmr[2]),
        launch(&rtmr[0], &rtmr[1], &zero),
    ]
    .into_iter()
    .enumerate()
    {
        // Another, farther launch in the list too: the closest one is named.
        let text = format!("{text}{}", launch(&zero, &zero, &zero).replace("2048 MiB", "far"));
        let r = appraise_tdx(&TDX_UPTODATE, &q, Policy::from_toml(&text).unwrap(), TDX_UPTODATE.now);
        let Err(VerifyError::Policy(PolicyViolation::TdxLaunch { closest })) = &r else { panic!("{r:?}") };
        assert!(closest.contains("closest is 2048 MiB"), "{closest}");
        assert!(closest.contains(&format!("rtmr{i} {}", rtmr[i])), "{closest}");
        assert_eq!(closest.matches("(allowed").count(), 1, "{closest}");
    }
    let r =
        appraise_tdx(&TDX_UPTODATE, &q, Policy::from_toml("[tdx]\nlaunches = []").unwrap(), TDX_UPTODATE.now);
    assert!(matches!(r, Err(VerifyError::Policy(PolicyViolation::TdxLaunch { .. }))), "{r:?}");
}

#[test]
fn tdx_framing_is_strict() {
    let q = quote(&TDX_UPTODATE);
    let mut nonzero_tail = q.clone();
    *nonzero_tail.last_mut().unwrap() = 1;
    let r = appraise_tdx(&TDX_UPTODATE, &nonzero_tail, Policy::default(), TDX_UPTODATE.now);
    assert!(matches!(r, Err(VerifyError::Malformed(MalformedError::Quote(_)))), "{r:?}");
    for len in [0, 10, 48, 700, 4935] {
        let r = appraise_tdx(&TDX_UPTODATE, &q[..len], Policy::default(), TDX_UPTODATE.now);
        assert!(matches!(r, Err(VerifyError::Malformed(_))), "len {len}: {r:?}");
    }
}

#[test]
fn tdx_outside_the_collateral_window_is_refused() {
    let q = quote(&TDX_UPTODATE);
    for now in [unix("2025-06-01T00:00:00Z"), unix("2025-08-01T00:00:00Z")] {
        assert!(appraise_tdx(&TDX_UPTODATE, &q, Policy::default(), now).is_err(), "{now}");
    }
}

#[test]
fn tdx_flipped_bytes_are_rejected() {
    let good = quote(&TDX_UPTODATE);
    let collateral = collateral_from_json(&read_vector("tdx/v4-b0c06f-phala/collateral.json")).unwrap();
    let verifier = TdxVerifier::new();
    let appraiser = Appraiser::new(Policy::default());
    // Header, TD report (the signed body) and the start of the signature data, every 7th byte.
    for i in (0..700).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let r = appraiser.appraise(
            &verifier,
            TdxEvidence { quote: &bad, collateral: &collateral, event_log: None },
            ExpectedReportData::InsecureUnbound,
            TDX_UPTODATE.now,
        );
        assert!(r.is_err(), "flipped byte {i} accepted");
    }
}

#[test]
fn file_cache_serves_endorsements_for_real_reports() {
    use nacre_verifier::collateral::{CollateralSource, FileCache};
    let dir = std::env::temp_dir().join(format!("nacre-cache-test-{}", std::process::id()));
    let cache = FileCache::new(&dir);
    let report_bytes = read_vector("snp/genoa-v3-azure-trustee/report.bin");
    let report = SnpReport::parse(&report_bytes).unwrap().report;
    let product_dir = dir.join("snp/Genoa");
    std::fs::create_dir_all(product_dir.join("vcek")).unwrap();
    for (from, to) in [("ark.pem", "ark.pem"), ("ask.pem", "ask.pem"), ("crl.pem", "crl.pem")] {
        std::fs::write(product_dir.join(to), read_vector(&format!("snp/genoa-v3-azure-trustee/{from}")))
            .unwrap();
    }
    // Missing VCEK: a clear collateral error, not a verification result.
    assert!(cache.snp_certs(Product::Genoa, &report).is_err());
    std::fs::write(
        cache.endorsement_path(Product::Genoa, &report),
        read_vector("snp/genoa-v3-azure-trustee/vcek.pem"),
    )
    .unwrap();
    let certs = cache.snp_certs(Product::Genoa, &report).unwrap();
    let v = Appraiser::new(Policy::default())
        .appraise(
            &SnpVerifier::new(SnpRoots::Amd),
            SnpEvidence { report: &report_bytes, certs: &certs },
            ExpectedReportData::Exact(report.report_data),
            unix(SNP_NOW),
        )
        .unwrap();
    assert_eq!(hex::encode(v.measurement), SNP_CASES[3].measurement);
    // TDX collateral by FMSPC.
    std::fs::create_dir_all(dir.join("tdx")).unwrap();
    std::fs::write(dir.join("tdx/B0C06F000000.json"), read_vector("tdx/v4-b0c06f-phala/collateral.json"))
        .unwrap();
    let collateral = cache.tdx_collateral(&[0xB0, 0xC0, 0x6F, 0, 0, 0]).unwrap();
    let q = quote(&TDX_UPTODATE);
    assert!(
        Appraiser::new(Policy::default())
            .appraise(
                &TdxVerifier::new(),
                TdxEvidence { quote: &q, collateral: &collateral, event_log: None },
                ExpectedReportData::InsecureUnbound,
                TDX_UPTODATE.now
            )
            .is_ok()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
