//! Services with several upstream targets: balancing, the retry of a connection that cannot be
//! opened, passive ejection and active health checks, over real sockets to real servers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::harness::*;

fn http_service(targets: &[String], extra: &str) -> String {
    format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstreams: [{}]\n{extra}",
        targets.join(", ")
    )
}

/// An address nothing listens on: connections to it are refused.
fn dead_target() -> String {
    format!("127.0.0.1:{}", nb_e2e::ports::reserve_port())
}

/// Which upstream answered a GET over a new connection (its name), or the status.
async fn who(proxy: &Proxy, path: &str) -> String {
    let r = get_from(proxy, "127.0.0.1", "web.test", path).await;
    if r.status == 200 {
        r.json()["upstream"].as_str().unwrap().to_owned()
    } else {
        r.status.to_string()
    }
}

fn tally(names: &[String]) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for n in names {
        *out.entry(n.as_str()).or_default() += 1;
    }
    out
}

/// The state `/readyz` gives for `target`.
async fn target_state(proxy: &Proxy, target: &str) -> Value {
    let ready = proxy.readyz().await;
    ready["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no {target} in {ready}"))
        .clone()
}

#[tokio::test]
async fn requests_take_turns_and_a_dead_target_is_retried_then_ejected() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dead = format!("http://{}", dead_target());
    let yaml = http_service(
        &[a.url(), dead.clone(), b.url()],
        "    passive_health: {max_failures: 2, eject_secs: 60}\n",
    );
    let proxy = ProxyBuilder::new(&yaml).metrics().start().await;

    // One keep-alive client: each request is balanced on its own, and a request that met the
    // dead target was retried on a live one.
    let mut conn = keep_alive_from("127.0.0.1", proxy.http_addr()).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        let r = send(&mut conn, "web.test", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        names.push(r.json()["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        tally(&names),
        BTreeMap::from([("a", 3), ("b", 3)]),
        "{names:?}"
    );
    let dead_state = target_state(&proxy, &dead).await;
    assert_eq!(dead_state["healthy"], false, "{dead_state}");
    assert_eq!(dead_state["reason"], "ejected", "{dead_state}");
    assert_eq!(dead_state["failures"], 2, "{dead_state}");
    assert_eq!(target_state(&proxy, &a.url()).await["healthy"], true);
    let up = format!("nb_proxy_upstream_target_healthy{{service=\"web\",target=\"{dead}\"}}");
    assert_eq!(proxy.metric(&up).await, 0.0);
    let sent = format!(
        "nb_proxy_upstream_target_requests_total{{service=\"web\",target=\"{}\"}}",
        a.url()
    );
    assert_eq!(proxy.metric(&sent).await, 3.0);

    // Ejected: the live targets strictly alternate, on new connections too.
    let mut next = Vec::new();
    for _ in 0..4 {
        next.push(who(&proxy, "/").await);
    }
    assert!(
        next == ["a", "b", "a", "b"] || next == ["b", "a", "b", "a"],
        "{next:?}"
    );
    let entries = proxy.wait_entries(10).await;
    let targets: Vec<&str> = entries
        .iter()
        .map(|e| e["metadata"]["upstream"].as_str().unwrap())
        .collect();
    assert!(
        targets.iter().all(|t| *t == a.url() || *t == b.url()),
        "{targets:?}"
    );
}

/// A POST (not idempotent) that meets a refused connection is answered 502, not retried.
#[tokio::test]
async fn only_idempotent_requests_are_retried_on_another_target() {
    let a = Upstream::start("a").await;
    let dead = format!("http://{}", dead_target());
    let yaml = http_service(
        &[dead.clone(), a.url()],
        "    passive_health: {max_failures: 0}\n",
    );
    let proxy = ProxyBuilder::new(&yaml).start().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let s = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
        let (mut sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(c);
        let req = Request::post("/form")
            .header("host", "web.test")
            .body(Full::new(Bytes::from_static(b"x=1")))
            .unwrap();
        statuses.push(sender.send_request(req).await.unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 502, 502]);
    for _ in 0..4 {
        assert_eq!(who(&proxy, "/").await, "a", "GETs are retried");
    }
    let entries = proxy.wait_entries(8).await;
    let failed: Vec<&Value> = entries.iter().filter(|e| e["status"] == 502).collect();
    assert_eq!(failed.len(), 2);
    for e in failed {
        assert_eq!(e["method"], "POST");
        assert_eq!(e["metadata"]["upstream"], dead.as_str(), "{e}");
        assert_eq!(e["metadata"]["upstream_error"], "connection refused", "{e}");
    }
}

#[tokio::test]
async fn least_connections_sends_requests_away_from_a_busy_target() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let yaml = http_service(
        &[a.url(), b.url()],
        "    load_balancing: least_connections\n",
    );
    let proxy = Arc::new(ProxyBuilder::new(&yaml).metrics().start().await);
    let p = proxy.clone();
    let slow = tokio::spawn(async move { who(&p, "/wait/1500").await });
    // Until the slow request is in flight on one target.
    let busy = poll(50, || None::<()>).await;
    assert!(busy.is_none());
    let mut in_flight = 0.0;
    for _ in 0..50 {
        let ready = proxy.readyz().await;
        in_flight = ready["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["in_flight"].as_f64().unwrap())
            .sum();
        if in_flight == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight, 1.0);
    let mut quick = Vec::new();
    for _ in 0..4 {
        quick.push(who(&proxy, "/").await);
    }
    let slow_went_to = slow.await.unwrap();
    assert!(
        quick.iter().all(|q| *q != slow_went_to),
        "the busy target ({slow_went_to}) got none of {quick:?}"
    );
}

/// An HTTP upstream whose `/healthz` answers 200 or 503 as `healthy` says, and that counts the
/// checks it gets; other paths answer its name.
struct CheckedUpstream {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CheckedUpstream {
    async fn start(name: &'static str, healthy: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flag = Arc::new(AtomicBool::new(healthy));
        let checks = Arc::new(AtomicUsize::new(0));
        let (f, c) = (flag.clone(), checks.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (f, c) = (f.clone(), c.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (f, c) = (f.clone(), c.clone());
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::from(
                            serde_json::json!({ "upstream": name }).to_string(),
                        )));
                        if req.uri().path() == "/healthz" {
                            assert_eq!(header(&req, "user-agent"), "nb-proxy-health-check");
                            c.fetch_add(1, Ordering::SeqCst);
                            if !f.load(Ordering::SeqCst) {
                                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            }
                        }
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Self {
            addr,
            healthy: flag,
            checks,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for CheckedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_health(proxy: &Proxy, target: &str, healthy: bool) -> Value {
    for _ in 0..100 {
        let state = target_state(proxy, target).await;
        if state["healthy"] == healthy {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{target} never became healthy={healthy}");
}

#[tokio::test]
async fn active_checks_take_a_failing_target_out_and_bring_it_back() {
    let good = CheckedUpstream::start("good", true).await;
    let sick = CheckedUpstream::start("sick", false).await;
    let yaml = http_service(
        &[good.url(), sick.url()],
        "    health_check: {path: /healthz, interval_secs: 1, timeout_secs: 1}\n",
    );
    let proxy = ProxyBuilder::new(&yaml).metrics().start().await;
    let state = wait_health(&proxy, &sick.url(), false).await;
    assert_eq!(state["reason"], "check failed", "{state}");
    for _ in 0..6 {
        assert_eq!(who(&proxy, "/").await, "good");
    }
    sick.healthy.store(true, Ordering::SeqCst);
    wait_health(&proxy, &sick.url(), true).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(who(&proxy, "/").await);
    }
    assert_eq!(
        tally(&names),
        BTreeMap::from([("good", 2), ("sick", 2)]),
        "{names:?}"
    );
    assert!(good.checks.load(Ordering::SeqCst) >= 2);
    proxy.wait_log_count("failed its health check", 1).await;
    proxy.wait_log_count("passed its health check", 1).await;

    // A reload that drops the check stops it: no more checks arrive.
    proxy
        .rewrite_config(
            &http_service(&[good.url(), sick.url()], ""),
            "configuration reloaded",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = good.checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        good.checks.load(Ordering::SeqCst),
        before,
        "the old check task ended"
    );
}

#[tokio::test]
async fn tcp_connections_are_balanced_and_a_refused_one_is_retried() {
    let (e1, e2) = (EchoUpstream::start().await, EchoUpstream::start().await);
    let dead = dead_target();
    let yaml = format!(
        "services:\n  - id: echo\n    protocol: tcp\n    listen: 127.0.0.1:{{echo}}\n    upstreams: [{}, {dead}, {}]\n    passive_health: {{max_failures: 0}}\n",
        e1.addr, e2.addr
    );
    let proxy = ProxyBuilder::new(&yaml)
        .port("echo")
        .metrics()
        .start()
        .await;
    for i in 0..6u8 {
        let mut s = connect_from("127.0.0.1", proxy.port("echo")).await.unwrap();
        assert_eq!(echo(&mut s, &[b'x', i]).await.unwrap(), [b'x', i]);
    }
    let (n1, n2) = (
        e1.connections.load(Ordering::SeqCst),
        e2.connections.load(Ordering::SeqCst),
    );
    assert_eq!(n1 + n2, 6);
    assert!(n1 >= 2 && n2 >= 2, "{n1} {n2}");
    let state = target_state(&proxy, &dead).await;
    assert!(state["failures"].as_u64().unwrap() >= 1, "{state}");
    assert_eq!(state["healthy"], true, "max_failures 0 never ejects");
}

#[tokio::test]
async fn a_workers_clients_share_the_connections_to_several_targets() {
    let ups = [
        Upstream::start("t0").await,
        Upstream::start("t1").await,
        Upstream::start("t2").await,
    ];
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let proxy = ProxyBuilder::new(&http_service(&urls, ""))
        .workers(1)
        .start()
        .await;
    // Two keep-alive clients taking turns: round-robin sends each of them to every target.
    let mut clients = [
        keep_alive_from("127.0.0.1", proxy.http_addr()).await,
        keep_alive_from("127.0.0.2", proxy.http_addr()).await,
    ];
    let mut names = Vec::new();
    for i in 0..6 {
        let r = send(&mut clients[i % 2], "web.test", "/", &[])
            .await
            .unwrap();
        names.push(r.json()["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        tally(&names),
        BTreeMap::from([("t0", 2), ("t1", 2), ("t2", 2)])
    );
    // One request at a time: one connection per target, not one per client and target.
    let opened: Vec<usize> = ups
        .iter()
        .map(|u| u.connections.load(Ordering::SeqCst))
        .collect();
    assert_eq!(opened, [1, 1, 1]);
}
