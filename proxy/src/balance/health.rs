//! Active health checks: one task per service that asks for them, off the request path. It
//! holds its service weakly and ends when a reload or removal drops the service.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use http::{header, Request};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{HttpService, HttpTarget, Routes, Service, TcpService};
use crate::upstream::{dial_with, proxy_v2_local_header};

/// Starts the checks of the services in `routes` that have `health_check`.
pub fn start_checks(routes: &Routes) {
    for service in &routes.services {
        match service {
            Service::Http(s) if s.spec.health_check.is_some() => {
                tokio::spawn(check_http(Arc::downgrade(s)));
            }
            Service::Tcp(s) if s.spec.health_check.is_some() => {
                tokio::spawn(check_tcp(Arc::downgrade(s)));
            }
            _ => {}
        }
    }
}

/// Interval and timeout of a service's checks.
fn timing(spec: &nb_api::ServiceSpec) -> Option<(Duration, Duration)> {
    let c = spec.health_check.as_ref()?;
    Some((
        Duration::from_secs(c.interval_secs.into()),
        Duration::from_secs(c.timeout_secs.into()),
    ))
}

async fn check_http(service: Weak<HttpService>) {
    loop {
        let Some(s) = service.upgrade() else { return };
        let Some((interval, timeout)) = timing(&s.spec) else {
            return;
        };
        let path = s.spec.health_check.as_ref().and_then(|c| c.path.clone());
        let proxy_header = s.spec.send_proxy_protocol.then(proxy_v2_local_header);
        let checks = s.targets.iter().map(|t| {
            let check = http_target(t.upstream.clone(), path.clone(), proxy_header.clone());
            async move { tokio::time::timeout(timeout, check).await.unwrap_or(false) }
        });
        let results = join_all(checks).await;
        for (i, healthy) in results.into_iter().enumerate() {
            s.targets.checked(i, healthy);
        }
        drop(s);
        tokio::time::sleep(interval).await;
    }
}

async fn check_tcp(service: Weak<TcpService>) {
    loop {
        let Some(s) = service.upgrade() else { return };
        let Some((interval, timeout)) = timing(&s.spec) else {
            return;
        };
        let proxy_header = s.spec.send_proxy_protocol.then(proxy_v2_local_header);
        let checks = s.targets.iter().map(|t| {
            let header = proxy_header.clone();
            let address = t.upstream.clone();
            async move {
                dial_with(&address, timeout, header.as_deref())
                    .await
                    .is_ok()
            }
        });
        let results = join_all(checks).await;
        for (i, healthy) in results.into_iter().enumerate() {
            s.targets.checked(i, healthy);
        }
        drop(s);
        tokio::time::sleep(interval).await;
    }
}

/// Connects (TLS included), and with `path` sends `GET path`: healthy below 400.
async fn http_target(
    target: HttpTarget,
    path: Option<String>,
    proxy_header: Option<Vec<u8>>,
) -> bool {
    let address = &target.upstream.address;
    let Ok(stream) = dial_with(address, Duration::from_secs(3600), proxy_header.as_deref()).await
    else {
        return false;
    };
    match &target.tls {
        None => get(TokioIo::new(stream), address, path.as_deref()).await,
        Some(tls) => match tls.http1.connect(tls.server_name.clone(), stream).await {
            Ok(s) => get(TokioIo::new(s), address, path.as_deref()).await,
            Err(_) => false,
        },
    }
}

async fn get<T>(io: TokioIo<T>, authority: &str, path: Option<&str>) -> bool
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(path) = path else { return true };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    tokio::spawn(connection);
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "nb-proxy-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let Ok(req) = req else { return false };
    match sender.send_request(req).await {
        Ok(resp) => resp.status().as_u16() < 400,
        Err(_) => false,
    }
}
