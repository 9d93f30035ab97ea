//! A private PostgreSQL server from Debian's `postgresql` package, for the management store's
//! tests and benchmarks: one per process, started on first use, stopped when the process exits.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::ports::reserve_port;

/// How the server keeps what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Tests: no fsync at all, nothing to wait for.
    Off,
    /// Benchmarks: PostgreSQL's defaults (fsync, synchronous commit), as a user would run it.
    Default,
}

pub struct Postgres {
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// The server of this process, started on first use.
    pub fn shared(durability: Durability) -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(|| start(durability))
    }

    /// The URL of the server's administrative database, to create others from.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
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
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        cmd.uid(id("-u")).gid(id("-g"));
    }
}

/// Servers die with their process but their directories stay; remove those of dead ones.
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

fn start(durability: Durability) -> Postgres {
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
    // the process exits and the server never outlives it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        match durability {
            Durability::Off => {
                cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                    .args(["-c", "full_page_writes=off"]);
            }
            // A user's server would have more than the 128 MB default; 1 GB of 24 is modest.
            Durability::Default => {
                cmd.args(["-c", "shared_buffers=1GB", "-c", "max_wal_size=4GB"]);
            }
        }
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
