//! nb-management's runtime configuration: the flags, checked and typed once. `main` turns
//! [`Args`] into [`Config`]; nothing after that reads a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::Settings;
use crate::auth::MIN_ADMIN_TOKEN_LEN;
use crate::cli::Args;
use crate::retention::Retention;

pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// May hold a password: print it with `store::redact_url`.
    pub database_url: String,
    /// The admin token the operator chose; without it one is generated on first start.
    pub admin_token: Option<String>,
    pub retention: Retention,
    pub api: Settings,
    pub change_poll_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Where to say, once serving, which address was bound.
    pub ready_file: Option<PathBuf>,
    /// HTTPS, and how often its files are checked for changes.
    pub tls: Option<(crate::tls::TlsFiles, Duration)>,
    /// The tracing filter.
    pub log: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("retention", &self.retention)
            .field("change_poll_interval", &self.change_poll_interval)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    AdminTokenFile(String),
    #[error("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters")]
    WeakAdminToken,
    #[error("--database-url must start with sqlite:// or postgres:// (got {0})")]
    DatabaseScheme(String),
    #[error("--cors-origin {0:?} is not an origin: expected scheme://host[:port], e.g. https://tools.example.com")]
    CorsOrigin(String),
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn origin(s: &str) -> Result<String, ConfigError> {
    let s = s.trim().trim_end_matches('/');
    let ok = s.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', ' '])
    });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ConfigError::CorsOrigin(s.to_owned()))
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let admin_token = match (&args.admin_token, &args.admin_token_file) {
            (_, Some(path)) => Some(
                crate::secrets::read_secret(path, "--admin-token-file")
                    .map_err(ConfigError::AdminTokenFile)?,
            ),
            (token, None) => token.clone(),
        };
        let admin_token = admin_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN)
        {
            return Err(ConfigError::WeakAdminToken);
        }
        let database_url = match &args.database_url {
            Some(url) => url.trim().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                args.data_dir.join("management.db").display()
            ),
        };
        if crate::store::Backend::of_url(&database_url).is_none() {
            let scheme = database_url.split(':').next().unwrap_or("").to_owned();
            return Err(ConfigError::DatabaseScheme(format!("{scheme}:")));
        }
        let retention = Retention {
            max_age: Some(args.events_max_age).filter(|d| !d.is_zero()),
            max_rows: Some(args.events_max_rows).filter(|n| *n > 0),
            max_bytes: Some(args.events_max_bytes).filter(|n| *n > 0),
            audit_max_age: Some(args.audit_max_age).filter(|d| !d.is_zero()),
            interval: args.retention_interval,
        };
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => {
                Some((crate::tls::TlsFiles { cert, key }, args.tls_reload_interval))
            }
            _ => None,
        };
        let cors_origins = args
            .cors_origin
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        let api = Settings {
            live_window: args.proxy_live_window,
            events_max_age: retention.max_age,
            auth_failures_per_second: args.auth_failures_per_second,
            session_lifetime: args.session_lifetime,
            secure_cookies: tls.is_some(),
            cors_origins,
            ..Settings::default()
        };
        Ok(Config {
            listen: args.listen,
            data_dir: args.data_dir,
            database_url,
            admin_token,
            retention,
            api,
            change_poll_interval: args.change_poll_interval,
            shutdown_timeout: args.shutdown_timeout,
            ready_file: args.ready_file,
            tls,
            log: args.log,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("nb-management").chain(flags.iter().copied());
        Config::try_from(Args::try_parse_from(argv).expect("flags parse"))
    }

    #[test]
    fn defaults_keep_everything_in_the_data_dir() {
        let c = config(&["--data-dir", "/var/lib/nb"]).unwrap();
        assert_eq!(
            c.database_url,
            "sqlite:///var/lib/nb/management.db?mode=rwc"
        );
        assert_eq!(c.listen.to_string(), "127.0.0.1:8090");
        assert!(c.admin_token.is_none());
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.api.events_max_age, c.retention.max_age);
        assert_eq!(c.retention.max_bytes, Some(2 << 30));
    }

    #[test]
    fn zero_means_no_limit() {
        let c = config(&[
            "--events-max-age",
            "0s",
            "--events-max-rows",
            "0",
            "--events-max-bytes",
            "0",
        ])
        .unwrap();
        assert_eq!(c.retention.max_age, None);
        assert_eq!(c.retention.max_rows, None);
        assert_eq!(c.retention.max_bytes, None);
        assert_eq!(
            c.api.events_max_age, None,
            "ingestion refuses nothing for age"
        );
    }

    #[test]
    fn admin_tokens_are_checked_and_never_print() {
        let e = config(&["--admin-token", "short"]).unwrap_err().to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "a-long-enough-admin-token\n").unwrap();
        let c = config(&["--admin-token-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("a-long-enough-admin-token"));
        assert!(
            !format!("{c:?}").contains("a-long-enough"),
            "the token printed"
        );
        std::fs::write(&path, "").unwrap();
        let e = config(&["--admin-token-file", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("the file is empty"), "{e}");
        assert!(config(&["--admin-token", "  "])
            .unwrap()
            .admin_token
            .is_none());
    }

    #[test]
    fn database_urls_name_their_kind_and_passwords_never_print() {
        let e = config(&["--database-url", "mysql://u:p@h/db"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sqlite:// or postgres://") && e.contains("mysql:"),
            "{e}"
        );
        assert!(!e.contains("u:p"), "{e}");
        let c = config(&["--database-url", "postgres://nb:s3cret@db/nb"]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn https_and_cors_origins() {
        let c = config(&["--tls-cert", "/etc/nb/m.crt", "--tls-key", "/etc/nb/m.key"]).unwrap();
        let (files, every) = c.tls.unwrap();
        assert_eq!(files.cert, PathBuf::from("/etc/nb/m.crt"));
        assert_eq!(every, Duration::from_secs(10));
        assert!(c.api.secure_cookies, "cookies are Secure under TLS");
        assert!(!config(&[]).unwrap().api.secure_cookies);
        let argv = ["nb-management", "--tls-cert", "/etc/nb/m.crt"];
        let e = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");

        let c = config(&[
            "--cors-origin",
            "https://Tools.example.com/,http://127.0.0.1:3000",
        ])
        .unwrap();
        assert_eq!(
            c.api.cors_origins,
            ["https://tools.example.com", "http://127.0.0.1:3000"]
        );
        assert!(config(&[]).unwrap().api.cors_origins.is_empty());
        for bad in [
            "tools.example.com",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
        ] {
            let e = config(&["--cors-origin", bad]).unwrap_err().to_string();
            assert!(e.contains("is not an origin"), "{bad}: {e}");
        }
    }
}
