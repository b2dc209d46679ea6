//! `nacre host …`: the host agent daemon and its CLI (over the agent's Unix socket).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use nacre_host::agent::{self, Agent, Request};
use nacre_host::spec::LaunchSpec;
use nacre_host::vm::Tools;

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Run the agent: adopts the VMs of its state directory and serves STATE/agent.sock.
    Serve {
        #[arg(long)]
        state: PathBuf,
        /// INSECURE: the simulated CA (from `nacre sim ca init`) the sim secure processor signs with.
        #[arg(long)]
        sim_ca: Option<PathBuf>,
        #[arg(long, default_value = "qemu-system-x86_64")]
        qemu: PathBuf,
    },
    /// Launch a VM from a launch spec (TOML).
    Launch {
        #[arg(long)]
        state: PathBuf,
        spec: PathBuf,
    },
    /// List VMs.
    Ps {
        #[arg(long)]
        state: PathBuf,
    },
    /// Stop a VM (QMP quit; SIGKILL after 10 s).
    Stop {
        #[arg(long)]
        state: PathBuf,
        name: String,
    },
    /// Print the tail of a VM's serial console.
    Logs {
        #[arg(long)]
        state: PathBuf,
        name: String,
        #[arg(long, default_value_t = 65536)]
        tail: u64,
    },
    /// Show a VM's state and launch spec.
    Inspect {
        #[arg(long)]
        state: PathBuf,
        name: String,
    },
    /// (Run by QEMU per guest connection.) Relays stdin/stdout to the attestation service
    /// (the launch spec's `attestation_service`).
    Relay { addr: nacre_host::spec::ServiceAddr },
}

fn print(v: &serde_json::Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

pub fn host(cmd: HostCmd) -> Result<ExitCode> {
    if let HostCmd::Relay { addr } = cmd {
        return relay(addr);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let call = |state: PathBuf, req: Request| async move {
            agent::call(&state, &req).await.map_err(anyhow::Error::msg)
        };
        match cmd {
            HostCmd::Serve { state, sim_ca, qemu } => {
                let sim_ca = match sim_ca {
                    Some(dir) => {
                        tracing::warn!("INSECURE: sim secure processor enabled (sim CA {})", dir.display());
                        Some(Arc::new(nacre_host::sp::SimIdentity::load(&dir).map_err(anyhow::Error::msg)?))
                    }
                    None => None,
                };
                let nacre = std::env::current_exe().context("locating the nacre binary")?;
                let agent = Agent::open(&state, Tools { qemu, nacre, sim: sim_ca }).await?;
                eprintln!("nacre host agent on {}", agent::socket_path(&state).display());
                agent.serve(crate::attestation::shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            HostCmd::Launch { state, spec } => {
                let text =
                    std::fs::read_to_string(&spec).with_context(|| format!("reading {}", spec.display()))?;
                let spec: LaunchSpec =
                    toml::from_str(&text).with_context(|| format!("{}", spec.display()))?;
                print(&call(state, Request::Launch { spec: Box::new(spec) }).await?)
            }
            HostCmd::Ps { state } => print(&call(state, Request::Ps).await?),
            HostCmd::Stop { state, name } => print(&call(state, Request::Stop { name }).await?),
            HostCmd::Inspect { state, name } => print(&call(state, Request::Inspect { name }).await?),
            HostCmd::Logs { state, name, tail } => {
                let v = call(state, Request::Logs { name, tail: Some(tail) }).await?;
                print!("{}", v.as_str().unwrap_or_default());
                Ok(ExitCode::SUCCESS)
            }
            HostCmd::Relay { .. } => bail!("unreachable"),
        }
    })
}

/// stdin → TCP and TCP → stdout until either side closes. The guest's TLS runs through it
/// end to end: the relay sees ciphertext only.
fn relay(addr: nacre_host::spec::ServiceAddr) -> Result<ExitCode> {
    use std::io::{Read, Write};
    let stream =
        std::net::TcpStream::connect(addr.host_port()).with_context(|| format!("connecting to {addr}"))?;
    let mut up = stream.try_clone()?;
    let mut down = stream;
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    // Rust's stdout is line-buffered: every chunk is flushed as it comes, or the tail of a
    // TLS record without a newline byte would wait in the buffer and stall the handshake.
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = t.join();
    Ok(ExitCode::SUCCESS)
}
