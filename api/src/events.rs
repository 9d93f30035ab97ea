//! Limits on the access-log entries a proxy ships to management. Management refuses lines over
//! them (and counts them per proxy); the proxy shortens long hosts and paths before shipping, so
//! that its own entries always fit.

use std::time::Duration;

/// Longest line (one entry as JSON).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest `host` (a name and a port fit many times over).
pub const MAX_HOST_BYTES: usize = 512;
/// Longest `path`.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
pub const MAX_SERVICE_ID_BYTES: usize = 128;
pub const MAX_METHOD_BYTES: usize = 32;
/// `metadata` keys, and the size of each key and each value (as JSON).
pub const MAX_METADATA_KEYS: usize = 16;
pub const MAX_METADATA_KEY_BYTES: usize = 64;
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Entries dated later than now plus this are stored at now plus this: a proxy's clock may be
/// a little ahead, but an entry from the future would stay on top of the event log forever.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Most bytes of JSON lines a proxy sends in one batch.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("abcdef", 3), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aé", 3), "aé");
    }
}

/// One access-log entry, as nb-proxy writes it (file or stdout) and ships it to management:
/// one JSON object per line. The proxy serialises borrowed strings; management reads owned
/// ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessLogLine<'a> {
    /// When the request or connection started: RFC 3339, UTC, milliseconds.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: Timestamp,
    /// Empty when no service matched the host.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub service_id: std::borrow::Cow<'a, str>,
    pub protocol: crate::Protocol,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub source_ip: std::net::IpAddr,
    /// HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub host: Option<std::borrow::Cow<'a, str>>,
    /// HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub path: Option<std::borrow::Cow<'a, str>>,
    /// HTTP status; absent for TCP, and for an HTTP exchange that ended before an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The verdict when denied; `""` when allowed.
    #[serde(default, with = "deny_reason")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub deny_reason: Option<crate::Verdict>,
    /// The client's country (ISO 3166-1 alpha-2), for denied and CrowdSec-flagged entries when
    /// the proxy has a GeoIP database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub country: Option<crate::CountryCode>,
    #[serde(default)]
    pub metadata: Metadata<'a>,
}

/// What else an entry says.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metadata<'a> {
    /// What the CrowdSec layer said, whenever it flagged the address (enforce or observe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec_verdict: Option<crate::Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec_mode: Option<crate::CrowdSecMode>,
    /// Why forwarding failed (`connection refused`, `timeout`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub upstream_error: Option<std::borrow::Cow<'a, str>>,
    /// Why the proxy answered a request itself (400, 405, 408, 431).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub client_error: Option<std::borrow::Cow<'a, str>>,
    /// Why the exchange ended early (`cut at shutdown`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub aborted: Option<std::borrow::Cow<'a, str>>,
    /// The id a denied client was shown (ban page, JSON answer), to find this entry by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub reference: Option<std::borrow::Cow<'a, str>>,
    /// What the captcha step did: `served`, `passed`, `failed` or `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha: Option<crate::CaptchaOutcome>,
    /// What the AppSec layer said, whenever it blocked or could not be asked (enforce or observe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appsec_verdict: Option<crate::Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appsec_mode: Option<crate::AppSecMode>,
    /// The client is on the service's bypass list: country and CrowdSec were not consulted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass: bool,
    /// The upstream target that answered or failed, for services with several targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub upstream: Option<std::borrow::Cow<'a, str>>,
    /// Keys this version does not know (from a newer proxy), kept as they are.
    #[serde(
        flatten,
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Metadata<'_> {
    /// How many keys the object has on the wire.
    pub fn len(&self) -> usize {
        usize::from(self.crowdsec_verdict.is_some())
            + usize::from(self.crowdsec_mode.is_some())
            + usize::from(self.upstream_error.is_some())
            + usize::from(self.client_error.is_some())
            + usize::from(self.aborted.is_some())
            + usize::from(self.reference.is_some())
            + usize::from(self.captcha.is_some())
            + usize::from(self.bypass)
            + usize::from(self.appsec_verdict.is_some())
            + usize::from(self.appsec_mode.is_some())
            + usize::from(self.upstream.is_some())
            + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A point in time, RFC 3339 with milliseconds on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub std::time::SystemTime);

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s)
            .map(Timestamp)
            .map_err(|_| serde::de::Error::custom(format!("\"{s}\" is not an RFC 3339 time")))
    }
}

/// `deny_reason`: `""` when allowed, else a verdict other than `allow`.
mod deny_reason {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::Verdict;

    pub fn serialize<S: Serializer>(v: &Option<Verdict>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("", Verdict::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Verdict>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        match Verdict::parse(&s) {
            Some(v) if !v.is_allow() => Ok(Some(v)),
            _ => Err(de::Error::custom(format!("\"{s}\" is not a deny verdict"))),
        }
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    const OBSERVE: &str = r#"{"ts":"2026-11-22T10:00:00.123Z","service_id":"whoami","protocol":"http","source_ip":"203.0.113.7","host":"whoami.localhost","method":"GET","path":"/","status":200,"duration_ms":0.41,"bytes_in":0,"bytes_out":9,"deny_reason":"","metadata":{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"observe"}}"#;

    #[test]
    fn the_design_example_round_trips() {
        let line: AccessLogLine = serde_json::from_str(OBSERVE).unwrap();
        assert_eq!(line.deny_reason, None);
        assert_eq!(
            line.metadata.crowdsec_verdict,
            Some(crate::Verdict::CrowdsecBan)
        );
        assert_eq!(
            line.metadata.crowdsec_mode,
            Some(crate::CrowdSecMode::Observe)
        );
        assert_eq!(serde_json::to_string(&line).unwrap(), OBSERVE);
    }

    #[test]
    fn unknown_metadata_is_kept_and_bad_values_refused() {
        let line: AccessLogLine = serde_json::from_str(&OBSERVE.replace(
            r#""crowdsec_mode":"observe""#,
            r#""crowdsec_mode":"observe","future":{"x":1}"#,
        ))
        .unwrap();
        assert_eq!(line.metadata.other["future"], serde_json::json!({"x": 1}));
        assert_eq!(line.metadata.len(), 3);
        for bad in [
            OBSERVE.replace(r#""deny_reason":"""#, r#""deny_reason":"allow""#),
            OBSERVE.replace(r#""deny_reason":"""#, r#""deny_reason":"nope""#),
            OBSERVE.replace("crowdsec_ban", "crowdsec_nope"),
            OBSERVE.replace("\"http\"", "\"udp\""),
            OBSERVE.replace("2026-11-22T10:00:00.123Z", "yesterday"),
        ] {
            assert!(
                serde_json::from_str::<AccessLogLine>(&bad).is_err(),
                "{bad}"
            );
        }
    }
}
