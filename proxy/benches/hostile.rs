//! A normal client's latency while 2,000 hostile connections are held open against nb-proxy:
//! silent connections, slow request heads (slowloris) and slow request bodies, each reopened as
//! soon as the proxy closes it. Prints p50/p99 of the normal client before and during the
//! attack. Run with `cargo bench -p nb-proxy --bench hostile` (about a minute).
//! `NB_BENCH_HOSTILE` changes the number of hostile connections (default 2,000).

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const NORMAL_REQUESTS: usize = 2_000;
const ATTACK_FOR: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    sock.connect(to).await
}

/// A tiny upstream: reads the request head (and a Content-Length body), answers 200.
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut have = Vec::new();
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                have.extend_from_slice(&buf[..n]);
                while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&have[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if have.len() < end + 4 + len {
                        break;
                    }
                    have.drain(..end + 4 + len);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// One request on a fresh connection, as a browser opening a page would; its latency.
async fn normal_request(proxy: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut s = connect_from("127.0.0.200".parse().unwrap(), proxy)
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.starts_with(b"HTTP/1.1 200").then(|| t.elapsed())
}

async fn measure(proxy: SocketAddr) -> (Vec<Duration>, usize) {
    let mut took = Vec::with_capacity(NORMAL_REQUESTS);
    let mut failed = 0;
    for _ in 0..NORMAL_REQUESTS {
        match normal_request(proxy).await {
            Some(d) => took.push(d),
            None => failed += 1,
        }
        // About 200 requests a second: a busy user, not a load test.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took.sort();
    (took, failed)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

#[derive(Clone, Copy)]
enum Kind {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request head one byte at a time, never finishing it.
    SlowHead,
    /// Sends a complete head announcing a large body, then a byte now and then.
    SlowBody,
}

/// Keeps one hostile connection open for as long as the attack lasts, reopening it whenever
/// the proxy closes it. Counts reopenings.
async fn hostile(
    kind: Kind,
    source: IpAddr,
    proxy: SocketAddr,
    until: Instant,
    reopened: Arc<AtomicUsize>,
) {
    while Instant::now() < until {
        let Ok(mut s) = connect_from(source, proxy).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut sink = [0u8; 256];
        let held = async {
            match kind {
                Kind::Silent => {
                    let _ = s.read(&mut sink).await;
                }
                Kind::SlowHead => {
                    for b in b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Slow: "
                        .iter()
                        .chain(std::iter::repeat(&b'a'))
                    {
                        if s.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
                Kind::SlowBody => {
                    let head =
                        b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1000000\r\n\r\n";
                    if s.write_all(head).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if s.write_all(b"x").await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = held => {}
            _ = tokio::time::sleep_until(until.into()) => return,
        }
        reopened.fetch_add(1, Ordering::Relaxed);
    }
}

async fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(metrics).await else {
        return f64::NAN;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let hostile_n: usize = std::env::var("NB_BENCH_HOSTILE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(upstream(up));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(
        &config,
        format!("services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: http://{up_addr}\n"),
    )
    .unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nb-proxy"))
        .arg("--config")
        .arg(&config)
        .arg("--http-listen")
        .arg(proxy.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--access-log")
        .arg(dir.path().join("access.log"))
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nb-proxy starts (cargo bench builds it)");
    for _ in 0..200 {
        if TcpStream::connect(proxy).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let (quiet, quiet_failed) = measure(proxy).await;
    println!(
        "normal client, no attack:        p50 {:.2} ms  p99 {:.2} ms  failed {quiet_failed}/{NORMAL_REQUESTS}",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99)
    );

    // Hostile connections from 100 addresses, 20 each (below the per-address cap of 1024).
    let until = Instant::now() + ATTACK_FOR;
    let reopened = Arc::new(AtomicUsize::new(0));
    for i in 0..hostile_n {
        let kind = [Kind::Silent, Kind::SlowHead, Kind::SlowBody][i % 3];
        let source: IpAddr = format!("127.0.20.{}", 1 + i % 100).parse().unwrap();
        tokio::spawn(hostile(kind, source, proxy, until, reopened.clone()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open_during = metric(metrics, "nb_proxy_connections_open").await;
    let (loaded, loaded_failed) = measure(proxy).await;
    println!(
        "normal client, {hostile_n} hostile open: p50 {:.2} ms  p99 {:.2} ms  failed {loaded_failed}/{NORMAL_REQUESTS}",
        pct(&loaded, 0.5),
        pct(&loaded, 0.99)
    );
    println!("connections the proxy held during the attack: {open_during}");
    let left = until.saturating_duration_since(Instant::now());
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    println!(
        "hostile connections closed by the proxy and reopened: {} in {}s (head timeout, body pace)",
        reopened.load(Ordering::Relaxed),
        ATTACK_FOR.as_secs()
    );
    println!(
        "header timeouts: {}, slow bodies cut (408): {}",
        metric(metrics, "nb_proxy_header_timeouts_total").await,
        metric(metrics, "nb_proxy_client_errors_total{status=\"408\"}").await
    );
    println!(
        "p99 under attack / p99 quiet: {:.2}; target p99 < 50 ms: {}",
        pct(&loaded, 0.99) / pct(&quiet, 0.99),
        if pct(&loaded, 0.99) < 50.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = child.kill();
    let _ = child.wait();
}
