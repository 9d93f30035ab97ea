//! One downstream connection's request handler, in fixed stages:
//! route (one authority, one service) → authorize (`restrict`) → forward, or respond locally.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use nb_api::{CaptchaOutcome, OversizedBody, Verdict};

use super::authority::request_authority;
use super::body::{BodyPace, PendingEntry, ProxyBody, RequestBody, UpstreamBody};
use super::challenge::challenge;
use super::local::{respond, Local};
use super::rewrite::{is_upgrade, strip_hop_by_hop, to_upstream, Rewrite};
use super::tunnel::tunnel;
use super::upstream_pool::{Deadlines, ProxyHeader, UpstreamPool};
use super::ClientError;
use crate::accesslog::AccessLogEntry;
use crate::admission::Permit;
use crate::appsec::Inspected;
use crate::clientip::ClientAddr;
use crate::config::{HostRoutes, HttpService};
use crate::io::Traffic;
use crate::restrict::{appsec_outcome, AppSecAnswer};
use crate::state::ProxyState;
use crate::upstream::{proxy_v2_header, UpstreamError};

/// What the listener knows of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The socket peer or what its PROXY header said.
    pub client: IpAddr,
    pub tls: bool,
    /// The socket peer (a trusted proxy, or the client itself).
    pub peer: SocketAddr,
    /// The listener's address the connection came in on.
    pub local: SocketAddr,
    /// On the plain listener: the port clients reach the HTTPS listener on, for redirects.
    pub https_port: Option<u16>,
}

pub struct ConnHandler {
    state: Arc<ProxyState>,
    /// The connection's client: the socket peer or what its PROXY header said.
    conn_client: IpAddr,
    tls: bool,
    /// The port of the listener the connection came in on (`X-Forwarded-Port`).
    local_port: HeaderValue,
    /// `conn_client` as a header value, made once for the connection's requests.
    client_value: HeaderValue,
    peer: SocketAddr,
    local: SocketAddr,
    https_port: Option<u16>,
    traffic: Arc<Traffic>,
    /// The connection's slot, shared with tunnels it upgrades into.
    permit: Arc<Permit>,
    upstream: UpstreamPool,
}

