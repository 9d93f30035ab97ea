use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use crate::harness::*;

fn services(up: &Upstream, echo: &EchoUpstream) -> String {
    format!(
        r#"
services:
  - id: web
    protocol: http
    hosts: [web.test]
    upstream: {}
    restrictions:
      cidr_deny: [198.51.100.0/24, "2001:db8:bad::/48"]
  - id: raw
    protocol: tcp
    listen: 127.0.0.1:{{raw}}
    upstream: {}
    restrictions:
      cidr_deny: [198.51.100.0/24, "2001:db8:bad::/48"]
"#,
        up.url(),
        echo.addr
    )
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_peers() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--trusted-proxies")
        .arg("127.0.0.10/32,127.0.0.11/32")
        .start()
        .await;

    // Trusted peer: the real client is the rightmost untrusted entry.
    let r = get_with(
        &proxy,
        "127.0.0.10",
        "web.test",
        "/",
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = get_with(
        &proxy,
        "127.0.0.10",
        "web.test",
        "/",
        &[("x-forwarded-for", "198.51.100.7, 192.0.2.1, 127.0.0.11")],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "client is 192.0.2.1; the spoofed left entry is ignored"
    );
    assert_eq!(
        r.json()["xff"],
        "198.51.100.7, 192.0.2.1, 127.0.0.11, 127.0.0.10"
    );
    let r = get_with(
        &proxy,
        "127.0.0.10",
        "web.test",
        "/",
        &[("x-forwarded-for", "2001:db8:bad::1")],
    )
    .await;
    assert_eq!(r.status, 403);

    // Untrusted peer: a spoofed header changes nothing, in either direction.
    let r = get_with(
        &proxy,
        "127.0.0.12",
        "web.test",
        "/",
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["xff"], "127.0.0.12", "the spoof is not passed on");

    let entries = proxy.wait_entries(4).await;
    let ips: Vec<_> = entries
        .iter()
        .map(|e| e["source_ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ips,
        ["198.51.100.7", "192.0.2.1", "2001:db8:bad::1", "127.0.0.12"]
    );
    assert_eq!(entries[0]["deny_reason"], "ip_restricted");
}

fn v2_header(src: &str, dst: &str) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let src: std::net::SocketAddr = src.parse().unwrap();
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_on_http_from_trusted_peers_only() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--proxy-protocol")
        .arg("--trusted-proxies")
        .arg("127.0.0.20")
        .start()
        .await;

    // v1 from a trusted peer: the header's source is the client.
    let mut s = connect_from("127.0.0.20", proxy.http_addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 4000 80\r\n")
        .await
        .unwrap();
    assert_eq!(
        request_over(s, "web.test", "/", &[]).await.unwrap().status,
        403
    );

    let mut s = connect_from("127.0.0.20", proxy.http_addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 4000 80\r\n")
        .await
        .unwrap();
    let r = request_over(s, "web.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["xff"], "192.0.2.44");

    // v2 with an IPv6 source.
    let mut s = connect_from("127.0.0.20", proxy.http_addr()).await.unwrap();
    s.write_all(&v2_header("[2001:db8:bad::5]:4000", "[2001:db8::1]:80"))
        .await
        .unwrap();
    assert_eq!(
        request_over(s, "web.test", "/", &[]).await.unwrap().status,
        403
    );

    // A trusted peer without a header keeps its own address.
    assert_eq!(status_of(&proxy, "127.0.0.20", "web.test").await, 200);

    // Untrusted peer: the header is not interpreted, so it is just a broken request.
    let mut s = connect_from("127.0.0.21", proxy.http_addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.45 127.0.0.1 4000 80\r\n")
        .await
        .unwrap();
    let r = request_over(s, "web.test", "/", &[]).await;
    assert!(r.map(|r| r.status == 400).unwrap_or(true));

    let entries = proxy.wait_entries(5).await;
    let ips: Vec<_> = entries
        .iter()
        .map(|e| e["source_ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ips,
        [
            "198.51.100.9",
            "192.0.2.44",
            "2001:db8:bad::5",
            "127.0.0.20",
            "127.0.0.21"
        ]
    );
    assert_eq!(entries[4]["status"], 400, "the proxy's own 400 is logged");
    assert!(!ips.iter().any(|i| i == "192.0.2.45"));
    assert_eq!(entries[2]["deny_reason"], "ip_restricted");
}

#[tokio::test]
async fn proxy_protocol_on_tcp_services() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--proxy-protocol")
        .arg("--trusted-proxies")
        .arg("127.0.0.30")
        .start()
        .await;
    let raw = proxy.port("raw");

    // v2 from a trusted peer with a denied source: closed before the upstream is dialled.
    let mut s = connect_from("127.0.0.30", raw).await.unwrap();
    s.write_all(&v2_header("198.51.100.3:5000", "127.0.0.1:9"))
        .await
        .unwrap();
    assert!(closed_by_peer(&mut s).await);
    assert_eq!(echo_up.connections.load(Ordering::SeqCst), 0);

    // v1 from a trusted peer, allowed: payload after the header reaches the upstream intact.
    let mut s = connect_from("127.0.0.30", raw).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.8 127.0.0.1 5000 9\r\nhello")
        .await
        .unwrap();
    let mut got = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut got)
        .await
        .unwrap();
    assert_eq!(&got, b"hello");
    drop(s);
    proxy.wait_entries(2).await;

    // An untrusted peer's header is forwarded as data and its own address is used.
    let mut s = connect_from("127.0.0.31", raw).await.unwrap();
    let spoof = b"PROXY TCP4 198.51.100.3 127.0.0.1 5000 9\r\n";
    assert_eq!(echo(&mut s, spoof).await.unwrap(), spoof);
    drop(s);

    let entries = proxy.wait_entries(3).await;
    let ips: Vec<_> = entries
        .iter()
        .map(|e| e["source_ip"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ips, ["198.51.100.3", "192.0.2.8", "127.0.0.31"]);
    assert_eq!(entries[0]["deny_reason"], "ip_restricted");
    assert_eq!(entries[0]["protocol"], "tcp");
}

#[tokio::test]
async fn client_identity_headers_come_from_what_the_proxy_decided() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--trusted-proxies")
        .arg("127.0.0.40")
        .start()
        .await;
    let spoofs = [
        ("x-real-ip", "198.51.100.1"),
        ("forwarded", "for=198.51.100.1;proto=https;host=evil.test"),
        ("true-client-ip", "198.51.100.1"),
        ("cf-connecting-ip", "198.51.100.1"),
        ("x-client-ip", "198.51.100.1"),
        ("x-forwarded-port", "1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-for", "198.51.100.1"),
    ];
    // From an untrusted peer, none of the client's claims reach the upstream.
    let r = get_with(&proxy, "127.0.0.41", "web.test", "/", &spoofs).await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    for name in [
        "forwarded",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
    ] {
        assert!(h.get(name).is_none(), "{name} passed on: {h}");
    }
    assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.41"]));
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.41"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["web.test"]));
    let port = proxy.http_addr().port().to_string();
    assert_eq!(h["x-forwarded-port"], serde_json::json!([port]));

    // From a trusted peer with two X-Forwarded-For headers: the decision walks both as one list,
    // and exactly that list (plus the peer) is forwarded, as one header.
    let r = get_with(
        &proxy,
        "127.0.0.40",
        "web.test",
        "/",
        &[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "192.0.2.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "the client is 192.0.2.9, not the denied 198.51.100.7"
    );
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["198.51.100.7, 192.0.2.9, 127.0.0.40"])
    );
    assert_eq!(h["x-real-ip"], serde_json::json!(["192.0.2.9"]));
    assert_eq!(
        h["x-forwarded-proto"],
        serde_json::json!(["https"]),
        "a trusted peer's scheme is kept"
    );
    let r = get_with(
        &proxy,
        "127.0.0.40",
        "web.test",
        "/",
        &[
            ("x-forwarded-for", "192.0.2.9"),
            ("x-forwarded-for", "198.51.100.7"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "the nearest entry decides");
}

#[tokio::test]
async fn a_client_ip_header_from_trusted_peers_names_the_client() {
    let (up, echo_up) = (Upstream::start("u").await, EchoUpstream::start().await);
    let proxy = ProxyBuilder::new(&services(&up, &echo_up))
        .port("raw")
        .arg("--trusted-proxies")
        .arg("127.0.0.10/32")
        .arg("--client-ip-header")
        .arg("X-Edge-Client")
        .start()
        .await;
    let ask = |src: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let proxy = &proxy;
        async move { get_with(proxy, src, "web.test", "/", &headers).await }
    };

    // From the trusted edge, the header decides, over X-Forwarded-For.
    let r = ask(
        "127.0.0.10",
        vec![
            ("x-edge-client", "198.51.100.7"),
            ("x-forwarded-for", "192.0.2.1"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "the header's address is on the deny list");
    let r = ask("127.0.0.10", vec![("x-edge-client", "192.0.2.44")]).await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["xff"], "192.0.2.44, 127.0.0.10");
    assert_eq!(seen["headers"]["x-real-ip"][0], "192.0.2.44");
    assert!(
        seen["headers"].get("x-edge-client").is_none(),
        "the header is not passed upstream: {seen}"
    );
    // Two values, or a value that is not an address: X-Forwarded-For is walked instead.
    let r = ask(
        "127.0.0.10",
        vec![
            ("x-edge-client", "192.0.2.44"),
            ("x-edge-client", "192.0.2.45"),
            ("x-forwarded-for", "198.51.100.9"),
        ],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = ask("127.0.0.10", vec![("x-edge-client", "unknown")]).await;
    assert_eq!(r.json()["headers"]["x-real-ip"][0], "127.0.0.10");
    // From anyone else, the header is ignored and removed.
    let r = ask("127.0.0.12", vec![("x-edge-client", "198.51.100.7")]).await;
    assert_eq!(
        r.status, 200,
        "a spoofed header from an untrusted peer changes nothing"
    );
    let seen = r.json();
    assert_eq!(seen["headers"]["x-real-ip"][0], "127.0.0.12");
    assert!(seen["headers"].get("x-edge-client").is_none());
    let entries = proxy.wait_entries(5).await;
    assert_eq!(entries[0]["source_ip"], "198.51.100.7");
    assert_eq!(entries[1]["source_ip"], "192.0.2.44");
}
