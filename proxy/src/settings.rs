//! The proxy's runtime settings: the flags, checked and typed once. `main` turns [`Args`] into
//! [`Settings`]; nothing after that reads a flag. Every rejection names the flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::accesslog::Destination;
use crate::appsec::AppSecConfig;
use crate::cli::Args;
use crate::clientip::ClientAddressPolicy;
use crate::config::{parse_cidr, CompileOptions};
use crate::crowdsec::{ApiKey, DecisionFilter, LapiConfig, LapiError};
use crate::restrict::IpSet;
use crate::server::Listeners;
use crate::state::Limits;

#[derive(Debug)]
pub struct Settings {
    pub listeners: Listeners,
    /// Worker threads; `None`: one per core.
    pub workers: Option<usize>,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    pub clients: ClientAddressPolicy,
    /// The bouncer's LAPI; `None` leaves CrowdSec off.
    pub lapi: Option<LapiConfig>,
    /// Captcha challenges for services without their own provider.
    pub captcha: CaptchaSettings,
    /// The AppSec component; `None`: services with `appsec_mode` get `appsec_unavailable`.
    pub appsec: Option<AppSecConfig>,
    pub services: ServiceSource,
    pub compile: CompileOptions,
    /// Automatic certificates, for services with `tls: {acme: true}`.
    pub acme: crate::acme::AcmeSettings,
    pub access_log: Destination,
    pub geo_db: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    /// How often the services file and the GeoIP database are checked for changes.
    pub poll_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Where to say, once serving, which addresses were bound.
    pub ready_file: Option<PathBuf>,
    /// The tracing filter.
    pub log: String,
    /// Accepted, but worth telling the operator once logging runs.
    pub warnings: Vec<String>,
}

/// The proxy-wide captcha site and cookie key, from the `--captcha-*` flags.
#[derive(Debug, Default)]
pub struct CaptchaSettings {
    pub default_site: Option<CaptchaSiteSettings>,
    pub verify_url: Option<String>,
    pub cookie_key: Option<Vec<u8>>,
}

pub struct CaptchaSiteSettings {
    pub provider: nb_api::CaptchaProvider,
    pub site_key: String,
    pub secret: String,
    pub cookie_ttl: Duration,
}

impl std::fmt::Debug for CaptchaSiteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptchaSiteSettings")
            .field("provider", &self.provider)
            .field("site_key", &self.site_key)
            .field("secret", &"<redacted>")
            .field("cookie_ttl", &self.cookie_ttl)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `None`: derived from the open-file limit once it is raised.
    pub max: Option<usize>,
    /// 0 for no limit.
    pub per_ip: u32,
}

/// Where services come from.
#[derive(Debug)]
pub enum ServiceSource {
    /// Standalone: a YAML file, reloaded on change.
    File(PathBuf),
    Managed(ManagedSettings),
    /// Neither: the proxy serves nothing.
    Nothing,
}

impl ServiceSource {
    /// The services file, in standalone mode.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ServiceSource::File(path) => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManagedSettings {
    pub url: Url,
    pub token: ProxyToken,
    pub cache: PathBuf,
    pub report_interval: Duration,
    pub event_queue_size: usize,
}

/// The proxy's management token; it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyToken(String);

impl ProxyToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ProxyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyToken(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--trusted-proxies: {0}")]
    TrustedProxy(String),
    #[error("{flag} {url:?} is not a URL: {problem}")]
    NotAUrl {
        flag: &'static str,
        url: String,
        problem: String,
    },
    #[error("{flag} {url} must be http:// or https://")]
    NotHttp { flag: &'static str, url: String },
    #[error(
        "--management-url needs --token or --token-file (a proxy token created in management)"
    )]
    MissingToken,
    #[error("--token holds characters not allowed in an HTTP header")]
    UnusableToken,
    #[error("--crowdsec-api-url needs --crowdsec-api-key (from `cscli bouncers add`) or a client certificate")]
    MissingCrowdSecCredentials,
    #[error("{flag} {}: cannot read it: {source}", path.display())]
    UnreadableSecret {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: the file is empty", path.display())]
    EmptySecret { flag: &'static str, path: PathBuf },
    #[error("CrowdSec: {0}")]
    Lapi(#[from] LapiError),
    #[error(
        "--crowdsec-api-url (NB_PROXY_CROWDSEC_API_URL) is not set: there is no LAPI to check"
    )]
    NoLapi,
    #[error("--captcha-provider needs --captcha-site-key and --captcha-secret-key(-file)")]
    IncompleteCaptcha,
    #[error("--appsec-url needs --appsec-api-key(-file) or --crowdsec-api-key (a bouncer key)")]
    MissingAppSecKey,
}

