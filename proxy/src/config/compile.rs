//! Validates service descriptions as a whole and compiles them into the routing table the data
//! plane reads. Either every service compiles or the whole set is rejected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::uri::{Authority, Scheme, Uri};
use ipnet::IpNet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::error::{ConfigError, Problem};
use super::hostmap::HostMap;
use super::spec::{Protocol, RestrictionsSpec, ServiceSpec, TlsSpec};
use crate::restrict::{CountryCode, CountrySet, Filter, IpSet};

/// Where an HTTP service's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUpstream {
    /// `host:port` to dial.
    pub address: String,
    pub authority: Authority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Http(HttpUpstream),
    /// `host:port` to dial.
    Tcp(String),
}

/// A service ready for the data plane.
#[derive(Debug)]
pub struct Service {
    pub id: Arc<str>,
    pub protocol: Protocol,
    pub upstream: Upstream,
    pub filter: Filter,
    pub tls: Option<Arc<CertifiedKey>>,
    pub spec: ServiceSpec,
}

/// Everything the listeners need to route a connection or request; swapped whole on change.
#[derive(Debug, Default)]
pub struct Routes {
    pub services: Vec<Arc<Service>>,
    /// Host name (or `*.suffix`) ⇒ HTTP service.
    pub http: HostMap<Arc<Service>>,
    pub tcp: HashMap<SocketAddr, Arc<Service>>,
    /// SNI name (or `*.suffix`) ⇒ certificate, for HTTP services that terminate TLS.
    pub certificates: HostMap<Arc<CertifiedKey>>,
}

impl Routes {
    /// `host` as sent by the client: any case, maybe with a port or a trailing dot.
    pub fn http_service(&self, host: &str) -> Option<&Arc<Service>> {
        let host = strip_port(host);
        self.http.get(host.strip_suffix('.').unwrap_or(host))
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Certificates for HTTP hosts without their own `tls`: `<host>.crt` + `<host>.key`.
    pub tls_dir: Option<PathBuf>,
}

pub fn compile(
    source_name: &str,
    specs: Vec<ServiceSpec>,
    opts: &CompileOptions,
) -> Result<Routes, ConfigError> {
    let mut problems = Vec::new();
    let mut routes = Routes::default();
    let mut ids: HashMap<String, ()> = HashMap::new();

    for spec in specs {
        let mut ctx = Ctx {
            id: spec.id.clone(),
            problems: &mut problems,
        };
        if spec.id.trim().is_empty() {
            ctx.push(Some("id"), "must not be empty".into());
        } else if ids.insert(spec.id.clone(), ()).is_some() {
            ctx.push(Some("id"), "is used by more than one service".into());
        }
        let Some(service) = compile_one(&mut ctx, spec) else {
            continue;
        };
        let service = Arc::new(service);
        match service.protocol {
            Protocol::Http => {
                for host in &service.spec.hosts {
                    let host = normalise_host(host);
                    if let Err(other) = routes.http.insert(host.clone(), service.clone()) {
                        let taken =
                            format!("host {host} is already served by service \"{}\"", other.id);
                        ctx.push(Some("hosts"), taken);
                        continue;
                    }
                    let cert = match (&service.tls, &opts.tls_dir) {
                        (Some(cert), _) => Some(cert.clone()),
                        (None, Some(dir)) => cert_from_dir(&mut ctx, dir, &host),
                        (None, None) => None,
                    };
                    if let Some(cert) = cert {
                        let _ = routes.certificates.insert(host, cert);
                    }
                }
            }
            Protocol::Tcp => {
                if let Some(addr) = service.spec.listen.as_deref().and_then(|l| l.parse().ok()) {
                    if let Some(other) = routes.tcp.get(&addr) {
                        ctx.push(
                            Some("listen"),
                            format!("{addr} is already used by service \"{}\"", other.id),
                        );
                    } else {
                        routes.tcp.insert(addr, service.clone());
                    }
                }
            }
        }
        routes.services.push(service);
    }

    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(ConfigError {
            source_name: source_name.to_owned(),
            problems,
        })
    }
}

struct Ctx<'a> {
    id: String,
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    fn push(&mut self, field: Option<&'static str>, message: String) {
        self.problems.push(Problem {
            service: Some(self.id.clone()).filter(|s| !s.is_empty()),
            field,
            message,
        });
    }
}

