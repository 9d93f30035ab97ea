//! An entry as one JSON line, written by hand: the same bytes serde would write for
//! [`nb_api::AccessLogLine`] (the tests check it), at a quarter of the instructions. Every
//! request writes one, so the serialiser is on the request path's bill.

use std::time::{SystemTime, UNIX_EPOCH};

use nb_api::events::{
    truncated, MAX_HOST_BYTES, MAX_METHOD_BYTES, MAX_PATH_BYTES, MAX_SERVICE_ID_BYTES,
};

use super::AccessLogEntry;
use crate::ip_text::IpText;

/// Bytes that need a backslash escape in a JSON string: `"`, `\` and the control characters.
const fn escapes() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static ESCAPE: [bool; 256] = escapes();

/// `s` as a JSON string, quoted, escaped as serde_json escapes.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `,"key":` (the key is a plain ASCII name).
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Two digits, zero-padded.
fn two(out: &mut Vec<u8>, n: u64) {
    out.push(b'0' + (n / 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// RFC 3339 in UTC with milliseconds, as humantime writes it: `2026-11-22T10:00:00.123Z`.
fn timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as u64;
    out.push(b'"');
    two(out, y / 100);
    two(out, y % 100);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    let ms = u64::from(since.subsec_millis());
    out.push(b'.');
    out.push(b'0' + (ms / 100) as u8);
    two(out, ms % 100);
    out.extend_from_slice(b"Z\"");
}

/// Writes `e` as one line (with its newline). `bounded`: hosts, paths, ids and methods cut to
/// what management accepts.
pub fn write_line(e: &AccessLogEntry, out: &mut Vec<u8>, bounded: bool) {
    fn cap(s: &str, max: usize, bounded: bool) -> &str {
        if bounded {
            truncated(s, max)
        } else {
            s
        }
    }
    let mut first = true;
    let f = &mut first;
    out.push(b'{');
    key(out, f, "ts");
    timestamp(out, e.ts);
    key(out, f, "service_id");
    string(out, cap(&e.service_id, MAX_SERVICE_ID_BYTES, bounded));
    key(out, f, "protocol");
    string(out, e.protocol.as_str());
    key(out, f, "source_ip");
    out.push(b'"');
    // An address's text has nothing to escape.
    let mut ip = IpText::default();
    out.extend_from_slice(ip.format(e.source_ip));
    out.push(b'"');
    if let Some(h) = e.host() {
        key(out, f, "host");
        string(out, cap(h, MAX_HOST_BYTES, bounded));
    }
    if let Some(m) = e.method() {
        key(out, f, "method");
        string(out, cap(m, MAX_METHOD_BYTES, bounded));
    }
    if let Some(p) = e.path() {
        key(out, f, "path");
        string(out, cap(p, MAX_PATH_BYTES, bounded));
    }
    if let Some(s) = e.status {
        key(out, f, "status");
        uint(out, u64::from(s));
    }
    key(out, f, "duration_ms");
    let ms = (e.duration.as_micros() as f64) / 1000.0;
    out.extend_from_slice(ryu::Buffer::new().format_finite(ms).as_bytes());
    key(out, f, "bytes_in");
    uint(out, e.bytes_in);
    key(out, f, "bytes_out");
    uint(out, e.bytes_out);
    key(out, f, "deny_reason");
    string(out, e.deny_reason().map_or("", |v| v.as_str()));
    if let Some(c) = e.outcome.country {
        key(out, f, "country");
        string(out, c.as_str());
    }
    key(out, f, "metadata");
    metadata(e, out);
    out.extend_from_slice(b"}\n");
}

fn metadata(e: &AccessLogEntry, out: &mut Vec<u8>) {
    let mut first = true;
    let f = &mut first;
    out.push(b'{');
    if let Some(flag) = e.outcome.crowdsec {
        key(out, f, "crowdsec_verdict");
        string(out, flag.verdict.as_str());
        key(out, f, "crowdsec_mode");
        string(out, flag.mode.as_str());
    }
    for (k, v) in [
        ("upstream_error", e.upstream_error),
        ("client_error", e.client_error),
        ("aborted", e.aborted),
    ] {
        if let Some(v) = v {
            key(out, f, k);
            string(out, v);
        }
    }
    if let Some(r) = e.reference {
        key(out, f, "reference");
        out.push(b'"');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for i in (0..16).rev() {
            out.push(HEX[((r >> (i * 4)) & 0xf) as usize]);
        }
        out.push(b'"');
    }
    if let Some(c) = e.captcha {
        key(out, f, "captcha");
        string(out, c.as_str());
    }
    if let Some((verdict, mode)) = e.appsec {
        key(out, f, "appsec_verdict");
        string(out, verdict.as_str());
        key(out, f, "appsec_mode");
        string(out, mode.as_str());
    }
    if e.outcome.bypass {
        key(out, f, "bypass");
        out.extend_from_slice(b"true");
    }
    if let Some(u) = &e.upstream {
        key(out, f, "upstream");
        string(out, u);
    }
    out.push(b'}');
}

/// IP addresses written without a formatter or an allocation.
#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use nb_api::events::{AccessLogLine, Metadata, Timestamp};
    use nb_api::{AppSecMode, CaptchaOutcome, CountryCode};
    use proptest::prelude::*;

    use super::*;
    use crate::config::Protocol;
    use crate::restrict::filter::CrowdSecFlag;
    use crate::restrict::{CrowdSecMode, DecisionKind, Outcome, Verdict};

    /// The line as serde writes the contract's type: what the hand-written one must equal.
    fn via_serde(e: &AccessLogEntry, bounded: bool) -> Vec<u8> {
        let cap = |s: &str, max: usize| if bounded { truncated(s, max) } else { s }.to_owned();
        let line = AccessLogLine {
            ts: Timestamp(e.ts),
            service_id: Cow::Owned(cap(&e.service_id, MAX_SERVICE_ID_BYTES)),
            protocol: e.protocol,
            source_ip: e.source_ip,
            host: e.host().map(|h| Cow::Owned(cap(h, MAX_HOST_BYTES))),
            method: e.method().map(|m| Cow::Owned(cap(m, MAX_METHOD_BYTES))),
            path: e.path().map(|p| Cow::Owned(cap(p, MAX_PATH_BYTES))),
            status: e.status,
            duration_ms: (e.duration.as_micros() as f64) / 1000.0,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            deny_reason: e.deny_reason(),
            country: e.outcome.country,
            metadata: Metadata {
                crowdsec_verdict: e.outcome.crowdsec.map(|f| f.verdict),
                crowdsec_mode: e.outcome.crowdsec.map(|f| f.mode),
                upstream_error: e.upstream_error.map(Cow::Borrowed),
                client_error: e.client_error.map(Cow::Borrowed),
                aborted: e.aborted.map(Cow::Borrowed),
                reference: e.reference.map(|r| Cow::Owned(format!("{r:016x}"))),
                captcha: e.captcha,
                bypass: e.outcome.bypass,
                appsec_verdict: e.appsec.map(|a| a.0),
                appsec_mode: e.appsec.map(|a| a.1),
                upstream: e.upstream.as_deref().map(Cow::Borrowed),
                other: Default::default(),
            },
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    fn entry(text: &str, ip: IpAddr, n: u64, full: bool) -> AccessLogEntry {
        let mut e = AccessLogEntry::connection(
            SystemTime::UNIX_EPOCH + Duration::from_micros(n.wrapping_mul(7_919_131) % 5e15 as u64),
            if n % 2 == 0 {
                Protocol::Http
            } else {
                Protocol::Tcp
            },
            Arc::from(text),
            ip,
        );
        e.duration = Duration::from_micros(n % 10_000_000);
        e.bytes_in = n;
        e.bytes_out = n.rotate_left(17);
        if full {
            e.host = Some(text.into());
            e.method = Some(http::Method::from_bytes(b"PROPFIND").unwrap());
            e.path = Some(text.repeat(3).into());
            e.status = Some((n % 600) as u16);
            e.outcome = Outcome {
                verdict: Verdict::CrowdsecCaptcha,
                crowdsec: Some(CrowdSecFlag {
                    verdict: Verdict::CrowdsecCaptcha,
                    mode: CrowdSecMode::Observe,
                    kind: DecisionKind(3),
                }),
                bypass: n % 3 == 0,
                reputation_checked: true,
                country: CountryCode::parse("BR"),
            };
            e.upstream_error = Some("upstream certificate not trusted");
            e.client_error = Some("malformed \"request\"");
            e.aborted = Some("cut at shutdown");
            e.reference = Some(n);
            e.captcha = Some(CaptchaOutcome::Cookie);
            e.appsec = Some((Verdict::AppsecBlock, AppSecMode::Enforce));
            e.upstream = Some(Arc::from(text));
        }
        e
    }

    #[test]
    fn an_entry_with_every_field_reads_as_serde_writes_it() {
        for (text, ip) in [
            ("whoami", "203.0.113.7"),
            ("q\"uo\\te\n\t\r\u{8}\u{c}\u{1}\u{1f}", "::1"),
            ("ünï©ødé 🚀", "2001:db8::8a2e:370:7334"),
            ("", "0.0.0.0"),
        ] {
            for full in [false, true] {
                let e = entry(text, ip.parse().unwrap(), 987_654_321, full);
                for bounded in [false, true] {
                    let mut mine = Vec::new();
                    write_line(&e, &mut mine, bounded);
                    assert_eq!(
                        String::from_utf8(mine).unwrap(),
                        String::from_utf8(via_serde(&e, bounded)).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn long_fields_are_cut_on_a_character_for_management() {
        let mut e = entry("x", "192.0.2.1".parse().unwrap(), 1, true);
        e.path = Some(format!("/{}", "é".repeat(MAX_PATH_BYTES)).into());
        let mut out = Vec::new();
        write_line(&e, &mut out, true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let path = v["path"].as_str().unwrap();
        assert!(path.len() <= MAX_PATH_BYTES && path.len() > MAX_PATH_BYTES - 2);
        assert_eq!(out, via_serde(&e, true));
    }

    proptest! {
        #[test]
        fn any_text_address_and_numbers_read_as_serde_writes_them(
            text in any::<String>(),
            v4 in any::<u32>(),
            v6 in any::<u128>(),
            n in any::<u64>(),
            full in any::<bool>(),
        ) {
            for ip in [IpAddr::from(v4.to_be_bytes()), IpAddr::from(v6.to_be_bytes())] {
                let e = entry(&text, ip, n, full);
                for bounded in [false, true] {
                    let mut mine = Vec::new();
                    write_line(&e, &mut mine, bounded);
                    prop_assert_eq!(&mine, &via_serde(&e, bounded));
                }
            }
        }
    }
}
