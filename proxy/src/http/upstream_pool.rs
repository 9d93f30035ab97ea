//! A downstream connection's upstream connections: HTTP/1.1 or HTTP/2, plain or TLS, as the
//! service says. A connection it does not have comes from its worker's pool
//! ([`super::worker_pool`]) before a new one is opened. HTTP/1.1 connections go back there after
//! each response; HTTP/2 ones (and connections bound to this client) are kept for its next
//! request, and go to the pool when it closes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::Either;
use futures_util::FutureExt;
use http::header;
use http::{Request, Response, StatusCode};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nb_api::UpstreamProtocol;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{CountedBody, UpstreamBody};
use super::upstream_h2::{self, H2Sender};
use super::worker_pool;
use crate::balance::{now_ms, InFlight};
use crate::config::HttpService;
use crate::upstream::{dial_with, UpstreamError};

pub(super) enum Sender {
    Http1(http1::SendRequest<CountedBody>),
    /// Shared by the connection's concurrent streams: cloned out, never taken.
    Http2(H2Sender),
}

impl Sender {
    /// Open, and (HTTP/1.1) not busy with another request.
    pub(super) fn can_send(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => !s.is_closed(),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

pub(super) struct Kept {
    /// The service it was opened for: its targets, TLS and protocol (a reload makes new ones).
    pub(super) service: Arc<HttpService>,
    /// Which of the service's targets.
    pub(super) target: usize,
    /// The client its PROXY header named, if it sent one: only that client's requests use it.
    pub(super) client: Option<IpAddr>,
    /// A request on it authenticated the connection itself (NTLM, Negotiate): it serves only
    /// the client connection that did, never another client.
    pub(super) authenticated: bool,
    pub(super) sender: Sender,
}

/// A PROXY protocol v2 header to open the upstream connection with, and the client it names.
pub struct ProxyHeader {
    pub client: IpAddr,
    pub bytes: Vec<u8>,
}

/// Only its downstream connection touches it; HTTP/2 streams may briefly overlap. At most one
/// kept connection per target of the service: HTTP/2 ones, and HTTP/1.1 ones bound to this
/// client (PROXY header, NTLM); the others go to the worker's pool after each response.
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<Vec<Kept>>,
}

/// How long to wait for an upstream.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the connection, TLS handshake included.
    pub connect: Duration,
    /// For the response headers (the request body included).
    pub response: Duration,
}

/// The upstream's response, the target that gave it, and that target's in-flight count,
/// held until the response body is done.
pub struct Answered {
    pub response: Response<UpstreamBody>,
    pub target: usize,
    pub in_flight: InFlight,
}

/// Why no response came, and from which target.
pub struct Failed {
    pub error: UpstreamError,
    pub target: usize,
}

