//! What denied clients see, over real sockets: ban pages (built-in, an operator's template,
//! JSON, text, a redirect) and 429 with `Retry-After` for throttle decisions from a real LAPI.
//! Observe mode never serves a page.

use serde_json::Value;

use crate::harness::*;
use crate::lapi::Lapi;

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const JSON: (&str, &str) = ("accept", "application/json");

fn reference_in(body: &str) -> String {
    let at = body
        .find("<dt>Reference</dt><dd>")
        .expect("the page shows a reference")
        + 22;
    body[at..at + 16].to_owned()
}

/// The entry with this reference, once the access log has it.
async fn entry_with(proxy: &Proxy, reference: &str) -> Value {
    poll(400, || {
        proxy
            .entries()
            .into_iter()
            .find(|e| e["metadata"]["reference"] == reference)
    })
    .await
    .unwrap_or_else(|| panic!("no entry with reference {reference}: {:?}", proxy.entries()))
}

#[tokio::test]
async fn ban_pages_json_text_templates_and_redirects() {
    let up = Upstream::start("u").await;
    let pages = tempfile::tempdir().unwrap();
    let template = pages.path().join("ban.html");
    std::fs::write(
        &template,
        "<html><body><h1>Blocked ({{status}})</h1><p>{{reason}}</p><p id=ref>{{reference}}</p><p>{{client_ip}} on {{host}} / {{service}}</p></body></html>",
    )
    .unwrap();
    let yaml = format!(
        r#"
services:
  - id: plain
    protocol: http
    hosts: [plain.test]
    upstream: {u}
    restrictions: {{cidr_deny: [127.0.0.66]}}
  - id: legal
    protocol: http
    hosts: [legal.test]
    upstream: {u}
    restrictions: {{cidr_deny: [127.0.0.66]}}
    remediation:
      ban: {{status: 451, template_file: {t}}}
  - id: away
    protocol: http
    hosts: [away.test]
    upstream: {u}
    restrictions: {{cidr_deny: [127.0.0.66]}}
    remediation:
      ban: {{redirect_url: "https://example.com/blocked?from=nb"}}
"#,
        u = up.url(),
        t = template.display()
    );
    let proxy = ProxyBuilder::new(&yaml).start().await;

    // Allowed clients never see any of this.
    assert_eq!(status_of(&proxy, "127.0.0.1", "legal.test").await, 200);

    // The built-in page, for a browser.
    let r = get_with(&proxy, "127.0.0.66", "plain.test", "/", &[HTML]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.starts_with("<!doctype html>"), "{}", r.body);
    assert!(r
        .body
        .contains("Your network address is not allowed to reach this site."));
    assert!(r.body.contains("<dd>127.0.0.66</dd>") && r.body.contains("<dd>plain.test</dd>"));
    let reference = reference_in(&r.body);
    let e = entry_with(&proxy, &reference).await;
    assert_eq!(e["deny_reason"], "ip_restricted");
    assert_eq!(e["status"], 403);
    assert_eq!(e["source_ip"], "127.0.0.66");

    // JSON for API clients, text for curl; each denial has its own reference.
    let r = get_with(&proxy, "127.0.0.66", "plain.test", "/api", &[JSON]).await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["verdict"], "ip_restricted");
    assert_ne!(v["reference"], reference.as_str());
    assert_eq!(
        entry_with(&proxy, v["reference"].as_str().unwrap()).await["path"],
        "/api"
    );
    let r = get_from(&proxy, "127.0.0.66", "plain.test", "/").await;
    assert!(r.body.starts_with("Forbidden: "), "{}", r.body);

    // The operator's template and status.
    let r = get_with(&proxy, "127.0.0.66", "legal.test", "/", &[HTML]).await;
    assert_eq!(r.status, 451);
    assert!(
        r.body.starts_with("<html><body><h1>Blocked (451)</h1>"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("127.0.0.66 on legal.test / legal"),
        "{}",
        r.body
    );
    let at = r.body.find("<p id=ref>").unwrap() + 10;
    let e = entry_with(&proxy, &r.body[at..at + 16]).await;
    assert_eq!(e["status"], 451);

    // A redirect instead of a page.
    let r = get_with(&proxy, "127.0.0.66", "away.test", "/", &[HTML]).await;
    assert_eq!(r.status, 302);
    let raw = raw_exchange(
        &proxy,
        "127.0.0.66",
        b"GET / HTTP/1.1\r\nHost: away.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        raw.contains("\r\nlocation: https://example.com/blocked?from=nb\r\n"),
        "{raw}"
    );
    assert!(raw.contains("\r\ncache-control: no-store\r\n"), "{raw}");
}

