//! Reads a batch of access-log entries as the proxy writes them (JSON lines, the design's
//! fields). The batch is accepted whole or refused whole.

use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use nb_proxy::restrict::Verdict;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::store::NewEvent;

/// Most entries a single batch may hold.
pub const MAX_BATCH_ENTRIES: usize = 50_000;

#[derive(Deserialize)]
struct Line {
    ts: String,
    service_id: String,
    protocol: String,
    source_ip: IpAddr,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(default)]
    deny_reason: String,
    #[serde(default)]
    metadata: Map<String, Value>,
}

fn verdict_known(s: &str) -> bool {
    Verdict::parse(s).is_some()
}

/// Parses every line; the first bad one refuses the batch, naming its line number.
pub fn parse_batch(proxy_id: &str, body: &[u8]) -> Result<Vec<NewEvent>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the batch is not UTF-8".to_owned())?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if out.len() == MAX_BATCH_ENTRIES {
            return Err(format!(
                "more than {MAX_BATCH_ENTRIES} entries in one batch"
            ));
        }
        let n = i + 1;
        let line: Line = serde_json::from_str(raw).map_err(|e| format!("line {n}: {e}"))?;
        out.push(to_event(proxy_id, line).map_err(|e| format!("line {n}: {e}"))?);
    }
    Ok(out)
}

fn to_event(proxy_id: &str, l: Line) -> Result<NewEvent, String> {
    let ts = humantime::parse_rfc3339_weak(&l.ts)
        .map_err(|_| format!("ts \"{}\" is not an RFC 3339 time", l.ts))?
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("ts \"{}\" is before 1970", l.ts))?
        .as_millis() as i64;
    if !matches!(l.protocol.as_str(), "http" | "tcp") {
        return Err(format!("protocol \"{}\" is not http or tcp", l.protocol));
    }
    if !l.deny_reason.is_empty() && (l.deny_reason == "allow" || !verdict_known(&l.deny_reason)) {
        return Err(format!(
            "deny_reason \"{}\" is not a deny verdict",
            l.deny_reason
        ));
    }
    let text = |key: &str| {
        l.metadata
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let crowdsec_verdict = text("crowdsec_verdict");
    let crowdsec_mode = text("crowdsec_mode");
    if !crowdsec_verdict.is_empty() && !verdict_known(&crowdsec_verdict) {
        return Err(format!(
            "metadata.crowdsec_verdict \"{crowdsec_verdict}\" is not a verdict"
        ));
    }
    if !matches!(crowdsec_mode.as_str(), "" | "enforce" | "observe") {
        return Err(format!(
            "metadata.crowdsec_mode \"{crowdsec_mode}\" is not enforce or observe"
        ));
    }
    Ok(NewEvent {
        ts,
        proxy_id: proxy_id.to_owned(),
        service_id: l.service_id,
        protocol: l.protocol,
        source_ip: l.source_ip.to_canonical().to_string(),
        host: l.host,
        method: l.method,
        path: l.path,
        status: l.status.map(i64::from),
        duration_ms: if l.duration_ms.is_finite() {
            l.duration_ms.max(0.0)
        } else {
            0.0
        },
        bytes_in: l.bytes_in.min(i64::MAX as u64) as i64,
        bytes_out: l.bytes_out.min(i64::MAX as u64) as i64,
        deny_reason: l.deny_reason,
        crowdsec_verdict,
        crowdsec_mode,
        metadata: Value::Object(l.metadata).to_string(),
    })
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
        let events = parse_batch("p1", body.as_bytes()).unwrap();
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
        let err = parse_batch("p1", body.as_bytes()).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_batch("p1", b"{not json")
            .unwrap_err()
            .starts_with("line 1:"));
        let err = parse_batch("p1", OBSERVE.replace("\"http\"", "\"udp\"").as_bytes()).unwrap_err();
        assert!(err.contains("protocol"), "{err}");
    }
}
