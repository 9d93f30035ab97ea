//! Test helpers: a private PostgreSQL server (real, from Debian's `postgresql` package), fresh
//! databases, and nb-management served in-process on a loopback port.
#![allow(dead_code)]

use std::time::Duration;

use nb_management::api::Settings;
use nb_management::retention::Retention;
use nb_management::server::{serve, settle_admin_token, start};
use nb_management::store::{Role, Store};

pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// Every route a person calls, with the least role it needs. Paths as the OpenAPI document
/// writes them; [`concrete`] fills the parameters.
pub const PERSON_ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/api/v1/services", Role::Viewer),
    ("POST", "/api/v1/services", Role::Operator),
    ("GET", "/api/v1/services/{id}", Role::Viewer),
    ("PUT", "/api/v1/services/{id}", Role::Operator),
    ("DELETE", "/api/v1/services/{id}", Role::Operator),
    ("GET", "/api/v1/proxies", Role::Viewer),
    ("POST", "/api/v1/proxies", Role::Operator),
    ("GET", "/api/v1/proxies/{id}", Role::Viewer),
    ("PUT", "/api/v1/proxies/{id}", Role::Operator),
    ("DELETE", "/api/v1/proxies/{id}", Role::Operator),
    ("GET", "/api/v1/capabilities", Role::Viewer),
    ("GET", "/api/v1/countries", Role::Viewer),
    ("GET", "/api/v1/events", Role::Viewer),
    ("GET", "/api/v1/events/export", Role::Viewer),
    ("GET", "/api/v1/stats/timeline", Role::Viewer),
    ("GET", "/api/v1/stats/top", Role::Viewer),
    ("GET", "/api/v1/stats/enforce-preview", Role::Viewer),
    ("GET", "/api/v1/session", Role::Viewer),
    ("GET", "/api/v1/tokens", Role::Viewer),
    ("POST", "/api/v1/tokens", Role::Viewer),
    ("DELETE", "/api/v1/tokens/{id}", Role::Viewer),
    ("GET", "/api/v1/users", Role::Admin),
    ("POST", "/api/v1/users", Role::Admin),
    ("PUT", "/api/v1/users/{name}", Role::Admin),
    ("DELETE", "/api/v1/users/{name}", Role::Admin),
    ("GET", "/api/v1/audit", Role::Admin),
];

/// The path with each `{parameter}` replaced by `x`.
pub fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

pub use nb_e2e::admin_api::AdminApi;
use nb_e2e::postgres::{Durability, Postgres};

/// A new, empty database on the private server.
pub async fn fresh_postgres_url() -> String {
    let server = Postgres::shared(Durability::Off);
    let name = format!("t_{:016x}", fastrand_u64());
    let admin_url = server.admin_url();
    sqlx::any::install_default_drivers();
    let mut conn: sqlx::AnyConnection = sqlx::Connection::connect(&admin_url).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    server.url_of(&name)
}

fn fastrand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b)
}

pub struct Backend {
    pub name: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// A database the test made itself (and cleans up itself).
    pub fn at(url: String) -> Backend {
        Backend {
            name: "given",
            url,
            _dir: None,
        }
    }

    /// The same PostgreSQL database, for a second management replica.
    pub fn replica(&self) -> Backend {
        assert!(self._dir.is_none(), "replicas share a PostgreSQL database");
        Backend {
            name: self.name,
            url: self.url.clone(),
            _dir: None,
        }
    }
}

pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    Backend {
        name: "sqlite",
        url,
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Backend {
    Backend {
        name: "postgres",
        url: fresh_postgres_url().await,
        _dir: None,
    }
}

pub async fn both() -> Vec<Backend> {
    vec![sqlite().await, postgres().await]
}

/// nb-management served in-process, as the binary would.
pub struct Server {
    pub base: String,
    pub store: Store,
    pub http: reqwest::Client,
    /// The admin API as every system test calls it.
    pub api: AdminApi,
    _backend: Backend,
}

pub async fn server_with(backend: Backend, settings: Settings) -> Server {
    let store = Store::open(&backend.url).await.unwrap();
    let (hash, _) = settle_admin_token(&store, Some(ADMIN)).await.unwrap();
    let retention = Retention {
        max_age: None,
        max_rows: None,
        max_bytes: None,
        audit_max_age: None,
        interval: Duration::from_secs(60),
    };
    let running = start(
        store.clone(),
        hash,
        settings,
        retention,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, running, std::future::pending()));
    Server {
        api: AdminApi::new(base.clone(), ADMIN.into()),
        base,
        store,
        http: reqwest::Client::new(),
        _backend: backend,
    }
}

