//! A request body parsed as it arrives: the body's chunks go through a channel of two to a
//! blocking parser that reads them as a [`std::io::Read`] ([`BodyReader`]), and the parser's
//! first refusal ends the request without reading the rest of the body.
//!
//! Held at once per request: the chunks in the channel (two), the one the parser is reading
//! and the one waiting to be sent, each as large as the HTTP layer makes it.
//!
//! A small body of declared length ([`INLINE`] bytes at most) is read whole first and parsed
//! on the calling task instead: handing a few hundred bytes to a blocking thread and back
//! costs more than parsing them (most inference requests are that small).

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// Why a body was not parsed, besides the parser's own refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More bytes than the limit (413).
    #[error("the request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// Reading the body failed: the client went away, or the body's deadline passed (the
    /// HTTP layer answers that one itself).
    #[error("reading the request body: {0}")]
    Read(axum::Error),
    /// The parser panicked.
    #[error("the request could not be parsed")]
    Parser,
}

/// The body's failure, or the parser's.
#[derive(Debug)]
pub enum Streamed<E> {
    Body(BodyError),
    Parse(E),
}

/// What goes through the channel: a chunk, or the body's end. A channel closed without the
/// end means the body was cut short, which the reader reports as an error (so that a
/// truncated body never parses as a complete one).
enum Piece {
    Chunk(Bytes),
    End,
}

/// Largest body parsed on the calling task (read whole first).
pub const INLINE: u64 = 16 << 10;

/// The body as the parser reads it: from the channel, blocking until the next chunk arrives
/// (so it must run on a blocking thread), or from chunks read whole before.
#[derive(Debug)]
pub struct BodyReader {
    chunks: Source,
    current: Bytes,
    ended: bool,
}

