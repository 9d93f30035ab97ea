use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue};
use nb_api::{RemediationSpec, Verdict};

use super::template::{Template, TemplateError, Values};
use super::{format_reference, new_reference, Denial, Format, Remediation};

fn spec(json: &str) -> RemediationSpec {
    serde_json::from_str(json).unwrap()
}

fn accept(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_str(v).unwrap());
    h
}

fn denial(verdict: Verdict) -> Denial<'static> {
    Denial {
        verdict,
        reference: "00c0ffee00c0ffee",
        client_ip: "192.0.2.7".parse::<IpAddr>().unwrap(),
        host: "<script>x</script>.test",
        service: "web",
    }
}

fn text(body: &bytes::Bytes) -> &str {
    std::str::from_utf8(body).unwrap()
}

#[test]
fn the_format_follows_accept() {
    let f = |v: &str| Format::of(&accept(v));
    assert_eq!(Format::of(&HeaderMap::new()), Format::Text);
    assert_eq!(f("*/*"), Format::Text);
    assert_eq!(
        f("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        Format::Html
    );
    assert_eq!(f("application/json"), Format::Json);
    assert_eq!(f("application/json, text/html;q=0.5"), Format::Json);
}

#[test]
fn a_ban_page_escapes_what_the_client_sent_and_shows_the_reference() {
    let r = Remediation::compile(&RemediationSpec::default()).unwrap();
    let resp = r.answer(&denial(Verdict::CrowdsecBan), &accept("text/html"));
    assert_eq!(resp.status(), 403);
    let body = text(resp.body());
    assert!(body.contains("00c0ffee00c0ffee"));
    assert!(
        body.contains("&lt;script&gt;x&lt;/script&gt;.test"),
        "{body}"
    );
    assert!(!body.contains("<script>"));
    assert!(body.contains("blocked for suspicious activity"));
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    assert!(!h.contains_key("retry-after"));
}

#[test]
fn json_and_text_answers() {
    let r = Remediation::compile(&spec(r#"{"ban": {"status": 451}}"#)).unwrap();
    let resp = r.answer(&denial(Verdict::IpRestricted), &accept("application/json"));
    assert_eq!(resp.status(), 451);
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["status"], 451);
    assert_eq!(v["verdict"], "ip_restricted");
    assert_eq!(v["reference"], "00c0ffee00c0ffee");
    assert!(v.get("retry_after").is_none());
    let resp = r.answer(&denial(Verdict::CountryRestricted), &HeaderMap::new());
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        text(resp.body()),
        "Unavailable For Legal Reasons: Access to this site is not available from your country.\nReference: 00c0ffee00c0ffee\n"
    );
}

#[test]
fn throttle_is_429_with_retry_after_and_never_redirected() {
    let r = Remediation::compile(&spec(
        r#"{"ban": {"redirect_url": "https://example.com/blocked"}, "throttle": {"retry_after_secs": 7}}"#,
    ))
    .unwrap();
    let resp = r.answer(
        &denial(Verdict::CrowdsecThrottle),
        &accept("application/json"),
    );
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["retry_after"], 7);
    let resp = r.answer(&denial(Verdict::CrowdsecBan), &accept("text/html"));
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://example.com/blocked");
    assert!(resp.body().is_empty());
}

#[test]
fn an_operator_template_gets_the_named_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ban.html");
    std::fs::write(
        &path,
        "<h1>{{status}} for {{ client_ip }}</h1><p>{{reason}}</p><small>{{reference}} {{service}} {{host}}</small>",
    )
    .unwrap();
    let json = format!(r#"{{"ban": {{"template_file": "{}"}}}}"#, path.display());
    let r = Remediation::compile(&spec(&json)).unwrap();
    let resp = r.answer(&denial(Verdict::CrowdsecUnavailable), &accept("text/html"));
    assert_eq!(
        text(resp.body()),
        "<h1>403 for 192.0.2.7</h1><p>The security check for this site is temporarily unavailable. Please try again later.</p><small>00c0ffee00c0ffee web &lt;script&gt;x&lt;/script&gt;.test</small>"
    );
    assert!(
        !resp.headers().contains_key("content-security-policy"),
        "an operator's page may load its own assets"
    );

    std::fs::write(&path, "<p>{{reason}} {{secret}}</p>").unwrap();
    let e = Remediation::compile(&spec(&json)).unwrap_err();
    assert_eq!(e.field, "remediation.ban.template_file");
    assert!(e.message.contains("unknown variable {{secret}}"), "{e}");
    assert!(e.message.contains("{{reason}}, {{reference}}"), "{e}");
    let missing = format!(
        r#"{{"ban": {{"template_file": "{}/nope.html"}}}}"#,
        dir.path().display()
    );
    let e = Remediation::compile(&spec(&missing)).unwrap_err();
    assert!(
        e.message.contains("cannot read") && e.message.contains("nope.html"),
        "{e}"
    );
}

#[test]
fn templates_reject_unclosed_variables() {
    assert_eq!(
        Template::parse("ok {{reason").unwrap_err(),
        TemplateError::Unclosed(3)
    );
    let t = Template::parse("{{reason}}{{status}}").unwrap();
    let v = Values {
        reason: "a&b",
        reference: "",
        client_ip: "",
        host: "",
        service: "",
        status: 429,
    };
    assert_eq!(t.render(&v), "a&amp;b429");
}

#[test]
fn references_do_not_repeat() {
    let refs: std::collections::HashSet<u64> = (0..10_000).map(|_| new_reference()).collect();
    assert_eq!(refs.len(), 10_000);
    assert_eq!(format_reference(0xab).as_str(), "00000000000000ab");
    assert_eq!(
        format_reference(0x0123_4567_89ab_cdef).as_str(),
        "0123456789abcdef"
    );
    assert_eq!(format_reference(u64::MAX).as_str(), "ffffffffffffffff");
}
