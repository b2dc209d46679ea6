//! `nacre attestation init DIR`: a complete, working service directory — a private CA and the
//! service's TLS certificate (for `localhost`, the listen address and any extra names, such as
//! the address guests reach the service at through the host agent's relay), a master key, the
//! result-signing key, an admin and an auditor token, and `config.toml`. Secret files are
//! created 0600 and never overwritten.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nacre_protocol::result::ResultSigner;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

use crate::master::MasterKey;
use crate::tokens;

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub config: PathBuf,
    /// The CA certificate guests and clients pin.
    pub ca_cert: PathBuf,
    pub admin_token: PathBuf,
    pub auditor_token: PathBuf,
}

fn write_new(path: &Path, data: &[u8], secret: bool) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the service directory `dir` (which must not contain a config yet). `extra_names`
/// are added to the TLS certificate's subject alternative names: IP addresses as IP SANs,
/// anything else as DNS names.
pub fn init(
    dir: &Path,
    listen: SocketAddr,
    extra_names: &[String],
    database: Option<&str>,
    sim_root: Option<&Path>,
) -> Result<Initialized, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let err = |e: rcgen::Error| format!("certificate: {e}");

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name.push(DnType::CommonName, "Nacre attestation service CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let tls_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut names = vec!["localhost".to_owned()];
    for n in extra_names {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b)) {
            return Err(format!("certificate name {n:?}: an IP address or a DNS name"));
        }
        if !names.contains(n) && n.parse::<std::net::IpAddr>().ok() != Some(listen.ip()) {
            names.push(n.clone());
        }
    }
    // rcgen makes each name that parses as an IP address an IP SAN, the rest DNS names.
    let mut leaf = CertificateParams::new(names).map_err(err)?;
    leaf.distinguished_name.push(DnType::CommonName, "nacre-attestation");
    leaf.subject_alt_names.push(SanType::IpAddress(listen.ip()));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // The CA's key identifier in the leaf: strict verifiers (Python 3.13's default context,
    // OpenSSL's X509_V_FLAG_X509_STRICT) refuse a CA-issued certificate without it.
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&tls_key, &issuer).map_err(err)?;

    let master = MasterKey::generate_hex().map_err(|e| e.to_string())?;
    let result_key = ResultSigner::generate_pkcs8().map_err(|e| e.to_string())?;
    let mut log_seed = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut *log_seed).map_err(|_| "random number generator failed".to_owned())?;
    // The origin names this log uniquely (witnesses track logs by origin): its key's prefix.
    let log_public = nacre_tlog::NoteSigner::from_seed("nacre", nacre_tlog::KeyKind::Checkpoint, &log_seed)
        .map_err(|e| e.to_string())?;
    let log_origin = format!(
        "nacre.local/release-log/{}",
        &hex::encode(log_public.public().verifying_key().as_bytes())[..16]
    );
    let (admin, admin_hash) = tokens::generate()?;
    let (auditor, auditor_hash) = tokens::generate()?;

    let config = dir.join("config.toml");
    if config.exists() {
        return Err(format!("{} exists; refusing to overwrite a service directory", config.display()));
    }
    write_new(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
    write_new(&dir.join("tls.pem"), format!("{}{}", leaf_cert.pem(), ca_cert.pem()).as_bytes(), false)?;
    write_new(&dir.join("tls.key"), tls_key.serialize_pem().as_bytes(), true)?;
    write_new(&dir.join("master.key"), format!("{}\n", *master).as_bytes(), true)?;
    write_new(&dir.join("result.key"), &result_key, true)?;
    write_new(&dir.join("log.key"), format!("{}\n", hex::encode(*log_seed)).as_bytes(), true)?;
    write_new(&dir.join("admin.token"), format!("{admin}\n").as_bytes(), true)?;
    write_new(&dir.join("auditor.token"), format!("{auditor}\n").as_bytes(), true)?;
    let sim = match sim_root {
        Some(p) => format!(
            "# INSECURE: accepts simulated-TEE evidence. Development only.\ninsecure_sim_root = {:?}\n",
            p.display().to_string()
        ),
        None => String::new(),
    };
    let text = format!(
        "# Nacre attestation service (generated by `nacre attestation init`).\n\
         # Relative paths are relative to this file.\n\
         listen = \"{listen}\"\n\
         database = {database:?}\n\
         tls_cert = \"tls.pem\"\n\
         tls_key = \"tls.key\"\n\
         master_key_file = \"master.key\"\n\
         result_signing_key = \"result.key\"\n\
         log_signing_key = \"log.key\"\n\
         log_origin = \"{log_origin}\"\n\
         {sim}\n\
         [limits]\n\
         challenge_ttl_secs = 60\n\
         denial_burst = 10\n\
         denials_per_minute = 30\n\n\
         [[tokens]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{admin_hash}\"\n\n\
         [[tokens]]\nname = \"auditor\"\nrole = \"auditor\"\nsha256 = \"{auditor_hash}\"\n",
        database = database.unwrap_or("sqlite://attestation.db"),
    );
    write_new(&config, text.as_bytes(), false)?;
    Ok(Initialized {
        config,
        ca_cert: dir.join("ca.pem"),
        admin_token: dir.join("admin.token"),
        auditor_token: dir.join("auditor.token"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nacre-setup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The certificate verifies, under the generated CA, for exactly the listen address,
    /// `localhost` and the extra names (the sim guests' relay address among them).
    #[test]
    fn extra_names_are_in_the_tls_certificate() {
        let dir = scratch("san");
        let extra = ["10.0.2.100".to_owned(), "attest.internal".to_owned()];
        init(&dir, "127.0.0.1:8443".parse().unwrap(), &extra, None, None).unwrap();
        let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
        let chain: Vec<CertificateDer<'_>> =
            CertificateDer::pem_file_iter(dir.join("tls.pem")).unwrap().collect::<Result<_, _>>().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let verify = |name: &str| {
            let name = ServerName::try_from(name.to_owned()).unwrap();
            verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).is_ok()
        };
        for ok in ["127.0.0.1", "localhost", "10.0.2.100", "attest.internal"] {
            assert!(verify(ok), "{ok} should be in the certificate");
        }
        for not in ["10.0.2.101", "example.com"] {
            assert!(!verify(not), "{not} should not be in the certificate");
        }
        // authorityKeyIdentifier (2.5.29.35) in the leaf, as strict verifiers require.
        let aki_oid = [0x06, 0x03, 0x55, 0x1d, 0x23];
        assert!(chain[0].windows(5).any(|w| w == aki_oid), "the leaf has no authority key identifier");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn malformed_names_are_refused_before_anything_is_written() {
        let dir = scratch("bad-san");
        let e = init(&dir, "127.0.0.1:8443".parse().unwrap(), &["a b".into()], None, None).unwrap_err();
        assert!(e.contains("\"a b\""), "{e}");
        assert!(!dir.join("config.toml").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
