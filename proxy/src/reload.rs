//! Reload the services file (standalone mode) and the GeoIP database when they change or on
//! SIGHUP. A bad file is rejected whole and what runs stays. SIGHUP and SIGUSR1 also reopen the
//! access log (for logrotate).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{load_file, CompileOptions};
use crate::geo::GeoDb;
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
    config: Option<(PathBuf, CompileOptions)>,
    geo_db: Option<PathBuf>,
    poll: Duration,
) {
    let mut config_stamp = config.as_ref().and_then(|(p, _)| stamp(p));
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
        if let Some((path, opts)) = &config {
            let now = stamp(path);
            if by_signal || now != config_stamp {
                config_stamp = now;
                reload_once(server, path, opts).await;
            }
        }
        if let Some(path) = &geo_db {
            let now = stamp(path);
            if by_signal || now != geo_stamp {
                geo_stamp = now;
                reload_geo(server, path);
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

/// Loads the GeoIP database again; a file that does not load leaves the current one in place.
pub fn reload_geo(server: &Server, path: &Path) -> bool {
    match GeoDb::open(path) {
        Ok(db) => {
            tracing::info!(path = %path.display(), kind = db.database_type(), "GeoIP database reloaded");
            server.state().geo.store(Some(std::sync::Arc::new(db)));
            true
        }
        Err(e) => {
            tracing::error!("GeoIP database rejected, keeping the loaded one: {e}");
            false
        }
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
