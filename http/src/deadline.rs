//! Handler deadlines, declared per route: `route(path, post(h).layer(Deadline::new(d, answer)))`,
//! or for every route of a router with `route_layer`. A route that runs long (an explanation,
//! say) declares a longer one; every route has one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;

/// A layer that answers `on_timeout()` when the handler has not answered within `limit`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    limit: Duration,
    on_timeout: fn() -> Response,
}

impl Deadline {
    pub fn new(limit: Duration, on_timeout: fn() -> Response) -> Self {
        Deadline { limit, on_timeout }
    }
}

impl<S> tower::Layer<S> for Deadline {
    type Service = Deadlined<S>;
    fn layer(&self, inner: S) -> Deadlined<S> {
        Deadlined { inner, deadline: *self }
    }
}

#[derive(Clone, Debug)]
pub struct Deadlined<S> {
    inner: S,
    deadline: Deadline,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S> tower::Service<Request> for Deadlined<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Deadline { limit, on_timeout } = self.deadline;
        let handler = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, handler).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::debug!(?limit, "handler deadline passed");
                    Ok(on_timeout())
                }
            }
        })
    }
}
