//! TLS material for our HTTPS servers: loading a certificate chain and key, and issuing a
//! private CA with one server certificate for the `init` commands (the attestation service,
//! the witness), so that a fresh directory serves HTTPS with nothing to install.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// Loads a PEM certificate chain and its PEM key into a rustls server configuration (aws-lc-rs,
/// safe default versions, HTTP/1.1 ALPN).
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert_pem.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| format!("{}: {e}", key_pem.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A private CA and one server certificate it issued, as PEM.
#[derive(Debug)]
pub struct LocalTls {
    /// The CA certificate clients pin.
    pub ca_pem: String,
    /// The server certificate followed by the CA's.
    pub chain_pem: String,
    /// The server's private key (write it 0600).
    pub key_pem: String,
}

/// Issues a private CA named `ca_name` and a server certificate `leaf_name` for `localhost`,
/// `listen`'s address and `extra_names` (IP addresses as IP SANs, anything else as DNS names).
pub fn issue_local(
    ca_name: &str,
    leaf_name: &str,
    listen: SocketAddr,
    extra_names: &[String],
) -> Result<LocalTls, String> {
    let err = |e: rcgen::Error| format!("certificate: {e}");
    let mut names = vec!["localhost".to_owned()];
    for n in extra_names {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b)) {
            return Err(format!("certificate name {n:?}: an IP address or a DNS name"));
        }
        if !names.contains(n) && n.parse::<std::net::IpAddr>().ok() != Some(listen.ip()) {
            names.push(n.clone());
        }
    }

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let tls_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    // rcgen makes each name that parses as an IP address an IP SAN, the rest DNS names.
    let mut leaf = CertificateParams::new(names).map_err(err)?;
    leaf.distinguished_name.push(DnType::CommonName, leaf_name);
    leaf.subject_alt_names.push(SanType::IpAddress(listen.ip()));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // The CA's key identifier in the leaf: strict verifiers (Python 3.13's default context,
    // OpenSSL's X509_V_FLAG_X509_STRICT) refuse a CA-issued certificate without it.
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&tls_key, &issuer).map_err(err)?;
    Ok(LocalTls {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key_pem: tls_key.serialize_pem(),
    })
}

/// Creates `path` with `data` (mode 0600 when `secret`), synced; never overwrites a file.
pub fn write_new(path: &Path, data: &[u8], secret: bool) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}
