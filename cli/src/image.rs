//! `nacre measure snp|tdx|sim` and `nacre image build|keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use nacre_images::build::{ImageSpec, ModelBinding, Tee, build};
use nacre_images::measure::sim::{SimLaunch, digest_of};
use nacre_images::measure::snp::{SnpLaunch, VcpuType, launch_digest};
use nacre_protocol::reference::{Expected, FORMAT, ImageDigests, ReferenceValues, generate_signing_key};

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s}: {e}"))
}

/// MRTD in the page-by-page order of QEMU ≥ 9 / upstream KVM (see docs/measurements.md).
fn mrtd(firmware: &Path) -> Result<[u8; 48]> {
    use nacre_images::measure::tdx::{Order, mrtd_file};
    Ok(mrtd_file(firmware, Order::PageByPage)?)
}

#[derive(Args, Debug, Clone)]
pub struct Shape {
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// QEMU EPYC model (part of the measurement; the launch must use the same): EPYC-Milan,
    /// EPYC-v4, EPYC-Genoa, EPYC-Turin, … (QEMU 7.2 knows EPYC-Milan, not EPYC-v4).
    #[arg(long, default_value = "EPYC-Milan")]
    vcpu_type: VcpuType,
}

#[derive(Subcommand, Debug)]
pub enum MeasureCmd {
    /// SEV-SNP launch digest of OVMF + direct kernel boot with kernel hashes (hex).
    Snp {
        /// An AmdSev OVMF build.
        #[arg(long)]
        ovmf: PathBuf,
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long, requires = "kernel")]
        append: Option<String>,
        #[command(flatten)]
        shape: Shape,
        /// VMSA SEV_FEATURES, hex.
        #[arg(long, default_value = "0x1", value_parser = parse_hex_u64)]
        guest_features: u64,
    },
    /// TDX MRTD from the TDVF metadata of a firmware image (hex).
    Tdx {
        #[arg(long)]
        firmware: PathBuf,
    },
    /// The simulated TEE's measurement of exactly these boot inputs (hex).
    Sim {
        #[arg(long)]
        firmware: PathBuf,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
        #[arg(long, default_value = "")]
        append: String,
        #[command(flatten)]
        shape: Shape,
    },
}

pub fn measure(cmd: MeasureCmd) -> Result<ExitCode> {
    let digest = match cmd {
        MeasureCmd::Snp { ovmf, initrd, kernel, append, shape, guest_features } => {
            launch_digest(&SnpLaunch {
                ovmf,
                kernel,
                initrd,
                append,
                vcpus: shape.vcpus,
                vcpu_type: shape.vcpu_type,
                guest_features,
            })?
        }
        MeasureCmd::Tdx { firmware } => mrtd(&firmware)?,
        MeasureCmd::Sim { firmware, kernel, initrd, append, shape } => {
            let (fw, k, i) = (read(&firmware)?, read(&kernel)?, read(&initrd)?);
            digest_of(&SimLaunch {
                firmware: &fw,
                kernel: &k,
                initrd: &i,
                cmdline: &append,
                vcpus: shape.vcpus,
                vcpu_type: shape.vcpu_type,
            })?
        }
    };
    println!("{}", hex::encode(digest));
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build vmlinuz + initrd + cmdline and their signed reference values into --out.
    Build(Box<BuildArgs>),
    /// Create an Ed25519 image-signing key (PKCS#8 DER, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Name the reference values are known by.
    #[arg(long)]
    name: String,
    /// A bzImage; default: Debian's pinned cloud kernel (images/kernel.pin), fetched with
    /// `curl` from $NACRE_DEBIAN_MIRROR (default deb.debian.org) into --cache and verified by
    /// SHA-256 before it is unpacked.
    #[arg(long, requires = "modules")]
    kernel: Option<PathBuf>,
    /// `lib/modules/<version>` of --kernel (`.ko` or `.ko.xz` files; built-in modules are
    /// read from its `modules.builtin`).
    #[arg(long, requires = "kernel")]
    modules: Option<PathBuf>,
    /// Where the default kernel is kept (default: $XDG_CACHE_HOME/nacre or ~/.cache/nacre).
    #[arg(long)]
    cache: Option<PathBuf>,
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// The static nacre-enclave binary.
    #[arg(long)]
    enclave: PathBuf,
    /// The attestation service URL as the guest reaches it.
    #[arg(long)]
    service_url: String,
    #[arg(long)]
    service_ca: PathBuf,
    /// The sealed model the image serves: its header's key id, model name and model digest
    /// go into the measured configuration, and the enclave serves no other model.
    #[arg(long)]
    sealed: PathBuf,
    /// The attester the enclave uses.
    #[arg(long, value_enum, default_value_t = TeeArg::Sim)]
    tee: TeeArg,
    #[arg(long, default_value = "")]
    extra_cmdline: String,
    /// Image-signing key (from `nacre image keygen`).
    #[arg(long)]
    signing_key: PathBuf,
    /// Firmware the sim backend boots (its measurement goes into the reference values).
    #[arg(long, default_value = "/usr/share/seabios/bios-256k.bin")]
    sim_firmware: PathBuf,
    /// Also give the SNP launch digest for this AmdSev OVMF.
    #[arg(long)]
    snp_ovmf: Option<PathBuf>,
    /// Refused for now: a TDX reference value needs RTMR0–2 besides the MRTD, and this builder
    /// computes the MRTD alone (see docs/measurements.md).
    #[arg(long)]
    tdx_firmware: Option<PathBuf>,
    #[command(flatten)]
    shape: Shape,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TeeArg {
    Sim,
    Snp,
    Tdx,
}

impl From<TeeArg> for Tee {
    fn from(t: TeeArg) -> Tee {
        match t {
            TeeArg::Sim => Tee::Sim,
            TeeArg::Snp => Tee::Snp,
            TeeArg::Tdx => Tee::Tdx,
        }
    }
}

/// The binding from a sealed model's header (only the header is read; no key is needed).
fn model_binding(sealed: &Path) -> Result<ModelBinding> {
    let file = std::fs::File::open(sealed).with_context(|| format!("opening {}", sealed.display()))?;
    let (header, _) = nacre_sealed::Header::read(&mut std::io::BufReader::new(file))
        .with_context(|| format!("{}: sealed header", sealed.display()))?;
    Ok(ModelBinding {
        key_id: header.key_id,
        model_name: header.model_name,
        model_digest: header.model_digest,
    })
}

pub fn image(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let (pkcs8, pk) = generate_signing_key()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {} (never overwritten)", out.display()))?;
            f.write_all(&pkcs8)?;
            f.sync_all()?;
            println!("{}", hex::encode(pk));
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Build(a) => build_image(*a),
    }
}

