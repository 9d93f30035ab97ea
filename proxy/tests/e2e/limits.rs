use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

fn web(up: &Upstream) -> String {
    format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n",
        up.url()
    )
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .arg("--header-read-timeout")
        .arg("500ms")
        .start()
        .await;
    let mut s = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "connection closed by the header timeout"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .arg("--max-header-size")
        .arg("16384")
        .start()
        .await;
    let mut s = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    let big = "a".repeat(40_000);
    let req = format!("GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}
