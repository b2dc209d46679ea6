#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Our SNP launch digests against `sev-snp-measure` 0.0.13 (PyPI) on the same inputs: the
//! AmdSev OVMF tail the `sev` crate ships, Debian's pinned cloud kernel, several shapes.

mod common;

use std::path::{Path, PathBuf};

use common::{input, scratch};
use nacre_images::measure::snp::{SnpLaunch, launch_digest};

fn amdsev_tail() -> PathBuf {
    let meta = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    let sev = v["packages"].as_array().unwrap().iter().find(|p| p["name"] == "sev").unwrap();
    PathBuf::from(sev["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("tests/measurement/ovmf_AmdSev_suffix.bin")
}

fn reference(l: &SnpLaunch) -> String {
    let mut cmd = std::process::Command::new(input("NACRE_SEV_SNP_MEASURE"));
    cmd.args(["--mode", "snp", "--output-format", "hex"])
        .arg(format!("--vcpus={}", l.vcpus))
        .arg(format!("--vcpu-type={}", l.vcpu_type))
        .arg(format!("--guest-features=0x{:x}", l.guest_features))
        .arg("--ovmf")
        .arg(&l.ovmf);
    if let Some(k) = &l.kernel {
        cmd.arg("--kernel").arg(k);
    }
    if let Some(i) = &l.initrd {
        cmd.arg("--initrd").arg(i);
    }
    if let Some(a) = &l.append {
        cmd.arg(format!("--append={a}"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "sev-snp-measure: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn launch(ovmf: &Path, initrd: &Path, append: &str, vcpus: u32, ty: &str, features: u64) -> SnpLaunch {
    SnpLaunch {
        ovmf: ovmf.to_owned(),
        kernel: Some(input("NACRE_KERNEL")),
        initrd: Some(initrd.to_owned()),
        append: Some(append.to_owned()),
        vcpus,
        vcpu_type: ty.parse().unwrap(),
        guest_features: features,
    }
}

/// The reference shape: 1 MiB of zeros as initrd, `console=ttyS0`, 1 vCPU EPYC-v4,
/// guest features 0x1, the `sev` 8.0.0 crate's `ovmf_AmdSev_suffix.bin` (SHA-256 `8f765dfa…b16c`)
/// and the pinned kernel (images/kernel.pin). The value depends on the kernel's bytes, so it
/// changes with the pin. Provenance: `sev-snp-measure` 0.0.13 (PyPI) `--mode snp --vcpus=1
/// --vcpu-type=EPYC-v4 --guest-features=0x1 --ovmf <tail> --kernel <vmlinuz> --initrd <1 MiB of
/// zeros> --append=console=ttyS0`, run on 2026-12-04: with vmlinuz `ed8f0dbd…5b87b0` (6.12.117-1,
/// the current pin) it gives the value below; with the previous pin's vmlinuz `3d616aa8…9654`
/// (bookworm 6.1.176-1) it gives the previous golden value `3a2c4e19…afba`, so the tool and the
/// shape are unchanged and only the kernel moved.
#[test]
fn reference_digest() {
    let dir = scratch("snp-ref");
    std::fs::write(dir.join("initrd"), vec![0u8; 1 << 20]).unwrap();
    let l = launch(&amdsev_tail(), &dir.join("initrd"), "console=ttyS0", 1, "EPYC-v4", 1);
    assert_eq!(
        hex::encode(launch_digest(&l).unwrap()),
        "cb2b271f958c90defc01ed1cfdc16923d95eff70ef7d3a0c7642e5d74debc186a79173a0e28aa92377f38bdb6da596cd"
    );
}

#[test]
fn equals_sev_snp_measure_on_several_shapes() {
    let dir = scratch("snp-shapes");
    std::fs::write(dir.join("zeros"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(dir.join("small"), b"a small initrd that is not page aligned").unwrap();
    let ovmf = amdsev_tail();
    let shapes = [
        ("zeros", "console=ttyS0", 1, "EPYC-v4", 0x1),
        ("zeros", "console=ttyS0", 4, "EPYC-Milan", 0x1),
        ("small", "console=ttyS0 nacre.service=https://127.0.0.1:8443 quiet", 2, "EPYC-Genoa", 0x1),
        ("small", "", 8, "EPYC-Rome", 0x21),
        ("zeros", "console=ttyS0", 3, "EPYC-Turin", 0x1),
    ];
    for (initrd, append, vcpus, ty, features) in shapes {
        let l = launch(&ovmf, &dir.join(initrd), append, vcpus, ty, features);
        assert_eq!(
            hex::encode(launch_digest(&l).unwrap()),
            reference(&l),
            "{initrd} {append:?} {vcpus}×{ty} {features:#x}"
        );
    }
    // Firmware only (no kernel hashes).
    let fw = SnpLaunch {
        kernel: None,
        initrd: None,
        append: None,
        ..launch(&ovmf, &dir.join("zeros"), "", 1, "EPYC-v4", 1)
    };
    assert_eq!(hex::encode(launch_digest(&fw).unwrap()), reference(&fw));
}

#[test]
fn bad_inputs_are_named() {
    let l = SnpLaunch {
        ovmf: "/nonexistent/ovmf.fd".into(),
        ..launch(&amdsev_tail(), Path::new("/dev/null"), "", 1, "EPYC-v4", 1)
    };
    let e = launch_digest(&l).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ovmf.fd"), "{e}");
    let l = SnpLaunch { vcpus: 0, ..launch(&amdsev_tail(), Path::new("/dev/null"), "", 1, "EPYC-v4", 1) };
    assert!(launch_digest(&l).is_err());
}
