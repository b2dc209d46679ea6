//! The attestation service's client: HTTPS (rustls, the service CA pinned as the only root),
//! CBOR bodies, one kept-alive connection per client.
//!
//! - The guest: [`Client::fetch_key`] runs challenge → evidence (from a provider callback,
//!   with the `nacre/v1/key-release` binding as REPORT_DATA) → release → HPKE unwrap into a
//!   zeroize-on-drop key, and checks the signed attestation result.
//! - The model owner: the admin calls ([`Client::create_key`] and friends) with a bearer token.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use nacre_protocol::messages::{
    AuditRecord, CONTENT_TYPE, Challenge, ChallengeRequest, KeyCreate, KeyInfo, KeyRevoke, KeyRollback,
    KeyRotate, PolicySet, ReferenceImport, ReferenceInfo, ReleaseRequest, ReleaseResponse, ResultKey, path,
};
pub use nacre_protocol::model::ModelRegistration;
use nacre_protocol::result::{AttestationResult, SUBMOD};
use nacre_protocol::wrap::RecipientKey;
use nacre_protocol::{ErrorBody, cbor};
use nacre_wire::Evidence;
use nacre_wire::binding::{KeyReleaseBinding, ReportData};
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Largest response body accepted (an audit page of 1000 records is ~400 KiB).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("service URL {0:?}: expected https://HOST[:PORT]")]
    Url(String),
    #[error("CA certificate: {0}")]
    Ca(String),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("request timed out")]
    Timeout,
    /// The service refused, with its typed reason.
    #[error("service refused: {0}")]
    Refused(ErrorBody),
    #[error("unexpected response: {0}")]
    Protocol(String),
    #[error("evidence provider: {0}")]
    Evidence(String),
    #[error("unwrapping the released key: {0}")]
    Unwrap(String),
}

/// A released data key and the service's signed verdict.
pub struct ReleasedKey {
    pub data_key: Zeroizing<[u8; 32]>,
    pub key_version: u32,
    /// COSE_Sign1 attestation result, to show to clients.
    pub attestation_result: Vec<u8>,
    pub result: AttestationResult,
    /// SHA-256 of the HPKE public key sent with the request: the enclave binds it into its
    /// attested TLS, and the service's log records it, so a client can tie the two.
    pub release_key_digest: [u8; 32],
    /// The release's leaf in the service's transparency log and its proof, as the service sent
    /// it (checked by whoever requires the log: the enclave serves it, clients verify it).
    pub log: Option<nacre_protocol::messages::ReleaseLog>,
}

impl core::fmt::Debug for ReleasedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReleasedKey")
            .field("key_version", &self.key_version)
            .field("data_key", &"<redacted>")
            .finish()
    }
}

pub struct Client {
    host: String,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    token: Option<String>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Client(https://{}:{})", self.host, self.port)
    }
}

