#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Our TDX measurements of a direct kernel boot against the golden values of an independent
//! implementation, Fraunhofer-AISEC measured-boot-tools `calculate-tdx-mrs` (C, OpenSSL), on
//! seven launch shapes: 1, 2, 2.5, 4 and 8 GiB of memory (below and above QEMU's 2.75 GiB q35
//! split), with and without an initrd, two command lines. The values, the exact command lines
//! that produced them and the input digests are in `data/tdx/` (`generate.sh` and
//! `golden_shape.py` produced `golden.json`; CI cannot rebuild the C tool).
//!
//! Inputs: the pinned kernel (`NACRE_KERNEL`) and the pinned trixie TDVF (`NACRE_TDVF`) from
//! `scripts/inputs.sh`, each checked against the digest the golden values were computed from;
//! a variable of the same name in the environment takes precedence. A missing or different
//! input fails the test: it is the only check of RTMR1/RTMR2 against another implementation.

mod common;

use std::path::PathBuf;

use aws_lc_rs::digest::{SHA256, digest};
use nacre_images::measure::tdx::{
    AcpiDigests, BootInputs, LaunchShape, QemuVersion, events, first_difference, kernel_patch, measure,
};
use serde_json::Value;

/// The inputs `data/tdx/golden.json` was computed from.
const KERNEL_SHA256: &str = "ed8f0dbdbefe3994093937f5ee934818ae902b88cb0b6bc423811c10d55b87b0";
const TDVF_SHA256: &str = "14954040cc754ade0c625ac3470ea46d4c14318b5b1396de4ef77090203d76db";

fn pinned(name: &str, sha256: &str) -> Vec<u8> {
    let path = std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| common::input(name));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}={}: {e}", path.display()));
    let got = hex::encode(digest(&SHA256, &bytes));
    assert_eq!(
        got,
        sha256,
        "{name}={} is not the file data/tdx/golden.json was computed from (Debian trixie's \
         linux-image-6.12.117+deb13-cloud-amd64 vmlinuz / ovmf 2025.02-8+deb13u1 OVMF.fd)",
        path.display()
    );
    bytes
}

/// The synthetic initrd of `generate.sh`: byte i = ((i * 7) ^ (i >> 9)) & 0xff, 0x100000 + 1234
/// bytes.
fn initrd() -> Vec<u8> {
    (0..0x10_0000usize + 1234).map(|i| ((i * 7) ^ (i >> 9)) as u8).collect()
}

/// The placeholder ACPI blobs `generate.sh` gave the tool.
fn acpi() -> AcpiDigests {
    AcpiDigests {
        table_loader: events::sha384(b"nacre tdx golden: etc/table-loader placeholder"),
        rsdp: events::sha384(b"nacre tdx golden: etc/acpi/rsdp placeholder"),
        tables: events::sha384(b"nacre tdx golden: etc/acpi/tables placeholder"),
    }
}

fn golden() -> Vec<Value> {
    let text = include_str!("data/tdx/golden.json");
    serde_json::from_str::<Value>(text).unwrap().as_array().unwrap().clone()
}

fn hex48(v: &Value) -> [u8; 48] {
    let mut out = [0u8; 48];
    hex::decode_to_slice(v.as_str().unwrap(), &mut out).unwrap();
    out
}

fn digests(v: &Value) -> Vec<[u8; 48]> {
    v.as_array().unwrap().iter().map(|e| hex48(&e["digest"])).collect()
}

