//! A real CrowdSec LAPI (Debian package `crowdsec`) started per test on loopback:
//! `crowdsec -c CONFIG -no-cs -no-capi` with its own SQLite database, machine and bouncer key.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::ports::reserve_port;

pub const KEY: &str = "5c0ffee5c0ffee5c0ffee5c0ffee5c0f";

pub struct Lapi {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    child: Option<Child>,
    http: reqwest::Client,
}

/// Extra `api.server.tls` settings for client-certificate tests.
pub const MTLS: &str = "      client_verification: VerifyClientCertIfGiven\n      bouncers_allowed_ou: [nb-bouncer]\n      agents_allowed_ou: [agent-ou]\n";

impl Lapi {
    /// Configured (database, machine, bouncer) but not started.
    pub fn configure(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        Self::configure_with(tls, "")
    }

    /// `tls_extra` is appended to `api.server.tls` (e.g. [`MTLS`]).
    pub fn configure_with(tls: Option<(PathBuf, PathBuf, PathBuf)>, tls_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = reserve_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("creds.yaml"), "").unwrap();
        std::fs::write(d.join("simulation.yaml"), "simulation: false\n").unwrap();
        std::fs::write(
            d.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        let tls_block = match &tls {
            Some((cert, key, ca)) => format!(
                "    tls:\n      cert_file: {}\n      key_file: {}\n      ca_cert_path: {}\n{tls_extra}",
                cert.display(),
                key.display(),
                ca.display()
            ),
            None => String::new(),
        };
        std::fs::write(
            d.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: warning\nconfig_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\ndb_config:\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\napi:\n  client:\n    credentials_path: {d}/creds.yaml\n  server:\n    listen_uri: 127.0.0.1:{port}\n    profiles_path: {d}/profiles.yaml\n{tls_block}",
                d = d.display()
            ),
        )
        .unwrap();
        let lapi = Self {
            dir,
            port,
            tls,
            child: None,
            http: reqwest::Client::new(),
        };
        lapi.cscli_ok(
            &["machines", "add", "tests", "--auto", "--force", "-f"],
            Some("creds.yaml"),
        );
        if let Some((_, _, ca)) = &lapi.tls {
            let creds = lapi.dir.path().join("creds.yaml");
            let text = std::fs::read_to_string(&creds)
                .unwrap()
                .replace("http://", "https://");
            std::fs::write(&creds, format!("{text}ca_cert_path: {}\n", ca.display())).unwrap();
        }
        lapi.cscli_ok(&["bouncers", "add", "nb-proxy-test", "-k", KEY], None);
        lapi
    }

    pub fn start_new(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        let mut l = Self::configure(tls);
        l.start();
        l
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("lapi.log")).unwrap();
        let child = Command::new("crowdsec")
            .arg("-c")
            .arg(self.dir.path().join("config.yaml"))
            .args(["-no-cs", "-no-capi"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("crowdsec is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "LAPI did not start: {}",
            std::fs::read_to_string(self.dir.path().join("lapi.log")).unwrap_or_default()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    fn cscli_raw(&self, args: &[&str], file_arg: Option<&str>) -> Output {
        let mut cmd = Command::new("cscli");
        cmd.arg("-c").arg(self.config()).args(args);
        if let Some(f) = file_arg {
            cmd.arg(self.dir.path().join(f));
        }
        cmd.output().expect("cscli runs")
    }

    fn cscli_ok(&self, args: &[&str], file_arg: Option<&str>) -> String {
        let out = self.cscli_raw(args, file_arg);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "cscli {args:?} failed: {text}");
        text
    }

    /// `cscli ARGS…` against this LAPI; panics on failure.
    pub fn cscli(&self, args: &[&str]) -> String {
        self.cscli_ok(args, None)
    }

    /// The LAPI's own live answer for `ip` (`GET /v1/decisions?ip=`): the value and type of
    /// every decision covering it, as the LAPI stored them.
    pub async fn decisions_covering(&self, ip: &str) -> Vec<(String, String)> {
        let resp = self
            .http
            .get(format!("{}/v1/decisions", self.url()))
            .query(&[("ip", ip)])
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("LAPI query for {ip}: {e}"));
        assert!(
            resp.status().is_success(),
            "LAPI query for {ip}: {}",
            resp.status()
        );
        let body: serde_json::Value = resp.json().await.expect("LAPI answers JSON");
        // `null`, not `[]`, when nothing covers the address.
        body.as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                (field("value"), field("type"))
            })
            .collect()
    }

    pub fn add(&self, args: &[&str]) {
        let mut all = vec!["decisions", "add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--reason", "nb-proxy e2e"]);
        self.cscli(&all);
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
    }
}
