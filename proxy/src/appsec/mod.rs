//! CrowdSec's AppSec component (its WAF), asked per HTTP request after the IP-reputation
//! layer, following CrowdSec's documented protocol: the original request's headers (and body,
//! up to a limit) with `X-Crowdsec-Appsec-Ip`, `-Uri`, `-Host`, `-Verb`, `-Api-Key` and
//! `-User-Agent`; the answer 200 allows, 403 blocks, 401 means the key was refused.
//! `restrict::appsec_outcome` turns the answer into the verdict.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::restrict::AppSecAnswer;

const APPSEC_IP: HeaderName = HeaderName::from_static("x-crowdsec-appsec-ip");
const APPSEC_URI: HeaderName = HeaderName::from_static("x-crowdsec-appsec-uri");
const APPSEC_HOST: HeaderName = HeaderName::from_static("x-crowdsec-appsec-host");
const APPSEC_VERB: HeaderName = HeaderName::from_static("x-crowdsec-appsec-verb");
const APPSEC_KEY: HeaderName = HeaderName::from_static("x-crowdsec-appsec-api-key");
const APPSEC_UA: HeaderName = HeaderName::from_static("x-crowdsec-appsec-user-agent");

/// Where the AppSec component listens and how it is asked.
#[derive(Clone)]
pub struct AppSecConfig {
    pub url: reqwest::Url,
    pub api_key: String,
    pub timeout: Duration,
    /// Larger bodies follow the service's `appsec_oversized_body`.
    pub max_body: usize,
}

impl std::fmt::Debug for AppSecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecConfig")
            .field("url", &self.url.as_str())
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// What is sent about one request.
pub struct Inspected<'a> {
    pub client: IpAddr,
    pub method: &'a Method,
    pub host: &'a str,
    pub uri: &'a str,
    pub headers: &'a HeaderMap,
    /// `None`: the head only (no body, or one too large to send).
    pub body: Option<Bytes>,
}

pub struct AppSec {
    config: AppSecConfig,
    http: reqwest::Client,
    /// A refused key is said once, not per request.
    said_refused: AtomicBool,
    /// Calls by outcome, in [`CALL_OUTCOMES`] order.
    calls: [AtomicU64; CALL_OUTCOMES.len()],
}

/// How a call to the AppSec component ended, as metrics label it.
pub const CALL_OUTCOMES: [&str; 6] = [
    "allow",
    "block",
    "key_refused",
    "timeout",
    "unreachable",
    "unexpected_status",
];

impl AppSec {
    pub fn new(config: AppSecConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!(
                "crowdsec-nb-proxy-bouncer/v",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            config,
            http,
            said_refused: AtomicBool::new(false),
            calls: Default::default(),
        }
    }

    /// (outcome, calls) since start.
    pub fn calls(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CALL_OUTCOMES
            .into_iter()
            .zip(&self.calls)
            .map(|(o, n)| (o, n.load(Ordering::Relaxed)))
    }

    fn count(&self, outcome: &'static str) {
        if let Some(i) = CALL_OUTCOMES.iter().position(|o| *o == outcome) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub async fn inspect(&self, r: Inspected<'_>) -> AppSecAnswer {
        let (answer, outcome) = self.call(r).await;
        self.count(outcome);
        answer
    }

    pub fn max_body(&self) -> usize {
        self.config.max_body
    }

    async fn call(&self, r: Inspected<'_>) -> (AppSecAnswer, &'static str) {
        let method = if r.body.is_some() {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut headers = HeaderMap::with_capacity(r.headers.len() + 6);
        for (name, value) in r.headers {
            if !matches!(
                *name,
                header::HOST
                    | header::CONTENT_LENGTH
                    | header::TRANSFER_ENCODING
                    | header::CONNECTION
            ) {
                headers.append(name.clone(), value.clone());
            }
        }
        let text = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
        headers.insert(APPSEC_IP, text(&r.client.to_string()));
        headers.insert(APPSEC_URI, text(r.uri));
        headers.insert(APPSEC_HOST, text(r.host));
        headers.insert(APPSEC_VERB, text(r.method.as_str()));
        headers.insert(APPSEC_KEY, text(&self.config.api_key));
        if let Some(ua) = r.headers.get(header::USER_AGENT) {
            headers.insert(APPSEC_UA, ua.clone());
        }
        let mut req = self
            .http
            .request(method, self.config.url.clone())
            .headers(headers);
        if let Some(body) = r.body {
            req = req.body(body);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let why = if e.is_timeout() {
                    "timeout"
                } else {
                    "unreachable"
                };
                tracing::debug!("AppSec component at {}: {why}", self.config.url);
                return (AppSecAnswer::Unavailable, why);
            }
        };
        match resp.status().as_u16() {
            200 => (AppSecAnswer::Allow, "allow"),
            403 => (AppSecAnswer::Block, "block"),
            401 => {
                if !self.said_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "AppSec component at {}: key refused (401); requests it should inspect are treated as appsec_unavailable",
                        self.config.url
                    );
                }
                (AppSecAnswer::Unavailable, "key_refused")
            }
            other => {
                tracing::debug!("AppSec component at {}: HTTP {other}", self.config.url);
                (AppSecAnswer::Unavailable, "unexpected_status")
            }
        }
    }
}
