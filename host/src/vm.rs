//! One VM's lifecycle: private copies of the boot inputs, the measurement computed from those
//! very bytes, the simulated secure processor (sim), QEMU in its own process group (so VMs
//! outlive an agent restart and are adopted again), supervision with restart and backoff,
//! and a clean stop through QMP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::qemu::{self, VmPaths};
use crate::sp::SecureProcessor;
use crate::spec::{Backend, LaunchSpec};

/// The sim backend's default firmware (Debian's SeaBIOS, `seabios` package).
pub const DEFAULT_SIM_FIRMWARE: &str = "/usr/share/seabios/bios-256k.bin";
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A VM that ran this long before dying restarts without accumulated backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("this host cannot run {backend}: {}", reasons.join("; "))]
    Unsupported { backend: &'static str, reasons: Vec<String> },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("measurement: {0}")]
    Measure(#[from] nacre_images::measure::MeasureError),
    #[error("{0}")]
    Other(String),
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> VmError {
    VmError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// What survives an agent restart (`vm.json` in the VM's directory).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub spec: LaunchSpec,
    pub measurement: String,
    pub stopped: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub backend: Backend,
    /// `running`, `restarting`, `stopped`.
    pub state: String,
    pub pid: Option<u32>,
    pub measurement: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub serve_port: Option<u16>,
    pub dir: PathBuf,
}

#[derive(Debug)]
struct Live {
    pid: Option<u32>,
    state: &'static str,
    restarts: u32,
    last_exit: Option<String>,
}

/// A launched VM and its supervisor.
pub struct Vm {
    pub paths: VmPaths,
    pub record: VmRecord,
    live: Mutex<Live>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl core::fmt::Debug for Vm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm").field("name", &self.record.spec.name).field("live", &self.live).finish()
    }
}

/// Tools the agent runs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub qemu: PathBuf,
    /// The `nacre` binary (for `nacre host relay`).
    pub nacre: PathBuf,
    pub sim: Option<Arc<crate::sp::SimIdentity>>,
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), VmError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(data).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Prepares `dir` for `spec`: reads every boot input once, writes the private copies QEMU
/// will boot, and measures those same bytes.
pub fn prepare(spec: &LaunchSpec, dir: &Path) -> Result<(VmPaths, [u8; 48]), VmError> {
    spec.check()?;
    if dir.display().to_string().contains(',')
        || spec.sealed_model.as_ref().is_some_and(|m| m.display().to_string().contains(','))
    {
        return Err(VmError::Other("paths handed to QEMU must not contain ','".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
    }
    let paths = VmPaths::new(dir);
    let read = |p: &Path| std::fs::read(p).map_err(|e| io(p, e));
    let firmware_path = spec.firmware.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SIM_FIRMWARE));
    let (firmware, kernel, initrd) = (read(&firmware_path)?, read(&spec.kernel)?, read(&spec.initrd)?);
    write_private(&paths.firmware(), &firmware)?;
    write_private(&paths.kernel(), &kernel)?;
    write_private(&paths.initrd(), &initrd)?;
    let vcpu_type = spec.vcpu_type.parse()?;
    let measurement = match spec.backend {
        Backend::Sim => nacre_images::measure::sim::digest_of(&nacre_images::measure::sim::SimLaunch {
            firmware: &firmware,
            kernel: &kernel,
            initrd: &initrd,
            cmdline: &spec.cmdline,
            vcpus: spec.vcpus,
            vcpu_type,
        })?,
        Backend::Snp => nacre_images::measure::snp::launch_digest(&nacre_images::measure::snp::SnpLaunch {
            ovmf: paths.firmware(),
            kernel: Some(paths.kernel()),
            initrd: Some(paths.initrd()),
            append: Some(spec.cmdline.clone()),
            vcpus: spec.vcpus,
            vcpu_type,
            guest_features: 1,
        })?,
        Backend::Tdx => {
            nacre_images::measure::tdx::mrtd(&firmware, nacre_images::measure::tdx::Order::PageByPage)?
        }
    };
    Ok((paths, measurement))
}

impl Vm {
    pub fn info(&self) -> VmInfo {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        VmInfo {
            name: self.record.spec.name.clone(),
            backend: self.record.spec.backend,
            state: live.state.to_owned(),
            pid: live.pid,
            measurement: self.record.measurement.clone(),
            restarts: live.restarts,
            last_exit: live.last_exit.clone(),
            serve_port: self.record.spec.serve_port,
            dir: self.paths.dir.clone(),
        }
    }

