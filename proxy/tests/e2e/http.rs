use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::harness::*;

fn two_services(a: &Upstream, b: &Upstream) -> String {
    format!(
        r#"
services:
  - id: alpha
    protocol: http
    hosts: [alpha.test, www.alpha.test]
    upstream: {}
    restrictions:
      cidr_allow: [127.0.0.0/24, "::1/128"]
      cidr_deny: [127.0.0.66]
  - id: beta
    protocol: http
    hosts: [beta.test]
    upstream: {}
    restrictions:
      cidr_deny: ["::1"]
"#,
        a.url(),
        b.url()
    )
}

#[tokio::test]
async fn routes_by_host_and_denies_by_cidr_for_both_families() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = ProxyBuilder::new(&two_services(&a, &b))
        .dual_stack()
        .start()
        .await;

    let r = get_from(&proxy, "127.0.0.1", "alpha.test", "/x?y=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "a");
    assert_eq!(r.json()["path"], "/x?y=1");
    assert_eq!(r.json()["host"], "alpha.test");
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "WWW.Alpha.Test:80", "/")
            .await
            .json()["upstream"],
        "a"
    );
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "beta.test", "/").await.json()["upstream"],
        "b"
    );

    // Allow list: 127.0.1.5 is outside 127.0.0.0/24 (and arrives IPv4-mapped on a [::] listener).
    let r = get_from(&proxy, "127.0.1.5", "alpha.test", "/").await;
    assert_eq!(r.status, 403);
    assert!(
        r.body.starts_with(
            "Forbidden: Your network address is not allowed to reach this site.\nReference: "
        ),
        "{}",
        r.body
    );
    assert!(!r.body.contains("127.0.0.0/24"), "no internals in the body");
    // Deny list inside the allow list.
    assert_eq!(status_of(&proxy, "127.0.0.66", "alpha.test").await, 403);
    // IPv6: allowed by alpha's allow list, denied by beta's deny list.
    assert_eq!(status_of(&proxy, "::1", "alpha.test").await, 200);
    assert_eq!(status_of(&proxy, "::1", "beta.test").await, 403);

    let entries = proxy.wait_entries(7).await;
    let denied = entries_for(&entries, "127.0.1.5");
    assert_eq!(
        denied.len(),
        1,
        "canonical IPv4, not ::ffff:127.0.1.5: {entries:?}"
    );
    assert_eq!(denied[0]["deny_reason"], "ip_restricted");
    assert_eq!(denied[0]["service_id"], "alpha");
    assert_eq!(denied[0]["status"], 403);
    let v6: Vec<_> = entries_for(&entries, "::1");
    assert_eq!(v6.len(), 2);
    assert!(v6
        .iter()
        .any(|e| e["service_id"] == "beta" && e["deny_reason"] == "ip_restricted"));
    assert!(v6
        .iter()
        .any(|e| e["service_id"] == "alpha" && e["deny_reason"] == ""));
}

#[tokio::test]
async fn unknown_host_gets_404_never_another_service() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = ProxyBuilder::new(&two_services(&a, &b))
        .metrics()
        .start()
        .await;
    for host in ["gamma.test", "alpha.test.evil", "", "127.0.0.1"] {
        let r = get_from(&proxy, "127.0.0.1", host, "/").await;
        assert_eq!(r.status, 404, "host {host:?}");
        assert!(!r.body.contains("upstream"), "{}", r.body);
    }
    assert_eq!(
        a.connections.load(Ordering::SeqCst) + b.connections.load(Ordering::SeqCst),
        0
    );
    let entries = proxy.wait_entries(4).await;
    assert!(entries
        .iter()
        .all(|e| e["status"] == 404 && e["service_id"] == "" && e["deny_reason"] == "no_service"));
    // Counted as what they are, not as allowed.
    let series = "nb_proxy_requests_total{protocol=\"http\",verdict=";
    assert_eq!(
        proxy.metric(&format!("{series}\"no_service\"}}")).await,
        4.0
    );
    assert_eq!(proxy.metric(&format!("{series}\"allow\"}}")).await, 0.0);
}

