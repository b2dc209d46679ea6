//! The enclave's HTTPS server: the Open Inference Protocol (KServe v2, JSON tensors) and the
//! fresh, channel-bound attestation of DESIGN.md §7, on one TLS 1.3 listener.
//!
//! | route | |
//! |---|---|
//! | `GET /v2/health/live` | 200 while the process runs |
//! | `GET /v2/health/ready` | 200 when serving; 503 with the state and, after a failure, why (also when the attested certificate expired and renewal keeps failing) |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{name}`, `…/ready` | model metadata (inputs, outputs, datatypes, shapes) |
//! | `POST /v2/models/{name}/infer` | inference (validated before tract sees it) |
//! | `GET /v1/attestation?nonce=HEX` | fresh evidence binding the nonce and this connection's TLS exporter (CBOR) |
//! | `GET /v1/attestation/result` | the attestation service's signed result for this guest (COSE_Sign1) |
//! | `GET /v1/guard` | the owner's guard manifest, byte for byte as sealed (its SHA-256 is the attested `guard_digest`); 404 without one |
//! | `GET /v1/monitoring[?since=N]`, `…/metrics` | the private monitor's released (noised) windows, JSON or Prometheus text; monitoring tokens only |
//! | `GET /metrics` | Prometheus (no input-derived values) |
//!
//! Until the model is loaded (or after a failure) the server presents an unattested
//! certificate and answers only the health and metrics routes: every other route is 503 with
//! the reason. Inference and attestation are limited per client; inference can require a bearer
//! token. Errors are KServe's `{"error": "…"}` with a status that says whose fault it is.
//!
//! The attested certificate is renewed at half-life ([`renew`]); each connection keeps the
//! certificate it was shown ([`tls::Presented`]).

pub mod batcher;
pub mod body;
pub mod budget;
pub mod explain;
pub mod grpc;
pub mod grpc_deadline;
pub mod guard;
pub mod infer;
pub mod kserve;
pub mod limit;
pub mod metrics;
pub mod monitoring;
pub mod release_log;
pub mod renew;
pub mod stats;
pub mod tls;
pub mod triton;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nacre_atls::AttestedCert;
use nacre_atls::fresh::{self, Exporter};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::attest::Attester;
use crate::clock::Clock;
use crate::config::EnclaveConfig;
use crate::lifecycle::Failure;
use budget::Budget;
use kserve::{ModelMetadata, TensorSpec};
use limit::Limiter;
use metrics::{Metrics, Reason, Request, Route};
use nacre_http::deadline::Deadline;
use renew::Schedule;
use tls::Presented;

/// Everything serving needs once the model is loaded.
pub struct Ready {
    pub model: nacre_model::Model,
    pub metadata: ModelMetadata,
    /// What every attested certificate binds: the model identity, the guard manifest's digest
    /// and the release key's digest.
    pub binding: nacre_wire::binding::ModelBinding,
    /// Serialises attestations (fresh ones and certificate renewals: one request at a time to
    /// the secure processor).
    pub attester: Mutex<Box<dyn Attester + Send>>,
    /// The attestation service's COSE_Sign1 result for this guest.
    pub attestation_result: Vec<u8>,
    /// The owner's guard, when the sealed model carries a manifest.
    pub guard: Option<guard::ServeGuard>,
    /// The release's transparency-log proof, when the service sent one.
    pub release_log: Option<Arc<release_log::ReleaseLogProof>>,
}

impl Ready {
    /// The model's declared signature as KServe metadata: every tensor must have a datatype
    /// the protocol carries.
    pub fn metadata(model: &nacre_model::Model, name: &str, version: &str) -> Result<ModelMetadata, Failure> {
        let (inputs, outputs) = model.signature().map_err(Failure::Model)?;
        let spec = |t: nacre_model::TensorInfo| -> Result<TensorSpec, Failure> {
            let datatype = t.datatype.ok_or_else(|| {
                Failure::Unservable(format!(
                    "tensor {:?} is of tract type {}, which the inference protocol cannot carry",
                    t.name, t.tract_type
                ))
            })?;
            let shape = t.shape.iter().map(|d| d.map_or(-1, |n| n as i64)).collect();
            Ok(TensorSpec { name: t.name, datatype: datatype.name().to_owned(), shape })
        };
        Ok(ModelMetadata {
            name: name.to_owned(),
            versions: vec![version.to_owned()],
            platform: "onnx_tract".into(),
            inputs: inputs.into_iter().map(spec).collect::<Result<_, _>>()?,
            outputs: outputs.into_iter().map(spec).collect::<Result<_, _>>()?,
        })
    }
}

