//! The agent daemon: VM registry in a state directory, adoption of VMs that outlived a
//! previous agent, and the local API (JSON lines on a Unix socket in the state directory,
//! which is mode 0700 before the socket is bound: only the agent's user can reach it).
//!
//! ```text
//! {"op":"launch","spec":{…}}   {"op":"ps"}   {"op":"stop","name":N}
//! {"op":"inspect","name":N}    {"op":"logs","name":N,"tail":BYTES}
//! → {"ok":true,"result":…} | {"ok":false,"error":"…"}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::probe;
use crate::qemu::VmPaths;
use crate::spec::{Backend, LaunchSpec};
use crate::vm::{self, Tools, Vm, VmError, VmInfo, VmRecord};

/// Largest API request line.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// Largest log tail returned.
pub const MAX_TAIL: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Launch {
        spec: Box<LaunchSpec>,
    },
    Ps,
    Stop {
        name: String,
    },
    Inspect {
        name: String,
    },
    Logs {
        name: String,
        #[serde(default)]
        tail: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Agent {
    state: PathBuf,
    tools: Tools,
    vms: Mutex<BTreeMap<String, Arc<Vm>>>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent").field("state", &self.state).finish()
    }
}

pub fn socket_path(state: &Path) -> PathBuf {
    state.join("agent.sock")
}

impl Agent {
    /// Opens the state directory and takes over every VM recorded there: a running QEMU is
    /// adopted, a dead one is restarted; stopped VMs are listed.
    pub async fn open(state: &Path, tools: Tools) -> Result<Arc<Agent>, VmError> {
        private_dir(state)?;
        std::fs::create_dir_all(state.join("vms")).map_err(|e| vm::io(state, e))?;
        let agent = Arc::new(Agent { state: state.to_owned(), tools, vms: Mutex::new(BTreeMap::new()) });
        let mut vms = agent.vms.lock().await;
        let dirs = std::fs::read_dir(state.join("vms")).map_err(|e| vm::io(state, e))?;
        for dir in dirs.flatten().map(|d| d.path()) {
            let Ok(text) = std::fs::read(dir.join("vm.json")) else { continue };
            let record: VmRecord = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "unreadable VM record; left alone");
                    continue;
                }
            };
            let paths = VmPaths::new(&dir);
            let name = record.spec.name.clone();
            if record.stopped {
                vms.insert(name, Vm::stopped(record, paths));
                continue;
            }
            let pid = std::fs::read_to_string(paths.pid()).ok().and_then(|s| s.trim().parse::<u32>().ok());
            let adopt = pid.filter(|p| vm::alive(*p) && vm::is_our_qemu(*p, &paths));
            tracing::info!(vm = %name, adopted = adopt.is_some(), "taking over VM");
            match Vm::start(record, paths, &agent.tools, adopt) {
                Ok(v) => {
                    vms.insert(name, v);
                }
                Err(e) => tracing::error!(vm = %name, error = %e, "could not take over"),
            }
        }
        drop(vms);
        Ok(agent)
    }

    pub async fn launch(&self, spec: LaunchSpec) -> Result<VmInfo, VmError> {
        spec.check()?;
        if spec.backend != Backend::Sim {
            let reasons = probe::missing(
                &probe::Host { qemu: &self.tools.qemu, ..probe::Host::default() },
                spec.backend,
            );
            if !reasons.is_empty() {
                return Err(VmError::Unsupported { backend: spec.backend.as_str(), reasons });
            }
        }
        if spec.backend != Backend::Tdx && !probe::has_cpu_model(&self.tools.qemu, &spec.vcpu_type) {
            return Err(VmError::Unsupported {
                backend: spec.backend.as_str(),
                reasons: vec![format!("this QEMU has no CPU model {} (`-cpu help`)", spec.vcpu_type)],
            });
        }
        let mut vms = self.vms.lock().await;
        if let Some(v) = vms.get(&spec.name)
            && v.info().state != "stopped"
        {
            return Err(VmError::Other(format!("VM {} exists and is not stopped", spec.name)));
        }
        let dir = self.state.join("vms").join(&spec.name);
        let (paths, measurement) = vm::prepare(&spec, &dir)?;
        let name = spec.name.clone();
        let record = VmRecord { spec, measurement: hex::encode(measurement), stopped: false };
        let v = Vm::start(record, paths, &self.tools, None)?;
        let info = v.info();
        vms.insert(name, v);
        Ok(info)
    }

    pub async fn ps(&self) -> Vec<VmInfo> {
        self.vms.lock().await.values().map(|v| v.info()).collect()
    }

    async fn get(&self, name: &str) -> Result<Arc<Vm>, VmError> {
        self.vms.lock().await.get(name).cloned().ok_or_else(|| VmError::Other(format!("no VM named {name}")))
    }

    pub async fn stop(&self, name: &str) -> Result<VmInfo, VmError> {
        let v = self.get(name).await?;
        v.stop().await;
        let mut record = v.record.clone();
        record.stopped = true;
        let stopped = Vm::stopped(record, v.paths.clone());
        stopped.save()?;
        let info = stopped.info();
        self.vms.lock().await.insert(name.to_owned(), stopped);
        Ok(info)
    }

    pub async fn logs(&self, name: &str, tail: u64) -> Result<String, VmError> {
        let v = self.get(name).await?;
        let path = v.paths.console();
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(vm::io(&path, e)),
        };
        let len = f.metadata().await.map_err(|e| vm::io(&path, e))?.len();
        let tail = tail.min(MAX_TAIL);
        use tokio::io::AsyncSeekExt;
        f.seek(std::io::SeekFrom::Start(len.saturating_sub(tail))).await.map_err(|e| vm::io(&path, e))?;
        let mut buf = Vec::new();
        f.take(tail).read_to_end(&mut buf).await.map_err(|e| vm::io(&path, e))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Leaves every VM running for the next agent.
    pub async fn detach_all(&self) {
        for v in self.vms.lock().await.values() {
            v.detach();
        }
    }

    async fn handle(&self, req: Request) -> Result<serde_json::Value, VmError> {
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
        }
        Ok(match req {
            Request::Launch { spec } => json(&self.launch(*spec).await?),
            Request::Ps => json(&self.ps().await),
            Request::Stop { name } => json(&self.stop(&name).await?),
            Request::Inspect { name } => {
                let v = self.get(&name).await?;
                serde_json::json!({ "info": v.info(), "spec": v.record.spec })
            }
            Request::Logs { name, tail } => json(&self.logs(&name, tail.unwrap_or(64 * 1024)).await?),
        })
    }

    /// Serves the API on `STATE/agent.sock` until `shutdown` resolves; VMs keep running.
    pub async fn serve(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), VmError> {
        let path = socket_path(&self.state);
        // The socket takes its mode from the umask at `bind`; a chmod after it would leave a
        // window in which others can connect. The directory closes that window instead: it is
        // 0700 and ours before the socket exists.
        private_dir(&self.state)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| vm::io(&path, e))?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                conn = listener.accept() => {
                    let Ok((stream, _)) = conn else { continue };
                    let agent = self.clone();
                    tokio::spawn(async move { agent.connection(stream).await });
                }
            }
        }
        self.detach_all().await;
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    async fn connection(&self, stream: UnixStream) {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r.take(MAX_REQUEST));
        let mut line = String::new();
        let reply = match r.read_line(&mut line).await {
            Ok(_) if !line.ends_with('\n') => {
                Reply { ok: false, result: None, error: Some("request too long or unterminated".into()) }
            }
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => match self.handle(req).await {
                    Ok(v) => Reply { ok: true, result: Some(v), error: None },
                    Err(e) => Reply { ok: false, result: None, error: Some(e.to_string()) },
                },
                Err(e) => Reply { ok: false, result: None, error: Some(format!("bad request: {e}")) },
            },
            Err(e) => Reply { ok: false, result: None, error: Some(e.to_string()) },
        };
        if let Ok(mut text) = serde_json::to_string(&reply) {
            text.push('\n');
            let _ = w.write_all(text.as_bytes()).await;
        }
    }
}

