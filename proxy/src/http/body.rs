//! Response bodies that write the request's access-log entry when they finish (or are dropped,
//! e.g. when the client goes away), so duration and bytes cover the whole response.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::accesslog::{AccessLog, AccessLogEntry};

/// An entry waiting for its response to finish.
pub struct PendingEntry {
    pub entry: AccessLogEntry,
    pub started: Instant,
    pub bytes_in: Arc<AtomicU64>,
    pub log: AccessLog,
}

impl PendingEntry {
    fn finish(mut self, bytes_out: u64) {
        self.entry.duration = self.started.elapsed();
        self.entry.bytes_out = bytes_out;
        self.entry.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.log.record(self.entry);
    }
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

pub struct ProxyBody {
    inner: Inner,
    sent: u64,
    pending: Option<PendingEntry>,
}

impl ProxyBody {
    pub fn upstream(body: Incoming, pending: PendingEntry) -> Self {
        Self {
            inner: Inner::Upstream(body),
            sent: 0,
            pending: Some(pending),
        }
    }

    pub fn full(bytes: Bytes, pending: Option<PendingEntry>) -> Self {
        Self {
            inner: Inner::Full(Some(bytes)),
            sent: 0,
            pending,
        }
    }

    fn done(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish(self.sent);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// The request body on its way upstream, counted for `bytes_in`.
pub struct CountedBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl CountedBody {
    pub fn new(inner: Incoming, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
