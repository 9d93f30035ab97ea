//! WebSocket through the proxy, with a real client and server (tungstenite) on loopback: the
//! upgrade, messages both ways, and the access-log entry written when the tunnel closes.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A WebSocket server that answers each text or binary message with `echo:` and the message.
async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    let reply = match m {
                        Message::Text(t) => Message::text(format!("echo:{}", t.as_str())),
                        Message::Binary(b) => Message::binary([b"echo:".as_slice(), &b].concat()),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn messages_cross_both_ways_and_the_entry_is_written_when_the_tunnel_closes() {
    let (upstream, _server) = echo_server().await;
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: chat\n    protocol: http\n    hosts: [chat.test]\n    upstream: {upstream}\n"
    ))
    .start()
    .await;

    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let request = "ws://chat.test/live?room=1".into_client_request().unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the upgrade goes through the proxy");
    assert_eq!(response.status(), 101);
    let opened = Instant::now();

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("echo:hello")
    );
    let blob = vec![7u8; 4000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let Message::Binary(back) = ws.next().await.unwrap().unwrap() else {
        panic!("a binary answer");
    };
    assert_eq!(&back[..5], b"echo:");
    assert_eq!(&back[5..], blob.as_slice());

    // Open for a while: no entry yet, since it says how long the tunnel lasted.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        proxy.entries().is_empty(),
        "the entry waits for the tunnel to close: {:?}",
        proxy.entries()
    );

    // The closing handshake, then the client's socket closes (as a browser's does): both
    // directions have ended and so has the tunnel.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let held = opened.elapsed();

    let entries = proxy.wait_entries(1).await;
    let e = &entries[0];
    assert_eq!(e["service_id"], "chat");
    assert_eq!(e["path"], "/live", "the query stays out of the log");
    assert_eq!(e["status"], 101);
    assert_eq!(e["deny_reason"], "");
    // Client frames are masked (+4 bytes each): 5 + 4000 bytes of payload and the close frame
    // went in, 10 + 4005 and the close frame came out; the 101 head is not counted.
    let (bytes_in, bytes_out) = (
        e["bytes_in"].as_u64().unwrap(),
        e["bytes_out"].as_u64().unwrap(),
    );
    assert!(
        (4005 + 12..4005 + 40).contains(&bytes_in),
        "bytes_in {bytes_in}"
    );
    assert!(
        (4015 + 6..4015 + 30).contains(&bytes_out),
        "bytes_out {bytes_out}"
    );
    let ms = e["duration_ms"].as_f64().unwrap();
    assert!(
        ms >= 400.0 && ms <= held.as_secs_f64() * 1000.0 + 200.0,
        "duration {ms} ms for a tunnel held {held:?}"
    );
    assert!(e.get("aborted").is_none_or(|a| a.is_null()), "{e}");
}

#[tokio::test]
async fn a_tunnel_cut_by_the_upstream_is_logged_with_what_crossed() {
    // An upstream that accepts the upgrade, sends one message and drops the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        ws.send(Message::text("bye")).await.unwrap();
        drop(ws);
    });
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: chat\n    protocol: http\n    hosts: [chat.test]\n    upstream: {upstream}\n"
    ))
    .start()
    .await;
    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let request = "ws://chat.test/".into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("bye"));
    // The upstream is gone: the client sees the stream end.
    assert!(matches!(ws.next().await, None | Some(Err(_))));
    drop(ws);
    let entries = proxy.wait_entries(1).await;
    assert_eq!(entries[0]["status"], 101);
    assert_eq!(entries[0]["bytes_out"], 5, "one 3-byte text frame");
}

#[tokio::test]
async fn a_websocket_to_an_https_upstream_that_prefers_http2_goes_over_http1() {
    // The upstream offers h2 first by ALPN: an upgrade must still ask for HTTP/1.1 only.
    let pki = crate::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let acceptor =
        tokio_rustls::TlsAcceptor::from(pki.server_config("ws.lan", &[b"h2", b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let _ = ws.send(Message::text(format!("tls:{}", t.as_str()))).await;
                }
            });
        }
    });
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: chat\n    protocol: http\n    hosts: [chat.test]\n    upstream: {upstream}\n    upstream_tls:\n      ca_file: {}\n      server_name: ws.lan\n",
        ca.display()
    ))
    .start()
    .await;
    let tcp = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let request = "ws://chat.test/".into_client_request().unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the upgrade goes through to the TLS upstream");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("tls:hi"));
}

/// SIGTERM drains upgraded connections like the rest: open tunnels keep carrying messages, one
/// the client closes during the drain is logged whole, and one still open when
/// `--shutdown-timeout` ends is cut and logged as such; then the proxy exits.
#[tokio::test]
async fn sigterm_lets_open_tunnels_carry_on_until_the_shutdown_timeout() {
    let (upstream, _server) = echo_server().await;
    let mut proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: chat\n    protocol: http\n    hosts: [chat.test]\n    upstream: {upstream}\n"
    ))
    .arg("--shutdown-timeout")
    .arg("2s")
    .start()
    .await;
    let open = |path: &'static str| {
        let addr = proxy.http_addr();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let request = format!("ws://chat.test{path}")
                .into_client_request()
                .unwrap();
            let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
            assert_eq!(response.status(), 101);
            ws.send(Message::text("before")).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text("echo:before")
            );
            ws
        }
    };
    let (mut closing, mut staying) = (open("/closing").await, open("/staying").await);
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    proxy.wait_log_count("shutting down", 1).await;

    // Both tunnels still work while the proxy drains.
    for ws in [&mut closing, &mut staying] {
        ws.send(Message::text("during")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("echo:during")
        );
    }
    // One ends by itself; the other is still open when the timeout comes, and is cut.
    closing.close(None).await.unwrap();
    while let Some(Ok(_)) = closing.next().await {}
    drop(closing);
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match staying.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the open tunnel is cut at the timeout");
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after the cut");
    assert!(status.success(), "{status:?}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(5),
        "the drain lasted the shutdown timeout: {waited:?}"
    );
    let entries = proxy.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let by_path = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap();
    let (closed, stayed) = (by_path("/closing"), by_path("/staying"));
    assert_eq!(closed["status"], 101);
    assert!(closed["metadata"].get("aborted").is_none(), "{closed}");
    assert_eq!(stayed["status"], 101);
    assert_eq!(stayed["metadata"]["aborted"], "cut at shutdown", "{stayed}");
    // What crossed before the cut is counted: two masked messages in, two echoes out.
    assert!(
        stayed["bytes_in"].as_u64().unwrap() >= 2 * (6 + 4),
        "{stayed}"
    );
    assert!(stayed["bytes_out"].as_u64().unwrap() >= 2 * 11, "{stayed}");
}
