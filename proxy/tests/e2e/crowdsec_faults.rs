//! The bouncer against a fake LAPI: faults never empty the cache; lifecycle and limits.

use std::time::Duration;

use crate::fake_lapi::{decision, FakeLapi, Reply};
use crate::harness::*;

fn one_service(up: &Upstream, mode: &str) -> String {
    format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions:\n      crowdsec_mode: {mode}\n",
        up.url()
    )
}

async fn proxy(yaml: &str, lapi: &FakeLapi, extra: &[&str]) -> Proxy {
    let mut b = ProxyBuilder::new(yaml)
        .arg("--crowdsec-api-url")
        .arg(lapi.url())
        .arg("--crowdsec-api-key")
        .arg("fake-key-0123")
        .arg("--crowdsec-update-interval")
        .arg("100ms");
    for a in extra {
        b = b.arg(*a);
    }
    b.start().await
}

#[tokio::test]
async fn faults_never_empty_the_cache() {
    let up = Upstream::start("u").await;
    let startup = format!(
        r#"{{"new":[{},{}],"deleted":null}}"#,
        decision("127.0.0.50", "Ip", "ban", "3h59m59s"), // 1.6-style, rounded
        decision("127.0.0.51", "Ip", "captcha", "4m54.820029999s"), // 1.4-style, nanoseconds
    );
    let lapi = FakeLapi::start(vec![
        Reply::Json(startup.clone()),
        Reply::Json(r#"{"new":null,"deleted":null}"#.into()),
        Reply::Json("<html>502 Bad Gateway</html>".into()),
        Reply::Json(startup.clone()),
        Reply::Truncated(format!(
            r#"{{"new":[{}]}}"#,
            decision("127.0.0.52", "Ip", "ban", "1h")
        )),
        Reply::Json(startup.clone()),
        Reply::Status(500, "internal error"),
        Reply::Status(403, r#"{"message":"access forbidden"}"#),
        Reply::Json(r#"{"new":null,"deleted":null}"#.into()),
    ])
    .await;
    let proxy = proxy(&one_service(&up, "enforce"), &lapi, &[]).await;
    let seen = lapi.wait_requests(10).await;
    for (src, status) in [
        ("127.0.0.50", 403),
        ("127.0.0.51", 403),
        ("127.0.0.52", 200),
        ("127.0.0.53", 200),
    ] {
        assert_eq!(status_of(&proxy, src, "web.test").await, status, "{src}");
    }
    let log = proxy.stderr_text();
    for needle in [
        "synced initial decisions (2)",
        "not valid decision JSON",
        "closed the connection before the answer was complete",
        "HTTP 500",
        "key rejected (the LAPI answered 403)",
        "keeping the last known decisions",
        "CrowdSec LAPI reachable again",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
    assert!(!log.contains("fake-key-0123"), "the key is never logged");
    // After a bad answer the cursor may have moved: the next poll is a full resync. (After the
    // truncated one the HTTP client may retry on a fresh connection first, so only the
    // garbage answer's successor is checked by position.)
    let startups: Vec<bool> = seen.iter().map(|s| s.startup).collect();
    assert_eq!(&startups[..4], [true, false, false, true], "{startups:?}");
    assert!(
        startups[4..].iter().any(|s| *s),
        "a resync after the truncated answer: {startups:?}\n{log}"
    );
    assert_eq!(seen[0].api_key, "fake-key-0123");
    assert!(
        seen[0]
            .user_agent
            .starts_with("crowdsec-nb-proxy-bouncer/v"),
        "{}",
        seen[0].user_agent
    );
    assert!(
        seen[0].query.contains("scopes=ip%2Crange") || seen[0].query.contains("scopes=ip,range")
    );
}

#[tokio::test]
async fn a_slow_lapi_times_out_and_enforce_stays_closed() {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![Reply::Slow(Duration::from_secs(5), "{}".into())]).await;
    let proxy = proxy(
        &one_service(&up, "enforce"),
        &lapi,
        &["--crowdsec-timeout", "300ms"],
    )
    .await;
    proxy.wait_log_count("timeout", 1).await;
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 403);
    let e = proxy.wait_entries(1).await;
    assert_eq!(e[0]["deny_reason"], "crowdsec_unavailable");
}

/// Streams a 1 GiB answer and watches the proxy's resident memory until it refuses it.
async fn refuses_with_bounded_memory(reply: Reply, expect: &str) {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![reply]).await;
    let proxy = proxy(
        &one_service(&up, "observe"),
        &lapi,
        &["--crowdsec-max-decisions", "1000"],
    )
    .await;
    let pid = proxy.pid();
    let mut peak_kib = 0u64;
    for _ in 0..400 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        peak_kib = peak_kib.max(rss);
        if proxy.stderr_text().contains(expect) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.stderr_text().contains(expect),
        "{}",
        proxy.stderr_text()
    );
    assert!(
        peak_kib < 128 * 1024,
        "RSS peaked at {peak_kib} KiB while a 1 GiB answer streamed"
    );
}

