//! The API over real HTTP: authentication, validation, CRUD, the CrowdSec rule, the proxy
//! stream, event ingestion and queries, and the OpenAPI document.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use nb_management::api::Settings;
use reqwest::Method;
use serde_json::{json, Value};

use common::{both, concrete, server, server_with, sqlite, Server, PERSON_ROUTES};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

fn problem_fields(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn web(id: &str, host: &str) -> Value {
    json!({"id": id, "protocol": "http", "hosts": [host], "upstream": "http://127.0.0.1:8080"})
}

const PROXY_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/proxy/stream"),
    ("PUT", "/api/v1/proxy/report"),
    ("POST", "/api/v1/proxy/events"),
];

#[tokio::test]
async fn every_route_refuses_missing_wrong_and_misplaced_credentials() {
    // Dozens of failures on purpose, from loopback: the failure limit is tested on its own.
    let settings = Settings {
        auth_exempt_loopback: true,
        ..Settings::default()
    };
    let s = server_with(sqlite().await, settings).await;
    let (proxy_id, proxy_token) = s.create_proxy("edge-1").await;
    let person_routes = PERSON_ROUTES.iter().map(|&(m, p, _)| (m, concrete(p)));
    let proxy_routes = PROXY_ROUTES.iter().map(|&(m, p)| (m, p.to_owned()));
    for (m, path) in person_routes.chain(proxy_routes) {
        let path = path.as_str();
        let m: Method = m.parse().unwrap();
        let res = s.http.request(m.clone(), s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{m} {path} without credentials");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert!(body(res).await["error"]
            .as_str()
            .unwrap()
            .contains("missing credentials"));

        assert_eq!(
            s.api.call_as("nba_wrong", m.as_str(), path, None).await.0,
            401,
            "{m} {path} with a wrong token"
        );
        let res = s
            .http
            .request(m.clone(), s.url(path))
            .header("authorization", "Basic YWRtaW46YWRtaW4=")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{m} {path} with basic auth");
    }
    for &(m, path, _) in PERSON_ROUTES {
        let path = &concrete(path);
        let (status, v) = s.api.call_as(&proxy_token, m, path, None).await;
        assert_eq!(status, 403, "{m} {path} with a proxy token");
        assert!(v["error"].as_str().unwrap().contains("proxy token"));
    }
    for &(m, path) in PROXY_ROUTES {
        assert_eq!(
            s.api.call(m, path, None).await.0,
            403,
            "{m} {path} with the admin token"
        );
    }

    // A revoked token is refused like a wrong one.
    let (status, _) = s
        .api
        .call("DELETE", &format!("/api/v1/proxies/{proxy_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .api
        .call_as(&proxy_token, "PUT", "/api/v1/proxy/report", None)
        .await;
    assert_eq!(status, 401);

    // Public: health and the API description only.
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.http
            .get(s.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn services_crud() {
    let s = server().await;
    let (status, created) = s
        .api
        .call(
            "POST",
            "/api/v1/services",
            Some(&json!({
                "id": "web", "name": "Web site", "protocol": "http", "hosts": ["web.example.com"],
                "upstream": "http://127.0.0.1:8080",
                "restrictions": {"cidr_allow": ["10.0.0.0/8", " 192.0.2.7 "], "country_deny": ["ru"]}
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Web site");
    assert_eq!(
        created["restrictions"]["cidr_allow"],
        json!(["10.0.0.0/8", "192.0.2.7"])
    );
    assert_eq!(created["restrictions"]["country_deny"], json!(["RU"]));
    assert_eq!(created["restrictions"]["crowdsec_mode"], "off");
    assert_eq!(created["rule_count"], 3);

    let (status, v) = s
        .api
        .call(
            "POST",
            "/api/v1/services",
            Some(&web("web", "other.example.com")),
        )
        .await;
    assert_eq!(status, 409, "{v}");

    let (status, v) = s
        .api
        .call(
            "POST",
            "/api/v1/services",
            Some(&json!({
                "id": "db", "protocol": "tcp", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5432"
            })),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let (_, list) = s.api.call("GET", "/api/v1/services", None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["db", "web"]);

    let (status, v) = s.api.call("PUT", "/api/v1/services/web", Some(&json!({
        "protocol": "http", "hosts": ["web.example.com", "www.example.com"], "upstream": "http://127.0.0.1:8081",
        "restrictions": {"cidr_deny": ["203.0.113.0/24"]}
    }))).await;
    assert_eq!(status, 200, "{v}");
    let (_, got) = s.api.call("GET", "/api/v1/services/web", None).await;
    assert_eq!(got["hosts"], json!(["web.example.com", "www.example.com"]));
    assert_eq!(got["upstream"], "http://127.0.0.1:8081");
    assert_eq!(got["restrictions"]["cidr_allow"], json!([]));
    assert_eq!(got["created_at"], created["created_at"]);

    // A fetched service, edited and sent back as it is (read-only fields included), is accepted.
    let mut edited = got.clone();
    edited["upstream"] = json!("http://127.0.0.1:8082");
    edited["rule_count"] = json!(99);
    edited["remediation"] = json!({"ban": {"status": 451}, "throttle": {"retry_after_secs": 30}});
    let (status, round_trip) = s
        .api
        .call("PUT", "/api/v1/services/web", Some(&edited))
        .await;
    assert_eq!(status, 200, "{round_trip}");
    assert_eq!(round_trip["upstream"], "http://127.0.0.1:8082");
    assert_eq!(round_trip["rule_count"], 1);
    assert_eq!(round_trip["created_at"], created["created_at"]);
    assert_eq!(
        round_trip["remediation"],
        json!({"ban": {"status": 451}, "throttle": {"retry_after_secs": 30}})
    );
    let (_, got) = s.api.call("GET", "/api/v1/services/web", None).await;
    assert_eq!(got["remediation"], round_trip["remediation"]);

    let (status, v) = s
        .api
        .call(
            "PUT",
            "/api/v1/services/web",
            Some(&web("renamed", "web.example.com")),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(problem_fields(&v), ["id"]);
    let (status, v) = s
        .api
        .call(
            "PUT",
            "/api/v1/services/ghost",
            Some(&web("ghost", "ghost.example.com")),
        )
        .await;
    assert_eq!(status, 404, "{v}");

    assert_eq!(
        s.api.call("DELETE", "/api/v1/services/web", None).await.0,
        204
    );
    assert_eq!(
        s.api.call("DELETE", "/api/v1/services/web", None).await.0,
        404
    );
    assert_eq!(s.api.call("GET", "/api/v1/services/web", None).await.0, 404);
}

#[tokio::test]
async fn validation_names_fields_and_changes_nothing() {
    let s = server().await;
    let (status, v) = s
        .api
        .call(
            "POST",
            "/api/v1/services",
            Some(&web("web", "web.example.com")),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .api
        .call(
            "POST",
            "/api/v1/services",
            Some(&json!({
                "id": "db", "protocol": "tcp", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5432"
            })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let before = s.store.revision().await.unwrap();

    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "restrictions": {"cidr_allow": ["10.0.0.1/8"], "cidr_deny": ["not-a-cidr"], "country_allow": ["XX"], "country_deny": ["DEU"]}}),
            vec![
                "restrictions.cidr_allow",
                "restrictions.cidr_deny",
                "restrictions.country_allow",
                "restrictions.country_deny",
            ],
            "did you mean 10.0.0.0/8",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "restrictions": {"crowdsec_mode": "block"}}),
            vec!["restrictions.crowdsec_mode"],
            "unknown variant `block`",
        ),
        (
            web("a", "WEB.example.com"),
            vec!["hosts"],
            "already served by service",
        ),
        (
            json!({"id": "db2", "protocol": "tcp", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5433"}),
            vec!["listen"],
            "already used by service",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": [], "upstream": "ftp://x"}),
            vec!["hosts", "upstream"],
            "at least one host",
        ),
        (
            json!({"id": "a", "protocol": "udp", "upstream": "x:1"}),
            vec!["protocol"],
            "unknown variant",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"]}),
            vec!["upstream"],
            "a service needs an upstream (or `upstreams` for several targets)",
        ),
        (
            json!({"id": "Not Valid", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1"}),
            vec!["id"],
            "lower-case",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1", "colour": "red"}),
            vec!["colour"],
            "unknown field",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "remediation": {"ban": {"status": 200, "redirect_url": "/blocked"}, "throttle": {"retry_after_secs": 0}}}),
            vec![
                "remediation.ban.status",
                "remediation.throttle.retry_after_secs",
                "remediation.ban.redirect_url",
            ],
            "is not an error status",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "restrictions": {"bypass": ["192.0.2.0/24", "office"]}}),
            vec!["restrictions.bypass"],
            "office\\\" is not a valid CIDR",
        ),
        (
            json!({"id": "db3", "protocol": "tcp", "listen": "127.0.0.1:15433", "upstream": "127.0.0.1:5432",
                   "remediation": {"throttle": {"retry_after_secs": 5}}}),
            vec!["remediation"],
            "applies to http services",
        ),
        // A field that does not parse no longer hides the others: every problem, one 422.
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "restrictions": {"cidr_allow": ["10.0.0.300/8"], "country_deny": ["Germany"], "crowdsec_mode": "maybe"}}),
            vec![
                "restrictions.crowdsec_mode",
                "restrictions.cidr_allow",
                "restrictions.country_deny",
            ],
            "unknown variant `maybe`",
        ),
        (
            json!({"id": "a", "protocol": "http", "hosts": ["a.example.com", 7], "upstream": "ftp://x",
                   "max_connections": -1, "colour": "red", "remediation": {"ban": {"status": "often"}}}),
            vec![
                "colour",
                "hosts[1]",
                "max_connections",
                "remediation.ban.status",
                "upstream",
            ],
            "expected a string",
        ),
        // A required field that does not parse stops there, with what came before it.
        (
            json!({"id": "a", "protocol": "udp", "upstream": "x:1", "restrictions": {"appsec_mode": "on"}}),
            vec!["protocol", "restrictions.appsec_mode"],
            "unknown variant `udp`",
        ),
        (
            json!({"protocol": "http", "hosts": ["a.example.com"], "upstream": "http://127.0.0.1:1",
                   "restrictions": {"crowdsec_mode": "maybe"}}),
            vec!["restrictions.crowdsec_mode", "id"],
            "is required",
        ),
    ];
    // A body built to be all problems gets a bounded answer: at most 50 of them.
    let hostile = json!({"id": "a", "protocol": "http", "upstream": "http://127.0.0.1:1",
                         "hosts": (0..2000).collect::<Vec<u32>>()});
    let (status, v) = s.api.call("POST", "/api/v1/services", Some(&hostile)).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 50, "{v}");
    for (i, (req, fields, needle)) in cases.into_iter().enumerate() {
        let (status, v) = s.api.call("POST", "/api/v1/services", Some(&req)).await;
        assert_eq!(status, 422, "case {i}");
        assert_eq!(problem_fields(&v), fields, "case {i}: {v}");
        assert!(v.to_string().contains(needle), "case {i}: {v}");
    }
    let res = s
        .admin(Method::POST, "/api/v1/services")
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // The same checks apply to updates.
    let (status, v) = s.api.call("PUT", "/api/v1/services/db", Some(&json!({
        "protocol": "tcp", "listen": "127.0.0.1:15432", "upstream": "127.0.0.1:5432", "restrictions": {"cidr_deny": ["::1/64"]}
    }))).await;
    assert_eq!(status, 422, "{v}");

    assert_eq!(
        s.store.revision().await.unwrap(),
        before,
        "refused changes leave no trace"
    );
    let (_, list) = s.api.call("GET", "/api/v1/services", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["restrictions"]["cidr_deny"], json!([]));
}

#[tokio::test]
async fn front_door_options_are_stored_shipped_and_checked_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Settings::default()).await;
        let pve = json!({
            "id": "pve", "protocol": "http", "hosts": ["pve.example.com"],
            "upstream": "https://10.0.0.5:8006",
            "upstream_tls": {"ca_file": "/etc/nb-proxy/pve-ca.pem", "server_name": "pve.lan"},
            "headers": {"request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
                        "response": {"add": {"Via": "nb"}}},
            "https_redirect": false,
            "hsts": {"max_age": 600, "include_subdomains": true},
            "send_proxy_protocol": true,
            "path_prefix": "/console"
        });
        let (status, created) = s.api.call("POST", "/api/v1/services", Some(&pve)).await;
        assert_eq!(status, 201, "{name} {created}");
        for key in [
            "upstream_tls",
            "headers",
            "https_redirect",
            "hsts",
            "send_proxy_protocol",
            "path_prefix",
        ] {
            assert_eq!(created[key], pve[key], "{key}: {created}");
        }
        assert_eq!(created["upstream_protocol"], "auto");
        let (_, fetched) = s.api.call("GET", "/api/v1/services/pve", None).await;
        assert_eq!(
            fetched["upstream_tls"], pve["upstream_tls"],
            "{name} {fetched}"
        );
        assert_eq!(fetched["headers"], pve["headers"]);

        // Proxies get them in the services they are sent.
        let (_, token) = s.create_proxy("edge").await;
        let first = first_services_event(&s, &token).await;
        let shipped = &first["services"][0];
        assert_eq!(shipped["upstream_tls"], pve["upstream_tls"], "{shipped}");
        assert_eq!(shipped["https_redirect"], false);
        assert_eq!(shipped["hsts"], pve["hsts"]);
        assert_eq!(shipped["send_proxy_protocol"], true);
        assert_eq!(shipped["path_prefix"], "/console");

        // Every problem in one 422, and nothing changes.
        let before = s.store.revision().await.unwrap();
        let bad = json!({
            "id": "grpc", "protocol": "http", "hosts": ["grpc.example.com"],
            "upstream": "https://10.0.0.6:50051", "upstream_protocol": "h2c",
            "upstream_tls": {"ca_file": "relative.pem", "skip_verify": true},
            "headers": {"request": {"set": {"Host": "evil"}}},
            "hsts": {"max_age": -1}
        });
        let (status, v) = s.api.call("POST", "/api/v1/services", Some(&bad)).await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(
            problem_fields(&v),
            [
                "hsts.max_age",
                "upstream_protocol",
                "upstream_tls.ca_file",
                "headers.request"
            ],
            "{v}"
        );
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/services",
                Some(
                    &json!({"id": "db", "protocol": "tcp", "listen": "127.0.0.1:15432",
                             "upstream": "127.0.0.1:5432", "hsts": {"max_age": 60}}),
                ),
            )
            .await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(problem_fields(&v), ["hsts"], "{v}");
        assert_eq!(s.store.revision().await.unwrap(), before);

        // Automatic certificates are accepted (nothing to read on the proxies); files and
        // wildcards with ACME are not.
        let acme = json!({"id": "shop", "protocol": "http", "hosts": ["shop.example.com"],
                          "upstream": "http://10.0.0.7:80", "tls": {"acme": true}});
        let (status, created) = s.api.call("POST", "/api/v1/services", Some(&acme)).await;
        assert_eq!(status, 201, "{name} {created}");
        assert_eq!(created["tls"], json!({"acme": true}));
        let first = first_services_event(&s, &token).await;
        let shipped: Vec<&serde_json::Value> = first["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|sv| sv["id"] == "shop")
            .collect();
        assert_eq!(shipped[0]["tls"], json!({"acme": true}), "{first}");
        let before = s.store.revision().await.unwrap();
        for (body, field) in [
            (
                json!({"id": "w", "protocol": "http", "hosts": ["*.example.com"],
                       "upstream": "http://10.0.0.7:80", "tls": {"acme": true}}),
                "tls.acme",
            ),
            (
                json!({"id": "f", "protocol": "http", "hosts": ["f.example.com"],
                       "upstream": "http://10.0.0.7:80",
                       "tls": {"cert_file": "/etc/f.crt", "key_file": "/etc/f.key"}}),
                "tls",
            ),
        ] {
            let (status, v) = s.api.call("POST", "/api/v1/services", Some(&body)).await;
            assert_eq!(status, 422, "{v}");
            assert!(
                problem_fields(&v).contains(&field.to_owned()),
                "{field}: {v}"
            );
        }
        assert_eq!(s.store.revision().await.unwrap(), before);

        // TCP services share a listen address by TLS server name; a name is routed once.
        let tcp = |id: &str, hosts: serde_json::Value| {
            json!({"id": id, "protocol": "tcp", "listen": "127.0.0.1:18443", "hosts": hosts,
                   "upstream": "10.0.0.8:443"})
        };
        for (id, hosts) in [("git", json!(["git.example.com"])), ("rest", json!([]))] {
            let (status, v) = s
                .api
                .call("POST", "/api/v1/services", Some(&tcp(id, hosts)))
                .await;
            assert_eq!(status, 201, "{name} {v}");
        }
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/services",
                Some(&tcp("git2", json!(["GIT.example.com"]))),
            )
            .await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(
            v["problems"][0]["message"],
            "TLS server name git.example.com on 127.0.0.1:18443 is already routed to service \"git\"",
            "{v}"
        );
        let (status, v) = s
            .api
            .call("POST", "/api/v1/services", Some(&tcp("rest2", json!([]))))
            .await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(problem_fields(&v), ["listen"], "{v}");
    }
}

