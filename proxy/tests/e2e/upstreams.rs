//! The proxy as a front door: HTTPS and HTTP/2 upstreams, header changes, and the move of
//! plain-HTTP clients to HTTPS. Real TLS on both sides, on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::harness::*;
use crate::pki::Pki;

/// An echo upstream (see `Upstream`) behind TLS with `cfg`.
struct TlsUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    async fn start(name: &'static str, cfg: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(cfg);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_echo(TokioIo::new(tls), name).await;
                    }
                });
            }
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn service(id: &str, host: &str, upstream: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    protocol: http\n    hosts: [{host}]\n    upstream: {upstream}\n{extra}"
    )
}

/// A service's `tls` with the certificate `Pki::issue` wrote for `host` in `dir`.
fn tls_block(dir: &std::path::Path, host: &str) -> String {
    format!(
        "    tls:\n      cert_file: {c}/{host}.crt\n      key_file: {c}/{host}.key\n",
        c = dir.display()
    )
}

/// GET over plain HTTP/1.1 from 127.0.0.1: status, response headers, body.
async fn get(proxy: &Proxy, host: &str, path: &str) -> (u16, HeaderMap, String) {
    let stream = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    exchange(stream, host, path).await
}

async fn exchange<S>(stream: S, host: &str, path: &str) -> (u16, HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .header("x-debug", "secret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn https_upstreams_are_verified_and_speak_http2_when_offered() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    // A self-signed-CA appliance known by a name that is not its address.
    let both = TlsUpstream::start(
        "appliance",
        pki.server_config("pve.lan", &[b"h2", b"http/1.1"]),
    )
    .await;
    let only_h1 = TlsUpstream::start("legacy", pki.server_config("pve.lan", &[b"http/1.1"])).await;
    let trusted = format!(
        "    upstream_tls:\n      ca_file: {}\n      server_name: pve.lan\n",
        ca.display()
    );
    let yaml = [
        "services:\n".to_owned(),
        service("h2", "h2.test", &both.url(), &trusted),
        service(
            "h1",
            "h1.test",
            &both.url(),
            &format!("{trusted}    upstream_protocol: http1\n"),
        ),
        service("legacy", "legacy.test", &only_h1.url(), &trusted),
        // System roots do not know the test CA.
        service("untrusted", "untrusted.test", &both.url(), ""),
        service(
            "wrong-name",
            "wrong.test",
            &both.url(),
            &format!(
                "    upstream_tls:\n      ca_file: {}\n      server_name: other.lan\n",
                ca.display()
            ),
        ),
        service(
            "insecure",
            "insecure.test",
            &both.url(),
            "    upstream_tls:\n      skip_verify: true\n",
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;

    let (status, _, body) = get(&proxy, "h2.test", "/a?b=1").await;
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["version"], "HTTP/2.0", "ALPN chose h2: {seen}");
    assert_eq!(seen["authority"], "h2.test", "the routed authority: {seen}");
    assert_eq!(seen["proto"], "http");

    for (host, upstream) in [("h1.test", "appliance"), ("legacy.test", "legacy")] {
        let (status, _, body) = get(&proxy, host, "/").await;
        assert_eq!(status, 200, "{host}: {body}");
        let seen = json(&body);
        assert_eq!(seen["version"], "HTTP/1.1", "{host}: {seen}");
        assert_eq!(seen["host"], host);
        assert_eq!(seen["upstream"], upstream);
    }

    for host in ["untrusted.test", "wrong.test"] {
        let (status, _, body) = get(&proxy, host, "/").await;
        assert_eq!(status, 502, "{host}: {body}");
    }

    let (status, _, body) = get(&proxy, "insecure.test", "/").await;
    assert_eq!(status, 200, "{body}");

    let entries = proxy.wait_entries(6).await;
    let error_of = |host: &str| {
        entries
            .iter()
            .find(|e| e["host"] == host)
            .map(|e| e["metadata"]["upstream_error"].clone())
            .unwrap_or_else(|| panic!("no entry for {host}: {entries:?}"))
    };
    assert_eq!(
        error_of("untrusted.test"),
        "upstream certificate not trusted"
    );
    assert_eq!(error_of("wrong.test"), "upstream certificate not trusted");
    let log = proxy.stderr_text();
    assert_eq!(
        log.matches("upstream_tls.skip_verify").count(),
        1,
        "warned once: {log}"
    );
    assert!(
        log.contains("TLS handshake with the upstream failed"),
        "{log}"
    );
}

#[tokio::test]
async fn h2c_upstreams_get_http2_by_prior_knowledge_and_keep_one_connection() {
    let up = Upstream::start("grpc-ish").await;
    let yaml = [
        "services:\n".to_owned(),
        service("c", "c.test", &up.url(), "    upstream_protocol: h2c\n"),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;
    let mut sender = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    for path in ["/one", "/two", "/three"] {
        let r = send(&mut sender, "c.test", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.json();
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(seen["authority"], "c.test");
        assert_eq!(seen["xff"], "127.0.0.1");
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection carried the three requests"
    );
}

/// An h2c upstream for bodies larger than HTTP/2's flow-control windows (hyper's server opens
/// 1 MiB; the proxy, 2 MiB per stream): `POST /count` reads the whole body and answers its
/// length; `GET /bytes/N` sends N bytes; anything else answers 413 without reading the body.
/// Returns its URL and how many `/count` bodies ended in an error (their stream was reset).
async fn h2c_bulk_upstream() -> (String, Arc<AtomicUsize>) {
    use hyper::server::conn::http2;
    use hyper_util::rt::TokioExecutor;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let failures = failed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let failures = failures.clone();
            let answer = move |req: Request<hyper::body::Incoming>| {
                let failures = failures.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let (status, body) = if path == "/count" {
                        let read = req.into_body().collect().await.inspect_err(|_| {
                            failures.fetch_add(1, Ordering::SeqCst);
                        })?;
                        (200, Bytes::from(read.to_bytes().len().to_string()))
                    } else if let Some(n) = path.strip_prefix("/bytes/") {
                        (200, Bytes::from(vec![b'x'; n.parse().unwrap()]))
                    } else {
                        (413, Bytes::from_static(b"too large"))
                    };
                    let resp = hyper::Response::builder()
                        .status(status)
                        .body(Full::new(body));
                    Ok::<_, hyper::Error>(resp.unwrap())
                }
            };
            tokio::spawn(
                http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer)),
            );
        }
    });
    (format!("http://{addr}"), failed)
}

