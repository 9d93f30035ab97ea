//! The bouncer against a real CrowdSec LAPI.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::lapi::{Lapi, KEY};

fn services(up: &Upstream) -> String {
    format!(
        r#"
services:
  - id: enforce
    protocol: http
    hosts: [enforce.test]
    upstream: {u}
    restrictions:
      crowdsec_mode: enforce
  - id: observe
    protocol: http
    hosts: [observe.test]
    upstream: {u}
    restrictions:
      crowdsec_mode: observe
  - id: off
    protocol: http
    hosts: [off.test]
    upstream: {u}
"#,
        u = up.url()
    )
}

async fn proxy_for(yaml: &str, lapi_url: &str, extra: &[&str]) -> Proxy {
    let mut b = ProxyBuilder::new(yaml)
        .dual_stack()
        .arg("--crowdsec-api-url")
        .arg(lapi_url)
        .arg("--crowdsec-api-key")
        .arg(KEY)
        .arg("--crowdsec-update-interval")
        .arg("300ms");
    for a in extra {
        b = b.arg(*a);
    }
    b.start().await
}

/// Polls until `source` gets `status` on `host`, for up to `within`.
async fn eventually_status(proxy: &Proxy, source: &str, host: &str, status: u16, within: Duration) {
    let t = Instant::now();
    loop {
        let got = get_from(proxy, source, host, "/").await.status;
        if got == status {
            return;
        }
        assert!(
            t.elapsed() < within,
            "{source} -> {host}: still {got}, wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn verdicts_follow_real_lapi_decisions() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.5"]);
    lapi.add(&["--range", "127.1.0.0/16", "--type", "captcha"]);
    lapi.add(&["--ip", "127.0.0.6", "--type", "throttle"]);
    lapi.add(&["--ip", "::1", "--type", "ban"]);
    let proxy = proxy_for(&services(&up), &lapi.url(), &[]).await;
    proxy
        .wait_log_count("CrowdSec bouncer synced initial decisions (4)", 1)
        .await;

    let cases = [
        ("127.0.0.5", 403, "crowdsec_ban"),
        ("127.1.7.7", 403, "crowdsec_captcha"),
        ("127.0.0.6", 429, "crowdsec_throttle"),
        ("::1", 403, "crowdsec_ban"),
        ("127.0.0.7", 200, ""),
    ];
    for (src, status, _) in cases {
        assert_eq!(
            status_of(&proxy, src, "enforce.test").await,
            status,
            "{src}"
        );
        assert_eq!(
            status_of(&proxy, src, "observe.test").await,
            200,
            "observe never denies"
        );
        assert_eq!(status_of(&proxy, src, "off.test").await, 200);
    }
    let entries = proxy.wait_entries(cases.len() * 3).await;
    for (i, (src, _, verdict)) in cases.iter().enumerate() {
        let (enf, obs, off) = (&entries[3 * i], &entries[3 * i + 1], &entries[3 * i + 2]);
        assert_eq!(enf["source_ip"], *src);
        assert_eq!(enf["deny_reason"], *verdict, "{src}");
        assert_eq!(obs["deny_reason"], "", "{src}");
        assert_eq!(obs["status"], 200);
        if verdict.is_empty() {
            assert!(enf["metadata"].get("crowdsec_verdict").is_none());
            assert!(obs["metadata"].get("crowdsec_verdict").is_none());
        } else {
            assert_eq!(enf["metadata"]["crowdsec_verdict"], *verdict);
            assert_eq!(enf["metadata"]["crowdsec_mode"], "enforce");
            assert_eq!(obs["metadata"]["crowdsec_verdict"], *verdict);
            assert_eq!(obs["metadata"]["crowdsec_mode"], "observe");
        }
        assert!(
            off["metadata"].get("crowdsec_verdict").is_none(),
            "off is not consulted"
        );
    }

    // Deleting a decision allows the address again within an interval or so.
    lapi.cscli(&["decisions", "delete", "--ip", "127.0.0.5"]);
    eventually_status(
        &proxy,
        "127.0.0.5",
        "enforce.test",
        200,
        Duration::from_secs(5),
    )
    .await;

    // An IPv6 range.
    lapi.cscli(&["decisions", "delete", "--ip", "::1"]);
    eventually_status(&proxy, "::1", "enforce.test", 200, Duration::from_secs(5)).await;
    lapi.add(&["--range", "::/64", "--type", "captcha"]);
    eventually_status(&proxy, "::1", "enforce.test", 403, Duration::from_secs(5)).await;

    // A 2s decision expires.
    lapi.add(&["--ip", "127.0.0.9", "--duration", "2s"]);
    eventually_status(
        &proxy,
        "127.0.0.9",
        "enforce.test",
        403,
        Duration::from_secs(3),
    )
    .await;
    eventually_status(
        &proxy,
        "127.0.0.9",
        "enforce.test",
        200,
        Duration::from_secs(6),
    )
    .await;

    // The bouncer shows its type and version.
    let list = lapi.cscli(&["bouncers", "list"]);
    assert!(list.contains("crowdsec-nb-proxy-bouncer"), "{list}");
    assert!(
        list.contains(concat!("v", env!("CARGO_PKG_VERSION"))),
        "{list}"
    );
    assert!(
        !proxy.stderr_text().contains(KEY),
        "the key is never logged"
    );
}

