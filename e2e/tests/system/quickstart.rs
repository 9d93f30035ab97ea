//! `scripts/quickstart.sh` run as an operator would: non-interactively with a local LAPI from
//! the distribution's package (then the verification recipe it prints, executed as printed),
//! and through a terminal (tmux) answering its prompt. Binaries come from this build
//! (`NB_QUICKSTART_BIN_DIR`); everything else is the real thing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::admin_api::AdminApi;
use crate::harness::reserve_port;
use crate::lapi::{Lapi, KEY};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/quickstart.sh")
}

fn bin_dir() -> PathBuf {
    nb_e2e::binaries::binary("nb-proxy")
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One quickstart installation: its state directory and its own ports.
struct Quickstart {
    dir: tempfile::TempDir,
    management_port: u16,
    http_port: u16,
    demo_port: u16,
    /// Resolved once, up front: a missing build fails here rather than in `Drop`.
    bin_dir: PathBuf,
}

impl Quickstart {
    fn new() -> Self {
        Self {
            bin_dir: bin_dir(),
            dir: tempfile::tempdir().unwrap(),
            management_port: reserve_port(),
            http_port: reserve_port(),
            demo_port: reserve_port(),
        }
    }

    /// The settings every run shares; the caller's `NB_*` variables are not inherited.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NB_QUICKSTART_DIR".into(),
                self.path("").display().to_string(),
            ),
            (
                "NB_QUICKSTART_BIN_DIR".into(),
                self.bin_dir.display().to_string(),
            ),
            (
                "NB_QUICKSTART_MANAGEMENT_LISTEN".into(),
                format!("127.0.0.1:{}", self.management_port),
            ),
            (
                "NB_QUICKSTART_HTTP_LISTEN".into(),
                format!("127.0.0.1:{}", self.http_port),
            ),
            (
                "NB_QUICKSTART_DEMO_LISTEN".into(),
                format!("127.0.0.1:{}", self.demo_port),
            ),
        ]
    }

    fn command(&self, subcommand: &str, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(subcommand).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("NB_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env());
        cmd.envs(extra.iter().copied());
        cmd
    }

    /// Runs a subcommand; returns its exit code and everything it printed.
    fn run(&self, subcommand: &str, extra: &[(&str, &str)]) -> (i32, String) {
        let out = self.command(subcommand, extra).output().expect("bash runs");
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn up(&self, extra: &[(&str, &str)]) -> String {
        let (code, out) = self.run("up", extra);
        assert_eq!(code, 0, "quickstart failed:\n{out}\n{}", self.logs());
        out
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    fn mode(&self, rel: &str) -> u32 {
        let meta = std::fs::metadata(self.path(rel)).unwrap();
        meta.permissions().mode() & 0o777
    }

    fn env_value(&self, file: &str, key: &str) -> String {
        let prefix = format!("{key}=");
        self.read(file)
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_default()
            .to_owned()
    }

    fn logs(&self) -> String {
        ["nb-management", "nb-proxy", "crowdsec", "demo-upstream"]
            .iter()
            .map(|n| {
                let log = self.read(&format!("logs/{n}.log"));
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!(
                    "--- {n}.log (last lines, newest first)\n{}",
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn management_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.management_port)
    }

    /// The admin API, with the token the quickstart wrote.
    fn api(&self) -> AdminApi {
        let admin = self.env_value("management.env", "NB_MANAGEMENT_ADMIN_TOKEN");
        AdminApi::new(self.management_url(""), admin)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.api().call(method, path, body).await
    }

    async fn first_event(&self, query: &str) -> Value {
        let found = self.api().first_event(query).await;
        found.unwrap_or_else(|| panic!("no event for {query}:\n{}", self.logs()))
    }

    /// Every process whose open files reach into the state directory: the quickstart points
    /// the stdout of everything it starts at `logs/`.
    fn processes_using_dir(&self) -> Vec<String> {
        let dir = self.dir.path().canonicalize().unwrap();
        let mut found = vec![];
        for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = proc_entry.file_name().to_string_lossy().to_string();
            if !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
                continue;
            };
            let uses = fds
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| target.starts_with(&dir));
            if uses {
                let cmdline = std::fs::read_to_string(proc_entry.path().join("cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                found.push(format!("{pid}: {cmdline}"));
            }
        }
        found
    }

    fn pid_files(&self) -> Vec<(String, u32)> {
        let mut pids = vec![];
        for e in std::fs::read_dir(self.path("run")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_suffix(".pid") {
                let pid = std::fs::read_to_string(e.path()).unwrap();
                pids.push((n.to_owned(), pid.trim().parse().unwrap()));
            }
        }
        pids.sort();
        pids
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.command("stop", &[]).output();
    }
}

/// A process that is gone from the process table: not even a zombie (`<defunct>`) is left.
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// `git status --porcelain` of the checkout the script belongs to.
fn git_status() -> String {
    let root = script().parent().unwrap().parent().unwrap().to_path_buf();
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain"])
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The type and version `cscli bouncers list` shows for a bouncer of the machine's LAPI.
fn bouncer_identity(cscli: &str, name: &str) -> Option<(String, String)> {
    let list: Value =
        serde_json::from_str(&shell(&format!("{cscli} bouncers list -o json"))).unwrap();
    list.as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (field("type"), field("version"))
        })
}

/// A directory of stand-ins put first on the quickstart's PATH: executable scripts by name.
fn stand_ins(scripts: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Stand-ins for a machine without the crowdsec package and without internet: `dpkg-query`
/// says crowdsec is not installed; `apt-get install crowdsec` fails in the package's
/// postinst (the Central API registration) and leaves it half-configured, as it does offline;
/// `dpkg --configure` then completes when the credentials file exists. Every other package
/// and command is the real one; `curl` is the real one too, with each call logged.
fn offline_install(state: &Path) -> tempfile::TempDir {
    let st = state.display();
    std::fs::write(state.join("crowdsec"), "absent").unwrap();
    stand_ins(&[
        (
            "dpkg-query",
            format!(
                r#"for a in "$@"; do last=$a; done
if [ "$last" = crowdsec ]; then
  case $(cat {st}/crowdsec) in
    installed) printf 'install ok installed' ;;
    half) printf 'install ok half-configured' ;;
    *) echo "dpkg-query: no packages found matching crowdsec" >&2; exit 1 ;;
  esac
  exit 0
fi
exec /usr/bin/dpkg-query "$@"
"#
            ),
        ),
        (
            "apt-get",
            format!(
                r#"echo "apt-get $*" >>{st}/calls
[ "$1" = update ] && exit 0
if [[ " $* " == *" crowdsec "* ]] && [ "$(cat {st}/crowdsec)" != installed ]; then
  echo half >{st}/crowdsec
  echo 'I: Registering to CAPI (/etc/crowdsec/online_api_credentials.yaml)'
  echo 'level=fatal msg="api client register: dial tcp: lookup api.crowdsec.net: no such host"'
  echo 'dpkg: error processing package crowdsec (--configure):'
  exit 100
fi
exit 0
"#
            ),
        ),
        (
            "dpkg",
            format!(
                r#"echo "dpkg $*" >>{st}/calls
if [ "$1" = --configure ]; then
  [ -s /etc/crowdsec/online_api_credentials.yaml ] || exit 1
  echo installed >{st}/crowdsec
  exit 0
fi
exec /usr/bin/dpkg "$@"
"#
            ),
        ),
        (
            "curl",
            format!(
                r#"printf '%s\n' "$*" >>{st}/curl
exec /usr/bin/curl "$@"
"#
            ),
        ),
    ])
}

