//! Verdicts: what the proxy decided for a request or connection.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of one layer or of the whole filter, or `no_service` when no service serves the
/// requested host. The strings are a stable contract: they appear in the access log, metrics,
/// the management API and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    IpRestricted,
    CountryRestricted,
    GeoUnavailable,
    CrowdsecBan,
    CrowdsecCaptcha,
    CrowdsecThrottle,
    CrowdsecUnavailable,
    /// CrowdSec's AppSec component blocked the request.
    AppsecBlock,
    /// The AppSec component could not be asked (down, timeout, key refused).
    AppsecUnavailable,
    /// No service is configured for the requested host (404).
    NoService,
}

impl Verdict {
    pub const ALL: [Verdict; 11] = [
        Verdict::Allow,
        Verdict::IpRestricted,
        Verdict::CountryRestricted,
        Verdict::GeoUnavailable,
        Verdict::CrowdsecBan,
        Verdict::CrowdsecCaptcha,
        Verdict::CrowdsecThrottle,
        Verdict::CrowdsecUnavailable,
        Verdict::AppsecBlock,
        Verdict::AppsecUnavailable,
        Verdict::NoService,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::IpRestricted => "ip_restricted",
            Verdict::CountryRestricted => "country_restricted",
            Verdict::GeoUnavailable => "geo_unavailable",
            Verdict::CrowdsecBan => "crowdsec_ban",
            Verdict::CrowdsecCaptcha => "crowdsec_captcha",
            Verdict::CrowdsecThrottle => "crowdsec_throttle",
            Verdict::CrowdsecUnavailable => "crowdsec_unavailable",
            Verdict::AppsecBlock => "appsec_block",
            Verdict::AppsecUnavailable => "appsec_unavailable",
            Verdict::NoService => "no_service",
        }
    }

    /// The verdict a stable string names (`"crowdsec_ban"` ⇒ `CrowdsecBan`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub const fn is_allow(self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_serde() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert_eq!(Verdict::parse("nope"), None);
    }
}
