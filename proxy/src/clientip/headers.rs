//! The client-identity headers an upstream receives: set from what the proxy decided, never
//! passed through from a client the proxy does not trust.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::ClientAddr;
use crate::ip_text::IpText;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that claim who the client is or how it connected. All are removed from every
/// request; the `x-forwarded-*` ones and `x-real-ip` are then set by the proxy. (Parsed once:
/// removing by `&str` would parse each name on every request.)
pub const IDENTITY_HEADERS: [HeaderName; 12] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_REAL_IP,
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-original-forwarded-for"),
];

/// What the proxy knows of the request's way in.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedContext<'a> {
    /// The authority the request was routed by (also its `Host` upstream).
    pub host: &'a HeaderValue,
    pub tls: bool,
    /// The port of the listener the request came in on, as a header value.
    pub port: &'a HeaderValue,
    /// The connection's client and its header value, made once per connection: most requests
    /// are from it, and need no address written out.
    pub connection_client: (IpAddr, &'a HeaderValue),
}

impl ClientAddr {
    /// Replaces the identity headers of a request going upstream.
    pub fn set_forwarded_headers(&self, headers: &mut HeaderMap, ctx: ForwardedContext<'_>) {
        // A trusted peer (a load balancer in front) may say how the client reached it.
        let kept_proto = self
            .kept(headers, "x-forwarded-proto")
            .filter(|v| matches!(v.as_bytes(), b"http" | b"https"));
        let kept_port = self.kept(headers, "x-forwarded-port").filter(|v| {
            !v.is_empty() && v.len() <= 5 && v.as_bytes().iter().all(u8::is_ascii_digit)
        });
        // One pass over the few names a request has; most carry none of these.
        if headers.keys().any(|k| IDENTITY_HEADERS.contains(k)) {
            for name in &IDENTITY_HEADERS {
                headers.remove(name);
            }
        }
        let value = |ip: IpAddr| match ctx.connection_client {
            (known, v) if known == ip => v.clone(),
            _ => addr_value(ip),
        };
        let client = value(self.client);
        let xff = match &self.chain {
            Some(chain) => HeaderValue::from_str(&format!("{chain}, {}", self.peer)).ok(),
            None if self.peer == self.client => Some(client.clone()),
            None => Some(value(self.peer)),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_REAL_IP, client);
        let proto = kept_proto
            .unwrap_or_else(|| HeaderValue::from_static(if ctx.tls { "https" } else { "http" }));
        headers.insert(X_FORWARDED_PROTO, proto);
        headers.insert(
            X_FORWARDED_PORT,
            kept_port.unwrap_or_else(|| ctx.port.clone()),
        );
        headers.insert(X_FORWARDED_HOST, ctx.host.clone());
    }

    /// A single value of `name`, from a trusted peer only.
    fn kept(&self, headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
        if !self.peer_trusted {
            return None;
        }
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        values.next().is_none().then(|| first.clone())
    }
}

/// An address as a header value.
pub fn addr_value(ip: IpAddr) -> HeaderValue {
    // An address's text form is always a valid header value.
    HeaderValue::from_bytes(IpText::default().format(ip))
        .expect("an address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clientip::ClientAddressPolicy;
    use crate::restrict::IpSet;

    fn policy() -> ClientAddressPolicy {
        ClientAddressPolicy {
            trusted: IpSet::new(&["10.0.0.0/8".parse().unwrap()]),
            ..Default::default()
        }
    }

    fn forwarded(peer: &str, incoming: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in incoming {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let peer: IpAddr = peer.parse().unwrap();
        let client = policy().request_client(peer, &h);
        let host = HeaderValue::from_static("web.test");
        let port = HeaderValue::from_static("8080");
        let peer_value = addr_value(peer);
        client.set_forwarded_headers(
            &mut h,
            ForwardedContext {
                host: &host,
                tls: false,
                port: &port,
                connection_client: (peer, &peer_value),
            },
        );
        h
    }

    fn one(h: &HeaderMap, name: &str) -> String {
        let values: Vec<_> = h
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        values.join(" | ")
    }

    #[test]
    fn an_untrusted_peer_claims_nothing() {
        let h = forwarded(
            "192.0.2.1",
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-real-ip", "198.51.100.1"),
                ("forwarded", "for=198.51.100.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-host", "evil.test"),
                ("cf-connecting-ip", "198.51.100.1"),
            ],
        );
        assert_eq!(one(&h, "x-forwarded-for"), "192.0.2.1");
        assert_eq!(one(&h, "x-real-ip"), "192.0.2.1");
        assert_eq!(one(&h, "x-forwarded-proto"), "http");
        assert_eq!(one(&h, "x-forwarded-port"), "8080");
        assert_eq!(one(&h, "x-forwarded-host"), "web.test");
        assert!(h.get("forwarded").is_none() && h.get("cf-connecting-ip").is_none());
    }

    #[test]
    fn a_trusted_peer_forwards_the_walked_list_and_its_scheme() {
        let h = forwarded(
            "10.0.0.1",
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-for", "192.0.2.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-host", "other.test"),
            ],
        );
        assert_eq!(
            one(&h, "x-forwarded-for"),
            "198.51.100.7, 192.0.2.9, 10.0.0.1"
        );
        assert_eq!(one(&h, "x-real-ip"), "192.0.2.9");
        assert_eq!(one(&h, "x-forwarded-proto"), "https");
        assert_eq!(one(&h, "x-forwarded-port"), "443");
        assert_eq!(
            one(&h, "x-forwarded-host"),
            "web.test",
            "always the routed host"
        );
        // Garbage or doubled values from a trusted peer are replaced too.
        let h = forwarded(
            "10.0.0.1",
            &[
                ("x-forwarded-proto", "gopher"),
                ("x-forwarded-port", "1"),
                ("x-forwarded-port", "2"),
            ],
        );
        assert_eq!(one(&h, "x-forwarded-proto"), "http");
        assert_eq!(one(&h, "x-forwarded-port"), "8080");
        assert_eq!(one(&h, "x-forwarded-for"), "10.0.0.1");
    }
}