/// A request that passed routing and authorisation.
struct Routed {
    service: Arc<HttpService>,
    authority: HeaderValue,
    client: ClientAddr,
    /// The path and query sent upstream, when not the request's own (normalised for routing
    /// by prefix, or with the prefix stripped).
    upstream_path: Option<PathAndQuery>,
    /// The proxy holds a certificate for the host.
    certified: bool,
}

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
            local_port: HeaderValue::from(conn.local.port()),
            client_value: crate::clientip::addr_value(conn.client),
            peer: conn.peer,
            local: conn.local,
            https_port: conn.https_port,
            traffic,
            permit,
            upstream: UpstreamPool::default(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        self.traffic.request_started();
        let client = self
            .state
            .clients
            .request_client(self.conn_client, req.headers());
        let mut pending = PendingEntry::new(
            AccessLogEntry::http(SystemTime::now(), client.client, &req),
            self.state.clone(),
        );
        let routed = self
            .route(&req, client, &mut pending)
            .and_then(|r| self.authorize(r, req.headers(), &mut pending))
            .and_then(|r| self.to_https(r, &req));
        match routed {
            Ok(routed) => match self.inspect(req, &routed, &mut pending).await {
                Ok(req) => self.forward(req, routed, pending).await,
                Err((local, req)) => respond(pending, local, req.headers()),
            },
            Err(Local::Challenge(service, site)) => {
                let captcha = &self.state.captcha;
                // Boxed, as rare: its state would otherwise weigh on every request's future.
                Box::pin(challenge(
                    captcha,
                    &site,
                    &service.id,
                    self.tls,
                    req,
                    pending,
                ))
                .await
            }
            Err(local) => respond(pending, local, req.headers()),
        }
    }

    /// One authority, and the service that serves it.
    fn route(
        &self,
        req: &Request<Incoming>,
        client: ClientAddr,
        pending: &mut PendingEntry,
    ) -> Result<Routed, Local> {
        let authority = request_authority(
            req.method(),
            req.uri(),
            req.version(),
            req.headers(),
            self.tls,
        )
        .map_err(Local::Refused)?;
        let host = authority.as_ref().and_then(|a| a.to_str().ok());
        let entry = pending.entry();
        entry.host = Some(host.unwrap_or_default().into());
        if !self.tls {
            if let Some(answer) = self.acme_http_challenge(req) {
                return Err(Local::AcmeChallenge(answer));
            }
        }
        let routes = self.state.routes.load();
        let (Some(host_routes), Some(authority)) =
            (host.and_then(|h| routes.http_host(h)), authority)
        else {
            return Err(Local::NoService);
        };
        let (service, upstream_path) = if host_routes.by_path() {
            route_by_path(host_routes, req.uri())?
        } else {
            (host_routes.rest().cloned().ok_or(Local::NoService)?, None)
        };
        entry.service_id = service.id.clone();
        Ok(Routed {
            service,
            authority,
            client,
            upstream_path,
            certified: host_routes.certified(),
        })
    }

    /// The key authorization a CA asks for at `/.well-known/acme-challenge/TOKEN` while an
    /// order is validated. Answered before access rules and redirects: the CA is not a client
    /// of the service, and must reach the name over plain HTTP.
    fn acme_http_challenge(&self, req: &Request<Incoming>) -> Option<String> {
        let token = req
            .uri()
            .path()
            .strip_prefix(crate::acme::HTTP_CHALLENGE_PREFIX)?;
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return None;
        }
        self.state.acme.http_challenge(token)
    }

    /// `restrict` decides; nothing else does. A captcha decision is the one verdict the client
    /// can answer: a valid cookie from a solved challenge lets it through.
    fn authorize(
        &self,
        routed: Routed,
        request: &HeaderMap,
        pending: &mut PendingEntry,
    ) -> Result<Routed, Local> {
        let entry = pending.entry();
        entry.outcome = self
            .state
            .check(&routed.service.filter, routed.client.client);
        if entry.outcome.is_allowed() {
            return Ok(routed);
        }
        if entry.outcome.verdict == Verdict::CrowdsecCaptcha {
            let captcha = &self.state.captcha;
            let site = routed
                .service
                .remediation
                .captcha
                .as_ref()
                .or(captcha.default_site.as_ref())
                .cloned();
            if let Some(site) = site {
                if captcha.cookie_valid(request, &routed.service.id, routed.client.client) {
                    entry.outcome = entry.outcome.captcha_solved();
                    entry.captcha = Some(CaptchaOutcome::Cookie);
                    return Ok(routed);
                }
                return Err(Local::Challenge(routed.service, site));
            }
        }
        Err(Local::Denied(routed.service))
    }

    /// A plain-HTTP request, allowed, for a host the proxy holds a certificate for, is sent
    /// to `https://` (unless the service turned `https_redirect` off). After `authorize`, so a
    /// denied client is denied here rather than told where to go.
    fn to_https(&self, routed: Routed, req: &Request<Incoming>) -> Result<Routed, Local> {
        let Some(port) = self.https_port.filter(|_| !self.tls) else {
            return Ok(routed);
        };
        if !routed.certified || !routed.service.spec.https_redirect {
            return Ok(routed);
        }
        let authority = routed.authority.to_str().unwrap_or_default();
        let host = crate::config::strip_port(authority);
        let host = host.strip_suffix('.').unwrap_or(host);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let location = if port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{port}{path}")
        };
        match HeaderValue::try_from(location) {
            Ok(location) => Err(Local::ToHttps(location)),
            Err(_) => Ok(routed),
        }
    }

    /// The AppSec layer, for services with `appsec_mode` (after `authorize`, so after the
    /// IP-reputation layer). The body, when small enough, is read here so that AppSec and the
    /// upstream both get it.
    async fn inspect(
        &self,
        req: Request<Incoming>,
        routed: &Routed,
        pending: &mut PendingEntry,
    ) -> Result<Request<RequestBody>, (Local, Request<RequestBody>)> {
        let r = &routed.service.spec.restrictions;
        if !r.appsec_mode.is_on() || pending.entry().outcome.bypass {
            return Ok(req.map(RequestBody::Streaming));
        }
        let (parts, incoming) = req.into_parts();
        let max = self.state.appsec.as_ref().map_or(0, |a| a.max_body());
        let length = incoming.size_hint().exact();
        let (body, upstream_body, oversized) = if incoming.is_end_stream() {
            (None, RequestBody::Streaming(incoming), false)
        } else if length.is_some_and(|n| n <= max as u64) {
            let read = tokio::time::timeout(
                self.state
                    .limits
                    .request_body_timeout
                    .max(Duration::from_secs(1)),
                Limited::new(incoming, max).collect(),
            )
            .await;
            match read {
                Ok(Ok(collected)) => {
                    let bytes = collected.to_bytes();
                    (Some(bytes.clone()), RequestBody::Read(Some(bytes)), false)
                }
                _ => {
                    let req = Request::from_parts(parts, RequestBody::Read(None));
                    return Err((Local::Refused(ClientError::BodyTooSlow), req));
                }
            }
        } else {
            (None, RequestBody::Streaming(incoming), true)
        };
        let answer = match &self.state.appsec {
            _ if oversized && r.appsec_oversized_body == OversizedBody::Block => {
                AppSecAnswer::Block
            }
            None => AppSecAnswer::Unavailable,
            Some(appsec) => {
                let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                appsec
                    .inspect(Inspected {
                        client: routed.client.client,
                        method: &parts.method,
                        host: routed.authority.to_str().unwrap_or_default(),
                        uri,
                        headers: &parts.headers,
                        body,
                    })
                    .await
            }
        };
        let outcome = appsec_outcome(r.appsec_mode, r.appsec_fail_open, answer);
        let entry = pending.entry();
        entry.appsec = outcome.flagged.map(|v| (v, r.appsec_mode));
        let req = Request::from_parts(parts, upstream_body);
        if outcome.verdict.is_allow() {
            Ok(req)
        } else {
            entry.outcome.verdict = outcome.verdict;
            Err((Local::Denied(routed.service.clone()), req))
        }
    }

    async fn forward(
        &self,
        mut req: Request<RequestBody>,
        routed: Routed,
        mut pending: PendingEntry,
    ) -> Response<ProxyBody> {
        let body = pending.count_body();
        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let limits = &self.state.limits;
        let rewrite = Rewrite {
            client: &routed.client,
            authority: &routed.authority,
            tls: self.tls,
            local_port: &self.local_port,
            pace: BodyPace {
                timeout: limits.request_body_timeout,
                min_rate: limits.request_body_min_rate,
            },
            client_header: self.state.clients.client_header.as_ref(),
            path: routed.upstream_path.as_ref(),
            connection_client: (self.conn_client, &self.client_value),
        };
        let mut upstream_req = to_upstream(req, rewrite, body.clone());
        routed
            .service
            .request_headers
            .apply(upstream_req.headers_mut());
        let deadlines = Deadlines {
            connect: limits.connect_timeout,
            response: limits.upstream_timeout,
        };
        let client = routed.client.client;
        let proxy_header = routed.service.spec.send_proxy_protocol.then(|| {
            // The client's port is known only when it is the socket peer.
            let port = if client == self.peer.ip() {
                self.peer.port()
            } else {
                0
            };
            ProxyHeader {
                client,
                bytes: proxy_v2_header(SocketAddr::new(client, port), self.local),
            }
        });
        let sent = self
            .upstream
            .send(
                &routed.service,
                upstream_req,
                deadlines,
                upgrade.is_some(),
                proxy_header,
            )
            .await;
        let targets = &routed.service.targets;
        let target = match &sent {
            Ok(a) => a.target,
            Err(f) => f.target,
        };
        pending.entry().upstream = targets.logged_name(target);
        let mut resp = match sent {
            Ok(answered) => {
                pending.hold(answered.in_flight);
                answered.response
            }
            Err(_) if body.too_slow() => {
                return respond(
                    pending,
                    Local::Refused(ClientError::BodyTooSlow),
                    &HeaderMap::new(),
                )
            }
            Err(f) => return respond(pending, Local::Upstream(f.error), &HeaderMap::new()),
        };
        pending.entry().status = Some(resp.status().as_u16());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = upgrade {
                let (parts, upstream_side) = UpstreamBody::upgrade(resp);
                let Some(upstream_side) = upstream_side else {
                    return respond(
                        pending,
                        Local::Upstream(UpstreamError::Failed),
                        &HeaderMap::new(),
                    );
                };
                // The entry goes with the tunnel: it is written when the tunnel closes.
                let shutdown = self.state.shutdown.watch();
                tokio::spawn(tunnel(
                    client_side,
                    upstream_side,
                    pending,
                    self.permit.clone(),
                    shutdown,
                ));
                return Response::from_parts(
                    parts,
                    ProxyBody::full(hyper::body::Bytes::new(), None),
                );
            }
        } else {
            strip_hop_by_hop(resp.headers_mut());
        }
        let service = &routed.service;
        service.response_headers.apply(resp.headers_mut());
        if let (true, Some(hsts)) = (self.tls, &service.hsts) {
            resp.headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        let (parts, resp_body) = resp.into_parts();
        Response::from_parts(parts, ProxyBody::upstream(resp_body, pending))
    }
}

