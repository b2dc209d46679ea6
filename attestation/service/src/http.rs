//! HTTPS transport: rustls (aws-lc-rs provider, TLS 1.2/1.3), HTTP/1.1 with keep-alive, CBOR
//! bodies under a per-route size limit, typed CBOR error bodies, per-route latency metrics.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::BodyExt;
use nacre_protocol::messages::{
    CONTENT_TYPE, ChallengeRequest, KeyCreate, KeyRevoke, KeyRollback, KeyRotate, PolicySet, ReferenceImport,
    ReleaseRequest, ResultKey, path,
};
use nacre_protocol::{ErrorBody, ErrorCode, cbor};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::service::Service;
use crate::tokens::Role;

mod log;

/// The peer address of the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Source(pub IpAddr);

fn cbor_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match cbor::to_vec(value) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

struct Reply(Result<Response, ErrorBody>);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(r) => r,
            Err(e) => {
                let status =
                    StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                cbor_response(status, &e)
            }
        }
    }
}

fn ok<T: Serialize>(value: &T) -> Result<Response, ErrorBody> {
    Ok(cbor_response(StatusCode::OK, value))
}

/// Reads a CBOR body of at most `limit` bytes and decodes it strictly.
async fn read_cbor<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ErrorBody> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != CONTENT_TYPE {
        return Err(ErrorBody::new(
            ErrorCode::UnsupportedMediaType,
            format!("content type must be {CONTENT_TYPE}"),
        ));
    }
    let too_large = || ErrorBody::new(ErrorCode::TooLarge, format!("body exceeds {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                ErrorBody::new(ErrorCode::Malformed, "body could not be read")
            }
        })?
        .to_bytes();
    cbor::from_slice(&bytes).map_err(|e| ErrorBody::new(ErrorCode::Malformed, e.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

type Svc = State<Arc<Service>>;

/// The common front of every admin change: admin token checked and the caller admitted (see
/// [`Service::authorize`]) before the body is read, body decoded under the admin limit.
async fn admin_request<T: DeserializeOwned>(
    svc: &Service,
    src: IpAddr,
    headers: &HeaderMap,
    body: Body,
    action: &'static str,
) -> Result<(crate::tokens::Principal, T), ErrorBody> {
    let who = svc.authorize(bearer(headers), Role::Admin, action, src).await?;
    Ok((who, read_cbor(headers, body, svc.limits().admin_body_max).await?))
}

/// What a caller who has not authenticated (the guest's challenge and release) is told: the
/// code and the check, with a message that depends on nothing else. The full reason names
/// expected values, measurements, key versions, server paths; it goes to the audit log (a
/// denial's record) and to this service's log, never to an unauthenticated caller.
/// Authenticated admin and auditor calls get the full reason.
fn public(e: ErrorBody) -> ErrorBody {
    tracing::debug!(code = %e.code, check = ?e.check, reason = %e.reason, "refusal details (not sent)");
    ErrorBody { reason: public_reason(e.code).to_owned(), ..e }
}

/// The one message an unauthenticated caller gets for `code`.
pub fn public_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "the request is malformed",
        ErrorCode::TooLarge => "the request body is too large",
        ErrorCode::UnsupportedMediaType => "the content type must be application/cbor",
        ErrorCode::NotFound => "not found",
        ErrorCode::UnknownKey => "the key or key version is unknown",
        ErrorCode::NonceInvalid => "the challenge nonce is invalid",
        ErrorCode::NonceExpired => "the challenge nonce has expired",
        ErrorCode::NonceReplayed => "the challenge nonce was already used",
        ErrorCode::NonceOtherKey => "the challenge nonce was issued for another key",
        ErrorCode::Evidence => "the evidence was refused",
        ErrorCode::KeyRevoked => "the key is revoked",
        ErrorCode::VersionRevoked => "the key version is revoked",
        ErrorCode::VersionNotAllowed => "the key version is not allowed",
        ErrorCode::OutsideWindow => "outside the key's release window",
        ErrorCode::RateLimited => "too many refused requests; retry later",
        ErrorCode::Unauthorized => "a valid bearer token is required",
        ErrorCode::Unavailable => "temporarily unavailable; retry with a new challenge",
        ErrorCode::Internal => "internal error",
        ErrorCode::Timeout => "the request did not arrive in time",
        ErrorCode::SignatureRequired => "the key's release policy requires a signed model",
        ErrorCode::UntrustedSigner => "the model is not signed by a signer the key's release policy names",
        ErrorCode::ModelMismatch => "the model signature does not match the model",
        _ => "refused",
    }
}

