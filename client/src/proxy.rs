//! `nacre proxy`: a local verifying forwarder for clients that cannot verify an enclave
//! themselves (tritonclient, curl, any gRPC or HTTP library).
//!
//! The proxy listens on loopback only, in plain HTTP/1.1 and HTTP/2 (h2c prior knowledge, as
//! gRPC's insecure channels speak it). It forwards over one upstream HTTP/2 connection that
//! passed both attestations under the client policy — the attested certificate, then a fresh
//! evidence bound to that very connection's TLS exporter — so every forwarded request travels on
//! a channel whose far end was verified, not merely on a pinned key. A new upstream connection
//! (the enclave closed the old one, or it broke) is verified again from the start before
//! anything is forwarded on it; a changed TLS key is reported and passes only by that same
//! verification. Nothing is forwarded while no verified connection exists: requests get 502
//! (gRPC `UNAVAILABLE`) with the refusal.
//!
//! Who may use it: every local process, unless a token is set (`Proxy-Authorization: Bearer`,
//! removed before forwarding). Its listener is bounded like a server's: at most
//! [`MAX_CONNECTIONS`] client connections, headers within [`HEADER_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

use crate::{AttestedSession, ClientError, ClientPolicy, Http2Channel, Verification, Wire};

/// Client connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

type Body = tonic::body::Body;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("listening on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    /// The enclave failed verification at start: nothing was forwarded.
    #[error("the enclave was refused: {}", .0.reason().unwrap_or("?"))]
    Refused(Box<Verification>),
}

/// What the proxy was started with.
pub struct ProxyConfig {
    /// The enclave, `https://HOST:PORT`.
    pub upstream: String,
    pub policy: ClientPolicy,
    /// The proxy's own token: clients present it as `Proxy-Authorization: Bearer …`.
    pub token: Option<String>,
    /// The enclave's inference token, sent as `Authorization: Bearer …` when a request has none.
    pub upstream_token: Option<String>,
}

impl core::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The tokens stay out of logs.
        f.debug_struct("ProxyConfig")
            .field("upstream", &self.upstream)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("upstream_token", &self.upstream_token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// The verified connection requests are forwarded on, and the key it was verified with.
struct Upstream {
    channel: Http2Channel,
    spki_sha256: [u8; 32],
}

pub struct Proxy {
    upstream_url: String,
    policy: ClientPolicy,
    token_sha256: Option<[u8; 32]>,
    upstream_token: Option<HeaderValue>,
    current: Mutex<Option<Upstream>>,
    /// The key of the last verified connection (a different key on reconnect is reported).
    pinned: std::sync::Mutex<Option<[u8; 32]>>,
    verifications: AtomicU64,
    forwarded: AtomicU64,
}

impl core::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Proxy").field("upstream", &self.upstream_url).finish_non_exhaustive()
    }
}

/// Binds `addr`, refusing any address but loopback.
pub async fn bind_loopback(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    if !addr.ip().is_loopback() {
        return Err(ProxyError::NotLoopback(addr));
    }
    TcpListener::bind(addr).await.map_err(|e| ProxyError::Listen { addr, message: e.to_string() })
}

