//! Managed mode: services come from management's stream, state goes back in periodic reports,
//! and access-log entries are shipped in batches. When management is unreachable the proxy keeps
//! serving what it has, also across its own restart (the list is cached on disk).

pub(crate) mod cache;
mod client;
mod shipper;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nb_api::{BouncerReport, ProxyReport, ServicesUpdate};
use tokio::sync::{mpsc, watch, Notify};

pub use client::{ManagementClient, ManagementError};
pub use nb_api::SseParser;

use crate::accesslog::AccessLogEntry;
use crate::backoff::backoff;
use crate::reconfigure::Change;
use crate::server::Server;

/// Management sends a keep-alive every 15 s; silence for this long means the stream is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Managed {
    pub client: ManagementClient,
    pub cache: PathBuf,
    pub report_interval: Duration,
    pub events: mpsc::Receiver<Arc<AccessLogEntry>>,
    pub events_dropped: Arc<AtomicU64>,
}

/// What this proxy last did with management's services, for its reports.
#[derive(Default)]
struct Applied {
    revision: Option<i64>,
    error: Option<String>,
    /// Management's salt for the bouncer key's fingerprint.
    key_salt: Option<String>,
}

/// What the stream, the reports and the shipper share while the proxy is managed.
struct Link<'a> {
    server: &'a Server,
    client: ManagementClient,
    cache: PathBuf,
    applied: Mutex<Applied>,
    report_now: Notify,
    events_dropped: Arc<AtomicU64>,
}

/// Runs until `finish` turns true (shutdown, once the access log has recorded its last
/// entries): then it stops following management, ships what is queued, and returns.
pub async fn run(
    server: &Server,
    m: Managed,
    cached_revision: Option<i64>,
    mut finish: watch::Receiver<bool>,
) {
    let link = Link {
        server,
        client: m.client,
        cache: m.cache,
        applied: Mutex::new(Applied {
            revision: cached_revision,
            ..Applied::default()
        }),
        report_now: Notify::new(),
        events_dropped: m.events_dropped,
    };
    let ship = shipper::ship(
        &link.client,
        m.events,
        link.events_dropped.clone(),
        finish.clone(),
    );
    let control = async {
        tokio::select! {
            _ = async { tokio::join!(link.follow(), link.report(m.report_interval)) } => {}
            _ = finish.wait_for(|f| *f) => {}
        }
    };
    tokio::join!(control, ship);
}

impl Link<'_> {
    async fn follow(&self) {
        let url = self.client.base().to_string();
        let mut failures = 0u32;
        let mut last_kind = String::new();
        loop {
            let e = match self.follow_once(&mut failures).await {
                Ok(()) => ManagementError::Other("management closed the stream".into()),
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            if e.kind() != last_kind {
                let services = self.server.state().routes.load().services.len();
                tracing::warn!(
                    "management at {url}: {e}; still serving the {services} services in use, reconnecting with backoff"
                );
                last_kind = e.kind();
            }
            tokio::time::sleep(backoff(failures, MAX_BACKOFF)).await;
        }
    }

    async fn follow_once(&self, failures: &mut u32) -> Result<(), ManagementError> {
        let response = self.client.stream().await?;
        tracing::info!(url = %self.client.base(), "connected to management");
        self.report_now.notify_one();
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        loop {
            let chunk = match tokio::time::timeout(STREAM_SILENCE, body.next()).await {
                Err(_) => return Err(ManagementError::Timeout),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    return Err(ManagementError::Other(format!(
                        "stream broken: {}",
                        e.without_url()
                    )))
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            for event in parser.push(&chunk).map_err(ManagementError::Other)? {
                if event.name != nb_api::paths::SERVICES_EVENT {
                    continue;
                }
                let update: ServicesUpdate = serde_json::from_str(&event.data).map_err(|e| {
                    ManagementError::Other(format!("unreadable services event: {e}"))
                })?;
                *failures = 0;
                self.apply(update).await;
                self.report_now.notify_one();
            }
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn apply(&self, update: ServicesUpdate) {
        let unchanged = {
            let mut a = self.applied();
            if update.key_salt.is_some() {
                a.key_salt.clone_from(&update.key_salt);
            }
            a.revision == Some(update.revision) && a.error.is_none()
        };
        if unchanged {
            return;
        }
        let change = Change::Management {
            update,
            cache: self.cache.clone(),
        };
        let result = self.server.reconfigure(change).await;
        let mut a = self.applied();
        match result {
            Ok(applied) => {
                a.revision = applied.revision;
                a.error = None;
            }
            Err(e) => a.error = Some(e.to_string()),
        }
    }

    async fn report(&self, every: Duration) {
        let mut failing = false;
        loop {
            let report = {
                let a = self.applied();
                build_report(self.server, &a, self.events_dropped.load(Ordering::Relaxed))
            };
            match self.client.report(&report).await {
                Ok(()) => failing = false,
                Err(e) => {
                    // The stream's own log says why management is unreachable.
                    if !failing {
                        tracing::debug!("cannot report to management: {e}");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.report_now.notified() => {}
            }
        }
    }
}

fn build_report(server: &Server, applied: &Applied, events_dropped: u64) -> ProxyReport {
    let crowdsec = &server.state().crowdsec;
    let bouncer = crowdsec.is_configured().then(|| {
        let s = crowdsec.status();
        BouncerReport {
            running: s.running,
            synced: s.synced,
            stale: s.stale,
            decisions: s.decisions as u64,
            last_sync: s
                .last_sync
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            last_error: s.last_error,
        }
    });
    ProxyReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supports_crowdsec: crowdsec.is_configured(),
        supports_appsec: server.state().appsec.is_some(),
        bouncer,
        config_revision: applied.revision,
        config_error: applied.error.clone(),
        events_dropped,
        crowdsec_key_fingerprint: applied
            .key_salt
            .as_deref()
            .and_then(|salt| crowdsec.key_fingerprint(salt)),
        targets: crate::balance::report(&server.state().routes.load()),
    }
}
