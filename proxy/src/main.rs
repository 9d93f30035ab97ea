use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::Parser;

use nb_proxy::accesslog::{AccessLog, Destination, ShipQueue};
use nb_proxy::admission::Admission;
use nb_proxy::cli::Args;
use nb_proxy::clientip::ClientAddressPolicy;
use nb_proxy::config::{load_file, parse_cidr, CompileOptions, Routes};
use nb_proxy::crowdsec::{ApiKey, CrowdSec, DecisionFilter, LapiConfig};
use nb_proxy::geo::GeoDb;
use nb_proxy::managed::{cached_routes, Managed, ManagementClient};
use nb_proxy::restrict::IpSet;
use nb_proxy::server::{Listeners, Server};
use nb_proxy::shutdown::Shutdown;
use nb_proxy::state::{Limits, ProxyState};
use nb_proxy::workers::Workers;

// The request path allocates a little per request (headers, log entry); mimalloc's per-thread
// heaps suit the thread-per-core workers better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    nb_proxy::process::private_files();
    nb_proxy::process::survive_file_size_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nb-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("nb-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut trusted = Vec::new();
    for s in &args.trusted_proxies {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        trusted.push(parse_cidr(s).map_err(|e| format!("--trusted-proxies: {e}"))?);
    }
    let geo = match &args.geo_db {
        Some(path) => {
            let db = GeoDb::open(path).map_err(|e| e.to_string())?;
            tracing::info!(path = %path.display(), kind = db.database_type(), "GeoIP database loaded");
            Some(db)
        }
        None => None,
    };
    let opts = CompileOptions {
        tls_dir: args.tls_dir.clone(),
    };
    let management = management_client(&args)?;
    let mut cached_revision = None;
    let routes = match (&args.config, &management) {
        (Some(path), _) => load_file(path, &opts).map_err(|e| e.to_string())?,
        (None, Some(_)) => match cached_routes(&args.management_cache, &opts) {
            Some((revision, routes)) => {
                cached_revision = Some(revision);
                routes
            }
            None => Routes::default(),
        },
        (None, None) => {
            tracing::warn!("neither --config nor --management-url given: serving no services");
            Routes::default()
        }
    };
    let mut access_log = AccessLog::open(Destination::parse(&args.access_log))
        .map_err(|e| format!("cannot open access log {}: {e}", args.access_log))?;
    let mut shipping = None;
    if management.is_some() {
        let (queue, rx) = ShipQueue::new(args.event_queue_size);
        access_log = access_log.with_shipping(queue.clone());
        shipping = Some((queue, rx));
    }
    let crowdsec = CrowdSec::new(lapi_config(&args)?, tokio::runtime::Handle::current());
    let open_files = nb_proxy::process::raise_open_file_limit();
    let max_connections = match args.max_connections {
        // Each proxied connection holds two descriptors; keep some for listeners and files.
        0 => (open_files.saturating_sub(64) / 2).max(1) as usize,
        n => n,
    };
    tracing::info!(
        max_connections,
        max_connections_per_ip = args.max_connections_per_ip,
        open_files,
        "connection limits"
    );
    let state = Arc::new(ProxyState {
        routes: ArcSwap::from_pointee(routes),
        geo: arc_swap::ArcSwapOption::from(geo.map(Arc::new)),
        access_log,
        clients: ClientAddressPolicy {
            trusted: IpSet::new(&trusted),
            proxy_protocol: args.proxy_protocol,
            header_timeout: args.proxy_protocol_timeout,
        },
        limits: Limits {
            header_read_timeout: args.header_read_timeout,
            max_header_bytes: args.max_header_size,
            idle_timeout: args.idle_timeout,
            connect_timeout: args.upstream_connect_timeout,
            upstream_timeout: args.upstream_timeout,
            tls_handshake_timeout: args.tls_handshake_timeout,
            request_body_timeout: args.request_body_timeout,
            request_body_min_rate: args.request_body_min_rate,
        },
        crowdsec,
        admission: Admission::new(max_connections, args.max_connections_per_ip),
        shutdown: Shutdown::default(),
    });
    let workers = Workers::per_core().map_err(|e| format!("cannot start worker threads: {e}"))?;
    let server = Server::start(
        state.clone(),
        Listeners {
            http: Some(args.http_listen),
            https: args.https_listen,
        },
        workers,
    )
    .await
    .map_err(|e| e.to_string())?;
    if let Some(addr) = args.metrics_listen {
        let l = nb_proxy::metrics::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))?;
        tokio::spawn(nb_proxy::metrics::serve(l, state.clone()));
    }
    let services = state.routes.load().services.len();
    tracing::info!(
        http = ?server.http_addr(),
        https = ?server.https_addr(),
        services,
        "nb-proxy ready"
    );

    let config = args.config.clone().map(|p| (p, opts));
    let reload = nb_proxy::reload::watch(
        &server,
        config,
        args.geo_db.clone(),
        args.config_poll_interval,
    );
    let (finish_shipping, finish) = tokio::sync::watch::channel(false);
    let ship_queue = shipping.as_ref().map(|(q, _)| q.clone());
    let managed = async {
        match (management, shipping) {
            (Some(client), Some((queue, events))) => {
                let m = Managed {
                    client,
                    cache: args.management_cache.clone(),
                    report_interval: args.management_report_interval,
                    compile: CompileOptions {
                        tls_dir: args.tls_dir.clone(),
                    },
                    events,
                    events_dropped: queue.dropped_counter(),
                };
                nb_proxy::managed::run(&server, m, cached_revision, finish).await
            }
            // Standalone: nothing to ship; done when told to finish.
            _ => {
                let mut finish = finish;
                let _ = finish.wait_for(|f| *f).await;
            }
        }
    };
    tokio::pin!(managed);
    let mut signals = Signals::new()?;
    tokio::select! {
        _ = reload => {}
        _ = &mut managed => {}
        name = signals.next() => tracing::info!(
            "{name}: shutting down; draining {} open connections (up to --shutdown-timeout {})",
            state.admission.active(),
            humantime::format_duration(args.shutdown_timeout)
        ),
    }
    // Stop taking connections and let open ones finish; the event shipper keeps running.
    server.stop_accepting();
    state.shutdown.drain();
    tokio::select! {
        _ = drain(&state, args.shutdown_timeout) => {}
        _ = &mut managed => {}
        name = signals.next() => exit_now(name),
    }
    // Every connection has written its entry: write them out, then ship what remains.
    tokio::task::block_in_place(|| state.access_log.close());
    let _ = finish_shipping.send(true);
    tokio::select! {
        r = tokio::time::timeout(SHIP_AT_EXIT, &mut managed) => {
            if r.is_err() {
                let left = ship_queue.map_or(0, |q| q.queued());
                tracing::warn!(
                    "management unreachable at shutdown: {left} access-log entries not shipped"
                );
            }
        }
        name = signals.next() => exit_now(name),
    }
    tracing::info!("nb-proxy stopped");
    Ok(())
}

