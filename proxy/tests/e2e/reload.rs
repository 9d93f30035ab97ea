use std::sync::atomic::Ordering;

use crate::harness::*;

fn config(up: &Upstream, echo: &EchoUpstream, deny: &str) -> String {
    format!(
        r#"
services:
  - id: web
    protocol: http
    hosts: [web.test]
    upstream: {}
    restrictions:
      cidr_deny: [{deny}]
  - id: raw
    protocol: tcp
    listen: 127.0.0.1:{{raw}}
    upstream: {}
    restrictions:
      cidr_deny: [{deny}]
"#,
        up.url(),
        echo.addr
    )
}

#[tokio::test]
async fn good_reload_applies_without_dropping_open_connections() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&config(&up, &echo_up, "127.0.0.50"))
        .port("raw")
        .start()
        .await;
    // Open an HTTP keep-alive connection and a TCP connection from 127.0.0.51.
    let mut sender = keep_alive_from("127.0.0.51", proxy.http_addr()).await;
    assert_eq!(
        send(&mut sender, "web.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let mut tcp = connect_from("127.0.0.51", proxy.port("raw")).await.unwrap();
    assert_eq!(echo(&mut tcp, b"before").await.unwrap(), b"before");

    proxy
        .rewrite_config(
            &config(&up, &echo_up, "127.0.0.51"),
            "configuration reloaded",
        )
        .await;

    // The open TCP connection is checked again and cut (see tcp.rs); the next request on the
    // open HTTP connection is judged by the new restrictions; new connections are denied.
    assert!(closed_by_peer(&mut tcp).await, "re-checked and cut");
    assert_eq!(
        send(&mut sender, "web.test", "/", &[])
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(status_of(&proxy, "127.0.0.50", "web.test").await, 200);
    let mut fresh = connect_from("127.0.0.51", proxy.port("raw")).await.unwrap();
    assert!(closed_by_peer(&mut fresh).await);
}

#[tokio::test]
async fn bad_reload_is_rejected_and_the_running_config_stays() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&config(&up, &echo_up, "127.0.0.60"))
        .port("raw")
        .start()
        .await;
    let bad = config(&up, &echo_up, "127.0.0.60/8").replace("web.test", "web2.test");
    proxy.rewrite_config(&bad, "configuration rejected").await;
    let log = proxy.stderr_text();
    assert!(log.contains("services.yaml"), "{log}");
    assert!(
        log.contains("service \"web\"") && log.contains("did you mean 127.0.0.0/8"),
        "{log}"
    );
    // Nothing of the bad file was applied: the old host and the old deny list are in force.
    assert_eq!(status_of(&proxy, "127.0.0.60", "web.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.61", "web.test").await, 200);
    assert_eq!(status_of(&proxy, "127.0.0.61", "web2.test").await, 404);

    // A TCP listener that cannot be bound rejects the whole file too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let clash = format!(
        "{}\n  - id: clash\n    protocol: tcp\n    listen: 127.0.0.1:{port}\n    upstream: {}\n",
        config(&up, &echo_up, "127.0.0.61").trim_end(),
        echo_up.addr
    );
    proxy.rewrite_config(&clash, "configuration rejected").await;
    // The error names the process that holds the port: this test.
    let log = proxy.stderr_text();
    assert!(log.contains("cannot listen on"), "{log}");
    assert!(
        log.contains(&format!("(pid {})", std::process::id())),
        "{log}"
    );
    assert_eq!(
        status_of(&proxy, "127.0.0.61", "web.test").await,
        200,
        "deny list unchanged"
    );
}

#[tokio::test]
async fn sighup_reloads_and_removed_tcp_listeners_stop() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&config(&up, &echo_up, "127.0.0.70"))
        .port("raw")
        .poll_interval("1h")
        .start()
        .await;
    let only_web = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n",
        up.url()
    );
    std::fs::write(&proxy.config, only_web).unwrap();
    // SAFETY: signalling a child process we own.
    assert_eq!(unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) }, 0);
    proxy.wait_log_count("configuration reloaded", 1).await;
    assert_eq!(status_of(&proxy, "127.0.0.70", "web.test").await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        connect_from("127.0.0.1", proxy.port("raw")).await.is_err(),
        "listener closed"
    );
    assert_eq!(echo_up.connections.load(Ordering::SeqCst), 0);
}