#[test]
fn rtmr1_rtmr2_and_rtmr0_events_equal_calculate_tdx_mrs() {
    let kernel = pinned("NACRE_KERNEL", KERNEL_SHA256);
    let firmware = pinned("NACRE_TDVF", TDVF_SHA256);
    let initrd = initrd();
    let shapes = golden();
    assert!(shapes.len() >= 5);
    let mut hob_checked = 0;
    for g in &shapes {
        let name = g["name"].as_str().unwrap();
        let shape = LaunchShape {
            memory_bytes: g["memory_bytes"].as_u64().unwrap(),
            vcpus: 2,
            qemu: QemuVersion { major: 9, minor: 2, patch: 0 },
        };
        let boot = BootInputs {
            firmware: &firmware,
            kernel: &kernel,
            initrd: g["initrd"].as_bool().unwrap().then_some(&initrd[..]),
            cmdline: g["cmdline"].as_str().unwrap(),
        };
        let m = measure(&shape, &boot).unwrap();

        // The patched kernel, byte for byte (the tool dumps the file it measured).
        let patched = kernel_patch::qemu_patched_kernel(
            &kernel,
            boot.cmdline,
            boot.initrd.map(<[u8]>::len),
            shape.memory_bytes,
        )
        .unwrap();
        assert_eq!(
            hex::encode(digest(&SHA256, &patched)),
            g["patched_kernel_sha256"].as_str().unwrap(),
            "{name}: patched kernel"
        );
        assert_eq!(m.mrtd, hex48(&g["mrtd"]), "{name}: MRTD");
        let rtmr1: Vec<_> = m.rtmr1_events.iter().map(|e| e.digest).collect();
        assert_eq!(rtmr1, digests(&g["events"]["rtmr1"]), "{name}: RTMR1 events");
        assert_eq!(m.rtmr1(), hex48(&g["rtmr1"]), "{name}: RTMR1");
        let rtmr2: Vec<_> = m.rtmr2_events.iter().map(|e| e.digest).collect();
        assert_eq!(rtmr2, digests(&g["events"]["rtmr2"]), "{name}: RTMR2 events");
        assert_eq!(m.rtmr2(), hex48(&g["rtmr2"]), "{name}: RTMR2");

        // RTMR0: every event but the TD HOB for every shape; the TD HOB, and so the whole
        // register, where the tool's hard-coded HOB describes the shape (4 GiB).
        let ours: Vec<_> = m.rtmr0_events(&acpi()).iter().map(|e| e.digest).collect();
        let theirs = digests(&g["events"]["rtmr0"]);
        assert_eq!(ours.len(), theirs.len(), "{name}: RTMR0 event count");
        assert_eq!(ours[1..], theirs[1..], "{name}: RTMR0 events after the TD HOB");
        if g["tool_td_hob_applies"].as_bool().unwrap() {
            assert_eq!(ours[0], theirs[0], "{name}: TD HOB");
            assert_eq!(m.rtmr0(&acpi()), hex48(&g["rtmr0_with_placeholder_acpi"]), "{name}: RTMR0");
            hob_checked += 1;
        } else {
            assert_ne!(
                ours[0],
                theirs[0],
                "{name}: a {} GiB HOB equal to the tool's 4 GiB one",
                shape.memory_bytes >> 30
            );
        }

        // The tool's event list, replayed as a log, agrees with ours.
        let log: Vec<(u8, [u8; 48])> = [(1u8, &g["events"]["rtmr1"]), (2, &g["events"]["rtmr2"])]
            .into_iter()
            .flat_map(|(r, v)| digests(v).into_iter().map(move |d| (r, d)))
            .collect();
        let expected = [m.rtmr1_events.clone(), m.rtmr2_events.clone()].concat();
        assert_eq!(first_difference(&log, &expected), None, "{name}");
    }
    assert!(hob_checked >= 2);
}

/// A changed initrd byte moves RTMR2 only; another initrd size moves RTMR1 as well (the
/// patched header holds the size and the address); the memory size moves RTMR1 only across
/// QEMU's split, and the TD HOB always.
#[test]
fn what_each_input_moves() {
    let kernel = pinned("NACRE_KERNEL", KERNEL_SHA256);
    let firmware = pinned("NACRE_TDVF", TDVF_SHA256);
    let initrd = initrd();
    let shape = |gib: u64| LaunchShape {
        memory_bytes: gib << 30,
        vcpus: 2,
        qemu: QemuVersion { major: 9, minor: 2, patch: 0 },
    };
    let boot = |initrd: &'static [u8]| BootInputs {
        firmware: &firmware,
        kernel: &kernel,
        initrd: Some(initrd),
        cmdline: "quiet",
    };
    let base_initrd: &'static [u8] = initrd.clone().leak();
    let base = measure(&shape(4), &boot(base_initrd)).unwrap();
    let mut flipped = initrd.clone();
    flipped[1000] ^= 1;
    let m = measure(&shape(4), &boot(flipped.leak())).unwrap();
    assert_eq!((m.rtmr1(), m.td_hob), (base.rtmr1(), base.td_hob));
    assert_ne!(m.rtmr2(), base.rtmr2());
    let longer: &'static [u8] = [&initrd[..], &[0u8; 4096]].concat().leak();
    let m = measure(&shape(4), &boot(longer)).unwrap();
    assert_ne!(m.rtmr1(), base.rtmr1());
    let m = measure(&shape(8), &boot(base_initrd)).unwrap();
    assert_eq!(m.rtmr1(), base.rtmr1());
    assert_ne!(m.td_hob, base.td_hob);
    let m = measure(&shape(1), &boot(base_initrd)).unwrap();
    assert_ne!(m.rtmr1(), base.rtmr1());
    // A truncated kernel is refused, not measured.
    let cut = BootInputs { kernel: &kernel[..kernel.len() / 2], ..boot(base_initrd) };
    assert!(measure(&shape(4), &cut).is_err());
}
