//! The service's TOML configuration. Unknown keys are refused; every default is documented
//! here and in the README. Relative paths are resolved against the configuration file's
//! directory, so a config directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tokens::TokenEntry;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where HTTPS is served. Default `127.0.0.1:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://PATH` (created if missing) or `postgres://…`. Default `sqlite://attestation.db`.
    #[serde(default = "default_database")]
    pub database: String,
    /// PEM certificate chain of the service (leaf first) and its PKCS#8 key.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The master key that envelope-encrypts data keys at rest: a file holding 64 hex digits,
    /// or the name of an environment variable holding them. Exactly one of the two.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    #[serde(default)]
    pub master_key_env: Option<String>,
    /// Master keys that may still wrap some data keys during a rotation (see
    /// `nacre attestation rewrap`); read, never written.
    #[serde(default)]
    pub previous_master_key_files: Vec<PathBuf>,
    /// PKCS#8 Ed25519 key that signs attestation results.
    pub result_signing_key: PathBuf,
    /// The transparency log's checkpoint key: a file holding a 32-byte seed as 64 hex digits
    /// (`nacre attestation init` writes `log.key`). Every replica of one log holds the same.
    pub log_signing_key: PathBuf,
    /// The log's origin: the first line of its checkpoints and its key's name, which witnesses
    /// and clients are configured with. Default `nacre.invalid/release-log`.
    #[serde(default = "default_log_origin")]
    pub log_origin: String,
    /// Endorsement cache (`nacre_verifier::collateral::FileCache` layout): SNP CRLs and
    /// certificates for evidence that arrives without them, TDX collateral by FMSPC.
    #[serde(default)]
    pub collateral_dir: Option<PathBuf>,
    /// INSECURE: accept simulated-TEE evidence under this sim ARK (PEM or DER). Logged as a
    /// warning at start; never set it in production.
    #[serde(default)]
    pub insecure_sim_root: Option<PathBuf>,
    /// Ed25519 public keys (64 hex digits each) of the image-signing keys whose reference
    /// values may be imported (`POST /v1/admin/reference-values`) and used by release policies.
    /// Default empty: no reference values can be imported.
    #[serde(default)]
    pub trusted_image_signers: Vec<String>,
    /// Witnesses this service pushes each new checkpoint to (C2SP tlog-witness), in the
    /// background: an outage delays cosignatures, never a release. Default none.
    #[serde(default)]
    pub witnesses: Vec<WitnessPeer>,
    #[serde(default)]
    pub limits: Limits,
    /// Bearer tokens of the admin API, stored as SHA-256 digests.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// A witness the log pushes to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessPeer {
    /// `https://HOST[:PORT]`; the witness answers at `/add-checkpoint`.
    pub url: String,
    /// The CA certificate (PEM) the witness's TLS certificate chains to.
    pub ca: PathBuf,
    /// The witness's cosignature verifier key (`vkey`): its answers are verified before they
    /// are stored.
    pub vkey: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Lifetime of a challenge nonce. Default 60 s.
    pub challenge_ttl_secs: i64,
    /// Lifetime stated in signed attestation results. Default 3600 s.
    pub result_ttl_secs: i64,
    /// Body limit of `/v1/challenge`. Default 1 KiB.
    pub challenge_body_max: usize,
    /// Body limit of `/v1/release`. Default 64 KiB (a TDX quote is ~5 KiB).
    pub release_body_max: usize,
    /// Body limit of the admin routes. Default 256 KiB: a key registration carries a model's
    /// signature bundle (up to 64 KiB) beside a policy that may pin signers' roots.
    pub admin_body_max: usize,
    /// Denials a caller may collect before it is refused outright. Default 10. A caller is
    /// an authenticated bearer token, else the chip of authentic SNP evidence for a refused
    /// release, else the source address (IPv6: its /64); see `ratelimit`.
    pub denial_burst: u32,
    /// How fast that allowance refills, per minute. Default 30.
    pub denials_per_minute: u32,
    /// Callers (sources, tokens, chips) whose denials are tracked at most. Default 65,536 (a
    /// few MB). When full, a new one replaces a caller whose allowance has refilled, else the
    /// least indebted of a few (constant time); past the cap, rotating callers gain resets of
    /// others' allowances, never a lockout of anyone.
    pub max_tracked_sources: usize,
    /// Concurrent connections. Default 1024. When full, a new connection displaces the one
    /// stalled longest (idle, or still sending its request) of the source holding the most.
    pub max_connections: usize,
    /// Concurrent connections per source address (IPv6: per /64). Default 64.
    pub connections_per_source: usize,
    /// Deadline of a request's body once its headers are in, seconds. Default 10.
    pub body_timeout_secs: u64,
    /// Deadline of each handler, seconds. Default 30.
    pub handler_timeout_secs: u64,
    /// How long a connection may wait for a request's headers (idle keep-alive included),
    /// seconds. Default 30.
    pub idle_timeout_secs: u64,
    /// Database connections. Default 8 (SQLite serialises writers anyway).
    pub db_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            challenge_ttl_secs: 60,
            result_ttl_secs: 3600,
            challenge_body_max: 1024,
            release_body_max: 64 * 1024,
            admin_body_max: 256 * 1024,
            denial_burst: 10,
            denials_per_minute: 30,
            max_tracked_sources: 65_536,
            max_connections: 1024,
            connections_per_source: 64,
            body_timeout_secs: 10,
            handler_timeout_secs: 30,
            idle_timeout_secs: 30,
            db_connections: 8,
        }
    }
}