    /// A VM record with nothing running (listed by `ps`, relaunchable).
    pub fn stopped(record: VmRecord, paths: VmPaths) -> Arc<Vm> {
        let (stop, _) = watch::channel(true);
        Arc::new(Vm {
            paths,
            record,
            live: Mutex::new(Live { pid: None, state: "stopped", restarts: 0, last_exit: None }),
            stop,
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub fn save(&self) -> Result<(), VmError> {
        let path = self.paths.dir.join("vm.json");
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| VmError::Other(e.to_string()))?;
        write_private(&path, &json)
    }

    /// Starts (or adopts `pid`, a QEMU of this VM still running from a previous agent) and
    /// supervises it until [`Vm::stop`].
    pub fn start(
        record: VmRecord,
        paths: VmPaths,
        tools: &Tools,
        adopt: Option<u32>,
    ) -> Result<Arc<Vm>, VmError> {
        let (stop, _) = watch::channel(false);
        let vm = Arc::new(Vm {
            paths,
            record,
            live: Mutex::new(Live { pid: None, state: "starting", restarts: 0, last_exit: None }),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let sim = match vm.record.spec.backend {
            Backend::Sim => Some(tools.sim.clone().ok_or_else(|| {
                VmError::Other("sim backend: the agent was started without --sim-ca".into())
            })?),
            _ => None,
        };
        vm.save()?;
        if let Some(ca) = sim {
            let mut m = [0u8; 48];
            hex::decode_to_slice(&vm.record.measurement, &mut m)
                .map_err(|e| VmError::Other(e.to_string()))?;
            let sp = Arc::new(SecureProcessor::new(ca, m, vm.record.spec.host_data()));
            let sock = vm.paths.sp();
            let _ = std::fs::remove_file(&sock);
            let listener = tokio::net::UnixListener::bind(&sock).map_err(|e| io(&sock, e))?;
            vm.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tokio::spawn(sp.serve(listener, vm.record.spec.name.clone())));
        }
        let proc = match adopt {
            Some(pid) => Proc::Adopted(pid),
            None => vm.spawn(tools)?,
        };
        {
            let mut live = vm.live.lock().unwrap_or_else(|e| e.into_inner());
            live.state = "running";
            live.pid = Some(proc.pid());
        }
        let sup = tokio::spawn(vm.clone().supervise(proc, tools.clone()));
        vm.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(sup);
        Ok(vm)
    }

    fn spawn(&self, tools: &Tools) -> Result<Proc, VmError> {
        let cmd = qemu::command(&self.record.spec, &self.paths, &tools.qemu, &tools.nacre);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.paths.dir.join("qemu.log"))
            .map_err(|e| io(&self.paths.dir, e))?;
        let err = log.try_clone().map_err(|e| io(&self.paths.dir, e))?;
        let _ = std::fs::remove_file(self.paths.qmp());
        let child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0) // not killed with the agent: adopted by the next one
            .spawn()
            .map_err(|e| io(&cmd.program, e))?;
        let pid = child.id().ok_or_else(|| VmError::Other("QEMU exited at once".into()))?;
        std::fs::write(self.paths.pid(), format!("{pid}\n")).map_err(|e| io(&self.paths.pid(), e))?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.pid = Some(pid);
        live.state = "running";
        tracing::info!(vm = %self.record.spec.name, pid, "QEMU started");
        Ok(Proc::Child(child))
    }

    async fn supervise(self: Arc<Self>, mut proc: Proc, tools: Tools) {
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let exit = tokio::select! {
                e = proc.exited() => e,
                _ = stop.wait_for(|s| *s) => return,
            };
            if *stop.borrow() {
                return;
            }
            if started.elapsed() > HEALTHY_RUN {
                backoff = Duration::from_secs(1);
            }
            {
                let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.state = "restarting";
                live.pid = None;
                live.last_exit = Some(exit.clone());
            }
            tracing::warn!(vm = %self.record.spec.name, %exit, ?backoff, "QEMU exited; restarting");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match self.spawn(&tools) {
                Ok(p) => {
                    proc = p;
                    self.live.lock().unwrap_or_else(|e| e.into_inner()).restarts += 1;
                }
                Err(e) => tracing::error!(vm = %self.record.spec.name, error = %e, "restart failed"),
            }
        }
    }

    /// Stops supervision, then QEMU: QMP `quit`, and SIGKILL if it is still there after 10 s.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let pid = self.live.lock().unwrap_or_else(|e| e.into_inner()).pid;
        if let Some(pid) = pid {
            if let Err(e) = crate::qmp::execute(&self.paths.qmp(), "quit").await {
                tracing::warn!(vm = %self.record.spec.name, error = %e, "QMP quit failed");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive(pid) {
                kill(pid);
            }
        }
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.state = "stopped";
        live.pid = None;
    }

    /// Detaches from the VM without stopping it (agent shutdown): the next agent adopts it.
    pub fn detach(&self) {
        let _ = self.stop.send(true);
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

enum Proc {
    Child(tokio::process::Child),
    Adopted(u32),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id().unwrap_or(0),
            Proc::Adopted(p) => *p,
        }
    }

    async fn exited(&mut self) -> String {
        match self {
            Proc::Child(c) => match c.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            },
            Proc::Adopted(pid) => {
                while alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                "adopted QEMU exited".into()
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` is the QEMU of the VM in `dir` (its command line names the VM's files).
pub fn is_our_qemu(pid: u32, paths: &VmPaths) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let text = String::from_utf8_lossy(&c);
            text.contains(&paths.qmp().display().to_string()) && text.contains("-kernel")
        })
        .unwrap_or(false)
}

pub fn kill(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}
