//! TCP services: a listener each, or one shared by TLS server name (SNI, read from the
//! ClientHello while TLS passes through); denied connections are closed before the upstream
//! is dialled.
//! An open connection is checked again whenever the policy changes (the service's restrictions,
//! the GeoIP database, the bouncer's decisions) and cut if its client is now denied.

mod sni;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::accept::{accept_loop, refused};
use crate::accesslog::AccessLogEntry;
use crate::admission::{Permit, Refusal, ServicePermit};
use crate::balance::InFlight;
use crate::config::{Protocol, Service, TcpService};
use crate::io::{ClientStream, Traffic};
use crate::restrict::{Outcome, Verdict};
use crate::shutdown::Phase;
use crate::state::{PolicyWatch, ProxyState};
use crate::upstream::{dial_with, proxy_v2_header, UpstreamError};
use sni::Hello;

/// Accepts connections for the TCP services currently configured on `local`.
pub async fn run_listener(state: Arc<ProxyState>, listener: TcpListener, local: SocketAddr) {
    let st = state.clone();
    accept_loop(listener, state, move |stream, peer, permit| {
        let routes = st.routes.load();
        let Some(on_listener) = routes.tcp.get(&local) else {
            return;
        };
        // A listener's only service takes the slot at accept, before anything is read; on a
        // shared one the service is known once the ClientHello is in.
        let chosen = match &on_listener.default {
            Some(service) if !on_listener.routes_by_name() => {
                let Some(slot) = take_slot(&st, service, peer) else {
                    return;
                };
                Some((service.clone(), slot))
            }
            _ => None,
        };
        // Boxed, as HTTP connections are: tokio moves an inline future whole (3.6 KB here)
        // when the task is spawned and when it finishes.
        tokio::spawn(Box::pin(serve(
            st.clone(),
            local,
            chosen,
            stream,
            peer,
            permit,
        )));
    })
    .await;
}

/// The service of a shared listener for a ClientHello's server name (or the default).
fn routed_by_name(
    state: &ProxyState,
    local: SocketAddr,
    server_name: Option<&str>,
) -> Option<Arc<TcpService>> {
    let routes = state.routes.load();
    routes.tcp.get(&local)?.route(server_name).cloned()
}

/// A place among the service's `max_connections`, or `None` (counted and logged) when full.
fn take_slot(state: &ProxyState, service: &TcpService, peer: SocketAddr) -> Option<ServicePermit> {
    let slot = service.slots.load().take(service.max_connections);
    if slot.is_none() {
        state.admission.count_refusal(Refusal::Service);
        refused(state, Refusal::Service, peer);
    }
    slot
}

async fn serve(
    state: Arc<ProxyState>,
    local: SocketAddr,
    chosen: Option<(Arc<TcpService>, ServicePermit)>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut permit: Permit,
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
    if let Err(reason) = permit.bind_client(client) {
        refused(&state, reason, SocketAddr::new(client, peer.port()));
        return;
    }
    let (service, _slot, rest, server_name) = match chosen {
        Some((service, slot)) => (service, slot, rest, None),
        None => {
            let (hello, read) =
                sni::read_hello(&mut stream, rest, state.limits.tls_handshake_timeout).await;
            let server_name = match hello {
                Hello::Named(name) => Some(name),
                Hello::Unnamed(why) => {
                    tracing::debug!(%client, why, "tcp connection without a server name");
                    None
                }
            };
            let Some(service) = routed_by_name(&state, local, server_name.as_deref()) else {
                let mut entry = AccessLogEntry::connection(ts, Protocol::Tcp, "".into(), client);
                entry.host = server_name.map(Into::into);
                entry.outcome = Outcome::plain(Verdict::NoService);
                entry.duration = started.elapsed();
                state.access_log.record(entry);
                return;
            };
            let Some(slot) = take_slot(&state, &service, peer) else {
                return;
            };
            (service, slot, read, server_name)
        }
    };
    let mut entry = AccessLogEntry::connection(ts, Protocol::Tcp, service.id.clone(), client);
    entry.host = server_name.map(Into::into);
    // Watching from before the check: no change between the check and the copy is missed.
    let policy = state.policy_watch();
    entry.outcome = state.check(&service.filter, client);
    if entry.outcome.is_allowed() {
        let local = stream.local_addr().unwrap_or(SocketAddr::new(client, 0));
        let traffic = Traffic::new();
        let downstream = ClientStream::new(stream, rest, traffic.clone());
        let proxy_header = service.spec.send_proxy_protocol.then(|| {
            // The client's port is known only when it is the socket peer.
            let port = if client == peer.ip() { peer.port() } else { 0 };
            proxy_v2_header(SocketAddr::new(client, port), local)
        });
        let connection = Connection {
            service: &service,
            client,
            policy,
            proxy_header,
        };
        match forward(
            &state,
            connection,
            downstream,
            &traffic,
            &mut entry.upstream,
        )
        .await
        {
            Ok(Ended::Cut) => entry.aborted = Some("cut at shutdown"),
            Ok(Ended::Denied(outcome)) => {
                entry.outcome = outcome;
                entry.aborted = Some("denied by a policy change");
            }
            Ok(Ended::Closed) => {}
            Err(e) => entry.upstream_error = Some(e.as_str()),
        }
        (entry.bytes_in, entry.bytes_out) = traffic.totals();
    }
    // A denied connection is simply dropped: closed without dialling anything.
    entry.duration = started.elapsed();
    state.access_log.record(entry);
}

