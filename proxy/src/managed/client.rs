//! HTTP to management: the service stream, reports and event batches. The token travels as a
//! sensitive header and never appears in messages.

use std::time::Duration;

use bytes::Bytes;
use nb_api::{paths, ProxyReport};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Response, StatusCode, Url};

use crate::neterror::NetFailure;

/// Why talking to management failed, in the operator's words. All are retried.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("token rejected (management answered {0}); check --token, or create a new proxy token in management")]
    TokenRejected(u16),
    #[error("host not found")]
    HostNotFound,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("timeout")]
    Timeout,
    #[error("management answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("{0}")]
    Other(String),
}

impl ManagementError {
    fn of(e: reqwest::Error) -> Self {
        match NetFailure::of(&e) {
            NetFailure::Timeout => ManagementError::Timeout,
            NetFailure::Refused => ManagementError::ConnectionRefused,
            NetFailure::HostNotFound => ManagementError::HostNotFound,
            NetFailure::Tls(reason) => ManagementError::Other(format!(
                "management's certificate is not trusted ({reason})"
            )),
            NetFailure::Reset | NetFailure::Other(_) => {
                ManagementError::Other(e.without_url().to_string())
            }
        }
    }

    /// Bad batches are not retried: the same body would be refused again.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ManagementError::Status {
                status: 400 | 413 | 422,
                ..
            }
        )
    }

    /// A short stable label, to log once per change of state.
    pub fn kind(&self) -> String {
        match self {
            ManagementError::Status { status, .. } => format!("status {status}"),
            ManagementError::Other(_) => "other".into(),
            e => e.to_string(),
        }
    }
}

pub struct ManagementClient {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    timeout: Duration,
}

impl ManagementClient {
    pub fn new(base: Url, token: &str, timeout: Duration) -> Result<Self, String> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| "--token holds characters not allowed in an HTTP header".to_owned())?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("nb-proxy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the management client: {e}"))?;
        Ok(Self {
            http,
            base,
            auth,
            timeout,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url
    }

    /// Opens the service stream; the body is read by the caller for as long as it lasts.
    pub async fn stream(&self) -> Result<Response, ManagementError> {
        let req = self
            .http
            .get(self.url(paths::STREAM))
            .header(AUTHORIZATION, self.auth.clone())
            .header("accept", "text/event-stream");
        let res = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| ManagementError::Timeout)?
            .map_err(ManagementError::of)?;
        check(res).await
    }

    pub async fn report(&self, report: &ProxyReport) -> Result<(), ManagementError> {
        let body = serde_json::to_vec(report).map_err(|e| ManagementError::Other(e.to_string()))?;
        let req = self
            .http
            .put(self.url(paths::REPORT))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .body(body);
        check(req.send().await.map_err(ManagementError::of)?).await?;
        Ok(())
    }

    /// Ships access-log entries as JSON lines.
    pub async fn ship(&self, lines: Bytes) -> Result<(), ManagementError> {
        let req = self
            .http
            .post(self.url(paths::EVENTS))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .timeout(self.timeout)
            .body(lines);
        check(req.send().await.map_err(ManagementError::of)?).await?;
        Ok(())
    }
}

async fn check(res: Response) -> Result<Response, ManagementError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ManagementError::TokenRejected(status.as_u16()));
    }
    // Management explains itself in {"error": "..."}.
    let text = res.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect());
    Err(ManagementError::Status {
        status: status.as_u16(),
        message,
    })
}
