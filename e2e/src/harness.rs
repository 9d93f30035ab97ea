//! Real sockets on loopback: the real `nb-proxy` binary, real upstreams, and clients bound to
//! chosen source addresses in 127.0.0.0/8 (Linux routes all of it to loopback).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub use crate::ports::reserve_port;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub struct Proxy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// `/metrics`, when [`ProxyBuilder::metrics`] asked for it.
    pub metrics: Option<SocketAddr>,
    pub ports: HashMap<String, u16>,
    pub config: PathBuf,
    pub access_log: PathBuf,
    pub stderr: PathBuf,
}

pub struct ProxyBuilder {
    yaml: String,
    args: Vec<String>,
    https: bool,
    listen_host: String,
    ports: HashMap<String, u16>,
    poll: String,
    /// Managed mode: (management URL, token, services cache file).
    managed: Option<(String, String, PathBuf)>,
    http_port: Option<u16>,
    /// Managed mode: pass the token as `--token-file` instead.
    token_file: Option<PathBuf>,
    /// setrlimit(resource, soft = hard = value) in the child before it runs.
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// `--access-log off` instead of the file in the test's directory.
    access_log_off: bool,
}

impl ProxyBuilder {
    /// A proxy in managed mode: no services file, services from management.
    pub fn managed(url: &str, token: &str, cache: &std::path::Path) -> Self {
        let mut b = Self::new("services: []\n");
        b.managed = Some((url.to_owned(), token.to_owned(), cache.to_owned()));
        b
    }

    /// Listen on this HTTP port (to restart a proxy where clients expect it).
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    pub fn new(yaml: &str) -> Self {
        Self {
            yaml: yaml.to_owned(),
            args: Vec::new(),
            https: false,
            listen_host: "127.0.0.1".into(),
            ports: HashMap::new(),
            poll: "100ms".into(),
            managed: None,
            http_port: None,
            rlimits: Vec::new(),
            token_file: None,
            access_log_off: false,
        }
    }

    /// Runs with `--access-log off` (no file is written at [`Proxy::access_log`]).
    pub fn access_log_off(mut self) -> Self {
        self.access_log_off = true;
        self
    }

    /// Managed mode: the proxy reads its token from this file.
    pub fn token_file(mut self, path: &std::path::Path) -> Self {
        self.token_file = Some(path.to_owned());
        self
    }

    /// Runs the proxy under a resource limit (`libc::RLIMIT_*`), soft and hard.
    pub fn rlimit(mut self, resource: libc::__rlimit_resource_t, value: u64) -> Self {
        self.rlimits.push((resource, value));
        self
    }

    /// Runs `n` serving threads (`--workers`); one puts every client on the same worker.
    pub fn workers(self, n: usize) -> Self {
        self.arg("--workers").arg(n.to_string())
    }

