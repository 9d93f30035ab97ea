//! HTTP services: one shared listener (plain or TLS), routed by Host.

mod authority;
mod body;
mod challenge;
mod client_error;
mod first_bytes;
mod handler;
mod local;
mod path;
mod rewrite;
mod tunnel;
mod upstream_h2;
mod upstream_pool;
mod worker_pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use tokio::time::Instant;

use crate::admission::Permit;
use crate::io::{ClientStream, HeadTimeout, Traffic};
use crate::shutdown::Phase;
use crate::state::ProxyState;
use first_bytes::{first_bytes, FirstBytes};
use handler::{ConnHandler, ConnInfo};

pub use client_error::ClientError;
pub use worker_pool::keep_at_most as keep_upstream_connections_at_most;

/// Accepts connections until the task is dropped. With `tls`, certificates follow SNI.
/// On the plain listener, `https_port` is where allowed requests for hosts with a certificate
/// are redirected to.
pub async fn run_listener(
    state: Arc<ProxyState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    https_port: Option<u16>,
) {
    let builder = Arc::new(builders(&state));
    let st = state.clone();
    crate::accept::accept_loop(listener, state, move |stream, peer, permit| {
        // Boxed: a task holds its future inline, and tokio moves the whole of it (kilobytes)
        // when the task is spawned and again when it finishes; a box is moved once.
        tokio::spawn(Box::pin(serve_connection(
            st.clone(),
            builder.clone(),
            stream,
            peer,
            tls.clone(),
            https_port,
            permit,
        )));
    })
    .await;
}

/// How connections are served: HTTP/1.1, or HTTP/2 when the client starts with its preface
/// (in the clear) or chose it by ALPN (TLS).
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

fn builders(state: &ProxyState) -> Builders {
    let limits = &state.limits;
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    Builders { http1, http2 }
}

impl Builders {
    /// Serves the connection, in HTTP/2 or HTTP/1.1, until it ends, idles out or shutdown cuts
    /// it.
    async fn serve<I>(
        &self,
        state: &ProxyState,
        io: I,
        http2: bool,
        handler: Arc<ConnHandler>,
        traffic: &Traffic,
    ) -> ConnResult
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(req).await) }
        });
        if http2 {
            let conn = self.http2.serve_connection(TokioIo::new(io), service);
            drive(state, conn, traffic, |c| c.graceful_shutdown()).await
        } else {
            let conn = self.http1.serve_connection(TokioIo::new(io), service);
            let conn = conn.with_upgrades();
            drive(state, conn, traffic, |c| c.graceful_shutdown()).await
        }
    }
}

async fn serve_connection(
    state: Arc<ProxyState>,
    builder: Arc<Builders>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    https_port: Option<u16>,
    mut permit: Permit,
) {
    // The first request head is due this long after accept, PROXY header and TLS included.
    let head_deadline = Instant::now() + state.limits.header_read_timeout;
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(peer.ip(), 0));
    let (client, rest) = match state.clients.connection_client(&mut stream, peer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "dropping connection");
            return;
        }
    };
    if let Err(reason) = permit.bind_client(client) {
        crate::accept::refused(&state, reason, SocketAddr::new(client, peer.port()));
        return;
    }
    let (rest, http2) = match tls {
        Some(_) => (rest, false),
        None => match first_bytes(&mut stream, rest, head_deadline).await {
            FirstBytes::Http1(first) => (first, false),
            FirstBytes::Http2(first) => (first, true),
            FirstBytes::Gone => return,
            FirstBytes::TimedOut => {
                // As the head deadline does when nothing was sent: closed without an answer.
                state.admission.count_head_timeout();
                return;
            }
        },
    };
    let traffic = Traffic::new();
    let stream = ClientStream::new(stream, rest, traffic.clone())
        .with_head_deadline(head_deadline, tls.is_none());
    let conn = ConnInfo {
        client,
        tls: tls.is_some(),
        peer,
        local,
        https_port,
    };
    let handler = Arc::new(ConnHandler::new(
        state.clone(),
        conn,
        traffic.clone(),
        Arc::new(permit),
    ));
    let result = match tls {
        None => {
            builder
                .serve(&state, stream, http2, handler, &traffic)
                .await
        }
        // Boxed: inline, the TLS branch's futures would make every connection's task (plain
        // ones too) kilobytes larger for as long as it lives.
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(state.limits.tls_handshake_timeout, acceptor.accept(stream));
            let tls_stream = match Box::pin(handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let alpn = tls_stream.get_ref().1.alpn_protocol();
            if alpn == Some(crate::acme::ACME_TLS_ALPN) {
                // A CA's TLS-ALPN-01 validation: the handshake was the whole answer.
                tracing::debug!(%peer, "ACME tls-alpn-01 validation handshake");
                return;
            }
            // Over TLS, HTTP/2 is chosen by ALPN (RFC 9113, section 3.2), never by preface.
            let http2 = alpn == Some(b"h2");
            Box::pin(builder.serve(&state, tls_stream, http2, handler, &traffic)).await
        }
    };
    if let Some(timeout) = traffic.head_timeout() {
        state.admission.count_head_timeout();
        if timeout == HeadTimeout::Answered {
            log_refused_connection(&state, client, ClientError::HeaderTimeout);
        }
        return;
    }
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        // hyper answered a request it could not parse (400, 431) before any handler ran.
        if let Some(err) = e
            .downcast_ref::<hyper::Error>()
            .and_then(ClientError::of_hyper)
        {
            log_refused_connection(&state, client, err);
        }
    }
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Serves one connection until it ends, it idles out, or shutdown: at the drain it finishes the
/// requests in flight and closes; at the cut it closes at once.
async fn drive<C, E>(
    state: &ProxyState,
    conn: C,
    traffic: &Traffic,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
) -> ConnResult
where
    C: std::future::Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut shutdown = state.shutdown.watch();
    let mut draining = false;
    let idle = traffic.idle_timeout(state.limits.idle_timeout);
    tokio::pin!(conn, idle);
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(Into::into),
            _ = &mut idle => return Ok(()),
            _ = shutdown.reached(if draining { Phase::Cut } else { Phase::Draining }) => {
                if draining {
                    return Ok(());
                }
                draining = true;
                graceful_shutdown(conn.as_mut());
            }
        }
    }
}

/// An entry for a request refused before it could be read (no host, method or path known).
fn log_refused_connection(state: &ProxyState, client: std::net::IpAddr, err: ClientError) {
    let mut entry = crate::accesslog::AccessLogEntry::connection(
        std::time::SystemTime::now(),
        crate::config::Protocol::Http,
        "".into(),
        client,
    );
    entry.status = Some(err.status().as_u16());
    entry.client_error = Some(err.as_str());
    state.access_log.record(entry);
}