enum Phase {
    Starting,
    Failed { reason: String },
    Serving(Arc<Ready>),
}

/// A model whose runs typically take at most this long runs on the request's own task (still
/// one per core at a time): the blocking pool's hand-off costs tens of microseconds, more than
/// such a run, and holding a worker this long delays no other request noticeably.
pub const INLINE_RUN_NS: u64 = 100_000;

pub struct App {
    phase: RwLock<Phase>,
    /// What new connections are shown; replaced whole when the certificate changes.
    presented: RwLock<Arc<Presented>>,
    clock: Arc<dyn Clock>,
    subject_alt_names: Vec<String>,
    certificate_lifetime: time::Duration,
    limiter: Limiter,
    metrics: Metrics,
    /// The accepted bearer tokens' digests (sorted); empty: inference is open.
    tokens_sha256: Vec<[u8; 32]>,
    /// The monitoring tokens' digests (sorted): the role that reads the private monitor.
    monitoring_sha256: Vec<[u8; 32]>,
    max_request: usize,
    /// Bytes of decoded request tensors held at once across requests.
    budget: Arc<Budget>,
    max_buffered: usize,
    allow_non_finite: bool,
    /// The connection table: caps, displacement of stalled connections, phase deadlines.
    admission: Arc<nacre_http::conns::Admission>,
    /// Fresh attestations in progress or queued for the attester.
    attest_queue: tokio::sync::Semaphore,
    /// The handler deadline of inference.
    request_timeout: Duration,
    /// Bounds concurrent inferences to the cores; the rest wait (their clients see latency,
    /// not errors).
    infer_slots: Arc<tokio::sync::Semaphore>,
    /// Dynamic batching as configured; in force only for a batchable model.
    batching: Option<batcher::BatchConfig>,
    /// How long the model's runs typically take, ns (a moving average; `u64::MAX` before the
    /// first): runs under [`INLINE_RUN_NS`] stay on the request's task.
    typical_run_ns: std::sync::atomic::AtomicU64,
    /// The batch collector, started with the first inference of a batchable model.
    batcher: std::sync::OnceLock<Option<batcher::Batcher>>,
    /// The served model's statistics (Triton's extension and `nv_*` metrics).
    stats: Arc<stats::ModelStats>,
}

