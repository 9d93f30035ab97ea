use std::process::ExitCode;

use clap::Parser;

use nb_management::api::Settings;
use nb_management::cli::Args;
use nb_management::retention::Retention;
use nb_management::server::{serve, settle_admin_token, start};
use nb_management::store::{redact_url, Store};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.openapi {
        println!("{}", nb_management::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    nb_management::secrets::private_files();
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
            eprintln!("nb-management: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("nb-management: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let url = args.database_url();
    nb_management::secrets::private_data_dir(&args.data_dir)?;
    let store = Store::open(&url).await.map_err(|e| e.to_string())?;
    nb_management::secrets::private_database_files(&args.data_dir);
    tracing::info!(database = %redact_url(&url), schema = store.known_schema_version(), "database ready");

    let chosen = args.admin_token()?;
    let (hash, generated) = settle_admin_token(&store, chosen.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(token) = generated {
        // Never through the log or the terminal's scrollback: a private file.
        let path = nb_management::secrets::write_admin_token(&args.data_dir, &token)?;
        eprintln!(
            "\n  nb-management generated an admin token and wrote it to {} (readable only by this user;\n  only its hash is stored). Read it with: cat {}\n",
            path.display(),
            path.display()
        );
    }

    let retention = Retention {
        max_age: Some(args.events_max_age).filter(|d| !d.is_zero()),
        max_rows: Some(args.events_max_rows).filter(|n| *n > 0),
        max_bytes: Some(args.events_max_bytes).filter(|n| *n > 0),
        interval: args.retention_interval,
    };
    let settings = Settings {
        live_window: args.proxy_live_window,
        events_max_age: retention.max_age,
        auth_failures_per_second: args.auth_failures_per_second,
        ..Settings::default()
    };
    let running = start(
        store.clone(),
        hash,
        settings,
        retention,
        args.change_poll_interval,
    )
    .await
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, "nb-management ready");
    let (signalled, mut first) = tokio::sync::watch::channel(false);
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!("{name}: shutting down (closing proxy streams)");
        let _ = signalled.send(true);
        let again = signals.next().await;
        tracing::warn!("{again} again: exiting now");
        std::process::exit(if again == "interrupted" { 130 } else { 143 });
    });
    let mut stop = first.clone();
    let server = serve(listener, running, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    tokio::pin!(server);
    let timeout = args.shutdown_timeout;
    tokio::select! {
        r = &mut server => r.map_err(|e| format!("server failed: {e}"))?,
        _ = async { let _ = first.wait_for(|s| *s).await; tokio::time::sleep(timeout).await } => {
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
