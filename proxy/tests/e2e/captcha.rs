//! Captcha challenges over real sockets: a real LAPI's `captcha` decision, the challenge page,
//! token verification against a loopback stand-in for the provider's `siteverify` endpoint
//! (answering as Cloudflare Turnstile's documentation says), and the signed cookie.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use crate::harness::*;
use crate::lapi::Lapi;

const SECRET: &str = "0x4AAAAAAAtest-secret";
const SITE_KEY: &str = "0x4AAAAAAAtestsitekey";
/// Tokens the stand-in accepts, once each.
const GOOD: [&str; 3] = ["solved-1", "solved-2", "solved-3"];

/// A stand-in for `https://challenges.cloudflare.com/turnstile/v0/siteverify`: a form POST
/// with `secret`, `response` and `remoteip`; JSON with `success` and `error-codes`.
struct SiteVerify {
    addr: SocketAddr,
    /// Every form it was sent, as (secret, response, remoteip).
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl SiteVerify {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let used = Arc::new(Mutex::new(HashSet::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, used) = (log.clone(), used.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, used) = (log.clone(), used.clone());
                        async move {
                            let form_type = req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/x-www-form-urlencoded");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let field = |name: &str| url_field(&body, name).unwrap_or_default();
                            let (secret, token, ip) =
                                (field("secret"), field("response"), field("remoteip"));
                            log.lock()
                                .unwrap()
                                .push((secret.clone(), token.clone(), ip));
                            // Faults a real provider can show: a broken body, a server error.
                            if token == "broken-answer" {
                                return Ok(Response::new(Full::new(Bytes::from("<html>oops"))));
                            }
                            if token == "server-error" {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                return Ok(r);
                            }
                            let answer = if !form_type || secret.is_empty() {
                                json!({"success": false, "error-codes": ["missing-input-secret"]})
                            } else if secret != SECRET {
                                json!({"success": false, "error-codes": ["invalid-input-secret"]})
                            } else if !GOOD.contains(&token.as_str()) {
                                json!({"success": false, "error-codes": ["invalid-input-response"]})
                            } else if !used.lock().unwrap().insert(token) {
                                json!({"success": false, "error-codes": ["timeout-or-duplicate"]})
                            } else {
                                json!({"success": true, "challenge_ts": "2026-12-02T10:00:00.000Z",
                                       "hostname": "shop.test", "error-codes": [], "action": "", "cdata": ""})
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                answer.to_string(),
                            ))))
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
}

fn url_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() + 1 {
                    if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    })
}

fn post(host: &str, path: &str, form: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{cookie}Connection: close\r\n\r\n{form}",
        form.len()
    )
    .into_bytes()
}

fn get(host: &str, path: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n{cookie}Connection: close\r\n\r\n")
        .into_bytes()
}

/// The `name=value` part of the response's `Set-Cookie`.
fn set_cookie(raw: &str) -> String {
    let line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie: {raw}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

#[tokio::test]
async fn a_solved_challenge_lets_that_client_in_for_that_service_only() {
    let up = Upstream::start("u").await;
    let verify = SiteVerify::start().await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--range", "127.0.0.80/30", "--type", "captcha"]);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("turnstile.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let yaml = format!(
        r#"
services:
  - id: shop
    protocol: http
    hosts: [shop.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: enforce}}
    remediation:
      captcha: {{provider: turnstile, site_key: {SITE_KEY}, secret_key_file: {s}, cookie_ttl_secs: 600}}
  - id: blog
    protocol: http
    hosts: [blog.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: enforce}}
  - id: watch
    protocol: http
    hosts: [watch.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: observe}}
  - id: plain
    protocol: http
    hosts: [plain.test]
    upstream: {u}
    restrictions: {{crowdsec_mode: enforce}}
    remediation:
      ban: {{status: 403}}
