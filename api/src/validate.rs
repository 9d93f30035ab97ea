//! What a service description means, checked: CIDRs, country codes, hosts, upstreams and listen
//! addresses parsed, and, for a whole set, no id, host or listen address used twice. The proxy
//! compiles what passes; management accepts exactly what a proxy would run.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::uri::{Scheme, Uri};
use ipnet::IpNet;

use crate::{CountryCode, Protocol, ServiceSpec};

/// One thing wrong with a service description, in the operator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The service id, when the problem belongs to one service.
    pub service: Option<String>,
    /// The field concerned (`restrictions.cidr_allow`, `upstream`, …), if any.
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = &self.service {
            write!(f, "service \"{id}\": ")?;
        }
        if let Some(field) = self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where an HTTP service's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUpstream {
    /// As the service wrote it (`https://pve.lan:8006`).
    pub url: String,
    /// `host:port` to dial.
    pub address: String,
    /// An `https://` upstream.
    pub tls: bool,
    /// The upstream's host, without the port: the default TLS server name.
    pub host: String,
}

/// A service's own routing, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http {
        /// Normalised: lower case, no trailing dot; `*.suffix` for wildcards.
        hosts: Vec<String>,
        /// Normalised: no trailing `/`; `None` serves every path not claimed by a prefix.
        path_prefix: Option<String>,
        /// At least one; all `http://` or all `https://`.
        upstreams: Vec<HttpUpstream>,
    },
    Tcp {
        listen: SocketAddr,
        /// TLS server names (normalised as `hosts` of HTTP) that pick this service on a
        /// listener shared with others; empty: the listener's only (or default) service.
        server_names: Vec<String>,
        /// `host:port` to dial; at least one.
        upstreams: Vec<String>,
    },
}

/// A service description that passed every check, with what it means parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub spec: ServiceSpec,
    pub target: Target,
    pub cidr_allow: Vec<IpNet>,
    pub cidr_deny: Vec<IpNet>,
    pub country_allow: Vec<CountryCode>,
    pub country_deny: Vec<CountryCode>,
    pub bypass: Vec<IpNet>,
}

/// Checks one service on its own.
pub fn check_service(spec: ServiceSpec) -> Result<Checked, Vec<Problem>> {
    let mut ctx = Ctx {
        id: spec.id.clone(),
        problems: Vec::new(),
    };
    let checked = check_one(&mut ctx, spec);
    match checked {
        Some(c) if ctx.problems.is_empty() => Ok(c),
        _ => Err(ctx.problems),
    }
}

/// Checks a whole set: every service on its own, then that no id, host or listen address is
/// used twice (the later service is blamed). Every problem is reported.
pub fn check_services(specs: Vec<ServiceSpec>) -> Result<Vec<Checked>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut checked = Vec::with_capacity(specs.len());
    let mut ids: HashMap<String, ()> = HashMap::new();
    let mut hosts: HashMap<String, String> = HashMap::new();
    let mut listens: HashMap<SocketAddr, SharedListener> = HashMap::new();
    let mut certificates: HashMap<String, (String, crate::TlsSpec)> = HashMap::new();
    for spec in specs {
        let mut ctx = Ctx {
            id: spec.id.clone(),
            problems: Vec::new(),
        };
        if !spec.id.trim().is_empty() && ids.insert(spec.id.clone(), ()).is_some() {
            ctx.push(Some("id"), "is used by more than one service".into());
        }
        if let Some(c) = check_one(&mut ctx, spec) {
            match &c.target {
                Target::Http {
                    hosts: own,
                    path_prefix,
                    ..
                } => {
                    for host in own {
                        if let Some(tls) = &c.spec.tls {
                            match certificates.get(host) {
                                Some((other, theirs)) if theirs != tls => ctx.push(
                                    Some("tls"),
                                    format!(
                                        "host {host} already has another certificate, from \
                                         service \"{other}\"; services sharing a host share \
                                         its certificate"
                                    ),
                                ),
                                Some(_) => {}
                                None => {
                                    certificates
                                        .insert(host.clone(), (c.spec.id.clone(), tls.clone()));
                                }
                            }
                        }
                        let route = http_route(host, path_prefix.as_deref());
                        match hosts.get(&route) {
                            Some(other) => ctx.push(
                                Some("hosts"),
                                format!(
                                    "{} is already served by service \"{other}\"",
                                    describe_http_route(&route)
                                ),
                            ),
                            None => {
                                hosts.insert(route, c.spec.id.clone());
                            }
                        }
                    }
                }
                Target::Tcp {
                    listen,
                    server_names,
                    ..
                } => {
                    let shared = listens.entry(*listen).or_default();
                    for (field, message) in shared.claim(&c.spec.id, *listen, server_names) {
                        ctx.push(Some(field), message);
                    }
                }
            }
            checked.push(c);
        }
        problems.append(&mut ctx.problems);
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// The TCP services of one listener as far as the set has been checked: at most one without
/// server names (the default), and each server name routed to one service.
#[derive(Default)]
struct SharedListener {
    default: Option<String>,
    names: HashMap<String, String>,
}

impl SharedListener {
    /// Records `id`'s claim; the problems when it collides with an earlier service's.
    fn claim(
        &mut self,
        id: &str,
        listen: SocketAddr,
        server_names: &[String],
    ) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if server_names.is_empty() {
            match &self.default {
                Some(other) => problems.push((
                    "listen",
                    format!(
                        "{listen} is already used by service \"{other}\" (services sharing a \
                         listener are told apart by the TLS server names in `hosts`)"
                    ),
                )),
                None => self.default = Some(id.to_owned()),
            }
        }
        for name in server_names {
            match self.names.get(name) {
                Some(other) => problems.push(("hosts", describe_sni_claim(listen, name, other))),
                None => {
                    self.names.insert(name.clone(), id.to_owned());
                }
            }
        }
        problems
    }
}

