#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Property tests standing in for fuzz targets (cargo-fuzz needs a nightly toolchain, which
//! this project's machines do not have): every parser of untrusted bytes gets arbitrary and
//! mutated inputs, must never panic, and round-trips where a re-encoding exists.

use nacre_tests::read_vector;
use nacre_verifier::policy::{ProductFloors, TcbFloor};
use nacre_verifier::{CertSet, Policy};
use nacre_wire::snp::{Cpuid, FwVersion, REPORT_LEN, RawTcb, SigningKey, SnpReport};
use proptest::prelude::*;

fn arb_report() -> impl Strategy<Value = SnpReport> {
    let version = prop_oneof![Just(2u32), Just(3u32), Just(5u32)];
    (
        version,
        any::<u32>(),
        any::<u64>().prop_map(|p| (p & ((1 << 26) - 1)) | (1 << 17)),
        0u32..=3,
        any::<[u8; 32]>(),
        any::<(u64, u64, u64, u64)>(),
        any::<[u8; 48]>(),
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(SigningKey::Vcek), Just(SigningKey::Vlek), Just(SigningKey::None)],
        ),
        (any::<[u8; 3]>(), any::<(u64, u64)>(), 0u64..0x80),
        (any::<[u8; 32]>(), any::<[u8; 32]>()),
    )
        .prop_map(|(version, guest_svn, policy, vmpl, bytes32, tcbs, bytes48, keys, misc, sig)| {
            let mut sig_r = [0u8; 48];
            sig_r[..32].copy_from_slice(&sig.0);
            let mut sig_s = [0u8; 48];
            sig_s[16..].copy_from_slice(&sig.1);
            let mut report_data = [0u8; 64];
            report_data[..32].copy_from_slice(&bytes32);
            let mut chip_id = [0u8; 64];
            chip_id[32..].copy_from_slice(&bytes32);
            SnpReport {
                version,
                guest_svn,
                policy,
                family_id: [1; 16],
                image_id: [2; 16],
                vmpl,
                sig_algo: 1,
                current_tcb: RawTcb(tcbs.0),
                platform_info: misc.2,
                author_key_en: keys.0,
                mask_chip_key: keys.1,
                signing_key: keys.2,
                report_data,
                measurement: bytes48,
                host_data: bytes32,
                id_key_digest: bytes48,
                author_key_digest: [9; 48],
                report_id: bytes32,
                report_id_ma: [0xFF; 32],
                reported_tcb: RawTcb(tcbs.1),
                cpuid: (version >= 3).then_some(Cpuid {
                    family: misc.0[0],
                    model: misc.0[1],
                    stepping: misc.0[2],
                }),
                chip_id,
                committed_tcb: RawTcb(tcbs.2),
                current_version: FwVersion { major: misc.0[0], minor: misc.0[1], build: misc.0[2] },
                committed_version: FwVersion::default(),
                launch_tcb: RawTcb(tcbs.3),
                launch_mit_vector: (version >= 5).then_some(misc.1.0),
                current_mit_vector: (version >= 5).then_some(misc.1.1),
                sig_r,
                sig_s,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// parse(encode(r)) == r for every well-formed report.
    #[test]
    fn report_encode_parse_round_trip(r in arb_report()) {
        let bytes = r.encode().unwrap();
        let parsed = SnpReport::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed.report, &r);
        prop_assert_eq!(parsed.raw(), &bytes);
    }

    /// Any 1184 bytes: no panic, and whatever parses re-encodes to the same bytes.
    #[test]
    fn report_parse_encode_round_trip(bytes in proptest::collection::vec(any::<u8>(), REPORT_LEN)) {
        if let Ok(parsed) = SnpReport::parse(&bytes) {
            prop_assert_eq!(parsed.report.encode().unwrap().to_vec(), bytes.clone());
        }
    }

    /// Real reports with random bytes changed: never a panic; accepted mutations re-encode exactly.
    #[test]
    fn mutated_real_reports(idx in 0usize..5, edits in proptest::collection::vec((0usize..REPORT_LEN, any::<u8>()), 1..8)) {
        let dirs = ["milan-v2-virtee-sev", "milan-v2-debug-go-sev-guest", "milan-v3-vlek-trustee", "genoa-v3-azure-trustee", "turin-v5-oak"];
        let mut bytes = read_vector(&format!("snp/{}/report.bin", dirs[idx]));
        for (i, b) in edits { bytes[i] = b; }
        if let Ok(parsed) = SnpReport::parse(&bytes) {
            prop_assert_eq!(parsed.report.encode().unwrap().to_vec(), bytes.clone());
        }
    }

    /// Certificate sets: arbitrary and truncated inputs never panic.
    #[test]
    fn cert_set_parser(cut in 0usize..2400, garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let pem = read_vector("snp/milan-v2-virtee-sev/ask.pem");
        let der = read_vector("snp/milan-v2-virtee-sev/vcek.der");
        let mut set = CertSet::default();
        let _ = set.add(&pem[..cut.min(pem.len())]);
        let _ = set.add(&der[..cut.min(der.len())]);
        let mut g = der.clone();
        g.extend_from_slice(&garbage);
        let r = set.add(&g);
        prop_assert_eq!(r.is_ok(), garbage.is_empty());
        let _ = set.add(&garbage);
    }

    /// TDX quote framing: arbitrary prefixes and edits never panic, and never read past the end.
    #[test]
    fn tdx_quote_framing(cut in 0usize..5006, edits in proptest::collection::vec((0usize..700, any::<u8>()), 0..6)) {
        let mut q = read_vector("tdx/v4-b0c06f-phala/quote.bin");
        for (i, b) in edits { q[i] = b; }
        let q = &q[..cut];
        if let Ok(end) = nacre_verifier::tdx::quote_len(q) {
            prop_assert!(end <= q.len());
        }
        let _ = nacre_verifier::tdx::parse_unverified(q);
    }

    /// Policy files: arbitrary text never panics; a parsed policy re-renders to an equal policy.
    #[test]
    fn policy_parser(text in "[a-z_\\[\\]=\" 0-9.\n{},]{0,200}") {
        if let Ok(p) = Policy::from_toml(&text) {
            prop_assert_eq!(Policy::from_toml(&p.to_toml().unwrap()).unwrap(), p);
        }
    }

    /// Structured policies round-trip through TOML.
    #[test]
    fn policy_round_trip(max_vmpl in 0u32..4, debug in any::<bool>(), crl in any::<bool>(), m in any::<[u8; 32]>(), bl in any::<u8>()) {
        let mut p = Policy { insecure_allow_missing_crl: crl, ..Policy::default() };
        p.snp.max_vmpl = max_vmpl;
        p.tdx.allow_debug = debug;
        let mut meas = [0u8; 48];
        meas[..32].copy_from_slice(&m);
        p.sim.measurements = Some(vec![nacre_verifier::policy::Hex(meas)]);
        let floor = nacre_wire::snp::TcbVersion { bootloader: bl, ..Default::default() };
        p.snp.min_tcb = Some(if debug {
            TcbFloor::Every(floor)
        } else {
            TcbFloor::PerProduct(ProductFloors { genoa: Some(floor), ..Default::default() })
        });
        prop_assert_eq!(Policy::from_toml(&p.to_toml().unwrap()).unwrap(), p);
    }
}