/// How a forwarded connection ended.
enum Ended {
    Closed,
    Cut,
    /// A policy change denied the client: the new outcome.
    Denied(Outcome),
}

/// An admitted connection, as the re-check sees it.
struct Connection<'a> {
    service: &'a TcpService,
    client: IpAddr,
    policy: PolicyWatch,
    /// For `send_proxy_protocol`: written to the upstream first.
    proxy_header: Option<Vec<u8>>,
}

impl Connection<'_> {
    /// Resolves when a policy change denies the client. A service that is gone keeps its
    /// connections (as a closed listener does), and a bouncer that has not synced yet
    /// (`crowdsec_unavailable`) only stops new connections: it does not cut admitted ones.
    async fn denied(&mut self, state: &ProxyState) -> Outcome {
        loop {
            self.policy.changed().await;
            let routes = state.routes.load();
            let now = routes.services.iter().find_map(|s| match s {
                Service::Tcp(s) if s.id == self.service.id => Some(s),
                _ => None,
            });
            let Some(now) = now else {
                continue;
            };
            let outcome = state.check(&now.filter, self.client);
            if !outcome.is_allowed() && outcome.verdict != Verdict::CrowdsecUnavailable {
                return outcome;
            }
        }
    }
}

/// Dials one of the service's targets; a connection that fails is retried once on another
/// (nothing was sent yet). The target's name goes in `upstream` for services with several.
async fn dial_target(
    service: &TcpService,
    state: &ProxyState,
    proxy_header: Option<&[u8]>,
    upstream: &mut Option<Arc<str>>,
) -> Result<(TcpStream, InFlight), UpstreamError> {
    let targets = &service.targets;
    let dialed = targets
        .attempt(true, |target| {
            dial_with(
                &targets.get(target).upstream,
                state.limits.connect_timeout,
                proxy_header,
            )
        })
        .await;
    let target = match &dialed {
        Ok((target, _)) | Err((target, _)) => *target,
    };
    *upstream = targets.logged_name(target);
    let (target, stream) = dialed.map_err(|(_, e)| e)?;
    targets.succeeded(target);
    Ok((stream, targets.begin(target)))
}

/// Bytes moved per read each way. tokio's default (8 KiB) took 16 system calls per 128 KiB an
/// iperf3 client writes: 64 KiB took bulk throughput from 0.62x to 1.3x nginx `stream`'s
/// (scripts/bench-peers.sh). A buffer's pages are touched only as far as reads fill it, so an
/// interactive connection keeps little of it resident.
const COPY: usize = 64 * 1024;

async fn forward(
    state: &ProxyState,
    mut connection: Connection<'_>,
    downstream: ClientStream<TcpStream>,
    traffic: &Traffic,
    upstream_name: &mut Option<Arc<str>>,
) -> Result<Ended, UpstreamError> {
    let (service, client) = (connection.service, connection.client);
    let limits = &state.limits;
    let mut shutdown = state.shutdown.watch();
    let header = connection.proxy_header.take();
    let (mut upstream, _in_flight) = tokio::select! {
        u = dial_target(service, state, header.as_deref(), upstream_name) => u?,
        _ = shutdown.reached(Phase::Cut) => return Ok(Ended::Cut),
    };
    let copy = async {
        match &service.tls {
            None => {
                let mut downstream = downstream;
                tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, COPY, COPY)
                    .await
            }
            Some(key) => {
                let acceptor = TlsAcceptor::from(crate::tls::single_cert_config(key.clone()));
                let mut tls =
                    tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(downstream))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut upstream, COPY, COPY).await
            }
        }
    };
    // Draining lets TCP connections run on (their protocol has no graceful end the proxy could
    // ask for); the cut closes them.
    tokio::select! {
        res = copy => {
            if let Err(e) = res {
                tracing::debug!(service = %service.id, error = %e, "tcp connection ended with an error");
            }
        }
        _ = traffic.idle_timeout(limits.idle_timeout) => {
            tracing::debug!(service = %service.id, "tcp connection idle: closed");
        }
        _ = shutdown.reached(Phase::Cut) => return Ok(Ended::Cut),
        outcome = connection.denied(state) => {
            tracing::info!(service = %service.id, %client, verdict = outcome.verdict.as_str(), "tcp connection cut: a policy change denies its client");
            return Ok(Ended::Denied(outcome));
        }
    }
    Ok(Ended::Closed)
}
