//! SIGTERM: stop accepting, let in-flight work finish (up to --shutdown-timeout), log it all.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::*;

fn services(up: &Upstream, echo: &EchoUpstream) -> String {
    format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n  - id: raw\n    protocol: tcp\n    listen: 127.0.0.1:{{raw}}\n    upstream: {}\n",
        up.url(),
        echo.addr
    )
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_logs_them() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let mut proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .start()
        .await;
    let addr = proxy.http_addr();
    let requests: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                let s = connect_from(&format!("127.0.10.{}", i + 1), addr)
                    .await
                    .unwrap();
                request_over(s, "web.test", "/wait/5000", &[]).await
            })
        })
        .collect();
    // An open TCP connection runs on while draining, and ends when its client closes it.
    let mut tcp = connect_from("127.0.10.9", proxy.port("raw")).await.unwrap();
    assert_eq!(echo(&mut tcp, b"before").await.unwrap(), b"before");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    let mut closed = false;
    for _ in 0..100 {
        if connect_from("127.0.10.20", addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "no new connections once draining");
    assert_eq!(echo(&mut tcp, b"during").await.unwrap(), b"during");
    drop(tcp);
    for r in requests {
        let r = r.await.unwrap().expect("the in-flight request completes");
        assert_eq!(r.status, 200);
    }
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let entries = proxy.entries();
    assert_eq!(
        entries.len(),
        6,
        "every request and the TCP connection: {entries:?}"
    );
    assert_eq!(entries.iter().filter(|e| e["status"] == 200).count(), 5);
    let tcp_entry = entries.iter().find(|e| e["protocol"] == "tcp").unwrap();
    assert_eq!(tcp_entry["bytes_in"], 12);
    assert!(entries
        .iter()
        .all(|e| e["metadata"].get("aborted").is_none()));
    assert!(proxy.stderr_text().contains("all connections finished"));
}

#[tokio::test]
async fn the_shutdown_timeout_cuts_what_is_left_and_logs_it() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let mut proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--shutdown-timeout")
        .arg("1s")
        .start()
        .await;
    let addr = proxy.http_addr();
    let slow = tokio::spawn(async move {
        let s = connect_from("127.0.11.1", addr).await.unwrap();
        request_over(s, "web.test", "/wait/20000", &[]).await
    });
    let mut tcp = connect_from("127.0.11.2", proxy.port("raw")).await.unwrap();
    assert_eq!(echo(&mut tcp, b"x").await.unwrap(), b"x");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    assert!(closed_by_peer(&mut tcp).await);
    assert!(slow.await.unwrap().is_err(), "the slow request is cut");
    let status = proxy
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let entries = proxy.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_eq!(e["metadata"]["aborted"], "cut at shutdown", "{e}");
    }
    let http = entries.iter().find(|e| e["protocol"] == "http").unwrap();
    assert_eq!(http["service_id"], "web");
    assert!(http.get("status").is_none(), "no answer was sent: {http}");
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let mut proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .start()
        .await;
    let addr = proxy.http_addr();
    let _slow = tokio::spawn(async move {
        let mut s = connect_from("127.0.12.1", addr).await.unwrap();
        s.write_all(b"GET /wait/20000 HTTP/1.1\r\nHost: web.test\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        proxy.wait_exit(Duration::from_millis(100)).await.is_none(),
        "still draining"
    );
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("exits at once");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Some(143));
}

#[tokio::test]
async fn sigterm_lets_http2_streams_in_flight_finish_and_refuses_new_ones() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let mut proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .start()
        .await;
    let stream = connect_from("127.0.12.1", proxy.http_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let get = |path: &str| {
        hyper::Request::builder()
            .uri(format!("http://web.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Three streams in flight on one connection when SIGTERM comes.
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let fut = sender.send_request(get("/wait/2000"));
            tokio::spawn(async move {
                let resp = fut.await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // GOAWAY: a stream opened after it is refused, not served.
    let late = sender.send_request(get("/late")).await;
    assert!(late.is_err(), "a new stream after SIGTERM: {late:?}");
    for r in in_flight {
        assert_eq!(r.await.unwrap().expect("the stream completes"), 200);
    }
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits once the connection drained");
    assert!(status.success(), "{status:?}");
    assert!(conn.await.unwrap().is_ok(), "the connection ended cleanly");
    let entries = proxy.entries();
    assert_eq!(
        entries.len(),
        3,
        "the three streams, nothing else: {entries:?}"
    );
    assert!(entries
        .iter()
        .all(|e| e["status"] == 200 && e["metadata"].get("aborted").is_none()));
}
