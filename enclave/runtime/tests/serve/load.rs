//! Issue 14's load test: the attestation service (in-process) and the enclave (host process)
//! under slowloris and maximal bodies from many loopback sources, while a legitimate client on
//! 127.0.0.1 releases a key and runs a verified inference.
//!
//! The load, every attacking socket bound to 127.0.0.2 and up before it connects (so that the
//! servers' per-source caps see many sources), and stopping by itself when its time is up:
//!
//! - **Slow connections**, `slow` to each server, a quarter from one heavy source (over the
//!   per-source cap of 64 at both sizes) and the rest spread over 19 more. Each completes the
//!   TLS handshake, sends its headers, then one byte every 2 s, and reconnects about a second
//!   after the server closes it. The service gets a `/v1/release` body (it reads bodies before
//!   any authentication); the enclave gets headers that never end (it authenticates before it
//!   reads a body, so a body from a client without the token is answered 401 at once and holds
//!   nothing). One in ten, from the spread sources, is TCP only and never sends a ClientHello.
//! - **20 maximal JSON bodies** to the enclave's `/v2/models/{m}/infer` (about
//!   `max_request_bytes` of numbers), in three kinds: without a token (unpaced); with the token,
//!   for an input declared `[1, 30]`; with the token and the largest batch the model's
//!   dynamic first dimension allows. The token holders send at most one request a second each
//!   and honour `Retry-After`: they share the token's rate-limit bucket with the legitimate
//!   client (the enclave takes one token), so an unpaced token holder would be measuring that
//!   bucket, not the connection and memory bounds this test is about.
//! - **20 maximal bodies** (`release_body_max` of CBOR) to the service's `/v1/release`.
//!
//! Before the load, [`SEQUENTIAL`] largest batches one at a time show what they cost alone.
//!
//! Passes when, after the ramp-up, every legitimate key release and verified inference takes
//! less than 1 s; both servers answer health, a release and an inference again, and their
//! connection tables are empty, within [`RECOVERY`] of the load's end; the load reached the
//! bounds it is there to test (the enclave's table full, displacement on both servers, and in
//! the scaled-down run the deadlines); and the enclave's peak RSS stays under [`rss_bound`].
//!
//! Scaled down (the default, for CI): 300 slow connections per server, which is more than the
//! enclave's 256-slot table (so without displacement the legitimate client would be locked
//! out) and, from the heavy source, more than the per-source cap of 64 on both servers; 15 s
//! of load. `NACRE_LOAD_FULL=1`: 2,000 per server (more than the service's 1024 too), 60 s
//! (`scripts/bench-load.sh` runs it in a release build and prints the figures).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use nacre_attestation_client::Client;
use nacre_client::AttestedSession;
use nacre_host::sp::{SecureProcessor, SimIdentity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use crate::common::{self, KEY_ID, MEASUREMENT, Options, Stack};

const MODEL: &str = "load-mlp";
const TOKEN: &str = "load-test-inference-token";
/// The enclave's configuration defaults this test relies on (enclave/runtime/src/config.rs).
const ENCLAVE_MAX_CONNECTIONS: usize = 256;
const ENCLAVE_MAX_REQUEST: usize = 16 << 20;
const ENCLAVE_MAX_BUFFERED: usize = 64 << 20;
/// The largest element count of one input the enclave accepts (`kserve::MAX_ELEMENTS`).
const MAX_ELEMENTS: usize = 1 << 22;
/// How long both servers have to answer everything again once the load has stopped.
const RECOVERY: Duration = Duration::from_secs(5);
/// The pass criterion for the legitimate client's operations under load.
const LEGIT_LIMIT: Duration = Duration::from_secs(1);
const TRICKLE: Duration = Duration::from_secs(2);
/// Largest batches sent one at a time before the load.
const SEQUENTIAL: usize = 4;

struct Scale {
    full: bool,
    /// Slow connections to each server.
    slow: usize,
    /// Sources besides the heavy one.
    spread: u8,
    bodies: usize,
    ramp: Duration,
    load: Duration,
}

impl Scale {
    fn from_env() -> Scale {
        if std::env::var("NACRE_LOAD_FULL").is_ok_and(|v| v == "1") {
            Scale {
                full: true,
                slow: 2000,
                spread: 19,
                bodies: 20,
                ramp: Duration::from_secs(15),
                load: Duration::from_secs(60),
            }
        } else {
            Scale {
                full: false,
                slow: 300,
                spread: 19,
                bodies: 20,
                ramp: Duration::from_secs(4),
                load: Duration::from_secs(15),
            }
        }
    }

    /// The source of slow connection `i`: every fourth from 127.0.0.2, the rest over
    /// 127.0.0.3 … 127.0.0.(2 + spread).
    fn slow_source(&self, i: usize) -> Ipv4Addr {
        if i.is_multiple_of(4) {
            Ipv4Addr::new(127, 0, 0, 2)
        } else {
            Ipv4Addr::new(127, 0, 0, 3 + (i % self.spread as usize) as u8)
        }
    }

    /// Body senders come from 127.0.0.100 and up.
    fn body_source(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 100 + i as u8)
    }

    /// Descriptors the test process needs: a client socket per attacking connection, the
    /// service's side of those it holds (it runs in this process), the stack and slack.
    fn descriptors(&self, service_max: usize) -> u64 {
        (2 * self.slow + self.slow.min(service_max) + 4 * self.bodies + 512) as u64
    }
}

