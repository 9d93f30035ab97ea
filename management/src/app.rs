//! The process, wired from its [`Config`]: open the store, settle the admin token, serve the
//! API until a signal, then close proxy streams and let requests finish. `main` only parses
//! flags, sets up logging and calls [`run`].

use crate::config::Config;
use crate::server::{serve, settle_admin_token, start, StartError};
use crate::store::{redact_url, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    DataDir(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    AdminTokenFile(String),
    #[error("cannot listen on {addr}: {source}{holder}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
        holder: nb_os::PortHolder,
    },
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot write --ready-file {}: {source}", path.display())]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The ready file, replaced whole (written beside it, then renamed).
fn announce_ready(
    path: &std::path::Path,
    listen: std::net::SocketAddr,
    https: bool,
) -> std::io::Result<()> {
    let scheme = if https { "https" } else { "http" };
    let ready = serde_json::json!({
        "pid": std::process::id(),
        "listen": listen.to_string(),
        "url": format!("{scheme}://{listen}"),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, ready.to_string())?;
    std::fs::rename(&tmp, path)
}

/// Runs nb-management until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), RunError> {
    let store = open_store(&config).await?;
    let (hash, generated) = settle_admin_token(&store, config.admin_token.as_deref()).await?;
    if store.count_users().await? == 0 {
        tracing::info!(
            "no users yet: create the first admin with `nb-management user add NAME --role admin` \
             (same --data-dir or --database-url); until then, sign in with the admin token"
        );
    }
    if let Some(token) = generated {
        announce_generated_token(&config, &token)?;
    }
    // A bad certificate or key stops the start, before anything listens.
    let tls = config
        .tls
        .as_ref()
        .map(|(files, every)| {
            Ok::<_, RunError>((crate::tls::Certificate::load(files.clone())?, *every))
        })
        .transpose()?;
    let running = start(
        store.clone(),
        hash,
        config.api.clone(),
        config.retention,
        config.change_poll_interval,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            holder: nb_os::PortHolder::find(config.listen, &source),
            source,
        })?;
    let bound = listener.local_addr().map_err(RunError::Serve)?;
    let https = tls.is_some();
    tracing::info!(
        listen = %bound,
        url = %format!("{}://{bound}", if https { "https" } else { "http" }),
        "nb-management ready"
    );
    if let Some(path) = &config.ready_file {
        announce_ready(path, bound, https).map_err(|source| RunError::ReadyFile {
            path: path.clone(),
            source,
        })?;
    }
    let mut signalled = on_signals()?;
    let mut stop = signalled.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match tls {
            Some((certificate, every)) => {
                tokio::spawn(certificate.clone().watch(every));
                use axum::serve::ListenerExt;
                let listener = crate::tls::TlsListener::new(listener, certificate.server_config())
                    .map_err(RunError::Serve)?
                    .tap_io(|_| {});
                Box::pin(serve(listener, running, stopped))
            }
            None => Box::pin(serve(listener, running, stopped)),
        };
    let timeout = config.shutdown_timeout;
    tokio::select! {
        r = server => r.map_err(RunError::Serve)?,
        _ = async { let _ = signalled.wait_for(|s| *s).await; tokio::time::sleep(timeout).await } => {
            tracing::warn!(
                "shutdown timeout ({}): exiting with requests still open",
                humantime::format_duration(timeout)
            );
        }
    }
    store.close().await;
    tracing::info!("nb-management stopped");
    Ok(())
}

async fn open_store(config: &Config) -> Result<Store, RunError> {
    crate::secrets::private_data_dir(&config.data_dir).map_err(RunError::DataDir)?;
    let store = Store::open(&config.database_url).await?;
    crate::secrets::private_database_files(&config.data_dir);
    tracing::info!(
        database = %redact_url(&config.database_url),
        schema = store.known_schema_version(),
        "database ready"
    );
    Ok(store)
}

/// Never through the log or the terminal's scrollback: a private file.
fn announce_generated_token(config: &Config, token: &str) -> Result<(), RunError> {
    let path = crate::secrets::write_admin_token(&config.data_dir, token)
        .map_err(RunError::AdminTokenFile)?;
    eprintln!(
        "\n  nb-management generated an admin token and wrote it to {} (readable only by this user;\n  only its hash is stored). Read it with: cat {}\n",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Turns true at the first SIGTERM or Ctrl-C; a second one exits at once.
fn on_signals() -> Result<tokio::sync::watch::Receiver<bool>, RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut signals = (term, int);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let name = next_signal(&mut signals).await;
        tracing::info!("{name}: shutting down (closing proxy streams)");
        let _ = tx.send(true);
        let again = next_signal(&mut signals).await;
        tracing::warn!("{again} again: exiting now");
        std::process::exit(if again == "interrupted" { 130 } else { 143 });
    });
    Ok(rx)
}

async fn next_signal(
    (term, int): &mut (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "terminated",
        _ = int.recv() => "interrupted",
    }
}
