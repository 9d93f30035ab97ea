//! HTTP/2 to the upstream (h2c, or TLS with ALPN `h2`), on the `h2` crate directly. A request is
//! sent and its response awaited in the request's own task. hyper's HTTP/2 client, over the
//! same crate, hands every request through a channel to its connection's task and spawns a task
//! per request to await the response: 6k of the upstream leg's 43k instructions
//! (`scripts/bench-instructions.sh UPSTREAM=h2c`). Settings are hyper's client defaults.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::body::CountedBody;
use crate::upstream::UpstreamError;

/// Flow-control windows and buffers, as hyper's HTTP/2 client sets them: the protocol's
/// default 64 KiB window would hold back large bodies.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams it may open before the server's SETTINGS say how many: the minimum RFC 9113
/// recommends servers allow.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// One HTTP/2 connection's request handle, shared by the streams on it.
#[derive(Clone)]
pub(super) struct H2Sender {
    send: SendRequest<Bytes>,
    /// Set when the connection has ended (its task returned): no new stream can open.
    closed: Arc<AtomicBool>,
}

/// Opens HTTP/2 on `io` and drives the connection in a task of its own.
pub(super) async fn handshake<T>(io: T) -> Result<H2Sender, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake(io)
        .await
        .map_err(|_| UpstreamError::Failed)?;
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
        ended.store(true, Ordering::Release);
    });
    Ok(H2Sender { send, closed })
}

