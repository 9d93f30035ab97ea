//! Test helpers: a private PostgreSQL server (real, from Debian's `postgresql` package), fresh
//! databases, and nb-management served in-process on a loopback port.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
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
    ("DELETE", "/api/v1/proxies/{id}", Role::Operator),
    ("GET", "/api/v1/capabilities", Role::Viewer),
    ("GET", "/api/v1/countries", Role::Viewer),
    ("GET", "/api/v1/events", Role::Viewer),
    ("GET", "/api/v1/events/export", Role::Viewer),
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
pub use nb_e2e::ports::reserve_port;

struct Postgres {
    port: u16,
    _dir: tempfile::TempDir,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    let v = versions
        .last()
        .expect("PostgreSQL is not installed: scripts/test.sh installs Debian's postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

/// PostgreSQL refuses to run as root: run it as the `postgres` user then.
fn as_server_user(cmd: &mut Command) {
    if unsafe { libc::getuid() } == 0 {
        let out = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .unwrap();
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let out = Command::new("id")
            .args(["-g", "postgres"])
            .output()
            .unwrap();
        let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        cmd.uid(uid).gid(gid);
    }
}

/// Servers die with their test process but their directories stay; remove those of dead ones.
fn remove_stale_servers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with("nb-pg-") {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(30));
        if !alive && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn start_postgres() -> Postgres {
    remove_stale_servers();
    let dir = tempfile::Builder::new().prefix("nb-pg-").tempdir().unwrap();
    let data = dir.path().join("data");
    if unsafe { libc::getuid() } == 0 {
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
    }
    let bin = postgres_bin();
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null());
    as_server_user(&mut initdb);
    let out = initdb.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = reserve_port();
    let socket_dir = dir.path().to_owned();
    let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
    // Spawned from a thread that never ends, so that the parent-death signal fires only when
    // the test process exits and the server never outlives it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&socket_dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        as_server_user(&mut cmd);
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("postgres starts");
        tx.send(()).unwrap();
        let _child = child;
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap();
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
            return Postgres { port, _dir: dir };
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "PostgreSQL did not start: {}",
        std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default()
    );
}

/// A new, empty database on the private server.
pub async fn fresh_postgres_url() -> String {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    let port = SERVER.get_or_init(start_postgres).port;
    let name = format!("t_{:016x}", fastrand_u64());
    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    sqlx::any::install_default_drivers();
    let mut conn: sqlx::AnyConnection = sqlx::Connection::connect(&admin_url).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
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
        let res = self
            .with_token(token, reqwest::Method::GET, nb_api::paths::STREAM)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let task = tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = res.bytes_stream();
            while let Some(Ok(_)) = body.next().await {}
        });
        self.report(token, supports_crowdsec).await;
        Connection { task }
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

/// A proxy's open stream; closed when dropped.
pub struct Connection {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
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