impl core::fmt::Debug for App {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    pub fn new(config: &EnclaveConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, String> {
        let presented = Presented::unattested(&config.subject_alt_names)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let admission = nacre_http::conns::Admission::new(nacre_http::conns::ConnLimits::new(
            config.max_connections,
            config.connections_per_source,
            Duration::from_secs(config.idle_timeout_secs),
            Duration::from_secs(config.request_timeout_secs),
        ));
        let stats = Arc::new(stats::ModelStats::default());
        Ok(Arc::new(App {
            phase: RwLock::new(Phase::Starting),
            presented: RwLock::new(Arc::new(presented)),
            clock,
            subject_alt_names: config.subject_alt_names.clone(),
            certificate_lifetime: config.certificate_lifetime(),
            limiter: Limiter::new(config.rate_per_second, config.rate_burst),
            metrics: Metrics::default().with_connections(admission.clone()).with_model_stats(stats.clone()),
            stats,
            tokens_sha256: config.inference_tokens_sha256(),
            monitoring_sha256: config.monitoring_tokens_sha256(),
            max_request: config.max_request_bytes,
            budget: Budget::new(config.max_buffered_bytes),
            max_buffered: config.max_buffered_bytes,
            allow_non_finite: config.allow_non_finite,
            infer_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            batching: config.batching.map(|b| batcher::BatchConfig {
                max_batch_size: b.max_batch_size,
                max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
            }),
            batcher: std::sync::OnceLock::new(),
            typical_run_ns: std::sync::atomic::AtomicU64::new(u64::MAX),
            admission,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            attest_queue: tokio::sync::Semaphore::new(ATTEST_QUEUE),
        }))
    }

    /// Health-only, saying why. (`Failure`'s text is safe to show: a model failure carries
    /// tract's error kind and code only.)
    pub fn fail(&self, failure: &Failure) {
        self.metrics.failures.get_or_create(&metrics::Stage { stage: failure.stage() }).inc();
        let reason = failure.to_string();
        *self.phase.write().unwrap_or_else(|p| p.into_inner()) = Phase::Failed { reason };
    }

    /// The serving guard of `manifest` for the model `metadata` describes, counting into this
    /// server's metrics.
    pub fn guard(
        &self,
        bytes: Vec<u8>,
        manifest: nacre_guard::Manifest,
        metadata: &ModelMetadata,
    ) -> Result<guard::ServeGuard, Failure> {
        guard::ServeGuard::new(
            bytes,
            manifest,
            &metadata.inputs,
            &metadata.outputs,
            self.metrics.guard.clone(),
            self.tokens_sha256.len(),
            // The detector's histories count against the same bound as request tensors.
            self.max_buffered,
        )
    }

    /// Now, Unix milliseconds (the guard's budget windows and throttles).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    /// Makes the first attested certificate (as every renewal does, [`Self::renew_certificate`]),
    /// presents it and serves the model; returns when to renew it.
    pub fn serve_model(&self, ready: Ready) -> Result<Schedule, Failure> {
        let issued_at = self.clock.now();
        let cert = self.issue(&ready, issued_at).map_err(Failure::Attestation)?;
        self.present(cert).map_err(Failure::Attestation)?;
        let version = ready.metadata.versions.first().map_or("", String::as_str);
        self.stats.serving(&ready.metadata.name, version);
        *self.phase.write().unwrap_or_else(|p| p.into_inner()) = Phase::Serving(Arc::new(ready));
        Ok(Schedule::new(self.certificate_lifetime, issued_at))
    }

    /// A new key, fresh evidence bound to it and the model, and the certificate carrying it,
    /// valid from now for the configured lifetime.
    fn issue(&self, ready: &Ready, now: time::OffsetDateTime) -> Result<Arc<AttestedCert>, String> {
        let options = nacre_atls::CertOptions::with_lifetime(
            self.subject_alt_names.clone(),
            now,
            self.certificate_lifetime,
        );
        let mut attester = ready.attester.lock().unwrap_or_else(|p| p.into_inner());
        AttestedCert::generate(&options, ready.binding, |rd| attester.attest(&rd))
            .map(Arc::new)
            .map_err(|e| format!("attested certificate: {e}"))
    }

    /// Shows `cert` to every new connection; connections already open keep theirs.
    fn present(&self, cert: Arc<AttestedCert>) -> Result<(), String> {
        let presented = Arc::new(Presented::attested(cert)?);
        *self.presented.write().unwrap_or_else(|p| p.into_inner()) = presented;
        Ok(())
    }

    /// Re-attests and swaps in a new certificate; returns when it was issued. Blocking: the
    /// attester answers synchronously.
    pub fn renew_certificate(&self) -> Result<time::OffsetDateTime, String> {
        let ready = match &*self.phase.read().unwrap_or_else(|p| p.into_inner()) {
            Phase::Serving(r) => r.clone(),
            _ => return Err("the enclave is not serving".into()),
        };
        let now = self.clock.now();
        self.present(self.issue(&ready, now)?)?;
        Ok(now)
    }

    fn presented(&self) -> Arc<Presented> {
        self.presented.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The attested certificate's validity ended and no renewal replaced it: clients refuse
    /// new connections, so the enclave is not ready.
    fn certificate_expired(&self) -> bool {
        self.presented().attested.as_ref().is_some_and(|c| self.clock.now() > c.not_after())
    }

    /// The release's log proof of the model being served, if any.
    pub fn release_log(&self) -> Option<Arc<release_log::ReleaseLogProof>> {
        self.ready().ok()?.release_log.clone()
    }

    fn ready(&self) -> Result<Arc<Ready>, Reject> {
        match &*self.phase.read().unwrap_or_else(|p| p.into_inner()) {
            Phase::Serving(_) if self.certificate_expired() => Err(Reject::unavailable(CERTIFICATE_EXPIRED)),
            Phase::Serving(r) => Ok(r.clone()),
            Phase::Starting => Err(Reject::unavailable("the enclave is starting")),
            Phase::Failed { reason } => Err(Reject::unavailable(&format!("the enclave failed: {reason}"))),
        }
    }

    /// The client of an inference or explanation: its bearer token's hash when inference is
    /// authenticated (its identity for rate limits, budgets and the extraction detector),
    /// charged one request. A refused token is charged to the source (429 once its bucket is
    /// empty), so guessing is rate-limited too.
    fn client(&self, conn: &Conn, headers: &HeaderMap) -> Result<Option<[u8; 32]>, Reject> {
        let identity = match self.authorize(headers) {
            Ok(identity) => identity,
            Err(refused) => {
                self.limit(conn, None)?;
                return Err(refused);
            }
        };
        self.limit(conn, identity)?;
        Ok(identity)
    }

    /// The bearer token's hash when inference is authenticated.
    fn authorize(&self, headers: &HeaderMap) -> Result<Option<[u8; 32]>, Reject> {
        if self.tokens_sha256.is_empty() {
            return Ok(None);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is required")
            })?;
        let got = sha256(token.as_bytes());
        // Comparing digests: timing reveals nothing usable about the token.
        if self.tokens_sha256.binary_search(&got).is_err() {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not valid",
            ));
        }
        Ok(Some(got))
    }

    /// Takes one request from the client's bucket: its bearer token's hash when it presented a
    /// valid one, else its source (an IPv4 address, an IPv6 /64: behind the host's NAT, every
    /// tokenless client shares one). Fresh attestation is keyed by connection instead
    /// ([`Self::limit_connection`]), so that NAT does not make it one bucket for everyone.
    fn limit(&self, conn: &Conn, identity: Option<[u8; 32]>) -> Result<(), Reject> {
        let key = match identity {
            Some(token) => [&[b't'][..], &token].concat(),
            None => format!("s{}", nacre_http::source::Source::from(conn.peer)).into_bytes(),
        };
        self.take(&key)
    }

    fn limit_connection(&self, conn: &Conn) -> Result<(), Reject> {
        self.take(&[&[b'c'][..], &conn.id.to_le_bytes()].concat())
    }

    fn take(&self, key: &[u8]) -> Result<(), Reject> {
        if self.limiter.take(key) {
            Ok(())
        } else {
            Err(Reject::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down"))
        }
    }

    fn finish(&self, route: &'static str, start: Instant, result: Result<Response, Reject>) -> Response {
        let response = match result {
            Ok(r) => r,
            Err(reject) => {
                self.metrics.rejections.get_or_create(&Reason { reason: reject.reason }).inc();
                let mut response = json(reject.status, &ErrorBody { error: reject.message });
                if let Some(secs) = reject.retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
        };
        self.record(route, start, response.status().as_u16(), None);
        response
    }

    /// Counts a request by route and status (and a refusal by reason, unless [`Self::finish`]
    /// has).
    fn record(&self, route: &'static str, start: Instant, status: u16, refused: Option<&'static str>) {
        if let Some(reason) = refused {
            self.metrics.rejections.get_or_create(&Reason { reason }).inc();
        }
        self.metrics.requests.get_or_create(&Request { route, status }).inc();
        self.metrics.latency.get_or_create(&Route { route }).observe(start.elapsed().as_secs_f64());
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// Fresh attestations in progress or waiting for the attester at once.
const ATTEST_QUEUE: usize = 8;

const CERTIFICATE_EXPIRED: &str = "the attested certificate expired and could not be renewed";

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A refused request: the status, a fixed metric label, the message for the client.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    reason: &'static str,
    message: String,
    /// Answered with `Retry-After: N` (seconds): when a retry can succeed.
    retry_after: Option<u64>,
}

impl Reject {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Reject { status, reason, message: message.into(), retry_after: None }
    }
    fn unavailable(message: &str) -> Self {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }
    fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        Reject::new(StatusCode::BAD_REQUEST, reason, message)
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What the connection's TLS session contributes to each request on it.
#[derive(Clone, Debug)]
struct Conn {
    /// Unique per connection: the key of its fresh-attestation limit.
    id: u64,
    peer: IpAddr,
    exporter: Exporter,
    /// The attested certificate this connection's handshake presented, if any.
    cert: Option<Arc<AttestedCert>>,
}

type Shared = State<Arc<App>>;

async fn live(State(app): Shared) -> Response {
    let t = Instant::now();
    app.finish("live", t, Ok(json(StatusCode::OK, &serde_json::json!({"live": true}))))
}

async fn ready(State(app): Shared) -> Response {
    let t = Instant::now();
    let (status, body) = match &*app.phase.read().unwrap_or_else(|p| p.into_inner()) {
        Phase::Serving(_) if app.certificate_expired() => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "state": "certificate_expired", "reason": CERTIFICATE_EXPIRED}),
        ),
        Phase::Serving(_) => (StatusCode::OK, serde_json::json!({"ready": true})),
        Phase::Starting => {
            (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "state": "starting"}))
        }
        Phase::Failed { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "state": "failed", "reason": reason}),
        ),
    };
    app.finish("ready", t, Ok(json(status, &body)))
}