fn default_log_origin() -> String {
    "nacre.invalid/release-log".to_owned()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_database() -> String {
    "sqlite://attestation.db".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.resolve(path.parent().unwrap_or(Path::new(".")));
        config.validate()?;
        Ok(config)
    }

    /// Makes relative paths (and a relative SQLite path) relative to `base`.
    pub fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls_cert);
        fix(&mut self.tls_key);
        fix(&mut self.result_signing_key);
        fix(&mut self.log_signing_key);
        for p in [&mut self.master_key_file, &mut self.collateral_dir, &mut self.insecure_sim_root]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        self.previous_master_key_files.iter_mut().for_each(fix);
        self.witnesses.iter_mut().for_each(|w| fix(&mut w.ca));
        if let Some(rest) = self.database.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            self.database = format!("sqlite://{}", base.join(rest).display());
        }
    }

    /// The trusted image signers as raw Ed25519 public keys.
    pub fn image_signers(&self) -> Result<Vec<[u8; 32]>, ConfigError> {
        self.trusted_image_signers
            .iter()
            .map(|k| {
                let mut pk = [0u8; 32];
                hex::decode_to_slice(k.trim(), &mut pk).map(|()| pk).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "trusted_image_signers: {k:?} is not an Ed25519 public key (64 hex digits)"
                    ))
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.master_key_file.is_some() == self.master_key_env.is_some() {
            return Err(ConfigError::Invalid("set exactly one of master_key_file and master_key_env".into()));
        }
        if !(self.database.starts_with("sqlite://") || self.database.starts_with("postgres://")) {
            return Err(ConfigError::Invalid(format!(
                "database must be sqlite://PATH or postgres://…, got {:?}",
                self.database.split(':').next().unwrap_or_default()
            )));
        }
        self.image_signers()?;
        let origin = &self.log_origin;
        if origin.is_empty() || origin.len() > 256 || origin.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(ConfigError::Invalid(format!(
                "log_origin {origin:?}: 1–256 characters, no spaces or '+' (it names the log's key)"
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for w in &self.witnesses {
            let key = nacre_tlog::NoteKey::parse(w.vkey.trim())
                .map_err(|e| ConfigError::Invalid(format!("witnesses: {}: {e}", w.url)))?;
            if key.kind() != nacre_tlog::KeyKind::Cosignature {
                return Err(ConfigError::Invalid(format!("witnesses: {}: not a cosignature key", w.url)));
            }
            if !names.insert(key.name().to_owned()) {
                return Err(ConfigError::Invalid(format!("witnesses: {} is listed twice", key.name())));
            }
        }
        let l = &self.limits;
        if l.challenge_ttl_secs <= 0
            || l.result_ttl_secs <= 0
            || l.denials_per_minute == 0
            || l.max_tracked_sources == 0
        {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        if l.max_connections == 0
            || l.connections_per_source == 0
            || l.connections_per_source > l.max_connections
        {
            return Err(ConfigError::Invalid(
                "max_connections and connections_per_source: positive, per source ≤ total".into(),
            ));
        }
        let deadlines = [l.body_timeout_secs, l.handler_timeout_secs, l.idle_timeout_secs];
        if deadlines.iter().any(|d| !(1..=600).contains(d)) {
            return Err(ConfigError::Invalid(
                "body_timeout_secs, handler_timeout_secs, idle_timeout_secs: 1–600".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "tls_cert = \"c\"\ntls_key = \"k\"\nresult_signing_key = \"r\"\nlog_signing_key = \"l\"\nmaster_key_file = \"m\"\n{extra}"
        );
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn trusted_image_signers_default_empty_and_are_checked() {
        assert!(parse("").unwrap().image_signers().unwrap().is_empty());
        let pk = "ab".repeat(32);
        assert_eq!(
            parse(&format!("trusted_image_signers = [\"{pk}\"]")).unwrap().image_signers().unwrap(),
            [[0xab; 32]]
        );
        for bad in ["\"ab\"", "\"zz\"", &format!("\"{pk}00\"")] {
            let e = parse(&format!("trusted_image_signers = [{bad}]")).unwrap_err();
            assert!(e.to_string().contains("trusted_image_signers"), "{e}");
        }
    }
}
