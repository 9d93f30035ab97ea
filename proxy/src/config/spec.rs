//! The service description operators write (standalone YAML) and management sends.

use serde::{Deserialize, Serialize};

use crate::restrict::CrowdSecMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub id: String,
    pub protocol: Protocol,
    /// http: routed by Host header (and SNI when TLS is terminated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// tcp: the service's own listener, `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// http: `http://host:port`; tcp: `host:port`.
    pub upstream: String,
    /// Terminate TLS with this certificate. Without it a TCP service forwards bytes untouched
    /// (TLS passthrough), and an HTTP service is served on the plain listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default)]
    pub restrictions: RestrictionsSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionsSpec {
    #[serde(default)]
    pub cidr_allow: Vec<String>,
    #[serde(default)]
    pub cidr_deny: Vec<String>,
    #[serde(default)]
    pub country_allow: Vec<String>,
    #[serde(default)]
    pub country_deny: Vec<String>,
    #[serde(default)]
    pub crowdsec_mode: CrowdSecMode,
}
