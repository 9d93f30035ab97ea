//! One downstream connection's request handler: route by Host, ask `restrict`, forward or deny.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::authority::request_authority;
use super::body::{BodyPace, BodyStats, CountedBody, PendingEntry, ProxyBody};
use super::ClientError;
use crate::accesslog::AccessLogEntry;
use crate::admission::Permit;
use crate::clientip::{ClientAddr, ForwardedContext};
use crate::config::HttpService;
use crate::io::Traffic;
use crate::restrict::{Outcome, Verdict};
use crate::shutdown::Phase;
use crate::state::ProxyState;
use crate::upstream::{dial, UpstreamError};

/// An open HTTP/1.1 connection to an upstream, kept for this downstream connection's next
/// request. One upstream connection per downstream connection needs no shared pool and no lock
/// that other connections contend on.
struct UpstreamConn {
    address: Arc<str>,
    sender: SendRequest<CountedBody>,
}

/// What the listener knows of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The socket peer or what its PROXY header said.
    pub client: IpAddr,
    pub tls: bool,
    pub local_port: u16,
}

pub struct ConnHandler {
    state: Arc<ProxyState>,
    /// The connection's client: the socket peer or what its PROXY header said.
    conn_client: IpAddr,
    tls: bool,
    /// The port of the listener the connection came in on (`X-Forwarded-Port`).
    local_port: HeaderValue,
    traffic: Arc<Traffic>,
    /// The connection's slot, shared with tunnels it upgrades into.
    permit: Arc<Permit>,
    /// Only this connection touches it; HTTP/2 streams may briefly overlap.
    idle_upstream: Mutex<Option<UpstreamConn>>,
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

impl ConnHandler {
    pub fn new(
        state: Arc<ProxyState>,
        conn: ConnInfo,
        traffic: Arc<Traffic>,
        permit: Arc<Permit>,
    ) -> Self {
        Self {
            state,
            conn_client: conn.client,
            tls: conn.tls,
            local_port: HeaderValue::from(conn.local_port),
            traffic,
            permit,
            idle_upstream: Mutex::new(None),
        }
    }

