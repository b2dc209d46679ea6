//! `nacre image build`: kernel + a reproducible initrd (busybox, the needed kernel modules,
//! the static `nacre-enclave`, the attestation service's URL and CA, the TEE and the sealed
//! model the image serves) + command line. Every output is a function of the inputs' bytes
//! alone: entries are sorted, timestamps, owners and devices are zero, the archive is not
//! compressed (no codec whose output could change between versions), and nothing from the
//! build machine (time, paths, user) goes in.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};

use crate::cpio::{self, Entry};
use crate::modules::{self, ModuleError};

pub use nacre_wire::Tee;

/// Modules every guest image carries, with their dependencies; ones the kernel has built in
/// (Debian's 6.12 cloud kernel: `virtio_pci`, `virtio_console`) need no file. One list for every
/// TEE, so that sim, SNP and TDX images differ only in their configuration:
/// - virtio: the sealed model's disk, user networking, and the sim secure processor's port;
/// - `tsm`: configfs-tsm (`/sys/kernel/config/tsm/report`, the attester both hardware TEEs
///   use first), with `configfs` as its dependency;
/// - `sev_guest`, `tdx_guest`: the providers behind configfs-tsm (and the guest devices).
///
/// On a guest that is not that TEE a provider fails to probe (`insmod` reports "No such
/// device"); `/init` logs that and goes on, and the enclave opens only its own TEE's attester.
/// A name that the kernel has neither as a file nor built in fails the build.
pub const DEFAULT_MODULES: &[&str] =
    &["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "tsm", "sev_guest", "tdx_guest"];
/// The command line every image starts with; `extra_cmdline` is appended.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
const MAX_CMDLINE: usize = 2048;

/// Busybox applets the init script uses (symlinks in /bin).
const APPLETS: &[&str] =
    &["sh", "mount", "mkdir", "insmod", "ip", "cat", "echo", "sleep", "poweroff", "reboot", "ls", "dmesg"];

#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub kernel: PathBuf,
    /// `lib/modules/<version>` of the same kernel.
    pub modules_dir: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// The statically linked `nacre-enclave` (or, in tests, any static binary).
    pub enclave: PathBuf,
    /// `https://HOST:PORT` of the attestation service, as the guest reaches it.
    pub service_url: String,
    /// The service's CA certificate (PEM), pinned by the guest.
    pub service_ca: PathBuf,
    /// Which attester the enclave uses.
    pub tee: Tee,
    /// The one sealed model this image serves.
    pub model: ModelBinding,
    /// The inference token's hash and the request limits (default: none, the enclave's limits).
    pub serving: ServingOptions,
    pub extra_cmdline: String,
}

/// How the enclave serves: the bearer token inference requires and the request limits, written
/// into the measured configuration (so the image's reference values pin them). Each `None`
/// leaves the enclave's default (docs/serving.md); the default sets nothing, and such an image
/// serves inference to anyone who reaches its port.
///
/// A set value is checked here with the enclave's own bounds (`EnclaveConfig::check` in
/// `enclave/runtime/src/config.rs`), against the enclave's default where its counterpart is
/// unset, so that a bad image fails to build instead of failing at every boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingOptions {
    /// SHA-256 of each client's bearer token ([`token_sha256`]); empty: inference is open.
    /// Each token is one client identity (the guard keeps budgets per token). The tokens
    /// never enter the image. The initrd is not secret (the host reads it), so these hashes
    /// must be of tokens too long to guess offline.
    pub inference_tokens_sha256: Vec<[u8; 32]>,
    /// SHA-256 of each monitoring token: the role that reads the private monitor's windows.
    pub monitoring_tokens_sha256: Vec<[u8; 32]>,
    /// Largest request body, bytes.
    pub max_request_bytes: Option<u64>,
    /// Per-client sustained requests per second, and burst (both ≥ 1).
    pub rate_per_second: Option<u32>,
    pub rate_burst: Option<u32>,
    /// Open connections at most, and per source address (1 ≤ per source ≤ total).
    pub max_connections: Option<u64>,
    pub connections_per_source: Option<u64>,
    /// Decoded request tensors held at once, bytes (≥ max_request_bytes or 1 MiB, the smaller).
    pub max_buffered_bytes: Option<u64>,
    /// A request's deadline once its headers are in, and a connection's idle limit, seconds
    /// (1–600 each).
    pub request_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    /// Accept NaN and ±infinity in inputs (the enclave refuses them unless this is set).
    pub allow_non_finite: bool,
    /// Dynamic batching: rows per merged run (2–4096) and the first request's longest wait,
    /// microseconds (1–100,000). Written as the `[batching]` table, last in the file.
    pub batching: Option<(u64, u64)>,
}