#[tokio::test]
async fn several_targets_are_stored_shipped_checked_and_their_state_shown_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Settings::default()).await;
        let web = json!({
            "id": "web", "protocol": "http", "hosts": ["web.example.com"],
            "upstreams": ["http://10.0.0.1:8080", " http://10.0.0.2:8080 "],
            "load_balancing": "least_connections",
            "passive_health": {"max_failures": 5, "eject_secs": 60},
            "health_check": {"path": "/healthz", "interval_secs": 5}
        });
        let (status, created) = s.api.call("POST", "/api/v1/services", Some(&web)).await;
        assert_eq!(status, 201, "{name} {created}");
        assert_eq!(
            created["upstreams"],
            json!(["http://10.0.0.1:8080", "http://10.0.0.2:8080"]),
            "trimmed: {created}"
        );
        assert_eq!(created["load_balancing"], "least_connections");
        assert_eq!(created["passive_health"], web["passive_health"]);
        assert_eq!(
            created["health_check"],
            json!({"path": "/healthz", "interval_secs": 5, "timeout_secs": 2}),
            "defaults filled in: {created}"
        );
        let (_, fetched) = s.api.call("GET", "/api/v1/services/web", None).await;
        assert_eq!(
            fetched["upstreams"], created["upstreams"],
            "{name} {fetched}"
        );

        let (id, token) = s.create_proxy("edge").await;
        let first = first_services_event(&s, &token).await;
        let shipped = &first["services"][0];
        assert_eq!(shipped["upstreams"], created["upstreams"], "{shipped}");
        assert_eq!(shipped["health_check"], created["health_check"]);

        // What the proxy reports of its targets is shown with the proxy.
        s.report_with(
            &token,
            nb_api::ProxyReport {
                version: "0.1.0".into(),
                targets: vec![nb_api::TargetReport {
                    service: "web".into(),
                    target: "http://10.0.0.2:8080".into(),
                    healthy: false,
                    reason: Some("ejected".into()),
                    in_flight: 0,
                    requests: 12,
                    failures: 5,
                }],
                ..Default::default()
            },
        )
        .await;
        let (_, proxy) = s
            .api
            .call("GET", &format!("/api/v1/proxies/{id}"), None)
            .await;
        assert_eq!(
            proxy["targets"][0]["target"], "http://10.0.0.2:8080",
            "{proxy}"
        );
        assert_eq!(proxy["targets"][0]["healthy"], false);
        assert_eq!(proxy["targets"][0]["reason"], "ejected");

        // Every problem in one 422, and nothing changes.
        let before = s.store.revision().await.unwrap();
        let bad = json!({
            "id": "bad", "protocol": "http", "hosts": ["bad.example.com"],
            "upstreams": ["http://10.0.0.1:8080", "https://10.0.0.2:8443", "http://10.0.0.1:8080"],
            "passive_health": {"eject_secs": 0},
            "health_check": {"path": "healthz", "interval_secs": 2, "timeout_secs": 3}
        });
        let (status, v) = s.api.call("POST", "/api/v1/services", Some(&bad)).await;
        assert_eq!(status, 422, "{v}");
        let fields = problem_fields(&v);
        for field in [
            "upstreams",
            "passive_health.eject_secs",
            "health_check.timeout_secs",
            "health_check.path",
        ] {
            assert!(fields.iter().any(|f| f == field), "{field}: {v}");
        }
        assert!(v.to_string().contains("listed twice"), "{v}");
        let both = json!({
            "id": "both", "protocol": "tcp", "listen": "127.0.0.1:15433",
            "upstream": "127.0.0.1:5432", "upstreams": ["127.0.0.1:5433"],
            "health_check": {"path": "/"}
        });
        let (status, v) = s.api.call("POST", "/api/v1/services", Some(&both)).await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(
            problem_fields(&v),
            ["upstreams", "health_check.path"],
            "{v}"
        );
        assert_eq!(s.store.revision().await.unwrap(), before);

        // A report with too many targets is refused whole.
        let many = nb_api::ProxyReport {
            version: "0.1.0".into(),
            targets: vec![nb_api::TargetReport::default(); 20_001],
            ..Default::default()
        };
        let many = serde_json::to_value(many).unwrap();
        let (status, v) = s
            .api
            .call_as(&token, "PUT", nb_api::paths::REPORT, Some(&many))
            .await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(problem_fields(&v), ["targets"]);
        let (_, proxy) = s
            .api
            .call("GET", &format!("/api/v1/proxies/{id}"), None)
            .await;
        assert_eq!(proxy["targets"].as_array().unwrap().len(), 1, "{proxy}");
    }
}

