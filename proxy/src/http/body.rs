//! Response bodies that write the request's access-log entry when they finish (or are dropped,
//! e.g. when the client goes away), so duration and bytes cover the whole response.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::{Instant, Sleep};

use super::upstream_h2::H2Body;
use crate::accesslog::AccessLogEntry;
use crate::balance::InFlight;
use crate::shutdown::Phase;
use crate::state::ProxyState;

/// A request's entry, from the moment the request arrives until its response is finished. It
/// is written exactly once: when the response body ends or is dropped, or, if the request never
/// got that far (the client went away, or shutdown cut it), when the guard itself is dropped.
pub struct PendingEntry {
    entry: Option<AccessLogEntry>,
    started: Instant,
    /// What the request body brought, once the request is forwarded (a local answer reads
    /// none, and allocates nothing for it).
    body: Option<Arc<BodyStats>>,
    state: Arc<ProxyState>,
    /// The upstream target's count of requests in flight, held until the exchange ends.
    in_flight: Option<InFlight>,
}

impl PendingEntry {
    pub fn new(entry: AccessLogEntry, state: Arc<ProxyState>) -> Self {
        Self {
            entry: Some(entry),
            started: Instant::now(),
            body: None,
            state,
            in_flight: None,
        }
    }

    /// Counts the request body's bytes (and pace) from here on, for the entry.
    pub fn count_body(&mut self) -> Arc<BodyStats> {
        self.body.get_or_insert_with(Arc::default).clone()
    }

    fn bytes_in(&self) -> u64 {
        self.body
            .as_ref()
            .map_or(0, |b| b.bytes.load(Ordering::Relaxed))
    }

    /// Counts the exchange in flight to its upstream target until it ends.
    pub fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    pub fn entry(&mut self) -> &mut AccessLogEntry {
        self.entry.as_mut().expect("an entry is written once")
    }

    /// The entry of an upgraded request, when its tunnel closes: the request body and what
    /// the client sent through the tunnel in, what the upstream sent out.
    pub fn finish_tunnel(mut self, tunnel_in: u64, tunnel_out: u64) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.duration = self.started.elapsed();
        entry.bytes_in = self.bytes_in() + tunnel_in;
        entry.bytes_out = tunnel_out;
        self.state.access_log.record(entry);
    }

    fn finish(&mut self, bytes_out: u64) {
        self.in_flight = None;
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.duration = self.started.elapsed();
        entry.bytes_out = bytes_out;
        entry.bytes_in = self.bytes_in();
        self.state.access_log.record(entry);
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Some(e) = self.entry.as_mut() {
            e.aborted = Some(if self.state.shutdown.phase() == Phase::Cut {
                "cut at shutdown"
            } else {
                "the client closed the connection"
            });
        }
        self.finish(0);
    }
}

/// A response body from the upstream, by the protocol spoken to it.
pub enum UpstreamBody {
    Http1(Incoming),
    Http2(H2Body),
}

impl UpstreamBody {
    /// The head of a `101 Switching Protocols` response, and the upstream's side of the
    /// upgraded connection (HTTP/1.1 only: HTTP/2 has no `101`).
    pub fn upgrade(resp: Response<Self>) -> (http::response::Parts, Option<OnUpgrade>) {
        let (parts, body) = resp.into_parts();
        match body {
            UpstreamBody::Http1(body) => {
                let mut resp = Response::from_parts(parts, body);
                let upgraded = hyper::upgrade::on(&mut resp);
                (resp.into_parts().0, Some(upgraded))
            }
            UpstreamBody::Http2(_) => (parts, None),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(b) => b.is_end_stream(),
            UpstreamBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(b) => b.size_hint(),
            UpstreamBody::Http2(b) => b.size_hint(),
        }
    }
}

enum Inner {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

pub struct ProxyBody {
    inner: Inner,
    sent: u64,
    pending: Option<PendingEntry>,
}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody, pending: PendingEntry) -> Self {
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
        if let Some(mut p) = self.pending.take() {
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
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
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

/// What a request's body did on its way upstream.
#[derive(Debug, Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    too_slow: AtomicBool,
}

impl BodyStats {
    /// The client was cut off for sending its body too slowly.
    pub fn too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Relaxed)
    }
}

