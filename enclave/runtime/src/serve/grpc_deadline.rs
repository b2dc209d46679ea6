//! The gRPC route's deadline: the server's inference deadline, or the client's `grpc-timeout`
//! when that is shorter (gRPC over HTTP/2: a client states how long it will wait, and work
//! past that is wasted). A missed deadline answers `DEADLINE_EXCEEDED` as gRPC does — a
//! trailers-only response — not REST's 503 body, which a gRPC client could not read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n); `None` if malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The trailers-only answer of a missed deadline.
pub fn deadline_exceeded() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from_static("4"));
    h.insert("grpc-message", HeaderValue::from_static("the request did not finish in time"));
    r
}

#[derive(Clone, Debug)]
pub struct GrpcDeadline<S> {
    pub inner: S,
    pub limit: Duration,
}

impl<S> tower::Service<Request> for GrpcDeadline<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // A malformed grpc-timeout is ignored (the server's own deadline still holds).
        let client = req.headers().get("grpc-timeout").and_then(|v| parse_timeout(v.as_bytes()));
        let limit = client.map_or(self.limit, |c| c.min(self.limit));
        let handler = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, handler).await {
                Ok(answer) => answer,
                Err(_) => Ok(deadline_exceeded()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_timeouts_parse_strictly() {
        assert_eq!(parse_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout(b"10100m"), Some(Duration::from_millis(10100)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [&b""[..], b"S", b"10", b"10s", b"123456789S", b"-1S", b"1.5S", b" 1S"] {
            assert_eq!(parse_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// The shorter of the client's and the server's deadline applies, and a miss is a gRPC
    /// status, not an HTTP error.
    #[tokio::test]
    async fn the_clients_shorter_timeout_ends_the_call_with_deadline_exceeded() {
        use tower::Service;
        let slow = tower::service_fn(|_: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
        });
        let mut svc = GrpcDeadline { inner: slow, limit: Duration::from_secs(60) };
        let req = Request::builder().header("grpc-timeout", "50m").body(axum::body::Body::empty()).unwrap();
        let started = std::time::Instant::now();
        let r = svc.call(req).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "4");
    }
}
