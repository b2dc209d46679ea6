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
    pub extra_cmdline: String,
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
    pub model_digest: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}: {message}")]
    Io { path: String, message: String },
    #[error("{what}: {message}")]
    Input { what: &'static str, message: String },
    #[error(transparent)]
    Module(#[from] ModuleError),
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
}

impl Image {
    pub fn sha256(data: &[u8]) -> String {
        hex::encode(digest(&SHA256, data))
    }

    /// Writes `vmlinuz`, `initrd` and `cmdline` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), BuildError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (name, data) in [
            ("vmlinuz", self.kernel.as_slice()),
            ("initrd", &self.initrd),
            ("cmdline", self.cmdline.as_bytes()),
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
    Ok(Image {
        kernel,
        initrd: cpio::write(&entries),
        cmdline,
        modules: mods.into_iter().map(|m| m.name).collect(),
    })
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
    Ok(format!(
        "# Measured: part of the initrd.\n\
         service_url = {}\n\
         service_ca = \"/etc/nacre/service-ca.pem\"\n\
         tee = \"{}\"\n\
         key_id = {}\n\
         model_name = {}\n\
         model_digest = \"{}\"\n",
        toml_string(&spec.service_url),
        spec.tee.as_str(),
        toml_string(&m.key_id),
        toml_string(&m.model_name),
        hex::encode(m.model_digest),
    ))
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