/// A route open to callers who have not authenticated: timed, and answered per [`public`].
async fn public_route(
    svc: &Service,
    route: &str,
    f: impl Future<Output = Result<Response, ErrorBody>>,
) -> Reply {
    let Reply(out) = timed(svc, route, f).await;
    Reply(out.map_err(public))
}

/// Times a handler into the route histogram.
async fn timed(svc: &Service, route: &str, f: impl Future<Output = Result<Response, ErrorBody>>) -> Reply {
    let t = Instant::now();
    let out = f.await;
    svc.metrics.route(route, t.elapsed().as_secs_f64());
    Reply(out)
}

async fn challenge(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    public_route(&svc.clone(), "challenge", async move {
        svc.admit(src)?;
        let req: ChallengeRequest = read_cbor(&headers, body, svc.limits().challenge_body_max)
            .await
            .inspect_err(|e| svc.charge(src, e.code))?;
        ok(&svc.challenge(&req).inspect_err(|e| svc.charge(src, e.code))?)
    })
    .await
}

async fn release(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    public_route(&svc.clone(), "release", async move {
        svc.admit(src)?;
        let req: ReleaseRequest = read_cbor(&headers, body, svc.limits().release_body_max)
            .await
            .inspect_err(|e| svc.charge(src, e.code))?;
        ok(&svc.release(req, src).await?)
    })
    .await
}

async fn result_key(State(svc): Svc) -> Reply {
    Reply(ok(&ResultKey { ed25519: serde_bytes::ByteBuf::from(svc.result_public_key().to_vec()) }))
}

async fn list_keys(State(svc): Svc, Extension(Source(src)): Extension<Source>, headers: HeaderMap) -> Reply {
    timed(&svc.clone(), "admin", async move {
        svc.authorize(bearer(&headers), Role::Auditor, "keys list", src).await?;
        ok(&svc.list_keys().await?)
    })
    .await
}

async fn get_key(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        svc.authorize(bearer(&headers), Role::Auditor, "keys show", src).await?;
        ok(&svc.key_info(&id).await?)
    })
    .await
}

async fn create_key(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let (who, req): (_, KeyCreate) = admin_request(&svc, src, &headers, body, "key_create").await?;
        let info = svc.create_key(&who, &req, src).await?;
        Ok(cbor_response(StatusCode::CREATED, &info))
    })
    .await
}

async fn rotate(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let (who, req): (_, KeyRotate) = admin_request(&svc, src, &headers, body, "key_rotate").await?;
        ok(&svc.rotate(&who, &id, &req, src).await?)
    })
    .await
}

async fn revoke(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let (who, req): (_, KeyRevoke) = admin_request(&svc, src, &headers, body, "key_revoke").await?;
        ok(&svc.revoke(&who, &id, &req, src).await?)
    })
    .await
}

async fn rollback(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let (who, req): (_, KeyRollback) = admin_request(&svc, src, &headers, body, "key_rollback").await?;
        ok(&svc.rollback(&who, &id, &req, src).await?)
    })
    .await
}

async fn set_policy(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let (who, req): (_, PolicySet) = admin_request(&svc, src, &headers, body, "policy_set").await?;
        ok(&svc.set_policy(&who, &id, &req, src).await?)
    })
    .await
}

async fn import_reference(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        let who = svc.authorize(bearer(&headers), Role::Admin, "reference_import", src).await?;
        // Like every other refusal of an authenticated import, an unreadable body is audited.
        let req: ReferenceImport = match read_cbor(&headers, body, svc.limits().admin_body_max).await {
            Ok(req) => req,
            Err(e) => return Err(svc.refuse_import(&who, e, src).await),
        };
        ok(&svc.import_reference(&who, &req, src).await?)
    })
    .await
}

async fn list_references(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        svc.authorize(bearer(&headers), Role::Auditor, "reference list", src).await?;
        ok(&svc.list_references().await?)
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_page")]
    limit: i64,
}

fn default_page() -> i64 {
    1000
}

async fn audit(
    State(svc): Svc,
    Extension(Source(src)): Extension<Source>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    timed(&svc.clone(), "admin", async move {
        svc.authorize(bearer(&headers), Role::Auditor, "audit export", src).await?;
        let Query(q) = q.map_err(|e| ErrorBody::new(ErrorCode::Malformed, e.body_text()))?;
        ok(&svc.audit_page(q.after, q.limit).await?)
    })
    .await
}

