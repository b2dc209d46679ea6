//! The QEMU command line, built from a checked [`LaunchSpec`] for each backend. One typed
//! builder; tests pin the exact argv of each backend.

use std::path::{Path, PathBuf};

use crate::spec::{Backend, LaunchSpec};

/// Where the guest reaches the attestation service (a `guestfwd` on QEMU's user network).
pub const SERVICE_GUEST_ADDR: &str = "10.0.2.100:8443";
/// The guest's serving port.
pub const GUEST_SERVE_PORT: u16 = 8443;
/// The virtio-serial port name of the simulated secure processor.
pub const SP_PORT_NAME: &str = "org.nacre.sp";

/// Files of one VM in its state directory. Boot inputs are the agent's private copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VmPaths { dir: dir.into() }
    }
    pub fn firmware(&self) -> PathBuf {
        self.dir.join("firmware.bin")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn sp(&self) -> PathBuf {
        self.dir.join("sp.sock")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `relay` is the program QEMU runs for each guest connection to the attestation service
/// (`nacre host relay ADDR`: stdio ↔ that loopback address).
pub fn command(spec: &LaunchSpec, paths: &VmPaths, qemu: &Path, relay: &Path) -> QemuCommand {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    let name = format!("nacre-{}", spec.name);
    push(&["-name", &format!("{name},process={name}"), "-nodefaults", "-no-user-config", "-display", "none"]);
    let mem = format!("{}M", spec.memory_mib);
    match spec.backend {
        Backend::Sim => {
            push(&["-machine", "q35", "-accel", "tcg", "-cpu", &spec.vcpu_type, "-m", &mem]);
        }
        Backend::Snp => {
            push(&["-machine", "q35,confidential-guest-support=sev0,memory-backend=ram0", "-accel", "kvm"]);
            push(&["-cpu", &spec.vcpu_type, "-m", &mem]);
            push(&["-object", &format!("memory-backend-memfd,id=ram0,size={mem},share=true,prealloc=false")]);
            let mut sev = format!(
                "sev-snp-guest,id=sev0,cbitpos={},reduced-phys-bits=1,kernel-hashes=on",
                spec.cbitpos
            );
            if spec.host_data.is_some() {
                sev.push_str(&format!(",host-data={}", base64(&spec.host_data())));
            }
            push(&["-object", &sev]);
        }
        Backend::Tdx => {
            push(&[
                "-machine",
                "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0",
            ]);
            push(&["-accel", "kvm", "-cpu", "host", "-m", &mem]);
            push(&["-object", &format!("memory-backend-memfd,id=ram0,size={mem},share=true,prealloc=false")]);
            push(&[
                "-object",
                r#"{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}"#,
            ]);
        }
    }
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-bios", &p(&paths.firmware()), "-kernel", &p(&paths.kernel()), "-initrd", &p(&paths.initrd())]);
    push(&["-append", &spec.cmdline]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={},append=on", p(&paths.console())),
        "-serial",
        "chardev:console",
    ]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", p(&paths.qmp()))]);
    if spec.backend == Backend::Sim {
        push(&["-device", "virtio-serial-pci,id=vser0"]);
        push(&["-chardev", &format!("socket,id=sp,path={},reconnect=1", p(&paths.sp()))]);
        push(&["-device", &format!("virtserialport,bus=vser0.0,chardev=sp,name={SP_PORT_NAME}")]);
    }
    // User networking with restrict=on: no outbound connections at all, except the service
    // forward; the serving port is forwarded from 127.0.0.1 only.
    let mut net = "user,id=net0,restrict=on".to_owned();
    if let Some(port) = spec.serve_port {
        net.push_str(&format!(",hostfwd=tcp:{}:{port}-:{GUEST_SERVE_PORT}", spec.serve_address));
    }
    if let Some(svc) = &spec.attestation_service {
        net.push_str(&format!(",guestfwd=tcp:{SERVICE_GUEST_ADDR}-cmd:{} host relay {svc}", p(relay)));
    }
    push(&["-netdev", &net, "-device", "virtio-net-pci,netdev=net0,romfile="]);
    if let Some(model) = &spec.sealed_model {
        push(&["-drive", &format!("file={},format=raw,if=none,id=model,readonly=on", p(model))]);
        push(&["-device", "virtio-blk-pci,drive=model"]);
    }
    push(&["-no-reboot"]);
    QemuCommand { program: qemu.to_owned(), args: a }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(backend: Backend) -> LaunchSpec {
        LaunchSpec {
            name: "m1".into(),
            backend,
            kernel: "/in/vmlinuz".into(),
            initrd: "/in/initrd".into(),
            cmdline: "console=ttyS0 quiet".into(),
            firmware: Some("/in/fw".into()),
            vcpus: 2,
            vcpu_type: "EPYC-v4".into(),
            memory_mib: 2048,
            sealed_model: Some("/m/model.sealed".into()),
            serve_port: Some(9443),
            serve_address: std::net::Ipv4Addr::LOCALHOST,
            attestation_service: Some("127.0.0.1:8443".parse().unwrap()),
            host_data: Some("ab".repeat(32)),
            cbitpos: 51,
        }
    }

    fn argv(b: Backend) -> String {
        command(&spec(b), &VmPaths::new("/s/m1"), Path::new("qemu-system-x86_64"), Path::new("/bin/nacre"))
            .args
            .join(" ")
    }

    const COMMON_TAIL: &str = "-smp 2 -bios /s/m1/firmware.bin -kernel /s/m1/vmlinuz -initrd /s/m1/initrd \
-append console=ttyS0 quiet -chardev file,id=console,path=/s/m1/console.log,append=on -serial chardev:console \
-qmp unix:/s/m1/qmp.sock,server=on,wait=off";
    const NET_TAIL: &str = "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:9443-:8443,\
guestfwd=tcp:10.0.2.100:8443-cmd:/bin/nacre host relay 127.0.0.1:8443 -device virtio-net-pci,netdev=net0,romfile= \
-drive file=/m/model.sealed,format=raw,if=none,id=model,readonly=on -device virtio-blk-pci,drive=model -no-reboot";
    const HEAD: &str = "-name nacre-m1,process=nacre-m1 -nodefaults -no-user-config -display none";

    #[test]
    fn sim_argv() {
        assert_eq!(
            argv(Backend::Sim),
            format!(
                "{HEAD} -machine q35 -accel tcg -cpu EPYC-v4 -m 2048M {COMMON_TAIL} -device virtio-serial-pci,id=vser0 \
-chardev socket,id=sp,path=/s/m1/sp.sock,reconnect=1 -device virtserialport,bus=vser0.0,chardev=sp,name=org.nacre.sp {NET_TAIL}"
            )
        );
    }

    #[test]
    fn snp_argv() {
        assert_eq!(
            argv(Backend::Snp),
            format!(
                "{HEAD} -machine q35,confidential-guest-support=sev0,memory-backend=ram0 -accel kvm -cpu EPYC-v4 -m 2048M \
-object memory-backend-memfd,id=ram0,size=2048M,share=true,prealloc=false \
-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data=q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s= \
{COMMON_TAIL} {NET_TAIL}"
            )
        );
    }

    #[test]
    fn tdx_argv() {
        assert_eq!(
            argv(Backend::Tdx),
            format!(
                "{HEAD} -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram0 -accel kvm -cpu host -m 2048M \
-object memory-backend-memfd,id=ram0,size=2048M,share=true,prealloc=false \
-object {{\"qom-type\":\"tdx-guest\",\"id\":\"tdx0\",\"quote-generation-socket\":{{\"type\":\"vsock\",\"cid\":\"2\",\"port\":\"4050\"}}}} \
{COMMON_TAIL} {NET_TAIL}"
            )
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
