//! The verifying client (DESIGN.md §7): before any input leaves, an [`AttestedSession`]
//!
//! 1. completes a TLS 1.3 handshake whose server certificate passes the attested-TLS verifier —
//!    its evidence goes through the appraisal pipeline and the client's [`ClientPolicy`], and
//!    binds the certificate's key and the expected model digest;
//! 2. asks `GET /v1/attestation?nonce=…` with a fresh random nonce on that same connection and
//!    verifies the answer: new evidence from the same guest binding the nonce and this
//!    connection's TLS exporter (so a relay holding a leaked certificate key fails).
//!
//! Only a session that passed both exists; inference goes over it: KServe v2 JSON over HTTP/1.1,
//! or, on a session opened with [`Wire::Http2`], gRPC ([`AttestedSession::grpc`]) and every REST
//! route on one HTTP/2 connection — the fresh attestation verified on the very connection the
//! gRPC calls use.
#![forbid(unsafe_code)]

pub mod policy;
pub mod proxy;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use nacre_atls::fresh::{self, Exporter, Nonce};
use nacre_atls::{AtlsError, AttestedPeer, AttestedServerVerifier, Evidence};
use nacre_verifier::{Claims, Verified};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub use policy::{ClientPolicy, PolicyError};
pub use report::Verification;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted (a batch of outputs as JSON).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("URL {0:?}: expected https://HOST[:PORT]")]
    Url(String),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The server's certificate failed attestation: nothing was sent.
    #[error("the server's attested certificate was refused: {0}")]
    Certificate(AtlsError),
    /// The fresh, channel-bound attestation failed: nothing but the nonce was sent.
    #[error("the fresh attestation was refused: {0}")]
    Fresh(AtlsError),
    #[error("the server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("request timed out")]
    Timeout,
    /// The certificate passed but the fresh evidence did not come in time: refused, since the
    /// channel binding could not be checked.
    #[error("the fresh attestation did not arrive within {0:?}")]
    FreshTimeout(Duration),
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The attestation passed, but the guard the enclave runs is not what the policy requires
    /// (or its manifest does not match the attested digest): nothing was sent.
    #[error("the enclave's guard was refused: {0}")]
    Guard(String),
    /// The policy requires the key release to be in the transparency log and the enclave's
    /// proof is missing or does not verify: nothing was sent.
    #[error("the enclave's key release is not proven in the log: {0}")]
    Log(String),
}

/// The enclave's proof that its key release is in the log (`GET /v1/log/release`), checked
/// against the policy's `[log]` when it has one: log signature, K named cosignatures,
/// inclusion, and the release key equal to the one bound in the attested certificate.
async fn release_log(
    channel: &mut Channel,
    release_key_digest: &[u8; 32],
    policy: &ClientPolicy,
) -> Result<Option<nacre_tlog::VerifiedRelease>, ClientError> {
    let Some(req) = &policy.log else { return Ok(None) };
    let bytes = match channel.request(Method::GET, "/v1/log/release", None).await {
        Ok(b) => b,
        Err(ClientError::Status { status: 404, .. }) => {
            return Err(ClientError::Log("the enclave serves no log proof of its key release".into()));
        }
        Err(e) => return Err(e),
    };
    let proof: nacre_tlog::ReleaseProof =
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Log(format!("malformed proof: {e}")))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    proof.verify(req, release_key_digest, now).map(Some).map_err(|e| ClientError::Log(e.to_string()))
}

/// The enclave's guard manifest, fetched over the verified connection when the attested
/// binding names one: its SHA-256 must be the attested digest, it must parse, and it must meet
/// the policy's requirements. No guard is fine unless the policy requires one.
async fn guard(
    channel: &mut Channel,
    digest: [u8; 32],
    policy: &ClientPolicy,
) -> Result<Option<nacre_guard::Manifest>, ClientError> {
    if digest == [0; 32] {
        return match policy.require_guard {
            true => Err(ClientError::Guard(
                "the policy requires a guard manifest and the enclave runs none".into(),
            )),
            false => Ok(None),
        };
    }
    let bytes = channel.request(Method::GET, "/v1/guard", None).await?;
    let got: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    if got != digest {
        return Err(ClientError::Guard(format!(
            "the manifest served has SHA-256 {}, the attested digest is {}",
            hex::encode(got),
            hex::encode(digest)
        )));
    }
    let manifest = nacre_guard::Manifest::parse(&bytes).map_err(|e| ClientError::Guard(e.to_string()))?;
    if let Some(min) = &policy.min_output {
        let output = &manifest.document().output;
        if !output.at_least(min) {
            return Err(ClientError::Guard(format!(
                "its output policy is {output}; the policy requires at least {min}"
            )));
        }
    }
    if let Some(min) = policy.min_ood_action {
        match &manifest.document().input_guard.ood {
            Some(o) if o.action >= min => {}
            Some(o) => {
                return Err(ClientError::Guard(format!(
                    "its out-of-distribution action is {:?}; the policy requires at least {min:?}",
                    o.action
                )));
            }
            None => {
                return Err(ClientError::Guard(
                    "it has no out-of-distribution check; the policy requires one".into(),
                ));
            }
        }
    }
    if let (Some(max), Some(m)) = (policy.max_monitoring_epsilon_per_day, &manifest.document().monitoring)
        && m.epsilon_per_day > max
    {
        return Err(ClientError::Guard(format!(
            "its private monitor may spend ε {} a day on the inputs; the policy allows at most {max}",
            m.epsilon_per_day
        )));
    }
    Ok(Some(manifest))
}