#[tokio::test]
async fn lapi_down_after_sync_keeps_decisions_and_expires_them_locally() {
    let up = Upstream::start("u").await;
    let mut lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.20", "--duration", "5m"]);
    lapi.add(&["--ip", "127.0.0.21", "--duration", "4s"]);
    let proxy = proxy_for(&services(&up), &lapi.url(), &[]).await;
    proxy
        .wait_log_count("synced initial decisions (2)", 1)
        .await;
    lapi.stop();
    proxy
        .wait_log_count("keeping the last known decisions", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.20", "enforce.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.21", "enforce.test").await, 403);
    // The short one expires on time with no LAPI to say so.
    eventually_status(
        &proxy,
        "127.0.0.21",
        "enforce.test",
        200,
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(status_of(&proxy, "127.0.0.20", "enforce.test").await, 403);
    // The outage is logged once, not per poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        proxy
            .stderr_text()
            .matches("keeping the last known decisions")
            .count(),
        1
    );
    assert!(proxy.stderr_text().contains("connection refused"));
}

#[tokio::test]
async fn enforce_fails_closed_until_the_first_sync_observe_records_it() {
    let up = Upstream::start("u").await;
    let mut lapi = Lapi::configure(None);
    let proxy = proxy_for(&services(&up), &lapi.url(), &[]).await;
    proxy.wait_log_count("connection refused", 1).await;
    assert!(proxy.stderr_text().contains("not synced yet"));
    assert_eq!(status_of(&proxy, "127.0.0.30", "enforce.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.30", "observe.test").await, 200);
    assert_eq!(status_of(&proxy, "127.0.0.30", "off.test").await, 200);
    let e = proxy.wait_entries(3).await;
    assert_eq!(e[0]["deny_reason"], "crowdsec_unavailable");
    assert_eq!(e[1]["deny_reason"], "");
    assert_eq!(e[1]["metadata"]["crowdsec_verdict"], "crowdsec_unavailable");
    assert_eq!(e[1]["metadata"]["crowdsec_mode"], "observe");
    // Once the LAPI is up the first sync opens the gate.
    lapi.start();
    proxy.wait_log_count("synced initial decisions", 1).await;
    eventually_status(
        &proxy,
        "127.0.0.30",
        "enforce.test",
        200,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn tcp_services_get_one_entry_per_connection() {
    let echo_up = EchoUpstream::start().await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.40"]);
    let yaml = format!(
        "services:\n  - id: enf\n    protocol: tcp\n    listen: 127.0.0.1:{{e}}\n    upstream: {a}\n    restrictions:\n      crowdsec_mode: enforce\n  - id: obs\n    protocol: tcp\n    listen: 127.0.0.1:{{o}}\n    upstream: {a}\n    restrictions:\n      crowdsec_mode: observe\n",
        a = echo_up.addr
    );
    let proxy = ProxyBuilder::new(&yaml)
        .port("e")
        .port("o")
        .crowdsec(&lapi.url())
        .start()
        .await;
    proxy.wait_log_count("synced initial decisions", 1).await;
    let mut s = connect_from("127.0.0.40", proxy.port("e")).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let mut s = connect_from("127.0.0.40", proxy.port("o")).await.unwrap();
    assert_eq!(echo(&mut s, b"observed").await.unwrap(), b"observed");
    drop(s);
    let e = proxy.wait_entries(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.entries().len(), 2, "one entry per connection");
    assert_eq!(e[0]["deny_reason"], "crowdsec_ban");
    assert_eq!(e[1]["deny_reason"], "");
    assert_eq!(e[1]["metadata"]["crowdsec_verdict"], "crowdsec_ban");
    assert_eq!(e[1]["bytes_in"], 8);
    assert_eq!(
        echo_up
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "enforce never dialled"
    );
}

type Pem = std::path::PathBuf;

/// A CA and a LAPI server certificate for 127.0.0.1, as PEM files in `dir`.
fn lapi_pki(dir: &std::path::Path, name: &str) -> (Pem, Pem, Pem) {
    let (c, k, a, _, _) = lapi_pki_with_client(dir, name);
    (c, k, a)
}

/// Also a client certificate from the same CA with OU `nb-bouncer` (cert, key).
fn lapi_pki_with_client(dir: &std::path::Path, name: &str) -> (Pem, Pem, Pem, Pem, Pem) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (c, k, a) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}-ca.crt")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::write(&a, ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nb-proxy-mtls");
    client_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "nb-bouncer");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let (cc, ck) = (
        dir.join(format!("{name}-client.crt")),
        dir.join(format!("{name}-client.key")),
    );
    std::fs::write(&cc, client.pem()).unwrap();
    std::fs::write(&ck, client_key.serialize_pem()).unwrap();
    (c, k, a, cc, ck)
}

