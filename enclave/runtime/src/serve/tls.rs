//! The server's TLS: TLS 1.3 only, no session tickets (every connection is attested afresh),
//! and a certificate that changes with the enclave's state: an unattested self-signed one while
//! the enclave starts or has failed (its health endpoint must be reachable, and no client
//! policy accepts it), the attested certificate once the model is loaded, and each renewal of
//! it after that.
//!
//! What new connections are offered is one [`Presented`] value, swapped whole. Each connection
//! takes the current one before its handshake and keeps it: the certificate it was shown is
//! the one its fresh attestations bind, even after a renewal swapped in another.

use std::sync::Arc;

use nacre_atls::AttestedCert;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

/// A TLS configuration and the attested certificate it presents (none before serving).
#[derive(Debug)]
pub struct Presented {
    pub tls: Arc<rustls::ServerConfig>,
    pub attested: Option<Arc<AttestedCert>>,
}

impl Presented {
    /// A self-signed certificate without evidence, for the health-only phases.
    pub fn unattested(names: &[String]) -> Result<Self, String> {
        Ok(Presented { tls: Arc::new(server_config(unattested(names)?)?), attested: None })
    }

    pub fn attested(cert: Arc<AttestedCert>) -> Result<Self, String> {
        Ok(Presented { tls: Arc::new(server_config(cert.certified_key())?), attested: Some(cert) })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn unattested(names: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let key = provider().key_provider.load_private_key(der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![generated.cert.der().clone()], key)))
}

fn server_config(key: Arc<CertifiedKey>) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.send_tls13_tickets = 0;
    config.alpn_protocols = nacre_http::server::ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
