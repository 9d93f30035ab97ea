//! The service description operators write (standalone YAML) and management sends.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frontdoor::{is_true, yes};
use crate::{HeadersSpec, HstsSpec, RemediationSpec, UpstreamProtocol, UpstreamTlsSpec};
use crate::{HealthCheckSpec, LoadBalancing, PassiveHealthSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Per-service CrowdSec IP-reputation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CrowdSecMode {
    #[default]
    Off,
    /// Deny flagged addresses; deny everything until the first decision sync (fail closed).
    Enforce,
    /// Never deny; record what would have been denied.
    Observe,
}

impl CrowdSecMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            CrowdSecMode::Off => "off",
            CrowdSecMode::Enforce => "enforce",
            CrowdSecMode::Observe => "observe",
        }
    }

    pub const fn is_on(self) -> bool {
        !matches!(self, CrowdSecMode::Off)
    }
}

impl fmt::Display for CrowdSecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-service AppSec mode, as for IP reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AppSecMode {
    #[default]
    Off,
    /// Deny what the AppSec component blocks.
    Enforce,
    /// Never deny; record what would have been blocked.
    Observe,
}

impl AppSecMode {
    pub const fn is_on(self) -> bool {
        !matches!(self, AppSecMode::Off)
    }

    pub fn is_off(&self) -> bool {
        !self.is_on()
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            AppSecMode::Off => "off",
            AppSecMode::Enforce => "enforce",
            AppSecMode::Observe => "observe",
        }
    }
}

/// What to do with a request whose body is larger than AppSec may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OversizedBody {
    /// Inspect the request line and headers only.
    #[default]
    InspectHead,
    /// Deny it (`appsec_block`).
    Block,
}

impl OversizedBody {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub id: String,
    pub protocol: Protocol,
    /// http: routed by Host header (and SNI when TLS is terminated). tcp: TLS server names
    /// (SNI, read from the ClientHello, TLS passes through untouched) that pick this service
    /// on a listener shared with other tcp services; a service without them takes the
    /// connections no name matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// http: serve only paths under this prefix of the hosts (`/admin` serves `/admin` and
    /// `/admin/…`); the longest matching prefix of a host wins, and a service without one
    /// serves the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// http: remove the prefix from the path sent upstream (`/admin/users` → `/users`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_path_prefix: bool,
    /// tcp: the service's own listener, `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// http: `http://host:port` (or `https://`); tcp: `host:port`. Or, for several targets,
    /// `upstreams`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    /// Several targets, balanced by `load_balancing`, instead of one `upstream`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// How a request (http) or connection (tcp) picks among `upstreams`.
    #[serde(default, skip_serializing_if = "LoadBalancing::is_default")]
    pub load_balancing: LoadBalancing,
    /// When a failing target is taken out of rotation.
    #[serde(default, skip_serializing_if = "PassiveHealthSpec::is_default")]
    pub passive_health: PassiveHealthSpec,
    /// Checks each target on an interval, out of the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Terminate TLS with this certificate. Without it a TCP service forwards bytes untouched
    /// (TLS passthrough), and an HTTP service is served on the plain listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Open each upstream connection with a PROXY protocol v2 header naming the decided client
    /// (the upstream must expect it: nginx `proxy_protocol`, HAProxy `accept-proxy`, …).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_proxy_protocol: bool,
    /// tcp: at most this many connections open at once (more are closed at accept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub restrictions: RestrictionsSpec,
    /// http: what a denied client sees (ban page, JSON, redirect; 429 for throttle).
    #[serde(default, skip_serializing_if = "RemediationSpec::is_default")]
    pub remediation: RemediationSpec,
    /// http: the HTTP version spoken to the upstream.
    #[serde(default, skip_serializing_if = "UpstreamProtocol::is_default")]
    pub upstream_protocol: UpstreamProtocol,
    /// http, `https://` upstreams: how the upstream's certificate is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTlsSpec>,
    /// http: headers changed on requests going upstream and on responses.
    #[serde(default, skip_serializing_if = "HeadersSpec::is_empty")]
    pub headers: HeadersSpec,
    /// http: a plain-HTTP request for a host the proxy has a certificate for is answered with a
    /// `308` to `https://` (when the proxy has an HTTPS listener).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub https_redirect: bool,
    /// http: `Strict-Transport-Security` on responses sent over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<HstsSpec>,
}

impl ServiceSpec {
    /// The upstream targets as written: `upstreams`, or the one `upstream`.
    pub fn targets(&self) -> Vec<&str> {
        if self.upstreams.is_empty() {
            vec![self.upstream.as_str()]
        } else {
            self.upstreams.iter().map(String::as_str).collect()
        }
    }

    /// A service with `protocol`, `id` and `upstream`, and every option at its default.
    pub fn new(id: impl Into<String>, protocol: Protocol, upstream: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            protocol,
            hosts: Vec::new(),
            path_prefix: None,
            strip_path_prefix: false,
            listen: None,
            upstream: upstream.into(),
            upstreams: Vec::new(),
            load_balancing: LoadBalancing::default(),
            passive_health: PassiveHealthSpec::default(),
            health_check: None,
            tls: None,
            send_proxy_protocol: false,
            max_connections: None,
            restrictions: RestrictionsSpec::default(),
            remediation: RemediationSpec::default(),
            upstream_protocol: UpstreamProtocol::default(),
            upstream_tls: None,
            headers: HeadersSpec::default(),
            https_redirect: true,
            hsts: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM certificate chain on the proxy's machine; with `key_file`, instead of `acme`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// http: get the hosts' certificate from an ACME CA (Let's Encrypt by default), answer its
    /// HTTP-01 or TLS-ALPN-01 challenge, and renew it before it expires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acme: bool,
}

impl TlsSpec {
    /// Automatic certificates, no files.
    pub fn acme() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            acme: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestrictionsSpec {
    /// CIDRs or bare addresses; when non-empty, only these may connect.
    #[serde(default)]
    pub cidr_allow: Vec<String>,
    #[serde(default)]
    pub cidr_deny: Vec<String>,
    /// ISO 3166-1 alpha-2 codes, any case.
    #[serde(default)]
    pub country_allow: Vec<String>,
    #[serde(default)]
    pub country_deny: Vec<String>,
    #[serde(default)]
    pub crowdsec_mode: CrowdSecMode,
    /// http: CrowdSec's AppSec component (WAF), asked after the IP-reputation layer.
    #[serde(default, skip_serializing_if = "AppSecMode::is_off")]
    pub appsec_mode: AppSecMode,
    /// When the AppSec component cannot be asked: `false` (the default) denies
    /// (`appsec_unavailable`), `true` lets the request through.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub appsec_fail_open: bool,
    /// A body larger than the proxy's `--appsec-max-body`: `inspect_head` sends the request
    /// without its body, `block` denies it.
    #[serde(default, skip_serializing_if = "OversizedBody::is_default")]
    pub appsec_oversized_body: OversizedBody,
    /// CIDRs or bare addresses that skip the country, CrowdSec and AppSec layers (monitoring,
    /// an office); the CIDR allow and deny lists still apply to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<String>,
}

impl RestrictionsSpec {
    /// Access-control rules as the dashboard counts them: one per list entry, CrowdSec as one.
    pub fn rule_count(&self) -> usize {
        self.cidr_allow.len()
            + self.cidr_deny.len()
            + self.country_allow.len()
            + self.country_deny.len()
            + self.bypass.len()
            + usize::from(self.crowdsec_mode.is_on())
            + usize::from(self.appsec_mode.is_on())
    }
}