#[tokio::test]
async fn a_huge_decision_is_refused_with_bounded_memory() {
    refuses_with_bounded_memory(
        Reply::HugeString(1 << 30),
        "a decision is larger than 64 KiB",
    )
    .await;
}

#[tokio::test]
async fn a_huge_answer_is_refused_with_bounded_memory() {
    refuses_with_bounded_memory(Reply::HugePadding(1 << 30), "larger than 64 MiB").await;
}

#[tokio::test]
async fn answers_with_too_many_decisions_are_refused() {
    let up = Upstream::start("u").await;
    let many: Vec<String> = (0..1500)
        .map(|i| decision(&format!("10.0.{}.{}", i / 250, i % 250), "Ip", "ban", "1h"))
        .collect();
    let lapi = FakeLapi::start(vec![Reply::Json(format!(
        r#"{{"new":[{}]}}"#,
        many.join(",")
    ))])
    .await;
    let proxy = proxy(
        &one_service(&up, "enforce"),
        &lapi,
        &["--crowdsec-max-decisions", "1000"],
    )
    .await;
    proxy.wait_log_count("more than 1000 decisions", 1).await;
    assert_eq!(
        status_of(&proxy, "127.0.0.1", "web.test").await,
        403,
        "still not synced"
    );
}

#[tokio::test]
async fn null_arrays_sync_an_empty_set() {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![Reply::Json(r#"{"new":null,"deleted":null}"#.into())]).await;
    let proxy = proxy(&one_service(&up, "enforce"), &lapi, &[]).await;
    proxy
        .wait_log_count("synced initial decisions (0)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 200);
}

#[tokio::test]
async fn bouncer_is_reference_counted_by_services() {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![Reply::Json(format!(
        r#"{{"new":[{}],"deleted":null}}"#,
        decision("127.0.0.60", "Ip", "ban", "1h")
    ))])
    .await;
    let off = one_service(&up, "off");
    let proxy = proxy(&off, &lapi, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lapi.requests().len(),
        0,
        "no LAPI traffic while no service uses CrowdSec"
    );
    assert!(!proxy.stderr_text().contains("CrowdSec bouncer started"));

    // First service with CrowdSec: the bouncer starts with a full sync.
    proxy
        .rewrite_config(&one_service(&up, "enforce"), "configuration reloaded")
        .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.60", "web.test").await, 403);

    // Edits and a hand-over to another service never restart it.
    let edited = one_service(&up, "enforce").replace(
        "crowdsec_mode: enforce",
        "crowdsec_mode: enforce\n      cidr_deny: [127.0.0.99]",
    );
    proxy
        .rewrite_config(&edited, "configuration reloaded")
        .await;
    let handed = format!(
        "{}  - id: other\n    protocol: http\n    hosts: [other.test]\n    upstream: {}\n    restrictions:\n      crowdsec_mode: observe\n",
        one_service(&up, "off"),
        up.url()
    );
    proxy
        .rewrite_config(&handed, "configuration reloaded")
        .await;
    let log = proxy.stderr_text();
    assert_eq!(log.matches("CrowdSec bouncer started").count(), 1, "{log}");
    assert_eq!(log.matches("CrowdSec bouncer stopped").count(), 0, "{log}");
    let full_syncs = lapi.requests().iter().filter(|r| r.startup).count();
    assert_eq!(full_syncs, 1, "still the first sync's state");
    let r = get_from(&proxy, "127.0.0.60", "other.test", "/").await;
    assert_eq!(r.status, 200);

    // The last one goes: the bouncer stops and the LAPI hears nothing more.
    proxy.rewrite_config(&off, "configuration reloaded").await;
    proxy.wait_log_count("CrowdSec bouncer stopped", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = lapi.requests().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lapi.requests().len(), n, "no polls after the stop");
}

#[tokio::test]
async fn crowdsec_without_a_lapi_is_warned_about_and_fails_closed() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&one_service(&up, "enforce"))
        .start()
        .await;
    assert!(
        proxy
            .stderr_text()
            .contains("no --crowdsec-api-url is configured"),
        "{}",
        proxy.stderr_text()
    );
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 403);
    let e = proxy.wait_entries(1).await;
    assert_eq!(e[0]["deny_reason"], "crowdsec_unavailable");
}