/// How fast a client must send its request body. Only time spent waiting for the client counts,
/// not time the upstream spends not reading.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// The longest wait for the next bytes; also the grace before `min_rate` applies. Zero
    /// disables both.
    pub timeout: Duration,
    /// Bytes per second, averaged over the waiting time; 0 disables.
    pub min_rate: u64,
}

impl BodyPace {
    /// How much longer the client may be waited for, having sent `bytes` over `waited`.
    fn allowance(&self, bytes: u64, waited: Duration) -> Option<Duration> {
        if self.timeout.is_zero() {
            return None;
        }
        if self.min_rate == 0 {
            return Some(self.timeout);
        }
        let earned = Duration::from_secs_f64(bytes as f64 / self.min_rate as f64).max(self.timeout);
        Some(self.timeout.min(earned.saturating_sub(waited)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body too slow")]
pub struct BodyTooSlow;

/// A request body as it goes upstream: still streaming from the client, or already read
/// (to show it to AppSec first).
pub enum RequestBody {
    Streaming(Incoming),
    Read(Option<Bytes>),
}

/// The request body on its way upstream: counted for `bytes_in`, and cut off when the client
/// sends it too slowly (a slow body would hold an upstream connection).
pub struct CountedBody {
    inner: RequestBody,
    stats: Arc<BodyStats>,
    pace: BodyPace,
    bytes: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl CountedBody {
    pub fn new(inner: RequestBody, stats: Arc<BodyStats>, pace: BodyPace) -> Self {
        Self {
            inner,
            stats,
            pace,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    fn stop_waiting(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let incoming = match &mut this.inner {
            RequestBody::Streaming(incoming) => incoming,
            RequestBody::Read(read) => {
                let frame = read.take().filter(|b| !b.is_empty()).map(|b| {
                    this.bytes += b.len() as u64;
                    this.stats
                        .bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(Frame::data(b))
                });
                return Poll::Ready(frame);
            }
        };
        match Pin::new(incoming).poll_frame(cx) {
            Poll::Ready(polled) => {
                this.stop_waiting();
                if let Some(Ok(frame)) = &polled {
                    if let Some(d) = frame.data_ref() {
                        this.bytes += d.len() as u64;
                        this.stats
                            .bytes
                            .fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(polled.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(allowance) = this.pace.allowance(this.bytes, this.waited) else {
                    return Poll::Pending;
                };
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                let deadline = since + allowance;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.stats.too_slow.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestBody::Streaming(incoming) => incoming.is_end_stream(),
            RequestBody::Read(read) => read.as_ref().is_none_or(|b| b.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestBody::Streaming(incoming) => incoming.size_hint(),
            RequestBody::Read(read) => {
                SizeHint::with_exact(read.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_follows_the_rate_after_the_grace() {
        let pace = BodyPace {
            timeout: Duration::from_secs(10),
            min_rate: 1000,
        };
        let s = Duration::from_secs;
        assert_eq!(pace.allowance(0, s(0)), Some(s(10)));
        assert_eq!(
            pace.allowance(0, s(4)),
            Some(s(6)),
            "grace used up while waiting"
        );
        assert_eq!(pace.allowance(5_000, s(9)), Some(s(1)));
        assert_eq!(
            pace.allowance(50_000, s(9)),
            Some(s(10)),
            "ahead of the rate: silence limit"
        );
        assert_eq!(pace.allowance(20_000, s(15)), Some(s(5)));
        assert_eq!(pace.allowance(100, s(30)), Some(s(0)), "too slow");
        let silence_only = BodyPace {
            min_rate: 0,
            ..pace
        };
        assert_eq!(silence_only.allowance(0, s(1000)), Some(s(10)));
        let off = BodyPace {
            timeout: Duration::ZERO,
            ..pace
        };
        assert_eq!(off.allowance(0, s(1000)), None);
    }
}
