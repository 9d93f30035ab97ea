use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::*;

fn tcp_service(echo: &EchoUpstream, restrictions: &str) -> String {
    format!(
        r#"
services:
  - id: echo
    protocol: tcp
    listen: 127.0.0.1:{{echo}}
    upstream: {}
    restrictions:
{restrictions}
"#,
        echo.addr
    )
}

#[tokio::test]
async fn denied_connection_is_closed_before_the_upstream_is_dialled() {
    let echo_up = EchoUpstream::start().await;
    let proxy = ProxyBuilder::new(&tcp_service(&echo_up, "      cidr_deny: [127.0.0.5/32]"))
        .port("echo")
        .start()
        .await;
    let mut s = connect_from("127.0.0.5", proxy.port("echo")).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let entries = proxy.wait_entries(1).await;
    assert_eq!(
        echo_up.connections.load(Ordering::SeqCst),
        0,
        "upstream never dialled"
    );
    assert_eq!(entries[0]["deny_reason"], "ip_restricted");
    assert_eq!(entries[0]["protocol"], "tcp");
    assert_eq!(entries[0]["source_ip"], "127.0.0.5");
    assert_eq!(entries[0]["bytes_in"], 0);
    for absent in ["host", "method", "path"] {
        assert!(entries[0].get(absent).is_none());
    }

    // An allowed client gets a byte-exact stream (TLS passthrough is just this) and one entry.
    let mut s = connect_from("127.0.0.6", proxy.port("echo")).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert_eq!(echo(&mut s, &payload).await.unwrap(), payload);
    drop(s);
    let entries = proxy.wait_entries(2).await;
    assert_eq!(entries.len(), 2, "one entry per connection");
    assert_eq!(entries[1]["source_ip"], "127.0.0.6");
    assert_eq!(entries[1]["deny_reason"], "");
    assert_eq!(entries[1]["bytes_in"], 100_000);
    assert_eq!(entries[1]["bytes_out"], 100_000);
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let echo_up = EchoUpstream::start().await;
    let proxy = ProxyBuilder::new(&tcp_service(&echo_up, "      cidr_deny: []"))
        .port("echo")
        .arg("--idle-timeout")
        .arg("600ms")
        .start()
        .await;
    let mut s = connect_from("127.0.0.1", proxy.port("echo")).await.unwrap();
    assert_eq!(echo(&mut s, b"ping").await.unwrap(), b"ping");
    let t = std::time::Instant::now();
    assert!(closed_by_peer(&mut s).await);
    assert!(t.elapsed() < Duration::from_secs(4));
    let entries = proxy.wait_entries(1).await;
    assert_eq!(entries[0]["bytes_in"], 4);
}

#[tokio::test]
async fn upstream_down_is_logged_for_tcp() {
    let dead = reserve_port();
    let yaml = format!(
        "services:\n  - id: dead\n    protocol: tcp\n    listen: 127.0.0.1:{{p}}\n    upstream: 127.0.0.1:{dead}\n"
    );
    let proxy = ProxyBuilder::new(&yaml).port("p").start().await;
    let mut s = connect_from("127.0.0.1", proxy.port("p")).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let entries = proxy.wait_entries(1).await;
    assert_eq!(
        entries[0]["metadata"]["upstream_error"],
        "connection refused"
    );
    assert_eq!(entries[0]["deny_reason"], "");
}

#[tokio::test]
async fn a_policy_change_cuts_open_connections_it_now_denies() {
    let echo_up = EchoUpstream::start().await;
    let proxy = ProxyBuilder::new(&tcp_service(&echo_up, "      cidr_deny: [127.0.0.5/32]"))
        .port("echo")
        .start()
        .await;
    let mut stays = connect_from("127.0.0.60", proxy.port("echo"))
        .await
        .unwrap();
    let mut goes = connect_from("127.0.0.61", proxy.port("echo"))
        .await
        .unwrap();
    assert_eq!(echo(&mut stays, b"one").await.unwrap(), b"one");
    assert_eq!(echo(&mut goes, b"four").await.unwrap(), b"four");

    let deny_61 = tcp_service(&echo_up, "      cidr_deny: [127.0.0.61/32]");
    proxy
        .rewrite_config(&deny_61, "configuration reloaded")
        .await;
    assert!(
        closed_by_peer(&mut goes).await,
        "the newly denied client is cut"
    );
    assert_eq!(
        echo(&mut stays, b"two").await.unwrap(),
        b"two",
        "the other one flows on"
    );
    let entries = proxy.wait_entries(1).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let cut = &entries[0];
    assert_eq!(cut["source_ip"], "127.0.0.61");
    assert_eq!(
        cut["deny_reason"], "ip_restricted",
        "logged with the new verdict"
    );
    assert_eq!(cut["metadata"]["aborted"], "denied by a policy change");
    assert_eq!(
        cut["bytes_in"], 4,
        "what it sent before the change is counted"
    );
    assert_eq!(cut["bytes_out"], 4);

    // A service that goes away keeps its open connections, as a closed listener does.
    let other = EchoUpstream::start().await;
    let moved = format!(
        "services:\n  - id: elsewhere\n    protocol: tcp\n    listen: 127.0.0.1:{}\n    upstream: {}\n",
        reserve_port(),
        other.addr
    );
    proxy.rewrite_config(&moved, "configuration reloaded").await;
    assert_eq!(echo(&mut stays, b"three").await.unwrap(), b"three");
    drop(stays);
    let entries = proxy.wait_entries(2).await;
    assert_eq!(entries[1]["source_ip"], "127.0.0.60");
    assert_eq!(entries[1]["deny_reason"], "");
    assert!(
        entries[1]["metadata"].get("aborted").is_none(),
        "{}",
        entries[1]
    );
}