/// Why no TDX reference value is written: the MRTD covers the firmware only. The kernel, command
/// line and initrd (`nacre-enclave`, its measured configuration, the service URL and CA, the
/// model binding) are measured into RTMR1/RTMR2, which this builder does not compute yet; a
/// value pinning the MRTD alone would let a host boot the published firmware with its own initrd.
const NO_TDX_REFERENCE: &str = "no TDX reference value is written: the builder computes the MRTD \
     (firmware only) and not RTMR0–2 (firmware configuration, kernel, command line, initrd), and \
     services and clients refuse a TDX allow-list without them";

fn build_image(a: BuildArgs) -> Result<ExitCode> {
    if a.tdx_firmware.is_some() {
        anyhow::bail!("--tdx-firmware: {NO_TDX_REFERENCE}");
    }
    let started = std::time::Instant::now();
    let (kernel, modules_dir) = match (a.kernel, a.modules) {
        (Some(k), Some(m)) => (k, m),
        _ => {
            let cache = match a.cache {
                Some(c) => c,
                None => std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .context("no --cache, $XDG_CACHE_HOME or $HOME")?
                    .join("nacre"),
            };
            let k = nacre_images::kernel::fetch_pinned(&cache)?;
            (k.vmlinuz, k.modules)
        }
    };
    let model = model_binding(&a.sealed)?;
    let image = build(&ImageSpec {
        kernel,
        modules_dir,
        busybox: a.busybox,
        enclave: a.enclave,
        service_url: a.service_url,
        service_ca: a.service_ca,
        tee: a.tee.into(),
        model: model.clone(),
        extra_cmdline: a.extra_cmdline,
    })?;
    let sha = nacre_images::build::Image::sha256;
    // Measurements are computed from the in-memory bytes that are then written out.
    let firmware = read(&a.sim_firmware)?;
    let sim = digest_of(&SimLaunch {
        firmware: &firmware,
        kernel: &image.kernel,
        initrd: &image.initrd,
        cmdline: &image.cmdline,
        vcpus: a.shape.vcpus,
        vcpu_type: a.shape.vcpu_type,
    })?;
    let mut measurements = vec![Expected {
        tee: "sim".into(),
        measurement: hex::encode(sim),
        firmware_sha256: sha(&firmware),
        vcpus: Some(a.shape.vcpus),
        vcpu_type: Some(a.shape.vcpu_type.to_string()),
        ..Default::default()
    }];
    image.write(&a.out)?;
    if let Some(ovmf) = &a.snp_ovmf {
        let digest = launch_digest(&SnpLaunch {
            ovmf: ovmf.clone(),
            kernel: Some(a.out.join("vmlinuz")),
            initrd: Some(a.out.join("initrd")),
            append: Some(image.cmdline.clone()),
            vcpus: a.shape.vcpus,
            vcpu_type: a.shape.vcpu_type,
            guest_features: 1,
        })?;
        measurements.push(Expected {
            tee: "snp".into(),
            measurement: hex::encode(digest),
            firmware_sha256: sha(&read(ovmf)?),
            vcpus: Some(a.shape.vcpus),
            vcpu_type: Some(a.shape.vcpu_type.to_string()),
            ..Default::default()
        });
    }
    if a.tee == TeeArg::Tdx {
        eprintln!("warning: {NO_TDX_REFERENCE}");
    }
    let values = ReferenceValues {
        format: FORMAT.into(),
        name: a.name,
        image: ImageDigests {
            vmlinuz_sha256: sha(&image.kernel),
            initrd_sha256: sha(&image.initrd),
            cmdline: image.cmdline.clone(),
        },
        measurements,
        snp_min_tcb: None,
    };
    let (doc, sig) = values.sign(&read(&a.signing_key)?)?;
    std::fs::write(a.out.join("reference-values.json"), &doc)?;
    std::fs::write(a.out.join("reference-values.sig"), serde_json::to_vec_pretty(&sig)?)?;
    eprintln!(
        "built {} in {:.2} s: initrd {} bytes, modules {}; serves {} (key {}, digest {}) with the {} attester",
        a.out.display(),
        started.elapsed().as_secs_f64(),
        image.initrd.len(),
        image.modules.join(","),
        model.model_name,
        model.key_id,
        hex::encode(model.model_digest),
        Tee::from(a.tee),
    );
    println!("{}", String::from_utf8_lossy(&doc));
    Ok(ExitCode::SUCCESS)
}