    pub async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        self.traffic.request_started();
        let client = self
            .state
            .clients
            .request_client(self.conn_client, req.headers());
        let body = Arc::new(BodyStats::default());
        let mut pending = PendingEntry::new(
            AccessLogEntry::http(SystemTime::now(), client.client, &req),
            body.clone(),
            self.state.clone(),
        );
        let authority = match request_authority(
            req.method(),
            req.uri(),
            req.version(),
            req.headers(),
            self.tls,
        ) {
            Ok(a) => a,
            Err(e) => return refuse(pending, e),
        };
        let host = authority
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default();
        pending.entry().host = Some(host.to_owned());
        let service = self.state.routes.load().http_service(host).cloned();
        let (Some(service), Some(authority)) = (service, authority) else {
            pending.entry().outcome = Outcome::plain(Verdict::NoService);
            return local_reply(
                pending,
                StatusCode::NOT_FOUND,
                "no service is configured for this host\n",
            );
        };
        let entry = pending.entry();
        entry.service_id = service.id.clone();
        entry.outcome = self.state.check(&service.filter, client.client);
        if !entry.outcome.is_allowed() {
            return local_reply(pending, StatusCode::FORBIDDEN, "Forbidden\n");
        }

        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let upstream_req = self.upstream_request(req, &client, &authority, body.clone());
        match self.forward(&service, upstream_req).await {
            Ok(mut resp) => {
                pending.entry().status = Some(resp.status().as_u16());
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = upgrade {
                        let upstream_side = hyper::upgrade::on(&mut resp);
                        tokio::spawn(tunnel(
                            client_side,
                            upstream_side,
                            self.permit.clone(),
                            self.state.shutdown.watch(),
                        ));
                    }
                }
                let (mut parts, resp_body) = resp.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(&mut parts.headers);
                }
                Response::from_parts(parts, ProxyBody::upstream(resp_body, pending))
            }
            Err(_) if body.too_slow() => refuse(pending, ClientError::BodyTooSlow),
            Err(e) => {
                pending.entry().upstream_error = Some(e.as_str());
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
                let text = if status == StatusCode::GATEWAY_TIMEOUT {
                    "upstream timed out\n"
                } else {
                    "upstream unavailable\n"
                };
                local_reply(pending, status, text)
            }
        }
    }

    async fn forward(
        &self,
        service: &HttpService,
        upstream_req: Request<CountedBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let upstream = &service.upstream;
        let limits = &self.state.limits;

        let mut conn = self.take_idle(&upstream.address);
        let conn = match conn.take() {
            Some(c) => c,
            None => {
                let stream = dial(&upstream.address, limits.connect_timeout).await?;
                let (sender, connection) = hyper::client::conn::http1::Builder::new()
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|_| UpstreamError::Failed)?;
                tokio::spawn(async move {
                    let _ = connection.with_upgrades().await;
                });
                UpstreamConn {
                    address: upstream.address.as_str().into(),
                    sender,
                }
            }
        };
        let UpstreamConn {
            address,
            mut sender,
        } = conn;
        let resp =
            match tokio::time::timeout(limits.upstream_timeout, sender.send_request(upstream_req))
                .await
            {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Err(e)) => {
                    tracing::debug!(service = %service.id, error = %e, "upstream request failed");
                    return Err(if e.is_canceled() || e.is_incomplete_message() {
                        UpstreamError::Closed
                    } else {
                        UpstreamError::Failed
                    });
                }
                Ok(Ok(r)) => r,
            };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            if let Ok(mut slot) = self.idle_upstream.lock() {
                *slot = Some(UpstreamConn { address, sender });
            }
        }
        Ok(resp)
    }

    /// Takes the kept upstream connection if it goes to `address` and can send now.
    fn take_idle(&self, address: &str) -> Option<UpstreamConn> {
        let mut slot = self.idle_upstream.lock().ok()?;
        match slot.take() {
            Some(c) if &*c.address == address && c.sender.is_ready() => Some(c),
            Some(c) if !c.sender.is_closed() && &*c.address == address => {
                // Busy with another (HTTP/2) stream's body: keep it for later, open another.
                *slot = Some(c);
                None
            }
            _ => None,
        }
    }

    fn upstream_request(
        &self,
        req: Request<Incoming>,
        client: &ClientAddr,
        authority: &HeaderValue,
        body_stats: Arc<BodyStats>,
    ) -> Request<CountedBody> {
        let (mut parts, body) = req.into_parts();
        let upgrade = is_upgrade(&parts.headers);
        let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let (true, Some(v)) = (upgrade, upgrade_value) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, v);
        }
        // Exactly the authority that was routed and checked (usually the Host as it came).
        if parts.headers.get(header::HOST) != Some(authority) {
            parts.headers.insert(header::HOST, authority.clone());
        }
        client.set_forwarded_headers(
            &mut parts.headers,
            ForwardedContext {
                host: authority,
                tls: self.tls,
                port: &self.local_port,
            },
        );
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|pq| Uri::from(pq.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        let limits = &self.state.limits;
        let pace = BodyPace {
            timeout: limits.request_body_timeout,
            min_rate: limits.request_body_min_rate,
        };
        Request::from_parts(parts, CountedBody::new(body, body_stats, pace))
    }
}

/// Answers a request the client got wrong; the entry says why.
fn refuse(mut pending: PendingEntry, e: ClientError) -> Response<ProxyBody> {
    pending.entry().client_error = Some(e.as_str());
    let mut resp = local_reply(pending, e.status(), e.body());
    if e == ClientError::ConnectNotAllowed {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}

/// An answer of the proxy's own; the entry is written when it has been sent.
fn local_reply(
    mut pending: PendingEntry,
    status: StatusCode,
    text: &'static str,
) -> Response<ProxyBody> {
    pending.entry().status = Some(status.as_u16());
    let mut resp = Response::new(ProxyBody::full(
        Bytes::from_static(text.as_bytes()),
        Some(pending),
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Bytes both ways after an upgrade (WebSocket); holds the connection's slot, ends at the cut.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _permit: Arc<Permit>,
    mut shutdown: crate::shutdown::ShutdownWatch,
) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = shutdown.reached(Phase::Cut) => {}
    }
}
