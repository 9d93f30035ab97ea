//! TLS-passthrough TCP services sharing one listener, told apart by the server name in the
//! ClientHello: the proxy holds no certificate, the client's handshake reaches the upstream
//! untouched, and each service's restrictions apply to its own connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::harness::*;
use crate::pki::Pki;

/// A TLS server that answers each read with `<name>:` and the bytes read.
async fn tls_upstream(name: &'static str, config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    let reply = [format!("{name}:").as_bytes(), &buf[..n]].concat();
                    if tls.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Opens TLS to `name` through the proxy from `source`, sends `msg`; the reply, or `None`
/// when the proxy closed the connection.
async fn ask(pki: &Pki, source: &str, to: SocketAddr, name: &str, msg: &str) -> Option<String> {
    let tcp = connect_from(source, to).await.unwrap();
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = pki.connector().connect(server, tcp).await.ok()?;
    tls.write_all(msg.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn tcp_services_share_a_listener_by_server_name() {
    let pki = Pki::new();
    let a = tls_upstream("a", pki.server_config("a.test", &[])).await;
    let b = tls_upstream("b", pki.server_config("*.b.test", &[])).await;
    let rest = EchoUpstream::start().await;
    let yaml = format!(
        r#"
services:
  - id: a
    protocol: tcp
    listen: 127.0.0.1:{{shared}}
    hosts: [a.test]
    upstream: {a}
  - id: b
    protocol: tcp
    listen: 127.0.0.1:{{shared}}
    hosts: ["*.B.test"]
    upstream: {b}
    restrictions:
      cidr_deny: [127.0.0.5/32]
  - id: rest
    protocol: tcp
    listen: 127.0.0.1:{{shared}}
    upstream: {rest}
  - id: only
    protocol: tcp
    listen: 127.0.0.1:{{alone}}
    hosts: [only.test]
    upstream: {a}
"#,
        rest = rest.addr
    );
    let proxy = ProxyBuilder::new(&yaml)
        .port("shared")
        .port("alone")
        .start()
        .await;
    let shared = proxy.port("shared");

    // The handshake is the upstream's own (the proxy has no certificate): each name reaches
    // its service, wildcards included, and a name is matched whatever its case.
    assert_eq!(
        ask(&pki, "127.0.0.5", shared, "a.test", "hi")
            .await
            .as_deref(),
        Some("a:hi")
    );
    assert_eq!(
        ask(&pki, "127.0.0.6", shared, "x.b.test", "hello")
            .await
            .as_deref(),
        Some("b:hello")
    );
    // b's restrictions deny 127.0.0.5 on b only: closed before b is dialled.
    assert_eq!(ask(&pki, "127.0.0.5", shared, "y.b.test", "no").await, None);

    // Bytes that are not TLS go to the listener's default service, unchanged.
    let mut plain = connect_from("127.0.0.7", shared).await.unwrap();
    assert_eq!(
        echo(&mut plain, b"PING not tls\r\n").await.unwrap(),
        b"PING not tls\r\n"
    );
    drop(plain);

    // A listener without a default closes a connection whose name no service has.
    assert_eq!(
        ask(&pki, "127.0.0.8", proxy.port("alone"), "other.test", "x").await,
        None
    );

    let entries = proxy.wait_entries(5).await;
    let by_source = |ip: &str| -> Vec<(String, String, String)> {
        entries_for(&entries, ip)
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                (s("service_id"), s("host"), s("deny_reason"))
            })
            .collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        by_source("127.0.0.5"),
        [t("a", "a.test", ""), t("b", "y.b.test", "ip_restricted")]
    );
    assert_eq!(by_source("127.0.0.6"), [t("b", "x.b.test", "")]);
    assert_eq!(by_source("127.0.0.7"), [t("rest", "", "")]);
    assert_eq!(by_source("127.0.0.8"), [t("", "other.test", "no_service")]);
    let a_entry = entries_for(&entries, "127.0.0.5")[0];
    assert!(
        a_entry["bytes_in"].as_u64().unwrap() > 100,
        "the whole handshake was forwarded: {a_entry}"
    );
}