#[tokio::test]
async fn h2c_bodies_larger_than_the_flow_control_windows_go_both_ways() {
    let (up, _) = h2c_bulk_upstream().await;
    let proxy = one_worker(&[service("c", "c.test", &up, "    upstream_protocol: h2c\n")]).await;
    let mut client = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    const UP: usize = 5 * 1024 * 1024;
    let req = Request::post("/count")
        .header("host", "c.test")
        .body(Full::new(Bytes::from(vec![b'u'; UP])))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.send_request(req))
        .await
        .expect("a 5 MiB upload completes (the proxy waits for the upstream's window)")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        UP.to_string().as_bytes(),
        "the upstream read every byte"
    );

    const DOWN: usize = 8 * 1024 * 1024;
    let req = Request::get(format!("/bytes/{DOWN}"))
        .header("host", "c.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes().len()
    })
    .await
    .expect("an 8 MiB download completes (the proxy gives its window back as it relays)");
    assert_eq!(read, DOWN);
}

#[tokio::test]
async fn an_h2c_upstream_that_answers_before_reading_the_body_is_relayed() {
    let (up, _) = h2c_bulk_upstream().await;
    let proxy = one_worker(&[service("c", "c.test", &up, "    upstream_protocol: h2c\n")]).await;
    let mut stream = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    const BODY: usize = 5 * 1024 * 1024;
    let head = format!("POST /early HTTP/1.1\r\nhost: c.test\r\ncontent-length: {BODY}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The client keeps sending while the answer comes; the proxy may stop reading it.
    let sending = tokio::spawn(async move {
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..BODY / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        write
    });
    let mut answer = vec![0; 12];
    tokio::time::timeout(Duration::from_secs(10), read.read_exact(&mut answer))
        .await
        .expect("the upstream's early answer reaches the client while it still sends")
        .unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 413",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    sending.abort();
}

#[tokio::test]
async fn an_h2c_request_whose_response_timed_out_is_reset_upstream() {
    let (up, failed) = h2c_bulk_upstream().await;
    let yaml = format!(
        "services:\n{}",
        service("c", "c.test", &up, "    upstream_protocol: h2c\n")
    );
    let proxy = ProxyBuilder::new(&yaml)
        .arg("--upstream-timeout")
        .arg("500ms")
        .start()
        .await;
    // Part of the body, then the client stalls (within its body timeout, 10 s by default).
    let mut stream = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    let head = "POST /count HTTP/1.1\r\nhost: c.test\r\ncontent-length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'u'; 1000]).await.unwrap();
    let mut answer = vec![0; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .expect("the proxy answers once the upstream timeout passes")
        .unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 504",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Nobody waits for the upstream's answer any more: it must not be left waiting for the
    // rest of the body while the client holds it open.
    let reset = async {
        while failed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), reset)
        .await
        .expect("the upstream's stream is reset while the client still holds its body open");
    drop(stream);
}

/// A proxy with one worker serving `services`, so that every client lands on the same pool of
/// upstream connections.
async fn one_worker(services: &[String]) -> Proxy {
    let yaml = format!("services:\n{}", services.concat());
    ProxyBuilder::new(&yaml).workers(1).start().await
}

/// `requests` requests to `host` on a client connection of its own, each answered 200, then the
/// client closes and waits for the proxy to see it (and park its upstream connection). Returns
/// the last answer.
async fn client_that_closes(
    proxy: &Proxy,
    host: &str,
    headers: &[(&str, &str)],
    requests: usize,
) -> Reply {
    let mut client = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    let mut last = None;
    for _ in 0..requests {
        let r = send(&mut client, host, "/", headers).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        last = Some(r);
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(250)).await;
    last.unwrap()
}

#[tokio::test]
async fn a_worker_shares_its_upstream_connections_between_clients() {
    let (h1, h2) = (Upstream::start("h1").await, Upstream::start("h2").await);
    let proxy = one_worker(&[
        service("a", "a.test", &h1.url(), ""),
        service("c", "c.test", &h2.url(), "    upstream_protocol: h2c\n"),
    ])
    .await;
    let connections = |up: &Upstream| up.connections.load(Ordering::SeqCst);
    // HTTP/1.1: clients one after another, each on a connection of its own that it then closes.
    for _ in 0..5 {
        client_that_closes(&proxy, "a.test", &[], 1).await;
    }
    assert_eq!(
        connections(&h1),
        1,
        "the idle connection served the next client"
    );
    // Clients that stay open but idle hold no HTTP/1.1 connection: the next client's request
    // takes the one the previous request used.
    let mut one = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    let mut two = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    for client in [&mut one, &mut two] {
        assert_eq!(send(client, "a.test", "/", &[]).await.unwrap().status, 200);
    }
    assert_eq!(
        connections(&h1),
        1,
        "an idle client kept its upstream connection to itself"
    );
    // Requests in flight at once are not given the same HTTP/1.1 connection.
    let (a, b) = tokio::join!(
        send(&mut one, "a.test", "/wait/300", &[]),
        send(&mut two, "a.test", "/wait/300", &[])
    );
    assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));
    assert_eq!(connections(&h1), 2);
    // HTTP/2 likewise: a closed client's connection serves the next one; two clients at once
    // each have their own.
    for client in [&mut one, &mut two] {
        let r = send(client, "c.test", "/", &[]).await.unwrap();
        assert_eq!(r.json()["version"], "HTTP/2.0", "{}", r.body);
    }
    assert_eq!(connections(&h2), 2);
    drop((one, two));
    tokio::time::sleep(Duration::from_millis(250)).await;
    for _ in 0..3 {
        client_that_closes(&proxy, "c.test", &[], 1).await;
    }
    assert_eq!(
        connections(&h2),
        2,
        "parked HTTP/2 connections served the next clients"
    );
    assert_eq!(connections(&h1), 2);
}

