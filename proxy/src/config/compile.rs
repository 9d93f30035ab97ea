//! Compiles service descriptions into the routing table the data plane reads: `nb_api` checks
//! what they mean (the same checks management runs), then this builds the filters, the host
//! map and the certificates. Either every service compiles or the whole set is rejected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nb_api::validate::{check_services, Checked, Target};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use arc_swap::ArcSwap;

use super::error::{ConfigError, Problem};
use super::headers::{hsts_value, HeaderRules};
use super::hostmap::HostMap;
use super::upstream_tls::UpstreamTls;
use crate::admission::ServiceSlots;
use crate::balance::Targets;
use crate::remediation::Remediation;
use crate::restrict::{CountrySet, Filter, IpSet};
use http::HeaderValue;
use nb_api::ServiceSpec;

pub use nb_api::validate::HttpUpstream;

/// One upstream target of an HTTP service.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub upstream: HttpUpstream,
    /// For an `https://` upstream.
    pub tls: Option<UpstreamTls>,
}

/// An HTTP service, routed by host on the shared listeners.
#[derive(Debug)]
pub struct HttpService {
    pub id: Arc<str>,
    pub targets: Targets<HttpTarget>,
    pub filter: Filter,
    /// What a denied client sees.
    pub remediation: Remediation,
    /// Changes to requests going upstream (after the proxy's own headers).
    pub request_headers: HeaderRules,
    /// Changes to the upstream's responses.
    pub response_headers: HeaderRules,
    /// `Strict-Transport-Security`, on responses over TLS.
    pub hsts: Option<HeaderValue>,
    pub spec: ServiceSpec,
}

/// A TCP service on its listener (its own, or one shared by TLS server name).
#[derive(Debug)]
pub struct TcpService {
    pub id: Arc<str>,
    pub listen: SocketAddr,
    /// Normalised TLS server names that route to it; empty: the listener's default.
    pub server_names: Vec<String>,
    /// Its open connections; a reload hands the count on to the service that replaces it.
    pub slots: ArcSwap<ServiceSlots>,
    /// `host:port` to dial.
    pub targets: Targets<String>,
    pub filter: Filter,
    /// Terminate TLS with this certificate; without it, bytes pass untouched.
    pub tls: Option<Arc<CertifiedKey>>,
    pub max_connections: Option<u32>,
    pub spec: ServiceSpec,
}

/// The TCP services on one listener: by the server name in the ClientHello, and the one
/// that takes every other connection.
#[derive(Debug, Default)]
pub struct TcpRoutes {
    pub by_name: HostMap<Arc<TcpService>>,
    pub default: Option<Arc<TcpService>>,
}

impl TcpRoutes {
    /// Whether a connection's ClientHello must be read to pick its service.
    pub fn routes_by_name(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// The service for a connection that named `server_name` (or none, or sent no TLS).
    pub fn route(&self, server_name: Option<&str>) -> Option<&Arc<TcpService>> {
        server_name
            .and_then(|n| self.by_name.get(n))
            .or(self.default.as_ref())
    }

    /// Some service of the listener, to name in a problem about it.
    pub fn first_id(&self) -> &str {
        match &self.default {
            Some(s) => &s.id,
            None => self.by_name.values().next().map_or("", |s| &s.id),
        }
    }
}

/// A service ready for the data plane: one or the other, never both.
#[derive(Debug, Clone)]
pub enum Service {
    Http(Arc<HttpService>),
    Tcp(Arc<TcpService>),
}

impl Service {
    pub fn id(&self) -> &Arc<str> {
        match self {
            Service::Http(s) => &s.id,
            Service::Tcp(s) => &s.id,
        }
    }

    pub fn filter(&self) -> &Filter {
        match self {
            Service::Http(s) => &s.filter,
            Service::Tcp(s) => &s.filter,
        }
    }

