//! The enclave's configuration. It comes only from measured sources: `/etc/nacre/enclave.toml`
//! in the initrd (covered by the launch measurement) and `nacre.*` words of the kernel command
//! line (also measured). Nothing the host can change after launch (disks, network, fw_cfg
//! outside the measured blobs) is read as configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub const CONFIG_PATH: &str = "/etc/nacre/enclave.toml";
const MAX_CONFIG: usize = 64 * 1024;

/// Which attester produces evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    Sim,
    Snp,
    Tdx,
}

fn listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn sealed_device() -> PathBuf {
    PathBuf::from("/dev/vda")
}
fn max_model() -> u64 {
    8 << 30
}
fn max_request() -> usize {
    16 << 20
}
fn rate() -> u32 {
    50
}
fn burst() -> u32 {
    100
}
fn max_connections() -> usize {
    256
}
fn connections_per_source() -> usize {
    64
}
fn max_buffered() -> usize {
    64 << 20
}
fn request_timeout() -> u64 {
    30
}
fn idle_timeout() -> u64 {
    30
}
fn sans() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn certificate_lifetime() -> u64 {
    24 * 3600
}
/// Bounds of `certificate_lifetime_secs`: long enough for renewal at half-life to retry with
/// backoff (up to 5 min between attempts) several times, short enough that evidence is renewed
/// at least every two weeks.
const CERTIFICATE_LIFETIME: std::ops::RangeInclusive<u64> = 3600..=30 * 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    /// `https://HOST:PORT` of the attestation service as the guest reaches it.
    pub service_url: String,
    /// The service's CA (PEM) that the guest pins.
    pub service_ca: PathBuf,
    pub tee: TeeKind,
    /// The key the sealed model is sealed under, and the model this image is built to serve:
    /// the sealed header must name the same key, model and identity, or the enclave refuses.
    pub key_id: String,
    pub model_name: String,
    /// Hex model identity (docs/sealed-format.md; the sealed header's, which opening recomputes
    /// from the plaintext; for a version-1 sealed model, its SHA-256).
    pub model_identity: String,
    #[serde(default = "listen")]
    pub listen: SocketAddr,
    #[serde(default = "sealed_device")]
    pub sealed_device: PathBuf,
    #[serde(default = "max_model")]
    pub max_model_bytes: u64,
    /// `sim` only, for running the serving stack as a host process (benchmarks, tests): the
    /// host's simulated secure processor as a Unix socket instead of the guest's virtio port.
    #[serde(default)]
    pub sim_socket: Option<PathBuf>,
    /// Optional bearer token for inference: hex SHA-256 of the token (the token itself is
    /// never in the image).
    #[serde(default)]
    pub inference_token_sha256: Option<String>,
    /// Bearer tokens of several clients (hex SHA-256 each), with `inference_token_sha256` the
    /// set that inference accepts. Each token is one client identity: the guard's budgets and
    /// extraction detector are kept per token.
    #[serde(default)]
    pub inference_tokens_sha256: Vec<String>,
    /// Bearer tokens (hex SHA-256 each) that may read the private monitor's released windows
    /// (`GET /v1/monitoring`): a role apart from inference. None: nobody reads them.
    #[serde(default)]
    pub monitoring_tokens_sha256: Vec<String>,
    /// Largest request body, bytes.
    #[serde(default = "max_request")]
    pub max_request_bytes: usize,
    /// Per-client request rate (inference and fresh attestation): sustained per second, burst.
    #[serde(default = "rate")]
    pub rate_per_second: u32,
    #[serde(default = "burst")]
    pub rate_burst: u32,
    /// Open connections at most; when full, a new connection displaces the one stalled longest
    /// (idle, or still sending its request), so a handshake always finds a slot.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Open connections per source address (IPv6: per /64) at most; a source's new connection
    /// displaces its own stalled one. Behind the host's NAT every client is one source.
    #[serde(default = "connections_per_source")]
    pub connections_per_source: usize,
    /// Bytes of decoded request tensors held at once across all requests (the bound on request
    /// memory; a request that would pass it is refused with 503).
    #[serde(default = "max_buffered")]
    pub max_buffered_bytes: usize,
    /// Deadline of one request once its headers are in: body, queueing and the handler, seconds.
    #[serde(default = "request_timeout")]
    pub request_timeout_secs: u64,
    /// How long a connection may sit idle between requests (or in its headers), seconds.
    #[serde(default = "idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Accept NaN and ±infinity in inputs (refused by default).
    #[serde(default)]
    pub allow_non_finite: bool,
    /// Names in the attested certificate (clients do not rely on them).
    #[serde(default = "sans")]
    pub subject_alt_names: Vec<String>,
    /// How long each attested certificate is valid, seconds (default 24 h). The enclave makes
    /// a new one (new key, fresh evidence) at half-life, retrying with backoff on failure.
    #[serde(default = "certificate_lifetime")]
    pub certificate_lifetime_secs: u64,
    /// Dynamic batching (Triton's `dynamic_batching`), for a model whose inputs and outputs
    /// share a dynamic first dimension: concurrent requests are stacked along it and run as
    /// one. Absent: every request runs alone.
    #[serde(default)]
    pub batching: Option<Batching>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Rows of one merged run at most (2–4096).
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others, microseconds (1–100,000).
    pub max_queue_delay_us: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl EnclaveConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG {
            return Err(ConfigError("larger than 64 KiB".into()));
        }
        let c: EnclaveConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if !self.service_url.starts_with("https://") {
            return bad(format!("service_url {:?} is not https://", self.service_url));
        }
        if self.key_id.is_empty() || self.key_id.len() > 128 {
            return bad("key_id: 1–128 bytes".into());
        }
        if self.model_identity.len() != 64 || !self.model_identity.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("model_identity: 64 hex digits".into());
        }
        for t in self.inference_token_sha256.iter().chain(&self.inference_tokens_sha256) {
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("inference_token_sha256, inference_tokens_sha256: 64 hex digits each".into());
            }
        }
        for t in &self.monitoring_tokens_sha256 {
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("monitoring_tokens_sha256: 64 hex digits each".into());
            }
            // One token in both roles would let an inference client read the monitor.
            if self.inference_tokens_sha256().iter().any(|i| hex::encode(i).eq_ignore_ascii_case(t)) {
                return bad("monitoring_tokens_sha256: a token is also an inference token".into());
            }
        }
        if self.sim_socket.is_some() && self.tee != TeeKind::Sim {
            return bad("sim_socket is for tee = \"sim\" only".into());
        }
        if self.rate_per_second == 0 || self.rate_burst == 0 {
            return bad("rate_per_second and rate_burst must be positive".into());
        }
        if self.max_connections == 0
            || self.connections_per_source == 0
            || self.connections_per_source > self.max_connections
        {
            return bad("max_connections and connections_per_source: positive, per source ≤ total".into());
        }
        if self.max_buffered_bytes < self.max_request_bytes.min(1 << 20) {
            return bad("max_buffered_bytes: at least max_request_bytes or 1 MiB".into());
        }
        if !(1..=600).contains(&self.request_timeout_secs) || !(1..=600).contains(&self.idle_timeout_secs) {
            return bad("request_timeout_secs and idle_timeout_secs: 1–600".into());
        }
        if let Some(b) = &self.batching
            && (!(2..=4096).contains(&b.max_batch_size) || !(1..=100_000).contains(&b.max_queue_delay_us))
        {
            return bad("batching: max_batch_size 2–4096, max_queue_delay_us 1–100000".into());
        }
        if !CERTIFICATE_LIFETIME.contains(&self.certificate_lifetime_secs) {
            return bad(format!(
                "certificate_lifetime_secs: {}–{} seconds",
                CERTIFICATE_LIFETIME.start(),
                CERTIFICATE_LIFETIME.end()
            ));
        }
        Ok(())
    }

    /// The monitoring tokens' SHA-256 digests (checked hex), sorted, without repeats.
    pub fn monitoring_tokens_sha256(&self) -> Vec<[u8; 32]> {
        let mut tokens: Vec<[u8; 32]> = self
            .monitoring_tokens_sha256
            .iter()
            .filter_map(|t| {
                let mut d = [0u8; 32];
                hex::decode_to_slice(t, &mut d).ok().map(|()| d)
            })
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    /// The accepted bearer tokens' SHA-256 digests (checked hex), without repeats; empty when
    /// inference is open.
    pub fn inference_tokens_sha256(&self) -> Vec<[u8; 32]> {
        let mut tokens: Vec<[u8; 32]> = self
            .inference_token_sha256
            .iter()
            .chain(&self.inference_tokens_sha256)
            .filter_map(|t| {
                let mut d = [0u8; 32];
                hex::decode_to_slice(t, &mut d).ok().map(|()| d)
            })
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    /// [`Self::certificate_lifetime_secs`] as a duration (checked to be in range).
    pub fn certificate_lifetime(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.certificate_lifetime_secs).unwrap_or(i64::MAX))
    }

    pub fn model_identity(&self) -> [u8; 32] {
        let mut d = [0u8; 32];
        let _ = hex::decode_to_slice(&self.model_identity, &mut d);
        d
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A valid configuration with every default.
    pub(crate) fn good() -> EnclaveConfig {
        EnclaveConfig::parse(GOOD).unwrap()
    }

    const GOOD: &str = r#"
service_url = "https://10.0.2.100:8443"
service_ca = "/etc/nacre/service-ca.pem"
tee = "sim"
key_id = "fraud-mlp"
model_name = "fraud-mlp"
model_identity = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

    #[test]
    fn parses_with_defaults_and_refuses_the_rest() {
        let c = EnclaveConfig::parse(GOOD).unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.sealed_device, PathBuf::from("/dev/vda"));
        assert_eq!(c.certificate_lifetime(), time::Duration::hours(24));
        assert!(EnclaveConfig::parse(&format!("{GOOD}\ncertificate_lifetime_secs = 60\n")).is_err());
        assert!(EnclaveConfig::parse(&format!("{GOOD}\nsurprise = 1\n")).is_err());
        assert!(EnclaveConfig::parse(&GOOD.replace("https://", "http://")).is_err());
        assert!(EnclaveConfig::parse(&GOOD.replace("\"sim\"", "\"sgx\"")).is_err());
        assert!(EnclaveConfig::parse(&GOOD.replace(&"0".repeat(64), "00")).is_err());
        assert!(EnclaveConfig::parse(&format!("{GOOD}\ninference_token_sha256 = \"ab\"\n")).is_err());
        assert!(EnclaveConfig::parse(&format!("{GOOD}\nrate_burst = 0\n")).is_err());
        let snp = GOOD.replace("\"sim\"", "\"snp\"");
        assert!(EnclaveConfig::parse(&format!("{snp}\nsim_socket = \"/tmp/sp.sock\"\n")).is_err());
    }
}
