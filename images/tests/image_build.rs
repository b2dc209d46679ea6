#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Image builds are reproducible and the initrd is what `cpio` and the kernel expect.

mod common;

use std::path::{Path, PathBuf};

use common::{input, scratch};
use nacre_images::build::{ImageSpec, ModelBinding, Tee, build};

fn spec(dir: &Path) -> ImageSpec {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    ImageSpec {
        kernel: input("NACRE_KERNEL"),
        modules_dir: input("NACRE_KERNEL_MODULES"),
        busybox: PathBuf::from("/bin/busybox"),
        // Until the enclave binary exists, any static binary will do.
        enclave: PathBuf::from("/bin/busybox"),
        service_url: "https://10.0.2.2:8443".into(),
        service_ca: ca,
        tee: Tee::Sim,
        model: ModelBinding {
            key_id: "fraud-mlp".into(),
            model_name: "fraud-mlp".into(),
            model_identity: [0xab; 32],
        },
        serving: Default::default(),
        extra_cmdline: "nacre.test=1".into(),
    }
}

/// `etc/nacre/enclave.toml` of a built image (the initrd read back with GNU cpio).
fn enclave_toml(spec: &ImageSpec, dir: &Path) -> toml::Table {
    let image = build(spec).unwrap();
    let out = dir.join("x");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut child = std::process::Command::new("cpio")
        .args(["-i", "--quiet", "--no-absolute-filenames", "--make-directories", "etc/nacre/enclave.toml"])
        .current_dir(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &image.initrd).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(out.join("etc/nacre/enclave.toml")).unwrap().parse().unwrap()
}

#[test]
fn same_inputs_same_bytes_in_different_directories() {
    let (a, b) = (scratch("image-a"), scratch("image-b"));
    // Copies of the inputs under different paths and mtimes must not matter.
    let mut s2 = spec(&b);
    let kernel = b.join("kernel-copy");
    std::fs::copy(input("NACRE_KERNEL"), &kernel).unwrap();
    s2.kernel = kernel;
    let one = build(&spec(&a)).unwrap();
    let two = build(&s2).unwrap();
    one.write(&a.join("out")).unwrap();
    two.write(&b.join("out")).unwrap();
    for f in ["vmlinuz", "initrd", "cmdline"] {
        let (x, y) =
            (std::fs::read(a.join("out").join(f)).unwrap(), std::fs::read(b.join("out").join(f)).unwrap());
        assert_eq!(
            nacre_images::build::Image::sha256(&x),
            nacre_images::build::Image::sha256(&y),
            "{f} differs"
        );
    }
    assert_eq!(one.cmdline, "console=ttyS0 panic=-1 quiet nacre.test=1");
    // Dependencies come before their users: configfs-tsm (`tsm`, on `configfs`) before both
    // TEE drivers, the failover pair before virtio_net.
    let pos = |m: &str| {
        one.modules.iter().position(|x| x == m).unwrap_or_else(|| panic!("{m} missing: {:?}", one.modules))
    };
    assert!(pos("configfs") < pos("tsm"));
    assert!(pos("tsm") < pos("sev_guest") && pos("tsm") < pos("tdx_guest"));
    assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
    assert!(pos("virtio_blk") < one.modules.len());
    // The pinned 6.12 kernel has the virtio core, PCI transport and console built in: asked
    // for, satisfied without a file.
    for builtin in ["virtio", "virtio_ring", "virtio_pci", "virtio_console"] {
        assert!(!one.modules.iter().any(|m| m == builtin), "{builtin} is built in: {:?}", one.modules);
    }
}

