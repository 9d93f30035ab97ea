//! Managed mode end to end: the real `nb-management` and `nb-proxy` binaries, a real CrowdSec
//! LAPI, real sockets on loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::admin_api::AdminApi;
use crate::harness::*;
use crate::lapi::{Lapi, KEY};

const ADMIN: &str = "e2e-admin-token-0123456789abcdef";

fn management_binary() -> PathBuf {
    nb_e2e::binaries::binary("nb-management")
}

struct Management {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    api: AdminApi,
}

impl Management {
    async fn start_new() -> Self {
        let port = reserve_port();
        let mut m = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port,
            api: AdminApi::new(format!("http://127.0.0.1:{port}"), ADMIN.into()),
        };
        m.start().await;
        m
    }

    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("management.log"))
            .unwrap();
        let mut cmd = Command::new(management_binary());
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--admin-token", ADMIN, "--proxy-live-window", "5s"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, _) in std::env::vars() {
            if k.starts_with("NB_MANAGEMENT_") {
                cmd.env_remove(k);
            }
        }
        // The port stays across restarts (proxies reconnect to it); the ready file says when.
        let ready = self.dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        cmd.arg("--ready-file").arg(&ready);
        let mut child = cmd.spawn().expect("nb-management starts");
        let ready = nb_e2e::binaries::wait_ready(&mut child, &ready, || self.log()).await;
        assert_eq!(ready["listen"], format!("127.0.0.1:{}", self.port));
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill only sends a signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("management.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api.call(method, path, body.as_ref()).await
    }

    async fn wait_event(&self, query: &str) -> Value {
        let found = self.api.first_event(query).await;
        found.unwrap_or_else(|| panic!("no event for {query}:\n{}", self.log()))
    }
}

impl Drop for Management {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_status(proxy: &Proxy, source: &str, want: u16) {
    for _ in 0..200 {
        if status_of(proxy, source, "web.test").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{source} never got {want}:\n{}", proxy.stderr_text());
}

fn service(upstream: &str, cidr_deny: &[&str], crowdsec_mode: &str) -> Value {
    json!({
        "id": "web", "name": "Web", "protocol": "http", "hosts": ["web.test"], "upstream": upstream,
        "restrictions": {"cidr_deny": cidr_deny, "crowdsec_mode": crowdsec_mode}
    })
}

/// A second nb-management on a taken address exits at once, naming the one that holds it.
#[tokio::test]
async fn a_taken_listen_address_names_the_process_that_holds_it() {
    let first = Management::start_new().await;
    let holder = first.child.as_ref().unwrap().id();
    let other = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(management_binary());
    cmd.args(["--listen", &format!("127.0.0.1:{}", first.port)])
        .arg("--data-dir")
        .arg(other.path())
        .args(["--admin-token", ADMIN]);
    for (k, _) in std::env::vars() {
        if k.starts_with("NB_MANAGEMENT_") {
            cmd.env_remove(k);
        }
    }
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .expect("the second nb-management exits")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{}: Address already in use (os error 98); held by nb-management (pid {holder})",
            first.port
        )),
        "{err}"
    );
}

