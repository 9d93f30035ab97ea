//! People over real HTTP, on SQLite and PostgreSQL: users and roles, sign-in sessions with
//! CSRF, locked sign-ins, personal tokens, the audit log, and the `user add` command.

mod common;

use std::time::Duration;

use nb_management::store::{ApiToken, Role};
use reqwest::Method;
use serde_json::{json, Value};

use common::{
    both, concrete, server, server_with, session_cookie, Person, Server, PASSWORD, PERSON_ROUTES,
};

async fn status_and_body(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn web(id: &str, host: &str) -> Value {
    json!({"id": id, "protocol": "http", "hosts": [host], "upstream": "http://127.0.0.1:8080"})
}

#[tokio::test]
async fn every_route_checks_the_role_with_tokens_and_sessions_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(
            backend,
            nb_management::api::Settings {
                auth_exempt_loopback: true,
                ..Default::default()
            },
        )
        .await;
        let people = [
            (Role::Viewer, s.add_user("vera", Role::Viewer).await),
            (Role::Operator, s.add_user("otto", Role::Operator).await),
            (Role::Admin, s.add_user("ada", Role::Admin).await),
        ];
        for &(m, template, needed) in PERSON_ROUTES {
            let path = concrete(template);
            let method: Method = m.parse().unwrap();
            for (role, p) in &people {
                let by_token = s.with_token(&p.token, method.clone(), &path);
                let by_session = s.as_session(p, method.clone(), &path);
                for (how, req) in [("token", by_token), ("session", by_session)] {
                    let (status, v) = status_and_body(req).await;
                    if *role < needed {
                        assert_eq!(status, 403, "{name}: {m} {path} as {role} by {how}: {v}");
                        assert!(
                            v["error"]
                                .as_str()
                                .unwrap()
                                .contains(&format!("needs the {needed} role")),
                            "{v}"
                        );
                    } else {
                        assert!(
                            status != 401 && status != 403,
                            "{name}: {m} {path} as {role} by {how}: {status} {v}"
                        );
                    }
                }
            }
            // The session cookie alone does not make a write: it needs the CSRF token.
            let otto = &people[1].1;
            let req = s
                .http
                .request(method.clone(), s.url(&path))
                .header("cookie", &otto.cookie);
            let (status, v) = status_and_body(req).await;
            if matches!(m, "GET" | "HEAD") {
                if needed <= Role::Operator {
                    assert!(status != 401 && status != 403, "{m} {path}: {status} {v}");
                }
            } else {
                assert_eq!(
                    status, 403,
                    "{name}: {m} {path} by cookie without CSRF: {v}"
                );
                assert!(v["error"].as_str().unwrap().contains("CSRF"), "{v}");
                let req = s
                    .http
                    .request(method.clone(), s.url(&path))
                    .header("cookie", &otto.cookie)
                    .header("x-csrf-token", "0".repeat(64));
                assert_eq!(status_and_body(req).await.0, 403, "wrong CSRF token");
            }
            // Without credentials, and with an unknown personal token.
            let req = s.http.request(method.clone(), s.url(&path));
            assert_eq!(status_and_body(req).await.0, 401, "{m} {path} anonymous");
            let req = s.with_token(&format!("nbu_{}", "0".repeat(64)), method.clone(), &path);
            assert_eq!(
                status_and_body(req).await.0,
                401,
                "{m} {path} unknown token"
            );
        }

        // An expired and a revoked token are refused on every route, saying why.
        let vera = s.store.user_by_name("vera").await.unwrap().unwrap();
        let expired = "nbu_expired0000000000000000000000000000000000000000000000000000000";
        let long_ago = nb_management::store::now_ms() - 86_400_000;
        s.store
            .create_api_token(
                &ApiToken {
                    id: "old".into(),
                    user_id: vera.id.clone(),
                    name: "old-ci".into(),
                    created_at: long_ago - 1000,
                    expires_at: long_ago,
                    revoked_at: None,
                },
                &nb_management::auth::hash_token(expired),
            )
            .await
            .unwrap();
        let admin = &people[2].1;
        let ada_tokens = status_and_body(s.with_token(&admin.token, Method::GET, "/api/v1/tokens"))
            .await
            .1;
        let ada_token_id = ada_tokens
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["user"] == "ada")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _) = status_and_body(s.with_token(
            &admin.token,
            Method::DELETE,
            &format!("/api/v1/tokens/{ada_token_id}"),
        ))
        .await;
        assert_eq!(status, 204);
        for &(m, template, _) in PERSON_ROUTES {
            let path = concrete(template);
            let method: Method = m.parse().unwrap();
            let (status, v) = status_and_body(s.with_token(expired, method.clone(), &path)).await;
            assert_eq!(status, 401, "{name}: {m} {path} with an expired token");
            assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
            let (status, v) = status_and_body(s.with_token(&admin.token, method, &path)).await;
            assert_eq!(status, 401, "{name}: {m} {path} with a revoked token");
            assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
        }
    }
}

