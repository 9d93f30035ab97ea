//! Usage metrics pushed to a loopback LAPI that checks each body against the published schema
//! (CrowdSec 1.6.3's `AllMetrics`, as its `POST /v1/usage-metrics` validates it): what was
//! processed and dropped, by origin and remediation, with nothing lost when a push fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::fake_lapi::{FakeLapi, Reply};
use crate::harness::*;

const MAX_TEXT: usize = 255;

fn text(v: &Value, at: &str, required: bool) -> Result<(), String> {
    match v {
        Value::Null if !required => Ok(()),
        Value::String(s) if s.len() <= MAX_TEXT => Ok(()),
        Value::String(_) => Err(format!("{at}: longer than {MAX_TEXT}")),
        other => Err(format!("{at}: expected a string, got {other}")),
    }
}

fn integer(v: &Value, at: &str, required: bool) -> Result<(), String> {
    match v {
        Value::Null if !required => Ok(()),
        Value::Number(n) if n.is_i64() => Ok(()),
        other => Err(format!("{at}: expected an integer, got {other}")),
    }
}

fn only_keys(v: &Value, at: &str, keys: &[&str]) -> Result<(), String> {
    let obj = v.as_object().ok_or(format!("{at}: expected an object"))?;
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(format!("{at}: unknown field {k:?}")),
        None => Ok(()),
    }
}

/// The schema of `AllMetrics` for one remediation component, as the LAPI checks it (required
/// fields, types, the 255-character limits, one component per push), and no field it does not
/// know.
fn check_schema(v: &Value) -> Result<(), String> {
    only_keys(
        v,
        "body",
        &["remediation_components", "log_processors", "lapi"],
    )?;
    if v.get("log_processors")
        .is_some_and(|l| l.as_array().is_none_or(|l| !l.is_empty()))
    {
        return Err("a bouncer sends no log processor".into());
    }
    let rcs = v["remediation_components"]
        .as_array()
        .ok_or("remediation_components: expected an array")?;
    if rcs.len() != 1 {
        return Err(format!(
            "{} remediation components; the LAPI takes one",
            rcs.len()
        ));
    }
    let rc = &rcs[0];
    only_keys(
        rc,
        "component",
        &[
            "name",
            "type",
            "last_pull",
            "version",
            "os",
            "feature_flags",
            "utc_startup_timestamp",
            "metrics",
        ],
    )?;
    text(&rc["version"], "version", true)?;
    integer(&rc["utc_startup_timestamp"], "utc_startup_timestamp", true)?;
    integer(&rc["last_pull"], "last_pull", false)?;
    text(&rc["name"], "name", false)?;
    text(&rc["type"], "type", false)?;
    if !rc["os"].is_null() {
        only_keys(&rc["os"], "os", &["name", "version"])?;
        text(&rc["os"]["name"], "os.name", true)?;
        text(&rc["os"]["version"], "os.version", true)?;
    }
    if let Some(flags) = rc.get("feature_flags") {
        let flags = flags.as_array().ok_or("feature_flags: expected an array")?;
        for f in flags {
            f.as_str().ok_or("feature_flags: expected strings")?;
        }
    }
    for (i, m) in rc["metrics"]
        .as_array()
        .ok_or("metrics: expected an array")?
        .iter()
        .enumerate()
    {
        let at = format!("metrics.{i}");
        only_keys(m, &at, &["items", "meta"])?;
        only_keys(
            &m["meta"],
            &format!("{at}.meta"),
            &["window_size_seconds", "utc_now_timestamp"],
        )?;
        integer(
            &m["meta"]["window_size_seconds"],
            "window_size_seconds",
            true,
        )?;
        integer(&m["meta"]["utc_now_timestamp"], "utc_now_timestamp", true)?;
        let items = m["items"]
            .as_array()
            .ok_or(format!("{at}.items: required array"))?;
        for (j, it) in items.iter().enumerate() {
            let at = format!("{at}.items.{j}");
            only_keys(it, &at, &["name", "unit", "value", "labels"])?;
            text(&it["name"], &format!("{at}.name"), true)?;
            text(&it["unit"], &format!("{at}.unit"), true)?;
            it["value"]
                .as_f64()
                .ok_or(format!("{at}.value: required number"))?;
            if let Some(labels) = it.get("labels") {
                for (k, l) in labels
                    .as_object()
                    .ok_or(format!("{at}.labels: expected an object"))?
                {
                    text(l, &format!("{at}.labels.{k}"), true)?;
                }
            }
        }
    }
    Ok(())
}

