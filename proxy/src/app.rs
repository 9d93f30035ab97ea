//! The process, wired from its [`Settings`]: start, follow the configuration sources until a
//! signal, then drain in order (connections, access log, shipping). `main` only parses flags,
//! sets up logging and calls [`run`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, watch};

use crate::accesslog::{AccessLog, AccessLogEntry, ShipQueue};
use crate::admission::Admission;
use crate::config::Routes;
use crate::crowdsec::CrowdSec;
use crate::managed::{Managed, ManagementClient};
use crate::reconfigure::{Change, ReconfigureError};
use crate::remediation::captcha::{Captcha, CaptchaSite};
use crate::server::{Server, StartError};
use crate::settings::{ManagedSettings, ServiceSource, Settings};
use crate::shutdown::Shutdown;
use crate::state::ProxyState;
use crate::workers::Workers;

/// How long the last access-log entries may take to reach management at exit.
const SHIP_AT_EXIT: Duration = Duration::from_secs(5);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open access log {}: {source}", .path)]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Listen(#[from] StartError),
    #[error("cannot listen on {addr} (metrics): {source}{holder}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
        holder: nb_os::PortHolder,
    },
    #[error(transparent)]
    Configuration(#[from] ReconfigureError),
    #[error("{0}")]
    Management(String),
    #[error(transparent)]
    AsnDb(#[from] crate::geo::GeoError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot write --ready-file {}: {source}", path.display())]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Runs the proxy until SIGTERM or Ctrl-C, then drains it.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let mut signals = Signals::new().map_err(StartupError::Signals)?;
    let (state, shipping) = build_state(&settings)?;
    let (server, cached_revision) = start(&settings, state.clone()).await?;
    let (finish_shipping, finish) = watch::channel(false);
    let ship_queue = shipping.as_ref().map(|(q, _)| q.clone());
    let managed = match (&settings.services, shipping) {
        (ServiceSource::Managed(m), Some(shipping)) => Some(managed(m, shipping)?),
        _ => None,
    };
    let managed = follow_management(&server, managed, cached_revision, finish);
    tokio::pin!(managed);
    let file = settings.services.file().map(Path::to_owned);
    let reload = crate::reload::watch(
        &server,
        file,
        settings.geo_db.clone(),
        settings.poll_interval,
    );
    tokio::select! {
        _ = reload => {}
        _ = &mut managed => {}
        name = signals.next() => tracing::info!(
            "{name}: shutting down; draining {} open connections (up to --shutdown-timeout {})",
            state.admission.active(),
            humantime::format_duration(settings.shutdown_timeout)
        ),
    }
    let shipping = (finish_shipping, ship_queue);
    shut_down(
        &server,
        settings.shutdown_timeout,
        signals,
        managed,
        shipping,
    )
    .await;
    Ok(())
}

/// Stops taking connections and lets open ones finish while the event shipper keeps running;
/// then writes the access log out and ships what remains. A second signal exits at once.
async fn shut_down(
    server: &Server,
    timeout: Duration,
    mut signals: Signals,
    mut managed: Pin<&mut impl Future<Output = ()>>,
    (finish_shipping, ship_queue): (watch::Sender<bool>, Option<ShipQueue>),
) {
    let state = server.state();
    server.stop_accepting();
    state.shutdown.drain();
    tokio::select! {
        _ = drain(state, timeout) => {}
        _ = &mut managed => {}
        name = signals.next() => exit_now(name),
    }
    // Every connection has written its entry: write them out, then ship what remains.
    tokio::task::block_in_place(|| state.access_log.close());
    let _ = finish_shipping.send(true);
    tokio::select! {
        r = tokio::time::timeout(SHIP_AT_EXIT, &mut managed) => if r.is_err() {
            let left = ship_queue.map_or(0, |q| q.queued());
            tracing::warn!("management unreachable at shutdown: {left} access-log entries not shipped");
        },
        name = signals.next() => exit_now(name),
    }
    tracing::info!("nb-proxy stopped");
}

type Shipping = (ShipQueue, mpsc::Receiver<Arc<AccessLogEntry>>);

/// The state every listener shares, with no services yet.
fn build_state(settings: &Settings) -> Result<(Arc<ProxyState>, Option<Shipping>), StartupError> {
    let mut access_log =
        AccessLog::open(settings.access_log.clone()).map_err(|source| StartupError::AccessLog {
            path: settings.access_log.to_string(),
            source,
        })?;
    let shipping = match &settings.services {
        ServiceSource::Managed(m) => {
            let (queue, rx) = ShipQueue::new(m.event_queue_size);
            access_log = access_log.with_shipping(queue.clone());
            Some((queue, rx))
        }
        _ => None,
    };
    let open_files = crate::process::raise_open_file_limit();
    // Each proxied connection holds two descriptors; keep some for listeners and files.
    let max_connections = settings
        .connections
        .max
        .unwrap_or_else(|| (open_files.saturating_sub(64) / 2).max(1) as usize);
    let per_ip = settings.connections.per_ip;
    crate::http::keep_upstream_connections_at_most(max_connections);
    tracing::info!(
        max_connections,
        max_connections_per_ip = per_ip,
        open_files,
        "connection limits"
    );
    let asn = match &settings.asn_db {
        Some(path) => {
            let db = crate::geo::AsnDb::open(path)?;
            tracing::info!(path = %path.display(), "ASN database loaded");
            Some(db)
        }
        None => None,
    };
    let usage: Arc<dyn crate::crowdsec::UsageCounts> = access_log.counts().clone();
    let state = ProxyState {
        routes: ArcSwap::from_pointee(Routes::default()),
        geo: ArcSwapOption::empty(),
        asn,
        access_log,
        clients: settings.clients.clone(),
        limits: settings.limits.clone(),
        crowdsec: CrowdSec::new(
            settings.lapi.clone(),
            tokio::runtime::Handle::current(),
            usage,
        ),
        captcha: captcha(&settings.captcha),
        appsec: settings.appsec.clone().map(crate::appsec::AppSec::new),
        admission: Admission::new(max_connections, per_ip),
        shutdown: Shutdown::default(),
        acme: crate::acme::Acme::new(settings.acme.clone()),
        policy: Default::default(),
    };
    // Idle until some service wants an ACME certificate.
    tokio::spawn(crate::acme::run(state.acme.clone()));
    Ok((Arc::new(state), shipping))
}

fn captcha(s: &crate::settings::CaptchaSettings) -> Captcha {
    let site = s.default_site.as_ref().map(|d| {
        CaptchaSite::new(
            d.provider,
            d.site_key.clone(),
            d.secret.clone(),
            d.cookie_ttl,
        )
    });
    Captcha::new(site, s.verify_url.clone(), s.cookie_key.clone())
}

/// Binds the listeners, then loads the GeoIP database and the first services; with the
/// revision of the cached services it serves, if any.
async fn start(
    settings: &Settings,
    state: Arc<ProxyState>,
) -> Result<(Server, Option<i64>), StartupError> {
    let workers = match settings.workers {
        Some(n) => Workers::start(n),
        None => Workers::per_core(),
    }
    .map_err(StartupError::Workers)?;
    let server = Server::start(
        state.clone(),
        settings.listeners.clone(),
        workers,
        settings.compile.clone(),
    )?;
    if let Some(path) = &settings.geo_db {
        server.reconfigure(Change::GeoDb(path.clone())).await?;
    }
    let mut cached_revision = None;
    match &settings.services {
        ServiceSource::File(path) => {
            server
                .reconfigure(Change::ServicesFile(path.clone()))
                .await?;
        }
        // Management may be down: the cached services, if any, until it answers.
        ServiceSource::Managed(m) => {
            let cached = server.reconfigure(Change::CachedServices(m.cache.clone()));
            cached_revision = cached.await.ok().and_then(|a| a.revision);
        }
        ServiceSource::Nothing => {
            tracing::warn!("neither --config nor --management-url given: serving no services")
        }
    }
    let mut metrics = None;
    if let Some(addr) = settings.metrics_listen {
        let l = crate::metrics::bind(addr)
            .await
            .map_err(|source| StartupError::Metrics {
                addr,
                holder: nb_os::PortHolder::find(addr, &source),
                source,
            })?;
        metrics = l.local_addr().ok();
        tokio::spawn(crate::metrics::serve(l, state.clone()));
    }
    let services = state.routes.load().services.len();
    tracing::info!(http = ?server.http_addr(), https = ?server.https_addr(), services, "nb-proxy ready");
    if let Some(path) = &settings.ready_file {
        let ready = serde_json::json!({
            "pid": std::process::id(),
            "http": server.http_addr().map(|a| a.to_string()),
            "https": server.https_addr().map(|a| a.to_string()),
            "metrics": metrics.map(|a| a.to_string()),
        });
        crate::process::write_atomically(path, ready.to_string().as_bytes()).map_err(|source| {
            StartupError::ReadyFile {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok((server, cached_revision))
}

fn managed(m: &ManagedSettings, (queue, events): Shipping) -> Result<Managed, StartupError> {
    let client = ManagementClient::new(m.url.clone(), m.token.expose(), Duration::from_secs(10))
        .map_err(StartupError::Management)?;
    Ok(Managed {
        client,
        cache: m.cache.clone(),
        report_interval: m.report_interval,
        events,
        events_dropped: queue.dropped_counter(),
    })
}

/// Managed mode: follows management until `finish`; standalone: waits for `finish`.
async fn follow_management(
    server: &Server,
    managed: Option<Managed>,
    cached_revision: Option<i64>,
    mut finish: watch::Receiver<bool>,
) {
    match managed {
        Some(m) => crate::managed::run(server, m, cached_revision, finish).await,
        None => {
            let _ = finish.wait_for(|f| *f).await;
        }
    }
}

/// Waits for open connections to finish; at `timeout`, cuts the rest and waits for them to
/// write their entries.
async fn drain(state: &ProxyState, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while state.admission.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.admission.active();
    if left == 0 {
        tracing::info!("all connections finished");
        return;
    }
    tracing::warn!("shutdown timeout: cutting {left} connections still open");
    state.shutdown.cut();
    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
    while state.admission.active() > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A second SIGTERM or Ctrl-C during shutdown: exit at once.
fn exit_now(name: &str) -> ! {
    tracing::warn!("{name} again: exiting now");
    std::process::exit(if name == "interrupted" { 130 } else { 143 });
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "terminated",
            _ = self.int.recv() => "interrupted",
        }
    }
}