impl Proxy {
    /// Verifies the enclave (both attestations) and returns the proxy with its verification
    /// document; a refusal is [`ProxyError::Refused`] and nothing was sent but the nonce.
    pub async fn start(config: ProxyConfig) -> Result<(Arc<Proxy>, Verification), ProxyError> {
        let upstream_token =
            match &config.upstream_token {
                Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    refused_config(&config.upstream, "the enclave token is not a header value")
                })?),
                None => None,
            };
        let proxy = Arc::new(Proxy {
            upstream_url: config.upstream,
            policy: config.policy,
            token_sha256: config.token.map(|t| Sha256::digest(t.as_bytes()).into()),
            upstream_token,
            current: Mutex::new(None),
            pinned: std::sync::Mutex::new(None),
            verifications: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let verification = {
            let mut current = proxy.current.lock().await;
            match proxy.connect().await {
                Ok((upstream, verification)) => {
                    *current = Some(upstream);
                    verification
                }
                Err(verification) => return Err(ProxyError::Refused(Box::new(verification))),
            }
        };
        Ok((proxy, verification))
    }

    /// Verified upstream connections made so far (the first, and one per reconnect).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Requests forwarded to the enclave.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// A new upstream connection, verified from the start.
    async fn connect(&self) -> Result<(Upstream, Verification), Verification> {
        let session = AttestedSession::connect_with(&self.upstream_url, &self.policy, Wire::Http2)
            .await
            .map_err(|e| Verification::refused(&self.upstream_url, &e))?;
        let verification = Verification::accepted(&self.upstream_url, &self.policy, &session);
        let spki_sha256 = *session.peer().spki_sha256();
        let channel = session.http2().ok_or_else(|| {
            Verification::refused(&self.upstream_url, &ClientError::Protocol("no HTTP/2 connection".into()))
        })?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let previous = self.pinned.lock().map(|mut p| p.replace(spki_sha256)).unwrap_or(None);
        if previous.is_some_and(|p| p != spki_sha256) {
            eprintln!(
                "nacre proxy: the enclave's TLS key changed (now SPKI SHA-256 {}); the new one passed verification",
                hex::encode(spki_sha256)
            );
        }
        Ok((Upstream { channel, spki_sha256 }, verification))
    }

    /// The verified channel, reconnecting (and verifying again) when the last one closed.
    async fn channel(&self) -> Result<Http2Channel, String> {
        let mut current = self.current.lock().await;
        if let Some(up) = current.as_ref()
            && !up.channel.is_closed()
        {
            return Ok(up.channel.clone());
        }
        *current = None;
        match self.connect().await {
            Ok((up, _)) => {
                eprintln!(
                    "nacre proxy: reconnected to {}; verified again (SPKI SHA-256 {})",
                    self.upstream_url,
                    hex::encode(up.spki_sha256)
                );
                let channel = up.channel.clone();
                *current = Some(up);
                Ok(channel)
            }
            Err(refusal) => {
                let reason = refusal.reason().unwrap_or("?").to_owned();
                eprintln!("nacre proxy: the enclave was refused on reconnect: {reason}");
                Err(reason)
            }
        }
    }

    /// Serves clients on `listener` until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (tcp, _) = tokio::select! {
                () = &mut shutdown => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
                },
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                builder.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(64);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                drop(permit);
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let grpc = is_grpc(req.headers());
        if let Some(want) = &self.token_sha256 {
            let presented = req
                .headers()
                .get(header::PROXY_AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
            // Digests compared: timing reveals nothing usable about the token.
            if presented.as_ref() != Some(want) {
                return refusal(
                    grpc,
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    16,
                    "the proxy's token is required",
                );
            }
        }
        let mut channel = match self.channel().await {
            Ok(c) => c,
            Err(reason) => {
                let message = format!("nacre proxy: no verified connection to the enclave: {reason}");
                return refusal(grpc, StatusCode::BAD_GATEWAY, 14, &message);
            }
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(token) = &self.upstream_token
            && !parts.headers.contains_key(header::AUTHORIZATION)
        {
            parts.headers.insert(header::AUTHORIZATION, token.clone());
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut upstream = Request::builder().method(parts.method).uri(target);
        if let Some(h) = upstream.headers_mut() {
            *h = parts.headers;
        }
        let Ok(upstream) = upstream.body(Body::new(body)) else {
            return refusal(grpc, StatusCode::BAD_REQUEST, 3, "nacre proxy: the request cannot be forwarded");
        };
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        match channel.send(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                let message = format!("nacre proxy: forwarding to the enclave failed: {e}");
                refusal(grpc, StatusCode::BAD_GATEWAY, 14, &message)
            }
        }
    }
}

fn refused_config(url: &str, message: &str) -> ProxyError {
    ProxyError::Refused(Box::new(Verification::refused(url, &ClientError::Protocol(message.into()))))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Headers of one hop, which a proxy does not forward (RFC 9110 §7.6.1), and the proxy's own
/// credentials. `te: trailers` stays: gRPC requires it end to end.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// The proxy's own refusal: a JSON error body for HTTP, a trailers-only gRPC status for gRPC.
fn refusal(grpc: bool, status: StatusCode, grpc_code: u8, message: &str) -> Response<Body> {
    let mut response = if grpc {
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(u16::from(grpc_code)));
        // grpc-message is percent-encoded; ASCII letters and spaces survive as they are.
        let encoded: String = message
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && b != b'%' || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let body = serde_json::json!({ "error": message }).to_string();
        let mut r = Response::new(Body::new(Full::new(Bytes::from(body)).map_err(|e| match e {})));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        *r.status_mut() = status;
        r
    };
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED && !grpc {
        response.headers_mut().insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_proxy_token_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Bearer local"),
            ("host", "127.0.0.1:8000"),
            ("te", "trailers"),
            ("authorization", "Bearer enclave"),
            ("content-type", "application/grpc"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type", "te"]);
        let mut gzip = HeaderMap::new();
        gzip.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut gzip);
        assert!(gzip.is_empty());
    }

    #[test]
    fn refusals_speak_the_clients_protocol() {
        let r = refusal(true, StatusCode::BAD_GATEWAY, 14, "no verified connection: 100% refused");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no verified connection: 100%25 refused");
        let r = refusal(false, StatusCode::PROXY_AUTHENTICATION_REQUIRED, 16, "token");
        assert_eq!(r.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        assert_eq!(r.headers()[header::PROXY_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn only_loopback_addresses_are_bound() {
        let e = bind_loopback("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(matches!(e, ProxyError::NotLoopback(_)), "{e}");
        assert!(bind_loopback("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }
}