async fn server_metadata(State(app): Shared) -> Response {
    let t = Instant::now();
    let body = serde_json::json!({
        "name": "nacre-enclave",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    });
    app.finish("server_metadata", t, Ok(json(StatusCode::OK, &body)))
}

/// The protocol extensions served, as `GET /v2` lists them.
const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "statistics", "nacre-attestation"];

/// The served model, if the route's `{name}` (and `{version}`, where the route has one) name it.
fn model_of_path(app: &App, path: &[(String, String)]) -> Result<Arc<Ready>, Reject> {
    let ready = app.ready()?;
    let param = |key: &str| path.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let name = param("name").unwrap_or_default();
    if ready.metadata.name != name {
        return Err(Reject::new(StatusCode::NOT_FOUND, "unknown_model", format!("no model named {name:?}")));
    }
    if let Some(version) = param("version")
        && !ready.metadata.versions.iter().any(|v| v == version)
    {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("model {name:?} has no version {version:?}"),
        ));
    }
    Ok(ready)
}

type ModelPath = Path<Vec<(String, String)>>;

async fn model_metadata(State(app): Shared, Path(path): ModelPath) -> Response {
    let t = Instant::now();
    let r = model_of_path(&app, &path).map(|ready| json(StatusCode::OK, &ready.metadata));
    app.finish("model_metadata", t, r)
}