#[tokio::test]
async fn a_worker_keeps_as_many_connections_as_its_requests_overlap() {
    raise_open_files_limit();
    let up = Upstream::start("many").await;
    let proxy = one_worker(&[service("a", "a.test", &up.url(), "")]).await;
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(keep_alive_from("127.0.0.1", proxy.http_addr()).await);
    }
    // 300 requests at once, twice, from the same open clients: the second wave finds the first
    // wave's 300 connections idle in the pool rather than opening new ones.
    for _ in 0..2 {
        let answers = futures_util::future::join_all(
            clients
                .iter_mut()
                .map(|c| send(c, "a.test", "/wait/200", &[])),
        )
        .await;
        assert!(answers.iter().all(|r| r.as_ref().unwrap().status == 200));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 300);
}

#[tokio::test]
async fn a_workers_pool_keeps_at_most_max_connections() {
    raise_open_files_limit();
    let up = Upstream::start("many").await;
    let yaml = format!("services:\n{}", service("a", "a.test", &up.url(), ""));
    let proxy = ProxyBuilder::new(&yaml)
        .workers(1)
        .arg("--max-connections")
        .arg("256")
        .start()
        .await;
    // Two HTTP/2 clients with 150 requests each in flight: 300 HTTP/1.1 upstream connections at
    // once, more than the 256 client connections the proxy admits (which bounds the pool).
    let wave = || async {
        let mut requests = Vec::new();
        for _ in 0..2 {
            let tcp = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
            let client = http2_client(tcp).await.unwrap();
            for _ in 0..150 {
                let mut client = client.clone();
                let req = Request::get("http://a.test/wait/200")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                requests.push(async move { client.send_request(req).await.unwrap().status() });
            }
        }
        let statuses = futures_util::future::join_all(requests).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    wave().await;
    assert_eq!(up.connections.load(Ordering::SeqCst), 300);
    // The next 300 find only the 256 the pool kept: 44 new connections.
    wave().await;
    assert_eq!(up.connections.load(Ordering::SeqCst), 344);
}

#[tokio::test]
async fn a_connection_a_client_authenticated_is_never_handed_to_another() {
    let up = Upstream::start("windows").await;
    let proxy = one_worker(&[service("a", "a.test", &up.url(), "")]).await;
    // NTLM and Negotiate authenticate the upstream connection itself; Basic does not.
    let clients = [
        Some("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw=="),
        Some("negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAu"),
        Some("Basic dXNlcjpwYXNz"),
        None,
    ];
    for authorization in clients {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        // The same client connection keeps its own connection, authenticated or not.
        client_that_closes(&proxy, "a.test", &headers, 2).await;
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        3,
        "the NTLM and Negotiate connections were not reused; the Basic one was"
    );
}

/// An HTTP/1.1 upstream that keeps a connection open only `idle` after each answer, as servers
/// with a short keep-alive timeout do, without saying so; returns its address and how many
/// connections it accepted.
async fn short_keep_alive_upstream(idle: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return, // idle too long, or the peer left: close
                    };
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn a_kept_connection_the_upstream_closed_is_not_handed_on() {
    let (url, accepted) = short_keep_alive_upstream(Duration::from_secs(1)).await;
    let proxy = one_worker(&[service("a", "a.test", &url, "")]).await;
    // The client waits 250 ms after closing, then this much more.
    for more_ms in [0, 1250, 0, 1250] {
        let r = client_that_closes(&proxy, "a.test", &[], 1).await;
        assert_eq!(r.body, "ok");
        // After 1.5 s the upstream has closed the parked connection (still within the pool's 4 s):
        // the next client must get a new one, not a 502.
        tokio::time::sleep(Duration::from_millis(more_ms)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "reused after 250 ms, not after 1.5 s"
    );
}

#[tokio::test]
async fn headers_are_changed_both_ways_and_the_client_address_stays_decided() {
    let up = Upstream::start("h").await;
    let extra = "    headers:\n      request:\n        set: {X-Env: prod}\n        add: {X-Tag: nb}\n        remove: [X-Debug]\n      response:\n        set: {X-Frame-Options: DENY}\n        remove: [Server]\n";
    let yaml = [
        "services:\n".to_owned(),
        service("h", "h.test", &up.url(), extra),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).start().await;
    let (status, headers, body) = get(&proxy, "h.test", "/").await;
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    let h = &seen["headers"];
    assert_eq!(h["x-env"], serde_json::json!(["prod"]), "{seen}");
    assert_eq!(h["x-tag"], serde_json::json!(["nb"]), "{seen}");
    assert!(h.get("x-debug").is_none(), "removed: {seen}");
    assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.1"]), "{seen}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.get("server").is_none(), "{headers:?}");

    // A header that would forge the client address is refused with the config.
    proxy
        .rewrite_config(
            &[
                "services:\n".to_owned(),
                service(
                    "h",
                    "h.test",
                    &up.url(),
                    "    headers:\n      request:\n        set: {X-Forwarded-For: 10.0.0.1}\n",
                ),
            ]
            .concat(),
            "X-Forwarded-For is managed by the proxy",
        )
        .await;
    let (status, _, _) = get(&proxy, "h.test", "/").await;
    assert_eq!(status, 200, "the running config stays");
}

#[tokio::test]
async fn plain_http_moves_to_https_for_hosts_with_a_certificate() {
    let up = Upstream::start("s").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "secure.test");
    pki.issue(certs.path(), "optout.test");
    let tls = |host: &str| tls_block(certs.path(), host);
    let yaml = [
        "services:\n".to_owned(),
        service(
            "secure",
            "secure.test",
            &up.url(),
            &format!(
                "{}    hsts:\n      max_age: 63072000\n      include_subdomains: true\n",
                tls("secure.test")
            ),
        ),
        service(
            "optout",
            "optout.test",
            &up.url(),
            &format!("{}    https_redirect: false\n", tls("optout.test")),
        ),
        service(
            "plain",
            "plain.test",
            &up.url(),
            "    restrictions:\n      cidr_deny: [127.0.0.9]\n",
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).https().start().await;
    let https = proxy.https.unwrap();

    let (status, headers, _) = get(&proxy, "secure.test", "/login?next=%2F").await;
    assert_eq!(status, 308);
    assert_eq!(
        headers["location"],
        format!("https://secure.test:{}/login?next=%2F", https.port())
    );
    assert!(
        headers.get("strict-transport-security").is_none(),
        "not over plain HTTP"
    );

    let (status, _, _) = get(&proxy, "optout.test", "/").await;
    assert_eq!(status, 200, "https_redirect: false");
    let (status, _, _) = get(&proxy, "plain.test", "/").await;
    assert_eq!(status, 200, "no certificate, no redirect");

    let tcp = connect_from("127.0.0.1", https).await.unwrap();
    let stream = pki
        .connector()
        .connect(ServerName::try_from("secure.test").unwrap(), tcp)
        .await
        .unwrap();
    let (status, headers, _) = exchange(stream, "secure.test", "/login").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    let entries = proxy.wait_entries(4).await;
    let redirect = entries
        .iter()
        .find(|e| e["status"] == 308)
        .expect("the redirect is logged");
    assert_eq!(
        redirect["deny_reason"], "",
        "allowed, then redirected: {redirect}"
    );
    assert_eq!(redirect["service_id"], "secure");
    assert_eq!(redirect["host"], "secure.test");
}

#[tokio::test]
async fn a_denied_client_is_denied_before_it_is_redirected() {
    let up = Upstream::start("s").await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    pki.issue(certs.path(), "secure.test");
    let yaml = [
        "services:\n".to_owned(),
        service(
            "secure",
            "secure.test",
            &up.url(),
            &format!(
                "{}    restrictions:\n      cidr_deny: [127.0.0.9]\n",
                tls_block(certs.path(), "secure.test")
            ),
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml).https().start().await;
    assert_eq!(status_of(&proxy, "127.0.0.9", "secure.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.1", "secure.test").await, 308);
}

/// Reads a PROXY v2 header off `stream`: "source destination" as the header says them.
async fn read_proxy_v2(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = vec![0u8; 16];
    stream.read_exact(&mut head).await.unwrap();
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    head.resize(16 + len, 0);
    stream.read_exact(&mut head[16..]).await.unwrap();
    let header = ppp::v2::Header::try_from(head.as_slice()).expect("a PROXY v2 header");
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => format!(
            "{}:{} {}:{}",
            a.source_address, a.source_port, a.destination_address, a.destination_port
        ),
        other => format!("{other:?}"),
    }
}

/// An echo upstream that expects a PROXY v2 header on each connection and records it.
async fn proxy_protocol_upstream() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let header = read_proxy_v2(&mut tcp).await;
                record.lock().unwrap().push(header);
                serve_echo(TokioIo::new(tcp), "pp").await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn http_upstream_connections_open_with_a_proxy_v2_header_per_client() {
    let (upstream, seen) = proxy_protocol_upstream().await;
    let yaml = [
        "services:\n".to_owned(),
        service(
            "pp",
            "pp.test",
            &upstream,
            "    send_proxy_protocol: true\n",
        ),
    ]
    .concat();
    let proxy = ProxyBuilder::new(&yaml)
        .arg("--trusted-proxies")
        .arg("127.0.0.50")
        .start()
        .await;
    let http = proxy.http_addr();
    // A client's keep-alive connection: one upstream connection, one header naming it.
    let mut direct = keep_alive_from("127.0.0.3", http).await;
    for _ in 0..2 {
        assert_eq!(
            send(&mut direct, "pp.test", "/", &[]).await.unwrap().status,
            200
        );
    }
    // A trusted proxy's connection carries two clients: each gets a connection of its own.
    let mut relay = keep_alive_from("127.0.0.50", http).await;
    for client in ["203.0.113.7", "203.0.113.8", "203.0.113.7"] {
        let r = send(&mut relay, "pp.test", "/", &[("x-forwarded-for", client)])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["headers"]["x-real-ip"],
            serde_json::json!([client])
        );
    }
    let seen = seen.lock().unwrap().clone();
    let sources: Vec<&str> = seen.iter().map(|h| h.split(' ').next().unwrap()).collect();
    assert_eq!(sources.len(), 4, "{seen:?}");
    assert!(sources[0].starts_with("127.0.0.3:"), "{seen:?}");
    assert_ne!(sources[0], "127.0.0.3:0", "the peer's own port: {seen:?}");
    assert_eq!(
        &sources[1..],
        ["203.0.113.7:0", "203.0.113.8:0", "203.0.113.7:0"],
        "{seen:?}"
    );
    assert!(
        seen[0].ends_with(&format!(" {http}")),
        "destination is the listener: {seen:?}"
    );
}

#[tokio::test]
async fn tcp_upstream_connections_open_with_a_proxy_v2_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let header = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let header = read_proxy_v2(&mut tcp).await;
        let mut buf = [0u8; 5];
        tcp.read_exact(&mut buf).await.unwrap();
        tcp.write_all(&buf).await.unwrap();
        header
    });
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: db\n    protocol: tcp\n    listen: 127.0.0.1:{{p}}\n    upstream: {upstream}\n    send_proxy_protocol: true\n"
    ))
    .port("p")
    .start()
    .await;
    let mut tcp = connect_from("127.0.0.4", proxy.port("p")).await.unwrap();
    let local = tcp.local_addr().unwrap();
    assert_eq!(echo(&mut tcp, b"hello").await.unwrap(), b"hello");
    assert_eq!(
        header.await.unwrap(),
        format!("{local} {}", proxy.port("p")),
        "the client as it connected, and the service's listener"
    );
}
