//! Reads a batch of access-log entries as the proxy writes them (JSON lines, the design's
//! fields). A line that cannot be read refuses the batch whole (the sender is broken). A line
//! that reads but is too large, or too old to keep, is refused on its own and counted: the rest
//! of the batch is stored. Entries dated in the future are stored at now plus the allowed skew.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use nb_api::events::{self, AccessLogLine};
use serde::Serialize;
use serde_json::Value;

use crate::store::NewEvent;

/// Most entries a single batch may hold.
pub const MAX_BATCH_ENTRIES: usize = 50_000;

/// Why a readable line was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The line is longer than `nb_api::events::MAX_LINE_BYTES`.
    LineTooLong,
    /// A field is over its limit (host, path, metadata …).
    FieldTooLong,
    /// Older than the events' retention age: it would be removed at once.
    Expired,
}

/// What a batch brought.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<NewEvent>,
    pub rejected: BTreeMap<Rejection, u64>,
}

impl Parsed {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// The clock and retention an entry is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub now_ms: i64,
    /// Entries older than this many milliseconds are refused (`None`: kept whatever their age).
    pub max_age_ms: Option<i64>,
}

impl Window {
    pub fn now(max_age: Option<std::time::Duration>) -> Self {
        Self {
            now_ms: crate::store::now_ms(),
            max_age_ms: max_age.map(|a| a.as_millis() as i64),
        }
    }
}

/// Parses every line. An unreadable one refuses the batch, naming its line number; an
/// oversized or expired one is counted in `rejected` and left out.
pub fn parse_batch(proxy_id: &str, body: &[u8], window: Window) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the batch is not UTF-8".to_owned())?;
    let mut out = Parsed::default();
    let mut lines = 0;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        lines += 1;
        if lines > MAX_BATCH_ENTRIES {
            return Err(format!(
                "more than {MAX_BATCH_ENTRIES} entries in one batch"
            ));
        }
        if raw.len() > events::MAX_LINE_BYTES {
            *out.rejected.entry(Rejection::LineTooLong).or_default() += 1;
            continue;
        }
        let n = i + 1;
        let de = &mut serde_json::Deserializer::from_str(raw);
        let line: AccessLogLine = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let e = e.into_inner();
            match path.as_str() {
                "." => format!("line {n}: {e}"),
                _ => format!("line {n}: {path}: {e}"),
            }
        })?;
        match to_event(proxy_id, line, window).map_err(|e| format!("line {n}: {e}"))? {
            Ok(event) => out.events.push(event),
            Err(why) => *out.rejected.entry(why).or_default() += 1,
        }
    }
    Ok(out)
}

fn field_too_long(l: &AccessLogLine) -> bool {
    use events::*;
    let over =
        |v: &Option<std::borrow::Cow<str>>, max: usize| v.as_ref().is_some_and(|s| s.len() > max);
    let m = &l.metadata;
    l.service_id.len() > MAX_SERVICE_ID_BYTES
        || over(&l.host, MAX_HOST_BYTES)
        || over(&l.path, MAX_PATH_BYTES)
        || over(&l.method, MAX_METHOD_BYTES)
        || m.len() > MAX_METADATA_KEYS
        || [&m.upstream_error, &m.client_error, &m.aborted]
            .iter()
            .any(|v| over(v, MAX_METADATA_VALUE_BYTES))
        || m.other.iter().any(|(k, v)| {
            k.len() > MAX_METADATA_KEY_BYTES
                || match v {
                    Value::String(s) => s.len() > MAX_METADATA_VALUE_BYTES,
                    Value::Array(_) | Value::Object(_) => {
                        v.to_string().len() > MAX_METADATA_VALUE_BYTES
                    }
                    _ => false,
                }
        })
}