/// The first `services` event a proxy's stream sends.
async fn first_services_event(s: &Server, token: &str) -> Value {
    let res = s
        .with_token(token, Method::GET, "/api/v1/proxy/stream")
        .send()
        .await
        .unwrap();
    services_events(res, 1).await.remove(0)
}

async fn set_mode(s: &Server, id: &str, mode: &str, create: bool) -> (u16, Value) {
    let mut v = web(id, &format!("{id}.example.com"));
    v["restrictions"] = json!({"crowdsec_mode": mode});
    if create {
        s.api.call("POST", "/api/v1/services", Some(&v)).await
    } else {
        s.api
            .call("PUT", &format!("/api/v1/services/{id}"), Some(&v))
            .await
    }
}

#[tokio::test]
async fn crowdsec_is_refused_unless_every_live_proxy_supports_it() {
    let settings = Settings {
        live_window: Duration::from_secs(2),
        stream_check_interval: Duration::from_millis(200),
        ..Settings::default()
    };
    let s = server_with(sqlite().await, settings).await;

    let (status, v) = set_mode(&s, "a", "enforce", true).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(problem_fields(&v), ["restrictions.crowdsec_mode"]);
    assert!(v.to_string().contains("no proxy is connected"), "{v}");
    let (_, caps) = s.api.call("GET", "/api/v1/capabilities", None).await;
    assert_eq!(caps["crowdsec"]["supported"], false);

    let (_, with) = s.create_proxy("with-lapi").await;
    let (_, without) = s.create_proxy("no-lapi").await;
    // A report alone does not make a proxy live: anyone holding a token can send one.
    s.report(&with, true).await;
    assert_eq!(
        set_mode(&s, "a", "enforce", true).await.0,
        422,
        "reported, but no stream open"
    );
    let with_stream = s.connect(&with, true).await;
    let without_stream = s.connect(&without, false).await;
    let (status, v) = set_mode(&s, "a", "observe", true).await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v.to_string()
            .contains("\\\"no-lapi\\\" has no CrowdSec LAPI"),
        "{v}"
    );

    // Once the proxy without a LAPI is gone (its stream closed), enforce is allowed.
    drop(without_stream);
    let caps = capabilities_when(&s, |c| c["crowdsec"]["live_proxies"] == 1).await;
    assert_eq!(
        caps["crowdsec"],
        json!({"supported": true, "live_proxies": 1, "live_proxies_with_crowdsec": 1})
    );
    assert_eq!(set_mode(&s, "a", "enforce", true).await.0, 201);

    // With no live proxy: other edits of that service still go through, a mode change does not.
    drop(with_stream);
    capabilities_when(&s, |c| c["crowdsec"]["live_proxies"] == 0).await;
    let mut edit = web("a", "a.example.com");
    edit["restrictions"] = json!({"crowdsec_mode": "enforce", "cidr_deny": ["192.0.2.0/24"]});
    let (status, v) = s.api.call("PUT", "/api/v1/services/a", Some(&edit)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(set_mode(&s, "a", "observe", false).await.0, 422);
    assert_eq!(set_mode(&s, "a", "off", false).await.0, 200);
}