#[tokio::test]
async fn client_certificate_authentication() {
    let up = Upstream::start("u").await;
    let pki = tempfile::tempdir().unwrap();
    let (cert, key, ca, client_cert, client_key) = lapi_pki_with_client(pki.path(), "lapi");
    let mut lapi =
        crate::lapi::Lapi::configure_with(Some((cert, key, ca.clone())), crate::lapi::MTLS);
    lapi.start();
    lapi.add(&["--ip", "127.0.0.80"]);
    // No API key: the certificate alone authenticates the bouncer.
    let proxy = ProxyBuilder::new(&services(&up))
        .arg("--crowdsec-api-url")
        .arg(lapi.url())
        .arg("--crowdsec-ca-cert")
        .arg(ca.to_str().unwrap())
        .arg("--crowdsec-client-cert")
        .arg(client_cert.to_str().unwrap())
        .arg("--crowdsec-client-key")
        .arg(client_key.to_str().unwrap())
        .start()
        .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.80", "enforce.test").await, 403);
    let list = lapi.cscli(&["bouncers", "list"]);
    assert!(
        list.contains("nb-proxy-mtls@127.0.0.1"),
        "the LAPI names a TLS bouncer CN@IP: {list}"
    );
}

#[tokio::test]
async fn decision_filters_by_scenario_origin_and_type() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    // cscli records the reason as the scenario.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "127.0.0.90",
        "--reason",
        "nb-proxy self-inflicted loop",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "127.0.0.91",
        "--reason",
        "ssh brute force",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "127.0.0.92",
        "--type",
        "captcha",
        "--reason",
        "ssh probing",
    ]);
    let proxy = proxy_for(
        &services(&up),
        &lapi.url(),
        &[
            "--crowdsec-scenarios-not-containing",
            "NB-PROXY",
            "--crowdsec-types",
            "ban",
            "--crowdsec-origins",
            "cscli",
        ],
    )
    .await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(
        status_of(&proxy, "127.0.0.90", "enforce.test").await,
        200,
        "own scenario excluded"
    );
    assert_eq!(status_of(&proxy, "127.0.0.91", "enforce.test").await, 403);
    assert_eq!(
        status_of(&proxy, "127.0.0.92", "enforce.test").await,
        200,
        "captcha not enforced"
    );
    let other_origin =
        proxy_for(&services(&up), &lapi.url(), &["--crowdsec-origins", "CAPI"]).await;
    other_origin
        .wait_log_count("synced initial decisions (0)", 1)
        .await;
}