impl TryFrom<Args> for Settings {
    type Error = SettingsError;

    fn try_from(args: Args) -> Result<Self, SettingsError> {
        let mut warnings = Vec::new();
        let lapi = lapi_config(&args, &mut warnings)?;
        let captcha = captcha_settings(&args, &mut warnings)?;
        let appsec = appsec_config(&args, lapi.as_ref())?;
        let services = match (&args.config, managed(&args)?) {
            (Some(path), _) => ServiceSource::File(path.clone()),
            (None, Some(m)) => ServiceSource::Managed(m),
            (None, None) => ServiceSource::Nothing,
        };
        Ok(Settings {
            listeners: Listeners {
                http: Some(args.http_listen),
                https: args.https_listen,
                https_public_port: args.https_public_port,
            },
            workers: (args.workers > 0).then_some(args.workers),
            metrics_listen: args.metrics_listen,
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
            connections: ConnectionLimits {
                max: (args.max_connections > 0).then_some(args.max_connections),
                per_ip: args.max_connections_per_ip,
            },
            clients: ClientAddressPolicy {
                trusted: trusted_proxies(&args.trusted_proxies)?,
                client_header: args.client_ip_header.clone(),
                proxy_protocol: args.proxy_protocol,
                header_timeout: args.proxy_protocol_timeout,
            },
            lapi,
            captcha,
            appsec,
            services,
            compile: CompileOptions {
                tls_dir: args.tls_dir,
            },
            acme: crate::acme::AcmeSettings {
                directory: args.acme_directory.trim().to_owned(),
                email: args
                    .acme_email
                    .as_deref()
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
                cache_dir: args.acme_cache_dir.clone(),
                ca_file: args.acme_ca_file.clone(),
                challenge: args.acme_challenge,
            },
            access_log: Destination::parse(&args.access_log),
            geo_db: args.geo_db,
            asn_db: args.asn_db,
            poll_interval: args.config_poll_interval,
            shutdown_timeout: args.shutdown_timeout,
            ready_file: args.ready_file,
            log: args.log,
            warnings,
        })
    }
}

fn trusted_proxies(values: &[String]) -> Result<IpSet, SettingsError> {
    let mut nets = Vec::new();
    for s in values.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        nets.push(parse_cidr(s).map_err(SettingsError::TrustedProxy)?);
    }
    Ok(IpSet::new(&nets))
}

fn http_url(flag: &'static str, url: &str) -> Result<Url, SettingsError> {
    let parsed = Url::parse(url.trim()).map_err(|e| SettingsError::NotAUrl {
        flag,
        url: url.to_owned(),
        problem: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SettingsError::NotHttp {
            flag,
            url: parsed.to_string(),
        });
    }
    Ok(parsed)
}

fn managed(args: &Args) -> Result<Option<ManagedSettings>, SettingsError> {
    let Some(url) = args
        .management_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        return Ok(None);
    };
    let url = http_url("--management-url", url)?;
    let token = secret(&args.token, &args.token_file, "--token-file")?
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or(SettingsError::MissingToken)?;
    if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(SettingsError::UnusableToken);
    }
    Ok(Some(ManagedSettings {
        url,
        token: ProxyToken(token),
        cache: args.management_cache.clone(),
        report_interval: args.management_report_interval,
        event_queue_size: args.event_queue_size,
    }))
}

/// The LAPI settings alone, for `nb-proxy crowdsec check`: the proxy's other flags play no
/// part there.
pub fn lapi_only(args: &Args) -> Result<LapiConfig, SettingsError> {
    lapi_config(args, &mut Vec::new())?.ok_or(SettingsError::NoLapi)
}

