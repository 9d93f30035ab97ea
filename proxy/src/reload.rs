//! Standalone mode: reload the services file when it changes or on SIGHUP. A bad file is
//! rejected whole and the running configuration stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{load_file, CompileOptions};
use crate::server::Server;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// Runs forever: polls the file's modification time and listens for SIGHUP.
pub async fn watch_file(server: &Server, path: PathBuf, opts: CompileOptions, poll: Duration) {
    let mut last = stamp(&path);
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let by_signal = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamp(&path);
        if !by_signal && now == last {
            continue;
        }
        last = now;
        reload_once(server, &path, &opts).await;
    }
}

pub async fn reload_once(server: &Server, path: &Path, opts: &CompileOptions) -> bool {
    let name = path.display().to_string();
    let result = match load_file(path, opts) {
        Ok(routes) => {
            let services = routes.services.len();
            server.apply(routes, &name).await.map(|_| services)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(services) => {
            tracing::info!(file = %name, services, "configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!("configuration rejected, keeping the running one: {e}");
            false
        }
    }
}
