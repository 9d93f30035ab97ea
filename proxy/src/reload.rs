//! Reload the services file (standalone mode) and the GeoIP database when they change or on
//! SIGHUP. A bad file is rejected whole and what runs stays. SIGHUP and SIGUSR1 also reopen the
//! access log (for logrotate).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::reconfigure::Change;
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

/// Runs forever: polls the files' modification times and listens for SIGHUP.
pub async fn watch(
    server: &Server,
    services_file: Option<PathBuf>,
    geo_db: Option<PathBuf>,
    poll: Duration,
) {
    let mut config_stamp = services_file.as_deref().and_then(stamp);
    let mut geo_stamp = geo_db.as_deref().and_then(stamp);
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut usr1 = signal(SignalKind::user_defined1()).ok();
    loop {
        let by_signal = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            Some(_) = recv(&mut hup) => true,
            Some(_) = recv(&mut usr1) => {
                server.state().access_log.reopen();
                continue;
            }
        };
        if by_signal {
            // logrotate's postrotate may send either signal.
            server.state().access_log.reopen();
        }
        // Rejections are reported by `reconfigure`, and what runs stays.
        if let Some(path) = &services_file {
            let now = stamp(path);
            if by_signal || now != config_stamp {
                config_stamp = now;
                let _ = server.reconfigure(Change::ServicesFile(path.clone())).await;
            }
        }
        if let Some(path) = &geo_db {
            let now = stamp(path);
            if by_signal || now != geo_stamp {
                geo_stamp = now;
                let _ = server.reconfigure(Change::GeoDb(path.clone())).await;
            }
        }
    }
}

async fn recv(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