/// Raises the soft limit on open files to the hard limit (inherited by the enclave, started
/// after this); returns (soft, hard).
fn raise_nofile() -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        limit.current = Some(hard);
        setrlimit(Resource::Nofile, limit).expect("raising RLIMIT_NOFILE to its hard limit");
    }
    let limit = getrlimit(Resource::Nofile);
    (limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX))
}

/// The attacker does not verify anyone: any certificate, TLS 1.3 signatures checked only so
/// that the handshake is the real one.
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One server under attack.
struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    /// What a slow connection sends before it trickles.
    slow_head: Bytes,
    slow: Tally,
    bodies: Tally,
}

impl Target {
    fn new(url: &str, slow_head: String) -> Target {
        let addr = url.trim_start_matches("https://").parse().unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Target {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            slow_head: Bytes::from(slow_head),
            slow: Tally::default(),
            bodies: Tally::default(),
        }
    }

    async fn tcp(&self, source: Ipv4Addr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        let tcp = socket.connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    async fn connect(&self, source: Ipv4Addr) -> std::io::Result<Tls> {
        let tcp = self.tcp(source).await?;
        self.tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }
}

/// What the attacker saw.
#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    /// TCP or TLS failed (under displacement: closed during the handshake, mostly).
    failed: AtomicU64,
    /// Closed by the server without an answer (displaced, or past a deadline).
    closed: AtomicU64,
    /// Answered (a 408, say) and then closed.
    answered: AtomicU64,
    held: AtomicI64,
    held_peak: AtomicI64,
    /// Bodies: responses by kind and status (0: the exchange failed before a status).
    statuses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Bodies: the first failure of each kind.
    errors: Mutex<BTreeMap<&'static str, String>>,
}

impl Tally {
    fn hold(&self) -> Held<'_> {
        let now = self.held.fetch_add(1, Ordering::Relaxed) + 1;
        self.held_peak.fetch_max(now, Ordering::Relaxed);
        Held(self)
    }
    fn status(&self, kind: &'static str, status: Result<u16, String>) -> u16 {
        let code = *status.as_ref().unwrap_or(&0);
        *self.statuses.lock().unwrap().entry((kind, code)).or_default() += 1;
        if let Err(e) = status {
            self.errors.lock().unwrap().entry(kind).or_insert(e);
        }
        code
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Held<'a>(&'a Tally);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A small xorshift, for jitter: the attack needs no real randomness.
fn jitter(state: &mut u32, max: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    max.mul_f64(f64::from(*state % 1000) / 1000.0)
}

/// How a slow connection stalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    /// TCP only: no ClientHello (the handshake deadline's case).
    Silent,
    /// The handshake, the head, then one byte every [`TRICKLE`].
    Trickle,
}

/// What became of one slow connection.
enum Outcome {
    /// TCP or TLS failed.
    Failed,
    /// Closed by the server without an answer (displaced, or past a deadline).
    Closed,
    /// Answered (a 408, say), with this status.
    Answered(u16),
}

/// A slowloris connection from `source`, reconnecting about a second after each close, until
/// `end`.
async fn slow_connection(target: Arc<Target>, source: Ipv4Addr, stall: Stall, seed: u32, end: Instant) {
    let mut rng = seed | 1;
    while Instant::now() < end {
        target.slow.attempted.fetch_add(1, Ordering::Relaxed);
        let Ok(outcome) = tokio::time::timeout_at(end, stall_once(&target, source, stall)).await else {
            return;
        };
        let tally = &target.slow;
        match outcome {
            Outcome::Failed => tally.failed.fetch_add(1, Ordering::Relaxed),
            Outcome::Closed => tally.closed.fetch_add(1, Ordering::Relaxed),
            Outcome::Answered(status) => {
                tally.status("slow", Ok(status));
                tally.answered.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(Duration::from_millis(500) + jitter(&mut rng, Duration::from_secs(1))).await;
    }
}

/// One slow connection, held until the server closes or answers it.
async fn stall_once(target: &Target, source: Ipv4Addr, stall: Stall) -> Outcome {
    let Ok(mut tcp) = target.tcp(source).await else { return Outcome::Failed };
    if stall == Stall::Silent {
        let _held = target.slow.hold();
        let _ = tcp.read(&mut [0u8; 64]).await;
        return Outcome::Closed;
    }
    let Ok(mut tls) = target.tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await else {
        return Outcome::Failed;
    };
    if tls.write_all(&target.slow_head).await.is_err() || tls.flush().await.is_err() {
        return Outcome::Closed;
    }
    let _held = target.slow.hold();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = tls.read(&mut buf) => {
                return match read {
                    Ok(n) if n > 0 => {
                        let head = String::from_utf8_lossy(&buf[..n]);
                        Outcome::Answered(head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
                    }
                    _ => Outcome::Closed,
                };
            }
            () = tokio::time::sleep(TRICKLE) => {
                if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
                    return Outcome::Closed;
                }
            }
        }
    }
}

