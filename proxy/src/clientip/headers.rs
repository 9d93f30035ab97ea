//! The client-identity headers an upstream receives: set from what the proxy decided, never
//! passed through from a client the proxy does not trust.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::ClientAddr;

/// Headers that claim who the client is or how it connected. All are removed from every
/// request; the `x-forwarded-*` ones and `x-real-ip` are then set by the proxy.
pub const IDENTITY_HEADERS: [&str; 12] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
];

/// What the proxy knows of the request's way in.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedContext<'a> {
    /// The authority the request was routed by (also its `Host` upstream).
    pub host: &'a HeaderValue,
    pub tls: bool,
    /// The port of the listener the request came in on.
    pub port: u16,
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
        for name in IDENTITY_HEADERS {
            headers.remove(name);
        }
        let xff = match &self.chain {
            Some(chain) => format!("{chain}, {}", self.peer),
            None => self.peer.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        headers.insert(
            HeaderName::from_static("x-real-ip"),
            addr_value(self.client),
        );
        let proto = kept_proto
            .unwrap_or_else(|| HeaderValue::from_static(if ctx.tls { "https" } else { "http" }));
        headers.insert(HeaderName::from_static("x-forwarded-proto"), proto);
        let port = kept_port.unwrap_or_else(|| HeaderValue::from(ctx.port));
        headers.insert(HeaderName::from_static("x-forwarded-port"), port);
        headers.insert(
            HeaderName::from_static("x-forwarded-host"),
            ctx.host.clone(),
        );
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

fn addr_value(ip: IpAddr) -> HeaderValue {
    // An address's text form is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).expect("an address is a valid header value")
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
        let client = policy().request_client(peer.parse().unwrap(), &h);
        let host = HeaderValue::from_static("web.test");
        client.set_forwarded_headers(
            &mut h,
            ForwardedContext {
                host: &host,
                tls: false,
                port: 8080,
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
