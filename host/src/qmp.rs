//! A minimal QMP client: capabilities negotiation, one command, its answer (events skipped).
//! QEMU is the agent's own child (the host is outside the guest's trust boundary, not the
//! agent's), so this parses its answers plainly, with a timeout.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const MAX_LINE: usize = 64 * 1024;

/// Runs `command` (e.g. `quit`, `query-status`) and returns its `return` value.
pub async fn execute(socket: &Path, command: &str) -> Result<serde_json::Value, String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let stream = UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r);
        let greeting = read_json(&mut lines).await?;
        if greeting.get("QMP").is_none() {
            return Err("no QMP greeting".into());
        }
        for cmd in ["qmp_capabilities", command] {
            let msg = serde_json::json!({ "execute": cmd });
            w.write_all(format!("{msg}\n").as_bytes()).await.map_err(|e| e.to_string())?;
            loop {
                let v = read_json(&mut lines).await?;
                if let Some(e) = v.get("error") {
                    return Err(format!("{cmd}: {e}"));
                }
                if let Some(ret) = v.get("return") {
                    if cmd == command {
                        return Ok(ret.clone());
                    }
                    break;
                }
            }
        }
        Err("no answer".into())
    })
    .await
    .map_err(|_| "QMP timed out".to_owned())?
}

async fn read_json(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Result<serde_json::Value, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("QMP connection closed".into());
    }
    if line.len() > MAX_LINE {
        return Err("QMP line too long".into());
    }
    serde_json::from_str(&line).map_err(|e| format!("QMP: {e}"))
}
