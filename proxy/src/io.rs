//! The downstream stream: bytes already read (e.g. past a PROXY header) are replayed first,
//! traffic is metered so that idle connections can be closed and byte counts logged, and an
//! HTTP connection's first request head must arrive within a deadline counted from accept.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the head deadline did to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTimeout {
    /// Closed without an answer (nothing was sent, or TLS: there is no plain channel).
    Closed,
    /// A partial request was answered with 408 and closed.
    Answered,
}

/// Counters shared between a connection's stream and whoever watches it.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Request heads received on this connection (set by the HTTP handler).
    requests: AtomicU64,
    head_timeout: AtomicU8,
}

impl Traffic {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A request head arrived: the head deadline no longer applies.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn head_timeout(&self) -> Option<HeadTimeout> {
        match self.head_timeout.load(Ordering::Relaxed) {
            1 => Some(HeadTimeout::Closed),
            2 => Some(HeadTimeout::Answered),
            _ => None,
        }
    }

    pub fn totals(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Resolves once nothing has moved for at least `limit` (at most 1.5 × `limit`). The
    /// counters are sampled, so reads and writes never read the clock.
    pub async fn idle_timeout(&self, limit: Duration) {
        let step = (limit / 2).max(Duration::from_millis(10));
        let mut last = self.totals();
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(step).await;
            let now = self.totals();
            if now == last {
                quiet += step;
                if quiet >= limit {
                    return;
                }
            } else {
                quiet = Duration::ZERO;
                last = now;
            }
        }
    }
}

/// Sent when a plaintext client started a request but did not finish its head in time.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// An HTTP/2 connection starts with this; a 408 in HTTP/1 words would mean nothing to it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

struct HeadDeadline {
    sleep: Pin<Box<Sleep>>,
    /// The stream carries HTTP in the clear, so a 408 can be written on it.
    plaintext: bool,
    /// The first bytes the client sent, to tell HTTP/1 from HTTP/2.
    first: [u8; 14],
    first_len: usize,
}

pub struct ClientStream<S> {
    prefix: Bytes,
    inner: S,
    traffic: Arc<Traffic>,
    head: Option<HeadDeadline>,
}

impl<S> ClientStream<S> {
    pub fn new(inner: S, prefix: Bytes, traffic: Arc<Traffic>) -> Self {
        Self {
            prefix,
            inner,
            traffic,
            head: None,
        }
    }

    /// The first request head must have arrived by `deadline`, or the connection is closed
    /// (answered with 408 first when `plaintext` and the client had started a request).
    pub fn with_head_deadline(mut self, deadline: Instant, plaintext: bool) -> Self {
        self.head = Some(HeadDeadline {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            plaintext,
            first: [0; 14],
            first_len: 0,
        });
        self
    }
}

impl<S: AsyncWrite + Unpin> ClientStream<S> {
    /// `Some(error)` when the head deadline passed without a request head.
    fn check_head_deadline(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let head = self.head.as_mut()?;
        if self.traffic.requests.load(Ordering::Relaxed) > 0 {
            self.head = None;
            return None;
        }
        if head.sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        let started = head.first_len > 0;
        let h2 = head.first[..head.first_len] == H2_PREFACE[..head.first_len];
        let mut outcome = HeadTimeout::Closed;
        if head.plaintext && started && !h2 {
            // One small write on an otherwise idle socket: it fits, or the client gets nothing.
            if let Poll::Ready(Ok(n)) = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT) {
                if n == REQUEST_TIMEOUT.len() {
                    let _ = Pin::new(&mut self.inner).poll_flush(cx);
                    outcome = HeadTimeout::Answered;
                }
            }
        }
        self.head = None;
        let code = match outcome {
            HeadTimeout::Closed => 1,
            HeadTimeout::Answered => 2,
        };
        self.traffic.head_timeout.store(code, Ordering::Relaxed);
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        ))
    }

    fn note_first_bytes(&mut self, read: &[u8]) {
        if let Some(head) = self.head.as_mut().filter(|h| h.first_len < h.first.len()) {
            let n = (head.first.len() - head.first_len).min(read.len());
            head.first[head.first_len..head.first_len + n].copy_from_slice(&read[..n]);
            head.first_len += n;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check_head_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            let prefix = this.prefix.split_to(n);
            this.note_first_bytes(&prefix);
            this.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            if this.head.is_some() {
                this.note_first_bytes(&buf.filled()[before..]);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.traffic
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.traffic
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