async fn model_ready(State(app): Shared, Path(path): ModelPath) -> Response {
    let t = Instant::now();
    let r = model_of_path(&app, &path)
        .map(|ready| json(StatusCode::OK, &serde_json::json!({"name": ready.metadata.name, "ready": true})));
    app.finish("model_ready", t, r)
}

/// Triton's model-configuration extension.
async fn model_config(State(app): Shared, Path(path): ModelPath) -> Response {
    let t = Instant::now();
    let r = model_of_path(&app, &path)
        .map(|ready| json(StatusCode::OK, &triton::config(&ready.metadata, app.batching_of(&ready))));
    app.finish("model_config", t, r)
}

/// Triton's statistics extension, for the model the route names.
async fn model_stats(State(app): Shared, Path(path): ModelPath) -> Response {
    let t = Instant::now();
    let r = model_of_path(&app, &path).map(|ready| stats_response(&app, &ready));
    app.finish("model_stats", t, r)
}

/// `GET /v2/models/stats`: every served model's (there is one).
async fn all_stats(State(app): Shared) -> Response {
    let t = Instant::now();
    let r = app.ready().map(|ready| stats_response(&app, &ready));
    app.finish("model_stats", t, r)
}

fn stats_response(app: &App, ready: &Ready) -> Response {
    let meta = &ready.metadata;
    let version = meta.versions.first().map_or("", String::as_str);
    json(StatusCode::OK, &serde_json::json!({"model_stats": [app.stats.json(&meta.name, version)]}))
}