fn compile_one(ctx: &mut Ctx<'_>, spec: ServiceSpec) -> Option<Service> {
    let before = ctx.problems.len();

    let upstream = match spec.protocol {
        Protocol::Http => {
            if spec.hosts.is_empty() {
                ctx.push(
                    Some("hosts"),
                    "an http service needs at least one host".into(),
                );
            }
            for host in &spec.hosts {
                if !valid_route_host(&normalise_host(host)) {
                    ctx.push(
                        Some("hosts"),
                        format!("\"{host}\" is not a valid host name"),
                    );
                }
            }
            if spec.listen.is_some() {
                ctx.push(
                    Some("listen"),
                    "http services are served on the shared HTTP listener; remove `listen`".into(),
                );
            }
            parse_http_upstream(ctx, &spec.upstream).map(Upstream::Http)
        }
        Protocol::Tcp => {
            if !spec.hosts.is_empty() {
                ctx.push(
                    Some("hosts"),
                    "tcp services are not routed by host; remove `hosts`".into(),
                );
            }
            match spec.listen.as_deref() {
                None => ctx.push(
                    Some("listen"),
                    "a tcp service needs `listen: ip:port`".into(),
                ),
                Some(l) => {
                    if l.parse::<SocketAddr>().is_err() {
                        ctx.push(Some("listen"), format!("\"{l}\" is not an ip:port address"));
                    }
                }
            }
            parse_host_port(&spec.upstream)
                .map(|_| Upstream::Tcp(spec.upstream.clone()))
                .or_else(|| {
                    ctx.push(
                        Some("upstream"),
                        format!("\"{}\" is not a host:port address", spec.upstream),
                    );
                    None
                })
        }
    };

    match (spec.protocol, spec.max_connections) {
        (Protocol::Http, Some(_)) => ctx.push(
            Some("max_connections"),
            "applies to tcp services; HTTP connections are capped by --max-connections and \
             --max-connections-per-ip"
                .into(),
        ),
        (Protocol::Tcp, Some(0)) => ctx.push(Some("max_connections"), "must be at least 1".into()),
        _ => {}
    }
    let filter = compile_filter(ctx, &spec.restrictions);
    let tls = spec.tls.as_ref().and_then(|t| load_certified_key(ctx, t));

    if ctx.problems.len() > before {
        return None;
    }
    Some(Service {
        id: spec.id.as_str().into(),
        protocol: spec.protocol,
        upstream: upstream?,
        filter,
        tls,
        spec,
    })
}

fn compile_filter(ctx: &mut Ctx<'_>, r: &RestrictionsSpec) -> Filter {
    let cidr_allow = parse_cidrs(ctx, "restrictions.cidr_allow", &r.cidr_allow);
    let cidr_deny = parse_cidrs(ctx, "restrictions.cidr_deny", &r.cidr_deny);
    let country_allow = parse_countries(ctx, "restrictions.country_allow", &r.country_allow);
    let country_deny = parse_countries(ctx, "restrictions.country_deny", &r.country_deny);
    Filter::new(
        cidr_allow,
        cidr_deny,
        country_allow,
        country_deny,
        r.crowdsec_mode,
    )
}

/// Parses a CIDR or a bare address (a /32 or /128). Host bits must be clear, so that a typo
/// such as `10.0.0.1/8` is caught rather than silently widened.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("\"{s}\" is not a valid CIDR (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "\"{s}\" has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

fn parse_cidrs(ctx: &mut Ctx<'_>, field: &'static str, list: &[String]) -> IpSet {
    let mut nets = Vec::with_capacity(list.len());
    for s in list {
        match parse_cidr(s) {
            Ok(n) => nets.push(n),
            Err(e) => ctx.push(Some(field), e),
        }
    }
    IpSet::new(&nets)
}

fn parse_countries(ctx: &mut Ctx<'_>, field: &'static str, list: &[String]) -> CountrySet {
    let mut codes = Vec::with_capacity(list.len());
    for s in list {
        match CountryCode::parse(s.trim()) {
            Some(c) => codes.push(c),
            None => ctx.push(
                Some(field),
                format!("\"{s}\" is not an ISO 3166-1 alpha-2 country code"),
            ),
        }
    }
    CountrySet::new(codes)
}

