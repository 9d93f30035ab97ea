//! The workspace's binaries, and their ready files: a process started with `--ready-file F`
//! writes F (atomically, as JSON) once it serves, naming the addresses it bound. Tests start
//! listeners on port 0 and read the real ones back, instead of guessing free ports or grepping
//! log prose.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

/// `name` in the target directory the running test binary was built into. `cargo test
/// --workspace` builds every binary before it runs any test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name}` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Waits for `child` to write its ready file; panics with `log()` if it exits or takes more
/// than 15 s.
pub async fn wait_ready(child: &mut Child, ready_file: &Path, log: impl Fn() -> String) -> Value {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(ready_file) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("unreadable ready file {text:?}: {e}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before it was ready:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not ready within 15 s:\n{}", log());
}

/// An address from a ready file.
pub fn address(ready: &Value, key: &str) -> Option<std::net::SocketAddr> {
    ready[key].as_str().map(|a| a.parse().expect("an address"))
}