async fn attestation(
    State(app): Shared,
    Extension(conn): Extension<Conn>,
    RawQuery(query): RawQuery,
) -> Response {
    let t = Instant::now();
    let r = attestation_inner(&app, &conn, query.as_deref().unwrap_or("")).await;
    app.finish("attestation", t, r)
}

async fn attestation_inner(app: &App, conn: &Conn, query: &str) -> Result<Response, Reject> {
    let ready = app.ready()?;
    app.limit_connection(conn)?;
    // One report at a time comes from the secure processor; a few more may queue, the rest
    // are told to retry rather than pile up blocking threads.
    let _queued = app.attest_queue.try_acquire().map_err(|_| {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many attestations in progress; retry")
    })?;
    let nonce = fresh::parse_query(query).map_err(|e| Reject::bad("bad_nonce", e.to_string()))?;
    // Bound to the certificate this connection was shown, which a renewal since may have
    // replaced for new connections: the client checks the binding against the one it verified.
    let cert = conn
        .cert
        .as_ref()
        .ok_or_else(|| Reject::unavailable("this connection was made before the enclave was attested"))?;
    let report_data = cert
        .fresh_report_data(&nonce, &conn.exporter)
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let evidence = tokio::task::spawn_blocking(move || {
        ready.attester.lock().unwrap_or_else(|p| p.into_inner()).attest(&report_data)
    })
    .await
    .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| Reject::unavailable(&format!("attestation failed: {e}")))?;
    let body = fresh::encode_response(&evidence)
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(fresh::CONTENT_TYPE))], body).into_response())
}

async fn attestation_result(State(app): Shared) -> Response {
    let t = Instant::now();
    let r = app.ready().map(|ready| {
        let ct = HeaderValue::from_static("application/cose; cose-type=\"cose-sign1\"");
        ([(header::CONTENT_TYPE, ct)], ready.attestation_result.clone()).into_response()
    });
    app.finish("attestation_result", t, r)
}

/// `GET /v1/log/release`: the key release's leaf, inclusion proof and best checkpoint
/// (`nacre_tlog::ReleaseProof`); 404 when the service sent none.
async fn release_log(State(app): Shared) -> Response {
    let t = Instant::now();
    let r = app.ready().and_then(|ready| match &ready.release_log {
        Some(log) => Ok(json(StatusCode::OK, &log.proof())),
        None => {
            Err(Reject::new(StatusCode::NOT_FOUND, "not_found", "the key release came without a log proof"))
        }
    });
    app.finish("release_log", t, r)
}

async fn guard_manifest(State(app): Shared) -> Response {
    let t = Instant::now();
    let r = app.ready().and_then(|ready| match &ready.guard {
        Some(g) => {
            let ct = HeaderValue::from_static("application/json");
            Ok(([(header::CONTENT_TYPE, ct)], g.bytes().to_vec()).into_response())
        }
        None => Err(Reject::new(StatusCode::NOT_FOUND, "no_guard", "the model has no guard manifest")),
    });
    app.finish("guard", t, r)
}

async fn metrics(State(app): Shared) -> Response {
    let ct = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, ct)], app.metrics_text()).into_response()
}

async fn not_found(State(app): Shared) -> Response {
    let t = Instant::now();
    app.finish("not_found", t, Err(Reject::new(StatusCode::NOT_FOUND, "not_found", "no such route")))
}