#[tokio::test]
async fn metrics_and_readiness_show_verdicts_and_bouncer_state() {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![Reply::Json(format!(
        r#"{{"new":[{}],"deleted":null}}"#,
        decision("127.0.0.70", "Ip", "ban", "1h")
    ))])
    .await;
    let mut b = ProxyBuilder::new(&one_service(&up, "enforce"))
        .port("m")
        .arg("--metrics-listen")
        .arg("127.0.0.1:{m}");
    for a in ["--crowdsec-api-url", &lapi.url(), "--crowdsec-api-key", "k"] {
        b = b.arg(a);
    }
    let proxy = b.start().await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.70", "web.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.71", "web.test").await, 200);
    proxy.wait_entries(2).await;
    let get = |path: &'static str| {
        let addr = proxy.port("m");
        async move {
            let s = connect_from("127.0.0.1", addr).await.unwrap();
            request_over(s, "metrics", path, &[]).await.unwrap()
        }
    };
    let m = get("/metrics").await;
    assert_eq!(m.status, 200);
    for line in [
        "nb_proxy_requests_total{protocol=\"http\",verdict=\"crowdsec_ban\"} 1",
        "nb_proxy_requests_total{protocol=\"http\",verdict=\"allow\"} 1",
        "nb_proxy_crowdsec_synced 1",
        "nb_proxy_crowdsec_running 1",
        "nb_proxy_crowdsec_decisions 1",
        "nb_proxy_crowdsec_lapi_up 1",
    ] {
        assert!(m.body.contains(line), "missing {line:?} in\n{}", m.body);
    }
    let r = get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["crowdsec"]["synced"], true);
    assert_eq!(get("/healthz").await.status, 200);
}

#[tokio::test]
async fn periodic_full_resync_repairs_drift() {
    let up = Upstream::start("u").await;
    // The first full answer bans .80; later deltas say nothing; the next full answer (after
    // the resync interval) no longer has it: only a full resync can notice.
    let ban = format!(
        r#"{{"new":[{}],"deleted":null}}"#,
        decision("127.0.0.80", "Ip", "ban", "1h")
    );
    let empty = r#"{"new":null,"deleted":null}"#.to_owned();
    let lapi = FakeLapi::start(vec![Reply::Json(ban), Reply::Json(empty)]).await;
    let proxy = proxy(
        &one_service(&up, "enforce"),
        &lapi,
        &["--crowdsec-resync-interval", "1s"],
    )
    .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.80", "web.test").await, 403);
    let seen = poll(600, || {
        let r = lapi.requests();
        (r.iter().filter(|s| s.startup).count() >= 2).then_some(r)
    })
    .await
    .expect("a second full sync");
    assert!(
        seen.iter().skip(1).any(|s| !s.startup),
        "deltas in between: {seen:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&proxy, "127.0.0.80", "web.test").await,
        200,
        "drift repaired"
    );
}

#[tokio::test]
async fn a_trickling_full_sync_hits_its_deadline_and_readiness_says_stale() {
    let up = Upstream::start("u").await;
    let ban = format!(
        r#"{{"new":[{}],"deleted":null}}"#,
        decision("127.0.0.91", "Ip", "ban", "1h")
    );
    let empty = r#"{"new":null,"deleted":null}"#.to_owned();
    // Synced, one quiet delta, then every full resync trickles: a byte every 50 ms is never
    // silent long enough for the per-read timeout.
    let lapi = FakeLapi::start(vec![
        Reply::Json(ban.clone()),
        Reply::Json(empty),
        Reply::Trickle(Duration::from_millis(50), ban),
    ])
    .await;
    let mut b = ProxyBuilder::new(&one_service(&up, "enforce")).metrics();
    for a in [
        "--crowdsec-api-url",
        &lapi.url(),
        "--crowdsec-api-key",
        "fake-key-0123",
        "--crowdsec-update-interval",
        "300ms",
        "--crowdsec-resync-interval",
        "500ms",
        "--crowdsec-sync-timeout",
        "1500ms",
    ] {
        b = b.arg(a);
    }
    let proxy = b.start().await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(proxy.readyz().await["crowdsec"]["stale"], false);
    proxy
        .wait_log_count("the full sync did not complete within 1s 500ms", 1)
        .await;
    let r = proxy.readyz().await;
    assert_eq!(r["crowdsec"]["stale"], true, "{r}");
    assert_eq!(r["crowdsec"]["synced"], true, "{r}");
    assert_eq!(proxy.metric("nb_proxy_crowdsec_stale").await, 1.0);
    // The decisions in use stay, and the sync is retried.
    assert_eq!(status_of(&proxy, "127.0.0.91", "web.test").await, 403);
    let startups = poll(400, || {
        let n = lapi.requests().iter().filter(|s| s.startup).count();
        (n >= 3).then_some(n)
    })
    .await;
    assert!(startups.is_some(), "retried: {:?}", lapi.requests());
}