"#,
        u = up.url(),
        s = secret_file.display()
    );
    // The proxy-wide site (flags) serves blog.test; shop.test has its own.
    let proxy = ProxyBuilder::new(&yaml)
        .crowdsec(&lapi.url())
        .arg("--captcha-provider")
        .arg("hcaptcha")
        .arg("--captcha-site-key")
        .arg("10000000-ffff-ffff-ffff-000000000001")
        .arg("--captcha-secret-key")
        .arg(SECRET)
        .arg("--captcha-verify-url")
        .arg(format!("http://{}/siteverify", verify.addr))
        .start()
        .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;

    // The challenge page, with the provider's widget and a form back to the challenge path.
    let raw = raw_exchange(
        &proxy,
        "127.0.0.80",
        &get("shop.test", "/cart?item=7", None),
    )
    .await;
    assert_eq!(raw_status(&raw), 403, "{raw}");
    assert!(
        raw.contains("challenges.cloudflare.com/turnstile/v0/api.js"),
        "{raw}"
    );
    assert!(raw.contains(&format!(
        r#"class="widget cf-turnstile" data-sitekey="{SITE_KEY}""#
    )));
    assert!(raw.contains(r#"action="/.nb-proxy/captcha""#));
    assert!(
        raw.contains(r#"name="return_to" value="/cart?item=7""#),
        "{raw}"
    );
    assert!(raw.to_ascii_lowercase().contains(
        "content-security-policy: default-src 'none'; script-src https://challenges.cloudflare.com"
    ));
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A wrong token: the page again, saying so.
    let raw = raw_exchange(
        &proxy,
        "127.0.0.80",
        &post(
            "shop.test",
            "/.nb-proxy/captcha",
            "cf-turnstile-response=guess&return_to=%2Fcart%3Fitem%3D7",
            None,
        ),
    )
    .await;
    assert_eq!(raw_status(&raw), 403);
    assert!(raw.contains("That did not work"), "{raw}");

    // Solved: a 303 back where the client was going, with a signed HttpOnly cookie.
    let raw = raw_exchange(
        &proxy,
        "127.0.0.80",
        &post(
            "shop.test",
            "/.nb-proxy/captcha",
            "cf-turnstile-response=solved-1&return_to=%2Fcart%3Fitem%3D7",
            None,
        ),
    )
    .await;
    assert_eq!(raw_status(&raw), 303, "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("\r\nlocation: /cart?item=7\r\n"),
        "{raw}"
    );
    let cookie_line = set_cookie(&raw);
    assert!(
        cookie_line.contains("; HttpOnly") && cookie_line.contains("Max-Age=600"),
        "{cookie_line}"
    );
    assert!(
        !cookie_line.contains("Secure"),
        "plain HTTP: no Secure flag"
    );
    let cookie = cookie_line.split(';').next().unwrap().to_owned();
    {
        let seen = verify.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1],
            (SECRET.into(), "solved-1".into(), "127.0.0.80".into())
        );
    }

    // The cookie lets this client in, on this service.
    let raw = raw_exchange(
        &proxy,
        "127.0.0.80",
        &get("shop.test", "/cart?item=7", Some(&cookie)),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert!(raw.contains(r#""upstream":"u""#));
    // Not another address with the same decision, not another service, not a forgery.
    let raw = raw_exchange(&proxy, "127.0.0.81", &get("shop.test", "/", Some(&cookie))).await;
    assert_eq!(raw_status(&raw), 403);
    assert!(raw.contains("cf-turnstile"));
    let raw = raw_exchange(&proxy, "127.0.0.80", &get("blog.test", "/", Some(&cookie))).await;
    assert_eq!(raw_status(&raw), 403);
    assert!(
        raw.contains("h-captcha"),
        "blog.test uses the proxy-wide hCaptcha site: {raw}"
    );
    let (exp, tag) = cookie.split_once('=').unwrap().1.split_once('.').unwrap();
    let later = format!(
        "nb_proxy_captcha={}.{tag}",
        exp.parse::<u64>().unwrap() + 3600
    );
    let raw = raw_exchange(&proxy, "127.0.0.80", &get("shop.test", "/", Some(&later))).await;
    assert_eq!(
        raw_status(&raw),
        403,
        "a cookie with a changed expiry is refused"
    );
    // A token is good once (the provider says `timeout-or-duplicate`).
    let raw = raw_exchange(
        &proxy,
        "127.0.0.81",
        &post(
            "shop.test",
            "/.nb-proxy/captcha",
            "cf-turnstile-response=solved-1",
            None,
        ),
    )
    .await;
    assert_eq!(raw_status(&raw), 403);
    // The proxy-wide site uses hCaptcha's field name.
    let raw = raw_exchange(
        &proxy,
        "127.0.0.81",
        &post(
            "blog.test",
            "/.nb-proxy/captcha",
            "h-captcha-response=solved-2&return_to=https%3A%2F%2Fevil.test%2F",
            None,
        ),
    )
    .await;
    assert_eq!(raw_status(&raw), 303, "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("\r\nlocation: /\r\n"),
        "only paths on this host: {raw}"
    );

    // Observe never challenges.
    let raw = raw_exchange(&proxy, "127.0.0.82", &get("watch.test", "/", None)).await;
    assert_eq!(raw_status(&raw), 200);
    // A service whose own block has no captcha uses the proxy-wide site too.
    let raw = raw_exchange(&proxy, "127.0.0.82", &get("plain.test", "/", None)).await;
    assert!(raw.contains("h-captcha"), "{raw}");

    // The access log says what the captcha step did.
    let entries = proxy.wait_entries(11).await;
    let shop: Vec<&Value> = entries
        .iter()
        .filter(|e| e["service_id"] == "shop")
        .collect();
    let steps: Vec<&str> = shop
        .iter()
        .map(|e| e["metadata"]["captcha"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        steps,
        ["served", "failed", "passed", "cookie", "served", "served", "failed"],
        "{shop:?}"
    );
    assert_eq!(shop[0]["deny_reason"], "crowdsec_captcha");
    assert_eq!(shop[2]["deny_reason"], "");
    assert_eq!(shop[2]["status"], 303);
    assert_eq!(shop[3]["deny_reason"], "");
    assert_eq!(shop[3]["metadata"]["crowdsec_verdict"], "crowdsec_captcha");
    let watch: Vec<&Value> = entries
        .iter()
        .filter(|e| e["service_id"] == "watch")
        .collect();
    assert!(watch[0]["metadata"].get("captcha").is_none());
    assert!(
        !proxy.stderr_text().contains(SECRET),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn without_a_captcha_site_a_captcha_decision_gets_the_ban_answer() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.84", "--type", "captcha"]);
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions: {{crowdsec_mode: enforce}}\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml).crowdsec(&lapi.url()).start().await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    let r = get_with(
        &proxy,
        "127.0.0.84",
        "web.test",
        "/",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["verdict"], "crowdsec_captcha");
}

#[tokio::test]
async fn oversized_and_malformed_challenge_forms_fail_without_asking_the_provider() {
    let up = Upstream::start("u").await;
    let verify = SiteVerify::start().await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.86", "--type", "captcha"]);
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions: {{crowdsec_mode: enforce}}\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .crowdsec(&lapi.url())
        .arg("--captcha-provider")
        .arg("turnstile")
        .arg("--captcha-site-key")
        .arg(SITE_KEY)
        .arg("--captcha-secret-key")
        .arg(SECRET)
        .arg("--captcha-verify-url")
        .arg(format!("http://{}/siteverify", verify.addr))
        .start()
        .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    let padded = format!("cf-turnstile-response=solved-3&pad={}", "x".repeat(20_000));
    let empty_token = "cf-turnstile-response=&return_to=%2F".to_owned();
    let not_a_form = "%%%&&&==\u{1}".to_owned();
    let huge_token = format!("cf-turnstile-response={}", "t".repeat(5000));
    for form in [padded, empty_token, not_a_form, huge_token] {
        let raw = raw_exchange(
            &proxy,
            "127.0.0.86",
            &post("web.test", "/.nb-proxy/captcha", &form, None),
        )
        .await;
        assert_eq!(raw_status(&raw), 403, "{raw}");
        assert!(raw.contains("That did not work"), "{raw}");
        assert!(!raw.to_ascii_lowercase().contains("set-cookie"));
    }
    assert!(
        verify.seen.lock().unwrap().is_empty(),
        "the provider was never asked"
    );

    // A provider that answers garbage or fails: the challenge again, the cause in the log.
    for (token, cause) in [
        ("broken-answer", "is not siteverify JSON"),
        ("server-error", "answered HTTP 500"),
    ] {
        let form = format!("cf-turnstile-response={token}");
        let raw = raw_exchange(
            &proxy,
            "127.0.0.86",
            &post("web.test", "/.nb-proxy/captcha", &form, None),
        )
        .await;
        assert_eq!(raw_status(&raw), 403, "{raw}");
        assert!(!raw.to_ascii_lowercase().contains("set-cookie"));
        proxy.wait_log_count(cause, 1).await;
    }
    assert!(!proxy.stderr_text().contains(SECRET));
}
