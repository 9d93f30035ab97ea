//! Reload the services file (standalone mode) and the GeoIP database when they change or on
//! SIGHUP, and the running services' certificate, key and CA files when they change (in both
//! modes). A bad file is rejected whole and what runs stays. SIGHUP and SIGUSR1 also reopen the
//! access log (for logrotate).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::FileStamp;
use crate::reconfigure::Change;
use crate::server::Server;

fn stamp(path: &Path) -> Option<FileStamp> {
    FileStamp::of(path)
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
    let mut certificates = CertificateFiles::default();
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
        certificates.check(server).await;
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

/// Watches the files the running routes read. A change compiles the same services again; a
/// change that is rejected (a certificate written before its key) is retried only when the
/// files change again, so that it is reported once.
#[derive(Default)]
struct CertificateFiles {
    rejected: Option<Vec<Option<FileStamp>>>,
}

impl CertificateFiles {
    async fn check(&mut self, server: &Server) {
        let routes = server.state().routes.load();
        let now: Vec<Option<FileStamp>> = routes.files.iter().map(|(p, _)| stamp(p)).collect();
        let changed = routes
            .files
            .iter()
            .zip(&now)
            .any(|((_, then), now)| then != now);
        drop(routes);
        if !changed || self.rejected.as_ref() == Some(&now) {
            return;
        }
        self.rejected = match server.reconfigure(Change::Certificates).await {
            Ok(_) => None,
            Err(_) => Some(now),
        };
    }
}