fn lapi_config(
    args: &Args,
    warnings: &mut Vec<String>,
) -> Result<Option<LapiConfig>, SettingsError> {
    let Some(url) = args
        .crowdsec_api_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        if args.crowdsec_api_key.is_some() || args.crowdsec_api_key_file.is_some() {
            warnings.push(
                "--crowdsec-api-key is set without --crowdsec-api-url: CrowdSec stays off".into(),
            );
        }
        return Ok(None);
    };
    let url = http_url("--crowdsec-api-url", url)?;
    let api_key = secret(
        &args.crowdsec_api_key,
        &args.crowdsec_api_key_file,
        "--crowdsec-api-key-file",
    )?;
    if api_key.is_none() && args.crowdsec_client_cert.is_none() {
        return Err(SettingsError::MissingCrowdSecCredentials);
    }
    let mut cfg = LapiConfig::new(url);
    cfg.api_key = api_key.map(ApiKey::new);
    cfg.ca_cert = args.crowdsec_ca_cert.clone();
    cfg.client_cert = args.crowdsec_client_cert.clone();
    cfg.client_key = args.crowdsec_client_key.clone();
    cfg.insecure_skip_verify = args.crowdsec_insecure_skip_verify;
    cfg.update_interval = args.crowdsec_update_interval;
    cfg.resync_interval = args.crowdsec_resync_interval;
    cfg.usage_metrics_interval = args.crowdsec_usage_metrics_interval;
    cfg.timeout = args.crowdsec_timeout;
    cfg.sync_timeout = args.crowdsec_sync_timeout;
    cfg.max_decisions = args.crowdsec_max_decisions;
    cfg.has_asn_db = args.asn_db.is_some();
    cfg.has_geo_db = args.geo_db.is_some();
    cfg.filter = DecisionFilter::new(
        args.crowdsec_origins.clone(),
        args.crowdsec_scenarios_containing.clone(),
        args.crowdsec_scenarios_not_containing.clone(),
        args.crowdsec_types.clone(),
    );
    // Missing or broken certificate files fail at start, not at the first service.
    cfg.validate()?;
    Ok(Some(cfg))
}

/// A secret given directly, or the first line of a file.
fn appsec_config(
    args: &Args,
    lapi: Option<&LapiConfig>,
) -> Result<Option<AppSecConfig>, SettingsError> {
    let Some(url) = args.appsec_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let url = http_url("--appsec-url", url)?;
    let key = secret(
        &args.appsec_api_key,
        &args.appsec_api_key_file,
        "--appsec-api-key-file",
    )?
    .or_else(|| lapi.and_then(|l| l.api_key.as_ref().map(|k| k.expose().to_owned())))
    .ok_or(SettingsError::MissingAppSecKey)?;
    Ok(Some(AppSecConfig {
        url,
        api_key: key,
        timeout: args.appsec_timeout,
        max_body: args.appsec_max_body,
    }))
}

fn captcha_settings(
    args: &Args,
    warnings: &mut Vec<String>,
) -> Result<CaptchaSettings, SettingsError> {
    let verify_url = match &args.captcha_verify_url {
        Some(u) => Some(http_url("--captcha-verify-url", u)?.to_string()),
        None => None,
    };
    let cookie_key = secret(
        &None,
        &args.captcha_cookie_key_file,
        "--captcha-cookie-key-file",
    )?
    .map(String::into_bytes);
    let secret_key = secret(
        &args.captcha_secret_key,
        &args.captcha_secret_key_file,
        "--captcha-secret-key-file",
    )?;
    let default_site = match (args.captcha_provider, &args.captcha_site_key, secret_key) {
        (Some(provider), Some(site_key), Some(secret)) if !site_key.trim().is_empty() => {
            Some(CaptchaSiteSettings {
                provider,
                site_key: site_key.trim().to_owned(),
                secret,
                cookie_ttl: args.captcha_cookie_ttl,
            })
        }
        (None, None, None) => None,
        (None, _, _) => {
            warnings.push(
                "--captcha-site-key or secret is set without --captcha-provider: captcha decisions get the ban answer"
                    .into(),
            );
            None
        }
        _ => return Err(SettingsError::IncompleteCaptcha),
    };
    Ok(CaptchaSettings {
        default_site,
        verify_url,
        cookie_key,
    })
}

fn secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    flag: &'static str,
) -> Result<Option<String>, SettingsError> {
    let Some(path) = file else {
        return Ok(value.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::UnreadableSecret {
        flag,
        path: path.clone(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(SettingsError::EmptySecret {
            flag,
            path: Path::new(path).to_owned(),
        });
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests;