/// The enclave's defaults (`enclave/runtime/src/config.rs`) of the limits that are checked
/// against each other: a set value is judged against its unset counterpart as the enclave will
/// judge it at boot. `cli/tests/image_serving.rs` boots the enclave's parser on the edge values.
const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 20;
const DEFAULT_MAX_CONNECTIONS: u64 = 256;
const DEFAULT_CONNECTIONS_PER_SOURCE: u64 = 64;
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// The enclave's bounds of both timeouts, seconds.
const TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=600;

/// The value a bearer token is compared by: the enclave hashes the token a request presents
/// (`Authorization: Bearer TOKEN`) and compares it with `inference_token_sha256`.
pub fn token_sha256(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

/// The sealed model an image is built for (from its header: `nacre image build --sealed`).
/// Measured as part of the initrd, so the enclave serves this model and no other: the key it
/// asks the attestation service for, and the name and plaintext digest the unsealed model must
/// have. A release policy that pins the image's measurement thereby pins the model too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelBinding {
    /// The attestation service's key id (`[A-Za-z0-9._-]`, 1–128).
    pub key_id: String,
    /// The model name in the sealed header (1–256 bytes, no control characters).
    pub model_name: String,
    /// SHA-256 of the plaintext model (the sealed header's model digest).
    pub model_identity: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("{what}: {message}")]
    Input { what: &'static str, message: String },
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
}

fn io(path: &Path, e: impl std::fmt::Display) -> BuildError {
    BuildError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// The three boot inputs, in memory: what is written out is exactly what was measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub cmdline: String,
    /// Module names in load order, for the record.
    pub modules: Vec<String>,
    /// The CycloneDX SBOM of the three ([`crate::sbom`]), written as `sbom.cdx.json`.
    pub sbom: Vec<u8>,
}

impl Image {
    pub fn sha256(data: &[u8]) -> String {
        hex::encode(digest(&SHA256, data))
    }

    /// Writes `vmlinuz`, `initrd`, `cmdline` and the SBOM (`sbom.cdx.json`) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), BuildError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (name, data) in [
            ("vmlinuz", self.kernel.as_slice()),
            ("initrd", &self.initrd),
            ("cmdline", self.cmdline.as_bytes()),
            (crate::sbom::FILE_NAME, &self.sbom),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, data).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
}