#[tokio::test]
async fn appsec_modes_need_every_live_proxy_to_have_an_appsec_component() {
    let s = server().await;
    let (_, token) = s.create_proxy("edge").await;
    let _stream = s.connect(&token, true).await;
    let mut body = web("a", "a.example.com");
    body["restrictions"] = json!({"appsec_mode": "enforce"});
    let (status, v) = s.api.call("POST", "/api/v1/services", Some(&body)).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(problem_fields(&v), ["restrictions.appsec_mode"]);
    assert!(
        v.to_string().contains(
            "\\\"edge\\\" has no AppSec component configured; start it with --appsec-url"
        ),
        "{v}"
    );
    s.report_with(
        &token,
        nb_api::ProxyReport {
            version: "0.1.0".into(),
            supports_crowdsec: true,
            supports_appsec: true,
            ..Default::default()
        },
    )
    .await;
    let caps = capabilities_when(&s, |c| c["appsec"]["supported"] == true).await;
    assert_eq!(caps["appsec"]["live_proxies"], 1);
    let (status, v) = s.api.call("POST", "/api/v1/services", Some(&body)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["restrictions"]["appsec_mode"], "enforce");
    assert_eq!(v["rule_count"], 1);
}

/// The capabilities once `ready` holds (a closed stream is noticed within a check interval).
async fn capabilities_when(s: &Server, ready: impl Fn(&Value) -> bool) -> Value {
    let mut caps = Value::Null;
    for _ in 0..100 {
        caps = s.api.call("GET", "/api/v1/capabilities", None).await.1;
        if ready(&caps) {
            return caps;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("capabilities never got there: {caps}");
}

/// Reads server-sent events until `n` `services` events arrived.
async fn services_events(res: reqwest::Response, n: usize) -> Vec<Value> {
    let mut stream = res.bytes_stream();
    let mut parser = nb_api::SseParser::new(1 << 20);
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .unwrap();
        for e in parser.push(&chunk).unwrap() {
            assert_eq!(e.name, "services");
            out.push(serde_json::from_str(&e.data).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn proxies_get_the_services_then_every_change_and_revoked_streams_end() {
    let settings = Settings {
        stream_check_interval: Duration::from_millis(200),
        ..Settings::default()
    };
    let s = server_with(sqlite().await, settings).await;
    assert_eq!(
        s.api
            .call("POST", "/api/v1/services", Some(&web("a", "a.example.com")))
            .await
            .0,
        201
    );
    let (id, token) = s.create_proxy("edge").await;
    let res = s
        .with_token(&token, Method::GET, "/api/v1/proxy/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");

    let stream = tokio::spawn(services_events(res, 3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.api
            .call("POST", "/api/v1/services", Some(&web("b", "b.example.com")))
            .await
            .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.api.call("DELETE", "/api/v1/services/a", None).await.0,
        204
    );
    let events = stream.await.unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&events[0]), ["a"]);
    assert_eq!(ids(&events[1]), ["a", "b"]);
    assert_eq!(ids(&events[2]), ["b"]);
    assert!(events[0]["revision"].as_i64() < events[1]["revision"].as_i64());
    let live = || async {
        let (status, p) = s
            .api
            .call("GET", &format!("/api/v1/proxies/{id}"), None)
            .await;
        assert_eq!(status, 200, "{p}");
        p["live"] == true
    };
    // The stream above ended with its reader: the proxy is not live any more.
    let mut gone = false;
    for _ in 0..100 {
        if !live().await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a closed stream is not a live proxy");

    // An open stream makes it live.
    let res = s
        .with_token(&token, Method::GET, "/api/v1/proxy/stream")
        .send()
        .await
        .unwrap();
    let mut became_live = false;
    for _ in 0..20 {
        if live().await {
            became_live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(became_live);
    assert_eq!(
        s.api
            .call("DELETE", &format!("/api/v1/proxies/{id}"), None)
            .await
            .0,
        204
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), res.bytes()).await;
    assert!(rest.is_ok(), "the stream of a revoked proxy ends");
}

#[tokio::test]
async fn replicas_on_one_postgres_database_follow_each_other() {
    let pg = common::postgres().await;
    let second = pg.replica();
    let a = server_with(pg, Settings::default()).await;
    let b = server_with(second, Settings::default()).await;
    let (_, token) = a.create_proxy("edge").await;
    // The proxy is connected to replica B; the service is created on replica A.
    let res = b
        .with_token(&token, Method::GET, "/api/v1/proxy/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "B knows A's proxy token");
    let stream = tokio::spawn(services_events(res, 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.api
            .call("POST", "/api/v1/services", Some(&web("a", "a.example.com")))
            .await
            .0,
        201
    );
    let events = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("B relays A's change")
        .unwrap();
    assert_eq!(events[0]["services"], json!([]));
    assert_eq!(events[1]["services"][0]["id"], "a");
    // Validation sees the other replica's services too.
    let (status, v) = b
        .api
        .call("POST", "/api/v1/services", Some(&web("b", "a.example.com")))
        .await;
    assert_eq!(status, 422, "{v}");
}

const LINE: &str = r#"{"ts":"2026-11-22T10:00:00.123Z","service_id":"web","protocol":"http","source_ip":"203.0.113.7","host":"web.example.com","method":"GET","path":"/","status":200,"duration_ms":0.41,"bytes_in":0,"bytes_out":9,"deny_reason":"","metadata":{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"observe"}}"#;

#[tokio::test]
async fn events_are_ingested_whole_and_queried_with_filters() {
    let s = server().await;
    let (_, token) = s.create_proxy("edge").await;
    let mut lines = String::new();
    for i in 0..120 {
        let line = LINE
            .replace(
                "10:00:00.123",
                &format!("10:{:02}:{:02}.000", i / 60, i % 60),
            )
            .replace("203.0.113.7", &format!("203.0.113.{}", i % 3));
        let line = if i % 4 == 0 {
            line.replace(r#""deny_reason":"""#, r#""deny_reason":"ip_restricted""#)
                .replace(
                    r#","metadata":{"crowdsec_verdict":"crowdsec_ban","crowdsec_mode":"observe"}"#,
                    r#","metadata":{}"#,
                )
        } else {
            line
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    let post = |b: String| {
        s.with_token(&token, Method::POST, "/api/v1/proxy/events")
            .body(b)
            .send()
    };
    let res = post(lines.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await["accepted"], 120);

    let bad = format!(
        "{LINE}\n{}\n",
        LINE.replace("\"http\"", "\"carrier-pigeon\"")
    );
    let res = post(bad).await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(body(res).await["error"]
        .as_str()
        .unwrap()
        .starts_with("line 2:"));
    assert_eq!(
        s.store.count_events().await.unwrap(),
        120,
        "a refused batch stores nothing"
    );

    let api = &s.api;
    let q = |query: &str| {
        let path = format!("/api/v1/events?{query}");
        async move { api.call("GET", &path, None).await }
    };
    let (_, v) = q("verdict=ip_restricted&limit=1000").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 30);
    assert!(v["next_cursor"].is_null());
    let e = &v["events"][0];
    assert_eq!(e["ts"], "2026-11-22T10:01:56.000Z", "newest first");
    assert_eq!(
        (e["deny_reason"].as_str(), e["status"].as_i64()),
        (Some("ip_restricted"), Some(200))
    );

    let (_, v) = q("observe=true&source_ip=203.0.113.1&limit=1000").await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 30);
    assert!(events
        .iter()
        .all(|e| e["metadata"]["crowdsec_verdict"] == "crowdsec_ban" && e["deny_reason"] == ""));

    let (_, v) = q("verdict=allow&since=2026-11-22T10:01:00Z&until=2026-11-22T10:01:10Z").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 7);

    // Pages of 50 cover everything once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, v) = q(&format!("limit=50&cursor={cursor}")).await;
        seen.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["ts"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));

    for bad in [
        "verdict=blocked",
        "source_ip=nope",
        "since=yesterday",
        "limit=0",
        "cursor=zz",
        "crowdsec_mode=off",
    ] {
        assert_eq!(q(bad).await.0, 400, "{bad}");
    }
}

/// Reads a whole export; its content type and file name.
async fn export(s: &Server, query: &str) -> (u16, String, String, String) {
    let res = s
        .admin(Method::GET, &format!("/api/v1/events/export?{query}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let header = |h: &str| {
        res.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (kind, disposition) = (header("content-type"), header("content-disposition"));
    (status, kind, disposition, res.text().await.unwrap())
}

#[tokio::test]
async fn events_export_as_csv_and_json_lines_across_pages_on_both_stores() {
    for backend in both().await {
        let s = server_with(backend, Settings::default()).await;
        let (_, token) = s.create_proxy("edge").await;
        // 2,500 events: more than two of the export's pages. Every tenth is denied; one has a
        // hostile path a spreadsheet would run as a formula.
        for batch in 0..5 {
            let mut lines = String::new();
            for j in 0..500 {
                let i = batch * 500 + j;
                let ts = format!("10:{:02}:{:02}.{:03}", i / 3600 % 60, i / 60 % 60, i % 60);
                let mut line = LINE.replace("10:00:00.123", &ts);
                if i % 10 == 0 {
                    line = line.replace(r#""deny_reason":"""#, r#""deny_reason":"ip_restricted""#);
                }
                if i == 7 {
                    line = line.replace(
                        r#""path":"/""#,
                        r#""path":"=HYPERLINK(\"http://x\",\"a,b\")""#,
                    );
                }
                lines.push_str(&line);
                lines.push('\n');
            }
            let res = s
                .with_token(&token, Method::POST, "/api/v1/proxy/events")
                .body(lines)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }

        let (status, kind, disposition, csv) = export(&s, "format=csv").await;
        assert_eq!(status, 200, "{csv}");
        assert_eq!(kind, "text/csv; charset=utf-8");
        assert_eq!(disposition, "attachment; filename=\"events.csv\"");
        let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
        assert_eq!(rows.len(), 2501, "a header and every event once");
        assert!(rows[0]
            .starts_with("id,ts,proxy_id,service_id,protocol,source_ip,host,method,path,status"));
        assert!(
            rows[1].contains(",2026-11-22T10:00:41.039Z,"),
            "newest first: {}",
            rows[1]
        );
        let hostile: Vec<&&str> = rows.iter().filter(|r| r.contains("HYPERLINK")).collect();
        assert_eq!(hostile.len(), 1);
        assert!(
            hostile[0].contains(r#","'=HYPERLINK(""http://x"",""a,b"")","#),
            "quoted, and text rather than a formula: {}",
            hostile[0]
        );
        let ids: std::collections::HashSet<&str> = rows[1..]
            .iter()
            .map(|r| r.split(',').next().unwrap())
            .collect();
        assert_eq!(ids.len(), 2500, "no event twice across pages");

        // The event filters apply; JSON lines are the events as the query shows them.
        let (status, kind, _, jsonl) = export(&s, "format=jsonl&verdict=ip_restricted").await;
        assert_eq!((status, kind.as_str()), (200, "application/x-ndjson"));
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 250);
        assert!(lines.iter().all(|e| e["deny_reason"] == "ip_restricted"));
        let (_, page) = s
            .api
            .call(
                "GET",
                "/api/v1/events?verdict=ip_restricted&limit=1000",
                None,
            )
            .await;
        assert_eq!(&lines[..250], page["events"].as_array().unwrap().as_slice());

        for bad in [
            "format=xml",
            "",
            "format=csv&limit=5",
            "format=csv&verdict=nope",
        ] {
            assert_eq!(export(&s, bad).await.0, 400, "{bad}");
        }
    }
}

#[tokio::test]
async fn the_dashboard_is_served_beside_the_api() {
    let s = server().await;
    let res = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("<script>"),
        "no inline script for the policy to forbid"
    );
    // scripts/test.sh builds the dashboard before nb-management, which embeds it.
    if let Some(asset) = html
        .split("src=\"/")
        .nth(1)
        .and_then(|r| r.split('"').next())
    {
        let res = s
            .http
            .get(s.url(&format!("/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        // The icon the page names is served, as an image.
        assert!(html.contains(r#"<link rel="icon" type="image/svg+xml" href="/favicon.svg" />"#));
        let res = s.http.get(s.url("/favicon.svg")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/svg+xml");
        assert!(res.text().await.unwrap().starts_with("<svg"));
    } else {
        assert!(html.contains("The dashboard is not built"), "{html}");
    }
    // Unknown API paths stay JSON errors; they never fall through to the UI.
    let res = s.admin(Method::GET, "/api/v1/nope").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()["x-content-type-options"],
        "nosniff",
        "API answers too"
    );
    assert!(body(res).await["error"].is_string());
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let s = server().await;
    let doc = body(s.http.get(s.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let person_routes = PERSON_ROUTES.iter().map(|&(m, p, _)| (m, p));
    for (m, path) in person_routes.chain(PROXY_ROUTES.iter().copied()) {
        let op = &doc["paths"][&path][m.to_ascii_lowercase()];
        assert!(op.is_object(), "{m} {path} is documented");
        assert!(
            op["security"].is_array(),
            "{m} {path} declares its credentials"
        );
    }
    assert!(doc["components"]["schemas"]["ServiceBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin"].is_object());
    assert!(doc["components"]["securitySchemes"]["session"].is_object());
}

#[tokio::test]
async fn hostile_event_batches_are_bounded() {
    let s = server().await;
    let (id, token) = s.create_proxy("edge").await;
    let post = |b: String| {
        s.with_token(&token, Method::POST, "/api/v1/proxy/events")
            .body(b)
            .send()
    };
    let with_meta = |value: &str| {
        LINE.replace(
            r#""crowdsec_mode":"observe"}"#,
            &format!(r#""crowdsec_mode":"observe","x":"{value}"}}"#),
        )
    };
    // The issue's attack: one-line batches with a 15 MB metadata value.
    let huge = with_meta(&"m".repeat(15_000_000));
    for _ in 0..3 {
        let res = post(huge.clone()).await.unwrap();
        assert_eq!(res.status(), 413);
        assert!(body(res).await["error"]
            .as_str()
            .unwrap()
            .contains("too large"));
    }
    // Under the body limit, an oversized line is refused on its own and counted.
    let big = with_meta(&"m".repeat(7_000_000));
    let far_future = LINE.replace("2026-11-22T10:00:00.123Z", "9999-12-31T23:59:59.000Z");
    let res = post(format!("{LINE}\n{big}\n{far_future}\n"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v = body(res).await;
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["rejected"], json!({"line_too_long": 1}));
    assert_eq!(s.store.count_events().await.unwrap(), 2);
    let (_, p) = s
        .api
        .call("GET", &format!("/api/v1/proxies/{id}"), None)
        .await;
    assert_eq!(p["events_rejected"], 1);
    // The event from the future is stored at most a few minutes ahead.
    let (_, v) = s.api.call("GET", "/api/v1/events?limit=1", None).await;
    let newest = humantime::parse_rfc3339(v["events"][0]["ts"].as_str().unwrap()).unwrap();
    assert!(
        newest < std::time::SystemTime::now() + Duration::from_secs(301),
        "{v}"
    );

    // Pages are bounded in bytes too: 800 events of 14 KiB each do not come back in one piece.
    let fat = LINE.replace(
        r#""crowdsec_mode":"observe"}"#,
        &format!(
            r#""crowdsec_mode":"observe",{}}}"#,
            (0..14)
                .map(|k| format!(r#""k{k}":"{}""#, "v".repeat(1000)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    for _ in 0..2 {
        let batch: String = (0..400).map(|_| format!("{fat}\n")).collect();
        let res = post(batch).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(body(res).await["accepted"], 400);
    }
    let res = s
        .admin(Method::GET, "/api/v1/events?limit=1000")
        .send()
        .await
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    assert!(
        bytes.len() <= 4 * 1024 * 1024 + 64 * 1024,
        "{} bytes",
        bytes.len()
    );
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let first = v["events"].as_array().unwrap().len();
    assert!(first < 802, "{first}");
    let cursor = v["next_cursor"].as_str().expect("more to come").to_owned();
    let (_, v) = s
        .api
        .call(
            "GET",
            &format!("/api/v1/events?limit=1000&cursor={cursor}"),
            None,
        )
        .await;
    let second = v["events"].as_array().unwrap().len();
    assert!(first + second <= 802 && second > 0);

    // An oversized JSON body elsewhere is a 413 too, not a 400.
    let res = s
        .admin(Method::POST, "/api/v1/services")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"id":"x","name":"{}"}}"#,
            "n".repeat(3_000_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn failed_authentications_are_limited_per_source() {
    let s = server().await;
    let (_, proxy_token) = s.create_proxy("edge").await;
    // A burst of wrong tokens, as a guesser sends them.
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..200 {
        let (token, path) = if i % 2 == 0 {
            ("nba_guess", "/api/v1/services")
        } else {
            ("nbp_guess", nb_api::paths::REPORT)
        };
        let m = if i % 2 == 0 { Method::GET } else { Method::PUT };
        let res = s.with_token(token, m, path).send().await.unwrap();
        if res.status() == 429 {
            assert_eq!(res.headers()["retry-after"], "1");
        }
        statuses.push(res.status().as_u16());
    }
    // Ten answers per one-second window the burst touched, however long it took here.
    let windows = started.elapsed().as_secs() as usize + 1;
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, 200, "{statuses:?}");
    assert_eq!(&statuses[..10], &[401; 10], "the first ten are answered");
    assert!(
        refused <= 10 * windows,
        "{refused} answered in {windows} windows of a second"
    );
    assert!(limited >= 200 - 10 * windows, "{limited} limited");
    // The limit is per second: the right token works again right after.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, v) = s.api.call("GET", "/api/v1/services", None).await;
    assert_eq!(status, 200, "{v}");
    let report = serde_json::to_value(nb_api::ProxyReport::default()).unwrap();
    let (status, v) = s
        .api
        .call_as(&proxy_token, "PUT", nb_api::paths::REPORT, Some(&report))
        .await;
    assert_eq!(status, 204, "{v}");
}

#[tokio::test]
async fn proxy_reports_are_bounded() {
    let s = server().await;
    let (id, token) = s.create_proxy("edge").await;
    let report = |r: nb_api::ProxyReport| {
        let r = serde_json::to_value(r).unwrap();
        let (api, token) = (&s.api, &token);
        async move {
            api.call_as(token, "PUT", nb_api::paths::REPORT, Some(&r))
                .await
        }
    };
    let (status, v) = report(nb_api::ProxyReport {
        version: "0.1.0".into(),
        config_error: Some("e".repeat(10_000)),
        bouncer: Some(nb_api::BouncerReport {
            last_error: Some("x".repeat(5_000)),
            ..Default::default()
        }),
        targets: vec![
            nb_api::TargetReport {
                target: "t".repeat(600),
                reason: Some("r".repeat(100)),
                ..Default::default()
            };
            2
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(
        problem_fields(&v),
        [
            "config_error",
            "bouncer.last_error",
            "targets.target",
            "targets.reason"
        ],
        "one problem per field: {v}"
    );
    // Nothing of it was stored.
    let (status, p) = s
        .api
        .call("GET", &format!("/api/v1/proxies/{id}"), None)
        .await;
    assert_eq!(status, 200, "{p}");
    assert!(p["config_error"].is_null(), "{p}");
    let (status, v) = report(nb_api::ProxyReport {
        version: "0.1.0".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(status, 204, "{v}");
}

#[test]
fn the_dashboards_types_come_from_the_current_openapi_document() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed.trim_end() == nb_management::api::openapi_json(),
        "dashboard/openapi.json is not the API's document any more: regenerate it with \
         `cargo run -p nb-management -- --openapi > dashboard/openapi.json` (the dashboard's \
         TypeScript types are generated from it)"
    );
    // One operation id per route: the TypeScript operations are named by them.
    let doc: Value = serde_json::from_str(&committed).unwrap();
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate operation ids: {ids:?}");
    // Every route the tests list, and signing in and out (which need no credentials / end them).
    assert_eq!(n, PERSON_ROUTES.len() + PROXY_ROUTES.len() + 2);
}

/// CORS only for the origins the operator named: a page elsewhere gets no CORS headers, so
/// the browser keeps it from reading the API.
#[tokio::test]
async fn cors_only_for_the_configured_origins() {
    let preflight = |s: &Server, origin: &str| {
        s.http
            .request(Method::OPTIONS, s.url("/api/v1/services"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = |res: &reqwest::Response| {
        res.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let closed = server().await;
    let res = preflight(&closed, "https://tools.example.com")
        .await
        .unwrap();
    assert_eq!(allowed(&res), None, "no CORS unless configured");
    let res = closed
        .admin(Method::GET, "/api/v1/services")
        .header("origin", "https://tools.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed(&res), None);

    let open = server_with(
        sqlite().await,
        Settings {
            cors_origins: vec!["https://tools.example.com".into()],
            ..Settings::default()
        },
    )
    .await;
    let res = preflight(&open, "https://tools.example.com").await.unwrap();
    assert_eq!(allowed(&res).as_deref(), Some("https://tools.example.com"));
    let methods = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("PUT"), "{methods}");
    let res = preflight(&open, "https://evil.example.com").await.unwrap();
    assert_eq!(allowed(&res), None, "another origin");
    let res = open
        .admin(Method::GET, "/api/v1/services")
        .header("origin", "https://tools.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(allowed(&res).as_deref(), Some("https://tools.example.com"));
    // The security headers are on CORS answers too.
    assert!(res.headers().contains_key("content-security-policy"));
}

/// The overview's figures over the API on both stores, from batches shipped as proxies ship
/// them: the timeline by verdict, the top denied sources and countries, and what enforce would
/// change for the services in observe mode.
#[tokio::test]
async fn overview_figures_follow_shipped_events_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Settings::default()).await;
        let (_, token) = s.create_proxy("edge").await;
        for (id, mode) in [("web", "observe"), ("api", "off")] {
            let mut v = web(id, &format!("{id}.test"));
            v["restrictions"] = json!({ "crowdsec_mode": mode });
            if mode == "observe" {
                // The cluster rule: a live proxy with a LAPI.
                let _live = s.connect(&token, true).await;
                let (status, v) = s.api.call("POST", "/api/v1/services", Some(&v)).await;
                assert_eq!(status, 201, "{name}: {v}");
            } else {
                s.api.call("POST", "/api/v1/services", Some(&v)).await;
            }
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let line = |service: &str, source: &str, deny: &str, country: Option<&str>, flag: &str| {
            let mut v: Value = serde_json::from_str(LINE).unwrap();
            v["ts"] = json!(now);
            v["service_id"] = json!(service);
            v["source_ip"] = json!(source);
            v["deny_reason"] = json!(deny);
            if let Some(c) = country {
                v["country"] = json!(c);
            }
            v["metadata"] = if flag.is_empty() {
                json!({})
            } else {
                json!({"crowdsec_verdict": flag, "crowdsec_mode": "observe"})
            };
            v.to_string()
        };
        let batch = [
            line("web", "192.0.2.1", "", None, ""),
            line("web", "192.0.2.2", "", None, "crowdsec_ban"),
            line("web", "192.0.2.2", "", None, "crowdsec_ban"),
            line("web", "192.0.2.3", "", None, "crowdsec_captcha"),
            line("api", "198.51.100.9", "ip_restricted", Some("NL"), ""),
            line("api", "198.51.100.9", "ip_restricted", Some("NL"), ""),
            line("api", "198.51.100.8", "country_restricted", Some("RU"), ""),
        ]
        .join("\n");
        let res = s
            .with_token(&token, Method::POST, "/api/v1/proxy/events")
            .body(batch)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}");

        let (status, t) = s
            .api
            .call("GET", "/api/v1/stats/timeline?range=1h", None)
            .await;
        assert_eq!(status, 200, "{name}: {t}");
        assert_eq!(t["resolution_secs"], 60);
        assert_eq!(t["buckets"].as_array().unwrap().len(), 60);
        let total = |verdict: &str| -> i64 {
            t["series"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["verdict"] == verdict)
                .map_or(0, |s| s["total"].as_i64().unwrap())
        };
        assert_eq!(
            (
                total("allow"),
                total("ip_restricted"),
                total("country_restricted")
            ),
            (4, 2, 1),
            "{name}: {t}"
        );
        assert_eq!(t["series"][0]["verdict"], "allow", "allow first");
        let observed: i64 = t["observed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(observed, 3);
        let (_, t) = s
            .api
            .call("GET", "/api/v1/stats/timeline?range=7d&service=web", None)
            .await;
        assert_eq!(
            (
                t["resolution_secs"].as_i64(),
                t["series"].as_array().unwrap().len()
            ),
            (Some(3600), 1)
        );

        let (_, top) = s.api.call("GET", "/api/v1/stats/top?range=24h", None).await;
        assert_eq!(
            top["sources"][0],
            json!({"source_ip": "198.51.100.9", "country": "NL", "requests": 2}),
            "{name}: {top}"
        );
        assert_eq!(top["countries"].as_array().unwrap().len(), 2);
        assert_eq!(top["countries"][0], json!({"country": "NL", "requests": 2}));
        let (_, top) = s
            .api
            .call("GET", "/api/v1/stats/top?range=7d&service=web", None)
            .await;
        assert!(
            top["sources"].as_array().unwrap().is_empty(),
            "web denied nothing: {top}"
        );

        let (_, preview) = s
            .api
            .call("GET", "/api/v1/stats/enforce-preview", None)
            .await;
        assert_eq!(
            preview,
            json!([{"service_id": "web", "name": "web", "requests": 3, "addresses": 2,
                    "since": preview[0]["since"]}]),
            "{name}"
        );

        let (status, v) = s.api.call("GET", "/api/v1/stats/top?range=1y", None).await;
        assert_eq!(status, 400);
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("\"1y\" is not one of 1h, 24h, 7d"));
        let (status, _) = s.api.call("GET", "/api/v1/stats/top?limit=0", None).await;
        assert_eq!(status, 400);
    }
}