    pub fn spec(&self) -> &ServiceSpec {
        match self {
            Service::Http(s) => &s.spec,
            Service::Tcp(s) => &s.spec,
        }
    }
}

/// Everything the listeners need to route a connection or request; swapped whole on change.
#[derive(Debug, Default)]
pub struct Routes {
    pub services: Vec<Service>,
    /// Host name (or `*.suffix`) ⇒ its HTTP services, by path prefix.
    pub http: HostMap<HostRoutes>,
    pub tcp: HashMap<SocketAddr, TcpRoutes>,
    /// SNI name (or `*.suffix`) ⇒ certificate, for HTTP services that terminate TLS.
    pub certificates: HostMap<Arc<CertifiedKey>>,
    /// The host sets of services with `tls: {acme: true}` (each sorted): one certificate each.
    pub acme: Vec<Vec<String>>,
    /// The certificate, key and CA files these routes read (and `--tls-dir` files they would
    /// read), as they were: when one changes, the routes are compiled again.
    pub files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// A file's modification time and length, or what says it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl FileStamp {
    /// `None` when the file does not exist (or cannot be read).
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// The files a set of services reads when it compiles with `opts`.
fn files_read(specs: &[ServiceSpec], opts: &CompileOptions) -> Vec<(PathBuf, Option<FileStamp>)> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for spec in specs {
        match &spec.tls {
            Some(t) if t.acme => {}
            Some(t) => {
                paths.push(t.cert_file.clone().into());
                paths.push(t.key_file.clone().into());
            }
            None if spec.protocol == nb_api::Protocol::Http => {
                if let Some(dir) = &opts.tls_dir {
                    for host in &spec.hosts {
                        let host = nb_api::validate::normalise_host(host);
                        paths.push(dir.join(format!("{host}.crt")));
                        paths.push(dir.join(format!("{host}.key")));
                    }
                }
            }
            None => {}
        }
        if let Some(ca) = spec.upstream_tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            paths.push(ca.into());
        }
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|p| {
            let stamp = FileStamp::of(&p);
            (p, stamp)
        })
        .collect()
}

impl Routes {
    /// `host` as sent by the client: any case, maybe with a port or a trailing dot.
    pub fn http_host(&self, host: &str) -> Option<&HostRoutes> {
        let host = strip_port(host);
        self.http.get(host.strip_suffix('.').unwrap_or(host))
    }
}

/// One host's HTTP services: those with a path prefix, longest first, and the one without.
#[derive(Debug, Default)]
pub struct HostRoutes {
    prefixed: Vec<(String, Arc<HttpService>)>,
    rest: Option<Arc<HttpService>>,
    /// The proxy holds a certificate for the host (its plain-HTTP requests may be redirected).
    certified: bool,
}

impl HostRoutes {
    /// Whether requests for this host are routed by path (and their paths normalised).
    pub fn by_path(&self) -> bool {
        !self.prefixed.is_empty()
    }

    pub fn certified(&self) -> bool {
        self.certified
    }

    /// The service without a prefix: the only one when `by_path` is false.
    pub fn rest(&self) -> Option<&Arc<HttpService>> {
        self.rest.as_ref()
    }

    /// The service whose prefix covers `path` (normalised), longest first, else the rest; with
    /// the prefix it matched.
    pub fn route(&self, path: &str) -> Option<(&Arc<HttpService>, Option<&str>)> {
        self.prefixed
            .iter()
            .find(|(prefix, _)| covers(prefix, path))
            .map(|(prefix, s)| (s, Some(prefix.as_str())))
            .or_else(|| self.rest.as_ref().map(|s| (s, None)))
    }

    fn add(&mut self, prefix: Option<String>, service: Arc<HttpService>) {
        match prefix {
            None => self.rest = Some(service),
            Some(p) => {
                self.prefixed.push((p, service));
                self.prefixed.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            }
        }
    }
}