fn parse_http_upstream(ctx: &mut Ctx<'_>, s: &str) -> Option<HttpUpstream> {
    let bad = |ctx: &mut Ctx<'_>, why: &str| {
        ctx.push(Some("upstream"), format!("\"{s}\" {why}"));
        None
    };
    let Ok(uri) = s.parse::<Uri>() else {
        return bad(ctx, "is not a URL (expected http://host:port)");
    };
    if uri.scheme() != Some(&Scheme::HTTP) {
        return bad(
            ctx,
            "must be an http:// URL (https upstreams are not supported)",
        );
    }
    let Some(authority) = uri.authority().cloned() else {
        return bad(ctx, "has no host");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return bad(ctx, "must not have a path or query");
    }
    if authority.as_str().contains('@') {
        return bad(ctx, "must not carry credentials");
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let address = format!("{host}:{port}");
    Some(HttpUpstream { address, authority })
}

fn parse_host_port(s: &str) -> Option<(&str, u16)> {
    if s.parse::<SocketAddr>().is_ok() {
        let (h, p) = s.rsplit_once(':')?;
        return Some((h, p.parse().ok()?));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (port != 0 && valid_host(host)).then_some((host, port))
}

fn normalise_host(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    h.strip_suffix('.').map(str::to_owned).unwrap_or(h)
}

/// A service's host: a name, an address, or a wildcard `*.name` (one label).
fn valid_route_host(h: &str) -> bool {
    match h.strip_prefix("*.") {
        Some(suffix) => suffix.parse::<IpAddr>().is_err() && valid_host(suffix),
        None => valid_host(h),
    }
}

fn valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn load_certified_key(ctx: &mut Ctx<'_>, tls: &TlsSpec) -> Option<Arc<CertifiedKey>> {
    match certified_key(Path::new(&tls.cert_file), Path::new(&tls.key_file)) {
        Ok(k) => Some(k),
        Err(e) => {
            ctx.push(Some("tls"), e);
            None
        }
    }
}

fn cert_from_dir(ctx: &mut Ctx<'_>, dir: &Path, host: &str) -> Option<Arc<CertifiedKey>> {
    let cert = dir.join(format!("{host}.crt"));
    let key = dir.join(format!("{host}.key"));
    if !cert.exists() {
        return None;
    }
    match certified_key(&cert, &key) {
        Ok(k) => Some(k),
        Err(e) => {
            ctx.push(Some("hosts"), e);
            None
        }
    }
}

/// Loads a PEM certificate chain and its private key.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("unsupported private key {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|_| format!("{} does not belong to {}", key.display(), cert.display()))?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports_from_host_headers() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn host_names() {
        assert!(valid_route_host("*.example.com"));
        assert!(valid_route_host("example.com"));
        assert!(valid_route_host("127.0.0.1"));
        assert!(!valid_route_host("*.127.0.0.1"));
        assert!(!valid_route_host("a.*.example.com"));
        assert!(!valid_route_host("*"));
        assert!(
            !valid_host("*.example.com"),
            "upstreams are never wildcards"
        );
    }

    #[test]
    fn cidr_parsing_rejects_unmasked_and_accepts_bare_addresses() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(
            parse_cidr("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert!(parse_cidr("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("banana").is_err());
    }

    #[test]
    fn http_upstreams() {
        let mut problems = Vec::new();
        let mut ctx = Ctx {
            id: "s".into(),
            problems: &mut problems,
        };
        let u = parse_http_upstream(&mut ctx, "http://127.0.0.1:8080").unwrap();
        assert_eq!(u.address, "127.0.0.1:8080");
        let u = parse_http_upstream(&mut ctx, "http://backend").unwrap();
        assert_eq!(u.address, "backend:80");
        assert!(parse_http_upstream(&mut ctx, "https://backend").is_none());
        assert!(parse_http_upstream(&mut ctx, "http://backend/x").is_none());
        assert!(parse_http_upstream(&mut ctx, "backend:80").is_none());
        assert_eq!(problems.len(), 3);
    }
}
