//! nb-management over HTTPS, as the real binary serves it: `--tls-cert`/`--tls-key`, Secure
//! session cookies and HSTS, certificates reloaded when their files change (a half-written
//! pair refused, the loaded one kept), and a bad pair refused at start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nb_e2e::binaries::{binary, wait_ready};

const ADMIN: &str = "https-test-admin-token-0123456789";

struct Pair {
    cert: String,
    key: String,
}

fn pair() -> Pair {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    Pair {
        cert: c.cert.pem(),
        key: c.key_pair.serialize_pem(),
    }
}

struct Management {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Management {
    fn files(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("m.crt"), dir.join("m.key"))
    }

    fn command(dir: &Path) -> Command {
        let (cert, key) = Self::files(dir);
        let mut cmd = Command::new(binary("nb-management"));
        cmd.args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(dir.join("ready.json"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(["--tls-reload-interval", "100ms"])
            .env_remove("NB_MANAGEMENT_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap());
        cmd
    }

    async fn start(p: &Pair) -> Management {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = Self::files(dir.path());
        std::fs::write(&cert, &p.cert).unwrap();
        std::fs::write(&key, &p.key).unwrap();
        let mut child = Self::command(dir.path()).spawn().unwrap();
        let log = dir.path().join("log");
        let ready = wait_ready(&mut child, &dir.path().join("ready.json"), || {
            std::fs::read_to_string(&log).unwrap_or_default()
        })
        .await;
        let url = ready["url"].as_str().unwrap().to_owned();
        Management { child, dir, url }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn write(&self, cert: Option<&str>, key: Option<&str>) {
        let (c, k) = Self::files(self.dir.path());
        if let Some(cert) = cert {
            std::fs::write(c, cert).unwrap();
        }
        if let Some(key) = key {
            std::fs::write(k, key).unwrap();
        }
    }
}

impl Drop for Management {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that trusts only this certificate.
fn trusting(p: &Pair) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(p.cert.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Whether a new connection (a new handshake) trusting only `p` gets an answer.
async fn served(p: &Pair, url: &str) -> bool {
    trusting(p)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn https_with_secure_cookies_and_certificates_reloaded_when_they_change() {
    let first = pair();
    let m = Management::start(&first).await;
    assert!(m.url.starts_with("https://127.0.0.1:"), "{}", m.url);
    let client = trusting(&first);

    let res = client
        .get(format!("{}/healthz", m.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let res = client
        .post(format!("{}/api/v1/session", m.url))
        .json(&serde_json::json!({ "token": ADMIN }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = m.url.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());

    // A new certificate written before its key: refused once, the loaded pair keeps serving.
    let second = pair();
    m.write(Some(&second.cert), None);
    for _ in 0..100 {
        if m.log().contains("changed TLS files rejected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = m.log();
    assert!(
        log.contains("changed TLS files rejected, keeping the loaded certificate")
            && log.contains("does not belong to the certificate"),
        "{log}"
    );
    assert!(served(&first, &m.url).await, "the loaded pair still serves");
    assert!(!served(&second, &m.url).await);

    // The key arrives: the new pair serves, without a restart.
    m.write(None, Some(&second.key));
    let mut renewed = false;
    for _ in 0..100 {
        if served(&second, &m.url).await {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "the renewed certificate is served: {}", m.log());
    assert!(m.log().contains("TLS certificate reloaded"));
    assert!(!served(&first, &m.url).await, "the old one is not");
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let (a, b) = (pair(), pair());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Management::files(dir.path());
    std::fs::write(&cert, &a.cert).unwrap();
    std::fs::write(&key, &b.key).unwrap();
    let out = Management::command(dir.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not belong to the certificate in --tls-cert"),
        "{err}"
    );
    assert!(!dir.path().join("ready.json").exists());
}