/// `Err` refuses the batch; `Ok(Err)` refuses only this entry.
fn to_event(
    proxy_id: &str,
    l: AccessLogLine,
    window: Window,
) -> Result<Result<NewEvent, Rejection>, String> {
    let ts =
        l.ts.0
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "ts is before 1970".to_owned())?
            .as_millis() as i64;
    if field_too_long(&l) {
        return Ok(Err(Rejection::FieldTooLong));
    }
    if window
        .max_age_ms
        .is_some_and(|age| ts < window.now_ms - age)
    {
        return Ok(Err(Rejection::Expired));
    }
    let ts = ts.min(window.now_ms + events::MAX_CLOCK_SKEW.as_millis() as i64);
    let metadata = serde_json::to_string(&l.metadata).unwrap_or_else(|_| "{}".into());
    Ok(Ok(NewEvent {
        ts,
        proxy_id: proxy_id.to_owned(),
        service_id: l.service_id.into_owned(),
        protocol: l.protocol.as_str().to_owned(),
        source_ip: l.source_ip.to_canonical().to_string(),
        host: l.host.map(|h| h.into_owned()),
        method: l.method.map(|m| m.into_owned()),
        path: l.path.map(|p| p.into_owned()),
        status: l.status.map(i64::from),
        duration_ms: if l.duration_ms.is_finite() {
            l.duration_ms.max(0.0)
        } else {
            0.0
        },
        bytes_in: l.bytes_in.min(i64::MAX as u64) as i64,
        bytes_out: l.bytes_out.min(i64::MAX as u64) as i64,
        deny_reason: l.deny_reason.map_or("", |v| v.as_str()).to_owned(),
        crowdsec_verdict: l
            .metadata
            .crowdsec_verdict
            .map_or("", |v| v.as_str())
            .to_owned(),
        crowdsec_mode: l
            .metadata
            .crowdsec_mode
            .map_or("", |m| m.as_str())
            .to_owned(),
        metadata,
        country: l
            .country
            .map_or_else(String::new, |c| c.as_str().to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBSERVE: &str = r#"{"ts":"2026-11-22T10:00:00.123Z","service_id":"whoami","protocol":"http","source_ip":"::ffff:203.0.113.7","host":"whoami.localhost","method":"GET","path":"/","status":200,"duration_ms":0.41,"bytes_in":0,"bytes_out":9,"deny_reason":"","metadata":{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"observe"}}"#;

    #[test]
    fn reads_the_access_log_format() {
        let body = format!(
            "{OBSERVE}\n\n{}\n",
            OBSERVE.replace(r#""deny_reason":"""#, r#""deny_reason":"ip_restricted""#)
        );
        let events = parse_batch("p1", body.as_bytes(), window()).unwrap().events;
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.ts, 1_795_341_600_123);
        assert_eq!(e.source_ip, "203.0.113.7");
        assert_eq!(
            (e.crowdsec_mode.as_str(), e.crowdsec_verdict.as_str()),
            ("observe", "crowdsec_ban")
        );
        assert_eq!(e.deny_reason, "");
        assert_eq!(events[1].deny_reason, "ip_restricted");
        assert_eq!(e.proxy_id, "p1");
    }

    #[test]
    fn one_bad_line_refuses_the_batch() {
        let body = format!(
            "{OBSERVE}\n{}\n",
            OBSERVE.replace("crowdsec_ban", "crowdsec_nope")
        );
        let err = parse_batch("p1", body.as_bytes(), window()).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_batch("p1", b"{not json", window())
            .unwrap_err()
            .starts_with("line 1:"));
        let err = parse_batch(
            "p1",
            OBSERVE.replace("\"http\"", "\"udp\"").as_bytes(),
            window(),
        )
        .unwrap_err();
        assert!(err.contains("protocol"), "{err}");
    }

    /// 2026-11-22T10:05:00Z, 30 days of retention.
    fn window() -> Window {
        Window {
            now_ms: 1_795_341_900_000,
            max_age_ms: Some(30 * 86_400_000),
        }
    }

    #[test]
    fn oversized_lines_and_fields_are_refused_alone_and_counted() {
        let big_meta = OBSERVE.replace(
            r#""crowdsec_mode":"observe""#,
            &format!(r#""crowdsec_mode":"observe","x":"{}""#, "m".repeat(2000)),
        );
        let long_line = OBSERVE.replace("/\"", &format!("/{}\"", "p".repeat(20_000)));
        let long_path = OBSERVE.replace("/\"", &format!("/{}\"", "p".repeat(9000)));
        let many_keys = OBSERVE.replace(
            r#""crowdsec_mode":"observe""#,
            &(0..20)
                .map(|i| format!(r#""k{i}":1"#))
                .collect::<Vec<_>>()
                .join(","),
        );
        let body = [
            OBSERVE, &big_meta, &long_line, &long_path, &many_keys, OBSERVE,
        ]
        .join("\n");
        let p = parse_batch("p1", body.as_bytes(), window()).unwrap();
        assert_eq!(p.events.len(), 2, "the good lines are kept");
        assert_eq!(p.rejected[&Rejection::LineTooLong], 1);
        assert_eq!(p.rejected[&Rejection::FieldTooLong], 3);
        assert_eq!(p.rejected_total(), 4);
    }

    #[test]
    fn future_times_are_clamped_and_expired_ones_refused() {
        let future = OBSERVE.replace("2026-11-22T10:00:00.123Z", "9999-12-31T23:59:59.000Z");
        let old = OBSERVE.replace("2026-11-22T10:00:00.123Z", "2026-01-01T00:00:00.000Z");
        let body = [future.as_str(), old.as_str(), OBSERVE].join("\n");
        let p = parse_batch("p1", body.as_bytes(), window()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[0].ts, window().now_ms + 300_000, "now + 5 min");
        assert_eq!(
            p.events[1].ts, 1_795_341_600_123,
            "a past time is kept as it is"
        );
        assert_eq!(p.rejected[&Rejection::Expired], 1);
        let keep_all = Window {
            max_age_ms: None,
            ..window()
        };
        let p = parse_batch("p1", old.as_bytes(), keep_all).unwrap();
        assert_eq!(p.events.len(), 1, "no retention age: kept");
    }
}