#[tokio::test]
async fn https_lapi_with_a_private_ca_and_a_wrong_one() {
    let up = Upstream::start("u").await;
    let pki = tempfile::tempdir().unwrap();
    let (cert, key, ca) = lapi_pki(pki.path(), "lapi");
    let (_, _, wrong_ca) = lapi_pki(pki.path(), "other");
    let lapi = Lapi::start_new(Some((cert, key, ca.clone())));
    lapi.add(&["--ip", "127.0.0.70"]);
    let yaml = services(&up);

    let good = proxy_for(
        &yaml,
        &lapi.url(),
        &["--crowdsec-ca-cert", ca.to_str().unwrap()],
    )
    .await;
    good.wait_log_count("synced initial decisions (1)", 1).await;
    assert_eq!(status_of(&good, "127.0.0.70", "enforce.test").await, 403);

    let wrong = proxy_for(
        &yaml,
        &lapi.url(),
        &["--crowdsec-ca-cert", wrong_ca.to_str().unwrap()],
    )
    .await;
    wrong.wait_log_count("certificate not trusted", 1).await;
    assert!(!wrong.stderr_text().contains("synced initial decisions"));
    assert_eq!(
        status_of(&wrong, "127.0.0.1", "enforce.test").await,
        403,
        "fails closed"
    );

    let none = proxy_for(&yaml, &lapi.url(), &[]).await;
    none.wait_log_count("certificate not trusted", 1).await;

    let insecure = proxy_for(&yaml, &lapi.url(), &["--crowdsec-insecure-skip-verify"]).await;
    insecure
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert!(insecure.stderr_text().contains("INSECURE"), "loudly logged");
}

#[tokio::test]
async fn unreachable_lapi_host_is_named_in_operator_words() {
    let up = Upstream::start("u").await;
    let proxy = proxy_for(&services(&up), "http://lapi.invalid:8080", &[]).await;
    proxy.wait_log_count("host not found", 1).await;
    let lapi = Lapi::start_new(None);
    let wrong_key = ProxyBuilder::new(&services(&up))
        .arg("--crowdsec-api-url")
        .arg(lapi.url())
        .arg("--crowdsec-api-key")
        .arg("not-the-key")
        .start()
        .await;
    wrong_key
        .wait_log_count("key rejected (the LAPI answered 403)", 1)
        .await;
    assert!(!wrong_key.stderr_text().contains("not-the-key"));
}

#[tokio::test]
async fn bypass_clients_skip_country_and_crowdsec_but_not_the_deny_list() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--range", "127.0.0.0/24"]);
    // Country lists without a GeoIP database deny everyone (geo_unavailable): except the
    // bypass list, which is not asked about countries at all.
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    restrictions:\n      cidr_deny: [127.0.0.99]\n      country_allow: [DE]\n      crowdsec_mode: enforce\n      bypass: [127.0.0.96/29]\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml).crowdsec(&lapi.url()).start().await;
    proxy
        .wait_log_count("synced initial decisions (1)", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.97", "web.test").await, 200);
    assert_eq!(status_of(&proxy, "127.0.0.99", "web.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.50", "web.test").await, 403);
    let e = proxy.wait_entries(3).await;
    assert_eq!(e[0]["deny_reason"], "");
    assert_eq!(e[0]["metadata"], serde_json::json!({"bypass": true}));
    assert_eq!(
        e[1]["deny_reason"], "ip_restricted",
        "the deny list applies inside the bypass"
    );
    assert!(e[1]["metadata"].get("bypass").is_none());
    assert_eq!(e[2]["deny_reason"], "geo_unavailable");
}

/// CrowdSec 1.4.6 has no usage-metrics endpoint: the 404 is said once at info and pushing
/// stops, while the bouncer goes on.
#[tokio::test]
async fn a_lapi_without_usage_metrics_is_said_once_and_no_longer_pushed_to() {
    let up = Upstream::start("u").await;
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.5"]);
    let proxy = ProxyBuilder::new(&services(&up))
        .metrics()
        .arg("--crowdsec-api-url")
        .arg(lapi.url())
        .arg("--crowdsec-api-key")
        .arg(KEY)
        .arg("--crowdsec-update-interval")
        .arg("300ms")
        .arg("--crowdsec-usage-metrics-interval")
        .arg("1s")
        .start()
        .await;
    let said = "has no usage-metrics endpoint (404; it needs CrowdSec 1.6.3 or later)";
    proxy.wait_log_count(said, 1).await;
    let series = "nb_proxy_crowdsec_lapi_calls_total{call=\"usage_metrics\",outcome=\"not_found\"}";
    assert_eq!(proxy.metric(series).await, 1.0);
    assert_eq!(status_of(&proxy, "127.0.0.5", "enforce.test").await, 403);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(proxy.metric(series).await, 1.0, "no push after the 404");
    let ok = "nb_proxy_crowdsec_lapi_calls_total{call=\"usage_metrics\",outcome=\"ok\"}";
    assert_eq!(proxy.metric(ok).await, 0.0);
    assert_eq!(
        proxy.stderr_text().matches(said).count(),
        1,
        "said once, at info"
    );
    assert!(proxy
        .stderr_text()
        .lines()
        .any(|l| l.contains(said) && l.contains("INFO")));
    assert_eq!(status_of(&proxy, "127.0.0.6", "enforce.test").await, 200);
}