/// Whether `prefix` (no trailing `/`) covers `path`: itself or below it, on a segment boundary.
pub fn covers(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `host` without its `:port`, and an IPv6 literal without its brackets.
pub fn strip_port(host: &str) -> &str {
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

fn targets_of<U>(id: &Arc<str>, spec: &ServiceSpec, list: Vec<(Arc<str>, U)>) -> Targets<U> {
    let targets = Targets::new(id.clone(), list, spec.load_balancing, spec.passive_health);
    match spec.health_check {
        Some(_) => targets.counted(),
        None => targets,
    }
}

pub fn compile(
    source_name: &str,
    specs: Vec<ServiceSpec>,
    opts: &CompileOptions,
) -> Result<Routes, ConfigError> {
    let reject = |problems| ConfigError {
        source_name: source_name.to_owned(),
        problems,
    };
    // Stamped before they are read: a change while compiling makes another compile.
    let files = files_read(&specs, opts);
    let checked = check_services(specs).map_err(reject)?;
    let mut problems = Vec::new();
    let mut routes = Routes {
        files,
        ..Routes::default()
    };
    for c in checked {
        let acme = c.spec.tls.as_ref().is_some_and(|t| t.acme);
        let tls = c.spec.tls.as_ref().filter(|t| !t.acme).and_then(|t| {
            certified_key(Path::new(&t.cert_file), Path::new(&t.key_file))
                .map_err(|e| problems.push(problem(&c.spec, "tls", e)))
                .ok()
        });
        let filter = filter_of(&c);
        let Checked { spec, target, .. } = c;
        let id: Arc<str> = spec.id.as_str().into();
        match target {
            Target::Http {
                hosts,
                path_prefix,
                upstreams,
            } => {
                let remediation = Remediation::compile(&spec.remediation).unwrap_or_else(|e| {
                    problems.push(problem(&spec, e.field, e.message));
                    Remediation::default()
                });
                let mut list = Vec::with_capacity(upstreams.len());
                for upstream in upstreams {
                    let tls = UpstreamTls::build(
                        &spec.id,
                        &upstream,
                        spec.upstream_tls.as_ref(),
                        spec.upstream_protocol,
                    )
                    .unwrap_or_else(|e| {
                        problems.push(problem(&spec, "upstream_tls", e));
                        None
                    });
                    list.push((upstream.url.as_str().into(), HttpTarget { upstream, tls }));
                }
                let service = Arc::new(HttpService {
                    targets: targets_of(&id, &spec, list),
                    id,
                    filter,
                    remediation,
                    request_headers: HeaderRules::compile(&spec.headers.request),
                    response_headers: HeaderRules::compile(&spec.headers.response),
                    hsts: hsts_value(spec.hsts.as_ref()),
                    spec,
                });
                if acme {
                    let mut set = hosts.clone();
                    set.sort();
                    routes.acme.push(set);
                }
                for host in hosts {
                    let cert = match (&tls, &opts.tls_dir) {
                        (Some(cert), _) => Some(cert.clone()),
                        (None, _) if acme => None,
                        (None, Some(dir)) => cert_from_dir(dir, &host)
                            .map_err(|e| problems.push(problem(&service.spec, "hosts", e)))
                            .ok()
                            .flatten(),
                        (None, None) => None,
                    };
                    // An ACME host counts as certified from the start: its certificate
                    // comes within seconds, and its challenges are answered before redirects.
                    let certified = cert.is_some() || acme;
                    if let Some(cert) = cert {
                        // Services sharing a host share its certificate (the checks refused
                        // two different ones).
                        let _ = routes.certificates.insert(host.clone(), cert);
                    }
                    // Unique: the checks refused any host and prefix claimed twice.
                    let r = match routes.http.get_mut(&host) {
                        Some(r) => r,
                        None => {
                            let _ = routes.http.insert(host.clone(), HostRoutes::default());
                            routes.http.get_mut(&host).expect("just inserted")
                        }
                    };
                    r.add(path_prefix.clone(), service.clone());
                    r.certified |= certified;
                }
                routes.services.push(Service::Http(service));
            }
            Target::Tcp {
                listen,
                server_names,
                upstreams,
            } => {
                let list = upstreams
                    .into_iter()
                    .map(|u| (u.as_str().into(), u))
                    .collect();
                let service = Arc::new(TcpService {
                    targets: targets_of(&id, &spec, list),
                    id,
                    listen,
                    server_names,
                    slots: ArcSwap::default(),
                    filter,
                    tls,
                    max_connections: spec.max_connections,
                    spec,
                });
                // Unique: the checks refused a second default or a name routed twice.
                let on_listener = routes.tcp.entry(listen).or_default();
                if service.server_names.is_empty() {
                    on_listener.default = Some(service.clone());
                }
                for name in &service.server_names {
                    let _ = on_listener.by_name.insert(name.clone(), service.clone());
                }
                routes.services.push(Service::Tcp(service));
            }
        }
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(reject(problems))
    }
}

fn problem(spec: &ServiceSpec, field: &'static str, message: String) -> Problem {
    Problem {
        service: Some(spec.id.clone()),
        field: Some(field),
        message,
    }
}

fn filter_of(c: &Checked) -> Filter {
    Filter::new(
        IpSet::new(&c.cidr_allow),
        IpSet::new(&c.cidr_deny),
        CountrySet::new(c.country_allow.iter().copied()),
        CountrySet::new(c.country_deny.iter().copied()),
        c.spec.restrictions.crowdsec_mode,
    )
    .with_bypass(IpSet::new(&c.bypass))
}

/// `<host>.crt` and `<host>.key` from the certificate directory, if the certificate exists.
fn cert_from_dir(dir: &Path, host: &str) -> Result<Option<Arc<CertifiedKey>>, String> {
    let cert = dir.join(format!("{host}.crt"));
    let key = dir.join(format!("{host}.key"));
    if !cert.exists() {
        return Ok(None);
    }
    certified_key(&cert, &key).map(Some)
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
    fn prefixes_cover_whole_segments() {
        assert!(covers("/admin", "/admin"));
        assert!(covers("/admin", "/admin/"));
        assert!(covers("/admin", "/admin/users"));
        assert!(!covers("/admin", "/administrator"));
        assert!(!covers("/admin", "/"));
    }

    #[test]
    fn strips_ports_from_host_headers() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
    }
}