/// A server name already routed on a listener, in the operator's words.
pub fn describe_sni_claim(listen: impl std::fmt::Display, name: &str, owner: &str) -> String {
    format!("TLS server name {name} on {listen} is already routed to service \"{owner}\"")
}

/// The route key of a TCP service's server name: the listener, a space, the name.
fn sni_route(listen: SocketAddr, name: &str) -> String {
    format!("{listen} {name}")
}

/// What a service claims for itself alone: `("host", name)` for each HTTP host (normalised as
/// the proxy routes it), `("listen", ip:port)` for a TCP service without server names and
/// `("sni", "ip:port name")` for each of a TCP service's server names. Two services may not
/// claim the same route.
pub fn routes_of(spec: &ServiceSpec) -> Vec<(&'static str, String)> {
    let mut routes: Vec<(&'static str, String)> = match spec.protocol {
        Protocol::Http => {
            let prefix = spec
                .path_prefix
                .as_deref()
                .and_then(|p| normalise_path_prefix(p).ok())
                .flatten();
            spec.hosts
                .iter()
                .map(|h| ("host", http_route(&normalise_host(h), prefix.as_deref())))
                .collect()
        }
        Protocol::Tcp => {
            let listen = spec
                .listen
                .as_deref()
                .and_then(|l| l.trim().parse::<SocketAddr>().ok());
            match listen {
                None => Vec::new(),
                Some(a) if spec.hosts.is_empty() => vec![("listen", a.to_string())],
                Some(a) => spec
                    .hosts
                    .iter()
                    .map(|h| ("sni", sni_route(a, &normalise_host(h))))
                    .collect(),
            }
        }
    };
    routes.sort();
    routes.dedup();
    routes
}

/// An HTTP route's key: the host, and the path prefix after it when there is one (hosts
/// cannot hold a `/`, so the two never collide).
fn http_route(host: &str, prefix: Option<&str>) -> String {
    match prefix {
        Some(p) => format!("{host}{p}"),
        None => host.to_owned(),
    }
}

/// An HTTP route's key as the operator reads it: `host web.test` or
/// `host web.test with path prefix /admin`.
pub fn describe_http_route(route: &str) -> String {
    match route.find('/') {
        Some(i) => format!("host {} with path prefix {}", &route[..i], &route[i..]),
        None => format!("host {route}"),
    }
}

/// A path prefix without its trailing `/` (`/` alone is no prefix at all), or why it cannot be
/// one. Only plain segments are allowed, so that the prefix a request is matched against means
/// one thing to the proxy and to the upstream.
pub fn normalise_path_prefix(p: &str) -> Result<Option<String>, String> {
    let p = p.trim();
    if !p.starts_with('/') {
        return Err(format!("\"{p}\" must start with /"));
    }
    if p.len() > 256 {
        return Err("must be at most 256 characters".into());
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("\"{p}\" must be plain segments (no //, . or ..)"));
        }
        let plain = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b));
        if !plain {
            return Err(format!(
                "\"{p}\" may hold letters, digits and -._~!$&'()*+,;=:@ between slashes (no %, ?, # or spaces)"
            ));
        }
    }
    Ok(Some(trimmed.to_owned()))
}