    /// Serves `/metrics` on a port of its own (see [`Proxy::metric`]).
    pub fn metrics(self) -> Self {
        self.arg("--metrics-listen").arg("127.0.0.1:0")
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Listen on `[::]` so IPv4 clients arrive as IPv4-mapped IPv6 and `::1` can connect.
    pub fn dual_stack(mut self) -> Self {
        self.listen_host = "[::]".into();
        self
    }

    /// `{name}` in the YAML becomes a free port (for TCP services' listeners).
    pub fn port(mut self, name: &str) -> Self {
        self.ports.insert(name.to_owned(), reserve_port());
        self
    }

    /// Bounces with the test LAPI at `url` and its key ([`crate::lapi::KEY`]).
    pub fn crowdsec(self, url: &str) -> Self {
        self.arg("--crowdsec-api-url")
            .arg(url)
            .arg("--crowdsec-api-key")
            .arg(crate::lapi::KEY)
    }

    pub fn poll_interval(mut self, d: &str) -> Self {
        self.poll = d.to_owned();
        self
    }

    pub async fn start(self) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("services.yaml");
        let access_log = dir.path().join("access.log");
        let stderr = dir.path().join("stderr.log");
        std::fs::write(&config, substitute(&self.yaml, &self.ports, dir.path())).unwrap();
        let ready_file = dir.path().join("ready.json");
        // Port 0 unless the test needs the port again (a restart): the ready file says.
        let http_port = self.http_port.unwrap_or(0);
        let http: SocketAddr = format!("{}:{http_port}", self.listen_host).parse().unwrap();
        let mut cmd = Command::new(crate::binaries::binary("nb-proxy"));
        cmd.arg("--ready-file").arg(&ready_file);
        match &self.managed {
            Some((url, token, cache)) => {
                cmd.args(["--management-url", url]);
                match &self.token_file {
                    Some(file) => cmd.arg("--token-file").arg(file),
                    None => cmd.args(["--token", token]),
                };
                cmd.arg("--management-cache")
                    .arg(cache)
                    .args(["--management-report-interval", "500ms"]);
            }
            None => {
                cmd.arg("--config").arg(&config);
            }
        }
        cmd.arg("--http-listen")
            .arg(http.to_string())
            .arg("--access-log")
            .arg(if self.access_log_off {
                std::ffi::OsStr::new("off")
            } else {
                access_log.as_os_str()
            })
            .arg("--config-poll-interval")
            .arg(&self.poll)
            .arg("--log")
            .arg("info");
        if self.https {
            cmd.args(["--https-listen", "127.0.0.1:0"]);
        }
        for a in &self.args {
            cmd.arg(substitute(a, &self.ports, dir.path()));
        }
        // Flags come from the command line only, whatever the environment says.
        for (k, _) in std::env::vars() {
            if k.starts_with("NB_PROXY_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let rlimits = self.rlimits.clone();
        if !rlimits.is_empty() {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    for (resource, value) in &rlimits {
                        let lim = libc::rlimit {
                            rlim_cur: *value,
                            rlim_max: *value,
                        };
                        if libc::setrlimit(*resource, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("nb-proxy starts");
        let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
        let ready = crate::binaries::wait_ready(&mut child, &ready_file, log).await;
        let bound = |key| crate::binaries::address(&ready, key);
        let http = bound("http").expect("an HTTP listener");
        Proxy {
            child,
            dir,
            http,
            https: bound("https"),
            metrics: bound("metrics"),
            ports: self.ports,
            config,
            access_log,
            stderr,
        }
    }
}

fn substitute(s: &str, ports: &HashMap<String, u16>, dir: &std::path::Path) -> String {
    let mut out = s.replace("{dir}", &dir.display().to_string());
    for (name, port) in ports {
        out = out.replace(&format!("{{{name}}}"), &port.to_string());
    }
    out
}

impl Proxy {
    /// The HTTP listener as a client reaches it.
    pub fn http_addr(&self) -> SocketAddr {
        if self.http.ip().is_unspecified() {
            SocketAddr::new(ip("127.0.0.1"), self.http.port())
        } else {
            self.http
        }
    }

    pub fn port(&self, name: &str) -> SocketAddr {
        SocketAddr::new(ip("127.0.0.1"), self.ports[name])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// The exit status, if the process ends within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// `/readyz`'s body (started with [`ProxyBuilder::metrics`]).
    pub async fn readyz(&self) -> Value {
        let s = connect_from("127.0.0.1", self.metrics.expect("started with .metrics()"))
            .await
            .unwrap();
        request_over(s, "metrics", "/readyz", &[])
            .await
            .unwrap()
            .json()
    }

    /// A value from `/metrics` (needs [`ProxyBuilder::metrics`]): the line starting with
    /// `series` (name and labels as printed).
    pub async fn metric(&self, series: &str) -> f64 {
        let s = connect_from("127.0.0.1", self.metrics.expect("started with .metrics()"))
            .await
            .unwrap();
        let body = request_over(s, "metrics", "/metrics", &[])
            .await
            .unwrap()
            .body;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad access-log line {l:?}: {e}"))
            })
            .collect()
    }

    /// Waits until at least `n` access-log entries are written, and returns them.
    pub async fn wait_entries(&self, n: usize) -> Vec<Value> {
        poll(600, || Some(self.entries()).filter(|e| e.len() >= n))
            .await
            .unwrap_or_else(|| panic!("expected {n} access-log entries, have {:?}", self.entries()))
    }

    /// Rewrites the services file and waits until the proxy says what it did with it.
    pub async fn rewrite_config(&self, yaml: &str, expect: &str) {
        let before = self.stderr_text().matches(expect).count();
        std::fs::write(&self.config, substitute(yaml, &self.ports, self.dir.path())).unwrap();
        self.wait_log_count(expect, before + 1).await;
    }

    pub async fn wait_log_count(&self, needle: &str, n: usize) {
        for _ in 0..600 {
            if self.stderr_text().matches(needle).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "proxy never logged {needle:?} ({n} times):\n{}",
            self.stderr_text()
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `check` every 25 ms, up to `tries` times, until it gives something.
pub async fn poll<T>(tries: usize, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = check() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The status `source` gets for GET / on `host`.
pub async fn status_of(proxy: &Proxy, source: &str, host: &str) -> u16 {
    get_from(proxy, source, host, "/").await.status
}

/// An HTTP/2 client on `io` (prior knowledge in the clear, or TLS after ALPN `h2`); its
/// connection runs in a task of its own.
pub async fn http2_client<I>(
    io: I,
) -> hyper::Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A TCP connection from a chosen source address.
pub async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let source: IpAddr = source.parse().unwrap();
    let sock = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(source, 0))?;
    let to = match (source, to.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) if v4.is_loopback() => {
            SocketAddr::new(ip("::1"), to.port())
        }
        _ => to,
    };
    sock.connect(to).await
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Raises this test process's open-file limit to its hard limit, for tests that hold hundreds
/// of connections at once (a soft limit of 1,024 is common).
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// An HTTP/1.1 keep-alive connection from `source`, for several requests.
pub async fn keep_alive_from(
    source: &str,
    to: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = connect_from(source, to).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One HTTP/1.1 request over an existing stream.
pub async fn request_over<S>(
    stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Result<Reply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    send(&mut sender, host, path, headers).await
}

pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Result<Reply> {
    let mut req = Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GET `path` on the proxy's HTTP listener from `source`.
pub async fn get_from(proxy: &Proxy, source: &str, host: &str, path: &str) -> Reply {
    get_with(proxy, source, host, path, &[]).await
}

pub async fn get_with(
    proxy: &Proxy,
    source: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let stream = connect_from(source, proxy.http_addr())
        .await
        .expect("connect to proxy");
    request_over(stream, host, path, headers)
        .await
        .expect("HTTP exchange")
}

/// A request header as a string, `""` when absent.
pub fn header<B>(req: &Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Serves the echo upstream's answers (see [`Upstream`]) on one connection of any transport:
/// HTTP/1.1, or HTTP/2 by prior knowledge.
pub async fn serve_echo<I>(io: TokioIo<I>, name: &'static str)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        // /wait/MS answers after MS milliseconds.
        if let Some(ms) = req.uri().path().strip_prefix("/wait/") {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        // /consume reads the whole request body before answering.
        if req.uri().path() == "/consume" {
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len(),
                Err(_) => return Ok(Response::new(Full::new(Bytes::from("{}")))),
            };
            let body = serde_json::json!({ "upstream": name, "received": n });
            return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))));
        }
        let h = |n: &str| header(&req, n);
        let mut all = serde_json::Map::new();
        for name in req.headers().keys() {
            let values: Vec<_> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            all.insert(name.as_str().to_owned(), values.into());
        }
        let body = serde_json::json!({
            "upstream": name,
            "host": h("host"),
            "xff": h("x-forwarded-for"),
            "proto": h("x-forwarded-proto"),
            "path": req.uri().to_string(),
            "method": req.method().as_str(),
            "version": format!("{:?}", req.version()),
            "authority": req.uri().authority().map(|a| a.to_string()),
            "headers": all,
        });
        let resp = Response::builder()
            .header("server", "nb-e2e-echo")
            .body(Full::new(Bytes::from(body.to_string())));
        Ok::<_, Infallible>(resp.unwrap())
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}

/// An HTTP upstream that answers with what it saw, as JSON, and counts its connections.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_echo(TokioIo::new(stream), name));
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP upstream that echoes, counting accepted connections.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `msg`, reads the echo back. `Err` when the proxy closed the connection instead.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(got)
}

/// True when the peer closes the connection (EOF or reset) within a few seconds.
pub async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

pub fn entries_for<'a>(entries: &'a [Value], source_ip: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["source_ip"] == source_ip)
        .collect()
}

/// Writes `request` as raw bytes from `source` and reads until the proxy closes the connection
/// (send `Connection: close`), for requests no well-behaved client library would send.
pub async fn raw_exchange(proxy: &Proxy, source: &str, request: &[u8]) -> String {
    let mut s = connect_from(source, proxy.http_addr()).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of a raw HTTP/1.1 response, 0 when there is none.
pub fn raw_status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
