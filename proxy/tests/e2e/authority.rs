//! One authority per request: the host that routes and is checked is the one the upstream gets.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::harness::*;

/// `restricted` denies 127.0.0.66; `open` lets everyone in. Both share one upstream, which
/// serves whatever site the Host header names.
fn shared_upstream(up: &Upstream) -> String {
    format!(
        r#"
services:
  - id: restricted
    protocol: http
    hosts: [restricted.test]
    upstream: {0}
    restrictions:
      cidr_deny: [127.0.0.66]
  - id: open
    protocol: http
    hosts: [open.test]
    upstream: {0}
"#,
        up.url()
    )
}

#[tokio::test]
async fn absolute_form_that_disagrees_with_host_is_refused() {
    let up = Upstream::start("shared").await;
    let proxy = ProxyBuilder::new(&shared_upstream(&up)).start().await;

    let attack =
        b"GET http://open.test/x HTTP/1.1\r\nHost: restricted.test\r\nConnection: close\r\n\r\n";
    let r = raw_exchange(&proxy, "127.0.0.66", attack).await;
    assert_eq!(raw_status(&r), 400, "{r}");
    assert!(!r.contains("\"upstream\""), "{r}");

    let two_hosts =
        b"GET /x HTTP/1.1\r\nHost: open.test\r\nHost: restricted.test\r\nConnection: close\r\n\r\n";
    let r = raw_exchange(&proxy, "127.0.0.66", two_hosts).await;
    assert_eq!(raw_status(&r), 400, "{r}");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "nothing forwarded"
    );

    // Absolute form that agrees with Host (any case, the default port spelled out) is fine, and
    // the upstream receives the authority that was routed and checked.
    let fine =
        b"GET http://Open.Test/x HTTP/1.1\r\nHost: open.test:80\r\nConnection: close\r\n\r\n";
    let r = raw_exchange(&proxy, "127.0.0.66", fine).await;
    assert_eq!(raw_status(&r), 200, "{r}");
    let body: serde_json::Value =
        serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["headers"]["host"], serde_json::json!(["Open.Test"]));
    assert_eq!(
        body["headers"]["x-forwarded-host"],
        serde_json::json!(["Open.Test"])
    );
    assert_eq!(body["path"], "/x");
    // The denied client still cannot reach its restricted host the honest way.
    assert_eq!(
        status_of(&proxy, "127.0.0.66", "restricted.test").await,
        403
    );

    let entries = proxy.wait_entries(4).await;
    let refused: Vec<_> = entries.iter().filter(|e| e["status"] == 400).collect();
    assert_eq!(
        refused.len(),
        2,
        "proxy-generated 400s are logged: {entries:?}"
    );
    for e in &refused {
        assert_eq!(e["service_id"], "");
        assert_eq!(e["source_ip"], "127.0.0.66");
        assert_eq!(e["deny_reason"], "");
        assert!(e["metadata"]["client_error"].as_str().is_some(), "{e}");
    }
    assert!(entries
        .iter()
        .any(|e| e["status"] == 200 && e["service_id"] == "open"));
}

#[tokio::test]
async fn http2_authority_that_disagrees_with_host_is_refused() {
    let up = Upstream::start("shared").await;
    let proxy = ProxyBuilder::new(&shared_upstream(&up)).start().await;
    let stream = connect_from("127.0.0.66", proxy.http_addr()).await.unwrap();
    let mut sender = http2_client(stream).await.unwrap();

    let attack = hyper::Request::builder()
        .uri("http://open.test/x")
        .header("host", "restricted.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(attack).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);

    let honest = hyper::Request::builder()
        .uri("http://open.test/y")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(honest).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["host"], serde_json::json!(["open.test"]));
}

#[tokio::test]
async fn connect_is_refused_and_logged() {
    let up = Upstream::start("shared").await;
    let proxy = ProxyBuilder::new(&shared_upstream(&up)).start().await;
    let r = raw_exchange(
        &proxy,
        "127.0.0.1",
        b"CONNECT open.test:80 HTTP/1.1\r\nHost: open.test:80\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 405, "{r}");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    let e = &proxy.wait_entries(1).await[0];
    assert_eq!(e["status"], 405);
    assert_eq!(e["method"], "CONNECT");
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_logged() {
    let up = Upstream::start("shared").await;
    let proxy = ProxyBuilder::new(&shared_upstream(&up))
        .arg("--max-header-size")
        .arg("16384")
        .start()
        .await;
    let r = raw_exchange(
        &proxy,
        "127.0.0.7",
        b"GET / HTTP/1.1\r\nHost open.test\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 400, "{r}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: open.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let r = raw_exchange(&proxy, "127.0.0.8", big.as_bytes()).await;
    assert_eq!(raw_status(&r), 431, "{r}");
    let entries = proxy.wait_entries(2).await;
    let by_ip = |ip: &str| {
        entries
            .iter()
            .find(|e| e["source_ip"] == ip)
            .unwrap()
            .clone()
    };
    assert_eq!(by_ip("127.0.0.7")["status"], 400);
    assert_eq!(by_ip("127.0.0.8")["status"], 431);
    assert_eq!(by_ip("127.0.0.8")["protocol"], "http");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
}