fn ban(value: &str, origin: &str, scenario: &str, kind: &str) -> String {
    format!(
        r#"{{"duration":"1h","id":1,"origin":"{origin}","scenario":"{scenario}","scope":"Ip","type":"{kind}","value":"{value}"}}"#
    )
}

/// Sums of `processed` and of `dropped` by (origin, remediation) over every push.
fn totals(pushes: &[(crate::fake_lapi::Seen, Value)]) -> (f64, BTreeMap<(String, String), f64>) {
    let mut processed = 0.0;
    let mut dropped = BTreeMap::new();
    for (_, body) in pushes {
        for item in body["remediation_components"][0]["metrics"][0]["items"]
            .as_array()
            .unwrap()
        {
            let value = item["value"].as_f64().unwrap();
            match item["name"].as_str().unwrap() {
                "processed" => processed += value,
                "dropped" => {
                    let l = &item["labels"];
                    let key = (
                        l["origin"].as_str().unwrap().to_owned(),
                        l["remediation"].as_str().unwrap().to_owned(),
                    );
                    *dropped.entry(key).or_default() += value;
                }
                other => panic!("unexpected item {other}"),
            }
        }
    }
    (processed, dropped)
}

#[tokio::test]
async fn usage_metrics_follow_the_schema_and_count_every_drop_by_origin() {
    let up = Upstream::start("u").await;
    let lapi = FakeLapi::start(vec![Reply::Json(format!(
        r#"{{"new":[{},{},{}],"deleted":null}}"#,
        ban("127.0.0.70", "cscli", "manual", "ban"),
        ban("127.0.0.71", "lists", "firehol_level1", "captcha"),
        ban(
            "127.0.0.72",
            "crowdsec",
            "crowdsecurity/http-probing",
            "ban"
        ),
    ))])
    .await;
    // The first push fails: its counts must reach the LAPI with the next one.
    lapi.usage.replies.lock().unwrap().push_back(500);
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions:\n      crowdsec_mode: enforce\n  - id: watch\n    protocol: http\n    hosts: [watch.test]\n    upstream: {}\n    restrictions:\n      crowdsec_mode: observe\n",
        up.url(),
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .metrics()
        .arg("--crowdsec-api-url")
        .arg(lapi.url())
        .arg("--crowdsec-api-key")
        .arg("fake-key-0123")
        .arg("--crowdsec-update-interval")
        .arg("100ms")
        .arg("--crowdsec-usage-metrics-interval")
        .arg("1s")
        .start()
        .await;
    proxy
        .wait_log_count("CrowdSec bouncer synced initial decisions (3)", 1)
        .await;
    for (src, host, status) in [
        ("127.0.0.70", "web.test", 403),
        ("127.0.0.70", "web.test", 403),
        ("127.0.0.71", "web.test", 403),
        ("127.0.0.72", "web.test", 403),
        ("127.0.0.9", "web.test", 200),
        // Observe drops nothing, but its requests are processed.
        ("127.0.0.70", "watch.test", 200),
    ] {
        assert_eq!(status_of(&proxy, src, host).await, status, "{src} {host}");
    }
    let pushes = poll(200, || {
        let p = lapi.usage.pushes();
        (p.len() >= 3 && totals(&p[1..]).0 >= 6.0).then_some(p)
    })
    .await
    .expect("pushes that carry every request");
    for (seen, body) in &pushes {
        check_schema(body).unwrap_or_else(|e| panic!("schema: {e}\n{body}"));
        assert_eq!(seen.api_key, "fake-key-0123");
        assert!(
            seen.user_agent.starts_with("crowdsec-nb-proxy-bouncer/v"),
            "{}",
            seen.user_agent
        );
        assert_eq!(seen.query, "POST application/json");
        let rc = &body["remediation_components"][0];
        assert_eq!(rc["type"], "crowdsec-nb-proxy-bouncer");
        assert_eq!(rc["version"], concat!("v", env!("CARGO_PKG_VERSION")));
        assert!(!rc["os"]["name"].as_str().unwrap().is_empty());
        assert!(rc["last_pull"].as_i64().unwrap() >= rc["utc_startup_timestamp"].as_i64().unwrap());
        let w = rc["metrics"][0]["meta"]["window_size_seconds"]
            .as_i64()
            .unwrap();
        assert!((0..=3).contains(&w), "window {w}");
    }
    // The refused first push and the accepted ones after it: every request counted once.
    let (processed, dropped) = totals(&pushes[1..]);
    assert_eq!(processed, 6.0);
    let want: BTreeMap<(String, String), f64> = [
        (("cscli", "ban"), 2.0),
        (("crowdsec", "ban"), 1.0),
        (("lists:firehol_level1", "captcha"), 1.0),
    ]
    .into_iter()
    .map(|((o, r), n)| ((o.to_owned(), r.to_owned()), n))
    .collect();
    assert_eq!(dropped, want);
    let (first_processed, _) = totals(&pushes[..1]);
    assert!(first_processed <= 6.0);
    assert!(
        proxy.stderr_text().contains(
            "did not take usage metrics: HTTP 500; the counts are sent with the next push"
        ),
        "{}",
        proxy.stderr_text()
    );

    // Prometheus says the same, and more.
    let m = |s: &str| {
        let proxy = &proxy;
        let s = s.to_owned();
        async move { proxy.metric(&s).await }
    };
    assert_eq!(
        m("nb_proxy_crowdsec_dropped_total{origin=\"cscli\",remediation=\"ban\"}").await,
        2.0
    );
    assert_eq!(m("nb_proxy_crowdsec_dropped_total{origin=\"lists:firehol_level1\",remediation=\"captcha\"}").await, 1.0);
    assert_eq!(m("nb_proxy_crowdsec_processed_total").await, 6.0);
    assert_eq!(
        m("nb_proxy_crowdsec_active_decisions{origin=\"crowdsec\",type=\"ban\"}").await,
        1.0
    );
    assert!(
        m("nb_proxy_crowdsec_lapi_calls_total{call=\"usage_metrics\",outcome=\"status\"}").await
            >= 1.0
    );
    assert!(
        m("nb_proxy_crowdsec_lapi_calls_total{call=\"usage_metrics\",outcome=\"ok\"}").await >= 2.0
    );
    assert!(
        m("nb_proxy_crowdsec_lapi_calls_total{call=\"decisions_stream\",outcome=\"ok\"}").await
            >= 2.0
    );
    assert_eq!(
        m("nb_proxy_service_requests_total{service=\"web\",protocol=\"http\",verdict=\"crowdsec_ban\"}").await,
        3.0
    );
    assert_eq!(
        m("nb_proxy_service_requests_total{service=\"web\",protocol=\"http\",verdict=\"crowdsec_captcha\"}").await,
        1.0
    );
    assert_eq!(
        m("nb_proxy_service_duration_seconds_count{service=\"web\",protocol=\"http\"}").await,
        5.0
    );
    assert_eq!(
        m("nb_proxy_service_duration_seconds_bucket{le=\"+Inf\",service=\"watch\",protocol=\"http\"}").await,
        1.0
    );
    let age = m("nb_proxy_crowdsec_last_sync_age_seconds").await;
    assert!((0.0..5.0).contains(&age), "last sync {age} s ago");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn the_schema_check_catches_what_the_lapi_refuses() {
    let good = serde_json::json!({"remediation_components":[{"version":"v1","utc_startup_timestamp":1,
        "metrics":[{"meta":{"window_size_seconds":1,"utc_now_timestamp":2},"items":[{"name":"processed","unit":"request","value":1.0}]}]}]});
    check_schema(&good).unwrap();
    let mut no_version = good.clone();
    no_version["remediation_components"][0]
        .as_object_mut()
        .unwrap()
        .remove("version");
    assert!(check_schema(&no_version).is_err());
    let mut two = good.clone();
    let rc = two["remediation_components"][0].clone();
    two["remediation_components"]
        .as_array_mut()
        .unwrap()
        .push(rc);
    assert!(check_schema(&two).is_err());
    let mut long = good.clone();
    long["remediation_components"][0]["metrics"][0]["items"][0]["labels"] =
        serde_json::json!({"origin": "x".repeat(256)});
    assert!(check_schema(&long).is_err());
    let mut no_meta = good;
    no_meta["remediation_components"][0]["metrics"][0]
        .as_object_mut()
        .unwrap()
        .remove("meta");
    assert!(check_schema(&no_meta).is_err());
}
