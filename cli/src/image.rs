//! `nacre measure snp|tdx|sim` and `nacre image build|keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use nacre_images::build::{ImageSpec, ModelBinding, ServingOptions, Tee, build, token_sha256};
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
    /// TDX MRTD from the TDVF metadata of a firmware image (hex). With `--kernel`, also RTMR1
    /// and RTMR2 of a direct boot of that kernel (one line each: `mrtd HEX`, `rtmr1 HEX`,
    /// `rtmr2 HEX`); with `--event-log` (a TD's CCEL log area), also the first RTMR1/RTMR2
    /// event the log has that this boot would not have extended, so that a refused TD shows
    /// which input differs (exit 1 on a difference).
    Tdx {
        #[arg(long)]
        firmware: PathBuf,
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long, requires = "kernel", default_value = "")]
        append: String,
        /// Guest memory (`-m`): the initrd's load address, patched into the kernel, depends on it.
        #[arg(long, default_value_t = 2048)]
        memory_mib: u64,
        /// The QEMU version of the launch (picks MRTD's page order).
        #[arg(long, default_value = "10.1.0")]
        qemu: String,
        #[arg(long, requires = "kernel")]
        event_log: Option<PathBuf>,
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
        MeasureCmd::Tdx { firmware, kernel: None, .. } => mrtd(&firmware)?,
        MeasureCmd::Tdx { firmware, initrd, kernel: Some(kernel), append, memory_mib, qemu, event_log } => {
            return measure_tdx_boot(
                &firmware,
                &kernel,
                initrd.as_deref(),
                &append,
                memory_mib,
                &qemu,
                event_log.as_deref(),
            );
        }
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
    /// The TDVF the TDX launch boots (`-bios`): Debian trixie's OVMF.fd, which measures into
    /// RTMR0–2 (bookworm's leaves them zero). Needs at least one `--tdx-launch`.
    #[arg(long, requires = "tdx_launch")]
    tdx_firmware: Option<PathBuf>,
    /// One TDX launch shape and its RTMR0, e.g.
    /// `memory_mib=2048,vcpus=1,qemu=10.1.0,rtmr0=<96 hex digits>` (repeatable). RTMR0 covers
    /// QEMU's ACPI tables, which depend on the exact QEMU build, machine and devices: capture it
    /// once from a reference TD of this shape (its quote or event log). MRTD, RTMR1 and RTMR2
    /// are computed here from the bytes written. Without this, no TDX entry is written.
    #[arg(long, requires = "tdx_firmware", value_parser = parse_tdx_launch)]
    tdx_launch: Vec<TdxLaunchArg>,
    /// An SNP firmware floor signed into the reference values, as JSON: one floor for every
    /// product, `{"bootloader":10,"tee":0,"snp":23,"microcode":84}`, or per product,
    /// `{"genoa":{…},"turin":{"fmc":1,…}}`. Policies applying the values take, per product and
    /// component, the higher of their own floor and this one.
    #[arg(long, value_parser = parse_tcb_floor)]
    snp_min_tcb: Option<nacre_wire::snp::TcbFloor>,
    #[command(flatten)]
    shape: Shape,
    #[command(flatten)]
    serving: ServingArgs,
}

/// How the enclave serves, written into the measured configuration (docs/serving.md). Unset
/// limits are the enclave's defaults; without a token, anyone who reaches the port can infer.
#[derive(Args, Debug)]
#[command(next_help_heading = "Serving (measured into the image)")]
pub struct ServingArgs {
    /// Require this bearer token for inference: the file as `nacre infer --token-file` reads it
    /// (16–1024 printable ASCII characters without spaces, one line end ignored). Only its
    /// SHA-256 enters the image, which is not secret: use a random token. Repeat it for several
    /// clients: each token is one identity, which the guard's budgets and extraction detector
    /// are kept by.
    #[arg(long)]
    inference_token_file: Vec<PathBuf>,
    /// Require a bearer token with this SHA-256 (64 hex digits) for inference, when the token
    /// is not at hand (repeatable, with the files).
    #[arg(long, value_parser = parse_sha256)]
    inference_token_sha256: Vec<[u8; 32]>,
    /// A bearer token that may read the private monitor's released windows (`nacre monitor`):
    /// a role apart from inference, the file read as `--inference-token-file` is (repeatable).
    #[arg(long)]
    monitoring_token_file: Vec<PathBuf>,
    /// Largest request body, bytes.
    #[arg(long)]
    max_request_bytes: Option<u64>,
    /// Per-client sustained requests per second.
    #[arg(long)]
    rate_per_second: Option<u32>,
    /// Per-client burst of requests.
    #[arg(long)]
    rate_burst: Option<u32>,
    /// Open connections at most.
    #[arg(long)]
    max_connections: Option<u64>,
    /// Open connections per source address (IPv6: per /64) at most.
    #[arg(long)]
    connections_per_source: Option<u64>,
    /// Bytes of decoded request tensors held at once across all requests.
    #[arg(long)]
    max_buffered_bytes: Option<u64>,
    /// Deadline of one request once its headers are in, seconds (1–600).
    #[arg(long)]
    request_timeout_secs: Option<u64>,
    /// How long a connection may sit idle, seconds (1–600).
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Accept NaN and ±infinity in inference inputs.
    #[arg(long)]
    allow_non_finite: bool,
    /// Dynamic batching: rows per merged run at most (2–4096), for a model whose inputs and
    /// outputs share a dynamic first dimension.
    #[arg(long, requires = "max_queue_delay_us")]
    max_batch_size: Option<u64>,
    /// Dynamic batching: how long the first request of a batch may wait for others,
    /// microseconds (1–100000).
    #[arg(long, requires = "max_batch_size")]
    max_queue_delay_us: Option<u64>,
}

