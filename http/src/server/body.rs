//! A request body with a deadline: past it, reading fails, the request is marked timed out (its
//! answer becomes 408, whatever the handler made of the failed read), and the connection's phase
//! moves to `Handler` when the body has been read to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::conns::{Phase, Slot};

/// The error a body past its deadline fails with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within its deadline")]
pub struct BodyTimeout;

#[derive(Debug)]
pub struct Deadlined {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    slot: Arc<Slot>,
    timed_out: Arc<AtomicBool>,
    done: bool,
}

impl Deadlined {
    pub fn new(inner: Incoming, deadline: Duration, slot: Arc<Slot>, timed_out: Arc<AtomicBool>) -> Self {
        Deadlined { inner, sleep: Box::pin(tokio::time::sleep(deadline)), slot, timed_out, done: false }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.slot.set_phase(Phase::Handler);
        }
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
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timed_out.store(true, Ordering::Relaxed);
                    self.done = true;
                    Poll::Ready(Some(Err(BodyTimeout.into())))
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