fn parse_url(url: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Url(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().map_err(|_| bad())?),
        _ => (rest, 443),
    };
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

/// Which HTTP the session speaks (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    /// HTTP/2: REST and gRPC multiplexed on the one verified connection.
    Http2,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    /// tonic's body type, so that REST and gRPC requests share the connection.
    Http2(http2::SendRequest<tonic::body::Body>),
}

/// One HTTP connection over TLS.
struct Channel {
    sender: Sender,
    authority: String,
    token: Option<String>,
}

/// A gRPC client of `inference.GRPCInferenceService` on a verified HTTP/2 connection.
pub type GrpcClient =
    nacre_oip::inference::grpc_inference_service_client::GrpcInferenceServiceClient<Http2Channel>;

/// The verified HTTP/2 connection as a transport: gRPC's ([`GrpcClient`]) and `nacre proxy`'s.
#[derive(Clone)]
pub struct Http2Channel {
    sender: http2::SendRequest<tonic::body::Body>,
}

impl Http2Channel {
    /// Whether the connection is gone (closed by the server, or broken): a new session, with
    /// both attestations verified again, is needed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request on the verified connection. The URI is an origin-form path; the
    /// `:authority` is the session's.
    pub async fn send(
        &mut self,
        req: Request<tonic::body::Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }
}

impl core::fmt::Debug for Http2Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Http2Channel").finish_non_exhaustive()
    }
}

impl tower::Service<Request<tonic::body::Body>> for Http2Channel {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let fut = self.sender.send_request(req);
        Box::pin(fut)
    }
}

/// An HTTPS connection to an enclave that passed both attestations.
pub struct AttestedSession {
    channel: Channel,
    peer: Arc<AttestedPeer>,
    fresh: Verified<Claims>,
    exporter: Exporter,
    /// The enclave's guard manifest, its SHA-256 the attested `guard_digest`.
    guard: Option<nacre_guard::Manifest>,
    /// The key release's verified log leaf and checkpoint, when the policy requires the log.
    release: Option<nacre_tlog::VerifiedRelease>,
}

impl core::fmt::Debug for AttestedSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttestedSession").field("authority", &self.channel.authority).finish_non_exhaustive()
    }
}

async fn timed<T>(f: impl Future<Output = T>) -> Result<T, ClientError> {
    tokio::time::timeout(TIMEOUT, f).await.map_err(|_| ClientError::Timeout)
}

impl AttestedSession {
    /// Connects to `url` over HTTP/1.1, verifies the certificate and a fresh attestation under
    /// `policy`.
    pub async fn connect(url: &str, policy: &ClientPolicy) -> Result<Self, ClientError> {
        Self::connect_with(url, policy, Wire::Http1).await
    }