/// `nb-proxy crowdsec check`, run as an operator would (the env file's variables).
fn crowdsec_check(lapi_url: &str, key: &str, extra: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(nb_e2e::binaries::binary("nb-proxy"))
        .args(["crowdsec", "check"])
        .args(extra)
        .env("NB_PROXY_CROWDSEC_API_URL", lapi_url)
        .env("NB_PROXY_CROWDSEC_API_KEY", key)
        .output()
        .expect("nb-proxy runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn crowdsec_check_identifies_the_bouncer_and_names_a_rejected_key() {
    let lapi = Lapi::start_new(None);
    let bouncer_type = |lapi: &Lapi| {
        let list: serde_json::Value =
            serde_json::from_str(&lapi.cscli(&["bouncers", "list", "-o", "json"])).unwrap();
        let b = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "nb-proxy-test")
            .cloned()
            .unwrap();
        (b["type"].clone(), b["version"].clone())
    };
    // Checked by something else first (curl, the LAPI's type until now).
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", &format!("X-Api-Key: {KEY}")])
        .arg(format!("{}/v1/decisions?ip=127.0.0.1", lapi.url()))
        .status()
        .unwrap();
    assert!(curl.success());
    assert_eq!(bouncer_type(&lapi).0, "curl");

    let (ok, out, err) = crowdsec_check(&lapi.url(), KEY, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("accepts the bouncer key"), "{out}");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        bouncer_type(&lapi),
        ("crowdsec-nb-proxy-bouncer".into(), version.as_str().into())
    );

    // With an address: the decisions covering it, as the LAPI holds them.
    lapi.add(&["--ip", "127.0.0.9", "--duration", "5m"]);
    lapi.add(&[
        "--range",
        "127.0.0.0/24",
        "--type",
        "captcha",
        "--duration",
        "1h",
    ]);
    let (ok, out, _) = crowdsec_check(&lapi.url(), KEY, &["--ip", "127.0.0.9"]);
    assert!(ok);
    assert!(
        out.contains("127.0.0.9: ban (Ip 127.0.0.9) from cscli"),
        "{out}"
    );
    assert!(
        out.contains("127.0.0.9: captcha (Range 127.0.0.0/24) from cscli"),
        "{out}"
    );
    assert!(out.contains("4m") && out.contains("59m"), "{out}");
    let (ok, out, _) = crowdsec_check(&lapi.url(), KEY, &["--ip", "10.1.2.3"]);
    assert!(ok);
    assert!(out.contains("10.1.2.3: no active decision"), "{out}");

    // A wrong key and an unreachable LAPI fail in the operator's words; no key is echoed.
    let wrong = "0123456789abcdef0123456789abcdef";
    let (ok, out, err) = crowdsec_check(&lapi.url(), wrong, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("key rejected (the LAPI answered 403)"),
        "{err}"
    );
    assert!(!err.contains(wrong) && !out.contains(wrong));
    let closed = format!("http://127.0.0.1:{}", reserve_port());
    let (ok, _, err) = crowdsec_check(&closed, KEY, &[]);
    assert!(!ok);
    assert!(err.contains("connection refused"), "{err}");
    assert!(!err.contains(KEY));
    // Nothing to check without a URL.
    let out = std::process::Command::new(nb_e2e::binaries::binary("nb-proxy"))
        .args(["crowdsec", "check"])
        .env_remove("NB_PROXY_CROWDSEC_API_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--crowdsec-api-url"));
}