pub fn build(spec: &ImageSpec) -> Result<Image, BuildError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| io(p, e));
    let kernel = read(&spec.kernel)?;
    if kernel.get(0x202..0x206) != Some(b"HdrS") {
        return Err(BuildError::Input { what: "kernel", message: "not an x86 bzImage (no HdrS)".into() });
    }
    let busybox = read(&spec.busybox)?;
    check_static("busybox", &busybox)?;
    let enclave = read(&spec.enclave)?;
    check_static("enclave", &enclave)?;
    let ca = read(&spec.service_ca)?;
    if !ca.starts_with(b"-----BEGIN CERTIFICATE-----") {
        return Err(BuildError::Input { what: "service CA", message: "not a PEM certificate".into() });
    }
    check_url(&spec.service_url)?;
    let config = enclave_config(spec)?;
    let cmdline = cmdline(&spec.extra_cmdline)?;

    let wanted: Vec<String> = DEFAULT_MODULES.iter().map(|m| m.to_string()).collect();
    let mods = modules::resolve(&spec.modules_dir, &wanted)?;

    let mut entries = vec![
        Entry::Dir { path: "bin".into(), mode: 0o755 },
        Entry::File { path: "bin/busybox".into(), mode: 0o755, data: busybox },
        Entry::File { path: "bin/nacre-enclave".into(), mode: 0o755, data: enclave },
    ];
    entries.extend(
        APPLETS.iter().map(|a| Entry::Symlink { path: format!("bin/{a}"), target: "busybox".into() }),
    );
    for d in ["dev", "etc", "etc/nacre", "lib", "lib/modules", "proc", "run", "sys", "tmp"] {
        entries.push(Entry::Dir { path: d.into(), mode: if d == "tmp" { 0o1777 } else { 0o755 } });
    }
    entries.push(Entry::File { path: "etc/nacre/service-ca.pem".into(), mode: 0o644, data: ca });
    entries.push(Entry::File {
        path: "etc/nacre/enclave.toml".into(),
        mode: 0o644,
        data: config.into_bytes(),
    });
    let order: String = mods.iter().map(|m| format!("{}.ko\n", m.name)).collect();
    entries.push(Entry::File { path: "etc/nacre/modules".into(), mode: 0o644, data: order.into_bytes() });
    entries.push(Entry::File { path: "init".into(), mode: 0o755, data: INIT.as_bytes().to_vec() });
    for m in &mods {
        entries.push(Entry::File {
            path: format!("lib/modules/{}.ko", m.name),
            mode: 0o644,
            data: m.data.clone(),
        });
    }
    // Parents before children, everything else by path: the order is a function of the names.
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let initrd = cpio::write(&entries);
    let sbom = crate::sbom::sbom(&crate::sbom::Parts {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: &cmdline,
        entries: &entries,
        tee: spec.tee.as_str(),
        model_name: &spec.model.model_name,
        key_id: &spec.model.key_id,
        model_identity: &spec.model.model_identity,
    })?;
    Ok(Image { kernel, initrd, cmdline, modules: mods.into_iter().map(|m| m.name).collect(), sbom })
}

/// `/etc/nacre/enclave.toml`, the enclave's measured configuration (its fields are those of
/// `nacre-enclave`'s `EnclaveConfig`, which refuses unknown ones).
fn enclave_config(spec: &ImageSpec) -> Result<String, BuildError> {
    let m = &spec.model;
    nacre_protocol::messages::check_key_id(&m.key_id)
        .map_err(|e| BuildError::Input { what: "key id", message: e.reason })?;
    if m.model_name.is_empty() || m.model_name.len() > 256 || m.model_name.chars().any(char::is_control) {
        return Err(BuildError::Input {
            what: "model name",
            message: format!("{:?}: 1–256 bytes without control characters", m.model_name),
        });
    }
    let serving = serving_config(&spec.serving)?;
    Ok(format!(
        "# Measured: part of the initrd.\n\
         service_url = {}\n\
         service_ca = \"/etc/nacre/service-ca.pem\"\n\
         tee = \"{}\"\n\
         key_id = {}\n\
         model_name = {}\n\
         model_identity = \"{}\"\n\
         {serving}",
        toml_string(&spec.service_url),
        spec.tee.as_str(),
        toml_string(&m.key_id),
        toml_string(&m.model_name),
        hex::encode(m.model_identity),
    ))
}