/// Every route has a handler deadline: inference the configured request deadline (it
/// includes the wait for a core), fresh attestation 10 s (one report from the secure
/// processor), the rest 5 s.
pub fn router(app: Arc<App>) -> Router {
    let quick = Deadline::new(Duration::from_secs(5), handler_timeout);
    let mut router = Router::new()
        .route("/v2/health/live", get(live).layer(quick))
        .route("/v2/health/ready", get(ready).layer(quick))
        .route("/v2", get(server_metadata).layer(quick))
        .route("/v2/models/stats", get(all_stats).layer(quick));
    // Every model route also under `/versions/{version}`.
    for base in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
        router = router
            .route(base, get(model_metadata).layer(quick))
            .route(&format!("{base}/ready"), get(model_ready).layer(quick))
            .route(&format!("{base}/config"), get(model_config).layer(quick))
            .route(&format!("{base}/stats"), get(model_stats).layer(quick))
            .route(
                &format!("{base}/infer"),
                post(infer::infer).layer(Deadline::new(app.request_timeout, handler_timeout)),
            )
            .route(
                &format!("{base}/explain"),
                post(explain::explain).layer(Deadline::new(app.request_timeout, handler_timeout)),
            );
    }
    // gRPC: `/inference.GRPCInferenceService/{Method}`, on HTTP/2, under the inference
    // deadline or the client's shorter `grpc-timeout`; messages bounded as REST bodies are.
    let grpc =
        nacre_oip::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(grpc::Grpc {
            app: app.clone(),
        })
        .max_decoding_message_size(app.max_request)
        .max_encoding_message_size(usize::MAX);
    let grpc = tower::ServiceBuilder::new()
        .map_response(|r: axum::http::Response<tonic::body::Body>| r.map(axum::body::Body::new))
        .service(grpc);
    let grpc = grpc_deadline::GrpcDeadline { inner: grpc, limit: app.request_timeout };
    router = router.route_service("/inference.GRPCInferenceService/{method}", grpc);
    router
        .route(fresh::PATH, get(attestation).layer(Deadline::new(Duration::from_secs(10), handler_timeout)))
        .route("/v1/attestation/result", get(attestation_result).layer(quick))
        .route("/v1/guard", get(guard_manifest).layer(quick))
        .route("/v1/log/release", get(release_log).layer(quick))
        .route("/v1/monitoring", get(monitoring::windows).layer(quick))
        .route("/v1/monitoring/metrics", get(monitoring::metrics).layer(quick))
        .route("/metrics", get(metrics).layer(quick))
        .fallback(not_found)
        .with_state(app)
}

fn handler_timeout() -> Response {
    json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "the request did not finish in time".into() })
}

fn busy() -> Response {
    let mut r =
        json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "too many requests in progress".into() });
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn body_timeout() -> Response {
    json(StatusCode::REQUEST_TIMEOUT, &ErrorBody { error: "the request body did not arrive in time".into() })
}

/// Serves HTTPS on `listener` until the process ends: connections admitted, capped and timed
/// by [`nacre_http::conns`] (the configured caps and deadlines).
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let for_acceptor = app.clone();
    let site = nacre_http::server::Site {
        admission: app.admission.clone(),
        router: router(app.clone()),
        exempt: &["/v2/health/live", "/v2/health/ready"],
        // The connection keeps what it is shown now, whatever a renewal swaps in meanwhile.
        acceptor: Box::new(move || {
            let presented = for_acceptor.presented();
            (tokio_rustls::TlsAcceptor::from(presented.tls.clone()), presented)
        }),
        on_tls: Box::new(|presented: Arc<Presented>, tls, info| {
            let exporter = nacre_atls::exporter::<rustls::server::ServerConnectionData>(tls).ok()?;
            Some(Conn { id: info.id, peer: info.peer.ip(), exporter, cert: presented.attested.clone() })
        }),
        busy,
        body_timeout,
    };
    nacre_http::server::serve(site, listener, std::future::pending(), Duration::ZERO).await;
}

#[cfg(test)]
mod tests;
