//! The accept loop over real TLS on loopback: stalled connections (slowloris) from other
//! sources cannot keep a client out, each phase's deadline closes or answers, and the handler cap
//! leaves room for health checks. Attacking connections come from 127.0.0.2 and up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use nacre_http::conns::{Admission, ConnLimits};
use nacre_http::deadline::Deadline;
use nacre_http::server::{Site, serve};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::client::TlsStream;

struct Server {
    addr: SocketAddr,
    admission: Arc<Admission>,
    client: tokio_rustls::TlsConnector,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn unavailable() -> Response {
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

async fn start(limits: ConnLimits) -> Server {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match body.collect().await {
                    Ok(b) => (StatusCode::OK, b.to_bytes()).into_response(),
                    Err(_) => StatusCode::BAD_REQUEST.into_response(),
                }
            }),
        )
        // A route declares its own deadline; the others share the router's.
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            })
            .layer(Deadline::new(Duration::from_millis(500), unavailable)),
        )
        .route_layer(Deadline::new(Duration::from_secs(5), unavailable));
    let admission = Admission::new(limits);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let site = Site {
        admission: admission.clone(),
        router,
        exempt: &["/healthz"],
        acceptor: Box::new(move || (acceptor.clone(), ())),
        on_tls: Box::new(|(), _, info| Some(info)),
        busy: || (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        body_timeout: || (StatusCode::REQUEST_TIMEOUT, "body deadline").into_response(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(site, listener, std::future::pending(), Duration::ZERO));
    Server { addr, admission, client: tokio_rustls::TlsConnector::from(Arc::new(client)) }
}

impl Server {
    async fn tcp_from(&self, source: [u8; 4]) -> tokio::net::TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::from(source), 0)).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    async fn tls_from(&self, source: [u8; 4]) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        let tcp = self.tcp_from(source).await;
        self.client.connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }

    /// One request on a fresh connection from `source`; the status line's code.
    async fn status(&self, source: [u8; 4], request: &str) -> Option<u16> {
        let mut tls = self.tls_from(source).await.ok()?;
        tls.write_all(request.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 1024];
        let n = tls.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]);
        head.split(' ').nth(1)?.parse().ok()
    }
}

fn limits() -> ConnLimits {
    ConnLimits { reserved: 2, ..ConnLimits::new(16, 4, Duration::from_secs(2), Duration::from_secs(1)) }
}

const ECHO: &str = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi";

/// Completes the handshake and sends headers that promise a body it never finishes.
async fn stall(server: &Server, source: [u8; 4]) -> Option<TlsStream<tokio::net::TcpStream>> {
    let mut tls = server.tls_from(source).await.ok()?;
    tls.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nx").await.ok()?;
    Some(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_from_many_sources_cannot_keep_a_client_out() {
    let server = start(limits()).await;
    let mut held = Vec::new();
    for i in 0..40u8 {
        held.extend(stall(&server, [127, 0, 0, 2 + i % 8]).await);
    }
    assert!(server.admission.open() <= 16, "{} open", server.admission.open());
    let t = Instant::now();
    assert_eq!(server.status([127, 0, 0, 1], ECHO).await, Some(200));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(server.status([127, 0, 0, 1], "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await, Some(200));
    assert!(server.admission.counters.displaced.load(std::sync::atomic::Ordering::Relaxed) > 0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_holds_at_most_its_cap() {
    let server = start(limits()).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.extend(stall(&server, [127, 0, 0, 9]).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.admission.open(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_answered_408_at_its_deadline() {
    let server = start(limits()).await;
    let mut tls = stall(&server, [127, 0, 0, 3]).await.unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_handshaken_connections_are_closed() {
    let server = start(ConnLimits { handshake_timeout: Duration::from_secs(1), ..limits() }).await;
    // TCP only, no ClientHello; and a TLS connection that never sends a request.
    let mut raw = server.tcp_from([127, 0, 0, 4]).await;
    let mut idle = server.tls_from([127, 0, 0, 5]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(4), raw.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the handshake deadline closes it");
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the idle deadline closes it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.admission.open(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_past_their_deadline_or_cap_are_answered_503_and_health_still_passes() {
    let server = Arc::new(start(ConnLimits { reserved: 12, ..limits() }).await);
    // The deadline.
    let t = Instant::now();
    assert_eq!(server.status([127, 0, 0, 1], "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await, Some(503));
    assert!(t.elapsed() < Duration::from_secs(2));
    // The cap: 16 − 12 = 4 requests in handlers at once; the fifth is refused at once, health is not.
    let mut slow = Vec::new();
    for i in 0..4u8 {
        let server = server.clone();
        slow.push(tokio::spawn(async move {
            server.status([127, 0, 0, 10 + i], "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(server.status([127, 0, 0, 1], "GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await, Some(503));
    assert!(t.elapsed() < Duration::from_millis(200), "refused at once: {:?}", t.elapsed());
    assert_eq!(server.status([127, 0, 0, 1], "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await, Some(200));
    for s in slow {
        assert_eq!(s.await.unwrap(), Some(503));
    }
}