/// Certificate files, or ACME for the hosts of an http service (whose challenges prove each
/// name: no wildcards, which need DNS-01).
fn tls_problems(tls: &crate::TlsSpec, spec: &ServiceSpec) -> Vec<(&'static str, String)> {
    let files = !tls.cert_file.trim().is_empty() || !tls.key_file.trim().is_empty();
    let mut problems = Vec::new();
    if tls.acme && files {
        problems.push((
            "tls",
            "either acme: true or cert_file and key_file, not both".to_owned(),
        ));
    } else if !tls.acme && (tls.cert_file.trim().is_empty() || tls.key_file.trim().is_empty()) {
        problems.push((
            "tls",
            "needs cert_file and key_file, or acme: true".to_owned(),
        ));
    }
    if tls.acme && spec.protocol == Protocol::Tcp {
        problems.push((
            "tls.acme",
            "applies to http services; a tcp service that terminates TLS needs cert_file and \
             key_file"
                .to_owned(),
        ));
    }
    if tls.acme {
        for host in spec.hosts.iter().filter(|h| h.trim().starts_with("*.")) {
            problems.push((
                "tls.acme",
                format!(
                    "{} needs a DNS-01 challenge, which nb-proxy does not answer; give the \
                     wildcard host a service with cert_file and key_file",
                    host.trim()
                ),
            ));
        }
    }
    problems
}

/// `hosts`, normalised; each bad or repeated name is a problem.
fn check_hosts(ctx: &mut Ctx, written: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::with_capacity(written.len());
    for host in written {
        let h = normalise_host(host);
        if !valid_route_host(&h) {
            ctx.push(
                Some("hosts"),
                format!("\"{host}\" is not a valid host name"),
            );
        } else if hosts.contains(&h) {
            ctx.push(Some("hosts"), format!("host {h} is listed twice"));
        } else {
            hosts.push(h);
        }
    }
    hosts
}

struct Ctx {
    id: String,
    problems: Vec<Problem>,
}

impl Ctx {
    fn push(&mut self, field: Option<&'static str>, message: String) {
        self.problems.push(Problem {
            service: Some(self.id.clone()).filter(|s| !s.is_empty()),
            field,
            message,
        });
    }
}

fn check_one(ctx: &mut Ctx, spec: ServiceSpec) -> Option<Checked> {
    let before = ctx.problems.len();
    if spec.id.trim().is_empty() {
        ctx.push(Some("id"), "must not be empty".into());
    }
    let target = match spec.protocol {
        Protocol::Http => {
            if spec.hosts.is_empty() {
                ctx.push(
                    Some("hosts"),
                    "an http service needs at least one host".into(),
                );
            }
            let hosts = check_hosts(ctx, &spec.hosts);
            if spec.listen.is_some() {
                ctx.push(
                    Some("listen"),
                    "http services are served on the shared HTTP listener; remove `listen`".into(),
                );
            }
            if spec.max_connections.is_some() {
                ctx.push(
                    Some("max_connections"),
                    "applies to tcp services; HTTP connections are capped by --max-connections \
                     and --max-connections-per-ip"
                        .into(),
                );
            }
            let path_prefix = match spec.path_prefix.as_deref().map(normalise_path_prefix) {
                None => None,
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    ctx.push(Some("path_prefix"), e);
                    None
                }
            };
            if spec.strip_path_prefix && path_prefix.is_none() {
                ctx.push(
                    Some("strip_path_prefix"),
                    "needs a path_prefix to strip".into(),
                );
            }
            let (field, written) = upstream_list(ctx, &spec);
            let upstreams: Vec<HttpUpstream> = written
                .iter()
                .filter_map(|u| parse_http_upstream(ctx, field, u))
                .collect();
            let https = upstreams.first().is_some_and(|u| u.tls);
            if upstreams.iter().any(|u| u.tls != https) {
                ctx.push(
                    Some(field),
                    "mixes http:// and https:// targets; upstream_tls applies to every target, \
                     so use one scheme"
                        .into(),
                );
            }
            for (field, message) in crate::frontdoor::problems(&spec, https) {
                ctx.push(Some(field), message);
            }
            (upstreams.len() == written.len() && !upstreams.is_empty()).then_some(Target::Http {
                hosts,
                path_prefix,
                upstreams,
            })
        }
        Protocol::Tcp => {
            // Server names, read from the ClientHello without terminating TLS.
            let server_names = check_hosts(ctx, &spec.hosts);
            let http_only = [
                ("path_prefix", spec.path_prefix.is_some()),
                ("strip_path_prefix", spec.strip_path_prefix),
                ("upstream_protocol", !spec.upstream_protocol.is_default()),
                ("upstream_tls", spec.upstream_tls.is_some()),
                ("headers", !spec.headers.is_empty()),
                ("https_redirect", !spec.https_redirect),
                ("hsts", spec.hsts.is_some()),
            ];
            for (field, set) in http_only {
                if set {
                    ctx.push(
                        Some(field),
                        "applies to http services; a tcp service forwards bytes".into(),
                    );
                }
            }
            if spec.max_connections == Some(0) {
                ctx.push(Some("max_connections"), "must be at least 1".into());
            }
            let listen = match spec.listen.as_deref() {
                None => {
                    ctx.push(
                        Some("listen"),
                        "a tcp service needs `listen: ip:port`".into(),
                    );
                    None
                }
                Some(l) => match l.trim().parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        ctx.push(Some("listen"), format!("\"{l}\" is not an ip:port address"));
                        None
                    }
                },
            };
            let (field, written) = upstream_list(ctx, &spec);
            let mut upstreams = Vec::with_capacity(written.len());
            for u in &written {
                match parse_host_port(u) {
                    Some(_) => upstreams.push(u.clone()),
                    None => ctx.push(Some(field), format!("\"{u}\" is not a host:port address")),
                }
            }
            match listen {
                Some(listen) if upstreams.len() == written.len() && !upstreams.is_empty() => {
                    Some(Target::Tcp {
                        listen,
                        server_names,
                        upstreams,
                    })
                }
                _ => None,
            }
        }
    };
    if let Some(tls) = &spec.tls {
        for (field, message) in tls_problems(tls, &spec) {
            ctx.push(Some(field), message);
        }
    }
    let r = &spec.restrictions;
    let cidr_allow = parse_cidrs(ctx, "restrictions.cidr_allow", &r.cidr_allow);
    let cidr_deny = parse_cidrs(ctx, "restrictions.cidr_deny", &r.cidr_deny);
    let country_allow = parse_countries(ctx, "restrictions.country_allow", &r.country_allow);
    let country_deny = parse_countries(ctx, "restrictions.country_deny", &r.country_deny);
    let bypass = parse_cidrs(ctx, "restrictions.bypass", &r.bypass);
    if spec.protocol == Protocol::Tcp && spec.restrictions.appsec_mode.is_on() {
        ctx.push(
            Some("restrictions.appsec_mode"),
            "AppSec inspects HTTP requests; a tcp service has none".into(),
        );
    }
    if spec.protocol == Protocol::Tcp && !spec.remediation.is_default() {
        ctx.push(
            Some("remediation"),
            "applies to http services; a denied TCP connection is closed".into(),
        );
    }
    for (field, message) in crate::remediation::problems(&spec.remediation) {
        ctx.push(Some(field), message);
    }
    for (field, message) in crate::balance::problems(&spec) {
        ctx.push(Some(field), message);
    }
    if ctx.problems.len() > before {
        return None;
    }
    Some(Checked {
        spec,
        target: target?,
        cidr_allow,
        cidr_deny,
        country_allow,
        country_deny,
        bypass,
    })
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