/// The `$ ` command lines of the printed verification recipe, in order.
fn recipe(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("$ "))
        .map(str::to_owned)
        .collect()
}

/// The `+ ` command lines of the printed second-proxy recipe, in order.
fn second_proxy_recipe(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("Add a second proxy"))
        .filter_map(|l| l.trim_start().strip_prefix("+ "))
        .map(str::to_owned)
        .collect()
}

fn shell(command: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", command])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "`{command}` failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
        .trim()
        .to_owned()
}

/// Runs `check` every 250 ms until it gives a value, for at most `seconds`.
async fn eventually<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..seconds * 4 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen within {seconds} s");
}

#[tokio::test]
async fn non_interactive_with_a_local_lapi_then_the_printed_recipe_stop_rerun_and_uninstall() {
    let qs = Quickstart::new();
    let before = git_status();
    // The first run meets a machine without crowdsec and without internet (stand-ins for
    // dpkg-query, apt-get and dpkg; see offline_install).
    let state = tempfile::tempdir().unwrap();
    let fakes = offline_install(state.path());
    let path = path_with(fakes.path());
    let out = qs.up(&[
        ("NB_ENABLE_CROWDSEC", "y"),
        ("NB_CROWDSEC_ENROLL_KEY", "not-a-real-enrollment-key"),
        ("PATH", &path),
    ]);

    // The normal install was tried first; its failed registration led to the offline one,
    // said plainly. Nothing was asked of any host but loopback (apt-get's sources aside).
    let calls = std::fs::read_to_string(state.path().join("calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "apt-get update -qq",
            "apt-get install -y -qq crowdsec",
            "dpkg --configure -a",
            "apt-get install -y -qq crowdsec"
        ],
        "{out}"
    );
    assert!(
        out.contains("crowdsec could not register with the CrowdSec Central API")
            && out.contains(
                "no community blocklist and no console until `cscli capi register` succeeds"
            ),
        "{out}"
    );
    let curled = std::fs::read_to_string(state.path().join("curl")).unwrap();
    assert!(!curled.is_empty());
    for call in curled.lines() {
        // curl's URL is a word of its own; JSON bodies also hold URLs (the upstream) but are
        // sent, not contacted.
        let urls = call
            .split_whitespace()
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"));
        for url in urls {
            assert!(
                url.starts_with("http://127.0.0.1:") || url.starts_with("http://[::1]:"),
                "the quickstart contacted {url}"
            );
        }
    }

    // Every step says what it does; the console cannot be reached here, which is reported and
    // does not stop the quickstart.
    for step in [
        "==> [1] Checking this machine",
        "Setting up a local CrowdSec LAPI",
        "cscli bouncers add nb-proxy-quickstart",
        "console enrollment failed, continuing without it",
        "Starting nb-proxy in managed mode",
        "created service \"demo\"",
        "nb-proxy quickstart is running.",
    ] {
        assert!(out.contains(step), "{step:?} missing from:\n{out}");
    }
    let bouncer = printed(&out, "cscli bouncers add ");
    assert!(bouncer.starts_with("nb-proxy-quickstart-"), "{bouncer}");
    let admin = printed(&out, "Admin token:");
    assert_eq!(
        admin,
        qs.env_value("management.env", "NB_MANAGEMENT_ADMIN_TOKEN")
    );

    // proxy.env: private, with the LAPI URL and the bouncer key, which is never printed.
    assert_eq!(qs.mode("proxy.env"), 0o600);
    assert_eq!(qs.mode("management.env"), 0o600);
    let lapi_url = qs.env_value("proxy.env", "NB_PROXY_CROWDSEC_API_URL");
    assert!(lapi_url.starts_with("http://127.0.0.1:"), "{lapi_url}");
    let key = qs.env_value("proxy.env", "NB_PROXY_CROWDSEC_API_KEY");
    assert!(key.len() >= 16, "bouncer key {:?}", key.len());
    assert!(!out.contains(&key), "the bouncer key was printed");
    let proxy_token = qs.env_value("proxy.env", "NB_PROXY_TOKEN");
    assert!(!proxy_token.is_empty());

    // The key was checked as the proxy checks it: the LAPI lists the bouncer as nb-proxy.
    let steps = recipe(&out);
    assert_eq!(steps.len(), 6, "recipe: {steps:?}");
    let cscli = steps[0].split(" decisions add").next().unwrap().to_owned();
    let nb_proxy = (
        "crowdsec-nb-proxy-bouncer".to_owned(),
        format!("v{}", env!("CARGO_PKG_VERSION")),
    );
    assert_eq!(bouncer_identity(&cscli, &bouncer), Some(nb_proxy.clone()));

    // The recipe, executed as printed: flag the test address, wait until the proxy has the
    // decision, then the first request from that address is already flagged.
    assert!(steps[0].contains("cscli decisions add --ip 127.0.0.9 --duration 5m --reason \"test\""));
    assert!(
        out.contains("4. The demo service is in observe mode: the answer stays 200"),
        "{out}"
    );
    shell(&steps[0]);
    assert!(steps[1].ends_with(" wait-sync"), "{steps:?}");
    let synced = shell(&steps[1]);
    assert!(synced.contains("nb-proxy pulled decisions at"), "{synced}");
    let (request, events) = (steps[2].clone(), steps[3].clone());
    // Observe never denies.
    assert_eq!(shell(&request), "200");
    let observed = eventually(30, "an observe entry for 127.0.0.9", || {
        let page: Value = serde_json::from_str(&shell(&events)).unwrap();
        page["events"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(
        observed["metadata"]["crowdsec_verdict"], "crowdsec_ban",
        "{observed}"
    );
    assert_eq!(observed["service_id"], "demo");
    assert_eq!(observed["status"], 200);
    assert_eq!(observed["deny_reason"], "");
    assert_eq!(observed["metadata"]["crowdsec_mode"], "observe");

    // Switched to enforce with the one printed command: the same request gets 403.
    assert!(steps[4].ends_with(" demo-mode enforce"), "{steps:?}");
    let switched = shell(&steps[4]);
    assert!(
        switched.contains("CrowdSec observe -> enforce"),
        "{switched}"
    );
    eventually(15, "403 for 127.0.0.9", || {
        (shell(&request) == "403").then_some(())
    })
    .await;
    // The entry is shipped within a second or two.
    let denied = qs
        .first_event("verdict=crowdsec_ban&source_ip=127.0.0.9")
        .await;
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(denied["deny_reason"], "crowdsec_ban");

    let (code, status_out) = qs.run("status", &[]);
    assert_eq!(code, 0, "{status_out}");
    assert!(
        status_out.contains("bouncer synced, decisions: 1"),
        "{status_out}"
    );

    // The second-proxy recipe, executed as printed (on a free port): its own token and its
    // own bouncer key, both in private files; management sees two live proxies, no shared key.
    let second = second_proxy_recipe(&out);
    assert_eq!(second.len(), 3, "{second:?}");
    // A run of this test cut short (before its uninstall) leaves edge-2's bouncer in the
    // machine's LAPI; the recipe is for a first time.
    if bouncer_identity(&cscli, "nb-proxy-edge-2").is_some() {
        shell(&format!("{cscli} bouncers delete nb-proxy-edge-2"));
    }
    shell(&second[0]);
    shell(&second[1]);
    assert_eq!(qs.mode("edge-2.token"), 0o600);
    assert_eq!(qs.mode("edge-2.key"), 0o600);
    let edge2_key = std::fs::read_to_string(qs.path("edge-2.key")).unwrap();
    assert_ne!(edge2_key.trim(), key, "a key of its own");
    let listen = second[2]
        .split("--http-listen ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_owned();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut edge2 = Command::new("bash")
        .args([
            "-c",
            &format!("exec {}", second[2].replace(&listen, &free.to_string())),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(qs.path("logs/edge-2.log")).unwrap())
        .spawn()
        .unwrap();
    let mut proxies = None;
    for _ in 0..120 {
        let (_, v) = qs.call("GET", "/api/v1/proxies", None).await;
        let list = v.as_array().cloned().unwrap_or_default();
        if list.len() == 2
            && list.iter().all(|p| {
                p["live"] == true
                    && p["supports_crowdsec"] == true
                    && p["crowdsec_key_shared_with"] == serde_json::json!([])
            })
        {
            proxies = Some(list);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let proxies = proxies.unwrap_or_else(|| {
        let log = std::fs::read_to_string(qs.path("logs/edge-2.log")).unwrap_or_default();
        panic!("no two live proxies with their own keys; edge-2 said:\n{log}")
    });
    assert!(proxies.iter().any(|p| p["name"] == "edge-2"), "{proxies:?}");
    let _ = edge2.kill();
    let _ = edge2.wait();
    assert!(bouncer_identity(&cscli, "nb-proxy-edge-2").is_some());

    // stop leaves no process behind: neither those it recorded nor anything else it started.
    let pids = qs.pid_files();
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        ["demo-upstream", "nb-management", "nb-proxy"]
            .iter()
            .all(|n| names.contains(n)),
        "{names:?}"
    );
    let (code, stop_out) = qs.run("stop", &[]);
    assert_eq!(code, 0, "{stop_out}");
    for (name, pid) in &pids {
        assert!(gone(*pid), "{name} (pid {pid}) is still listed after stop");
    }
    assert_eq!(qs.processes_using_dir(), Vec::<String>::new());
    assert!(std::net::TcpStream::connect(("127.0.0.1", qs.http_port)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", qs.management_port)).is_err());
    let (code, status_out) = qs.run("status", &[]);
    assert_eq!(code, 3, "status after stop: {status_out}");

    // A second run (CrowdSec remembered from proxy.env) reuses every piece of state.
    let again = qs.up(&[]);
    for reused in [
        "enabled by an earlier run",
        "reusing the admin token",
        format!("reusing bouncer \"{bouncer}\"").as_str(),
        "reusing proxy",
        "proxy.env (mode 0600): unchanged",
        "the demo service exists (CrowdSec: enforce): kept",
    ] {
        assert!(again.contains(reused), "{reused:?} missing from:\n{again}");
    }
    assert_eq!(printed(&again, "Admin token:"), admin);
    // Right after the key check of the rerun (the proxy kept running), the LAPI still names
    // the bouncer nb-proxy; the recipe speaks of the mode the demo is actually in.
    assert_eq!(bouncer_identity(&cscli, &bouncer), Some(nb_proxy));
    assert!(
        again.contains("4. The demo service is in enforce mode: the answer is 403"),
        "{again}"
    );
    assert!(!again.contains("the answer stays 200"), "{again}");
    let again_steps = recipe(&again);
    assert!(
        again_steps[4].ends_with(" demo-mode observe"),
        "{again_steps:?}"
    );
    assert_eq!(qs.env_value("proxy.env", "NB_PROXY_TOKEN"), proxy_token);
    assert_eq!(qs.env_value("proxy.env", "NB_PROXY_CROWDSEC_API_KEY"), key);
    // The SQLite store kept the events, and the service is still enforced.
    let (_, kept) = qs
        .call("GET", "/api/v1/events?source_ip=127.0.0.9", None)
        .await;
    assert!(kept["events"].as_array().unwrap().len() >= 2, "{kept}");
    eventually(15, "403 for 127.0.0.9 after the rerun", || {
        (shell(&request) == "403").then_some(())
    })
    .await;

    shell(&steps[5]);
    // Nothing in the checkout changed.
    assert_eq!(git_status(), before);

    // uninstall: without a terminal it asks for --yes and removes nothing; with it, the
    // processes, both bouncers it made and the whole directory go.
    let (code, said) = qs.run("uninstall", &[]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("confirm with") && said.contains("uninstall --yes"),
        "{said}"
    );
    assert!(qs.path("proxy.env").exists());
    let pids = qs.pid_files();
    let (code, said) = {
        let out = qs
            .command("uninstall", &[])
            .arg("--yes")
            .output()
            .expect("bash runs");
        (out.status.code().unwrap_or(-1), text(&out))
    };
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("deleted CrowdSec bouncer \"{bouncer}\"")),
        "{said}"
    );
    assert!(
        said.contains("deleted CrowdSec bouncer \"nb-proxy-edge-2\""),
        "{said}"
    );
    assert!(!qs.path("").exists(), "{said}");
    for (name, pid) in &pids {
        assert!(
            gone(*pid),
            "{name} (pid {pid}) is still listed after uninstall"
        );
    }
    assert_eq!(bouncer_identity(&cscli, &bouncer), None);
    assert_eq!(bouncer_identity(&cscli, "nb-proxy-edge-2"), None);
    assert!(std::net::TcpStream::connect(("127.0.0.1", qs.management_port)).is_err());
    assert_eq!(git_status(), before);
}

/// tmux on its own socket, so a test never touches anyone's tmux server.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-J", "-S", "-200"])
                .stdout,
        )
        .into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[tokio::test]
async fn the_prompt_answered_on_a_terminal_with_a_given_lapi() {
    let lapi = Lapi::start_new(None);
    let qs = Quickstart::new();

    // The quickstart runs in a tmux pane, its output also kept in a file; nothing answers
    // "Enable CrowdSec?" but the keys sent to the pane.
    let transcript = qs.path("transcript.txt");
    let mut runner = String::from("#!/bin/bash\n");
    for (k, v) in qs.env() {
        runner.push_str(&format!("export {k}='{v}'\n"));
    }
    runner.push_str(&format!(
        "export NB_CROWDSEC_API_URL='{}' NB_CROWDSEC_API_KEY='{KEY}'\n",
        lapi.url()
    ));
    runner.push_str(&format!(
        "bash '{}' 2>&1 | tee '{}'\necho \"quickstart exited with ${{PIPESTATUS[0]}}\"\nsleep 600\n",
        script().display(),
        transcript.display()
    ));
    let runner_path = qs.path("terminal.sh");
    std::fs::write(&runner_path, runner).unwrap();

    let term = Terminal {
        socket: format!("nb-quickstart-{}", std::process::id()),
    };
    let started = Command::new("tmux")
        .args([
            "-L",
            &term.socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "60",
        ])
        .arg(format!("bash {}", runner_path.display()))
        .env_remove("TMUX")
        .output()
        .expect("tmux runs");
    assert!(started.status.success(), "tmux: {}", text(&started));

    eventually(60, "the prompt", || {
        term.screen()
            .contains("Enable CrowdSec? [y/N]")
            .then_some(())
    })
    .await;
    assert!(!std::fs::read_to_string(&transcript)
        .unwrap_or_default()
        .contains("Starting nb-management"));
    let sent = term.tmux(&["send-keys", "y", "Enter"]);
    assert!(sent.status.success());

    let code = eventually(90, "the quickstart to finish", || {
        term.screen()
            .lines()
            .find_map(|l| l.strip_prefix("quickstart exited with "))
            .map(|c| c.trim().to_owned())
    })
    .await;
    let out = std::fs::read_to_string(&transcript).unwrap();
    assert_eq!(code, "0", "{out}\n{}", qs.logs());
    assert!(
        out.contains(&format!("CrowdSec: on, with the LAPI at {}", lapi.url())),
        "{out}"
    );
    // A given LAPI is used as it is: no local one, no console enrollment offered.
    assert!(!out.contains("Setting up a local CrowdSec LAPI"), "{out}");
    assert!(!out.contains("enrollment"), "{out}");
    assert!(out.contains("CrowdSec observe"), "{out}");
    assert!(!out.contains(KEY), "the bouncer key was printed");
    assert_eq!(
        qs.env_value("proxy.env", "NB_PROXY_CROWDSEC_API_URL"),
        lapi.url()
    );
    assert_eq!(qs.env_value("proxy.env", "NB_PROXY_CROWDSEC_API_KEY"), KEY);
    assert_eq!(qs.mode("proxy.env"), 0o600);

    // The proxy pulls from that LAPI: management shows its bouncer synced.
    let id = qs.env_value("quickstart.state", "PROXY_ID");
    let mut synced = false;
    for _ in 0..120 {
        let (_, proxy) = qs.call("GET", &format!("/api/v1/proxies/{id}"), None).await;
        if proxy["bouncer"]["synced"] == true {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(synced, "the bouncer never synced:\n{}", qs.logs());
    let (_, demo) = qs.call("GET", "/api/v1/services/demo", None).await;
    assert_eq!(demo["restrictions"]["crowdsec_mode"], "observe");

    // The pane's shell keeps its script (in the state directory) open: close the terminal first.
    drop(term);
    let (code, stop_out) = qs.run("stop", &[]);
    assert_eq!(code, 0, "{stop_out}");
    assert_eq!(qs.processes_using_dir(), Vec::<String>::new());
}

/// Building from the checkout (a stand-in `cargo` that compiles a few crates slowly, then puts
/// this build's binaries in CARGO_TARGET_DIR): without a terminal the build reports progress
/// at the set interval and says how long it took; a second run that builds nothing says so
/// and does not speak of a first build.
#[tokio::test]
async fn a_build_reports_progress_and_a_rebuild_of_nothing_says_so() {
    let qs = Quickstart::new();
    let target = tempfile::tempdir().unwrap();
    let bins = bin_dir();
    let cargo = format!(
        r#"[ "$1" = build ] || exit 2
out=$CARGO_TARGET_DIR/release
if [ -x "$out/nb-proxy" ] && [ -x "$out/nb-management" ]; then
  echo '    Finished `release` profile [optimized] target(s) in 0.40s' >&2
  exit 0
fi
for crate in libc tokio hyper nb-proxy; do
  echo "   Compiling $crate v1.0.0" >&2
  sleep 1.5
done
mkdir -p "$out"
cp '{p}' '{m}' "$out/"
echo '    Finished `release` profile [optimized] target(s) in 6.00s' >&2
"#,
        p = bins.join("nb-proxy").display(),
        m = bins.join("nb-management").display()
    );
    let fakes = stand_ins(&[("cargo", cargo)]);
    let path = path_with(fakes.path());
    let target_dir = target.path().display().to_string();
    let run = |qs: &Quickstart| {
        let mut cmd = qs.command("up", &[]);
        cmd.env_remove("NB_QUICKSTART_BIN_DIR")
            .env("NB_ENABLE_CROWDSEC", "n")
            .env("NB_QUICKSTART_PROGRESS_SECONDS", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("PATH", &path);
        let out = cmd.output().expect("bash runs");
        let said = text(&out);
        assert!(out.status.success(), "{said}\n{}", qs.logs());
        said
    };

    let first = run(&qs);
    assert!(first.contains("the first build takes about"), "{first}");
    assert!(first.contains("still building: 0m0"), "{first}");
    assert!(first.contains("crates compiled, now tokio"), "{first}");
    assert!(first.contains("built in 0m0"), "{first}");
    assert!(first.contains("(4 crates compiled)"), "{first}");
    // The binaries came from CARGO_TARGET_DIR, and they serve.
    let (_, proxy_pid) = qs
        .pid_files()
        .into_iter()
        .find(|(n, _)| n == "nb-proxy")
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{proxy_pid}/exe")).unwrap();
    assert!(exe.starts_with(target.path()), "{}", exe.display());
    assert!(std::fs::read_to_string(qs.path("logs/build.log"))
        .unwrap()
        .contains("Compiling nb-proxy v1.0.0"));

    let second = run(&qs);
    assert!(
        second.contains("nothing to rebuild: the binaries are up to date"),
        "{second}"
    );
    assert!(!second.contains("first build"), "{second}");
    assert!(!second.contains("still building"), "{second}");
}
