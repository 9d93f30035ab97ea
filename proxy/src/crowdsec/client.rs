//! The LAPI HTTP client: `GET /v1/decisions/stream`, with errors in the operator's words.
//! The API key travels as a sensitive header and is never formatted into a message.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Certificate, Identity, StatusCode, Url};

use super::filter::DecisionFilter;
use super::wire::{parse_stream_sized, Batch, ParseError};
use crate::neterror::NetFailure;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it on (AppSec takes a bouncer key too).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A salted digest of the key, so that management can tell two proxies sharing one key
    /// (which lose bans: the LAPI keeps one stream cursor per key) without learning the key.
    pub fn fingerprint(&self, salt: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        h.update([0u8]);
        h.update(self.0.as_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How to reach the LAPI and what to ask it for.
#[derive(Debug, Clone)]
pub struct LapiConfig {
    pub url: Url,
    pub api_key: Option<ApiKey>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub update_interval: Duration,
    pub resync_interval: Duration,
    /// How often usage metrics are pushed; zero: never.
    pub usage_metrics_interval: Duration,
    /// Per request: whole delta polls, and the longest silence within a startup answer.
    pub timeout: Duration,
    /// A whole startup (full) answer, however it trickles in.
    pub sync_timeout: Duration,
    pub filter: DecisionFilter,
    pub max_decisions: usize,
    /// Whether the proxy has the databases that `AS` and `Country` decisions need.
    pub has_asn_db: bool,
    pub has_geo_db: bool,
}

impl LapiConfig {
    /// Answers larger than this are refused: about 4 times what the LAPI sends for
    /// `max_decisions` decisions, at least 64 MiB.
    pub fn max_body_bytes(&self) -> u64 {
        (self.max_decisions as u64 * 600).max(64 << 20)
    }

    pub fn new(url: Url) -> Self {
        Self {
            url,
            api_key: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: false,
            update_interval: Duration::from_secs(10),
            resync_interval: Duration::from_secs(3600),
            usage_metrics_interval: Duration::from_secs(1800),
            timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(120),
            filter: DecisionFilter::default(),
            max_decisions: 5_000_000,
            has_asn_db: false,
            has_geo_db: false,
        }
    }
}

/// Why talking to the LAPI failed. All are on the LAPI's side of the connection; the bouncer
/// retries every one of them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    #[error("certificate not trusted ({0}); give the LAPI's CA with --crowdsec-ca-cert")]
    CertificateNotTrusted(String),
    #[error("key rejected (the LAPI answered 403); check --crowdsec-api-key against `cscli bouncers list`")]
    KeyRejected,
    #[error("host not found")]
    HostNotFound,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("timeout")]
    Timeout,
    #[error("the full sync did not complete within {} (--crowdsec-sync-timeout)", humantime::format_duration(*.0))]
    SyncDeadline(Duration),
    #[error("the LAPI answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    BadAnswer(#[from] ParseError),
    #[error("the LAPI closed the connection before the answer was complete")]
    Incomplete,
    #[error("the LAPI answer is larger than {0} MiB; refused to bound memory")]
    TooLarge(u64),
    #[error("{0}")]
    Other(String),
    #[error("bad bouncer configuration: {0}")]
    Config(String),
}

impl LapiError {
    /// A short stable label, to log once per change of state.
    pub fn kind(&self) -> &'static str {
        match self {
            LapiError::CertificateNotTrusted(_) => "certificate",
            LapiError::KeyRejected => "key",
            LapiError::HostNotFound => "dns",
            LapiError::ConnectionRefused => "refused",
            LapiError::Timeout | LapiError::SyncDeadline(_) => "timeout",
            LapiError::Status(_) => "status",
            LapiError::BadAnswer(_) | LapiError::TooLarge(_) => "answer",
            LapiError::Incomplete => "incomplete",
            LapiError::Other(_) => "other",
            LapiError::Config(_) => "config",
        }
    }

    /// The answer may have been read in part, and the LAPI's cursor may have moved: only a
    /// full resync is safe after this.
    pub fn needs_resync(&self) -> bool {
        matches!(
            self,
            LapiError::BadAnswer(_)
                | LapiError::TooLarge(_)
                | LapiError::Incomplete
                | LapiError::Other(_)
                | LapiError::Timeout
                | LapiError::SyncDeadline(_)
        )
    }

    fn classify(e: &reqwest::Error) -> Self {
        match NetFailure::of(e) {
            NetFailure::HostNotFound => LapiError::HostNotFound,
            NetFailure::Refused => LapiError::ConnectionRefused,
            NetFailure::Timeout => LapiError::Timeout,
            NetFailure::Tls(reason) => LapiError::CertificateNotTrusted(reason),
            NetFailure::Reset => LapiError::Incomplete,
            NetFailure::Other(text) => LapiError::Other(text),
        }
    }
}