/// The serving keys of `enclave.toml`: one line per option that is set, in `EnclaveConfig`'s
/// order, once the options pass the enclave's checks.
fn serving_config(s: &ServingOptions) -> Result<String, BuildError> {
    let bad = |what: &'static str, message: String| Err(BuildError::Input { what, message });
    if s.rate_per_second == Some(0) || s.rate_burst == Some(0) {
        return bad("rate_per_second, rate_burst", "must be positive".into());
    }
    // A value as the enclave will see it: set, or its default.
    let value = |v: Option<u64>, default: u64| match v {
        Some(v) => (v, v.to_string()),
        None => (default, format!("{default}, the enclave's default")),
    };
    let (max_connections, max_text) = value(s.max_connections, DEFAULT_MAX_CONNECTIONS);
    let (per_source, per_text) = value(s.connections_per_source, DEFAULT_CONNECTIONS_PER_SOURCE);
    if max_connections == 0 || per_source == 0 {
        return bad("max_connections, connections_per_source", "must be positive".into());
    }
    if per_source > max_connections {
        return bad(
            "connections_per_source",
            format!("{per_text} is more than max_connections ({max_text})"),
        );
    }
    let (max_request, request_text) = value(s.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    let (max_buffered, buffered_text) = value(s.max_buffered_bytes, DEFAULT_MAX_BUFFERED_BYTES);
    let floor = max_request.min(1 << 20);
    if max_buffered < floor {
        return bad(
            "max_buffered_bytes",
            format!(
                "{buffered_text} is less than {floor}, the smaller of max_request_bytes \
                 ({request_text}) and 1 MiB"
            ),
        );
    }
    for (what, value) in
        [("request_timeout_secs", s.request_timeout_secs), ("idle_timeout_secs", s.idle_timeout_secs)]
    {
        if let Some(v) = value.filter(|v| !TIMEOUT_SECS.contains(v)) {
            return bad(what, format!("{v}: 1–600 seconds"));
        }
    }
    let mut out = String::new();
    // One token keeps the single-token key (images built before several clients read the same).
    match s.inference_tokens_sha256.as_slice() {
        [] => {}
        [h] => out += &format!("inference_token_sha256 = \"{}\"\n", hex::encode(h)),
        many => {
            let quoted: Vec<String> = many.iter().map(|h| format!("\"{}\"", hex::encode(h))).collect();
            out += &format!("inference_tokens_sha256 = [{}]\n", quoted.join(", "));
        }
    }
    if s.monitoring_tokens_sha256.iter().any(|m| s.inference_tokens_sha256.contains(m)) {
        return bad("monitoring_tokens_sha256", "a monitoring token is also an inference token".into());
    }
    if !s.monitoring_tokens_sha256.is_empty() {
        let quoted: Vec<String> =
            s.monitoring_tokens_sha256.iter().map(|h| format!("\"{}\"", hex::encode(h))).collect();
        out += &format!("monitoring_tokens_sha256 = [{}]\n", quoted.join(", "));
    }
    let integers = [
        ("max_request_bytes", s.max_request_bytes),
        ("rate_per_second", s.rate_per_second.map(u64::from)),
        ("rate_burst", s.rate_burst.map(u64::from)),
        ("max_connections", s.max_connections),
        ("connections_per_source", s.connections_per_source),
        ("max_buffered_bytes", s.max_buffered_bytes),
        ("request_timeout_secs", s.request_timeout_secs),
        ("idle_timeout_secs", s.idle_timeout_secs),
    ];
    for (key, value) in integers {
        let Some(v) = value else { continue };
        // TOML integers are i64: a larger value would be a file the enclave cannot read.
        if i64::try_from(v).is_err() {
            return bad(key, format!("{v} is more than a TOML integer holds ({})", i64::MAX));
        }
        out += &format!("{key} = {v}\n");
    }
    if s.allow_non_finite {
        out += "allow_non_finite = true\n";
    }
    if let Some((size, delay)) = s.batching {
        if !(2..=4096).contains(&size) || !(1..=100_000).contains(&delay) {
            return bad(
                "batching",
                format!("max_batch_size {size} (2–4096), max_queue_delay_us {delay} (1–100000)"),
            );
        }
        // A table: last, so that no key after it falls into it.
        out += &format!("[batching]\nmax_batch_size = {size}\nmax_queue_delay_us = {delay}\n");
    }
    Ok(out)
}

/// A TOML basic string: quotes, backslashes and control characters escaped, so no value can
/// end the string and add keys of its own.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cmdline(extra: &str) -> Result<String, BuildError> {
    let line = if extra.trim().is_empty() {
        BASE_CMDLINE.to_owned()
    } else {
        format!("{BASE_CMDLINE} {}", extra.trim())
    };
    if line.len() > MAX_CMDLINE || !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(BuildError::Input {
            what: "cmdline",
            message: "printable ASCII, at most 2048 bytes".into(),
        });
    }
    Ok(line)
}

fn check_url(url: &str) -> Result<(), BuildError> {
    let ok = url.strip_prefix("https://").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(BuildError::Input {
            what: "service URL",
            message: format!("{url:?}: expected https://HOST[:PORT]"),
        })
    }
}

/// A binary for the initrd must run without a dynamic loader or libraries.
fn check_static(what: &'static str, data: &[u8]) -> Result<(), BuildError> {
    use object::Object;
    let bad = |message: String| BuildError::Input { what, message };
    let file = object::File::parse(data).map_err(|e| bad(format!("not an executable: {e}")))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(bad(format!("built for {:?}, not x86_64", file.architecture())));
    }
    let interp = object::read::elf::ElfFile64::<object::Endianness>::parse(data)
        .map_err(|e| bad(e.to_string()))?
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type.get(object::Endianness::Little) == object::elf::PT_INTERP);
    if interp {
        return Err(bad(
            "dynamically linked (has an ELF interpreter); build it with -C target-feature=+crt-static".into(),
        ));
    }
    Ok(())
}