/// How long the last access-log entries may take to reach management at exit.
const SHIP_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for open connections to finish; at `timeout`, cuts the rest and waits for them to
/// write their entries.
async fn drain(state: &ProxyState, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while state.admission.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let left = state.admission.active();
    if left == 0 {
        tracing::info!("all connections finished");
        return;
    }
    tracing::warn!("shutdown timeout: cutting {left} connections still open");
    state.shutdown.cut();
    let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while state.admission.active() > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
    fn new() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "terminated",
            _ = self.int.recv() => "interrupted",
        }
    }
}

fn management_client(args: &Args) -> Result<Option<ManagementClient>, String> {
    let Some(url) = args
        .management_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let url: reqwest::Url = url
        .parse()
        .map_err(|e| format!("--management-url {url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--management-url {url} must be http:// or https://"
        ));
    }
    let token = args.token()?;
    let token = token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(
            "--management-url needs --token or --token-file (a proxy token created in management)",
        )?;
    ManagementClient::new(url, token, std::time::Duration::from_secs(10)).map(Some)
}

fn lapi_config(args: &Args) -> Result<Option<LapiConfig>, String> {
    let Some(url) = args
        .crowdsec_api_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        if args.crowdsec_api_key.is_some() || args.crowdsec_api_key_file.is_some() {
            tracing::warn!(
                "--crowdsec-api-key is set without --crowdsec-api-url: CrowdSec stays off"
            );
        }
        return Ok(None);
    };
    let api_key = args.crowdsec_api_key()?;
    let url: reqwest::Url = url
        .trim()
        .parse()
        .map_err(|e| format!("--crowdsec-api-url {url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--crowdsec-api-url {url} must be http:// or https://"
        ));
    }
    if api_key.is_none() && args.crowdsec_client_cert.is_none() {
        return Err("--crowdsec-api-url needs --crowdsec-api-key (from `cscli bouncers add`) or a client certificate".into());
    }
    let mut cfg = LapiConfig::new(url);
    cfg.api_key = api_key.map(ApiKey::new);
    cfg.ca_cert = args.crowdsec_ca_cert.clone();
    cfg.client_cert = args.crowdsec_client_cert.clone();
    cfg.client_key = args.crowdsec_client_key.clone();
    cfg.insecure_skip_verify = args.crowdsec_insecure_skip_verify;
    cfg.update_interval = args.crowdsec_update_interval;
    cfg.resync_interval = args.crowdsec_resync_interval;
    cfg.timeout = args.crowdsec_timeout;
    cfg.sync_timeout = args.crowdsec_sync_timeout;
    cfg.max_decisions = args.crowdsec_max_decisions;
    cfg.filter = DecisionFilter::new(
        args.crowdsec_origins.clone(),
        args.crowdsec_scenarios_containing.clone(),
        args.crowdsec_scenarios_not_containing.clone(),
        args.crowdsec_types.clone(),
    );
    // Fail at start, not at the first service, when files are missing.
    nb_proxy::crowdsec::LapiClient::new(cfg.clone()).map_err(|e| e.to_string())?;
    Ok(Some(cfg))
}