impl ServingArgs {
    /// The options as the image builder takes them (it checks the values); the token file is
    /// read here and only its hash kept.
    fn options(&self) -> Result<ServingOptions> {
        let mut inference_tokens_sha256 = self.inference_token_sha256.clone();
        for file in &self.inference_token_file {
            inference_tokens_sha256.push(token_sha256(crate::client::read_token_file(file)?.as_bytes()));
        }
        inference_tokens_sha256.sort_unstable();
        inference_tokens_sha256.dedup();
        let mut monitoring_tokens_sha256 = Vec::new();
        for file in &self.monitoring_token_file {
            monitoring_tokens_sha256.push(token_sha256(crate::client::read_token_file(file)?.as_bytes()));
        }
        monitoring_tokens_sha256.sort_unstable();
        monitoring_tokens_sha256.dedup();
        Ok(ServingOptions {
            inference_tokens_sha256,
            monitoring_tokens_sha256,
            max_request_bytes: self.max_request_bytes,
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
            max_connections: self.max_connections,
            connections_per_source: self.connections_per_source,
            max_buffered_bytes: self.max_buffered_bytes,
            request_timeout_secs: self.request_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            allow_non_finite: self.allow_non_finite,
            batching: self.max_batch_size.zip(self.max_queue_delay_us),
        })
    }
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let mut v = [0u8; 32];
    hex::decode_to_slice(s, &mut v).map_err(|_| format!("{s:?}: expected 64 hex digits"))?;
    Ok(v)
}

