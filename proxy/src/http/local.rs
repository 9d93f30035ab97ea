//! The proxy's own answers: to requests it refuses, denies, cannot route or cannot forward.
//! Each one writes its access-log entry when it has been sent.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{PendingEntry, ProxyBody};
use super::ClientError;
use crate::restrict::{Outcome, Verdict};
use crate::upstream::UpstreamError;

/// Why a request is answered by the proxy instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// The client got something wrong (400, 405, 408).
    Refused(ClientError),
    /// No service serves the host (404).
    NoService,
    /// `restrict` said no (403); the entry holds the verdict.
    Denied,
    /// The upstream could not be used (502, 504).
    Upstream(UpstreamError),
}

pub fn respond(mut pending: PendingEntry, local: Local) -> Response<ProxyBody> {
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
        Local::Denied => (StatusCode::FORBIDDEN, "Forbidden\n"),
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
    if local == Local::Refused(ClientError::ConnectNotAllowed) {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}
