//! The AppSec layer over real sockets, against a loopback stand-in for CrowdSec's AppSec
//! component (CrowdSec ≥ 1.6; Debian's 1.4.6 has none) that follows the documented protocol:
//! the request's headers (and body) with `X-Crowdsec-Appsec-*` headers; 200 allows, 403 blocks
//! with `{"action","http_status"}`, 401 refuses the key.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use crate::harness::*;

const KEY: &str = "appsec-test-key-0123456789";

/// What the stand-in was sent: method, the appsec headers, the body.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    ip: String,
    uri: String,
    host: String,
    verb: String,
    user_agent: String,
    body: String,
}

struct AppSecStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AppSecStandIn {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let h = |n: &str| header(&req, n);
                            let key_ok = h("x-crowdsec-appsec-api-key") == KEY;
                            let mut s = Seen {
                                method: req.method().to_string(),
                                ip: h("x-crowdsec-appsec-ip"),
                                uri: h("x-crowdsec-appsec-uri"),
                                host: h("x-crowdsec-appsec-host"),
                                verb: h("x-crowdsec-appsec-verb"),
                                user_agent: h("x-crowdsec-appsec-user-agent"),
                                body: String::new(),
                            };
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            s.body = String::from_utf8_lossy(&body).into_owned();
                            log.lock().unwrap().push(s.clone());
                            if s.uri.contains("server-error") {
                                let mut resp = Response::new(Full::new(Bytes::from("oops")));
                                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                return Ok::<_, Infallible>(resp);
                            }
                            if s.uri.contains("slow") {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            let (status, answer) = if !key_ok {
                                (401, json!({"message": "invalid API key"}))
                            } else if s.uri.contains("attack") || s.body.contains("<script>") {
                                (403, json!({"action": "ban", "http_status": 403}))
                            } else {
                                (200, json!({"action": "allow", "http_status": 200}))
                            };
                            let mut resp =
                                Response::new(Full::new(Bytes::from(answer.to_string())));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn services(up: &Upstream) -> String {
    let svc = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    protocol: http\n    hosts: [{id}.test]\n    upstream: {}\n    restrictions: {{cidr_deny: [127.0.0.66]{extra}}}\n",
            up.url()
        )
    };
    format!(
        "services:\n{}{}{}{}{}",
        svc("enforce", ", appsec_mode: enforce"),
        svc("observe", ", appsec_mode: observe"),
        svc("open", ", appsec_mode: enforce, appsec_fail_open: true"),
        svc(
            "strict",
            ", appsec_mode: enforce, appsec_oversized_body: block"
        ),
        svc("plain", ""),
    )
}