    /// [`Self::connect`] speaking `wire`. Over HTTP/2 the fresh attestation is asked for and
    /// verified on the HTTP/2 connection that gRPC calls then use.
    pub async fn connect_with(url: &str, policy: &ClientPolicy, wire: Wire) -> Result<Self, ClientError> {
        let (host, port) = parse_url(url)?;
        let addr = format!("{host}:{port}");
        let verifier = AttestedServerVerifier::new(policy.attestation.clone());
        let mut config = verifier.client_config().map_err(ClientError::Certificate)?;
        config.alpn_protocols = vec![match wire {
            Wire::Http1 => b"http/1.1".to_vec(),
            Wire::Http2 => b"h2".to_vec(),
        }];
        let connect_err = |message: String| ClientError::Connect { addr: addr.clone(), message };
        let tcp = timed(TcpStream::connect((host.as_str(), port)))
            .await?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        // Names are not what is verified (the evidence is); any syntactically valid one will do.
        let name = ServerName::try_from(host.clone())
            .unwrap_or(ServerName::try_from("enclave").map_err(|e| connect_err(e.to_string()))?);
        let tls = timed(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name.to_owned(), tcp))
            .await?
            .map_err(|e| match AtlsError::from_io(&e) {
                Some(refusal) => ClientError::Certificate(refusal.clone()),
                None => connect_err(format!("TLS: {e}")),
            })?;
        let conn = tls.get_ref().1;
        let peer = verifier.peer(conn).ok_or_else(|| {
            ClientError::Protocol("the handshake completed without a verified certificate".into())
        })?;
        let exporter =
            nacre_atls::exporter::<rustls::client::ClientConnectionData>(conn).map_err(ClientError::Fresh)?;
        let sender = match wire {
            Wire::Http1 => {
                let (sender, driver) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                tokio::spawn(driver);
                Sender::Http1(sender)
            }
            Wire::Http2 => {
                if conn.alpn_protocol() != Some(b"h2") {
                    return Err(ClientError::Protocol("the server did not choose HTTP/2 (ALPN h2)".into()));
                }
                let (sender, driver) =
                    http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .map_err(|e| ClientError::Http(e.to_string()))?;
                tokio::spawn(driver);
                Sender::Http2(sender)
            }
        };
        let mut channel = Channel { sender, authority: addr, token: None };
        let nonce = Nonce::random().map_err(ClientError::Fresh)?;
        let evidence = match channel.fresh_evidence(&nonce).await {
            Err(ClientError::Timeout) => return Err(ClientError::FreshTimeout(TIMEOUT)),
            other => other?,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let fresh = nacre_atls::verify_fresh(&policy.attestation, &peer, &evidence, &nonce, &exporter, now)
            .map_err(ClientError::Fresh)?;
        let guard = guard(&mut channel, peer.model().guard_digest, policy).await?;
        let release = release_log(&mut channel, &peer.model().release_key_digest, policy).await?;
        Ok(AttestedSession { channel, peer, fresh, exporter, guard, release })
    }

    /// A gRPC client on this session's HTTP/2 connection (the one whose fresh attestation was
    /// verified); `None` on an HTTP/1.1 session. Its requests carry no token: add the
    /// `authorization` metadata per request where the enclave requires one.
    pub fn grpc(&self) -> Option<GrpcClient> {
        let origin = format!("https://{}", self.channel.authority).parse().ok()?;
        Some(GrpcClient::with_origin(self.http2()?, origin))
    }

    /// This session's verified HTTP/2 connection as a transport; `None` on HTTP/1.1.
    pub fn http2(&self) -> Option<Http2Channel> {
        let Sender::Http2(sender) = &self.channel.sender else { return None };
        Some(Http2Channel { sender: sender.clone() })
    }

    /// The `host:port` this session is connected to.
    pub fn authority(&self) -> &str {
        &self.channel.authority
    }

    /// Sends `token` as the bearer token of inference requests.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.channel.token = Some(token.into());
        self
    }

    /// What the certificate's evidence showed.
    pub fn peer(&self) -> &AttestedPeer {
        &self.peer
    }

    /// What the fresh, channel-bound evidence showed.
    pub fn fresh(&self) -> &Verified<Claims> {
        &self.fresh
    }

    /// This connection's TLS exporter value (client side).
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// Asks for fresh evidence binding `nonce` on this connection (not verified here; see
    /// [`nacre_atls::verify_fresh`]).
    pub async fn fresh_evidence(&mut self, nonce: &Nonce) -> Result<Evidence, ClientError> {
        self.channel.fresh_evidence(nonce).await
    }

    /// The guard manifest the enclave runs (checked against the attested digest), if any.
    pub fn guard(&self) -> Option<&nacre_guard::Manifest> {
        self.guard.as_ref()
    }

    /// The key release's log leaf and checkpoint, verified (present when the policy has `[log]`).
    pub fn release(&self) -> Option<&nacre_tlog::VerifiedRelease> {
        self.release.as_ref()
    }

    /// `GET target` on the verified connection (health, metrics, …); the body of a 200.
    pub async fn get(&mut self, target: &str) -> Result<Bytes, ClientError> {
        self.channel.request(Method::GET, target, None).await
    }

    /// `GET /v2/models/{model}`.
    pub async fn metadata(&mut self, model: &str) -> Result<serde_json::Value, ClientError> {
        self.channel.json(Method::GET, &format!("/v2/models/{}", path_segment(model)?), None).await
    }

    /// `POST /v2/models/{model}/infer` with a KServe v2 JSON request.
    pub async fn infer(
        &mut self,
        model: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.channel
            .json(Method::POST, &format!("/v2/models/{}/infer", path_segment(model)?), Some(body))
            .await
    }

    /// `POST /v2/models/{model}/explain`: KernelSHAP attributions of one row, computed in the
    /// enclave when the model owner's guard manifest offers them (charged to the token's budget
    /// at their number of model evaluations).
    pub async fn explain(
        &mut self,
        model: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.channel
            .json(Method::POST, &format!("/v2/models/{}/explain", path_segment(model)?), Some(body))
            .await
    }

    /// `GET /v1/monitoring?since=N`: the private monitor's released windows from index `since`
    /// on (the session's token must be a monitoring token). The privacy terms the enclave states
    /// must be the attested guard manifest's: a report under other terms is refused.
    pub async fn monitoring(&mut self, since: u64) -> Result<nacre_guard::monitor::Report, ClientError> {
        let body = self.channel.request(Method::GET, &format!("/v1/monitoring?since={since}"), None).await?;
        let report: nacre_guard::monitor::Report = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("the monitoring report: {e}")))?;
        let attested = self.guard.as_ref().and_then(|g| g.document().monitoring.as_ref());
        let Some(m) = attested else {
            return Err(ClientError::Protocol("the attested guard manifest sets no monitoring".into()));
        };
        let p = &report.privacy;
        if (p.mechanism, p.epsilon_per_window, p.epsilon_per_day)
            != (m.mechanism, m.epsilon_per_window, m.epsilon_per_day)
            || (report.window, report.min_window) != (m.window, m.min_window)
            || report
                .windows
                .iter()
                .filter_map(|w| w.release.as_ref())
                .any(|r| r.epsilon != m.epsilon_per_window)
        {
            return Err(ClientError::Protocol(
                "the monitoring report states privacy terms other than the attested guard manifest's".into(),
            ));
        }
        Ok(report)
    }

    /// Any request on the verified connection, whatever the answer's status: for clients that
    /// build their own requests (the Python package's attested session). `headers` must not
    /// hold `host`; the session's token, if any, is added unless `authorization` is given.
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: hyper::HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Bytes>, ClientError> {
        self.channel.send(method, target, headers, body).await
    }

    /// `POST /v2/models/{model}/infer` with a raw body (for tests of the server's validation).
    pub async fn infer_raw(&mut self, model: &str, body: Vec<u8>) -> Result<Bytes, ClientError> {
        self.channel
            .request(Method::POST, &format!("/v2/models/{}/infer", path_segment(model)?), Some(body))
            .await
    }
}