/// The build summary's serving line: whether inference needs a token, and the limits set.
fn serving_summary(s: &ServingOptions) -> String {
    let mut out = match s.inference_tokens_sha256.as_slice() {
        [h] => format!("inference requires a bearer token (SHA-256 {})", hex::encode(h)),
        [] => "inference requires NO token: anyone who reaches the port can infer".to_owned(),
        many => format!("inference requires one of {} bearer tokens (one client identity each)", many.len()),
    };
    let limits: Vec<String> = [
        ("max_request_bytes", s.max_request_bytes),
        ("rate_per_second", s.rate_per_second.map(u64::from)),
        ("rate_burst", s.rate_burst.map(u64::from)),
        ("max_connections", s.max_connections),
        ("connections_per_source", s.connections_per_source),
        ("max_buffered_bytes", s.max_buffered_bytes),
        ("request_timeout_secs", s.request_timeout_secs),
        ("idle_timeout_secs", s.idle_timeout_secs),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
    .chain(s.allow_non_finite.then(|| "allow_non_finite".to_owned()))
    .chain(s.batching.map(|(n, d)| format!("dynamic batching up to {n} rows, {d} µs")))
    .collect();
    if limits.is_empty() {
        out.push_str("; the enclave's default limits");
    } else {
        out.push_str(&format!("; set: {} (the rest the enclave's defaults)", limits.join(", ")));
    }
    out
}

/// `nacre measure tdx --kernel …`: the registers of a direct boot and, given a TD's event log,
/// the first RTMR1/RTMR2 event it differs in (RTMR0 also covers QEMU's ACPI tables, which no
/// file here determines).
fn measure_tdx_boot(
    firmware: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    memory_mib: u64,
    qemu: &str,
    event_log: Option<&Path>,
) -> Result<ExitCode> {
    use nacre_images::measure::tdx::{BootInputs, LaunchShape, first_difference, measure};
    let (fw, k) = (read(firmware)?, read(kernel)?);
    let i = initrd.map(read).transpose()?;
    let shape = LaunchShape {
        memory_bytes: memory_mib.checked_mul(1 << 20).context("--memory-mib too large")?,
        vcpus: 1,
        qemu: qemu.parse()?,
    };
    let m = measure(&shape, &BootInputs { firmware: &fw, kernel: &k, initrd: i.as_deref(), cmdline })?;
    println!(
        "mrtd {}\nrtmr1 {}\nrtmr2 {}",
        hex::encode(m.mrtd),
        hex::encode(m.rtmr1()),
        hex::encode(m.rtmr2())
    );
    let Some(log) = event_log else { return Ok(ExitCode::SUCCESS) };
    let bytes = read(log)?;
    let log = nacre_wire::ccel::EventLog::parse(&bytes).with_context(|| format!("{}", log.display()))?;
    let logged: Vec<(u8, [u8; 48])> = log
        .events
        .iter()
        .filter_map(|e| e.rtmr().filter(|r| (1..=2).contains(r)).map(|r| (r as u8, *e.sha384())))
        .collect();
    let expected: Vec<_> = m.rtmr1_events.iter().chain(&m.rtmr2_events).cloned().collect();
    match first_difference(&logged, &expected) {
        None => {
            println!("event log: RTMR1 and RTMR2 events are exactly this boot's");
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            println!("event log differs: {d}");
            Ok(ExitCode::from(1))
        }
    }
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
        model_identity: header.model_identity,
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

/// `--tdx-launch`: a launch shape and the RTMR0 a reference TD of that shape reported.
#[derive(Clone, Debug)]
pub struct TdxLaunchArg {
    memory_mib: u64,
    vcpus: u32,
    qemu: String,
    rtmr0: [u8; 48],
}

fn parse_tdx_launch(s: &str) -> Result<TdxLaunchArg, String> {
    let (mut memory_mib, mut vcpus, mut qemu, mut rtmr0) = (None, None, None, None);
    for item in s.split(',') {
        let (key, value) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected KEY=VALUE"))?;
        let dup = |k: &str| format!("{k} given twice");
        match key {
            "memory_mib" if memory_mib.is_none() => {
                memory_mib = Some(value.parse::<u64>().map_err(|e| format!("memory_mib: {e}"))?)
            }
            "vcpus" if vcpus.is_none() => {
                vcpus = Some(value.parse::<u32>().map_err(|e| format!("vcpus: {e}"))?)
            }
            "qemu" if qemu.is_none() => {
                value.parse::<nacre_images::measure::tdx::QemuVersion>().map_err(|e| e.to_string())?;
                qemu = Some(value.to_owned())
            }
            "rtmr0" if rtmr0.is_none() => {
                let mut v = [0u8; 48];
                hex::decode_to_slice(value, &mut v).map_err(|_| "rtmr0: 96 hex digits".to_owned())?;
                rtmr0 = Some(v)
            }
            "memory_mib" | "vcpus" | "qemu" | "rtmr0" => return Err(dup(key)),
            other => return Err(format!("unknown key {other:?} (memory_mib, vcpus, qemu, rtmr0)")),
        }
    }
    let missing = |k: &str| format!("{k} is required (memory_mib, vcpus, qemu, rtmr0)");
    let launch = TdxLaunchArg {
        memory_mib: memory_mib.filter(|m| *m > 0).ok_or_else(|| missing("memory_mib"))?,
        vcpus: vcpus.filter(|v| *v > 0).ok_or_else(|| missing("vcpus"))?,
        qemu: qemu.ok_or_else(|| missing("qemu"))?,
        rtmr0: rtmr0.ok_or_else(|| missing("rtmr0"))?,
    };
    Ok(launch)
}

fn parse_tcb_floor(s: &str) -> Result<nacre_wire::snp::TcbFloor, String> {
    let floor: nacre_wire::snp::TcbFloor =
        serde_json::from_str(s).map_err(|e| format!("TCB floor JSON: {e}"))?;
    if !floor.is_set() {
        return Err("the floor names no product".into());
    }
    Ok(floor)
}

/// The TDX entries of the reference values: per `--tdx-launch`, MRTD and RTMR1/RTMR2 computed
/// from the firmware, kernel, initrd and command line exactly as written, RTMR0 as supplied.
fn tdx_entries(
    firmware: &[u8],
    image: &nacre_images::build::Image,
    launches: &[TdxLaunchArg],
) -> Result<Vec<Expected>> {
    use nacre_images::measure::tdx::{BootInputs, LaunchShape, measure};
    let boot =
        BootInputs { firmware, kernel: &image.kernel, initrd: Some(&image.initrd), cmdline: &image.cmdline };
    let mut out = Vec::with_capacity(launches.len());
    for l in launches {
        let shape = LaunchShape {
            memory_bytes: l.memory_mib.checked_mul(1 << 20).context("memory_mib too large")?,
            vcpus: l.vcpus,
            qemu: l.qemu.parse()?,
        };
        let m = measure(&shape, &boot)?;
        out.push(Expected {
            tee: "tdx".into(),
            measurement: hex::encode(m.mrtd),
            firmware_sha256: nacre_images::build::Image::sha256(firmware),
            vcpus: Some(l.vcpus),
            memory_mib: Some(l.memory_mib),
            qemu_version: Some(l.qemu.clone()),
            rtmr0: Some(hex::encode(l.rtmr0)),
            rtmr1: Some(hex::encode(m.rtmr1())),
            rtmr2: Some(hex::encode(m.rtmr2())),
            ..Default::default()
        });
    }
    Ok(out)
}

/// An appraisal policy that allows exactly the TDX launches of `values` and nothing else (for
/// `nacre evidence verify --policy`, or a client's `[appraisal]`).
fn tdx_policy(values: &ReferenceValues) -> Result<String> {
    let mut policy = nacre_verifier::policy::Policy::default();
    policy.apply_reference_values(values, false)?;
    policy.close_unpinned();
    Ok(format!(
        "# The TDX launches of reference values {:?}, written by `nacre image build`.\n{}",
        values.name,
        policy.to_toml()?
    ))
}

fn build_image(a: BuildArgs) -> Result<ExitCode> {
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
    let serving = a.serving.options()?;
    let enclave = a.enclave.clone();
    let image = build(&ImageSpec {
        kernel,
        modules_dir,
        busybox: a.busybox,
        enclave: a.enclave,
        service_url: a.service_url,
        service_ca: a.service_ca,
        tee: a.tee.into(),
        model: model.clone(),
        serving: serving.clone(),
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
    // Computed before anything is written, so that a bad input leaves no partial output.
    if let Some(firmware) = &a.tdx_firmware {
        measurements.extend(tdx_entries(&read(firmware)?, &image, &a.tdx_launch)?);
    } else if a.tee == TeeArg::Tdx {
        eprintln!(
            "warning: no TDX reference value is written: give --tdx-firmware and, per launch shape, \
             --tdx-launch with the RTMR0 of a reference TD (a TDX allow-list entry is MRTD and RTMR0–2)"
        );
    }
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
    let values = ReferenceValues {
        format: FORMAT.into(),
        name: a.name,
        image: ImageDigests {
            vmlinuz_sha256: sha(&image.kernel),
            initrd_sha256: sha(&image.initrd),
            cmdline: image.cmdline.clone(),
            sbom_sha256: Some(sha(&image.sbom)),
        },
        measurements,
        snp_min_tcb: a.snp_min_tcb,
    };
    let (doc, sig) = values.sign(&read(&a.signing_key)?)?;
    std::fs::write(a.out.join("reference-values.json"), &doc)?;
    std::fs::write(a.out.join("reference-values.sig"), serde_json::to_vec_pretty(&sig)?)?;
    if a.tdx_firmware.is_some() {
        std::fs::write(a.out.join("tdx-policy.toml"), tdx_policy(&values)?)?;
    }
    eprintln!(
        "built {} in {:.2} s: initrd {} bytes, modules {}; serves {} (key {}, digest {}) with the {} attester",
        a.out.display(),
        started.elapsed().as_secs_f64(),
        image.initrd.len(),
        image.modules.join(","),
        model.model_name,
        model.key_id,
        hex::encode(model.model_identity),
        Tee::from(a.tee),
    );
    eprintln!("{}", serving_summary(&serving));
    eprintln!(
        "SBOM {} ({} bytes, SHA-256 {}, signed as image.sbom_sha256)",
        a.out.join(nacre_images::sbom::FILE_NAME).display(),
        image.sbom.len(),
        sha(&image.sbom),
    );
    if nacre_images::deps::embedded(&read(&enclave)?)?.is_none() {
        eprintln!(
            "warning: {} embeds no dependency list (.dep-v0): the SBOM cannot name its crates \
             (scripts/build-enclave.sh builds one that does)",
            enclave.display()
        );
    }
    println!("{}", String::from_utf8_lossy(&doc));
    Ok(ExitCode::SUCCESS)
}
