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
    /// Instead of `database`: the name of an environment variable holding the URL, so that a
    /// database password can come from a secret store (a Kubernetes Secret's `secretKeyRef`)
    /// rather than sit in this file.
    #[serde(default)]
    pub database_env: Option<String>,
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
    /// A TOML file of further `[[tokens]]`, added to those above: a secret mounted as a file,
    /// so that tokens rotate without this file changing.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

/// The contents of `tokens_file`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
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
        let parse = |path: &Path, e: toml::de::Error| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| parse(path, e))?;
        if let Some(var) = &config.database_env {
            // Both set would leave one silently ignored.
            let table: toml::Table = toml::from_str(&text).map_err(|e| parse(path, e))?;
            if table.contains_key("database") {
                return Err(ConfigError::Invalid("set one of database and database_env".into()));
            }
            config.database = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("database_env: environment variable {var} is not set"))
            })?;
        }
        config.resolve(path.parent().unwrap_or(Path::new(".")));
        if let Some(file) = &config.tokens_file {
            let text = std::fs::read_to_string(file)
                .map_err(|source| ConfigError::Read { path: file.clone(), source })?;
            let extra: TokensFile = toml::from_str(&text).map_err(|e| parse(file, e))?;
            config.tokens.extend(extra.tokens);
        }
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
        for p in [
            &mut self.master_key_file,
            &mut self.collateral_dir,
            &mut self.insecure_sim_root,
            &mut self.tokens_file,
        ]
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

    /// Why the database connection is not authenticated, if it is not: a PostgreSQL server
    /// off this host reached without `sslmode=verify-full` (or `verify-ca`), whose traffic
    /// (the audit log, wrapped data keys, the password) anyone on the path could read or
    /// alter. sqlx's default, `prefer`, falls back to plaintext and verifies nothing.
    pub fn database_transport_risk(&self) -> Option<String> {
        let rest = self.database.strip_prefix("postgres://")?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a.split('/').next().unwrap_or_default(), q),
            None => (rest.split('/').next().unwrap_or_default(), ""),
        };
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.split(':').next().unwrap_or_default(),
        };
        let query_host = query.split('&').find_map(|kv| kv.strip_prefix("host="));
        let local = |h: &str| {
            h.is_empty()
                || h == "localhost"
                || h.starts_with('/')
                || h.starts_with("%2F")
                || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        };
        if local(host) && query_host.is_none_or(local) {
            return None;
        }
        let mode = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("sslmode=").or_else(|| kv.strip_prefix("ssl-mode=")))
            .unwrap_or("prefer");
        if mode.eq_ignore_ascii_case("verify-full") || mode.eq_ignore_ascii_case("verify-ca") {
            return None;
        }
        Some(format!(
            "the database at {host} is reached with sslmode={mode}: its certificate is not verified \
             (use sslmode=verify-full with sslrootcert=…)"
        ))
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

    /// Loads `text` (plus the required keys) from a config file in a scratch directory that
    /// also holds `files`.
    fn load(text: &str, files: &[(&str, &str)]) -> Result<Config, ConfigError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nacre-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!("tls_cert = \"c\"\ntls_key = \"k\"\nresult_signing_key = \"r\"\nlog_signing_key = \"l\"\nmaster_key_file = \"m\"\n{text}"),
        )
        .unwrap();
        let r = Config::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    /// The database URL from the environment (no test may set one: the process's environment
    /// is shared, so PATH stands in for a variable that is set).
    #[test]
    fn database_env_is_read_and_exclusive() {
        let e = load("database_env = \"NACRE_TEST_NO_SUCH_VARIABLE\"", &[]).unwrap_err();
        assert!(e.to_string().contains("environment variable NACRE_TEST_NO_SUCH_VARIABLE is not set"), "{e}");
        let e = load("database_env = \"PATH\"", &[]).unwrap_err();
        assert!(e.to_string().contains("database must be sqlite://PATH or postgres://"), "{e}");
        let e = load("database = \"sqlite://x.db\"\ndatabase_env = \"PATH\"", &[]).unwrap_err();
        assert!(e.to_string().contains("set one of database and database_env"), "{e}");
    }

    #[test]
    fn tokens_file_adds_tokens_and_is_parsed_strictly() {
        let entry = |name: &str, role: &str| {
            format!("[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n", "ab".repeat(32))
        };
        let config = load(
            &format!("tokens_file = \"more.toml\"\n{}", entry("inline", "admin")),
            &[("more.toml", &(entry("ops", "auditor") + &entry("scraper", "metrics")))],
        )
        .unwrap();
        let names: Vec<_> = config.tokens.iter().map(|t| (t.name.as_str(), t.role)).collect();
        assert_eq!(
            names,
            [
                ("inline", crate::tokens::Role::Admin),
                ("ops", crate::tokens::Role::Auditor),
                ("scraper", crate::tokens::Role::Metrics)
            ]
        );
        let e = load(
            "tokens_file = \"more.toml\"",
            &[("more.toml", "[[tokens]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"\"\n")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("more.toml"), "{e}");
        let e = load("tokens_file = \"missing.toml\"", &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }

    #[test]
    fn an_unverified_remote_database_is_named() {
        let risk = |url: &str| parse(&format!("database = {url:?}")).unwrap().database_transport_risk();
        for url in [
            "sqlite://x.db",
            "postgres://nacre:pw@127.0.0.1:5432/nacre",
            "postgres://nacre@localhost/nacre",
            "postgres://nacre@[::1]:5432/nacre?sslmode=disable",
            "postgres://nacre@db.example/nacre?sslmode=verify-full&sslrootcert=/nacre/db-ca/ca.crt",
            "postgres://nacre@10.0.0.5/nacre?application_name=x&sslmode=verify-ca",
        ] {
            assert_eq!(risk(url), None, "{url}");
        }
        for (url, mode) in [
            ("postgres://nacre:pw@db.example:5432/nacre", "prefer"),
            ("postgres://nacre@10.0.0.5/nacre?sslmode=require", "require"),
            ("postgres://nacre@[2001:db8::1]:5432/nacre?sslmode=disable", "disable"),
            ("postgres://nacre@localhost/nacre?host=db.example", "prefer"),
        ] {
            let r = risk(url).unwrap_or_else(|| panic!("{url}: no risk named"));
            assert!(r.contains(&format!("sslmode={mode}")) && !r.contains("pw"), "{url}: {r}");
        }
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