impl H2Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req`, as rewritten for HTTP/1.1, and waits for the response head. A request body
    /// is sent by a task of its own, which may go on after the response has come (gRPC streams
    /// both ways).
    pub(super) async fn send(
        &self,
        req: Request<CountedBody>,
        tls: bool,
    ) -> Result<Response<H2Body>, UpstreamError> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| stream_error(&e))?;
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        as_http2(&mut head, tls);
        if let Some(len) = body.size_hint().exact() {
            if len != 0 || has_defined_payload(head.method()) {
                head.headers_mut()
                    .entry(header::CONTENT_LENGTH)
                    .or_insert_with(|| HeaderValue::from(len));
            }
        }
        let end_of_stream = body.is_end_stream();
        let (response, stream) = send
            .send_request(head, end_of_stream)
            .map_err(|e| stream_error(&e))?;
        let mut abandoned = None;
        if !end_of_stream {
            let (tell, told) = oneshot::channel();
            abandoned = Some(Abandoned(Some(tell)));
            tokio::spawn(send_body(body, stream, told));
        }
        let response = response.await.map_err(|e| stream_error(&e))?;
        if let Some(abandoned) = abandoned {
            // The response came: the body goes on.
            abandoned.disarm();
        }
        let length = content_length(response.headers());
        Ok(response.map(|recv| H2Body {
            // No length said, and it ended with its head: empty (as hyper's client has it).
            length: length.or(recv.is_end_stream().then_some(0)),
            recv,
            data_done: false,
        }))
    }
}

/// Whether the connection is gone (the request may not have reached the upstream) or the
/// upstream refused or failed this stream.
fn stream_error(e: &h2::Error) -> UpstreamError {
    if e.is_go_away() || e.is_io() || e.reason() == Some(Reason::REFUSED_STREAM) {
        UpstreamError::Closed
    } else {
        UpstreamError::Failed
    }
}

/// Methods whose empty body still says `content-length: 0`, as hyper sends them.
fn has_defined_payload(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// HTTP/2 carries the authority and scheme as pseudo-headers: an absolute URI, no `Host`.
fn as_http2(head: &mut Request<()>, tls: bool) {
    let authority = head
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let path = head
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = authority;
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *head.uri_mut() = uri;
    }
    *head.version_mut() = Version::HTTP_2;
    strip_connection_headers(head.headers_mut());
}

/// HTTP/2 forbids connection-specific fields, and allows `te` only as `trailers` (RFC 9113
/// §8.2.2); the `h2` crate refuses a request that has one. The rewrite removed the client's; a
/// header rule may have added one back.
fn strip_connection_headers(headers: &mut HeaderMap) {
    const CONNECTION_SPECIFIC: [HeaderName; 5] = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    if headers.keys().any(|k| CONNECTION_SPECIFIC.contains(k)) {
        for name in &CONNECTION_SPECIFIC {
            headers.remove(name);
        }
    }
    if headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.parse().ok()
}

/// Tells a request body's sender, when dropped armed, that the response will not be waited
/// for (timeout, or the client went away): the stream is then reset rather than fed.
struct Abandoned(Option<oneshot::Sender<()>>);

impl Abandoned {
    /// The response came: dropped without telling.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(tell) = self.0.take() {
            let _ = tell.send(());
        }
    }
}

/// Whether the response was abandoned (timeout, or the client went away) before it came.
/// `None` once the response came: nothing more to watch.
struct Watch(Option<oneshot::Receiver<()>>);

impl Watch {
    fn poll_abandoned(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(told) = &mut self.0 else {
            return false;
        };
        match Pin::new(told).poll(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => {
                self.0 = None;
                false
            }
            Poll::Pending => false,
        }
    }
}

/// Why sending stopped early.
enum Stop {
    /// The upstream reset the stream (it answered already, or failed): nothing more to send.
    ResetByUpstream,
    /// The client's body failed, or the response was abandoned: the stream is to be reset.
    Cancel,
}

/// Sends the request body as the upstream's flow control allows. Resets the stream if the
/// client's body fails (it went away, or was too slow) or the response was abandoned; stops if
/// the upstream reset the stream.
async fn send_body(
    mut body: CountedBody,
    mut stream: SendStream<Bytes>,
    abandoned: oneshot::Receiver<()>,
) {
    let mut watch = Watch(Some(abandoned));
    match pump(&mut body, &mut stream, &mut watch).await {
        Ok(()) | Err(Stop::ResetByUpstream) => {}
        Err(Stop::Cancel) => stream.send_reset(Reason::CANCEL),
    }
}

async fn pump(
    body: &mut CountedBody,
    stream: &mut SendStream<Bytes>,
    watch: &mut Watch,
) -> Result<(), Stop> {
    loop {
        let frame = poll_fn(|cx| {
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(Err(Stop::ResetByUpstream));
            }
            if watch.poll_abandoned(cx) {
                return Poll::Ready(Err(Stop::Cancel));
            }
            Pin::new(&mut *body).poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return Ok(());
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body failed; resetting the upstream stream");
                return Err(Stop::Cancel);
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                let last = body.is_end_stream();
                // In pieces, as the stream gets capacity.
                loop {
                    stream.reserve_capacity(data.len());
                    let granted = poll_fn(|cx| {
                        if watch.poll_abandoned(cx) {
                            return Poll::Ready(Err(Stop::Cancel));
                        }
                        match stream.poll_capacity(cx) {
                            Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
                            // Closed for sending, or reset.
                            Poll::Ready(_) => Poll::Ready(Err(Stop::ResetByUpstream)),
                            Poll::Pending if data.is_empty() => Poll::Ready(Ok(0)),
                            Poll::Pending => Poll::Pending,
                        }
                    })
                    .await?;
                    let piece = data.split_to(granted.min(data.len()));
                    let end = last && data.is_empty();
                    if (!piece.is_empty() || end) && stream.send_data(piece, end).is_err() {
                        return Err(Stop::ResetByUpstream);
                    }
                    if data.is_empty() {
                        break;
                    }
                }
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = stream.send_trailers(trailers);
            return Ok(());
        }
    }
}

/// A response body from an HTTP/2 upstream: its data, then its trailers (gRPC's status).
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What `content-length` announced and is still to come.
    length: Option<u64>,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Received data must be released, or the window closes.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // A reset without error after the response (the upstream stops reading the
                // request) ends the body; it does not fail it.
                Some(Err(e)) if matches!(e.reason(), Some(Reason::NO_ERROR | Reason::CANCEL)) => {
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_fields_are_removed_and_te_only_kept_as_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_connection_headers(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn content_length_is_one_valid_value_or_none() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            content_length(&h)
        };
        assert_eq!(with(&["24"]), Some(24));
        assert_eq!(with(&[]), None);
        assert_eq!(with(&["1", "2"]), None);
        assert_eq!(with(&["-1"]), None);
        assert_eq!(with(&["x"]), None);
    }
}
