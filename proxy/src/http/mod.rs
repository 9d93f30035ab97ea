//! HTTP services: one shared listener (plain or TLS), routed by Host.

mod authority;
mod body;
mod client_error;
mod handler;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::io::{ClientStream, Traffic};
use crate::state::ProxyState;
use handler::ConnHandler;

pub use body::ProxyBody;
pub use client_error::ClientError;

/// Accepts connections until the task is dropped. With `tls`, certificates follow SNI.
pub async fn run_listener(state: Arc<ProxyState>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let builder = Arc::new(builder(&state));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(
            state.clone(),
            builder.clone(),
            stream,
            peer,
            tls.clone(),
        ));
    }
}

fn builder(state: &ProxyState) -> auto::Builder<TokioExecutor> {
    let limits = &state.limits;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    b
}

async fn serve_connection(
    state: Arc<ProxyState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let (client, rest) = match state.clients.connection_client(&mut stream, peer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "dropping connection");
            return;
        }
    };
    let traffic = Traffic::new();
    let stream = ClientStream::new(stream, rest, traffic.clone());
    let handler = Arc::new(ConnHandler::new(
        state.clone(),
        client,
        tls.is_some(),
        local_port,
    ));
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(req).await) }
    });
    let idle = state.limits.idle_timeout;
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => r,
                _ = traffic.idle_timeout(idle) => Ok(()),
            }
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(state.limits.tls_handshake_timeout, acceptor.accept(stream));
            let tls_stream = match handshake.await {
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
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
            tokio::select! {
                r = conn => r,
                _ = traffic.idle_timeout(idle) => Ok(()),
            }
        }
    };
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