#[tokio::test]
async fn keep_alive_on_both_sides_and_access_log_fields() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = ProxyBuilder::new(&two_services(&a, &b)).start().await;
    let mut sender = keep_alive_from("127.0.0.9", proxy.http_addr()).await;
    for i in 0..5 {
        let r = send(&mut sender, "alpha.test", &format!("/n{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["xff"],
            "127.0.0.9",
            "upstream learns the client address"
        );
        assert_eq!(r.json()["proto"], "http");
    }
    assert_eq!(
        a.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection reused"
    );

    let entries = proxy.wait_entries(5).await;
    let e = &entries[4];
    assert_eq!(e["service_id"], "alpha");
    assert_eq!(e["protocol"], "http");
    assert_eq!(e["source_ip"], "127.0.0.9");
    assert_eq!(e["host"], "alpha.test");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/n4");
    assert_eq!(e["status"], 200);
    assert_eq!(e["deny_reason"], "");
    assert!(e["bytes_out"].as_u64().unwrap() > 20);
    assert!(e["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(e["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(e["metadata"], serde_json::json!({}));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = ProxyBuilder::new(&two_services(&a, &b)).start().await;
    let stream = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    let mut sender = http2_client(stream).await.unwrap();
    for _ in 0..3 {
        let req = hyper::Request::builder()
            .uri("http://beta.test/h2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["upstream"], "b");
        assert_eq!(v["host"], "beta.test");
    }
}

#[tokio::test]
async fn upstream_failures_give_502_and_504_with_an_entry() {
    let dead = reserve_port();
    let slow = Upstream::start("slow").await;
    let yaml = format!(
        r#"
services:
  - id: dead
    protocol: http
    hosts: [dead.test]
    upstream: http://127.0.0.1:{dead}
  - id: slow
    protocol: http
    hosts: [slow.test]
    upstream: {}
"#,
        slow.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .arg("--upstream-timeout")
        .arg("500ms")
        .start()
        .await;
    let r = get_from(&proxy, "127.0.0.1", "dead.test", "/").await;
    assert_eq!(r.status, 502);
    let r = get_from(&proxy, "127.0.0.1", "slow.test", "/slow").await;
    assert_eq!(r.status, 504);
    let entries = proxy.wait_entries(2).await;
    assert_eq!(entries[0]["status"], 502);
    assert_eq!(
        entries[0]["metadata"]["upstream_error"],
        "connection refused"
    );
    assert_eq!(entries[0]["deny_reason"], "");
    assert_eq!(entries[1]["status"], 504);
    assert_eq!(entries[1]["metadata"]["upstream_error"], "timeout");
}

#[tokio::test]
async fn wildcard_hosts_match_one_label_and_exact_names_win() {
    let (a, b) = (
        Upstream::start("wild").await,
        Upstream::start("exact").await,
    );
    let yaml = format!(
        "services:\n  - id: wild\n    protocol: http\n    hosts: [\"*.apps.test\"]\n    upstream: {}\n  - id: exact\n    protocol: http\n    hosts: [admin.apps.test]\n    upstream: {}\n",
        a.url(),
        b.url()
    );
    let proxy = ProxyBuilder::new(&yaml).start().await;
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "one.apps.test", "/")
            .await
            .json()["upstream"],
        "wild"
    );
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "Two.Apps.Test:80", "/")
            .await
            .json()["upstream"],
        "wild"
    );
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "admin.apps.test", "/")
            .await
            .json()["upstream"],
        "exact"
    );
    assert_eq!(status_of(&proxy, "127.0.0.1", "apps.test").await, 404);
    assert_eq!(status_of(&proxy, "127.0.0.1", "a.b.apps.test").await, 404);
    let e = proxy.wait_entries(5).await;
    assert_eq!(e[0]["service_id"], "wild");
    assert_eq!(e[0]["host"], "one.apps.test");
}

/// A listener already taken: the proxy exits at once, and its error names the holder (here
/// this test process) rather than only "address in use".
#[tokio::test]
async fn a_taken_listen_port_names_the_process_that_holds_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "services: []\n").unwrap();
    let out = tokio::process::Command::new(nb_e2e::binaries::binary("nb-proxy"))
        .arg("--config")
        .arg(&config)
        .args(["--http-listen", &addr.to_string()])
        .env_remove("NB_PROXY_HTTP_LISTEN")
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(15), out)
        .await
        .expect("nb-proxy exits")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        err.contains(&format!(
            "cannot listen on {addr} (HTTP listener): Address already in use (os error 98); held by {} (pid {})",
            comm.trim(),
            std::process::id()
        )),
        "{err}"
    );
    drop(taken);
}