fn post(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test-agent/1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn body_of(raw: &str) -> Value {
    serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn appsec_blocks_allows_observes_and_fails_closed_or_open() {
    let up = Upstream::start("u").await;
    let appsec = AppSecStandIn::start().await;
    let proxy = ProxyBuilder::new(&services(&up))
        .arg("--appsec-url")
        .arg(format!("http://{}/", appsec.addr))
        .arg("--appsec-api-key")
        .arg(KEY)
        .arg("--appsec-timeout")
        .arg("500ms")
        .arg("--appsec-max-body")
        .arg("1024")
        .start()
        .await;
    let get = |host: &'static str, path: &'static str| {
        let proxy = &proxy;
        async move {
            get_with(
                proxy,
                "127.0.0.1",
                host,
                path,
                &[("user-agent", "test-agent/1")],
            )
            .await
        }
    };

    // Allowed: the upstream answers; AppSec saw the request as the protocol says.
    let r = get("enforce.test", "/ok?q=1").await;
    assert_eq!(r.status, 200);
    let s = appsec.seen();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (
            s[0].method.as_str(),
            s[0].ip.as_str(),
            s[0].uri.as_str(),
            s[0].host.as_str(),
            s[0].verb.as_str(),
            s[0].user_agent.as_str()
        ),
        (
            "GET",
            "127.0.0.1",
            "/ok?q=1",
            "enforce.test",
            "GET",
            "test-agent/1"
        )
    );
    // Blocked, by the URI and by the body; the body reaches AppSec (POST) and, when allowed,
    // the upstream too.
    let r = get("enforce.test", "/attack").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("web application firewall"), "{}", r.body);
    let raw = raw_exchange(
        &proxy,
        "127.0.0.1",
        &post("enforce.test", "/consume", "<script>x</script>"),
    )
    .await;
    assert_eq!(raw_status(&raw), 403, "{raw}");
    let raw = raw_exchange(
        &proxy,
        "127.0.0.1",
        &post("enforce.test", "/consume", "name=bob"),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(
        body_of(&raw)["received"],
        8,
        "the upstream gets the body AppSec saw"
    );
    let s = appsec.seen();
    assert_eq!(
        (s[3].method.as_str(), s[3].verb.as_str(), s[3].body.as_str()),
        ("POST", "POST", "name=bob")
    );

    // A body over --appsec-max-body: the head only (then the whole body upstream), or a block.
    let big = "a".repeat(2000);
    let raw = raw_exchange(&proxy, "127.0.0.1", &post("enforce.test", "/consume", &big)).await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(body_of(&raw)["received"], 2000);
    let last = appsec.seen().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.verb.as_str(), last.body.len()),
        ("GET", "POST", 0)
    );
    let asked = appsec.seen().len();
    let raw = raw_exchange(&proxy, "127.0.0.1", &post("strict.test", "/consume", &big)).await;
    assert_eq!(raw_status(&raw), 403);
    assert_eq!(appsec.seen().len(), asked, "blocked without asking");

    // Observe never denies; too slow an answer fails closed, or open where the service says.
    assert_eq!(get("observe.test", "/attack").await.status, 200);
    assert_eq!(get("enforce.test", "/slow-check").await.status, 403);
    assert_eq!(get("open.test", "/slow-check").await.status, 200);
    // An answer outside the protocol (500) is an outage too, never an allow.
    assert_eq!(get("enforce.test", "/server-error").await.status, 403);
    // Off: never asked; and a client the CIDR layer denies is never inspected.
    let asked = appsec.seen().len();
    assert_eq!(get("plain.test", "/attack").await.status, 200);
    assert_eq!(status_of(&proxy, "127.0.0.66", "enforce.test").await, 403);
    assert_eq!(appsec.seen().len(), asked);

    let e = proxy.wait_entries(12).await;
    let by_path = |svc: &str, path: &str| -> Value {
        e.iter()
            .find(|x| x["service_id"] == svc && x["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {svc} {path}: {e:?}"))
    };
    let blocked = by_path("enforce", "/attack");
    assert_eq!(blocked["deny_reason"], "appsec_block");
    assert_eq!(blocked["metadata"]["appsec_verdict"], "appsec_block");
    assert_eq!(blocked["metadata"]["appsec_mode"], "enforce");
    let observed = by_path("observe", "/attack");
    assert_eq!(observed["deny_reason"], "");
    assert_eq!(observed["metadata"]["appsec_verdict"], "appsec_block");
    assert_eq!(observed["metadata"]["appsec_mode"], "observe");
    assert_eq!(
        by_path("enforce", "/server-error")["deny_reason"],
        "appsec_unavailable"
    );
    assert_eq!(
        by_path("enforce", "/slow-check")["deny_reason"],
        "appsec_unavailable"
    );
    let open = by_path("open", "/slow-check");
    assert_eq!(open["deny_reason"], "");
    assert_eq!(open["metadata"]["appsec_verdict"], "appsec_unavailable");
    assert!(by_path("enforce", "/ok")["metadata"]
        .get("appsec_verdict")
        .is_none());
    assert!(
        !proxy.stderr_text().contains(KEY),
        "the key is never logged"
    );
}

#[tokio::test]
async fn a_refused_key_or_no_component_is_appsec_unavailable() {
    let up = Upstream::start("u").await;
    let appsec = AppSecStandIn::start().await;
    let proxy = ProxyBuilder::new(&services(&up))
        .arg("--appsec-url")
        .arg(format!("http://{}/", appsec.addr))
        .arg("--appsec-api-key")
        .arg("not-the-key")
        .start()
        .await;
    for _ in 0..3 {
        let r = get_from(&proxy, "127.0.0.1", "enforce.test", "/").await;
        assert_eq!(r.status, 403);
    }
    assert_eq!(
        get_from(&proxy, "127.0.0.1", "open.test", "/").await.status,
        200
    );
    proxy.wait_log_count("key refused (401)", 1).await;
    assert_eq!(
        proxy.stderr_text().matches("key refused (401)").count(),
        1,
        "said once"
    );
    let e = proxy.wait_entries(4).await;
    assert_eq!(e[0]["deny_reason"], "appsec_unavailable");

    // Without --appsec-url, an enforce service fails closed.
    let alone = ProxyBuilder::new(&services(&up)).start().await;
    let r = get_from(&alone, "127.0.0.1", "enforce.test", "/").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        get_from(&alone, "127.0.0.1", "observe.test", "/")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_body_that_stalls_before_appsec_sees_it_gets_408_and_no_inspection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("u").await;
    let appsec = AppSecStandIn::start().await;
    let proxy = ProxyBuilder::new(&services(&up))
        .arg("--appsec-url")
        .arg(format!("http://{}/", appsec.addr))
        .arg("--appsec-api-key")
        .arg(KEY)
        .arg("--request-body-timeout")
        .arg("1s")
        .start()
        .await;
    let mut s = connect_from("127.0.0.1", proxy.http_addr()).await.unwrap();
    s.write_all(
        b"POST /consume HTTP/1.1\r\nHost: enforce.test\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
        .await
        .expect("answered while the body still stalls")
        .unwrap();
    let raw = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert_eq!(raw_status(&raw), 408, "{raw}");
    assert!(
        appsec.seen().is_empty(),
        "a partial body is never inspected"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let e = proxy.wait_entries(1).await;
    assert_eq!(e[0]["metadata"]["client_error"], "request body too slow");
}