/// One decision as `GET /v1/decisions` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LapiDecision {
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub value: String,
    /// Go duration text: time left.
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

/// `NAME/vVERSION`: the LAPI stores it as the bouncer's type and version (`cscli bouncers list`).
pub const USER_AGENT: &str = concat!("crowdsec-nb-proxy-bouncer/v", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct LapiClient {
    http: reqwest::Client,
    stream_url: Url,
    usage_url: Url,
    decisions_url: Url,
    cfg: LapiConfig,
}

impl LapiConfig {
    /// Checks what can be checked before the bouncer runs: the key can travel in a header, and
    /// the CA and client certificate files exist and parse. Nothing is connected.
    pub fn validate(&self) -> Result<(), LapiError> {
        self.key_header()?;
        self.tls_material().map(|_| ())
    }

    fn key_header(&self) -> Result<Option<HeaderValue>, LapiError> {
        let Some(key) = &self.api_key else {
            return Ok(None);
        };
        let mut v = HeaderValue::from_str(&key.0).map_err(|_| {
            LapiError::Config("the API key has characters a header cannot carry".into())
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    /// The private CA and the client identity, read and parsed.
    fn tls_material(&self) -> Result<(Option<Certificate>, Option<Identity>), LapiError> {
        let ca = match &self.ca_cert {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    LapiError::Config(format!(
                        "cannot read --crowdsec-ca-cert {}: {e}",
                        ca.display()
                    ))
                })?;
                Some(Certificate::from_pem(&pem).map_err(|e| {
                    LapiError::Config(format!("{} is not a PEM certificate: {e}", ca.display()))
                })?)
            }
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).map_err(|e| {
                    LapiError::Config(format!(
                        "cannot read --crowdsec-client-cert {}: {e}",
                        cert.display()
                    ))
                })?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| {
                    LapiError::Config(format!(
                        "cannot read --crowdsec-client-key {}: {e}",
                        key.display()
                    ))
                })?);
                Some(Identity::from_pem(&pem).map_err(|e| {
                    LapiError::Config(format!("client certificate or key unusable: {e}"))
                })?)
            }
            (None, None) => None,
            _ => {
                return Err(LapiError::Config(
                    "--crowdsec-client-cert and --crowdsec-client-key go together".into(),
                ))
            }
        };
        Ok((ca, identity))
    }
}

