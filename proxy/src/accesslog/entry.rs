use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use compact_str::CompactString;

use crate::config::Protocol;
use crate::restrict::{Outcome, Verdict};

/// One HTTP request or one TCP connection.
#[derive(Debug, Clone)]
pub struct AccessLogEntry {
    pub ts: SystemTime,
    /// Empty when no service matched (unknown Host).
    pub service_id: Arc<str>,
    pub protocol: Protocol,
    pub source_ip: IpAddr,
    /// Held inline when short (most are): an entry costs no allocation of its own.
    pub host: Option<CompactString>,
    pub method: Option<http::Method>,
    pub path: Option<CompactString>,
    /// HTTP status; absent for TCP.
    pub status: Option<u16>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub outcome: Outcome,
    /// Why forwarding failed, when it did (`connection refused`, `timeout`, …).
    pub upstream_error: Option<&'static str>,
    /// Why the proxy answered the request itself (`malformed request`, …): a client mistake.
    pub client_error: Option<&'static str>,
    /// Why the exchange ended before it was complete (`cut at shutdown`, …).
    pub aborted: Option<&'static str>,
    /// The reference a denied client was shown.
    pub reference: Option<u64>,
    /// What the captcha step did, when it ran.
    pub captcha: Option<nb_api::CaptchaOutcome>,
    /// What AppSec said when it blocked or could not be asked, and the service's mode.
    pub appsec: Option<(Verdict, nb_api::AppSecMode)>,
    /// The target that answered or failed, for services with several.
    pub upstream: Option<Arc<str>>,
}

/// The service id of an entry not (yet) routed: one per thread, so that entries share it
/// without allocating and without a refcount bouncing between cores.
fn no_service() -> Arc<str> {
    thread_local! {
        static NO_SERVICE: Arc<str> = Arc::from("");
    }
    NO_SERVICE.with(Arc::clone)
}

impl AccessLogEntry {
    /// A new HTTP request's entry, allowed until decided otherwise.
    pub fn http<B>(ts: SystemTime, source_ip: IpAddr, req: &http::Request<B>) -> Self {
        Self {
            method: Some(req.method().clone()),
            path: Some(CompactString::new(req.uri().path())),
            ..Self::connection(ts, Protocol::Http, no_service(), source_ip)
        }
    }

    /// A TCP connection's entry (or a connection refused before any request was read).
    pub fn connection(
        ts: SystemTime,
        protocol: Protocol,
        service_id: Arc<str>,
        source_ip: IpAddr,
    ) -> Self {
        Self {
            ts,
            service_id,
            protocol,
            source_ip,
            host: None,
            method: None,
            path: None,
            status: None,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            outcome: Outcome::plain(Verdict::Allow),
            upstream_error: None,
            client_error: None,
            aborted: None,
            reference: None,
            captcha: None,
            appsec: None,
            upstream: None,
        }
    }

    pub fn deny_reason(&self) -> Option<Verdict> {
        (!self.outcome.is_allowed()).then_some(self.outcome.verdict)
    }

    /// The entry as one JSON line, as the access log writes it.
    pub fn to_json_line(&self, out: &mut Vec<u8>) {
        super::json::write_line(self, out, false)
    }

    /// The line for management: hosts, paths and ids shortened to what it accepts (a client
    /// can send a request head of many kilobytes).
    pub fn to_shipped_line(&self, out: &mut Vec<u8>) {
        super::json::write_line(self, out, true)
    }

    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_ref().map(http::Method::as_str)
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restrict::filter::CrowdSecFlag;
    use crate::restrict::CrowdSecMode;

    #[test]
    fn json_shape_matches_the_design() {
        let e = AccessLogEntry {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_860_000_123),
            service_id: "whoami".into(),
            protocol: Protocol::Http,
            source_ip: "203.0.113.7".parse().unwrap(),
            host: Some("whoami.localhost".into()),
            method: Some(http::Method::GET),
            path: Some("/".into()),
            status: Some(403),
            duration: Duration::from_micros(410),
            bytes_in: 0,
            bytes_out: 9,
            outcome: Outcome {
                verdict: Verdict::CrowdsecBan,
                crowdsec: Some(CrowdSecFlag {
                    verdict: Verdict::CrowdsecBan,
                    mode: CrowdSecMode::Enforce,
                    kind: crate::restrict::DecisionKind(0),
                }),
                bypass: false,
                reputation_checked: true,
                country: nb_api::CountryCode::parse("NL"),
            },
            upstream_error: None,
            client_error: None,
            aborted: None,
            reference: Some(0xc0ffee),
            captcha: None,
            appsec: None,
            upstream: None,
        };
        let mut out = Vec::new();
        e.to_json_line(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["reference"], "0000000000c0ffee");
        assert_eq!(v["ts"], "2026-11-28T10:00:00.123Z");
        assert_eq!(v["service_id"], "whoami");
        assert_eq!(v["protocol"], "http");
        assert_eq!(v["source_ip"], "203.0.113.7");
        assert_eq!(v["status"], 403);
        assert_eq!(v["duration_ms"], 0.41);
        assert_eq!(v["deny_reason"], "crowdsec_ban");
        assert_eq!(v["metadata"]["crowdsec_verdict"], "crowdsec_ban");
        assert_eq!(v["metadata"]["crowdsec_mode"], "enforce");
        assert_eq!(v["country"], "NL");
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn tcp_entries_have_no_http_fields_and_allowed_has_empty_reason() {
        let e = AccessLogEntry {
            ts: SystemTime::now(),
            service_id: "db".into(),
            protocol: Protocol::Tcp,
            source_ip: "::1".parse().unwrap(),
            host: None,
            method: None,
            path: None,
            status: None,
            duration: Duration::from_millis(5),
            bytes_in: 10,
            bytes_out: 20,
            outcome: Outcome::plain(Verdict::Allow),
            upstream_error: None,
            client_error: None,
            aborted: None,
            reference: None,
            captcha: None,
            appsec: None,
            upstream: None,
        };
        let mut out = Vec::new();
        e.to_json_line(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for absent in ["host", "method", "path", "status", "country"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        assert_eq!(v["deny_reason"], "");
        assert_eq!(v["metadata"], serde_json::json!({}));
    }
}