/// Prometheus metrics, for a token of the metrics role or above: refusal counts by reason, per-route latencies and admin actions describe the keys' use and
/// the service's load, which is not for anyone who can reach the port.
async fn metrics(State(svc): Svc, Extension(Source(src)): Extension<Source>, headers: HeaderMap) -> Response {
    match svc.authorize(bearer(&headers), Role::Metrics, "metrics", src).await {
        Ok(_) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], svc.metrics.encode()).into_response()
        }
        Err(e) => Reply(Err(e)).into_response(),
    }
}

async fn not_found() -> Reply {
    Reply(Err(public(ErrorBody::new(ErrorCode::NotFound, "no such route"))))
}

pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route(path::CHALLENGE, post(challenge))
        .route(path::RELEASE, post(release))
        .route(path::RESULT_KEY, get(result_key))
        .route(path::KEYS, get(list_keys).post(create_key))
        .route("/v1/admin/keys/{id}", get(get_key))
        .route("/v1/admin/keys/{id}/versions", post(rotate))
        .route("/v1/admin/keys/{id}/revoke", post(revoke))
        .route("/v1/admin/keys/{id}/rollback", post(rollback))
        .route("/v1/admin/keys/{id}/policy", put(set_policy))
        .route(path::REFERENCE_VALUES, get(list_references).post(import_reference))
        .route(path::AUDIT, get(audit))
        .route(path::METRICS, get(metrics))
        .route("/v1/log/checkpoint", get(log::checkpoint))
        .route("/v1/log/key", get(log::key))
        .route("/v1/log/tile/{*rest}", get(log::tile))
        .route("/v1/log/witnessed/{index}", get(log::witnessed))
        .route(path::HEALTHZ, get(|| async { "ok" }))
        .route(path::READYZ, get(ready))
        .fallback(not_found)
        .with_state(svc)
}

/// Readiness: whether the database answers within 2 s. A replica that cannot reach it leaves
/// the load balancer (Kubernetes' readiness probe) rather than fail every release; liveness
/// (`/healthz`) stays up, since restarting would not bring the database back.
async fn ready(State(svc): State<Arc<Service>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), svc.store().log_size()).await {
        Ok(Ok(_)) => "ready".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database refused");
            (StatusCode::SERVICE_UNAVAILABLE, "the database refused").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the database did not answer in 2 s").into_response(),
    }
}

/// Loads the service's certificate chain and key into a rustls server configuration.
pub fn tls_config(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    nacre_http::tls::server_config(cert_pem, key_pem)
}

/// The answer to a request refused before its handler because handlers are at capacity.
fn busy() -> Response {
    let mut r = Reply(Err(public(ErrorBody::new(ErrorCode::Unavailable, "too many requests in progress"))))
        .into_response();
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

fn body_timeout() -> Response {
    Reply(Err(public(ErrorBody::new(ErrorCode::Timeout, "the body did not arrive in time")))).into_response()
}

fn handler_timeout() -> Response {
    Reply(Err(public(ErrorBody::new(ErrorCode::Unavailable, "the request did not finish in time"))))
        .into_response()
}

/// The connection caps and deadlines of `limits`.
pub fn conn_limits(limits: &crate::config::Limits) -> nacre_http::conns::ConnLimits {
    nacre_http::conns::ConnLimits::new(
        limits.max_connections,
        limits.connections_per_source,
        Duration::from_secs(limits.idle_timeout_secs),
        Duration::from_secs(limits.body_timeout_secs),
    )
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests a few seconds. Every response to a release is sent after its commit, so
/// an abrupt stop loses no audit record of a key that left. Connections are admitted, capped
/// and timed by [`nacre_http::conns`]; every handler has the configured deadline.
pub async fn serve(
    svc: Arc<Service>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let handler_deadline = Duration::from_secs(svc.limits().handler_timeout_secs);
    let router = router(svc.clone())
        .route_layer(nacre_http::deadline::Deadline::new(handler_deadline, handler_timeout));
    let admission = svc.admission().clone();
    let store = svc.store().clone();
    let gc = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = store.gc_nonces().await {
                tracing::warn!(error = %e, "nonce garbage collection failed");
            }
        }
    });
    let pushers: Vec<_> = svc
        .witnesses()
        .iter()
        .map(|peer| tokio::spawn(crate::witnesses::run(svc.store().clone(), peer.clone())))
        .collect();
    let site = nacre_http::server::Site {
        admission,
        router,
        exempt: &[path::HEALTHZ, path::READYZ],
        acceptor: Box::new(move || (acceptor.clone(), ())),
        on_tls: Box::new(|(), _, info| Some(Source(info.peer.ip()))),
        busy,
        body_timeout,
    };
    nacre_http::server::serve(site, listener, shutdown, Duration::from_secs(5)).await;
    gc.abort();
    pushers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}
