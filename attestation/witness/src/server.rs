//! The witness's HTTPS server: `POST /add-checkpoint` (C2SP tlog-witness) and `GET /healthz`,
//! on the bounded server ([`nacre_http::server`]): a client that stalls holds no slot past its
//! deadline, and one source cannot take every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nacre_tlog::witness::{MAX_REQUEST_BYTES, Refusal, Witness};
use tokio::net::TcpListener;

use crate::config::Config;

/// The C2SP tlog-witness path.
pub const ADD_CHECKPOINT: &str = "/add-checkpoint";

/// Opens the witness of `config`: its key, the logs it follows, its state.
pub fn open(config: &Config) -> Result<Witness, String> {
    Witness::open(config.signer()?, config.log_keys()?, &config.state_file).map_err(|e| e.to_string())
}

/// Serves `witness` on `listener` until `shutdown` resolves.
pub async fn serve(
    witness: Arc<Witness>,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let tls = nacre_http::tls::server_config(&config.tls_cert, &config.tls_key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let l = &config.limits;
    let admission = nacre_http::conns::Admission::new(nacre_http::conns::ConnLimits::new(
        l.max_connections,
        l.connections_per_source,
        Duration::from_secs(l.idle_timeout_secs),
        Duration::from_secs(l.body_timeout_secs),
    ));
    let router = router(witness).route_layer(nacre_http::deadline::Deadline::new(
        Duration::from_secs(l.handler_timeout_secs),
        || plain(StatusCode::SERVICE_UNAVAILABLE, "the request did not finish in time\n"),
    ));
    let site = nacre_http::server::Site {
        admission,
        router,
        exempt: &["/healthz"],
        acceptor: Box::new(move || (acceptor.clone(), ())),
        on_tls: Box::new(|(), _, _| Some(())),
        busy: || {
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "too many requests in progress\n");
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        },
        body_timeout: || plain(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time\n"),
    };
    nacre_http::server::serve(site, listener, shutdown, Duration::from_secs(2)).await;
    Ok(())
}

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route(ADD_CHECKPOINT, post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "no such route\n") })
        .with_state(witness)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text.to_owned()).into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // The state write is a file sync: off the async workers.
    let answer = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await;
    match answer {
        Ok(Ok(cosignature)) => {
            tracing::info!("checkpoint cosigned");
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], cosignature)
                .into_response()
        }
        Ok(Err(refusal)) => refused(&refusal),
        Err(e) => {
            tracing::error!(error = %e, "witness handler panicked");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match refusal {
        Refusal::Fork { .. } | Refusal::Rollback { .. } => tracing::warn!(%refusal, "checkpoint refused"),
        Refusal::State(_) => tracing::error!(%refusal, "witness state"),
        _ => tracing::info!(%refusal, "checkpoint refused"),
    }
    match refusal.latest_size() {
        // tlog-witness: a 409 tells the log the size this witness holds, so it can retry.
        Some(size) if status == StatusCode::CONFLICT => {
            (status, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{size}\n")).into_response()
        }
        _ => plain(status, &format!("{refusal}\n")),
    }
}