/// Issue 16: the SBOM describes the bytes that are measured (the pinned kernel by its Debian
/// package, the initrd and each file in it, busybox by its banner, the model by its identity),
/// is valid CycloneDX 1.6, and is the same for the same inputs.
#[test]
fn the_sbom_describes_the_measured_bytes() {
    let dir = scratch("image-sbom");
    // An enclave that embeds a dependency list: busybox with a `.dep-v0` section added.
    let list = br#"{"packages":[{"name":"nacre-enclave","version":"0.1.0","source":"local","dependencies":[1],"root":true},
        {"name":"hyper","version":"1.8.1","source":"crates.io"}],"format":1}"#;
    let section = dir.join("dep-v0");
    std::fs::write(&section, miniz_oxide::deflate::compress_to_vec_zlib(list, 7)).unwrap();
    let enclave = dir.join("enclave");
    let status = std::process::Command::new("objcopy")
        .arg(format!("--add-section=.dep-v0={}", section.display()))
        .args(["/bin/busybox".as_ref(), enclave.as_os_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut s = spec(&dir);
    s.enclave = enclave.clone();
    let image = build(&s).unwrap();
    common::cyclonedx::validate_cyclonedx(&image.sbom);
    assert_eq!(build(&s).unwrap().sbom, image.sbom, "deterministic");

    let sha = |b: &[u8]| nacre_images::build::Image::sha256(b);
    let bom: serde_json::Value = serde_json::from_slice(&image.sbom).unwrap();
    let [kernel, initrd, model] = bom["components"].as_array().unwrap().as_slice() else { panic!("{bom}") };
    let pin = nacre_images::kernel::pin();
    assert_eq!(kernel["name"], pin.package.as_str());
    assert_eq!(kernel["purl"], format!("pkg:deb/debian/{}@{}?arch=amd64", pin.package, pin.version));
    assert_eq!(kernel["hashes"][0]["content"], sha(&image.kernel));
    assert_eq!(initrd["hashes"][0]["content"], sha(&image.initrd));
    let files = initrd["components"].as_array().unwrap();
    let file = |name: &str| files.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}"));
    let enclave_c = file("nacre-enclave");
    assert_eq!(enclave_c["hashes"][0]["content"], sha(&std::fs::read(&enclave).unwrap()));
    assert_eq!(enclave_c["components"][0]["purl"], "pkg:cargo/hyper@1.8.1");
    let busybox = file("busybox");
    assert!(busybox["version"].as_str().unwrap().starts_with("1."), "{busybox}");
    assert!(busybox["purl"].as_str().unwrap().starts_with("pkg:deb/debian/busybox-static@"), "{busybox}");
    for m in &image.modules {
        // Built-in modules have no file.
        if let Some(c) = files.iter().find(|c| c["name"] == format!("lib/modules/{m}.ko")) {
            assert_eq!(c["type"], "file");
        }
    }
    assert!(
        files
            .iter()
            .any(|c| c["name"] == "lib/modules/sev-guest.ko" || c["name"] == "lib/modules/sev_guest.ko")
    );
    assert_eq!(file("etc/nacre/enclave.toml")["type"], "file");
    assert_eq!(model["type"], "machine-learning-model");
    assert_eq!(model["properties"][0]["value"], "ab".repeat(32), "the model identity");
    assert_eq!(bom["metadata"]["properties"][0]["value"], image.cmdline.as_str());

    // What build() wrote is what Image::write writes.
    let out = dir.join("out");
    image.write(&out).unwrap();
    assert_eq!(std::fs::read(out.join(nacre_images::sbom::FILE_NAME)).unwrap(), image.sbom);
}