/// Makes `dir` (creating it if needed) a directory that only the effective user can enter:
/// mode 0700 and owned by that user. A symlink or another user's directory is refused.
fn private_dir(dir: &Path) -> Result<(), VmError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let refuse = |m: &str| Err(vm::io(dir, m));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| vm::io(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| vm::io(dir, e))?;
    if !meta.is_dir() {
        return refuse("the state directory is not a directory (a symlink is refused)");
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return refuse("the state directory belongs to another user");
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| vm::io(dir, e))?;
    }
    Ok(())
}

/// One API call (the CLI's side).
pub async fn call(state: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let path = socket_path(state);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|e| format!("{}: {e} (is `nacre host serve` running?)", path.display()))?;
    let (r, mut w) = stream.into_split();
    let mut text = serde_json::to_string(req).map_err(|e| e.to_string())?;
    text.push('\n');
    w.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(r.take(8 << 20)).read_line(&mut line).await.map_err(|e| e.to_string())?;
    let reply: Reply = serde_json::from_str(&line).map_err(|e| format!("agent reply: {e}"))?;
    if reply.ok { Ok(reply.result.unwrap_or_default()) } else { Err(reply.error.unwrap_or_default()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Issue 12 §6: the API socket is bound inside a 0700 directory, never chmod'ed after
    /// `bind`. Even a state directory that already exists open to everyone is closed before the
    /// socket appears: whenever the socket exists, its directory is 0700.
    #[test]
    fn agent_socket_is_never_group_or_other_accessible() {
        let state = std::env::temp_dir().join(format!("nacre-agent-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let tools =
                Tools { qemu: "/nonexistent/qemu".into(), nacre: "/nonexistent/nacre".into(), sim: None };
            let agent = Agent::open(&state, tools).await.unwrap();
            assert_eq!(mode(&state), 0o700, "open closes the state directory");
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(agent.serve(async {
                let _ = stopped.await;
            }));
            let socket = socket_path(&state);
            let mut seen = false;
            for _ in 0..5000 {
                if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                    assert_eq!(mode(&state), 0o700, "the socket exists in an open directory");
                    seen = true;
                    break;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert!(seen, "the agent never bound its socket");
            assert_eq!(call(&state, &Request::Ps).await.unwrap(), serde_json::json!([]));
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        });
        let _ = std::fs::remove_dir_all(&state);
    }
}