#[derive(Debug)]
enum Source {
    Channel(mpsc::Receiver<Piece>),
    Whole(std::collections::VecDeque<Bytes>),
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Piece::Chunk(b) => write!(f, "Chunk({} bytes)", b.len()),
            Piece::End => f.write_str("End"),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            let next = match &mut self.chunks {
                Source::Channel(rx) => rx.blocking_recv(),
                Source::Whole(chunks) => Some(chunks.pop_front().map_or(Piece::End, Piece::Chunk)),
            };
            match next {
                Some(Piece::Chunk(b)) => self.current = b,
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the request body was cut short",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Runs `parse` on a blocking thread over `body` as it arrives, at most `limit` bytes of it.
/// Returns as soon as the parser does (a refusal leaves the rest of the body unread), or
/// when the body fails or passes the limit (the parser then sees the body cut short and
/// stops; its result is dropped).
pub async fn parse<T, E, F>(body: Body, limit: usize, parse: F) -> Result<T, Streamed<E>>
where
    F: FnOnce(BodyReader) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let small = hyper::body::Body::size_hint(&body).exact().is_some_and(|n| n <= INLINE);
    if small {
        return parse_whole(body, limit, parse).await;
    }
    let (tx, rx) = mpsc::channel(2);
    let reader = BodyReader { chunks: Source::Channel(rx), current: Bytes::new(), ended: false };
    let mut parser = tokio::task::spawn_blocking(move || parse(reader));
    let finished = |joined: Result<Result<T, E>, tokio::task::JoinError>| match joined {
        Ok(r) => r.map_err(Streamed::Parse),
        Err(_) => Err(Streamed::Body(BodyError::Parser)),
    };
    let mut body = body;
    let mut read = 0usize;
    let failed = loop {
        let frame = tokio::select! {
            biased;
            joined = &mut parser => return finished(joined),
            frame = body.frame() => frame,
        };
        match frame {
            None => {
                // The parser may have stopped already; then the send fails and it has its
                // result.
                let _ = tx.send(Piece::End).await;
                drop(tx);
                return finished(parser.await);
            }
            Some(Err(e)) => break BodyError::Read(e),
            Some(Ok(frame)) => {
                // Trailers carry nothing for the parser.
                let Ok(chunk) = frame.into_data() else { continue };
                read = read.saturating_add(chunk.len());
                if read > limit {
                    break BodyError::TooLarge { limit };
                }
                if tx.send(Piece::Chunk(chunk)).await.is_err() {
                    // The parser has stopped reading: it is done.
                    return finished(parser.await);
                }
            }
        }
    };
    // The parser sees the body cut short; wait for it so that what it holds is released
    // before the answer goes out.
    drop(tx);
    let _ = parser.await;
    Err(Streamed::Body(failed))
}

/// [`parse`] of a small body: read whole (within `limit`), then parsed on this task.
async fn parse_whole<T, E, F>(mut body: Body, limit: usize, parse: F) -> Result<T, Streamed<E>>
where
    F: FnOnce(BodyReader) -> Result<T, E>,
{
    let mut chunks = std::collections::VecDeque::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Streamed::Body(BodyError::Read(e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        read = read.saturating_add(chunk.len());
        if read > limit {
            return Err(Streamed::Body(BodyError::TooLarge { limit }));
        }
        chunks.push_back(chunk);
    }
    let reader = BodyReader { chunks: Source::Whole(chunks), current: Bytes::new(), ended: false };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(reader)))
        .map_err(|_| Streamed::Body(BodyError::Parser))?
        .map_err(Streamed::Parse)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    /// A body of given chunks, then an error or (`hang`) nothing ever again; counts the
    /// chunks taken from it.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        fail_at_end: bool,
        hang: bool,
        taken: Arc<AtomicUsize>,
    }

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if let Some(c) = self.chunks.pop_front() {
                self.taken.fetch_add(1, Ordering::SeqCst);
                return Poll::Ready(Some(Ok(Frame::data(c))));
            }
            if self.hang {
                Poll::Pending
            } else if self.fail_at_end {
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away"))))
            } else {
                Poll::Ready(None)
            }
        }
    }

    fn body(chunks: &[&[u8]], fail_at_end: bool, hang: bool) -> (Body, Arc<AtomicUsize>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let chunks = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        (Body::new(Chunks { chunks, fail_at_end, hang, taken: taken.clone() }), taken)
    }

    fn read_all(mut r: BodyReader) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn the_parser_reads_the_whole_body() {
        let (b, _) = body(&[b"hello ", b"", b"world"], false, false);
        let got = rt().block_on(parse(b, 100, read_all)).unwrap();
        assert_eq!(got, b"hello world");
    }

    /// A small body of declared length is read whole and parsed on the calling task (a
    /// `current_thread` runtime has no blocking pool thread to hand it to first), with the
    /// same limit and the same refusals.
    #[test]
    fn a_small_body_of_declared_length_is_parsed_on_the_task() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let on_task = std::thread::current().id();
        let got = rt.block_on(parse(Body::from("hello world"), 100, move |r| {
            assert_eq!(std::thread::current().id(), on_task);
            read_all(r)
        }));
        assert_eq!(got.unwrap(), b"hello world");
        let r = rt.block_on(parse(Body::from("0123456789"), 9, read_all));
        assert!(matches!(r, Err(Streamed::Body(BodyError::TooLarge { limit: 9 }))));
        let r = rt.block_on(parse(Body::from("x"), 9, |_| Err::<(), _>(io::Error::other("refused"))));
        assert!(matches!(r, Err(Streamed::Parse(e)) if e.to_string() == "refused"));
        let r = rt.block_on(parse(Body::from("x"), 9, |_| -> Result<(), io::Error> { panic!("parser bug") }));
        assert!(matches!(r, Err(Streamed::Body(BodyError::Parser))));
        // Past INLINE: the blocking pool, as before.
        let big = vec![b'y'; INLINE as usize + 1];
        let r = rt.block_on(parse(Body::from(big.clone()), usize::MAX, move |r| {
            assert_ne!(std::thread::current().id(), on_task);
            read_all(r)
        }));
        assert_eq!(r.unwrap(), big);
    }

    #[test]
    fn a_refusal_stops_reading() {
        let chunks: Vec<&[u8]> = vec![b"x"; 1000];
        let (b, taken) = body(&chunks, false, true);
        let r = rt().block_on(parse(b, usize::MAX, |mut r: BodyReader| {
            let mut first = [0u8; 1];
            r.read_exact(&mut first)?;
            Err::<(), io::Error>(io::Error::other("refused"))
        }));
        assert!(matches!(r, Err(Streamed::Parse(e)) if e.to_string() == "refused"));
        // The chunk read, the two in the channel, one waiting to be sent.
        assert!(taken.load(Ordering::SeqCst) <= 4, "{}", taken.load(Ordering::SeqCst));
    }

    #[test]
    fn a_body_past_the_limit_is_refused_and_the_parser_sees_it_cut() {
        let (b, _) = body(&[b"0123456789", b"0123456789"], false, false);
        let r = rt().block_on(parse(b, 15, read_all));
        assert!(matches!(r, Err(Streamed::Body(BodyError::TooLarge { limit: 15 }))));
        // Exactly at the limit is fine.
        let (b, _) = body(&[b"0123456789", b"01234"], false, false);
        assert_eq!(rt().block_on(parse(b, 15, read_all)).unwrap().len(), 15);
    }

    /// Issue 14, end to end: a [1, 30] input whose body goes on with millions of numbers is
    /// refused at the 31st, having taken a few 4 KiB chunks of the body, and what the parse
    /// held is back in the budget when the answer is ready.
    #[test]
    fn the_parser_refuses_a_body_before_it_is_all_sent() {
        use crate::serve::budget::Budget;
        use crate::serve::kserve::{self, Invalid, ParseError, TensorSpec};

        let header = br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,30],"data":["#;
        let numbers = b"1,".repeat(2048);
        let mut chunks: Vec<&[u8]> = vec![header];
        chunks.extend(std::iter::repeat_n(&numbers[..], 4096));
        let (b, taken) = body(&chunks, false, true);
        let x = TensorSpec { name: "x".into(), datatype: "FP32".into(), shape: vec![1, 30] };
        let schema = kserve::Schema::new(&[x], &[]).unwrap();
        let budget = Budget::new(64 << 20);
        let for_parser = budget.clone();
        let r = rt().block_on(parse(b, 16 << 20, move |reader| {
            let options = kserve::Options { allow_non_finite: false };
            kserve::parse_request(
                reader,
                kserve::Framing::Json,
                &schema,
                options,
                &mut for_parser.reservation(),
            )
        }));
        match r {
            Err(Streamed::Parse(ParseError::Invalid(Invalid::Overflow { at_least: 31, .. }))) => {}
            other => panic!("{other:?}"),
        }
        assert!(taken.load(Ordering::SeqCst) <= 8, "{} chunks", taken.load(Ordering::SeqCst));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_failed_body_is_an_error_never_a_short_body() {
        let (b, _) = body(&[b"{\"inputs\": []}"], true, false);
        let cut = Arc::new(AtomicUsize::new(0));
        let seen = cut.clone();
        let r = rt().block_on(parse(b, 100, move |r| {
            let got = read_all(r);
            if got.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            got
        }));
        match r {
            Err(Streamed::Body(BodyError::Read(e))) => assert!(e.to_string().contains("went away"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(cut.load(Ordering::SeqCst), 1, "the parser saw the body cut short");
    }
}
