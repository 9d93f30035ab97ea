//! The request as the upstream receives it: hop-by-hop headers removed (an upgrade and
//! `te: trailers` kept), the
//! routed authority as `Host`, the identity headers from what the proxy decided, origin-form,
//! HTTP/1.1, and a body that must keep its pace.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};

use super::body::{BodyPace, BodyStats, CountedBody, RequestBody};
use crate::clientip::{ClientAddr, ForwardedContext};

const HOP_BY_HOP_COUNT: usize = 9;
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// How many headers `set_forwarded_headers` inserts.
const IDENTITY_HEADERS_SET: usize = 5;

/// What a request going upstream is rewritten with.
pub struct Rewrite<'a> {
    pub client: &'a ClientAddr,
    /// The authority the request was routed and checked by.
    pub authority: &'a HeaderValue,
    pub tls: bool,
    pub local_port: &'a HeaderValue,
    pub pace: BodyPace,
    /// `--client-ip-header`: an identity header too, never passed upstream as the client sent it.
    pub client_header: Option<&'a HeaderName>,
    /// The path and query to send instead of the request's (routing by path prefix).
    pub path: Option<&'a PathAndQuery>,
    /// The connection's client, and its address as a header value.
    pub connection_client: (std::net::IpAddr, &'a HeaderValue),
}

pub fn to_upstream(
    req: Request<RequestBody>,
    rw: Rewrite<'_>,
    stats: Arc<BodyStats>,
) -> Request<CountedBody> {
    let (mut parts, body) = req.into_parts();
    // Room for the identity headers, made at once: a new connection's first request comes in
    // a map sized to its own headers, which would grow (and rehash) more than once.
    parts.headers.reserve(IDENTITY_HEADERS_SET);
    let upgrade = is_upgrade(&parts.headers);
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    // `te: trailers` says the client takes trailers (gRPC needs it); the rest of TE is hop-by-hop.
    let trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(&mut parts.headers);
    if trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(v)) = (upgrade, upgrade_value) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, v);
    }
    // Exactly the authority that was routed and checked (usually the Host as it came).
    if parts.headers.get(header::HOST) != Some(rw.authority) {
        parts.headers.insert(header::HOST, rw.authority.clone());
    }
    if let Some(name) = rw.client_header {
        parts.headers.remove(name);
    }
    rw.client.set_forwarded_headers(
        &mut parts.headers,
        ForwardedContext {
            host: rw.authority,
            tls: rw.tls,
            port: rw.local_port,
            connection_client: rw.connection_client,
        },
    );
    parts.uri = rw
        .path
        .or(parts.uri.path_and_query())
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, CountedBody::new(body, stats, rw.pace))
}

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names: which hop-by-hop headers are there. Most messages carry none,
    // a response usually only Connection.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Headers named in Connection are hop-by-hop too. Its tokens are mostly `close`,
    // `keep-alive` or `upgrade`, no header of the message: a name is made only for a token
    // the message has as a header.
    let named: Vec<HeaderName> = if present[0] {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(t))
            })
            .filter(|t| headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    for name in &named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "close, X-Secret"),
            ("connection", "Close"),
            ("x-secret", "1"),
            ("close", "a header named by the close option"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, gzip"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_unchanged() {
        let mut h = headers(&[("accept", "*/*"), ("x-keep", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }
}
