//! The proxy's own answers: to requests it refuses, denies, cannot route or cannot forward.
//! Each one writes its access-log entry when it has been sent.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::{PendingEntry, ProxyBody};
use super::ClientError;
use crate::config::HttpService;
use crate::remediation::captcha::CaptchaSite;
use crate::remediation::{format_reference, new_reference, Denial};
use crate::restrict::{Outcome, Verdict};
use crate::upstream::UpstreamError;

/// Why a request is answered by the proxy instead of an upstream.
#[derive(Debug, Clone)]
pub enum Local {
    /// The client got something wrong (400, 405, 408).
    Refused(ClientError),
    /// No service serves the host (404).
    NoService,
    /// `restrict` said no; the entry holds the verdict, the service says what the client sees.
    Denied(Arc<HttpService>),
    /// A CrowdSec captcha decision, with a captcha site to challenge the client with.
    Challenge(Arc<HttpService>, Arc<CaptchaSite>),
    /// The upstream could not be used (502, 504).
    Upstream(UpstreamError),
    /// A plain-HTTP request for a host with a certificate: `308` to this `https://` URL.
    ToHttps(HeaderValue),
    /// An ACME CA's HTTP-01 check: `200` with this key authorization.
    AcmeChallenge(String),
}

/// `request` is the client's request headers (for the format of a denial page).
pub fn respond(
    mut pending: PendingEntry,
    local: Local,
    request: &HeaderMap,
) -> Response<ProxyBody> {
    let (status, text): (StatusCode, &'static str) = match local {
        Local::Refused(e) => {
            pending.entry().client_error = Some(e.as_str());
            (e.status(), e.body())
        }
        Local::NoService => {
            pending.entry().outcome = Outcome::plain(Verdict::NoService);
            (
                StatusCode::NOT_FOUND,
                "no service is configured for this host\n",
            )
        }
        Local::Denied(service) => return deny(pending, &service, request),
        Local::ToHttps(location) => return to_https(pending, location),
        Local::AcmeChallenge(answer) => return acme_challenge(pending, answer),
        // Answered by `challenge`, which needs the request body; never reaches here.
        Local::Challenge(service, _) => return deny(pending, &service, request),
        Local::Upstream(e) => {
            pending.entry().upstream_error = Some(e.as_str());
            match e {
                UpstreamError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                _ => (StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
            }
        }
    };
    pending.entry().status = Some(status.as_u16());
    let mut resp = Response::new(ProxyBody::full(
        Bytes::from_static(text.as_bytes()),
        Some(pending),
    ));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(local, Local::Refused(ClientError::ConnectNotAllowed)) {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}

/// The service's remediation answer, with the reference it shows in the access log.
fn deny(
    mut pending: PendingEntry,
    service: &HttpService,
    request: &HeaderMap,
) -> Response<ProxyBody> {
    let reference = new_reference();
    let entry = pending.entry();
    entry.reference = Some(reference);
    let reference = format_reference(reference);
    let answer = service.remediation.answer(
        &Denial {
            verdict: entry.outcome.verdict,
            reference: reference.as_str(),
            client_ip: entry.source_ip,
            host: entry.host.as_deref().unwrap_or_default(),
            service: &service.id,
        },
        request,
    );
    entry.status = Some(answer.status().as_u16());
    let (parts, body) = answer.into_parts();
    Response::from_parts(parts, ProxyBody::full(body, Some(pending)))
}

fn acme_challenge(mut pending: PendingEntry, answer: String) -> Response<ProxyBody> {
    pending.entry().status = Some(StatusCode::OK.as_u16());
    let mut resp = Response::new(ProxyBody::full(Bytes::from(answer), Some(pending)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn to_https(mut pending: PendingEntry, location: HeaderValue) -> Response<ProxyBody> {
    pending.entry().status = Some(StatusCode::PERMANENT_REDIRECT.as_u16());
    let mut resp = Response::new(ProxyBody::full(Bytes::new(), Some(pending)));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}
