//! What an HTTP service asks of the proxy as a front door, beyond routing and access control:
//! how to speak to its upstream (TLS, HTTP version), which headers to change, and how to move
//! clients to HTTPS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// `https://`: HTTP/2 when the upstream offers it by ALPN, else HTTP/1.1. `http://`: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 always.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (gRPC servers without TLS); `http://` only.
    H2c,
}

impl UpstreamProtocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How an `https://` upstream's certificate is checked. Without it: the system's roots, and the
/// upstream's host as the server name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// PEM file of the CA (or self-signed certificate) to trust instead of the system's roots;
    /// a path on the proxy's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The name sent by SNI and checked in the certificate, when it is not the upstream's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any certificate (insecure: anyone on the path can read and change the traffic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
}

/// Header changes in one direction, applied in this order: remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderChanges {
    /// Replace every value of the header with this one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Add this value beside any the message already has.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Header changes on requests going upstream and on responses going back to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeadersSpec {
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub request: HeaderChanges,
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub response: HeaderChanges,
}

impl HeadersSpec {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// `Strict-Transport-Security` on responses sent over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HstsSpec {
    /// Seconds browsers remember to use HTTPS only (0 makes them forget).
    pub max_age: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_subdomains: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preload: bool,
}

impl HstsSpec {
    /// The header's value.
    pub fn value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

/// Request headers that frame the message or that the proxy sets itself: a service may not
/// change them (that would smuggle, or forge the decided client address).
const RESERVED_REQUEST: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
];

/// Response headers that frame the message.
const RESERVED_RESPONSE: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// What is wrong with an HTTP service's front-door options, as `(field, message)`.
/// `https_upstream`: whether its upstream is an `https://` URL.
pub(crate) fn problems(
    spec: &crate::ServiceSpec,
    https_upstream: bool,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if spec.upstream_protocol == UpstreamProtocol::H2c && https_upstream {
        out.push((
            "upstream_protocol",
            "h2c is HTTP/2 without TLS; for an https:// upstream use auto, which negotiates \
             HTTP/2 by ALPN"
                .to_owned(),
        ));
    }
    if let Some(tls) = &spec.upstream_tls {
        if !https_upstream {
            out.push((
                "upstream_tls",
                format!(
                    "applies to https:// upstreams; \"{}\" is not one",
                    spec.targets().first().copied().unwrap_or_default()
                ),
            ));
        }
        match &tls.ca_file {
            Some(_) if tls.skip_verify => out.push((
                "upstream_tls.ca_file",
                "is not used when skip_verify is on; remove one of them".to_owned(),
            )),
            Some(f) if !f.starts_with('/') => out.push((
                "upstream_tls.ca_file",
                format!("\"{f}\" must be an absolute path on the proxy's machine"),
            )),
            _ => {}
        }
        if let Some(name) = &tls.server_name {
            if !crate::validate::valid_server_name(name) {
                out.push((
                    "upstream_tls.server_name",
                    format!("\"{name}\" is not a host name or an IP address"),
                ));
            }
        }
    }
    header_problems(
        &mut out,
        "headers.request",
        &spec.headers.request,
        RESERVED_REQUEST,
    );
    header_problems(
        &mut out,
        "headers.response",
        &spec.headers.response,
        RESERVED_RESPONSE,
    );
    out
}

fn header_problems(
    out: &mut Vec<(&'static str, String)>,
    field: &'static str,
    changes: &HeaderChanges,
    reserved: &[&str],
) {
    let mut seen: Vec<String> = Vec::new();
    let names = changes
        .set
        .keys()
        .chain(changes.add.keys())
        .chain(changes.remove.iter());
    for name in names {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push((field, format!("\"{name}\" is not a valid header name")));
        } else if reserved.contains(&lower.as_str()) {
            out.push((
                field,
                format!("{name} is managed by the proxy and cannot be changed"),
            ));
        } else if seen.contains(&lower) {
            out.push((field, format!("{name} is listed more than once")));
        }
        seen.push(lower);
    }
    for (name, value) in changes.set.iter().chain(changes.add.iter()) {
        if http::HeaderValue::from_str(value).is_err() {
            out.push((
                field,
                format!("the value of {name} must be visible ASCII on one line"),
            ));
        }
    }
}