/// The initrd's `/init`: mount the pseudo file systems, load the modules in dependency order,
/// bring up QEMU user networking's fixed address, hand over to the enclave. Any failure is
/// printed on the console and powers the VM off (the host agent sees the exit and the log).
const INIT: &str = r#"#!/bin/sh
# nacre guest init (measured: part of the initrd)
mount -t proc proc /proc
read up _ < /proc/uptime
echo "nacre-init: start at ${up}s"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "nacre-init: loading modules"
# Not fatal: the TEE driver of another platform has no device here ("No such device").
for m in $(cat /etc/nacre/modules); do
    insmod "/lib/modules/$m" || echo "nacre-init: $m not loaded (skipped)"
done
# configfs may be a module (loaded above, for configfs-tsm): mount it once it exists.
[ -d /sys/kernel/config ] && mount -t configfs configfs /sys/kernel/config
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
read up _ < /proc/uptime
echo "nacre-init: starting nacre-enclave at ${up}s"
/bin/nacre-enclave --config /etc/nacre/enclave.toml
echo "nacre-init: nacre-enclave exited with status $?"
poweroff -f
"#;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A spec whose files are never read: `enclave_config` looks at the values only.
    fn spec(serving: ServingOptions) -> ImageSpec {
        ImageSpec {
            kernel: PathBuf::new(),
            modules_dir: PathBuf::new(),
            busybox: PathBuf::new(),
            enclave: PathBuf::new(),
            service_url: "https://10.0.2.100:8443".into(),
            service_ca: PathBuf::new(),
            tee: Tee::Sim,
            model: ModelBinding {
                key_id: "fraud-mlp".into(),
                model_name: "fraud-mlp".into(),
                model_identity: [0xab; 32],
            },
            serving,
            extra_cmdline: String::new(),
        }
    }

    const BASE: &str = "# Measured: part of the initrd.\n\
        service_url = \"https://10.0.2.100:8443\"\n\
        service_ca = \"/etc/nacre/service-ca.pem\"\n\
        tee = \"sim\"\n\
        key_id = \"fraud-mlp\"\n\
        model_name = \"fraud-mlp\"\n\
        model_identity = \"abababababababababababababababababababababababababababababababab\"\n";

    /// No option set: the configuration (hence the initrd and every measurement) is byte for
    /// byte what it was before images had serving options.
    #[test]
    fn unset_serving_options_add_nothing() {
        assert_eq!(enclave_config(&spec(ServingOptions::default())).unwrap(), BASE);
    }

    #[test]
    fn each_set_serving_option_is_one_line_in_the_enclaves_order() {
        let serving = ServingOptions {
            inference_tokens_sha256: vec![token_sha256(b"abc")],
            monitoring_tokens_sha256: vec![[2; 32]],
            max_request_bytes: Some(1 << 20),
            rate_per_second: Some(5),
            rate_burst: Some(10),
            max_connections: Some(32),
            connections_per_source: Some(8),
            max_buffered_bytes: Some(8 << 20),
            request_timeout_secs: Some(10),
            idle_timeout_secs: Some(600),
            allow_non_finite: true,
            batching: Some((16, 500)),
        };
        let text = enclave_config(&spec(serving)).unwrap();
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let want = "inference_token_sha256 = \
                    \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n\
                    monitoring_tokens_sha256 = [\"0202020202020202020202020202020202020202020202020202020202020202\"]\n\
                    max_request_bytes = 1048576\n\
                    rate_per_second = 5\n\
                    rate_burst = 10\n\
                    max_connections = 32\n\
                    connections_per_source = 8\n\
                    max_buffered_bytes = 8388608\n\
                    request_timeout_secs = 10\n\
                    idle_timeout_secs = 600\n\
                    allow_non_finite = true\n\
                    [batching]\n\
                    max_batch_size = 16\n\
                    max_queue_delay_us = 500\n";
        assert_eq!(text, format!("{BASE}{want}"));
        // Only what is set.
        let token_only = ServingOptions { inference_tokens_sha256: vec![[0; 32]], ..Default::default() };
        let text = enclave_config(&spec(token_only)).unwrap();
        assert_eq!(text, format!("{BASE}inference_token_sha256 = \"{}\"\n", "00".repeat(32)));
        let two = ServingOptions { inference_tokens_sha256: vec![[0; 32], [1; 32]], ..Default::default() };
        let text = enclave_config(&spec(two)).unwrap();
        assert_eq!(
            text,
            format!("{BASE}inference_tokens_sha256 = [\"{}\", \"{}\"]\n", "00".repeat(32), "01".repeat(32))
        );
        // One token in both roles would let an inference client read the monitor.
        let both = ServingOptions {
            inference_tokens_sha256: vec![[0; 32]],
            monitoring_tokens_sha256: vec![[0; 32]],
            ..Default::default()
        };
        assert!(matches!(
            enclave_config(&spec(both)),
            Err(BuildError::Input { what: "monitoring_tokens_sha256", .. })
        ));
    }

    /// Every value the enclave's `check()` would refuse at boot fails the build, naming the key;
    /// a value is judged against the enclave's default of its unset counterpart.
    #[test]
    fn serving_options_the_enclave_would_refuse_fail_the_build() {
        type Edit = fn(&mut ServingOptions);
        let cases: &[(Edit, &str)] = &[
            (|s| s.rate_per_second = Some(0), "rate_per_second"),
            (|s| s.rate_burst = Some(0), "rate_burst"),
            (|s| s.max_connections = Some(0), "max_connections"),
            (|s| s.connections_per_source = Some(0), "connections_per_source"),
            (
                |s| {
                    s.max_connections = Some(10);
                    s.connections_per_source = Some(11)
                },
                "connections_per_source: 11 is more than max_connections (10)",
            ),
            // Against the defaults: 64 per source is more than 63 in all, 257 more than 256.
            (|s| s.max_connections = Some(63), "64, the enclave's default is more than max_connections (63)"),
            (|s| s.connections_per_source = Some(257), "(256, the enclave's default)"),
            (
                |s| s.max_buffered_bytes = Some((1 << 20) - 1),
                "max_request_bytes (16777216, the enclave's default)",
            ),
            (
                |s| {
                    s.max_request_bytes = Some(4096);
                    s.max_buffered_bytes = Some(4095)
                },
                "less than 4096",
            ),
            (|s| s.request_timeout_secs = Some(0), "request_timeout_secs: 0: 1–600"),
            (|s| s.request_timeout_secs = Some(601), "request_timeout_secs"),
            (|s| s.idle_timeout_secs = Some(0), "idle_timeout_secs"),
            (|s| s.idle_timeout_secs = Some(601), "idle_timeout_secs"),
            (|s| s.max_request_bytes = Some(u64::MAX), "TOML integer"),
            (|s| s.batching = Some((1, 500)), "max_batch_size 1 (2–4096)"),
            (|s| s.batching = Some((16, 0)), "batching"),
            (|s| s.batching = Some((16, 100_001)), "batching"),
        ];
        for (edit, reason) in cases {
            let mut serving = ServingOptions::default();
            edit(&mut serving);
            let e = enclave_config(&spec(serving.clone())).unwrap_err();
            assert!(matches!(e, BuildError::Input { .. }), "{e:?}");
            assert!(e.to_string().contains(reason), "{serving:?}: {e} should mention {reason:?}");
        }
        // The edges the enclave accepts.
        let edges = [
            ServingOptions { connections_per_source: Some(256), ..Default::default() },
            ServingOptions { max_connections: Some(64), ..Default::default() },
            ServingOptions { max_buffered_bytes: Some(1 << 20), ..Default::default() },
            ServingOptions {
                max_request_bytes: Some(10),
                max_buffered_bytes: Some(10),
                ..Default::default()
            },
            ServingOptions {
                request_timeout_secs: Some(1),
                idle_timeout_secs: Some(600),
                ..Default::default()
            },
            ServingOptions { max_request_bytes: Some(i64::MAX as u64), ..Default::default() },
        ];
        for serving in edges {
            enclave_config(&spec(serving.clone())).unwrap_or_else(|e| panic!("{serving:?}: {e}"));
        }
    }
}