/// One maximal body.
#[derive(Clone)]
struct Body {
    kind: &'static str,
    path: String,
    content_type: &'static str,
    token: Option<&'static str>,
    bytes: Bytes,
    /// At most one request a second, and a pause of `Retry-After` on 429 and 503.
    paced: bool,
}

/// Sends `body` from `source` on a new connection each time, until `end`.
async fn body_sender(target: Arc<Target>, source: Ipv4Addr, body: Body, end: Instant) {
    while Instant::now() < end {
        let started = Instant::now();
        target.bodies.attempted.fetch_add(1, Ordering::Relaxed);
        let status = tokio::time::timeout_at(end, send_body(&target, source, &body)).await;
        let status = match status {
            Err(_) => return,
            Ok(s) => s,
        };
        let status = target.bodies.status(body.kind, status);
        if body.paced {
            let pause = if matches!(status, 429 | 503) { Duration::from_secs(1) } else { Duration::ZERO };
            tokio::time::sleep_until((started + Duration::from_secs(1)).max(Instant::now() + pause)).await;
        } else if status == 0 {
            // Connection refused or reset: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The response's status, or why the exchange failed before one arrived.
async fn send_body(target: &Target, source: Ipv4Addr, body: &Body) -> Result<u16, String> {
    let tls = target.connect(source).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut request = Request::post(&body.path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, body.content_type);
    if let Some(token) = body.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(body.bytes.clone())).unwrap();
    let response = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// A KServe v2 request for input `name` of `shape`, its data `0.5` repeated to fill the
/// shape's element count, or (when `fill` is given) `fill` bytes whatever the shape says.
fn infer_body(name: &str, shape: &[usize], fill: Option<usize>) -> Bytes {
    let head = format!(r#"{{"inputs":[{{"name":"{name}","shape":{shape:?},"datatype":"FP32","data":["#);
    let tail = "]}]}";
    let n = match fill {
        Some(bytes) => (bytes - head.len() - tail.len()) / 4,
        None => shape.iter().product(),
    };
    let mut body = String::with_capacity(head.len() + 4 * n + tail.len());
    body.push_str(&head);
    body.push_str(&"0.5,".repeat(n));
    body.pop();
    body.push_str(tail);
    Bytes::from(body)
}

/// The enclave's three kinds of maximal body, from its model metadata.
fn enclave_bodies(metadata: &serde_json::Value) -> [Body; 3] {
    let input = &metadata["inputs"][0];
    let name = input["name"].as_str().unwrap();
    let dims: Vec<i64> = input["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
    let fixed: usize = dims.iter().filter(|&&d| d > 0).map(|&d| d as usize).product();
    let path = format!("/v2/models/{MODEL}/infer");
    let declared: Vec<usize> = dims.iter().map(|&d| d.max(1) as usize).collect();
    let overfull = infer_body(name, &declared, Some(ENCLAVE_MAX_REQUEST));
    // The largest batch whose body fits `max_request_bytes` (4 bytes a number) and whose
    // element count the enclave accepts.
    let batch = ((ENCLAVE_MAX_REQUEST - 200) / 4 / fixed).min(MAX_ELEMENTS / fixed);
    let batched: Vec<usize> = dims.iter().map(|&d| if d < 0 { batch } else { d as usize }).collect();
    assert!(dims.contains(&-1), "the load model has a dynamic batch: {dims:?}");
    let maximal = infer_body(name, &batched, None);
    assert!(maximal.len() <= ENCLAVE_MAX_REQUEST && overfull.len() <= ENCLAVE_MAX_REQUEST);
    let body = |kind, token, bytes, paced| Body {
        kind,
        path: path.clone(),
        content_type: "application/json",
        token,
        bytes,
        paced,
    };
    [
        body("no token, [1, 30]", None, overfull.clone(), false),
        body("token, [1, 30]", Some(TOKEN), overfull, true),
        body("token, largest batch", Some(TOKEN), maximal, true),
    ]
}

/// A CBOR byte string filling `max` bytes: well-formed, and not a release request.
fn release_body(max: usize) -> Body {
    let n = max - 3;
    let mut bytes = vec![0x59, (n >> 8) as u8, n as u8];
    bytes.resize(max, 0xa5);
    Body {
        kind: "release",
        path: "/v1/release".into(),
        content_type: "application/cbor",
        token: None,
        bytes: Bytes::from(bytes),
        paced: false,
    }
}

/// The legitimate client, from 127.0.0.1.
struct Legit<'a> {
    stack: &'a Stack,
    sp: SecureProcessor,
    policy: nacre_client::ClientPolicy,
}

impl Legit<'_> {
    /// A key release through the real client (result key, challenge, sim evidence, release,
    /// unwrap), on a new connection.
    async fn release(&self) -> Result<Duration, String> {
        let t = Instant::now();
        let client =
            Client::new(&self.stack.service_url, &self.stack.service_ca).map_err(|e| e.to_string())?;
        let result_key = client.result_key().await.map_err(|e| format!("result key: {e}"))?;
        let released = client
            .fetch_key(KEY_ID, 1, &result_key, |rd| {
                let evidence = self.sp.report(rd);
                async move { evidence }
            })
            .await
            .map_err(|e| format!("release: {e}"))?;
        assert_eq!(released.key_version, 1);
        Ok(t.elapsed())
    }

    /// An attested session (certificate evidence and fresh, channel-bound evidence verified)
    /// and one inference with the token.
    async fn infer(&self) -> Result<Duration, String> {
        self.infer_on().await.map(|(t, _)| t)
    }

    /// [`Self::infer`], then the enclave's open connections as its metrics show them on the
    /// same connection (so counting it).
    async fn infer_and_count(&self) -> Result<(Duration, u64), String> {
        let (t, mut session) = self.infer_on().await?;
        let metrics = session.get("/metrics").await.map_err(|e| format!("metrics: {e}"))?;
        Ok((t, metric(&String::from_utf8_lossy(&metrics), "nacre_enclave_connections_open")))
    }

    async fn infer_on(&self) -> Result<(Duration, AttestedSession), String> {
        let t = Instant::now();
        let mut session = AttestedSession::connect(&self.stack.url, &self.policy)
            .await
            .map_err(|e| format!("attested session: {e}"))?
            .with_token(TOKEN);
        let x: Vec<f32> = (0..30).map(|i| i as f32 / 30.0).collect();
        let request = json!({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": x}]});
        let out = session.infer(MODEL, &request).await.map_err(|e| format!("inference: {e}"))?;
        assert_eq!(out["outputs"][0]["shape"], json!([1, 1]));
        Ok((t.elapsed(), session))
    }

    async fn enclave_metrics(&self) -> Result<String, String> {
        let mut session =
            AttestedSession::connect(&self.stack.url, &self.policy).await.map_err(|e| e.to_string())?;
        let text = session.get("/metrics").await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Both servers' health, a release and an inference.
    async fn everything(&self, service: &Target) -> Result<(), String> {
        let mut session =
            AttestedSession::connect(&self.stack.url, &self.policy).await.map_err(|e| e.to_string())?;
        session.get("/v2/health/ready").await.map_err(|e| format!("enclave ready: {e}"))?;
        let mut tls = service.connect(Ipv4Addr::LOCALHOST).await.map_err(|e| e.to_string())?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(format!("service health: {:?}", String::from_utf8_lossy(&answer)));
        }
        self.release().await?;
        self.infer().await?;
        Ok(())
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The enclave's RSS every 20 ms, from the load's start.
struct RssWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, u64)>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push((t0.elapsed(), memory(pid, "VmRSS")));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        RssWatch { stop, thread }
    }

    fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        Samples(self.thread.join().unwrap())
    }
}

struct Samples(Vec<(Duration, u64)>);

impl Samples {
    /// The highest RSS sampled in [from, to), and when.
    fn max_within(&self, from: Duration, to: Duration) -> (u64, Duration) {
        self.0
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .max_by_key(|(_, rss)| *rss)
            .map_or((0, Duration::ZERO), |&(t, rss)| (rss, t))
    }
}

/// `VmHWM` (peak) or `VmRSS` of `pid`, bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The enclave's peak RSS may not pass its resident size when serving (`baseline`: code,
/// runtime, model, certificates) plus what its configuration lets requests hold: the decoded
/// tensors' budget (`max_buffered_bytes`), per connection its TLS and HTTP buffers (at most
/// 128 KiB, `max_connections` of them; 256 stalled connections measured ≈ 70 KiB each), and per
/// core one running inference (its input tensor is inside the budget; tract's copies and
/// activations and the JSON response up to 2 × `max_request_bytes`: one largest batch of this
/// model measured ≈ 1.1 ×), plus the body chunks in flight per parsing request (a channel of
/// four chunks of at most 64 KiB, for each of the 20 bodies).
///
/// This counts memory held, and so holds only if memory freed is given back. Under glibc's
/// malloc defaults it is not: once a 16 MiB tensor has been freed, glibc raises its mmap
/// threshold past it, later tensors are carved from per-thread arenas, and freed ones stay
/// resident there, so RSS climbs with each largest batch even one at a time (the
/// `SEQUENTIAL` figures) and stays up once the load has gone. With a fixed threshold
/// (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576` in the enclave's environment, or
/// `mallopt(M_MMAP_THRESHOLD)` at start) the peak measured about half this bound.
fn rss_bound(baseline: u64, cores: u64) -> u64 {
    baseline
        + ENCLAVE_MAX_BUFFERED as u64
        + ENCLAVE_MAX_CONNECTIONS as u64 * (128 << 10)
        + cores * 2 * ENCLAVE_MAX_REQUEST as u64
        + 20 * 4 * (64 << 10)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn summary(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    match (s.get(s.len() / 2), s.last()) {
        (Some(p50), Some(max)) => {
            format!(
                "{} tries: p50 {:.0} ms, max {:.0} ms",
                s.len(),
                p50.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            )
        }
        _ => "no tries".into(),
    }
}

#[test]
fn legit_clients_are_served_within_a_second_under_slowloris_and_maximal_bodies() {
    let scale = Scale::from_env();
    let (soft, hard) = raise_nofile();
    let need = scale.descriptors(1024);
    assert!(soft >= need, "open files: {need} needed, the hard limit is {hard} (soft {soft})");

    let model = onnx::load_mlp();
    let signature = nacre_model::Model::load(&model).unwrap().signature().unwrap();
    assert_eq!(signature.0[0].shape, vec![None, Some(30)], "{signature:?}");
    let mut options = Options::new(model, MODEL);
    options.extra_config =
        format!("inference_token_sha256 = \"{}\"\n", hex::encode(common::sha256(TOKEN.as_bytes())));
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", Duration::from_secs(60));
    let pid = stack.enclave_pid();
    let identity = Arc::new(SimIdentity::load(&stack.dir.join("sim")).unwrap());
    let legit = Legit {
        stack: &stack,
        sp: SecureProcessor::new(identity, MEASUREMENT, [0; 32]),
        policy: stack.policy(),
    };
    // The legitimate client's own runtime: its latencies are not queued behind the attack's
    // thousands of tasks.
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let metadata = client_rt.block_on(async {
        legit.release().await.unwrap();
        legit.infer().await.unwrap();
        let mut session = AttestedSession::connect(&stack.url, &legit.policy).await.unwrap();
        session.metadata(MODEL).await.unwrap()
    });
    let baseline = memory(pid, "VmRSS");

    let release_max = stack.service.limits().release_body_max;
    let service = Arc::new(Target::new(
        &stack.service_url,
        format!(
            "POST /v1/release HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/cbor\r\n\
             content-length: {release_max}\r\n\r\n"
        ),
    ));
    let enclave = Arc::new(Target::new(
        &stack.url,
        format!(
            "POST /v2/models/{MODEL}/infer HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {ENCLAVE_MAX_REQUEST}\r\nx-slow: "
        ),
    ));
    let kinds = enclave_bodies(&metadata);
    // A few largest batches one after the other, before the load: what they cost a server
    // that is doing nothing else, and whether it gets the memory back between them.
    let alone: Vec<(Duration, Result<usize, String>, u64)> = client_rt.block_on(async {
        let mut runs = Vec::new();
        for _ in 0..SEQUENTIAL {
            let mut session =
                AttestedSession::connect(&stack.url, &legit.policy).await.unwrap().with_token(TOKEN);
            let t = Instant::now();
            let answer = session.infer_raw(MODEL, kinds[2].bytes.to_vec()).await;
            runs.push((
                t.elapsed(),
                answer.map(|b| b.len()).map_err(|e| e.to_string()),
                memory(pid, "VmHWM"),
            ));
        }
        runs
    });

    // The load.
    let attack_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let rss = RssWatch::start(pid);
    let end = started + scale.load;
    let mut tasks = Vec::new();
    for i in 0..scale.slow {
        let at = started + scale.ramp.mul_f64(i as f64 / scale.slow as f64);
        for (n, target) in [&service, &enclave].into_iter().enumerate() {
            let (target, source) = (target.clone(), scale.slow_source(i));
            let stall = if i % 10 == 5 { Stall::Silent } else { Stall::Trickle };
            let seed = ((i * 2 + n) as u32).wrapping_mul(2_654_435_761);
            tasks.push(attack_rt.spawn(async move {
                tokio::time::sleep_until(at).await;
                slow_connection(target, source, stall, seed, end).await;
            }));
        }
    }
    for i in 0..scale.bodies {
        let source = scale.body_source(i);
        tasks.push(attack_rt.spawn(body_sender(enclave.clone(), source, kinds[i % 3].clone(), end)));
        tasks.push(attack_rt.spawn(body_sender(service.clone(), source, release_body(release_max), end)));
    }

    // The legitimate client, once the load has ramped up.
    let (mut releases, mut inferences, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    // The connection tables' occupancy at each try: the enclave's as its metrics show it
    // (counting the client's own connection), the service's from its admission.
    let mut open_seen = Vec::new();
    client_rt.block_on(async {
        tokio::time::sleep_until(started + scale.ramp + Duration::from_secs(1)).await;
        while Instant::now() + Duration::from_secs(2) < end {
            let next = Instant::now() + Duration::from_secs(1);
            match legit.release().await {
                Ok(t) => releases.push(t),
                Err(e) => failures.push(e),
            }
            match legit.infer_and_count().await {
                Ok((t, open)) => {
                    inferences.push(t);
                    open_seen.push((open, stack.service.admission().open()));
                }
                Err(e) => failures.push(e),
            }
            tokio::time::sleep_until(next).await;
        }
    });

    // The load stops by itself; then recovery.
    attack_rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    attack_rt.shutdown_timeout(Duration::from_secs(5));
    let stopped = Instant::now();
    let recovery = client_rt.block_on(async {
        loop {
            match legit.everything(&service).await {
                Ok(()) => return Ok(stopped.elapsed()),
                Err(e) if stopped.elapsed() > RECOVERY => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // Every attacking connection is closed: the tables empty (but for the client's own
    // connection to the enclave) once the handlers that were running finish.
    let (drained, enclave_metrics, open_after) = client_rt.block_on(async {
        loop {
            let metrics = legit.enclave_metrics().await.unwrap();
            let open = (metric(&metrics, "nacre_enclave_connections_open"), stack.service.admission().open());
            let t = stopped.elapsed();
            if open.0 <= 1 && open.1 == 0 || t > RECOVERY {
                return (t, metrics, open);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let peak = memory(pid, "VmHWM");
    let rss_drained = memory(pid, "VmRSS");
    let rss = rss.stop();
    let stopped_at = stopped - started;
    let (during_max, during_at) = rss.max_within(Duration::ZERO, stopped_at);
    let (after_max, after_at) = rss.max_within(stopped_at, Duration::MAX);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = rss_bound(baseline, cores);

    // The figures.
    let c = &stack.service.admission().counters;
    let e = |name: &str| metric(&enclave_metrics, &format!("nacre_enclave_{name}_total"));
    let service_counts = [
        Tally::get(&c.displaced),
        Tally::get(&c.refused),
        Tally::get(&c.timed_out_handshake),
        Tally::get(&c.timed_out_waiting),
        Tally::get(&c.timed_out_body),
    ];
    let enclave_counts = [
        e("connections_displaced"),
        e("connections_refused"),
        e("connections_handshake_timeouts"),
        e("connections_idle_timeouts"),
        e("connections_body_timeouts"),
    ];
    let answers = |t: &Target| -> String {
        let statuses = t.slow.statuses.lock().unwrap();
        let list: Vec<String> = statuses.iter().map(|((_, s), n)| format!("{n} × {s}")).collect();
        if list.is_empty() { "0".into() } else { list.join(", ") }
    };
    let row = |name: &str,
               t: &Target,
               table: u64,
               open: (u64, u64),
               [displaced, refused, hs, idle, body]: [u64; 5]| {
        format!(
            "| {name} | {} | {} | {table} | {}–{} | {} | {} | {} | {displaced} | {refused} | {hs} / {idle} / {body} |",
            Tally::get(&t.slow.attempted),
            t.slow.held_peak.load(Ordering::Relaxed),
            open.0,
            open.1,
            Tally::get(&t.slow.closed),
            answers(t),
            Tally::get(&t.slow.failed),
        )
    };
    let range = |v: Vec<u64>| (v.iter().copied().min().unwrap_or(0), v.iter().copied().max().unwrap_or(0));
    let enclave_open = range(open_seen.iter().map(|o| o.0).collect());
    let service_open = range(open_seen.iter().map(|o| o.1 as u64).collect());
    println!("LOAD-REPORT-BEGIN");
    println!(
        "{} load: {} slow connections per server from {} sources (a quarter from 127.0.0.2; one in ten TCP \
         only), {} maximal bodies per server, {} s (ramp {} s). Open files: soft {soft}, hard {hard}, needed ≈ {need}.",
        if scale.full { "Full" } else { "Scaled-down" },
        scale.slow,
        1 + scale.spread,
        scale.bodies,
        scale.load.as_secs(),
        scale.ramp.as_secs()
    );
    println!();
    println!(
        "| slow connections | attempted | held (peak) | table | open at the client's tries | closed without answer | \
         answered | failed | displaced | refused | timeouts handshake / idle / body |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    let service_max = stack.service.limits().max_connections as u64;
    println!("{}", row("service", &service, service_max, service_open, service_counts));
    println!("{}", row("enclave", &enclave, ENCLAVE_MAX_CONNECTIONS as u64, enclave_open, enclave_counts));
    println!();
    println!(
        "| maximal bodies | sent | answers (status: count; 0: closed before an answer) | first failure |"
    );
    println!("|---|---:|---|---|");
    for (name, t) in [("service /v1/release", &service), ("enclave /v2/models/…/infer", &enclave)] {
        let statuses = t.bodies.statuses.lock().unwrap();
        let errors = t.bodies.errors.lock().unwrap();
        let kinds: std::collections::BTreeSet<&str> = statuses.keys().map(|(k, _)| *k).collect();
        for kind in kinds {
            let of_kind = || statuses.iter().filter(move |((k, _), _)| *k == kind);
            let answers: Vec<String> = of_kind().map(|((_, s), n)| format!("{s}: {n}")).collect();
            let sent: u64 = of_kind().map(|(_, n)| n).sum();
            let error = errors.get(kind).map_or("", |e| e.as_str());
            println!(
                "| {name} ({kind}) | {sent} | {} | {} |",
                answers.join(", "),
                error.chars().take(100).collect::<String>()
            );
        }
    }
    println!();
    println!("| legitimate client (127.0.0.1) | |");
    println!("|---|---|");
    println!(
        "| key release during the load (new connection, result key, challenge, sim evidence, release, unwrap) | {} |",
        summary(&releases)
    );
    println!(
        "| verified inference during the load (attested session, fresh attestation, inference) | {} |",
        summary(&inferences)
    );
    println!("| failures during the load | {} |", failures.len());
    match &recovery {
        Ok(t) => println!(
            "| recovery: both healthy, a release and an inference, after the load stopped | {:.0} ms |",
            t.as_secs_f64() * 1e3
        ),
        Err(e) => println!("| recovery | not within {} s: {e} |", RECOVERY.as_secs()),
    }
    println!(
        "| open connections {:.1} s after the load stopped: enclave (counting the client's) / service | {} / {} |",
        drained.as_secs_f64(),
        open_after.0,
        open_after.1
    );
    for (i, (t, answer, _)) in alone.iter().enumerate() {
        println!(
            "| largest batch {} of {SEQUENTIAL}, one at a time before the load | {} in {:.0} ms |",
            i + 1,
            match answer {
                Ok(n) => format!("200, {n} bytes of response"),
                Err(e) => e.clone(),
            },
            t.as_secs_f64() * 1e3
        );
    }
    println!();
    println!("| enclave memory | MiB |");
    println!("|---|---:|");
    println!("| RSS when serving, before the load (baseline) | {:.0} |", mib(baseline));
    let hwm: Vec<String> = alone.iter().map(|(_, _, hwm)| format!("{:.0}", mib(*hwm))).collect();
    println!("| VmHWM after each of the {SEQUENTIAL} largest batches one at a time | {} |", hwm.join(" / "));
    println!(
        "| RSS sampled every 20 ms, highest during the load (at {:.1} s) / after it (at {:.1} s; the load stopped at {:.1} s) | {:.0} / {:.0} |",
        during_at.as_secs_f64(),
        after_at.as_secs_f64(),
        stopped_at.as_secs_f64(),
        mib(during_max),
        mib(after_max)
    );
    println!("| peak RSS (VmHWM) at the end | {:.0} |", mib(peak));
    println!("| RSS once every request had finished and every connection closed | {:.0} |", mib(rss_drained));
    println!(
        "| bound: baseline + max_buffered_bytes + max_connections × 128 KiB + {cores} cores × 2 × max_request_bytes + 20 × 4 × 64 KiB | {:.0} |",
        mib(bound)
    );
    println!("LOAD-REPORT-END");

    // The pass criteria.
    assert!(failures.is_empty(), "legitimate requests failed under load: {failures:?}");
    assert!(!releases.is_empty() && !inferences.is_empty());
    for t in releases.iter().chain(&inferences) {
        assert!(*t < LEGIT_LIMIT, "a legitimate request took {t:?} under load");
    }
    recovery.unwrap();
    assert!(open_after.0 <= 1 && open_after.1 == 0, "connections left open after the load: {open_after:?}");
    // The load reached the bounds it is there to test, so that a bound missing fails the test
    // rather than going unexercised. The trickling connections alone outnumber the enclave's
    // table, and none of them would reach a deadline of the enclave's within the scaled-down
    // load (idle and body: 30 s): without displacement they would hold every slot and the
    // client would be refused. (The table's occupancy at the client's tries, printed, is a
    // few short of full at times: displaced attackers wait a second before they reconnect.)
    // Both servers displaced; the service, below its global cap in the scaled-down run, for
    // the heavy source's per-source cap.
    assert!(scale.slow - scale.slow / 10 > ENCLAVE_MAX_CONNECTIONS);
    assert!(scale.full || scale.load < Duration::from_secs(30));
    assert!(enclave_counts[0] > 0, "the enclave displaced no connection");
    assert!(service_counts[0] > 0, "the service displaced no connection");
    if !scale.full {
        // With tables that are not full, the deadlines close what displacement does not: the
        // service's body deadline answers 408 and both handshake deadlines close the TCP-only
        // connections. (At full size displacement closes every stalled connection long before
        // its deadline.)
        assert!(
            service.slow.statuses.lock().unwrap().contains_key(&("slow", 408)),
            "no 408 from the service"
        );
        assert!(service_counts[2] > 0 && enclave_counts[2] > 0, "no handshake deadline passed");
    }
    assert!(peak < bound, "enclave peak RSS {:.0} MiB ≥ bound {:.0} MiB", mib(peak), mib(bound));
}

/// The load model, written as ONNX protobuf by hand (this test binary has no protobuf crate
/// among its dependencies): a fraud-scoring-shaped MLP with a dynamic batch,
/// `y = relu(x·W1 + b1)·W2 + b2`, x: f32[N, 30], y: f32[N, 1]. Field numbers are onnx.proto's.
mod onnx {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }

    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn message(out: &mut Vec<u8>, field: u64, build: impl FnOnce(&mut Vec<u8>)) {
        let mut m = Vec::new();
        build(&mut m);
        bytes(out, field, &m);
    }

    const FLOAT: i64 = 1;

    /// TensorProto: dims = 1, data_type = 2, float_data = 4 (packed), name = 8.
    fn initializer(graph: &mut Vec<u8>, name: &str, dims: &[i64], data: &[f32]) {
        message(graph, 5, |t| {
            for &d in dims {
                int(t, 1, d);
            }
            int(t, 2, FLOAT);
            let floats: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
            bytes(t, 4, &floats);
            bytes(t, 8, name.as_bytes());
        });
    }

    /// ValueInfoProto (name = 1, type = 2) → TypeProto.tensor_type = 1 → elem_type = 1,
    /// shape = 2 → dim = 1 → dim_value = 1 | dim_param = 2.
    fn value(graph: &mut Vec<u8>, field: u64, name: &str, dims: &[Result<i64, &str>]) {
        message(graph, field, |v| {
            bytes(v, 1, name.as_bytes());
            message(v, 2, |ty| {
                message(ty, 1, |tensor| {
                    int(tensor, 1, FLOAT);
                    message(tensor, 2, |shape| {
                        for d in dims {
                            message(shape, 1, |dim| match d {
                                Ok(n) => int(dim, 1, *n),
                                Err(param) => bytes(dim, 2, param.as_bytes()),
                            });
                        }
                    });
                });
            });
        });
    }

    /// NodeProto: input = 1, output = 2, name = 3, op_type = 4.
    fn node(graph: &mut Vec<u8>, op: &str, inputs: &[&str], output: &str) {
        message(graph, 1, |n| {
            for i in inputs {
                bytes(n, 1, i.as_bytes());
            }
            bytes(n, 2, output.as_bytes());
            bytes(n, 3, output.as_bytes());
            bytes(n, 4, op.as_bytes());
        });
    }

    const IN: usize = 30;
    const HIDDEN: usize = 8;

    /// ModelProto: ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 (version = 2).
    pub fn load_mlp() -> Vec<u8> {
        let weight = |i: usize, j: usize| ((i * 7 + j * 3) % 11) as f32 / 10.0 - 0.5;
        let w1: Vec<f32> = (0..IN).flat_map(|i| (0..HIDDEN).map(move |j| weight(i, j))).collect();
        let b1: Vec<f32> = (0..HIDDEN).map(|j| weight(j, 1)).collect();
        let w2: Vec<f32> = (0..HIDDEN).map(|j| weight(j, 2)).collect();
        let mut model = Vec::new();
        int(&mut model, 1, 8);
        bytes(&mut model, 2, b"nacre-load-test");
        message(&mut model, 7, |g| {
            node(g, "MatMul", &["x", "w1"], "h0");
            node(g, "Add", &["h0", "b1"], "h1");
            node(g, "Relu", &["h1"], "h2");
            node(g, "MatMul", &["h2", "w2"], "h3");
            node(g, "Add", &["h3", "b2"], "y");
            bytes(g, 2, b"nacre-load-mlp");
            initializer(g, "w1", &[IN as i64, HIDDEN as i64], &w1);
            initializer(g, "b1", &[HIDDEN as i64], &b1);
            initializer(g, "w2", &[HIDDEN as i64, 1], &w2);
            initializer(g, "b2", &[1], &[0.1]);
            value(g, 11, "x", &[Err("N"), Ok(IN as i64)]);
            value(g, 12, "y", &[Err("N"), Ok(1)]);
        });
        message(&mut model, 8, |o| int(o, 2, 13));
        model
    }
}
