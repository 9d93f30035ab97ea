//! Services with several upstream targets: how a target is chosen, when one is taken out of
//! rotation, and what a proxy reports about them.

use serde::{Deserialize, Serialize};

/// How a request (HTTP) or a connection (TCP) picks among a service's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Each target in turn.
    #[default]
    RoundRobin,
    /// The target with the fewest requests (or connections) in flight on this proxy.
    LeastConnections,
}

impl LoadBalancing {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::LeastConnections => "least_connections",
        }
    }
}

/// Passive health: a target whose connections fail `max_failures` times in a row is taken out
/// of rotation for `eject_secs`. Failures are refused or timed-out connections, failed TLS
/// handshakes and upstream timeouts, not error statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthSpec {
    /// Consecutive failures that eject a target; 0 never ejects.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// How long an ejected target stays out, in seconds (1 to 3600).
    #[serde(default = "default_eject_secs")]
    pub eject_secs: u32,
}

fn default_max_failures() -> u32 {
    3
}

fn default_eject_secs() -> u32 {
    30
}

impl Default for PassiveHealthSpec {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            eject_secs: default_eject_secs(),
        }
    }
}

impl PassiveHealthSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Active health checks: every `interval_secs` the proxy connects to each target (and, with
/// `path`, sends `GET path`; a status below 400 is healthy). A target that fails its check is
/// out of rotation until it passes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// http: the path to request (`/healthz`); without it the check only connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between checks (1 to 3600).
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u32,
    /// Seconds a check may take (at least 1, at most the interval).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u32,
}

fn default_interval_secs() -> u32 {
    10
}

fn default_timeout_secs() -> u32 {
    2
}

/// One upstream target of one service, as a proxy sees it now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetReport {
    pub service: String,
    /// As written in the service (`http://10.0.0.5:8080`, `db-2:5432`).
    pub target: String,
    /// In rotation: not ejected by passive health, and passing its active check (if any).
    pub healthy: bool,
    /// Why it is out of rotation: `ejected` (failures in a row) or `check failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests (or connections) in flight to it now.
    pub in_flight: u64,
    /// Requests (or connections) sent to it since the proxy started.
    pub requests: u64,
    /// Of those, the ones that failed to connect or timed out.
    pub failures: u64,
}

/// What is wrong with a service's balancing options, as `(field, message)`.
pub(crate) fn problems(spec: &crate::ServiceSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let p = &spec.passive_health;
    if !(1..=3600).contains(&p.eject_secs) {
        out.push((
            "passive_health.eject_secs",
            format!("{} is out of range: 1 to 3600 seconds", p.eject_secs),
        ));
    }
    if let Some(check) = &spec.health_check {
        if !(1..=3600).contains(&check.interval_secs) {
            out.push((
                "health_check.interval_secs",
                format!("{} is out of range: 1 to 3600 seconds", check.interval_secs),
            ));
        }
        if check.timeout_secs == 0 || check.timeout_secs > check.interval_secs {
            out.push((
                "health_check.timeout_secs",
                format!(
                    "{} is out of range: at least 1 second and at most interval_secs",
                    check.timeout_secs
                ),
            ));
        }
        match (&check.path, spec.protocol) {
            (Some(_), crate::Protocol::Tcp) => out.push((
                "health_check.path",
                "applies to http services; a tcp service's check connects".to_owned(),
            )),
            (Some(path), _) if !valid_check_path(path) => out.push((
                "health_check.path",
                format!("\"{path}\" must start with / and have no spaces or control characters"),
            )),
            _ => {}
        }
    }
    out
}

fn valid_check_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 256
        && path.bytes().all(|b| b.is_ascii_graphic())
        && http::uri::PathAndQuery::try_from(path).is_ok()
}
