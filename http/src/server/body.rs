//! A request body with a deadline: past it, reading fails and the request is marked timed out
//! (its answer becomes 408, whatever the handler made of the failed read). At the body's end the
//! request enters its handler ([`Stream::enter_handler`]); if handlers are at capacity, reading
//! fails the same way and the answer becomes 503.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::conns::Stream;

/// Why reading a body failed on this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("the request body did not arrive within its deadline")]
    Deadline,
    #[error("too many requests in progress")]
    AtCapacity,
}

/// What became of a request's body, for the answer.
#[derive(Debug, Default)]
pub struct Outcome {
    pub timed_out: AtomicBool,
    pub at_capacity: AtomicBool,
}

#[derive(Debug)]
pub struct Deadlined {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    stream: Arc<Stream>,
    outcome: Arc<Outcome>,
    done: bool,
}

impl Deadlined {
    pub fn new(inner: Incoming, deadline: Duration, stream: Arc<Stream>, outcome: Arc<Outcome>) -> Self {
        Deadlined { inner, sleep: Box::pin(tokio::time::sleep(deadline)), stream, outcome, done: false }
    }

    /// The body is complete: the request enters its handler, if there is room.
    fn finish(&mut self) -> Result<(), Stopped> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        self.stream.enter_handler().map_err(|_| {
            self.outcome.at_capacity.store(true, Ordering::Relaxed);
            Stopped::AtCapacity
        })
    }
}

impl Body for Deadlined {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => match self.finish() {
                Ok(()) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream()
                    && let Err(e) = self.finish()
                {
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.outcome.timed_out.store(true, Ordering::Relaxed);
                    self.done = true;
                    Poll::Ready(Some(Err(Stopped::Deadline.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