#[tokio::test]
async fn services_from_management_events_back_and_serving_through_outages() {
    let lapi = Lapi::start_new(None);
    lapi.add(&["--ip", "127.0.0.5"]);
    let up = Upstream::start("web").await;
    let mut management = Management::start_new().await;
    let (status, created) = management
        .call("POST", "/api/v1/proxies", Some(json!({"name": "edge-1"})))
        .await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap().to_owned();
    let proxy_id = created["proxy"]["id"].as_str().unwrap().to_owned();

    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("services.json");
    let port = reserve_port();
    let management_url = management.url("");
    let managed = || {
        ProxyBuilder::managed(&management_url, &token, &cache)
            .http_port(port)
            .arg("--crowdsec-api-url")
            .arg(lapi.url())
            .arg("--crowdsec-api-key")
            .arg(KEY)
            .arg("--crowdsec-update-interval")
            .arg("1s")
    };
    let proxy = managed().start().await;

    // The proxy reports that it supports CrowdSec, so enforce is accepted.
    let mut accepted = 0;
    for _ in 0..100 {
        let (status, _) = management
            .call(
                "POST",
                "/api/v1/services",
                Some(service(&up.url(), &["127.0.0.3"], "enforce")),
            )
            .await;
        if status == 201 {
            accepted = status;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted, 201, "{}", management.log());

    // A service created through the API starts serving.
    wait_status(&proxy, "127.0.0.1", 200).await;
    assert_eq!(status_of(&proxy, "127.0.0.3", "web.test").await, 403);
    wait_status(&proxy, "127.0.0.5", 403).await;

    // A denied request shows up as an event, with its deny reason and metadata.
    let e = management
        .wait_event("verdict=crowdsec_ban&source_ip=127.0.0.5")
        .await;
    assert_eq!(e["service_id"], "web");
    assert_eq!(e["proxy_id"], proxy_id.as_str());
    assert_eq!(
        (e["status"].as_i64(), e["host"].as_str()),
        (Some(403), Some("web.test"))
    );
    // The reference the denied client was shown reaches management with the entry.
    let reference = e["metadata"]["reference"].as_str().unwrap_or_default();
    assert!(
        reference.len() == 16 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
        "{e}"
    );
    assert_eq!(
        e["metadata"],
        json!({"crowdsec_verdict": "crowdsec_ban", "crowdsec_mode": "enforce", "reference": reference})
    );
    let e = management
        .wait_event("verdict=ip_restricted&source_ip=127.0.0.3")
        .await;
    assert_eq!(e["deny_reason"], "ip_restricted");

    // An open keep-alive connection survives an edit of the restrictions.
    let mut sender = keep_alive_from("127.0.0.2", proxy.http_addr()).await;
    assert_eq!(
        send(&mut sender, "web.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let (status, _) = management
        .call(
            "PUT",
            "/api/v1/services/web",
            Some(service(&up.url(), &["127.0.0.3", "127.0.0.4"], "observe")),
        )
        .await;
    assert_eq!(status, 200);
    wait_status(&proxy, "127.0.0.4", 403).await;
    assert_eq!(
        status_of(&proxy, "127.0.0.5", "web.test").await,
        200,
        "observe never denies"
    );
    assert_eq!(
        send(&mut sender, "web.test", "/again", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let e = management
        .wait_event("observe=true&source_ip=127.0.0.5")
        .await;
    assert_eq!(
        (e["deny_reason"].as_str(), e["status"].as_i64()),
        (Some(""), Some(200))
    );
    assert_eq!(e["metadata"]["crowdsec_verdict"], "crowdsec_ban");

    // The proxy's report: version, CrowdSec support, bouncer state, applied revision.
    let (_, p) = management
        .call("GET", &format!("/api/v1/proxies/{proxy_id}"), None)
        .await;
    assert_eq!(
        (p["live"].as_bool(), p["supports_crowdsec"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["bouncer"]["synced"], true);
    assert_eq!(p["bouncer"]["decisions"], 1);
    assert!(p["config_revision"].as_i64().unwrap() >= 2, "{p}");

    // Management stopped: the proxy keeps serving, open connection included.
    management.stop();
    proxy
        .wait_log_count("still serving the 1 services in use", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 200);
    assert_eq!(status_of(&proxy, "127.0.0.4", "web.test").await, 403);
    assert_eq!(
        send(&mut sender, "web.test", "/during-outage", &[])
            .await
            .unwrap()
            .status,
        200
    );
    drop(sender);

    // Restarted while management is down: it serves the last services from its cache.
    drop(proxy);
    let proxy = managed().start().await;
    assert!(
        proxy.stderr_text().contains("serving the cached services"),
        "{}",
        proxy.stderr_text()
    );
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 200);
    assert_eq!(status_of(&proxy, "127.0.0.4", "web.test").await, 403);
    assert_eq!(status_of(&proxy, "127.0.0.6", "web.test").await, 200);

    // Management back: the proxy reconnects and ships what it recorded meanwhile.
    management.start().await;
    let e = management.wait_event("source_ip=127.0.0.6").await;
    assert_eq!(e["status"], 200);
    proxy.wait_log_count("connected to management", 1).await;
}

#[tokio::test]
async fn sigterm_ships_the_last_entries_and_management_exits_with_a_proxy_connected() {
    let up = Upstream::start("web").await;
    let mut management = Management::start_new().await;
    let (_, created) = management
        .call("POST", "/api/v1/proxies", Some(json!({"name": "edge-1"})))
        .await;
    let token = created["token"].as_str().unwrap().to_owned();
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("services.json");
    let (status, _) = management
        .call(
            "POST",
            "/api/v1/services",
            Some(service(&up.url(), &[], "off")),
        )
        .await;
    assert_eq!(status, 201);
    let mut proxy = ProxyBuilder::managed(&management.url(""), &token, &cache)
        .start()
        .await;
    wait_status(&proxy, "127.0.0.1", 200).await;

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o600, "the services cache is private");
    assert_eq!(mode(&proxy.access_log), 0o600, "the access log is private");
    // The proxy's last entries reach management although it exits right after recording them.
    assert_eq!(status_of(&proxy, "127.0.0.77", "web.test").await, 200);
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success(), "{}", proxy.stderr_text());
    let e = management.wait_event("source_ip=127.0.0.77").await;
    assert_eq!(e["status"], 200);

    // Management exits on SIGTERM although a proxy holds its stream open.
    let proxy = ProxyBuilder::managed(&management.url(""), &token, &cache)
        .start()
        .await;
    proxy.wait_log_count("connected to management", 1).await;
    let t = std::time::Instant::now();
    management.signal(libc::SIGTERM);
    let status = management
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("management still running:\n{}", management.log()));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(management.log().contains("proxy stream closed"));
    // The proxy notices and keeps serving.
    proxy
        .wait_log_count("still serving the 1 services in use", 1)
        .await;
    assert_eq!(status_of(&proxy, "127.0.0.1", "web.test").await, 200);
}

#[tokio::test]
async fn proxies_sharing_a_bouncer_key_are_flagged() {
    let lapi = Lapi::start_new(None);
    let second_key = "7e57abcd7e57abcd7e57abcd7e57abcd";
    lapi.cscli(&["bouncers", "add", "nb-proxy-own", "-k", second_key]);
    let management = Management::start_new().await;
    let mut proxies = Vec::new();
    let mut ids = Vec::new();
    for (name, key) in [("edge-a", KEY), ("edge-b", KEY), ("edge-c", second_key)] {
        let (_, created) = management
            .call("POST", "/api/v1/proxies", Some(json!({ "name": name })))
            .await;
        ids.push(created["proxy"]["id"].as_str().unwrap().to_owned());
        let token = created["token"].as_str().unwrap().to_owned();
        let state = tempfile::tempdir().unwrap();
        let cache = state.path().join("services.json");
        // edge-b takes its secrets from files, as recommended (nothing in `ps`).
        let proxy = if name == "edge-b" {
            let key_file = state.path().join("bouncer-key");
            let token_file = state.path().join("token");
            std::fs::write(&key_file, format!("{key}\n")).unwrap();
            std::fs::write(&token_file, format!("{token}\n")).unwrap();
            ProxyBuilder::managed(&management.url(""), "", &cache)
                .token_file(&token_file)
                .arg("--crowdsec-api-url")
                .arg(lapi.url())
                .arg("--crowdsec-api-key-file")
                .arg(key_file.display().to_string())
                .start()
                .await
        } else {
            ProxyBuilder::managed(&management.url(""), &token, &cache)
                .arg("--crowdsec-api-url")
                .arg(lapi.url())
                .arg("--crowdsec-api-key")
                .arg(key)
                .start()
                .await
        };
        proxies.push((proxy, state));
    }
    let mut seen = Value::Null;
    for _ in 0..200 {
        let (_, list) = management.call("GET", "/api/v1/proxies", None).await;
        let shared = |name: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["crowdsec_key_shared_with"].clone())
                .unwrap_or(Value::Null)
        };
        if shared("edge-a") == json!(["edge-b"]) && shared("edge-b") == json!(["edge-a"]) {
            assert_eq!(shared("edge-c"), json!([]), "its own key: {list}");
            seen = list;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!seen.is_null(), "never flagged:\n{}", management.log());
    assert!(management.log().contains("share a CrowdSec bouncer key"));
    // The key itself never reaches management.
    assert!(!management.log().contains(KEY));
    assert!(!seen.to_string().contains(KEY));

    // One of them goes away: nobody shares any more.
    proxies.remove(1);
    for _ in 0..200 {
        let (_, p) = management
            .call("GET", &format!("/api/v1/proxies/{}", ids[0]), None)
            .await;
        if p["crowdsec_key_shared_with"] == json!([]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still flagged after edge-b left");
}

#[tokio::test]
async fn failed_authentication_is_logged_with_its_source_at_a_bounded_rate() {
    let management = Management::start_new().await;
    let http = reqwest::Client::new();
    let mut limited = 0;
    let started = std::time::Instant::now();
    for _ in 0..300 {
        let res = http
            .get(management.url("/api/v1/services"))
            .bearer_auth("nba_guessing")
            .send()
            .await
            .unwrap();
        limited += usize::from(res.status() == 429);
    }
    // At most ten answers per second of the burst; one log line per ten seconds.
    let secs = started.elapsed().as_secs() as usize;
    assert!(
        limited >= 300 - 10 * (secs + 1),
        "{limited} limited in {secs}s"
    );
    let log = management.log();
    let lines = log.matches("authentication failed from 127.0.0.1").count();
    assert!(
        (1..=secs / 10 + 1).contains(&lines),
        "{lines} lines in {secs}s:\n{log}"
    );
    assert!(log.contains("GET /api/v1/services"), "{log}");
    assert!(!log.contains("nba_guessing"), "tokens never reach the log");
}

#[tokio::test]
async fn a_generated_admin_token_goes_to_a_private_file_never_to_the_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = reserve_port();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(management_binary());
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("NB_MANAGEMENT_") {
                cmd.env_remove(k);
            }
        }
        cmd.spawn().unwrap()
    };
    let mut child = run(&[]);
    let base = format!("http://127.0.0.1:{port}");
    let token_file = data.join("admin-token");
    for _ in 0..400 {
        if token_file.exists()
            && reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("nba_"), "{token}");
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        !stderr.contains(&token),
        "the token is not printed:\n{stderr}"
    );
    assert!(stderr.contains("admin-token"), "{stderr}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("management.db")), 0o600);
    let api = AdminApi::new(base.clone(), token.clone());
    assert_eq!(api.call("GET", "/api/v1/services", None).await.0, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // An operator-chosen token from a file: stored salted, never as plain SHA-256.
    let chosen = dir.path().join("chosen");
    std::fs::write(&chosen, "an-operator-chosen-token-123\n").unwrap();
    let mut child = run(&["--admin-token-file", chosen.to_str().unwrap()]);
    let api = AdminApi::new(base.clone(), "an-operator-chosen-token-123".into());
    let mut status = 0;
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            if r.status() == 200 {
                status = api.call("GET", "/api/v1/services", None).await.0;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    // The settings row, in the database or still in its write-ahead log.
    let mut db = std::fs::read(data.join("management.db")).unwrap();
    db.extend(std::fs::read(data.join("management.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&db);
    assert!(text.contains("$argon2id$"), "stored as argon2id");
    assert!(!text.contains("an-operator-chosen-token-123"));
}