fn parse_url(url: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Url(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') || rest.is_empty() {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().map_err(|_| bad())?),
        _ => (rest, 443),
    };
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

impl Client {
    /// A client of the service at `url` (`https://HOST[:PORT]`) that trusts only `ca_pem`.
    pub fn new(url: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        let (host, port) = parse_url(url)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.map_err(|e| ClientError::Ca(e.to_string()))?)
                .map_err(|e| ClientError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Ca("no certificate in the CA file".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(url.to_owned()))?;
        Ok(Client {
            host,
            port,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            conn: tokio::sync::Mutex::new(None),
            token: None,
        })
    }

    /// Sends `token` as the bearer token of admin calls.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let addr = format!("{}:{}", self.host, self.port);
        let cerr = |m: String| ClientError::Connect { addr: addr.clone(), message: m };
        let tcp =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| cerr(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls =
            self.connector.connect(self.server_name.clone(), tcp).await.map_err(|e| cerr(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| cerr(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "attestation service connection closed");
            }
        });
        Ok(sender)
    }

    /// Sends one request on the kept-alive connection (reconnecting when it was closed), with
    /// the bearer token if any, and reads a bounded response, all within [`TIMEOUT`].
    async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut builder = Request::builder().method(method).uri(uri).header(header::HOST, &self.host);
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request =
            builder.body(Full::new(Bytes::from(bytes))).map_err(|e| ClientError::Http(e.to_string()))?;
        let exchange = async {
            let mut guard = self.conn.lock().await;
            let reuse = guard.as_mut().is_some_and(|s| !s.is_closed());
            if !reuse {
                *guard = Some(self.connect().await?);
            }
            let sender = guard.as_mut().ok_or_else(|| ClientError::Http("no connection".into()))?;
            sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(|e| {
                *guard = None;
                ClientError::Http(e.to_string())
            })?;
            drop(guard);
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| ClientError::Timeout)?
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let bytes = match body {
            Some(b) => cbor::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let (status, body) = self.send(method, uri, body.is_some().then_some(CONTENT_TYPE), bytes).await?;
        if status.is_success() {
            cbor::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            match cbor::from_slice::<ErrorBody>(&body) {
                Ok(e) => Err(ClientError::Refused(e)),
                Err(_) => Err(ClientError::Protocol(format!("HTTP {status} without an error body"))),
            }
        }
    }

    pub async fn challenge(&self, key_id: &str) -> Result<Challenge, ClientError> {
        self.call(Method::POST, path::CHALLENGE, Some(&ChallengeRequest { key_id: key_id.into() })).await
    }

    pub async fn release(&self, request: &ReleaseRequest) -> Result<ReleaseResponse, ClientError> {
        self.call(Method::POST, path::RELEASE, Some(request)).await
    }

    /// The service's result-signing key, as served. Pin it from configuration where possible.
    pub async fn result_key(&self) -> Result<Vec<u8>, ClientError> {
        let k: ResultKey = self.call::<(), _>(Method::GET, path::RESULT_KEY, None).await?;
        Ok(k.ed25519.into_vec())
    }

    /// Fetches the data key of (`key_id`, `key_version`): challenge, evidence from `attest`
    /// (given the 64 bytes to bind as REPORT_DATA), release, unwrap. `result_key` is the
    /// service's result-signing public key; the signed result must name this key and nonce.
    pub async fn fetch_key<F, Fut>(
        &self,
        key_id: &str,
        key_version: u32,
        result_key: &[u8],
        attest: F,
    ) -> Result<ReleasedKey, ClientError>
    where
        F: FnOnce(ReportData) -> Fut,
        Fut: Future<Output = Result<Evidence, String>>,
    {
        let challenge = self.challenge(key_id).await?;
        let recipient = RecipientKey::generate();
        let report_data =
            KeyReleaseBinding { nonce: &challenge.nonce, hpke_public_key: recipient.public_key(), key_id }
                .report_data()
                .map_err(|e| ClientError::Evidence(e.to_string()))?;
        let evidence = attest(report_data).await.map_err(ClientError::Evidence)?;
        let response = self
            .release(&ReleaseRequest {
                key_id: key_id.into(),
                key_version,
                nonce: challenge.nonce.clone(),
                hpke_public_key: ByteBuf::from(recipient.public_key().to_vec()),
                evidence,
            })
            .await?;
        if response.key_id != key_id || response.key_version != key_version {
            return Err(ClientError::Protocol("the response names another key".into()));
        }
        let result = nacre_protocol::result::verify(&response.attestation_result, result_key)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let guest =
            result.submods.get(SUBMOD).ok_or_else(|| ClientError::Protocol("result without guest".into()))?;
        if result.eat_nonce.as_slice() != challenge.nonce.as_slice()
            || guest.key_id != key_id
            || guest.key_version != key_version
            || guest.report_data.as_slice() != report_data.as_slice()
        {
            return Err(ClientError::Protocol("the attestation result is for another request".into()));
        }
        let data_key = recipient
            .unwrap(&response.encapsulated_key, &response.wrapped_key, key_id, key_version, &challenge.nonce)
            .map_err(|e| ClientError::Unwrap(e.to_string()))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, recipient.public_key());
        let mut release_key_digest = [0u8; 32];
        release_key_digest.copy_from_slice(digest.as_ref());
        Ok(ReleasedKey {
            data_key,
            key_version,
            attestation_result: response.attestation_result.into_vec(),
            result,
            release_key_digest,
            log: response.log,
        })
    }

    // ---- admin ------------------------------------------------------------------------------

    /// Registers `key_id` at version 1 under `policy`, for no particular model (refused by a
    /// policy that names signers: use [`Client::create_key_for_model`]).
    pub async fn create_key(
        &self,
        key_id: &str,
        data_key: &[u8; 32],
        policy: &str,
    ) -> Result<KeyInfo, ClientError> {
        self.create_key_for_model(key_id, data_key, policy, None).await
    }

    /// [`Client::create_key`] for a sealed model: `model` carries the sealed header's model
    /// identity and publisher signature bundle ([`ModelRegistration::new`]). When the policy
    /// names signers, the service verifies the bundle against them and relates it to the
    /// identity before anything is stored; refusals: `signature_required`, `untrusted_signer`,
    /// `bad_signature`, `model_mismatch`, `malformed`.
    pub async fn create_key_for_model(
        &self,
        key_id: &str,
        data_key: &[u8; 32],
        policy: &str,
        model: Option<ModelRegistration>,
    ) -> Result<KeyInfo, ClientError> {
        let req = KeyCreate {
            key_id: key_id.into(),
            data_key: ByteBuf::from(data_key.to_vec()),
            policy: policy.into(),
            model,
        };
        self.call(Method::POST, path::KEYS, Some(&req)).await
    }

    /// Adds a version holding `data_key` and makes it current. With `expected_version`, the
    /// service refuses (409) unless that is the version it would create.
    pub async fn rotate_key(
        &self,
        key_id: &str,
        data_key: &[u8; 32],
        expected_version: Option<u32>,
    ) -> Result<KeyInfo, ClientError> {
        self.rotate_key_for_model(key_id, data_key, expected_version, None).await
    }

    /// [`Client::rotate_key`] for a sealed model, checked under the key's current policy as
    /// [`Client::create_key_for_model`] is.
    pub async fn rotate_key_for_model(
        &self,
        key_id: &str,
        data_key: &[u8; 32],
        expected_version: Option<u32>,
        model: Option<ModelRegistration>,
    ) -> Result<KeyInfo, ClientError> {
        let req = KeyRotate { data_key: ByteBuf::from(data_key.to_vec()), version: expected_version, model };
        self.call(Method::POST, &format!("{}/{key_id}/versions", path::KEYS), Some(&req)).await
    }

    pub async fn revoke_key(&self, key_id: &str, version: Option<u32>) -> Result<KeyInfo, ClientError> {
        self.call(Method::POST, &format!("{}/{key_id}/revoke", path::KEYS), Some(&KeyRevoke { version }))
            .await
    }

    pub async fn rollback_key(&self, key_id: &str, version: u32) -> Result<KeyInfo, ClientError> {
        self.call(Method::POST, &format!("{}/{key_id}/rollback", path::KEYS), Some(&KeyRollback { version }))
            .await
    }

    pub async fn set_policy(&self, key_id: &str, policy: &str) -> Result<KeyInfo, ClientError> {
        let req = PolicySet { policy: policy.into() };
        self.call(Method::PUT, &format!("{}/{key_id}/policy", path::KEYS), Some(&req)).await
    }

    pub async fn key(&self, key_id: &str) -> Result<KeyInfo, ClientError> {
        self.call::<(), _>(Method::GET, &format!("{}/{key_id}", path::KEYS), None).await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        self.call::<(), _>(Method::GET, path::KEYS, None).await
    }

    /// Imports signed reference values (admin): `document` and `signature` are the bytes of
    /// `reference-values.json` and `reference-values.sig` as `nacre image build` wrote them.
    /// The service refuses a signer it does not trust (`untrusted_signer`) and a signature that
    /// does not verify (`bad_signature`).
    pub async fn import_reference_values(
        &self,
        document: &[u8],
        signature: &[u8],
    ) -> Result<ReferenceInfo, ClientError> {
        let req = ReferenceImport {
            document: ByteBuf::from(document.to_vec()),
            signature: ByteBuf::from(signature.to_vec()),
        };
        self.call(Method::POST, path::REFERENCE_VALUES, Some(&req)).await
    }

    /// Every imported reference-values document (admin or auditor).
    pub async fn list_reference_values(&self) -> Result<Vec<ReferenceInfo>, ClientError> {
        self.call::<(), _>(Method::GET, path::REFERENCE_VALUES, None).await
    }

    /// Every audit record, page by page.
    pub async fn audit_export(&self) -> Result<Vec<AuditRecord>, ClientError> {
        let mut all: Vec<AuditRecord> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| r.seq);
            let page: Vec<AuditRecord> = self
                .call::<(), _>(Method::GET, &format!("{}?after={after}&limit=1000", path::AUDIT), None)
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// `GET /v1/log/<path>` on the transparency log's public routes (`checkpoint`, `key`,
    /// `tile/...`): the body, or the service's refusal.
    pub async fn log_get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let (status, body) = self.send(Method::GET, &format!("/v1/log/{path}"), None, Vec::new()).await?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        match cbor::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Refused(e)),
            Err(_) => Err(ClientError::Protocol(format!("HTTP {status} without an error body"))),
        }
    }

    /// `GET /v1/log/witnessed/<index>`: leaf `index` under the best witnessed checkpoint
    /// covering it (unverified here: whoever requires the log checks it).
    pub async fn log_witnessed(
        &self,
        index: u64,
    ) -> Result<nacre_protocol::messages::ReleaseLog, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/v1/log/witnessed/{index}"), None).await
    }

    /// Sends raw bytes (tests of malformed input): returns the status and the body.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let (status, body) = self.send(method, uri, Some(content_type), body).await?;
        Ok((status, body.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_strictly() {
        assert_eq!(parse_url("https://127.0.0.1:8443").unwrap(), ("127.0.0.1".into(), 8443));
        assert_eq!(parse_url("https://localhost/").unwrap(), ("localhost".into(), 443));
        assert_eq!(parse_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        for bad in ["http://x", "https://", "https://x/path", "https://u@x", "https://x:port"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