impl UpstreamPool {
    /// Sends `req` to one of the service's targets over a kept connection, or a new one. A
    /// connection that cannot be opened is retried once on another target for idempotent
    /// requests (nothing was sent yet). An `upgrade` (WebSocket) always goes over HTTP/1.1, on
    /// a connection of its own.
    pub async fn send(
        &self,
        service: &Arc<HttpService>,
        req: Request<CountedBody>,
        deadlines: Deadlines,
        upgrade: bool,
        proxy_header: Option<ProxyHeader>,
    ) -> Result<Answered, Failed> {
        let targets = &service.targets;
        let client = proxy_header.as_ref().map(|h| h.client);
        let header = proxy_header.as_ref();
        let retry = req.method().is_idempotent() && targets.len() > 1;
        let (target, kept) = targets
            .attempt(retry, |target| async move {
                match self.take_idle(service, target, upgrade, client) {
                    Some(kept) => Ok(kept),
                    // Boxed: the handshakes' state (TLS, HTTP/2) is kilobytes that every
                    // request's future would otherwise carry and copy, to be used by few.
                    None => {
                        Box::pin(connect(service, target, deadlines.connect, upgrade, header)).await
                    }
                }
            })
            .await
            .map_err(|(target, error)| Failed { error, target })?;
        let in_flight = targets.begin(target);
        let Kept {
            service: kept_for,
            mut sender,
            authenticated,
            ..
        } = kept;
        let authenticated = authenticated || authenticates_connection(req.headers());
        let tls = targets.get(target).upstream.tls.is_some();
        let sent = match &mut sender {
            Sender::Http1(s) => Either::Left(s.send_request(req).map(http1_answer)),
            // Boxed: inline, its state would make every request's future (HTTP/1.1 ones too)
            // 800 bytes larger, and hyper moves that future whole for each request.
            Sender::Http2(s) => Either::Right(Box::pin(async {
                let resp = s.send(req, tls).await?;
                Ok(resp.map(UpstreamBody::Http2))
            })),
        };
        let resp = match tokio::time::timeout(deadlines.response, sent).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(sent) => sent,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(error) => {
                if error != UpstreamError::Closed {
                    targets.failed(target, now_ms());
                }
                return Err(Failed { error, target });
            }
        };
        targets.succeeded(target);
        let kept = Kept {
            service: kept_for,
            target,
            client,
            authenticated,
            sender,
        };
        // An upgraded connection belongs to its tunnel now.
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if upgraded {
            drop(kept);
        } else if kept.may_serve_others() && matches!(kept.sender, Sender::Http1(_)) {
            // Rather than every client keeping a connection (per target) while it idles, the
            // worker's clients share them (busy until this response's body is read), so that
            // upstream connections and their buffers follow the requests in flight, as in
            // nginx's keep-alive pool.
            worker_pool::park(kept);
        } else if let Ok(mut slots) = self.idle.lock() {
            slots.retain(|k| k.target != target);
            slots.push(kept);
        }
        Ok(Answered {
            response: resp,
            target,
            in_flight,
        })
    }

    /// The kept connection to `target`, if it was opened for `service` and can send now.
    fn take_idle(
        &self,
        service: &Arc<HttpService>,
        target: usize,
        upgrade: bool,
        client: Option<IpAddr>,
    ) -> Option<Kept> {
        let mut slots = self.idle.lock().ok()?;
        // Connections of another service (or of one a reload replaced) serve the worker's
        // other clients.
        let mut i = 0;
        while i < slots.len() {
            if Arc::ptr_eq(&slots[i].service, service) {
                i += 1;
            } else {
                hand_on(slots.swap_remove(i));
            }
        }
        let Some(at) = slots
            .iter()
            .position(|k| k.target == target && k.client == client)
        else {
            drop(slots);
            return match client {
                None => worker_pool::take(service, target, upgrade),
                Some(_) => None,
            };
        };
        match &slots[at].sender {
            Sender::Http2(s) if s.is_closed() => {
                slots.swap_remove(at);
                None
            }
            // HTTP/2 cannot carry an upgrade: that one opens an HTTP/1.1 connection.
            Sender::Http2(_) if upgrade => None,
            Sender::Http2(s) => Some(Kept {
                service: service.clone(),
                target,
                client,
                authenticated: slots[at].authenticated,
                sender: Sender::Http2(s.clone()),
            }),
            Sender::Http1(s) if s.is_ready() => Some(slots.swap_remove(at)),
            Sender::Http1(s) => {
                if s.is_closed() {
                    slots.swap_remove(at);
                }
                // Else busy with another (HTTP/2 downstream) stream's body: kept for later.
                None
            }
        }
    }
}

impl Drop for UpstreamPool {
    /// The downstream connection closed: its idle connections serve the worker's next clients.
    fn drop(&mut self) {
        let Ok(slots) = self.idle.get_mut() else {
            return;
        };
        slots.drain(..).for_each(hand_on);
    }
}

/// Gives an idle connection that may serve other clients to the worker's pool; drops the rest.
fn hand_on(kept: Kept) {
    if kept.may_serve_others() && kept.sender.can_send() {
        worker_pool::park(kept);
    }
}

impl Kept {
    /// Neither opened for one client (PROXY header) nor authenticated by one.
    fn may_serve_others(&self) -> bool {
        self.client.is_none() && !self.authenticated
    }
}

