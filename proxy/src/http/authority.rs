//! One authority per request. The host a request is routed and checked by must be the host the
//! upstream receives, so a request that names two (absolute-form or `:authority` against `Host`,
//! or two `Host` headers) is refused instead of being resolved one way here and another way
//! upstream.

use http::header::{HeaderMap, HeaderValue, HOST};
use http::{Method, Uri, Version};

use super::ClientError;

/// The authority a request is routed by, as the client wrote it (the upstream receives it as
/// `Host`). `None` when the request names none (HTTP/1.0, or an empty `Host`): no service.
pub fn request_authority(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    tls: bool,
) -> Result<Option<HeaderValue>, ClientError> {
    if method == Method::CONNECT {
        return Err(ClientError::ConnectNotAllowed);
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ClientError::MultipleHosts);
    }
    let host = match host {
        Some(h) => Some(h.to_str().map_err(|_| ClientError::InvalidHost)?),
        None => None,
    };
    let default_port = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        Some(_) => 80,
        None if tls => 443,
        None => 80,
    };
    match (uri.authority(), host) {
        (Some(target), Some(host)) => {
            if !same_authority(target.as_str(), host, default_port) {
                return Err(ClientError::HostConflict);
            }
            Ok(Some(header_value(target.as_str())?))
        }
        (Some(target), None) => Ok(Some(header_value(target.as_str())?)),
        (None, Some("")) => Ok(None),
        (None, Some(host)) => {
            if !well_formed(host) {
                return Err(ClientError::InvalidHost);
            }
            // The header as it came: no copy on the common path.
            Ok(headers.get(HOST).cloned())
        }
        // HTTP/1.1 requires Host; HTTP/1.0 may go without and reaches no service.
        (None, None) if version >= Version::HTTP_11 => Err(ClientError::MissingHost),
        (None, None) => Ok(None),
    }
}

fn header_value(s: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(s).map_err(|_| ClientError::InvalidHost)
}

/// `host[:port]` or `[v6][:port]`, with nothing else in it (checked without copying).
fn well_formed(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => match after {
                "" => (v6, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (v6, Some(p)),
                    None => return false,
                },
            },
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return false,
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    !host.is_empty()
        && !host.contains(['@', '/', ' ', '[', ']'])
        && port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Host (lower case, without a trailing dot) and port, the default one filled in.
fn split(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.contains(['@', '/', ' ']) {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (v6, port)
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (authority, None),
        },
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').map(str::to_owned).unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

fn same_authority(a: &str, b: &str, default_port: u16) -> bool {
    match (split(a, default_port), split(b, default_port)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        method: &str,
        target: &str,
        version: Version,
        hosts: &[&str],
    ) -> Result<Option<String>, ClientError> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(HOST, HeaderValue::from_str(h).unwrap());
        }
        let uri: Uri = target.parse().unwrap();
        request_authority(&method.parse().unwrap(), &uri, version, &headers, false)
            .map(|a| a.map(|v| v.to_str().unwrap().to_owned()))
    }

    const V11: Version = Version::HTTP_11;

    #[test]
    fn one_authority_passes_as_written() {
        assert_eq!(
            check("GET", "/", V11, &["Web.Test:8080"]),
            Ok(Some("Web.Test:8080".into()))
        );
        assert_eq!(
            check("GET", "http://a.test/x", V11, &["A.TEST:80"]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            check("GET", "http://a.test/x", V11, &["a.test."]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            check("GET", "https://a.test/x", V11, &["a.test:443"]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            check("GET", "http://[::1]:81/", V11, &["[::1]:81"]),
            Ok(Some("[::1]:81".into()))
        );
        // HTTP/2 requests carry :authority in the URI and usually no Host.
        assert_eq!(
            check("GET", "http://a.test/", Version::HTTP_2, &[]),
            Ok(Some("a.test".into()))
        );
    }

    #[test]
    fn two_authorities_are_refused() {
        use ClientError::*;
        assert_eq!(
            check("GET", "http://open.test/", V11, &["restricted.test"]),
            Err(HostConflict)
        );
        assert_eq!(
            check("GET", "http://a.test:81/", V11, &["a.test"]),
            Err(HostConflict)
        );
        assert_eq!(
            check("GET", "https://a.test/", V11, &["a.test:80"]),
            Err(HostConflict)
        );
        assert_eq!(
            check("GET", "http://a.test/", Version::HTTP_2, &["b.test"]),
            Err(HostConflict)
        );
        assert_eq!(
            check("GET", "/", V11, &["a.test", "b.test"]),
            Err(MultipleHosts)
        );
        assert_eq!(
            check("GET", "/", V11, &["a.test", "a.test"]),
            Err(MultipleHosts)
        );
        assert_eq!(
            check("GET", "http://a.test/", V11, &["a.test@b.test"]),
            Err(HostConflict)
        );
    }

    #[test]
    fn missing_odd_and_connect() {
        use ClientError::*;
        assert_eq!(check("GET", "/", V11, &[]), Err(MissingHost));
        assert_eq!(check("GET", "/", Version::HTTP_10, &[]), Ok(None));
        assert_eq!(check("GET", "/", V11, &[""]), Ok(None));
        assert_eq!(check("GET", "/", V11, &["a.test:8x"]), Err(InvalidHost));
        assert_eq!(check("GET", "/", V11, &["a.test/evil"]), Err(InvalidHost));
        assert_eq!(check("GET", "/", V11, &["::1"]), Err(InvalidHost));
        assert_eq!(
            check("CONNECT", "a.test:443", V11, &["a.test:443"]),
            Err(ConnectNotAllowed)
        );
    }
}
