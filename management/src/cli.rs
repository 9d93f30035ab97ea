//! Command-line flags; every flag is also an `NB_MANAGEMENT_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 10m, 30d)"))
}

/// A size in bytes: a number, optionally with KiB, MiB or GiB.
fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 2GiB, 500MiB or bytes)"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
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
        global = true,
        env = "NB_MANAGEMENT_DATA_DIR",
        default_value = "nb-management-data"
    )]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB` (several replicas may share one
    /// PostgreSQL database). Default: `management.db` in the data directory.
    #[arg(
        long,
        global = true,
        env = "NB_MANAGEMENT_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// The admin token for the API (16+ characters; stored as a salted argon2id hash). Without
    /// it, one is generated on first start and written to `admin-token` in the data directory.
    /// Prefer --admin-token-file or an env file: command lines are visible in `ps`.
    #[arg(long, env = "NB_MANAGEMENT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Read the admin token from this file (first line).
    #[arg(
        long,
        env = "NB_MANAGEMENT_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,

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

    /// At most about this much event data is kept, newest first (`0` for no limit), e.g.
    /// `2GiB`, `500MiB`, or bytes.
    #[arg(long, env = "NB_MANAGEMENT_EVENTS_MAX_BYTES", default_value = "2GiB", value_parser = size)]
    pub events_max_bytes: u64,

    /// Audit entries older than this are removed (`0` keeps them forever). Separate from the
    /// events: who changed what is usually kept longer than traffic.
    #[arg(long, env = "NB_MANAGEMENT_AUDIT_MAX_AGE", default_value = "400d", value_parser = duration)]
    pub audit_max_age: Duration,

    /// How long a dashboard sign-in lasts.
    #[arg(long, env = "NB_MANAGEMENT_SESSION_LIFETIME", default_value = "12h", value_parser = duration)]
    pub session_lifetime: Duration,

    /// How often retention runs.
    #[arg(long, env = "NB_MANAGEMENT_RETENTION_INTERVAL", default_value = "60s", value_parser = duration)]
    pub retention_interval: Duration,

    /// How often each replica checks the database for service changes made by other replicas.
    #[arg(long, env = "NB_MANAGEMENT_CHANGE_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub change_poll_interval: Duration,

    /// Failed authentications one source address may make per second; more get 429 for the
    /// rest of the second (`0`: no limit). Behind a reverse proxy every request has its address:
    /// raise this, or keep it and accept that a guesser slows everyone down for a second.
    #[arg(
        long,
        env = "NB_MANAGEMENT_AUTH_FAILURES_PER_SECOND",
        default_value_t = 10
    )]
    pub auth_failures_per_second: u32,

    /// On SIGTERM: proxy streams are closed at once; requests in flight get this long to finish.
    /// A second SIGTERM (or Ctrl-C) exits at once.
    #[arg(long, env = "NB_MANAGEMENT_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Both files are read
    /// again when they change: a renewed certificate needs no restart. Session cookies are
    /// then marked Secure.
    #[arg(long, env = "NB_MANAGEMENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "NB_MANAGEMENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often --tls-cert and --tls-key are checked for changes.
    #[arg(long, env = "NB_MANAGEMENT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = duration)]
    pub tls_reload_interval: Duration,

    /// Let pages from this origin (`https://tools.example.com`) call the API from a browser
    /// (CORS), with a personal or admin token. Repeat it, or separate origins with commas.
    /// Without it no other origin may.
    #[arg(long, env = "NB_MANAGEMENT_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,

    /// Once serving, write the address actually bound to this file as JSON, atomically: for
    /// supervisors and tests that listen on port 0.
    #[arg(long, env = "NB_MANAGEMENT_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Print the API's OpenAPI document (JSON) and exit. `dashboard/openapi.json` is this
    /// output; the dashboard's TypeScript types are generated from it.
    #[arg(long)]
    pub openapi: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Log filter (tracing syntax), e.g. `info` or `nb_management=debug`.
    #[arg(long, global = true, env = "NB_MANAGEMENT_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage the people who sign in (the server need not be running).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from --password-file, else from
    /// NB_MANAGEMENT_USER_PASSWORD, else asked for on the terminal (or read from standard input).
    Add {
        /// Letters, digits, '.', '_', '-' or '@'.
        name: String,
        /// admin (everything, users included), operator (services and proxies) or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Read the password from this file (first line).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List the users and their roles.
    List,
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes() {
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("500 MiB"), Ok(500 << 20));
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("0"), Ok(0));
        assert!(size("lots").is_err());
        assert!(size("5TB").is_err());
    }
}