pub async fn server() -> Server {
    server_with(sqlite().await, Settings::default()).await
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(ADMIN)
    }

    pub fn with_token(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// Creates a proxy; returns (id, token).
    pub async fn create_proxy(&self, name: &str) -> (String, String) {
        let body = serde_json::json!({ "name": name });
        let (status, v) = self.api.call("POST", "/api/v1/proxies", Some(&body)).await;
        assert_eq!(status, 201, "{v}");
        (
            v["proxy"]["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Makes a proxy live as a real one does: opens its stream (held until the returned
    /// connection is dropped) and reports.
    pub async fn connect(&self, token: &str, supports_crowdsec: bool) -> Connection {
        let stream = self.updates(token).await;
        self.report(token, supports_crowdsec).await;
        Connection { _stream: stream }
    }

    /// Reports as a proxy would (which alone does not make it live).
    pub async fn report(&self, token: &str, supports_crowdsec: bool) {
        self.report_with(
            token,
            nb_api::ProxyReport {
                version: "0.1.0".into(),
                supports_crowdsec,
                ..Default::default()
            },
        )
        .await;
    }

    pub async fn report_with(&self, token: &str, report: nb_api::ProxyReport) {
        let res = self
            .with_token(token, reqwest::Method::PUT, nb_api::paths::REPORT)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
}

/// A proxy's stream, read: each `services` event's update, in order. Closed when dropped.
pub struct Updates {
    rx: tokio::sync::mpsc::UnboundedReceiver<nb_api::ServicesUpdate>,
    task: tokio::task::JoinHandle<()>,
}

impl Updates {
    /// The next update within 10 s.
    pub async fn next(&mut self) -> nb_api::ServicesUpdate {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an update within 10 s")
            .expect("the stream is open")
    }

    /// The ids of the next update's services, sorted.
    pub async fn next_ids(&mut self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .next()
            .await
            .services
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    }

    /// Reads updates until one holds exactly these services (every change to any service
    /// sends an update, whether or not it concerns this proxy).
    pub async fn until_ids(&mut self, want: &[&str]) {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let ids = self.next_ids().await;
            if ids == want {
                return;
            }
            seen.push(ids);
        }
        panic!("no update with {want:?}: {seen:?}");
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Opens a proxy's stream and reads its server-sent events as the proxy does.
    pub async fn updates(&self, token: &str) -> Updates {
        let res = self
            .with_token(token, reqwest::Method::GET, nb_api::paths::STREAM)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = res.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if event.lines().any(|l| l == "event: services") {
                        let _ = tx.send(serde_json::from_str(&data).unwrap());
                    }
                }
            }
        });
        Updates { rx, task }
    }
}

/// A proxy's open stream; closed when dropped.
pub struct Connection {
    _stream: Updates,
}

/// A user created for a test, signed in (session cookie and CSRF token) and holding a personal
/// API token.
pub struct Person {
    pub name: String,
    pub password: String,
    /// `nb_session=…`, as a browser sends it back.
    pub cookie: String,
    pub csrf: String,
    /// A personal token (`nbu_…`).
    pub token: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

/// `name=value` of the Set-Cookie header.
pub fn session_cookie(res: &reqwest::Response) -> String {
    let set = res.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

impl Server {
    pub async fn sign_in(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/session"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A request with `p`'s session cookie and CSRF token, as the dashboard sends it.
    pub fn as_session(
        &self,
        p: &Person,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("cookie", &p.cookie)
            .header("x-csrf-token", &p.csrf)
    }

    /// Creates a user with the admin token, signs in and makes a personal token.
    pub async fn add_user(&self, name: &str, role: Role) -> Person {
        let body = serde_json::json!({"name": name, "role": role, "password": PASSWORD});
        let (status, v) = self.api.call("POST", "/api/v1/users", Some(&body)).await;
        assert_eq!(status, 201, "{v}");
        let res = self
            .sign_in(serde_json::json!({"name": name, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 200);
        let cookie = session_cookie(&res);
        let v: serde_json::Value = res.json().await.unwrap();
        let mut p = Person {
            name: name.into(),
            password: PASSWORD.into(),
            cookie,
            csrf: v["csrf_token"].as_str().unwrap().to_owned(),
            token: String::new(),
        };
        let res = self
            .as_session(&p, reqwest::Method::POST, "/api/v1/tokens")
            .json(&serde_json::json!({"name": "tests"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let v: serde_json::Value = res.json().await.unwrap();
        p.token = v["secret"].as_str().unwrap().to_owned();
        p
    }
}