impl Channel {
    async fn fresh_evidence(&mut self, nonce: &Nonce) -> Result<Evidence, ClientError> {
        let body = self.request(Method::GET, &fresh::request_target(nonce), None).await?;
        fresh::decode_response(&body).map_err(ClientError::Fresh)
    }

    async fn request(
        &mut self,
        method: Method,
        target: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let mut headers = hyper::HeaderMap::new();
        let body = match json {
            Some(bytes) => {
                headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let (parts, body) = self.send(method, target, headers, body).await?.into_parts();
        if parts.status != StatusCode::OK {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
            return Err(ClientError::Status { status: parts.status.as_u16(), message });
        }
        Ok(body)
    }

    async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: hyper::HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Bytes>, ClientError> {
        if headers.contains_key(header::HOST) {
            return Err(ClientError::Http("the Host header is the session's".into()));
        }
        let mut req = Request::builder().method(method).uri(target).header(header::HOST, &self.authority);
        if let Some(token) = &self.token
            && !headers.contains_key(header::AUTHORIZATION)
        {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut req = req.body(Full::new(body)).map_err(|e| ClientError::Http(e.to_string()))?;
        req.headers_mut().extend(headers);
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                timed(sender.ready()).await?.map_err(|e| http_error(&e))?;
                timed(sender.send_request(req)).await?.map_err(|e| http_error(&e))?
            }
            Sender::Http2(sender) => {
                timed(sender.ready()).await?.map_err(|e| http_error(&e))?;
                let req = req.map(tonic::body::Body::new);
                timed(sender.send_request(req)).await?.map_err(|e| http_error(&e))?
            }
        };
        let (parts, body) = response.into_parts();
        let body =
            timed(Limited::new(body, MAX_RESPONSE).collect()).await?.map_err(|e| http_error(&*e))?.to_bytes();
        Ok(hyper::Response::from_parts(parts, body))
    }

    async fn json(
        &mut self,
        method: Method,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = self.request(method, target, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("not JSON: {e}")))
    }
}

/// An HTTP error with its causes ("operation was canceled" alone says little).
fn http_error(e: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ClientError::Http(message)
}

fn path_segment(name: &str) -> Result<&str, ClientError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ClientError::Url(format!("model name {name:?}: [A-Za-z0-9._-]+")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("https://127.0.0.1:8443").unwrap(), ("127.0.0.1".into(), 8443));
        assert_eq!(parse_url("https://enclave/").unwrap(), ("enclave".into(), 443));
        assert_eq!(parse_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        for bad in ["http://x", "https://", "https://x/p", "https://u@x", "https://x:y", "https://x?q"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(path_segment("../x").is_err());
    }
}