fn parse_cidrs(ctx: &mut Ctx, field: &'static str, list: &[String]) -> Vec<IpNet> {
    let mut nets = Vec::with_capacity(list.len());
    for s in list {
        match parse_cidr(s) {
            Ok(n) => nets.push(n),
            Err(e) => ctx.push(Some(field), e),
        }
    }
    nets
}

fn parse_countries(ctx: &mut Ctx, field: &'static str, list: &[String]) -> Vec<CountryCode> {
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
    codes
}

/// The most targets one service may have.
pub const MAX_UPSTREAMS: usize = 64;

/// The service's targets as written (trimmed), and the field they came from. Empty when there
/// is none, or when both fields are given (each is a problem).
fn upstream_list(ctx: &mut Ctx, spec: &ServiceSpec) -> (&'static str, Vec<String>) {
    if spec.upstreams.is_empty() {
        let one = spec.upstream.trim();
        if one.is_empty() {
            ctx.push(
                Some("upstream"),
                "a service needs an upstream (or `upstreams` for several targets)".into(),
            );
            return ("upstream", Vec::new());
        }
        return ("upstream", vec![one.to_owned()]);
    }
    if !spec.upstream.trim().is_empty() {
        ctx.push(
            Some("upstreams"),
            "give either `upstream` (one target) or `upstreams` (several), not both".into(),
        );
        return ("upstreams", Vec::new());
    }
    if spec.upstreams.len() > MAX_UPSTREAMS {
        ctx.push(
            Some("upstreams"),
            format!(
                "has {} targets; at most {MAX_UPSTREAMS}",
                spec.upstreams.len()
            ),
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(spec.upstreams.len());
    for u in &spec.upstreams {
        let u = u.trim();
        if out.iter().any(|seen| seen.eq_ignore_ascii_case(u)) {
            ctx.push(Some("upstreams"), format!("\"{u}\" is listed twice"));
        } else {
            out.push(u.to_owned());
        }
    }
    if out.len() != spec.upstreams.len() {
        out.clear();
    }
    ("upstreams", out)
}

fn parse_http_upstream(ctx: &mut Ctx, field: &'static str, s: &str) -> Option<HttpUpstream> {
    let bad = |ctx: &mut Ctx, why: &str| {
        ctx.push(Some(field), format!("\"{s}\" {why}"));
        None
    };
    let Ok(uri) = s.parse::<Uri>() else {
        return bad(ctx, "is not a URL (expected http://host:port)");
    };
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        _ => return bad(ctx, "must be an http:// or https:// URL"),
    };
    let Some(authority) = uri.authority().cloned() else {
        return bad(ctx, "has no host");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return bad(ctx, "must not have a path or query");
    }
    if authority.as_str().contains('@') {
        return bad(ctx, "must not carry credentials");
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = authority.host();
    Some(HttpUpstream {
        url: s.to_owned(),
        address: format!("{host}:{port}"),
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    })
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

/// A host as routes hold it: trimmed, lower case, without a trailing dot.
pub fn normalise_host(h: &str) -> String {
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

/// A TLS server name: a host name or an IP address, no wildcard.
pub(crate) fn valid_server_name(h: &str) -> bool {
    !h.starts_with("*.") && valid_host(h)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RestrictionsSpec;

    fn http(id: &str, hosts: &[&str], upstream: &str) -> ServiceSpec {
        ServiceSpec {
            id: id.into(),
            protocol: Protocol::Http,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            listen: None,
            upstream: upstream.into(),
            tls: None,
            max_connections: None,
            restrictions: RestrictionsSpec::default(),
            ..ServiceSpec::new("", Protocol::Http, "")
        }
    }

    fn tcp(id: &str, listen: &str) -> ServiceSpec {
        ServiceSpec {
            protocol: Protocol::Tcp,
            hosts: vec![],
            listen: Some(listen.into()),
            upstream: "127.0.0.1:5432".into(),
            ..http(id, &[], "")
        }
    }

    fn fields(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.field.unwrap_or("")).collect()
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
        assert_eq!(normalise_host(" WWW.Example.COM. "), "www.example.com");
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
        let ok = |u: &str| match check_service(http("s", &["a.test"], u)).unwrap().target {
            Target::Http { upstreams, .. } => upstreams[0].address.clone(),
            t => panic!("{t:?}"),
        };
        assert_eq!(ok("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(ok("http://backend"), "backend:80");
        assert_eq!(ok("https://backend"), "backend:443");
        assert_eq!(ok("https://[::1]:8443"), "[::1]:8443");
        for bad in [
            "ftp://backend",
            "http://backend/x",
            "backend:80",
            "http://u@b:1",
        ] {
            let p = check_service(http("s", &["a.test"], bad)).unwrap_err();
            assert_eq!(fields(&p), ["upstream"], "{bad}");
        }
    }

    #[test]
    fn several_targets() {
        let many = |protocol: Protocol, targets: &[&str]| ServiceSpec {
            upstreams: targets.iter().map(|t| t.to_string()).collect(),
            ..match protocol {
                Protocol::Http => http("s", &["a.test"], ""),
                Protocol::Tcp => ServiceSpec {
                    upstream: String::new(),
                    ..tcp("s", "127.0.0.1:7000")
                },
            }
        };
        match check_service(many(Protocol::Http, &["http://a:1", "http://b:2"]))
            .unwrap()
            .target
        {
            Target::Http { upstreams, .. } => {
                let got: Vec<_> = upstreams.iter().map(|u| u.address.as_str()).collect();
                assert_eq!(got, ["a:1", "b:2"]);
                assert_eq!(upstreams[1].url, "http://b:2");
            }
            t => panic!("{t:?}"),
        }
        match check_service(many(Protocol::Tcp, &["a:1", "b:2"]))
            .unwrap()
            .target
        {
            Target::Tcp { upstreams, .. } => assert_eq!(upstreams, ["a:1", "b:2"]),
            t => panic!("{t:?}"),
        }
        let problem = |spec: ServiceSpec| {
            let p = check_service(spec).unwrap_err();
            (fields(&p).join(","), p[0].message.clone())
        };
        let (f, m) = problem(many(Protocol::Http, &["http://a:1", "https://b:2"]));
        assert_eq!(f, "upstreams");
        assert!(m.contains("mixes http:// and https://"), "{m}");
        let (f, m) = problem(many(Protocol::Http, &["http://a:1", "http://a:1"]));
        assert_eq!(
            (f.as_str(), m.as_str()),
            ("upstreams", "\"http://a:1\" is listed twice")
        );
        let (f, _) = problem(many(Protocol::Http, &["http://a:1", "ftp://b"]));
        assert_eq!(f, "upstreams");
        let (f, _) = problem(many(Protocol::Tcp, &["a:1", "nowhere"]));
        assert_eq!(f, "upstreams");
        let (f, m) = problem(ServiceSpec {
            upstream: "http://c:3".into(),
            ..many(Protocol::Http, &["http://a:1"])
        });
        assert_eq!(f, "upstreams");
        assert!(m.contains("not both"), "{m}");
        let (f, m) = problem(http("s", &["a.test"], " "));
        assert_eq!(f, "upstream");
        assert!(m.contains("needs an upstream"), "{m}");
        let lots: Vec<String> = (0..65).map(|i| format!("http://a:{}", i + 1)).collect();
        let lots: Vec<&str> = lots.iter().map(String::as_str).collect();
        let (f, m) = problem(many(Protocol::Http, &lots));
        assert_eq!(
            (f.as_str(), m.as_str()),
            ("upstreams", "has 65 targets; at most 64")
        );
    }

    #[test]
    fn health_options_are_checked() {
        use crate::{HealthCheckSpec, PassiveHealthSpec};
        let check = |path: Option<&str>, interval_secs, timeout_secs| HealthCheckSpec {
            path: path.map(str::to_owned),
            interval_secs,
            timeout_secs,
        };
        let with = |protocol: Protocol, health: HealthCheckSpec, eject_secs| ServiceSpec {
            health_check: Some(health),
            passive_health: PassiveHealthSpec {
                max_failures: 0,
                eject_secs,
            },
            ..match protocol {
                Protocol::Http => http("s", &["a.test"], "http://a:1"),
                Protocol::Tcp => tcp("s", "127.0.0.1:7000"),
            }
        };
        assert!(check_service(with(Protocol::Http, check(Some("/healthz?x=1"), 5, 5), 30)).is_ok());
        assert!(check_service(with(Protocol::Tcp, check(None, 5, 1), 30)).is_ok());
        let p = check_service(with(Protocol::Http, check(Some("healthz"), 0, 2), 0)).unwrap_err();
        assert_eq!(
            fields(&p),
            [
                "passive_health.eject_secs",
                "health_check.interval_secs",
                "health_check.timeout_secs",
                "health_check.path"
            ]
        );
        let p = check_service(with(Protocol::Http, check(Some("/a b"), 5, 6), 30)).unwrap_err();
        assert_eq!(
            fields(&p),
            ["health_check.timeout_secs", "health_check.path"]
        );
        let p = check_service(with(Protocol::Tcp, check(Some("/"), 5, 1), 30)).unwrap_err();
        assert_eq!(fields(&p), ["health_check.path"]);
        assert!(p[0].message.contains("connects"), "{p:?}");
    }

    #[test]
    fn front_door_options_are_checked() {
        use crate::{HeaderChanges, HeadersSpec, HstsSpec, UpstreamProtocol, UpstreamTlsSpec};
        let https = |tls: UpstreamTlsSpec| ServiceSpec {
            upstream_tls: Some(tls),
            ..http("s", &["a.test"], "https://pve.lan:8006")
        };
        let ok = check_service(https(UpstreamTlsSpec {
            ca_file: Some("/etc/nb-proxy/pve.pem".into()),
            server_name: Some("pve.internal".into()),
            skip_verify: false,
        }))
        .unwrap();
        match ok.target {
            Target::Http { upstreams, .. } => {
                assert!(upstreams[0].tls);
                assert_eq!(upstreams[0].host, "pve.lan");
            }
            t => panic!("{t:?}"),
        }
        let p = check_service(https(UpstreamTlsSpec {
            ca_file: Some("ca.pem".into()),
            server_name: Some("*.lan".into()),
            skip_verify: false,
        }))
        .unwrap_err();
        assert_eq!(
            fields(&p),
            ["upstream_tls.ca_file", "upstream_tls.server_name"],
            "{p:?}"
        );
        assert!(p[0].message.contains("absolute path"), "{p:?}");
        let p = check_service(https(UpstreamTlsSpec {
            ca_file: Some("/ca.pem".into()),
            server_name: None,
            skip_verify: true,
        }))
        .unwrap_err();
        assert!(p[0].message.contains("not used when skip_verify"), "{p:?}");

        let plain = ServiceSpec {
            upstream_tls: Some(UpstreamTlsSpec::default()),
            ..http("s", &["a.test"], "http://b:1")
        };
        let p = check_service(plain).unwrap_err();
        assert_eq!(fields(&p), ["upstream_tls"]);
        assert!(p[0].message.contains("https:// upstreams"), "{p:?}");

        let h2c_tls = ServiceSpec {
            upstream_protocol: UpstreamProtocol::H2c,
            ..http("s", &["a.test"], "https://b")
        };
        let p = check_service(h2c_tls).unwrap_err();
        assert_eq!(fields(&p), ["upstream_protocol"]);
        let h2c = ServiceSpec {
            upstream_protocol: UpstreamProtocol::H2c,
            ..http("s", &["a.test"], "http://b:50051")
        };
        assert!(check_service(h2c).is_ok());

        let mut headers = HeadersSpec::default();
        headers.request.set.insert("X-Env".into(), "prod".into());
        headers
            .request
            .set
            .insert("X-Real-IP".into(), "1.2.3.4".into());
        headers.request.add.insert("x-env".into(), "again".into());
        headers.request.remove.push("Content-Length".into());
        headers.response = HeaderChanges {
            set: [("X-Bad".to_string(), "a\r\nSet-Cookie: x=1".to_string())].into(),
            add: Default::default(),
            remove: vec!["bad name".into(), "Server".into()],
        };
        let p = check_service(ServiceSpec {
            headers,
            ..http("s", &["a.test"], "http://b:1")
        })
        .unwrap_err();
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "X-Real-IP is managed by the proxy and cannot be changed",
                "x-env is listed more than once",
                "Content-Length is managed by the proxy and cannot be changed",
                "\"bad name\" is not a valid header name",
                "the value of X-Bad must be visible ASCII on one line",
            ],
            "{p:?}"
        );

        let tcp_with = ServiceSpec {
            https_redirect: false,
            hsts: Some(HstsSpec {
                max_age: 60,
                include_subdomains: false,
                preload: false,
            }),
            ..tcp("db", "127.0.0.1:9000")
        };
        let p = check_service(tcp_with).unwrap_err();
        assert_eq!(fields(&p), ["https_redirect", "hsts"]);
    }

    #[test]
    fn path_prefixes_are_plain_and_unique_per_host() {
        assert_eq!(normalise_path_prefix("/admin/"), Ok(Some("/admin".into())));
        assert_eq!(normalise_path_prefix("/api/v1"), Ok(Some("/api/v1".into())));
        assert_eq!(normalise_path_prefix("/"), Ok(None));
        for bad in [
            "admin", "/a//b", "/a/../b", "/a/./b", "/a%2Fb", "/a b", "/a?x",
        ] {
            assert!(normalise_path_prefix(bad).is_err(), "{bad}");
        }
        let under = |id: &str, prefix: Option<&str>| ServiceSpec {
            path_prefix: prefix.map(str::to_owned),
            ..http(id, &["web.test"], "http://x:1")
        };
        assert!(check_services(vec![
            under("site", None),
            under("admin", Some("/admin")),
            under("api", Some("/api/")),
        ])
        .is_ok());
        let p = check_services(vec![
            under("a", Some("/admin")),
            under("b", Some("/admin/")),
        ])
        .unwrap_err();
        assert_eq!(
            p[0].message,
            "host web.test with path prefix /admin is already served by service \"a\""
        );
        assert_eq!(
            routes_of(&under("a", Some("/admin/"))),
            [("host", "web.test/admin".to_owned())]
        );
        let p = check_service(ServiceSpec {
            strip_path_prefix: true,
            ..under("a", None)
        })
        .unwrap_err();
        assert_eq!(fields(&p), ["strip_path_prefix"]);

        let tls = |id: &str, prefix: Option<&str>, cert: &str| ServiceSpec {
            tls: Some(crate::TlsSpec {
                cert_file: cert.into(),
                key_file: "k".into(),
                acme: false,
            }),
            ..under(id, prefix)
        };
        assert!(check_services(vec![tls("a", None, "c"), tls("b", Some("/x"), "c")]).is_ok());
        let p =
            check_services(vec![tls("a", None, "c"), tls("b", Some("/x"), "other")]).unwrap_err();
        assert_eq!(fields(&p), ["tls"], "{p:?}");
    }

    #[test]
    fn every_problem_of_a_service_is_named() {
        let mut s = http("", &["bad host", "A.test", "a.test."], "ftp://x");
        s.restrictions.cidr_allow = vec!["10.0.0.1/8".into()];
        s.restrictions.country_deny = vec!["ZZ".into()];
        s.max_connections = Some(3);
        let p = check_service(s).unwrap_err();
        assert_eq!(
            fields(&p),
            [
                "id",
                "hosts",
                "hosts",
                "max_connections",
                "upstream",
                "restrictions.cidr_allow",
                "restrictions.country_deny"
            ],
            "{p:?}"
        );
        let p = check_service(ServiceSpec {
            max_connections: Some(0),
            ..tcp("db", "nope")
        })
        .unwrap_err();
        assert_eq!(fields(&p), ["max_connections", "listen"]);
    }

    #[test]
    fn a_set_blames_the_later_of_two_claims() {
        let p = check_services(vec![
            http("a", &["web.test", "*.apps.test"], "http://x:1"),
            http("b", &["WEB.test."], "http://x:1"),
            http("a", &["other.test"], "http://x:1"),
            http("c", &["*.apps.test", "one.apps.test"], "http://x:1"),
            tcp("db1", "127.0.0.1:5433"),
            tcp("db2", "127.0.0.1:5433"),
        ])
        .unwrap_err();
        let said: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            said,
            [
                "service \"b\": hosts: host web.test is already served by service \"a\"",
                "service \"a\": id: is used by more than one service",
                "service \"c\": hosts: host *.apps.test is already served by service \"a\"",
                "service \"db2\": listen: 127.0.0.1:5433 is already used by service \"db1\" \
                 (services sharing a listener are told apart by the TLS server names in `hosts`)",
            ]
        );
        let ok = check_services(vec![
            http("w", &["*.apps.test"], "http://x:1"),
            http("e", &["one.apps.test"], "http://x:1"),
        ])
        .unwrap();
        assert_eq!(
            ok.len(),
            2,
            "a wildcard and a name under it are different routes"
        );
    }

    #[test]
    fn tls_is_files_or_acme() {
        let with = |tls: crate::TlsSpec, protocol: Protocol| ServiceSpec {
            tls: Some(tls),
            ..match protocol {
                Protocol::Http => http("s", &["a.test", "*.w.test"], "http://x:1"),
                Protocol::Tcp => tcp("s", "127.0.0.1:7000"),
            }
        };
        let files = |c: &str, k: &str| crate::TlsSpec {
            cert_file: c.into(),
            key_file: k.into(),
            acme: false,
        };
        assert!(check_service(with(files("c", "k"), Protocol::Http)).is_ok());
        let said = |s: ServiceSpec| -> Vec<String> {
            check_service(s)
                .unwrap_err()
                .iter()
                .map(|p| p.to_string())
                .collect()
        };
        assert_eq!(
            said(with(files("c", ""), Protocol::Http)),
            ["service \"s\": tls: needs cert_file and key_file, or acme: true"]
        );
        let both = crate::TlsSpec {
            acme: true,
            ..files("c", "k")
        };
        assert_eq!(
            said(with(both, Protocol::Http))[0],
            "service \"s\": tls: either acme: true or cert_file and key_file, not both"
        );
        assert_eq!(
            said(with(crate::TlsSpec::acme(), Protocol::Http)),
            [
                "service \"s\": tls.acme: *.w.test needs a DNS-01 challenge, which nb-proxy does \
              not answer; give the wildcard host a service with cert_file and key_file"
            ]
        );
        assert_eq!(
            fields(&check_service(with(crate::TlsSpec::acme(), Protocol::Tcp)).unwrap_err()),
            ["tls.acme"]
        );
        let plain = ServiceSpec {
            tls: Some(crate::TlsSpec::acme()),
            ..http("s", &["a.test"], "http://x:1")
        };
        assert!(check_service(plain).is_ok());
    }

    fn tcp_named(id: &str, listen: &str, names: &[&str]) -> ServiceSpec {
        ServiceSpec {
            hosts: names.iter().map(|n| n.to_string()).collect(),
            ..tcp(id, listen)
        }
    }

    #[test]
    fn tcp_services_share_a_listener_by_server_name() {
        let ok = check_services(vec![
            tcp_named("a", "127.0.0.1:8443", &["a.test", "*.apps.test"]),
            tcp_named("b", "127.0.0.1:8443", &["B.test."]),
            tcp("rest", "127.0.0.1:8443"),
        ])
        .unwrap();
        match &ok[1].target {
            Target::Tcp { server_names, .. } => assert_eq!(server_names, &["b.test"]),
            other => panic!("{other:?}"),
        }
        let p = check_services(vec![
            tcp_named("a", "127.0.0.1:8443", &["a.test"]),
            tcp_named("b", "127.0.0.1:8443", &["A.test", "b.test"]),
            tcp("rest", "127.0.0.1:8443"),
            tcp("rest2", "127.0.0.1:8443"),
            tcp_named(
                "c",
                "127.0.0.1:8444",
                &["a.test", "bad name", "c.test", "c.test"],
            ),
        ])
        .unwrap_err();
        let said: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            said,
            [
                "service \"b\": hosts: TLS server name a.test on 127.0.0.1:8443 is already \
                 routed to service \"a\"",
                "service \"rest2\": listen: 127.0.0.1:8443 is already used by service \"rest\" \
                 (services sharing a listener are told apart by the TLS server names in `hosts`)",
                "service \"c\": hosts: \"bad name\" is not a valid host name",
                "service \"c\": hosts: host c.test is listed twice",
            ]
        );
        assert_eq!(
            routes_of(&tcp_named("a", "127.0.0.1:8443", &["A.test.", "*.x.test"])),
            [
                ("sni", "127.0.0.1:8443 *.x.test".to_owned()),
                ("sni", "127.0.0.1:8443 a.test".to_owned())
            ]
        );
    }

    #[test]
    fn routes_are_what_the_proxy_routes_by() {
        assert_eq!(
            routes_of(&http("a", &["B.test.", "b.test", "*.x.test"], "")),
            [
                ("host", "*.x.test".to_owned()),
                ("host", "b.test".to_owned())
            ]
        );
        assert_eq!(
            routes_of(&tcp("v6", "[0:0::1]:5432")),
            [("listen", "[::1]:5432".to_owned())]
        );
    }
}
