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

#[tokio::test]
async fn silent_connections_are_closed_by_a_head_timeout_counted_from_accept() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .metrics()
        .arg("--header-read-timeout")
        .arg("1s")
        .start()
        .await;
    let t = Instant::now();
    // 200 connections that never send a byte, from many addresses.
    let mut silent = Vec::new();
    for i in 0..200 {
        silent.push(
            connect_from(&format!("127.0.3.{}", i % 250 + 1), proxy.http_addr())
                .await
                .unwrap(),
        );
    }
    // One that starts a request and stalls.
    let mut partial = connect_from("127.0.4.1", proxy.http_addr()).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: web")
        .await
        .unwrap();
    for s in &mut silent {
        assert!(closed_by_peer(s).await, "a silent connection stayed open");
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "closed by the head timeout, not the 60 s idle timeout: {:?}",
        t.elapsed()
    );
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), partial.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let entries = proxy.wait_entries(1).await;
    assert_eq!(
        entries.len(),
        1,
        "only the started request is an entry: {entries:?}"
    );
    assert_eq!(entries[0]["status"], 408);
    assert_eq!(entries[0]["source_ip"], "127.0.4.1");
    assert_eq!(
        entries[0]["metadata"]["client_error"],
        "request head not received in time"
    );
    assert_eq!(proxy.metric("nb_proxy_header_timeouts_total").await, 201.0);
    assert_eq!(
        proxy
            .metric("nb_proxy_client_errors_total{status=\"408\"}")
            .await,
        1.0
    );
    // A normal client is unaffected.
    assert_eq!(status_of(&proxy, "127.0.4.2", "web.test").await, 200);
}

#[tokio::test]
async fn slow_request_bodies_are_cut_with_408_and_fast_ones_pass() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .arg("--request-body-timeout")
        .arg("1s")
        .arg("--request-body-min-rate")
        .arg("1000")
        .start()
        .await;
    // 10 bytes every 300 ms: never silent for 1 s, but far below 1000 B/s.
    let mut s = connect_from("127.0.5.1", proxy.http_addr()).await.unwrap();
    s.write_all(b"POST /consume HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(&[b'x'; 10]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A body sent at speed goes through whole.
    let mut s = connect_from("127.0.5.2", proxy.http_addr()).await.unwrap();
    let body = vec![b'y'; 300_000];
    let head = format!(
        "POST /consume HTTP/1.1\r\nHost: web.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.contains("\"received\":300000"), "{text}");

    let entries = proxy.wait_entries(2).await;
    let slow = entries
        .iter()
        .find(|e| e["source_ip"] == "127.0.5.1")
        .unwrap();
    assert_eq!(slow["status"], 408);
    assert_eq!(slow["service_id"], "web", "the service is known by then");
    assert_eq!(slow["metadata"]["client_error"], "request body too slow");
    let fast = entries
        .iter()
        .find(|e| e["source_ip"] == "127.0.5.2")
        .unwrap();
    assert_eq!(fast["bytes_in"], 300_000);
}

#[tokio::test]
async fn connections_are_capped_per_client_and_globally() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .metrics()
        .arg("--max-connections-per-ip")
        .arg("3")
        .arg("--max-connections")
        .arg("6")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = keep_alive_from("127.0.6.1", proxy.http_addr()).await;
        assert_eq!(
            send(&mut c, "web.test", "/", &[]).await.unwrap().status,
            200
        );
        held.push(c);
    }
    // The fourth from the same address is closed at once, before any byte is read.
    let mut s = connect_from("127.0.6.1", proxy.http_addr()).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    // IPv4-mapped and plain forms are one client; another address still gets in.
    assert_eq!(status_of(&proxy, "127.0.6.2", "web.test").await, 200);
    // Global cap: 3 held + 3 more held from other addresses = 6; the seventh is refused.
    for i in 3..6 {
        let mut c = keep_alive_from(&format!("127.0.6.{i}"), proxy.http_addr()).await;
        assert_eq!(
            send(&mut c, "web.test", "/", &[]).await.unwrap().status,
            200
        );
        held.push(c);
    }
    let mut s = connect_from("127.0.6.9", proxy.http_addr()).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    assert_eq!(
        proxy
            .metric("nb_proxy_connections_refused_total{reason=\"max_connections_per_ip\"}")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("nb_proxy_connections_refused_total{reason=\"max_connections\"}")
            .await,
        1.0
    );
    assert_eq!(proxy.metric("nb_proxy_connections_open").await, 6.0);
    // Slots come back when connections close (as soon as the proxy notices).
    held.truncate(2);
    for source in ["127.0.6.1", "127.0.6.9"] {
        let mut ok = false;
        for _ in 0..100 {
            let s = connect_from(source, proxy.http_addr()).await.unwrap();
            if matches!(request_over(s, "web.test", "/", &[]).await, Ok(r) if r.status == 200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "{source} got a slot back");
    }
}

#[tokio::test]
async fn a_tcp_service_caps_its_connections() {
    let echo_up = EchoUpstream::start().await;
    let yaml = format!(
        "services:\n  - id: echo\n    protocol: tcp\n    listen: 127.0.0.1:{{echo}}\n    upstream: {}\n    max_connections: 2\n",
        echo_up.addr
    );
    let proxy = ProxyBuilder::new(&yaml)
        .port("echo")
        .metrics()
        .start()
        .await;
    let mut a = connect_from("127.0.7.1", proxy.port("echo")).await.unwrap();
    let mut b = connect_from("127.0.7.2", proxy.port("echo")).await.unwrap();
    assert_eq!(echo(&mut a, b"a").await.unwrap(), b"a");
    assert_eq!(echo(&mut b, b"b").await.unwrap(), b"b");
    let mut c = connect_from("127.0.7.3", proxy.port("echo")).await.unwrap();
    assert!(closed_by_peer(&mut c).await);
    assert_eq!(
        echo_up
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the third was never dialled"
    );
    assert_eq!(
        proxy
            .metric("nb_proxy_connections_refused_total{reason=\"service_max_connections\"}")
            .await,
        1.0
    );
    drop(a);
    // The slot comes back once the proxy notices the close.
    let mut served = false;
    for _ in 0..100 {
        let mut d = connect_from("127.0.7.4", proxy.port("echo")).await.unwrap();
        if echo(&mut d, b"d").await.is_ok_and(|got| got == b"d") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a slot came back");
}

#[tokio::test]
async fn at_the_file_descriptor_limit_accept_backs_off_and_recovers() {
    let up = Upstream::start("u").await;
    let proxy = ProxyBuilder::new(&web(&up))
        .rlimit(libc::RLIMIT_NOFILE, 64)
        .arg("--max-connections")
        .arg("10000")
        .arg("--max-connections-per-ip")
        .arg("0")
        .start()
        .await;
    // Far more connections than descriptors, held open.
    let mut held = Vec::new();
    for i in 0..150 {
        if let Ok(s) = connect_from(&format!("127.0.8.{}", i % 200 + 1), proxy.http_addr()).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warnings = proxy.stderr_text().matches("accept failed").count();
    assert!(
        (1..=2).contains(&warnings),
        "the fd limit is reported, at a bounded rate ({warnings} lines):\n{}",
        proxy.stderr_text()
    );
    assert!(proxy.stderr_text().contains("Too many open files"));
    drop(held);
    // Once descriptors are free again, normal clients are served.
    let mut served = false;
    for _ in 0..50 {
        let s = connect_from("127.0.9.1", proxy.http_addr()).await.unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(2),
            request_over(s, "web.test", "/", &[]),
        )
        .await
        {
            if r.status == 200 {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "{}", proxy.stderr_text());
}
