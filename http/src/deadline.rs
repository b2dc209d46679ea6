//! Handler deadlines, declared per route: `route(path, post(h).layer(deadline(d, answer)))`.
//! A route that runs long (an explanation, say) declares a longer one; every route declares one.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;

type Answer = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

/// A layer that answers `on_timeout()` when the handler has not answered within `limit`.
pub fn deadline(
    limit: Duration,
    on_timeout: fn() -> Response,
) -> middleware::FromFnLayer<impl Fn(Request, Next) -> Answer + Clone, (), (Request, Next)> {
    middleware::from_fn(move |req: Request, next: Next| {
        Box::pin(async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::debug!(?limit, "handler deadline passed");
                    on_timeout()
                }
            }
        }) as Answer
    })
}