#[tokio::test]
async fn a_template_that_cannot_be_used_rejects_the_configuration_whole() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("ban.html");
    std::fs::write(&template, "<p>{{reason}}</p>").unwrap();
    let good = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions: {{cidr_deny: [127.0.0.66]}}\n    remediation:\n      ban: {{template_file: {}}}\n",
        up.url(),
        template.display()
    );
    let proxy = ProxyBuilder::new(&good).start().await;
    let page = |p: Proxy| async move {
        let r = get_with(&p, "127.0.0.66", "web.test", "/", &[HTML]).await;
        (p, r.body)
    };
    let (proxy, body) = page(proxy).await;
    assert!(body.starts_with("<p>Your network address"), "{body}");
    // A template with an unknown variable: named in the log, the running config stays.
    let bad = good.replace(
        &template.display().to_string(),
        &dir.path().join("bad.html").display().to_string(),
    );
    std::fs::write(
        dir.path().join("bad.html"),
        "<p>{{reason}} {{password}}</p>",
    )
    .unwrap();
    proxy.rewrite_config(&bad, "keeping the running one").await;
    let log = proxy.stderr_text();
    assert!(
        log.contains("remediation.ban.template_file")
            && log.contains("unknown variable {{password}}"),
        "{log}"
    );
    let (_proxy, body) = page(proxy).await;
    assert!(body.starts_with("<p>Your network address"), "{body}");
}

#[tokio::test]
async fn throttle_decisions_get_429_with_retry_after_and_observe_serves_nothing() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.70", "--type", "throttle"]);
    lapi.add(&["--ip", "127.0.0.71"]);
    let yaml = format!(
        r#"
services:
  - id: enforce
    protocol: http
    hosts: [enforce.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: enforce}}
    remediation:
      throttle: {{retry_after_secs: 120}}
  - id: observe
    protocol: http
    hosts: [observe.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: observe}}
"#,
        u = up.url()
    );
    let proxy = ProxyBuilder::new(&yaml).crowdsec(&lapi.url()).start().await;
    proxy
        .wait_log_count("synced initial decisions (2)", 1)
        .await;

    let raw = raw_exchange(
        &proxy,
        "127.0.0.70",
        b"GET / HTTP/1.1\r\nHost: enforce.test\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 429, "{raw}");
    assert!(raw.contains("\r\nretry-after: 120\r\n"), "{raw}");
    let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["verdict"], "crowdsec_throttle");
    assert_eq!(body["retry_after"], 120);
    let e = entry_with(&proxy, body["reference"].as_str().unwrap()).await;
    assert_eq!(e["status"], 429);
    assert_eq!(e["deny_reason"], "crowdsec_throttle");

    // A ban on the same service is still 403, with the page.
    let r = get_with(&proxy, "127.0.0.71", "enforce.test", "/", &[HTML]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("blocked for suspicious activity"));

    // Observe: the upstream answers, the log says what would have happened, no reference.
    for src in ["127.0.0.70", "127.0.0.71"] {
        let r = get_with(&proxy, src, "observe.test", "/", &[HTML]).await;
        assert_eq!(r.status, 200, "{src}");
        assert_eq!(r.json()["upstream"], "u");
    }
    let entries = proxy.wait_entries(4).await;
    let observed: Vec<_> = entries
        .iter()
        .filter(|e| e["service_id"] == "observe")
        .collect();
    assert_eq!(observed.len(), 2);
    assert_eq!(
        observed[0]["metadata"]["crowdsec_verdict"],
        "crowdsec_throttle"
    );
    assert_eq!(observed[1]["metadata"]["crowdsec_verdict"], "crowdsec_ban");
    assert!(observed
        .iter()
        .all(|e| e["metadata"].get("reference").is_none()));
}
