//! After an upgrade (WebSocket): bytes both ways between client and upstream. The tunnel holds
//! its connection's slot, ends at the shutdown cut, and writes the request's access-log entry
//! when it closes, with the bytes each way and the whole duration.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::PendingEntry;
use crate::admission::Permit;
use crate::shutdown::{Phase, ShutdownWatch};

pub async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut pending: PendingEntry,
    _permit: Arc<Permit>,
    mut shutdown: ShutdownWatch,
) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        pending.entry().aborted = Some("the upgrade did not complete");
        pending.finish_tunnel(0, 0);
        return;
    };
    let mut client = Counted::new(TokioIo::new(client));
    let mut upstream = Counted::new(TokioIo::new(upstream));
    let aborted = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            r.err().map(|_| "the tunnel broke")
        }
        _ = shutdown.reached(Phase::Cut) => Some("cut at shutdown"),
    };
    pending.entry().aborted = aborted;
    pending.finish_tunnel(client.read, upstream.read);
}

/// A stream that counts what is read from it: what the client sent, what the upstream sent.
/// Counted here rather than taken from `copy_bidirectional`, which says nothing on error.
struct Counted<T> {
    inner: T,
    read: u64,
}

impl<T> Counted<T> {
    fn new(inner: T) -> Self {
        Self { inner, read: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