#[tokio::test]
async fn sign_in_opens_a_session_whose_role_follows_the_user_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Default::default()).await;
        let otto = s.add_user("otto", Role::Operator).await;

        // The cookie is HttpOnly, SameSite=Strict, for the whole site; only its hash is kept.
        let res = s
            .sign_in(json!({"name": "otto", "password": PASSWORD}))
            .await;
        let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set.contains(attribute), "{set}");
        }
        let cookie = session_cookie(&res);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["user"], "otto");
        assert_eq!(v["role"], "operator");
        let secret = cookie.strip_prefix("nb_session=").unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM sessions")
            .fetch_all(s.store.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{name}");
        assert!(rows.iter().all(|r| !r.contains(secret)));

        let (status, v) =
            status_and_body(s.as_session(&otto, Method::GET, "/api/v1/session")).await;
        assert_eq!(status, 200);
        assert_eq!(v["csrf_token"], otto.csrf.as_str());
        let (status, v) = status_and_body(
            s.as_session(&otto, Method::POST, "/api/v1/services")
                .json(&web("demo", "demo.test")),
        )
        .await;
        assert_eq!(status, 201, "{name}: {v}");

        // A role change applies to the open session at once.
        let (status, _) = s
            .api
            .call(
                "PUT",
                "/api/v1/users/otto",
                Some(&json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, v) =
            status_and_body(s.as_session(&otto, Method::DELETE, "/api/v1/services/demo")).await;
        assert_eq!(status, 403, "{v}");
        assert!(v["error"].as_str().unwrap().contains("otto is a viewer"));

        // A new password ends the user's sessions; the old password no longer signs in.
        let (status, _) = s
            .api
            .call(
                "PUT",
                "/api/v1/users/otto",
                Some(&json!({"password": "a brand new passphrase"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, v) =
            status_and_body(s.as_session(&otto, Method::GET, "/api/v1/services")).await;
        assert_eq!(status, 401, "{v}");
        assert!(v["error"].as_str().unwrap().contains("sign in again"));
        let res = s
            .sign_in(json!({"name": "otto", "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 401);

        // Signing out clears the cookie and ends the session on the server too.
        let res = s
            .sign_in(json!({"name": "otto", "password": "a brand new passphrase"}))
            .await;
        assert_eq!(res.status(), 200);
        let cookie = session_cookie(&res);
        let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let again = Person {
            cookie,
            csrf,
            ..otto
        };
        let res = s
            .as_session(&again, Method::DELETE, "/api/v1/session")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert!(res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        let (status, _) =
            status_and_body(s.as_session(&again, Method::GET, "/api/v1/services")).await;
        assert_eq!(status, 401);

        // The bootstrap admin token signs in too, as an admin without a user.
        let res = s.sign_in(json!({"token": common::ADMIN})).await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["role"], "admin");
        assert!(v["user"].is_null());
        let res = s.sign_in(json!({"token": "nba_wrong"})).await;
        assert_eq!(res.status(), 401);
        let res = s
            .sign_in(json!({"name": "otto", "password": "x", "token": "y"}))
            .await;
        assert_eq!(res.status(), 400);
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_down_per_user_and_per_address() {
    let s = server().await;
    s.add_user("alice", Role::Operator).await;
    s.add_user("bob", Role::Viewer).await;
    for i in 0..5 {
        let res = s
            .sign_in(json!({"name": "alice", "password": format!("guess number {i}")}))
            .await;
        assert_eq!(res.status(), 401, "attempt {i}");
    }
    // The right password now waits, and so does another user from the same address.
    let res = s
        .sign_in(json!({"name": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("too many failed sign-ins"));
    let res = s
        .sign_in(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // One more failure doubles the wait.
    let res = s
        .sign_in(json!({"name": "alice", "password": "guess number 6"}))
        .await;
    assert_eq!(res.status(), 401);
    let res = s
        .sign_in(json!({"name": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "2");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = s
        .sign_in(json!({"name": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 200);
    // Every failure is in the audit log; a wait is not a failure.
    let (_, v) = s
        .api
        .call("GET", "/api/v1/audit?action=sign_in_failed", None)
        .await;
    let failed = v["entries"].as_array().unwrap();
    assert_eq!(failed.len(), 6, "{v}");
    assert!(failed
        .iter()
        .all(|e| e["actor"] == "alice" && e["source"] == "127.0.0.1"));
}

#[tokio::test]
async fn personal_tokens_are_listed_revoked_and_kept_to_their_owner_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Default::default()).await;
        let vera = s.add_user("vera", Role::Viewer).await;
        let otto = s.add_user("otto", Role::Operator).await;
        let res = s
            .as_session(&vera, Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "grafana", "expires_in_days": 7}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.unwrap();
        let secret = created["secret"].as_str().unwrap();
        assert!(secret.starts_with("nbu_") && secret.len() == 68);
        let id = created["token"]["id"].as_str().unwrap().to_owned();
        assert_eq!(created["token"]["state"], "active");
        let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
            .fetch_all(s.store.pool())
            .await
            .unwrap();
        assert!(hashes.iter().all(|h| !h.contains(&secret[4..])), "{name}");

        // A viewer's token reads but does not write.
        let (status, _) =
            status_and_body(s.with_token(secret, Method::GET, "/api/v1/services")).await;
        assert_eq!(status, 200);
        let (status, _) = status_and_body(
            s.with_token(secret, Method::POST, "/api/v1/services")
                .json(&web("x", "x.test")),
        )
        .await;
        assert_eq!(status, 403);

        // Each sees their own tokens; someone else's cannot be revoked, or even seen.
        let (_, mine) = status_and_body(s.with_token(secret, Method::GET, "/api/v1/tokens")).await;
        let names: Vec<&str> = mine
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{mine}");
        assert!(names.contains(&"grafana") && names.contains(&"tests"));
        let path = format!("/api/v1/tokens/{id}");
        let (status, _) = status_and_body(s.with_token(&otto.token, Method::DELETE, &path)).await;
        assert_eq!(status, 404, "{name}: otto cannot revoke vera's token");
        let (_, all) = s.api.call("GET", "/api/v1/tokens", None).await;
        assert_eq!(all.as_array().unwrap().len(), 3, "an admin sees everyone's");

        let (status, _) = status_and_body(s.with_token(secret, Method::DELETE, &path)).await;
        assert_eq!(status, 204);
        let (status, v) =
            status_and_body(s.with_token(secret, Method::GET, "/api/v1/services")).await;
        assert_eq!(status, 401);
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("the token \"grafana\" of vera was revoked"));
        let (_, mine) =
            status_and_body(s.with_token(&vera.token, Method::GET, "/api/v1/tokens")).await;
        let grafana = mine
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(grafana["state"], "revoked");
        assert!(grafana["revoked_at"].is_string());

        // Bad requests name each problem; the admin token has no tokens of its own.
        let (status, v) = status_and_body(
            s.with_token(&vera.token, Method::POST, "/api/v1/tokens")
                .json(&json!({"name": "", "expires_in_days": 0})),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
        let (status, v) = s
            .api
            .call("POST", "/api/v1/tokens", Some(&json!({"name": "x"})))
            .await;
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("user add"));
    }
}

#[tokio::test]
async fn users_are_validated_whole_and_deleting_one_ends_its_access_on_both_stores() {
    for backend in both().await {
        let s = server_with(backend, Default::default()).await;
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/users",
                Some(&json!({"name": "bad name!", "role": "boss", "password": "short"})),
            )
            .await;
        assert_eq!(status, 422, "{v}");
        let fields: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["name", "role", "password"], "{v}");
        // A field of the wrong type is reported beside the others.
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/users",
                Some(&json!({"name": "ok", "role": 3, "password": "short"})),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(
            s.store.count_users().await.unwrap(),
            0,
            "nothing was stored"
        );

        let ada = s.add_user("ada", Role::Admin).await;
        let otto = s.add_user("otto", Role::Operator).await;
        let (status, _) = s
            .api
            .call(
                "POST",
                "/api/v1/users",
                Some(&json!({"name": "otto", "role": "viewer", "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 409);
        let (status, v) =
            status_and_body(s.as_session(&ada, Method::DELETE, "/api/v1/users/ada")).await;
        assert_eq!(status, 409, "{v}");
        let (_, users) = s.api.call("GET", "/api/v1/users", None).await;
        let listed = users.to_string();
        assert!(!listed.contains("argon2") && !listed.contains("password"));
        let (status, _) =
            status_and_body(s.as_session(&ada, Method::DELETE, "/api/v1/users/otto")).await;
        assert_eq!(status, 204);
        for req in [
            s.as_session(&otto, Method::GET, "/api/v1/services"),
            s.with_token(&otto.token, Method::GET, "/api/v1/services"),
        ] {
            assert_eq!(status_and_body(req).await.0, 401);
        }
    }
}

#[tokio::test]
async fn the_audit_log_records_who_changed_what_from_where_on_both_stores() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Default::default()).await;
        let otto = s.add_user("otto", Role::Operator).await;
        let vera = s.add_user("vera", Role::Viewer).await;
        let mut demo = web("demo", "demo.test");
        let (status, _) = status_and_body(
            s.as_session(&otto, Method::POST, "/api/v1/services")
                .json(&demo),
        )
        .await;
        assert_eq!(status, 201);
        demo["restrictions"] = json!({"cidr_deny": ["192.0.2.0/24"]});
        let (status, _) = status_and_body(
            s.with_token(&otto.token, Method::PUT, "/api/v1/services/demo")
                .json(&demo),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) =
            status_and_body(s.with_token(&otto.token, Method::DELETE, "/api/v1/services/demo"))
                .await;
        assert_eq!(status, 204);
        let (status, created) = s
            .api
            .call("POST", "/api/v1/proxies", Some(&json!({"name": "edge-1"})))
            .await;
        assert_eq!(status, 201);

        let (status, v) = s.api.call("GET", "/api/v1/audit?kind=service", None).await;
        assert_eq!(status, 200);
        let entries = v["entries"].as_array().unwrap();
        let actions: Vec<&str> = entries
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            ["delete", "update", "create"],
            "{name}: newest first"
        );
        for e in entries {
            assert_eq!(e["actor"], "otto");
            assert_eq!(e["source"], "127.0.0.1");
            assert_eq!(e["object"], "demo");
        }
        let update = &entries[1];
        assert!(
            update["changed"]
                .as_array()
                .unwrap()
                .contains(&json!("restrictions.cidr_deny")),
            "{update}"
        );
        assert_eq!(update["before"]["restrictions"]["cidr_deny"], json!([]));
        assert_eq!(
            update["after"]["restrictions"]["cidr_deny"],
            json!(["192.0.2.0/24"])
        );
        assert!(entries[0]["after"].is_null() && entries[0]["before"]["id"] == "demo");

        // Filters and pages.
        let (_, v) = s
            .api
            .call("GET", "/api/v1/audit?actor=admin%20token&kind=proxy", None)
            .await;
        let proxy = &v["entries"][0];
        assert_eq!(proxy["action"], "create");
        assert_eq!(proxy["object"], created["proxy"]["id"]);
        let (_, page) = s.api.call("GET", "/api/v1/audit?limit=2", None).await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 2);
        let before = page["next_before"].as_i64().unwrap();
        let (_, next) = s
            .api
            .call(
                "GET",
                &format!("/api/v1/audit?limit=2&before={before}"),
                None,
            )
            .await;
        assert!(next["entries"][0]["id"].as_i64().unwrap() < before);
        let (status, _) = s
            .api
            .call("GET", "/api/v1/audit?since=yesterday", None)
            .await;
        assert_eq!(status, 400);

        // Users, tokens and sign-ins are there; no secret is.
        let (_, all) = s.api.call("GET", "/api/v1/audit?limit=1000", None).await;
        let kinds: std::collections::BTreeSet<String> = all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["action"].as_str().unwrap(),
                    e["kind"].as_str().unwrap()
                )
            })
            .collect();
        for wanted in [
            "create user",
            "create token",
            "sign_in session",
            "create proxy",
        ] {
            assert!(kinds.contains(wanted), "{name}: {wanted} in {kinds:?}");
        }
        let text = all.to_string();
        for secret in [
            PASSWORD,
            "$argon2",
            otto.token.as_str(),
            vera.token.as_str(),
            created["token"].as_str().unwrap(),
            otto.csrf.as_str(),
        ] {
            assert!(
                !text.contains(secret),
                "{name}: the audit log holds {secret}"
            );
        }

        // Only admins read it.
        let (status, _) =
            status_and_body(s.with_token(&otto.token, Method::GET, "/api/v1/audit")).await;
        assert_eq!(status, 403);
    }
}

#[tokio::test]
async fn the_first_user_is_created_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let bin = env!("CARGO_BIN_EXE_nb-management");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(bin)
            .args(args)
            .env("NB_MANAGEMENT_DATABASE_URL", &url)
            .env("NB_MANAGEMENT_DATA_DIR", dir.path())
            .env_remove("NB_MANAGEMENT_USER_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["user", "add", "root-admin"], "too short\n");
    assert!(!ok);
    assert!(out.contains("password: too short"), "{out}");
    let (ok, out) = run(&["user", "add", "ada", "--role", "boss"], "");
    assert!(!ok && out.contains("unknown role \"boss\""), "{out}");
    let (ok, out) = run(&["user", "add", "ada"], &format!("{PASSWORD}\n"));
    assert!(ok, "{out}");
    assert!(out.contains("created user ada (admin)"), "{out}");
    let (ok, out) = run(&["user", "add", "ada"], &format!("{PASSWORD}\n"));
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = run(&["user", "list"], "");
    assert!(ok && out.contains("ada\tadmin"), "{out}");

    // The server on that database lets ada in, and the audit log says who created her.
    let backend = common::Backend::at(url.clone());
    let s: Server = server_with(backend, Default::default()).await;
    let res = s
        .sign_in(json!({"name": "ada", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["role"], "admin");
    let (_, v) = s.api.call("GET", "/api/v1/audit?kind=user", None).await;
    let e = &v["entries"][0];
    assert_eq!(e["actor"], "command line");
    assert_eq!(e["source"], "local");
    assert_eq!(e["after"]["name"], "ada");
}
