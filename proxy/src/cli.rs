//! Command-line flags; every flag is also an `NB_PROXY_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn captcha_provider(s: &str) -> Result<nb_api::CaptchaProvider, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("{s:?} is not a captcha provider (turnstile, hcaptcha, recaptcha)"))
}

fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not an HTTP header name"))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 10s, 500ms, 2m)"))
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "nb-proxy",
    version,
    about = "Reverse proxy with per-service access control"
)]
pub struct Args {
    /// Standalone mode: services from a YAML file (reloaded on change and on SIGHUP).
    #[arg(long, env = "NB_PROXY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Managed mode: management's base URL (e.g. http://management:8090). Services come from
    /// its stream and access-log entries go to it; the last services are kept on disk.
    #[arg(long, env = "NB_PROXY_MANAGEMENT_URL", conflicts_with = "config")]
    pub management_url: Option<String>,

    /// This proxy's token, created in management (POST /api/v1/proxies or the dashboard).
    /// Prefer --token-file or an env file: command lines are visible in `ps`.
    #[arg(long, env = "NB_PROXY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read this proxy's token from a file (first line).
    #[arg(long, env = "NB_PROXY_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// Managed mode: where the last services received are kept, so that a restart while
    /// management is down still serves them.
    #[arg(
        long,
        env = "NB_PROXY_MANAGEMENT_CACHE",
        default_value = "nb-proxy-services.json"
    )]
    pub management_cache: PathBuf,

    /// Managed mode: how often the proxy reports its state (bouncer, drops) to management.
    #[arg(long, env = "NB_PROXY_MANAGEMENT_REPORT_INTERVAL", default_value = "10s", value_parser = duration)]
    pub management_report_interval: Duration,

    /// Managed mode: access-log entries waiting to be shipped; beyond it entries are dropped,
    /// counted and reported.
    #[arg(long, env = "NB_PROXY_EVENT_QUEUE_SIZE", default_value_t = 65_536)]
    pub event_queue_size: usize,

    /// Listener for HTTP services, routed by Host (port 8000: clear of the CrowdSec LAPI's 8080
    /// and nb-management's 8090 on the same machine).
    #[arg(long, env = "NB_PROXY_HTTP_LISTEN", default_value = "0.0.0.0:8000")]
    pub http_listen: SocketAddr,

    /// Listener for HTTP services that terminate TLS (certificate chosen by SNI).
    #[arg(long, env = "NB_PROXY_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,

    /// The port clients reach the HTTPS listener on, when it is not the listener's own (a
    /// container's port mapping): plain-HTTP requests for hosts with a certificate are
    /// redirected there.
    #[arg(long, env = "NB_PROXY_HTTPS_PUBLIC_PORT")]
    pub https_public_port: Option<u16>,

    /// Directory of `<host>.crt` / `<host>.key` pairs for HTTP hosts without their own `tls`.
    #[arg(long, env = "NB_PROXY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// ACME directory for services with `tls: {acme: true}` (default: Let's Encrypt).
    #[arg(long, env = "NB_PROXY_ACME_DIRECTORY", default_value = crate::acme::LETS_ENCRYPT)]
    pub acme_directory: String,

    /// Contact e-mail for the ACME account (the CA's expiry notices), optional.
    #[arg(long, env = "NB_PROXY_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// Where the ACME account key and certificates are kept (0600 files), across restarts.
    #[arg(long, env = "NB_PROXY_ACME_CACHE_DIR", default_value = "acme")]
    pub acme_cache_dir: PathBuf,

    /// A PEM CA that signs the ACME directory's HTTPS certificate (a private CA such as
    /// step-ca, or pebble in tests) instead of the system's CAs.
    #[arg(long, env = "NB_PROXY_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,

    /// The challenge the CA checks: http-01 on the plain listener (port 80), or tls-alpn-01
    /// on the HTTPS listener (port 443).
    #[arg(
        long,
        env = "NB_PROXY_ACME_CHALLENGE",
        value_enum,
        default_value = "http-01"
    )]
    pub acme_challenge: crate::acme::ChallengeKind,

    /// JSON-lines access log: a file path, `-` for stdout, or `off`.
    #[arg(long, env = "NB_PROXY_ACCESS_LOG", default_value = "-")]
    pub access_log: String,

    /// MaxMind-format Country or City database, needed by country lists (reloaded when the
    /// file changes and on SIGHUP).
    #[arg(long, env = "NB_PROXY_GEO_DB")]
    pub geo_db: Option<PathBuf>,

    /// MaxMind-format ASN database (GeoLite2-ASN), for CrowdSec decisions with scope AS.
    #[arg(long, env = "NB_PROXY_ASN_DB")]
    pub asn_db: Option<PathBuf>,

    /// Peers whose X-Forwarded-For and PROXY headers are believed (comma-separated CIDRs).
    #[arg(long, env = "NB_PROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Take the client address from this header (e.g. CF-Connecting-IP, True-Client-IP) when a
    /// trusted peer sends it with one address; otherwise X-Forwarded-For is walked as usual.
    #[arg(long, env = "NB_PROXY_CLIENT_IP_HEADER", value_parser = header_name)]
    pub client_ip_header: Option<http::HeaderName>,

    /// Accept PROXY protocol v1/v2 headers from trusted peers (HTTP and TCP listeners).
    #[arg(long, env = "NB_PROXY_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Time allowed for a PROXY protocol header.
    #[arg(long, env = "NB_PROXY_PROXY_PROTOCOL_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub proxy_protocol_timeout: Duration,

    /// Time allowed for a request's head: a connection's first from accept (PROXY header and
    /// TLS handshake included), later ones from when the connection went idle.
    #[arg(long, env = "NB_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) accepted, in bytes.
    #[arg(long, env = "NB_PROXY_MAX_HEADER_SIZE", default_value_t = 64 * 1024)]
    pub max_header_size: usize,

    /// Close client connections on which nothing moved for this long.
    #[arg(long, env = "NB_PROXY_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Time allowed to connect to an upstream (then 504).
    #[arg(long, env = "NB_PROXY_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for an upstream's response headers (then 504).
    #[arg(long, env = "NB_PROXY_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub upstream_timeout: Duration,

    /// Time allowed for a client's TLS handshake.
    #[arg(long, env = "NB_PROXY_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub tls_handshake_timeout: Duration,

    /// Time allowed for a request body's next bytes; also the grace before
    /// --request-body-min-rate applies (`0` disables both).
    #[arg(long, env = "NB_PROXY_REQUEST_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub request_body_timeout: Duration,

    /// Bytes per second a request body must average while the proxy waits for it, after the
    /// grace (`0` disables). Slower clients get 408: a slow body holds an upstream connection.
    #[arg(long, env = "NB_PROXY_REQUEST_BODY_MIN_RATE", default_value_t = 1024)]
    pub request_body_min_rate: u64,

    /// Worker threads serving connections, each with its own listening sockets (`0`: one per
    /// CPU core the process may run on).
    #[arg(long, env = "NB_PROXY_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Most connections open at once, HTTP and TCP together (`0`: half the open-file limit,
    /// since each proxied connection takes two descriptors). More are closed at accept.
    #[arg(long, env = "NB_PROXY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most connections open at once from one client address (an IPv6 client: its /64), HTTP
    /// and TCP together (`0` for no limit). Trusted proxies are counted by the clients their
    /// PROXY headers name, never as themselves.
    #[arg(long, env = "NB_PROXY_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: u32,

    /// On SIGTERM: how long in-flight requests and TCP connections may take to finish before
    /// they are cut. A second SIGTERM (or Ctrl-C) exits at once.
    #[arg(long, env = "NB_PROXY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// How often the services file and the GeoIP database are checked for changes.
    #[arg(long, env = "NB_PROXY_CONFIG_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub config_poll_interval: Duration,

    /// Prometheus `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "NB_PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// CrowdSec LAPI base URL (http or https). Without it, services with CrowdSec enforce deny
    /// everything (crowdsec_unavailable) and observe records that.
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_API_URL")]
    pub crowdsec_api_url: Option<String>,

    /// Bouncer key from `cscli bouncers add` (one per proxy: proxies sharing a key miss each
    /// other's decisions). Prefer --crowdsec-api-key-file or an env file.
    #[arg(
        long,
        global = true,
        env = "NB_PROXY_CROWDSEC_API_KEY",
        hide_env_values = true
    )]
    pub crowdsec_api_key: Option<String>,

    /// Read the bouncer key from a file (first line).
    #[arg(
        long,
        global = true,
        env = "NB_PROXY_CROWDSEC_API_KEY_FILE",
        conflicts_with = "crowdsec_api_key"
    )]
    pub crowdsec_api_key_file: Option<PathBuf>,

    /// CrowdSec AppSec component URL (e.g. http://127.0.0.1:7422/), for services with
    /// `appsec_mode`. Needs CrowdSec 1.6 or later.
    #[arg(long, env = "NB_PROXY_APPSEC_URL")]
    pub appsec_url: Option<String>,

    /// The key AppSec accepts (a bouncer key); defaults to the --crowdsec-api-key.
    #[arg(long, env = "NB_PROXY_APPSEC_API_KEY", hide_env_values = true)]
    pub appsec_api_key: Option<String>,

    /// Read the AppSec key from a file (first line).
    #[arg(
        long,
        env = "NB_PROXY_APPSEC_API_KEY_FILE",
        conflicts_with = "appsec_api_key"
    )]
    pub appsec_api_key_file: Option<PathBuf>,

    /// The longest AppSec may take to answer; then the request counts as appsec_unavailable.
    #[arg(long, env = "NB_PROXY_APPSEC_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub appsec_timeout: Duration,

    /// Request bodies up to this many bytes are sent to AppSec; larger ones follow the
    /// service's appsec_oversized_body.
    #[arg(long, env = "NB_PROXY_APPSEC_MAX_BODY", default_value_t = 65536)]
    pub appsec_max_body: usize,

    /// Captcha provider for CrowdSec `captcha` decisions on services without their own
    /// `remediation.captcha`: turnstile, hcaptcha or recaptcha (v2). Without one, captcha
    /// decisions get the ban answer.
    #[arg(long, env = "NB_PROXY_CAPTCHA_PROVIDER", value_parser = captcha_provider)]
    pub captcha_provider: Option<nb_api::CaptchaProvider>,

    /// The provider's public site key.
    #[arg(long, env = "NB_PROXY_CAPTCHA_SITE_KEY")]
    pub captcha_site_key: Option<String>,

    /// The provider's secret key. Prefer --captcha-secret-key-file or an env file.
    #[arg(long, env = "NB_PROXY_CAPTCHA_SECRET_KEY", hide_env_values = true)]
    pub captcha_secret_key: Option<String>,

    /// Read the provider's secret key from a file (first line).
    #[arg(
        long,
        env = "NB_PROXY_CAPTCHA_SECRET_KEY_FILE",
        conflicts_with = "captcha_secret_key"
    )]
    pub captcha_secret_key_file: Option<PathBuf>,

    /// How long a solved challenge lets the client in.
    #[arg(long, env = "NB_PROXY_CAPTCHA_COOKIE_TTL", default_value = "30m", value_parser = duration)]
    pub captcha_cookie_ttl: Duration,

    /// The key that signs captcha cookies (a file, first line): give proxies behind one load
    /// balancer the same one. Default: random per process.
    #[arg(long, env = "NB_PROXY_CAPTCHA_COOKIE_KEY_FILE")]
    pub captcha_cookie_key_file: Option<PathBuf>,

    /// Send every provider's token verification here instead of its siteverify URL.
    #[arg(long, env = "NB_PROXY_CAPTCHA_VERIFY_URL")]
    pub captcha_verify_url: Option<String>,

    /// How often to pull decision changes.
    #[arg(long, env = "NB_PROXY_CROWDSEC_UPDATE_INTERVAL", default_value = "10s", value_parser = duration)]
    pub crowdsec_update_interval: Duration,

    /// How often to pull the full decision set again, repairing any drift.
    #[arg(long, env = "NB_PROXY_CROWDSEC_RESYNC_INTERVAL", default_value = "1h", value_parser = duration)]
    pub crowdsec_resync_interval: Duration,

    /// How often to push usage metrics (requests processed, and dropped by decision origin and
    /// type) to the LAPI (`POST /v1/usage-metrics`, CrowdSec 1.6.3 and later); 0 turns it off.
    #[arg(long, env = "NB_PROXY_CROWDSEC_USAGE_METRICS_INTERVAL", default_value = "30m", value_parser = duration)]
    pub crowdsec_usage_metrics_interval: Duration,

    /// The longest a full decision sync may take, however the answer trickles in; then the
    /// poll counts as failed and is retried.
    #[arg(long, env = "NB_PROXY_CROWDSEC_SYNC_TIMEOUT", default_value = "2m", value_parser = duration)]
    pub crowdsec_sync_timeout: Duration,

    /// Per LAPI request: the whole of a delta poll, the longest silence within a full sync.
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub crowdsec_timeout: Duration,

    /// PEM file of the CA that signed the LAPI's certificate (private PKI).
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_CA_CERT")]
    pub crowdsec_ca_cert: Option<PathBuf>,

    /// Client certificate for LAPI mutual TLS (its OU must be in the LAPI's bouncers_allowed_ou).
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_CLIENT_CERT")]
    pub crowdsec_client_cert: Option<PathBuf>,

    /// Private key of --crowdsec-client-cert.
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_CLIENT_KEY")]
    pub crowdsec_client_key: Option<PathBuf>,

    /// Do not verify the LAPI's certificate. Insecure; logged loudly.
    #[arg(long, global = true, env = "NB_PROXY_CROWDSEC_INSECURE_SKIP_VERIFY")]
    pub crowdsec_insecure_skip_verify: bool,

    /// Only decisions from these origins (comma-separated: crowdsec,cscli,CAPI,lists,…).
    #[arg(long, env = "NB_PROXY_CROWDSEC_ORIGINS", value_delimiter = ',')]
    pub crowdsec_origins: Vec<String>,

    /// Only decisions whose scenario contains one of these (comma-separated, case-insensitive).
    #[arg(
        long,
        env = "NB_PROXY_CROWDSEC_SCENARIOS_CONTAINING",
        value_delimiter = ','
    )]
    pub crowdsec_scenarios_containing: Vec<String>,

    /// Ignore decisions whose scenario contains one of these (e.g. the proxy's own scenarios).
    #[arg(
        long,
        env = "NB_PROXY_CROWDSEC_SCENARIOS_NOT_CONTAINING",
        value_delimiter = ','
    )]
    pub crowdsec_scenarios_not_containing: Vec<String>,

    /// Decision types enforced (comma-separated: ban,captcha,throttle,…); empty = all. Types
    /// other than captcha and throttle deny as crowdsec_ban.
    #[arg(long, env = "NB_PROXY_CROWDSEC_TYPES", value_delimiter = ',')]
    pub crowdsec_types: Vec<String>,

    /// Refuse LAPI answers with more decisions than this (bounds memory).
    #[arg(
        long,
        env = "NB_PROXY_CROWDSEC_MAX_DECISIONS",
        default_value_t = 5_000_000
    )]
    pub crowdsec_max_decisions: usize,

    /// Once serving, write the addresses actually bound (HTTP, HTTPS, metrics) to this file as
    /// JSON, atomically: for supervisors and tests that listen on port 0.
    #[arg(long, env = "NB_PROXY_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Log filter (tracing syntax), e.g. `info` or `nb_proxy=debug`.
    #[arg(long, env = "NB_PROXY_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools beside the proxy; without one, nb-proxy serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Talk to the CrowdSec LAPI as the bouncer does, without starting the proxy.
    Crowdsec {
        #[command(subcommand)]
        action: CrowdSecCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CrowdSecCommand {
    /// Check that the LAPI accepts the bouncer key (--crowdsec-api-url with --crowdsec-api-key,
    /// its file or a client certificate; the same variables as the proxy). Safe beside a
    /// running proxy with the same key: it does not pull the decision stream.
    Check {
        /// Also show the decisions covering this address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let a = Args::try_parse_from([
            "nb-proxy",
            "--config",
            "s.yaml",
            "--trusted-proxies",
            "10.0.0.0/8,::1",
        ])
        .unwrap();
        assert_eq!(a.http_listen.to_string(), "0.0.0.0:8000");
        assert_eq!(a.trusted_proxies, vec!["10.0.0.0/8", "::1"]);
        assert_eq!(a.idle_timeout, Duration::from_secs(60));
        // A missed delta is repaired within the hour (it was 4 h).
        assert_eq!(a.crowdsec_resync_interval, Duration::from_secs(3600));
        assert_eq!(a.crowdsec_sync_timeout, Duration::from_secs(120));
        assert_eq!(a.crowdsec_usage_metrics_interval, Duration::from_secs(1800));
        assert_eq!(a.max_connections_per_ip, 1024);
        assert!(!a.proxy_protocol);
        assert!(Args::try_parse_from(["nb-proxy", "--idle-timeout", "soon"]).is_err());
        assert!(Args::try_parse_from(["nb-proxy", "--token", "a", "--token-file", "b"]).is_err());
    }
}
