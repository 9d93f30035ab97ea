//! TCP services: one listener each; denied connections are closed before the upstream is dialled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::accesslog::AccessLogEntry;
use crate::config::{Protocol, Service, Upstream};
use crate::io::{ClientStream, Traffic};
use crate::state::ProxyState;
use crate::upstream::{dial, UpstreamError};

/// Accepts connections for the TCP service currently configured on `local`.
pub async fn run_listener(state: Arc<ProxyState>, listener: TcpListener, local: SocketAddr) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(listen = %local, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(service) = state.routes.load().tcp.get(&local).cloned() else {
            continue;
        };
        tokio::spawn(serve(state.clone(), service, stream, peer));
    }
}

async fn serve(
    state: Arc<ProxyState>,
    service: Arc<Service>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let ts = SystemTime::now();
    let started = Instant::now();
    let _ = stream.set_nodelay(true);
    let (client, rest) = match state.clients.connection_client(&mut stream, peer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "dropping connection");
            return;
        }
    };
    let outcome = state.check(&service.filter, client);
    let mut entry = AccessLogEntry::connection(ts, Protocol::Tcp, service.id.clone(), client);
    entry.outcome = outcome;
    if outcome.is_allowed() {
        let traffic = Traffic::new();
        let downstream = ClientStream::new(stream, rest, traffic.clone());
        if let Err(e) = forward(&state, &service, downstream, &traffic).await {
            entry.upstream_error = Some(e.as_str());
        }
        (entry.bytes_in, entry.bytes_out) = traffic.totals();
    }
    // A denied connection is simply dropped: closed without dialling anything.
    entry.duration = started.elapsed();
    state.access_log.record(entry);
}

async fn forward(
    state: &ProxyState,
    service: &Service,
    downstream: ClientStream<TcpStream>,
    traffic: &Traffic,
) -> Result<(), UpstreamError> {
    let Upstream::Tcp(address) = &service.upstream else {
        return Err(UpstreamError::Failed);
    };
    let limits = &state.limits;
    let mut upstream = dial(address, limits.connect_timeout).await?;
    let copy = async {
        match &service.tls {
            None => {
                let mut downstream = downstream;
                tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
            }
            Some(key) => {
                let acceptor = TlsAcceptor::from(crate::tls::single_cert_config(key.clone()));
                let mut tls =
                    tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(downstream))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                tokio::io::copy_bidirectional(&mut tls, &mut upstream).await
            }
        }
    };
    tokio::select! {
        res = copy => {
            if let Err(e) = res {
                tracing::debug!(service = %service.id, error = %e, "tcp connection ended with an error");
            }
        }
        _ = traffic.idle_timeout(limits.idle_timeout) => {
            tracing::debug!(service = %service.id, "tcp connection idle: closed");
        }
    }
    Ok(())
}