/// NTLM and Negotiate (Kerberos) authenticate the connection, not the request.
fn authenticates_connection(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    [&b"NTLM "[..], b"Negotiate "].iter().any(|scheme| {
        value
            .get(..scheme.len())
            .is_some_and(|v| v.eq_ignore_ascii_case(scheme))
    })
}

/// hyper's HTTP/1.1 answer, or why there is none.
fn http1_answer(
    sent: hyper::Result<Response<hyper::body::Incoming>>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    match sent {
        Ok(resp) => Ok(resp.map(UpstreamBody::Http1)),
        Err(e) => {
            tracing::debug!(error = ?e, "upstream request failed");
            Err(if e.is_canceled() || e.is_incomplete_message() {
                UpstreamError::Closed
            } else {
                UpstreamError::Failed
            })
        }
    }
}

/// Dials target `target` and speaks the protocol the service asks for (or ALPN chose).
async fn connect(
    service: &Arc<HttpService>,
    target: usize,
    timeout: Duration,
    upgrade: bool,
    proxy_header: Option<&ProxyHeader>,
) -> Result<Kept, UpstreamError> {
    let started = tokio::time::Instant::now();
    let header = proxy_header.map(|h| h.bytes.as_slice());
    let to = &service.targets.get(target).upstream;
    let stream = dial_with(&to.upstream.address, timeout, header).await?;
    let protocol = service.spec.upstream_protocol;
    let sender = match &to.tls {
        None => {
            let http2 = protocol == UpstreamProtocol::H2c && !upgrade;
            handshake(TokioIo::new(stream), http2).await?
        }
        Some(tls) => {
            let connector = if upgrade { &tls.http1 } else { &tls.negotiated };
            let left = timeout.saturating_sub(started.elapsed());
            let tls_stream =
                tokio::time::timeout(left, connector.connect(tls.server_name.clone(), stream))
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
                    .map_err(|e| {
                        let err = UpstreamError::from_tls(&e);
                        warn_tls_failure(service, &to.upstream.address, &e);
                        err
                    })?;
            let http2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            handshake(TokioIo::new(tls_stream), http2).await?
        }
    };
    Ok(Kept {
        service: service.clone(),
        target,
        client: proxy_header.map(|h| h.client),
        authenticated: false,
        sender,
    })
}

async fn handshake<T>(io: TokioIo<T>, http2: bool) -> Result<Sender, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        Ok(Sender::Http2(
            upstream_h2::handshake(io.into_inner()).await?,
        ))
    } else {
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|_| UpstreamError::Failed)?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(Sender::Http1(sender))
    }
}

/// A failed TLS handshake is an operator's problem (CA file, server name): said at warn, at
/// most once a minute so that clients cannot flood the log with it.
fn warn_tls_failure(service: &HttpService, upstream: &str, e: &std::io::Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(service = %service.id, upstream, error = %e,
            "TLS handshake with the upstream failed");
    } else {
        tracing::debug!(service = %service.id, error = %e, "TLS handshake with the upstream failed");
    }
}

#[cfg(test)]
mod tests {
    use super::authenticates_connection;
    use http::{HeaderMap, HeaderValue};

    fn with_authorization(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn only_ntlm_and_negotiate_bind_the_connection() {
        for bound in [
            &b"NTLM TlRMTVNTUAAB"[..],
            b"ntlm x",
            b"Negotiate YIIG",
            b"NEGOTIATE x",
        ] {
            assert!(
                authenticates_connection(&with_authorization(bound)),
                "{bound:?}"
            );
        }
        let long = [b"Basic ".as_slice(), &[b'a'; 16 * 1024]].concat();
        let not_bound: [&[u8]; 8] = [
            b"Basic dXNlcjpwYXNz",
            b"Bearer eyJhbGciOi",
            b"NTLM",
            b"NTLMSSP x",
            b" NTLM x",
            b"Negotiat x",
            b"\xffNTLM x",
            &long,
        ];
        for value in not_bound {
            let shown = String::from_utf8_lossy(&value[..value.len().min(20)]).into_owned();
            assert!(
                !authenticates_connection(&with_authorization(value)),
                "{shown}"
            );
        }
        assert!(!authenticates_connection(&HeaderMap::new()));
    }
}