#[test]
fn gnu_cpio_reads_the_initrd_back() {
    let dir = scratch("image-cpio");
    let image = build(&spec(&dir)).unwrap();
    let out = dir.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = std::process::Command::new("cpio")
        .args(["-i", "--quiet", "--no-absolute-filenames", "--make-directories"])
        .current_dir(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &image.initrd).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::read(out.join("bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());
    assert_eq!(std::fs::read_link(out.join("bin/sh")).unwrap().to_str(), Some("busybox"));
    assert_eq!(std::fs::metadata(out.join("init")).unwrap().permissions().mode() & 0o777, 0o755);
    let config = std::fs::read_to_string(out.join("etc/nacre/enclave.toml")).unwrap();
    assert!(config.contains("service_url = \"https://10.0.2.2:8443\""), "{config}");
    assert!(config.contains(&format!("model_identity = \"{}\"", "ab".repeat(32))), "{config}");
    let order = std::fs::read_to_string(out.join("etc/nacre/modules")).unwrap();
    for line in order.lines() {
        // Present and decompressed (the kernel package ships .ko.xz; busybox insmod wants ELF).
        let module =
            std::fs::read(out.join("lib/modules").join(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(module.starts_with(b"\x7fELF"), "{line} is not an ELF object");
    }
    // configfs is a module in this kernel: /init mounts it after loading the modules, or
    // configfs-tsm would never appear under /sys/kernel/config.
    let init = std::fs::read_to_string(out.join("init")).unwrap();
    let (insmod, configfs) = (init.find("insmod").unwrap(), init.find("mount -t configfs").unwrap());
    assert!(insmod < configfs, "{init}");
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let dir = scratch("image-bad");
    type Edit = Box<dyn Fn(&mut ImageSpec)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|s| s.enclave = "/usr/bin/cpio".into()), "dynamically linked"),
        (Box::new(|s| s.kernel = "/bin/busybox".into()), "bzImage"),
        (Box::new(|s| s.service_url = "http://10.0.2.2:8443".into()), "https://"),
        (Box::new(|s| s.service_url = "https://x\"\ninjected = 1".into()), "https://"),
        (Box::new(|s| s.extra_cmdline = "a\nb".into()), "cmdline"),
        (Box::new(|s| s.service_ca = "/bin/busybox".into()), "PEM"),
        (Box::new(|s| s.model.key_id = "a b".into()), "key id"),
        (Box::new(|s| s.model.key_id = String::new()), "key id"),
        (Box::new(|s| s.model.model_name = String::new()), "model name"),
        (Box::new(|s| s.model.model_name = "x\ny".into()), "model name"),
        (Box::new(|s| s.model.model_name = "m".repeat(257)), "model name"),
    ];
    for (edit, reason) in cases {
        let mut s = spec(&dir);
        edit(&mut s);
        let e = build(&s).unwrap_err().to_string();
        assert!(e.contains(reason), "{e} should mention {reason}");
    }
}

/// The enclave's configuration holds exactly the fields `nacre-enclave` requires (it refuses
/// unknown ones), and no model name, however written, can add a key of its own.
#[test]
fn enclave_config_names_the_tee_and_the_sealed_model() {
    let dir = scratch("image-config");
    let mut s = spec(&dir);
    s.tee = Tee::Snp;
    s.model.model_name = "fraud \"scorer\" \\ v2 – ünïcode\"\ninjected = 1".replace('\n', " ");
    let t = enclave_toml(&s, &dir);
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(keys, ["key_id", "model_identity", "model_name", "service_ca", "service_url", "tee"]);
    assert_eq!(t["tee"].as_str(), Some("snp"));
    assert_eq!(t["key_id"].as_str(), Some("fraud-mlp"));
    assert_eq!(t["model_name"].as_str(), Some(s.model.model_name.as_str()));
    assert_eq!(t["model_identity"].as_str(), Some("ab".repeat(32).as_str()));
    assert_eq!(t["service_ca"].as_str(), Some("/etc/nacre/service-ca.pem"));
    // A different model or TEE is a different initrd, hence a different measurement.
    let base = build(&spec(&dir)).unwrap().initrd;
    let mut other = spec(&dir);
    other.model.model_identity[31] ^= 1;
    assert_ne!(build(&other).unwrap().initrd, base);
    let mut other = spec(&dir);
    other.tee = Tee::Tdx;
    assert_ne!(build(&other).unwrap().initrd, base);
}
