//! What a managed proxy and management say to each other.
//!
//! The proxy opens `GET paths::STREAM` (server-sent events) and receives a `services` event with
//! the full list at once and after every change; it sends `PUT paths::REPORT` when it connects
//! and periodically, and ships access-log entries as JSON lines to `POST paths::EVENTS`.

use serde::{Deserialize, Serialize};

use crate::ServiceSpec;

pub mod paths {
    pub const STREAM: &str = "/api/v1/proxy/stream";
    pub const REPORT: &str = "/api/v1/proxy/report";
    pub const EVENTS: &str = "/api/v1/proxy/events";
    /// The server-sent event that carries a [`super::ServicesUpdate`].
    pub const SERVICES_EVENT: &str = "services";
}

/// The whole service list at one revision of the management store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServicesUpdate {
    pub revision: i64,
    pub services: Vec<ServiceSpec>,
    /// Salt for [`ProxyReport::crowdsec_key_fingerprint`], the same for every proxy of one
    /// management installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_salt: Option<String>,
}

/// A proxy's state, sent when it connects and every few seconds after.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyReport {
    pub version: String,
    /// A CrowdSec LAPI is configured, so services may use enforce or observe.
    pub supports_crowdsec: bool,
    /// An AppSec component is configured (`--appsec-url`), so services may use `appsec_mode`.
    #[serde(default)]
    pub supports_appsec: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bouncer: Option<BouncerReport>,
    /// The revision of the services it runs (absent before the first one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<i64>,
    /// Why the latest service list was not applied, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Access-log entries dropped since the proxy started because shipping could not keep up.
    #[serde(default)]
    pub events_dropped: u64,
    /// A salted digest of the CrowdSec bouncer key: two live proxies with the same one share a
    /// key, and lose decisions to each other (the LAPI keeps one stream cursor per key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec_key_fingerprint: Option<String>,
    /// The upstream targets of services with several (or with health checks), and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::TargetReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BouncerReport {
    /// Some service uses CrowdSec, so the stream bouncer runs.
    pub running: bool,
    /// Decisions have been pulled at least once.
    pub synced: bool,
    pub decisions: u64,
    /// Synced once, but no poll has succeeded for three update intervals.
    #[serde(default)]
    pub stale: bool,
    /// RFC 3339 time of the last successful pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
