//! Command-line flags; every flag is also an `NB_MANAGEMENT_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 10m, 30d)"))
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "nb-management",
    version,
    about = "Management plane for nb-proxy: services, proxies and access-log events"
)]
pub struct Args {
    /// Address of the API (and dashboard).
    #[arg(long, env = "NB_MANAGEMENT_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Where the default SQLite database lives (created if missing).
    #[arg(
        long,
        env = "NB_MANAGEMENT_DATA_DIR",
        default_value = "nb-management-data"
    )]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB` (several replicas may share one
    /// PostgreSQL database). Default: `management.db` in the data directory.
    #[arg(long, env = "NB_MANAGEMENT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The admin token for the API. Without it, one is generated on first start, printed once,
    /// and only its hash is kept.
    #[arg(long, env = "NB_MANAGEMENT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A proxy counts as live (for CrowdSec support) if seen within this window.
    #[arg(long, env = "NB_MANAGEMENT_PROXY_LIVE_WINDOW", default_value = "60s", value_parser = duration)]
    pub proxy_live_window: Duration,

    /// Events older than this are removed (`0` keeps them forever).
    #[arg(long, env = "NB_MANAGEMENT_EVENTS_MAX_AGE", default_value = "30d", value_parser = duration)]
    pub events_max_age: Duration,

    /// At most this many events are kept, newest first (`0` for no limit).
    #[arg(
        long,
        env = "NB_MANAGEMENT_EVENTS_MAX_ROWS",
        default_value_t = 5_000_000
    )]
    pub events_max_rows: u64,

    /// How often retention runs.
    #[arg(long, env = "NB_MANAGEMENT_RETENTION_INTERVAL", default_value = "60s", value_parser = duration)]
    pub retention_interval: Duration,

    /// How often each replica checks the database for service changes made by other replicas.
    #[arg(long, env = "NB_MANAGEMENT_CHANGE_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub change_poll_interval: Duration,

    /// On SIGTERM: proxy streams are closed at once; requests in flight get this long to finish.
    /// A second SIGTERM (or Ctrl-C) exits at once.
    #[arg(long, env = "NB_MANAGEMENT_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Log filter (tracing syntax), e.g. `info` or `nb_management=debug`.
    #[arg(long, env = "NB_MANAGEMENT_LOG", default_value = "info")]
    pub log: String,
}

impl Args {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("management.db").display()
            ),
        }
    }
}
