//! The accept loop both servers run: admission ([`crate::conns`]), the TLS handshake under its
//! deadline, then HTTP/1.1 (keep-alive) with each request's phase tracked, its body under the
//! body deadline ([`body`]) and requests past the handler cap answered at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::conns::{Admission, Phase, Slot};
use crate::source::Source;

pub mod body;

/// What every request carries as an extension: which connection it came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique per connection for the server's lifetime (a per-connection rate-limit key).
    pub id: u64,
    pub peer: SocketAddr,
    pub source: Source,
}

/// See [`Site::on_tls`].
pub type OnTls<C, E> = Box<dyn Fn(C, &rustls::ServerConnection, ConnInfo) -> Option<E> + Send + Sync>;

/// How a server plugs into [`serve`].
pub struct Site<C, E> {
    pub admission: Arc<Admission>,
    pub router: Router,
    /// Paths answered even when handlers are at capacity (health checks).
    pub exempt: &'static [&'static str],
    /// The acceptor for a new connection, with what the connection keeps from this moment
    /// (the enclave: the certificate it is shown).
    pub acceptor: Box<dyn Fn() -> (TlsAcceptor, C) + Send + Sync>,
    /// After the handshake: the extension every request on the connection carries, or None to
    /// close it.
    pub on_tls: OnTls<C, E>,
    /// The answer to a request refused because handlers are at capacity (503, Retry-After).
    pub busy: fn() -> Response,
    /// The answer to a request whose body missed its deadline (408).
    pub body_timeout: fn() -> Response,
}

impl<C, E> std::fmt::Debug for Site<C, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("admission", &self.admission).finish_non_exhaustive()
    }
}

/// Serves `site` on `listener` until `shutdown` resolves, then stops accepting and gives open
/// connections up to `grace` to finish.
pub async fn serve<C, E>(
    site: Site<C, E>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
) where
    C: Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let site = Arc::new(site);
    let watchdog = tokio::spawn(site.admission.clone().watch());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let source = Source::from(peer.ip());
        let slot = match site.admission.admit(source) {
            Ok(slot) => slot,
            Err(e) => {
                site.admission.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, reason = %e, "connection refused");
                continue;
            }
        };
        let site = site.clone();
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            tokio::select! {
                () = connection(&site, tcp, peer, slot.clone()) => {}
                () = slot.closed() => tracing::debug!(%peer, "connection closed: displaced or past its deadline"),
            }
        });
    }
    let deadline = tokio::time::Instant::now() + grace;
    while site.admission.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    watchdog.abort();
}

async fn connection<C, E>(
    site: &Arc<Site<C, E>>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
) where
    C: Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let _ = tcp.set_nodelay(true);
    let (acceptor, kept) = (site.acceptor)();
    // The watchdog closes a handshake past its deadline.
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    };
    let info = ConnInfo { id: slot.id(), peer, source: slot.source() };
    let Some(extension) = (site.on_tls)(kept, tls.get_ref().1, info) else { return };
    slot.set_phase(Phase::Waiting);
    let service = {
        let (site, slot) = (site.clone(), slot.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (site, slot, extension) = (site.clone(), slot.clone(), extension.clone());
            async move { Ok::<_, std::convert::Infallible>(request(&site, &slot, info, extension, req).await) }
        })
    };
    let limits = site.admission.limits();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(H2);
    let io = hyper_util::rt::TokioIo::new(tls);
    let served = if h2 {
        // HTTP/2 (gRPC, and every route for clients that speak it): streams are requests, each
        // tracked as HTTP/1.1's are; the connection waits (and idles out) when none is open.
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            // Rapid-reset floods: a few resets, then the connection goes.
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_PENDING_RESETS)
            .serve_connection(io, service)
            .await
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true)
            .serve_connection(io, service)
            .await
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The ALPN name of HTTP/2. Servers offer it with `http/1.1` ([`ALPN`]).
pub const H2: &[u8] = b"h2";
/// What a server's TLS configuration offers, preferred first.
pub const ALPN: [&[u8]; 2] = [H2, b"http/1.1"];
/// Requests one HTTP/2 connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 32;
const H2_MAX_PENDING_RESETS: usize = 16;

async fn request<C, E>(
    site: &Site<C, E>,
    slot: &Arc<Slot>,
    info: ConnInfo,
    extension: E,
    req: hyper::Request<Incoming>,
) -> Response
where
    E: Clone + Send + Sync + 'static,
{
    use hyper::body::Body as _;
    let exempt = site.exempt.contains(&req.uri().path());
    // Ends the request's part in the connection's phase however this future ends (a dropped
    // connection included).
    let Ok(stream) = slot.begin_request(exempt, !req.body().is_end_stream()) else {
        return (site.busy)();
    };
    let stream = Arc::new(stream);
    let deadline = site.admission.limits().body_timeout;
    let outcome = Arc::new(body::Outcome::default());
    let mut req = req
        .map(|b| axum::body::Body::new(body::Deadlined::new(b, deadline, stream.clone(), outcome.clone())));
    req.extensions_mut().insert(info);
    req.extensions_mut().insert(extension);
    let response = match tower::ServiceExt::oneshot(site.router.clone(), req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if outcome.timed_out.load(Ordering::Relaxed) {
        return (site.body_timeout)();
    }
    if outcome.at_capacity.load(Ordering::Relaxed) {
        return (site.busy)();
    }
    response
}