impl LapiClient {
    pub fn new(cfg: LapiConfig) -> Result<Self, LapiError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = cfg.key_header()? {
            headers.insert("x-api-key", v);
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(cfg.timeout)
            .read_timeout(cfg.timeout)
            .pool_max_idle_per_host(1);
        let (ca, identity) = cfg.tls_material()?;
        if let Some(ca) = ca {
            b = b.add_root_certificate(ca);
        }
        if let Some(id) = identity {
            b = b.identity(id);
        }
        if cfg.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| LapiError::Config(e.to_string()))?;
        let endpoint = |path: &[&str]| {
            let mut url = cfg.url.clone();
            url.path_segments_mut()
                .map_err(|_| LapiError::Config(format!("{} cannot be a base URL", cfg.url)))?
                .pop_if_empty()
                .extend(path);
            Ok::<_, LapiError>(url)
        };
        Ok(Self {
            http,
            stream_url: endpoint(&["v1", "decisions", "stream"])?,
            usage_url: endpoint(&["v1", "usage-metrics"])?,
            decisions_url: endpoint(&["v1", "decisions"])?,
            cfg,
        })
    }

    /// `POST /v1/usage-metrics` with a JSON body; the answer's status.
    pub async fn push_usage_metrics(&self, body: Vec<u8>) -> Result<StatusCode, LapiError> {
        let resp = self
            .http
            .post(self.usage_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(self.cfg.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| LapiError::classify(&e))?;
        Ok(resp.status())
    }

    /// `GET /v1/decisions?ip=`: the active decisions covering one address. Unlike a stream
    /// pull it moves no cursor, so it is safe beside a running bouncer with the same key.
    pub async fn decisions_for(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Vec<LapiDecision>, LapiError> {
        let resp = self
            .http
            .get(self.decisions_url.clone())
            .query(&[("ip", ip.to_string())])
            .timeout(self.cfg.timeout)
            .send()
            .await
            .map_err(|e| LapiError::classify(&e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => return Err(LapiError::KeyRejected),
            s => return Err(LapiError::Status(s.as_u16())),
        }
        let body = resp.bytes().await.map_err(|e| LapiError::classify(&e))?;
        // The LAPI answers `null` rather than `[]` when nothing matches.
        let found: Option<Vec<LapiDecision>> = serde_json::from_slice(&body).map_err(|e| {
            LapiError::Other(format!("the decisions answer is not the LAPI's JSON: {e}"))
        })?;
        Ok(found.unwrap_or_default())
    }

    pub fn config(&self) -> &LapiConfig {
        &self.cfg
    }

    /// One poll: the full active set with `startup`, else the changes since the last poll. A
    /// full sync has an overall deadline: a LAPI that trickles its answer cannot hold the
    /// bouncer forever.
    pub async fn stream(&self, startup: bool) -> Result<Batch, LapiError> {
        if !startup {
            return self.poll(false).await;
        }
        tokio::time::timeout(self.cfg.sync_timeout, self.poll(true))
            .await
            .unwrap_or(Err(LapiError::SyncDeadline(self.cfg.sync_timeout)))
    }

    async fn poll(&self, startup: bool) -> Result<Batch, LapiError> {
        let mut req = self
            .http
            .get(self.stream_url.clone())
            .query(&[("startup", if startup { "true" } else { "false" })])
            .query(&[("scopes", "ip,range,country,as")])
            .query(&self.cfg.filter.query());
        if !startup {
            req = req.timeout(self.cfg.timeout);
        }
        let resp = req.send().await.map_err(|e| LapiError::classify(&e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => return Err(LapiError::KeyRejected),
            s => return Err(LapiError::Status(s.as_u16())),
        }
        // The body is parsed on a blocking thread as it arrives, chunk by chunk.
        // A bounded async channel: when the parser falls behind, the feeder waits without
        // blocking the runtime.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, LapiError>>(8);
        let filter = self.cfg.filter.clone();
        let max = self.cfg.max_decisions;
        let body_bytes = resp.content_length();
        let parser = tokio::task::spawn_blocking(move || {
            parse_stream_sized(
                std::io::BufReader::with_capacity(64 * 1024, ChunkReader::new(rx)),
                &filter,
                max,
                body_bytes,
            )
        });
        let mut body = resp.bytes_stream();
        let mut feed_error = None;
        let limit = self.cfg.max_body_bytes();
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| LapiError::classify(&e));
            if let Ok(c) = &chunk {
                received += c.len() as u64;
                if received > limit {
                    feed_error = Some(LapiError::TooLarge(limit >> 20));
                    break;
                }
            }
            let failed = chunk.is_err();
            if let Err(e) = &chunk {
                feed_error = Some(match e {
                    LapiError::Timeout => LapiError::Timeout,
                    _ => LapiError::Incomplete,
                });
            }
            if tx.send(chunk).await.is_err() || failed {
                break; // the parser stopped (bad answer) or the body broke
            }
        }
        drop(tx);
        let parsed = parser
            .await
            .map_err(|e| LapiError::Other(format!("decision parser stopped: {e}")))?;
        match (parsed, feed_error) {
            (_, Some(e)) => Err(e),
            (Ok(batch), None) => Ok(batch),
            (Err(e), None) => Err(LapiError::BadAnswer(e)),
        }
    }
}

/// `Read` over body chunks handed across from the async side (used on a blocking thread).
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, LapiError>>,
    current: bytes::Bytes,
}

impl ChunkReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, LapiError>>) -> Self {
        Self {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}