/// The service whose path prefix covers the request's path (normalised), and the path to send
/// upstream when it is not the request's own.
fn route_by_path(
    routes: &HostRoutes,
    uri: &Uri,
) -> Result<(Arc<HttpService>, Option<PathAndQuery>), Local> {
    let path = super::path::normalise(uri.path())
        .map_err(|_| Local::Refused(ClientError::AmbiguousPath))?;
    let (service, prefix) = routes.route(&path).ok_or(Local::NoService)?;
    let sent = match prefix {
        Some(p) if service.spec.strip_path_prefix => super::path::strip(p, &path),
        _ => &path,
    };
    let upstream_path = if sent == uri.path() {
        None
    } else {
        let with_query = match uri.query() {
            Some(q) => format!("{sent}?{q}"),
            None => sent.to_owned(),
        };
        Some(
            PathAndQuery::try_from(with_query)
                .map_err(|_| Local::Refused(ClientError::AmbiguousPath))?,
        )
    };
    Ok((service.clone(), upstream_path))
}

#[cfg(test)]
mod tests {
    use super::ConnHandler;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_requests_future_stays_small() {
        // hyper moves each request's future (out of the service call, into its dispatcher), so
        // its whole size is copied per request. The rare paths' state (upstream handshakes,
        // captcha challenges, HTTP/2 upstream exchanges) is boxed to keep it out.
        let size = future_size(ConnHandler::handle);
        assert!(size <= 5 * 1024, "{size} bytes");
    }
}
