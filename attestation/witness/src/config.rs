//! The witness's TOML configuration. Unknown keys are refused; relative paths are resolved
//! against the configuration file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nacre_tlog::{KeyKind, NoteKey, NoteSigner};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where HTTPS is served. Default `127.0.0.1:8444`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The witness's name: its key's name in cosignatures, which logs' clients pin.
    pub name: String,
    /// The witness's key: a 32-byte Ed25519 seed as 64 hex digits (written 0600 by init).
    pub key_file: PathBuf,
    /// The durable state: the latest checkpoint cosigned per log.
    pub state_file: PathBuf,
    /// PEM certificate chain (leaf first) and key.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The logs this witness follows, by their checkpoint verifier keys (`vkey`). A checkpoint
    /// of any other origin is refused (404).
    #[serde(default)]
    pub logs: Vec<LogEntry>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub vkey: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections. Default 256.
    pub max_connections: usize,
    /// Open connections per source address (IPv6: per /64). Default 16.
    pub connections_per_source: usize,
    /// Idle keep-alive and header deadline. Default 30 s.
    pub idle_timeout_secs: u64,
    /// A request's body deadline. Default 10 s.
    pub body_timeout_secs: u64,
    /// A handler's deadline. Default 10 s.
    pub handler_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            connections_per_source: 16,
            idle_timeout_secs: 30,
            body_timeout_secs: 10,
            handler_timeout_secs: 10,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}

impl Config {
    /// Reads and checks `path`; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.key_file, &mut c.state_file, &mut c.tls_cert, &mut c.tls_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if c.limits.max_connections < 2 || c.limits.connections_per_source == 0 {
            return Err(format!("{}: limits: at least 2 connections, 1 per source", path.display()));
        }
        c.log_keys()?;
        Ok(c)
    }

    /// The logs' verifier keys, parsed strictly.
    pub fn log_keys(&self) -> Result<Vec<NoteKey>, String> {
        self.logs.iter().map(|l| NoteKey::parse(l.vkey.trim()).map_err(|e| format!("log key: {e}"))).collect()
    }

    /// The witness's signer. The key file must give others no access and its group no write:
    /// group read is allowed, since that is how Kubernetes hands a Secret to a non-root pod
    /// (its `fsGroup`, a group of that pod alone).
    pub fn signer(&self) -> Result<NoteSigner, String> {
        let path = &self.key_file;
        let err = |m: &str| format!("{}: {m}", path.display());
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| err(&e.to_string()))?.permissions().mode();
            if mode & 0o027 != 0 {
                return Err(err(&format!(
                    "mode {:o}: the key must not be accessible to others nor writable by its group (chmod 600)",
                    mode & 0o777
                )));
            }
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(&e.to_string()))?);
        let seed = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| err("not 64 hex digits"))?);
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| err("not 64 hex digits"))?;
        NoteSigner::from_seed(&self.name, KeyKind::Cosignature, seed).map_err(|e| err(&e.to_string()))
    }
}
