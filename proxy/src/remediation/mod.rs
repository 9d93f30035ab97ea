//! What a denied HTTP client sees, per service: a ban page (built-in or the operator's
//! template), JSON for API clients, or a redirect; 429 with `Retry-After` for throttle
//! decisions. `restrict` decides; this only renders the answer, after the decision.

pub(crate) mod captcha;
mod template;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use nb_api::{RemediationSpec, Verdict};

pub(crate) use template::{Template, Values};

static BUILT_IN_PAGE: LazyLock<Arc<Template>> = LazyLock::new(|| {
    Arc::new(Template::parse(include_str!("ban.html")).expect("the built-in ban page parses"))
});

/// The built-in page has no script and loads nothing.
const BUILT_IN_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One service's remediation, compiled with its configuration.
#[derive(Debug, Clone)]
pub struct Remediation {
    ban_status: StatusCode,
    page: Arc<Template>,
    custom_page: bool,
    redirect: Option<HeaderValue>,
    throttle_status: StatusCode,
    retry_after: u32,
    /// The service's own captcha site; else the proxy's, else captcha decisions are banned.
    pub(crate) captcha: Option<Arc<captcha::CaptchaSite>>,
}

impl Default for Remediation {
    fn default() -> Self {
        Self::compile(&RemediationSpec::default()).expect("the defaults compile")
    }
}

/// Why a remediation block cannot be used, with the field it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RemediationError {
    pub field: &'static str,
    pub message: String,
}

impl Remediation {
    /// `spec` passed `nb_api` validation; what is left to check is the template file.
    pub(crate) fn compile(spec: &RemediationSpec) -> Result<Self, RemediationError> {
        let status = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::FORBIDDEN);
        let page = match &spec.ban.template_file {
            None => BUILT_IN_PAGE.clone(),
            Some(path) => {
                let error = |message| RemediationError {
                    field: "remediation.ban.template_file",
                    message,
                };
                let text = std::fs::read_to_string(path)
                    .map_err(|e| error(format!("cannot read {path}: {e}")))?;
                Arc::new(Template::parse(&text).map_err(|e| error(format!("{path}: {e}")))?)
            }
        };
        let redirect = match &spec.ban.redirect_url {
            None => None,
            Some(url) => Some(HeaderValue::from_str(url).map_err(|_| RemediationError {
                field: "remediation.ban.redirect_url",
                message: format!("\"{url}\" cannot be sent as a Location header"),
            })?),
        };
        let captcha = match &spec.captcha {
            None => None,
            Some(c) => Some(Arc::new(
                captcha::CaptchaSite::with_secret_file(
                    c.provider,
                    c.site_key.clone(),
                    &c.secret_key_file,
                    std::time::Duration::from_secs(c.cookie_ttl_secs().into()),
                )
                .map_err(|message| RemediationError {
                    field: "remediation.captcha.secret_key_file",
                    message,
                })?,
            )),
        };
        Ok(Self {
            captcha,
            ban_status: status(spec.ban.status()),
            custom_page: spec.ban.template_file.is_some(),
            page,
            redirect,
            throttle_status: status(spec.throttle.status()),
            retry_after: spec.throttle.retry_after_secs(),
        })
    }

    /// The answer to a denied request.
    pub(crate) fn answer(&self, d: &Denial<'_>, request: &HeaderMap) -> Response<Bytes> {
        let throttled = d.verdict == Verdict::CrowdsecThrottle;
        let status = if throttled {
            self.throttle_status
        } else {
            self.ban_status
        };
        if let (Some(location), false) = (&self.redirect, throttled) {
            let mut resp = Response::new(Bytes::new());
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut()
                .insert(header::LOCATION, location.clone());
            no_store(resp.headers_mut());
            return resp;
        }
        let reason = reason(d.verdict);
        let (content_type, body) = match Format::of(request) {
            Format::Html => (
                "text/html; charset=utf-8",
                self.page.render(&Values {
                    reason,
                    reference: d.reference,
                    client_ip: &d.client_ip.to_string(),
                    host: d.host,
                    service: d.service,
                    status: status.as_u16(),
                }),
            ),
            Format::Json => {
                let mut v = serde_json::json!({
                    "status": status.as_u16(),
                    "verdict": d.verdict,
                    "reason": reason,
                    "reference": d.reference,
                });
                if throttled {
                    v["retry_after"] = self.retry_after.into();
                }
                ("application/json", format!("{v}\n"))
            }
            Format::Text => {
                // Sized exactly, so that the body is this one allocation.
                let parts = [
                    status.canonical_reason().unwrap_or("Denied"),
                    ": ",
                    reason,
                    "\nReference: ",
                    d.reference,
                    "\n",
                ];
                let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                parts.iter().for_each(|p| text.push_str(p));
                ("text/plain; charset=utf-8", text)
            }
        };
        let html = content_type.starts_with("text/html");
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        no_store(h);
        if html && !self.custom_page {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(BUILT_IN_CSP),
            );
        }
        if throttled {
            h.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        resp
    }
}

/// Denial answers are never cached, nor sniffed as another type.
pub(crate) fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// What the page says, in the client's words.
pub(crate) fn reason(v: Verdict) -> &'static str {
    match v {
        Verdict::IpRestricted => "Your network address is not allowed to reach this site.",
        Verdict::CountryRestricted => "Access to this site is not available from your country.",
        Verdict::GeoUnavailable => {
            "Your location could not be determined, and this site needs it to let you in."
        }
        Verdict::CrowdsecBan | Verdict::CrowdsecCaptcha => {
            "Your network address has been blocked for suspicious activity."
        }
        Verdict::CrowdsecThrottle => {
            "Too many requests have come from your network address. Please wait and try again."
        }
        Verdict::CrowdsecUnavailable => {
            "The security check for this site is temporarily unavailable. Please try again later."
        }
        Verdict::AppsecBlock => "This request was blocked by the site's web application firewall.",
        Verdict::AppsecUnavailable => {
            "The request could not be checked right now. Please try again in a moment."
        }
        Verdict::Allow | Verdict::NoService => "This request was not allowed.",
    }
}

/// What the client is told about one denial.
pub(crate) struct Denial<'a> {
    pub verdict: Verdict,
    pub reference: &'a str,
    pub client_ip: IpAddr,
    pub host: &'a str,
    pub service: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
    Text,
}

impl Format {
    /// Browsers ask for HTML, API clients for JSON; anything else (curl's `*/*`) gets text.
    /// The earlier of the two in `Accept` wins.
    fn of(request: &HeaderMap) -> Self {
        let accept = request
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match (accept.find("text/html"), accept.find("application/json")) {
            (Some(h), Some(j)) if j < h => Format::Json,
            (Some(_), _) => Format::Html,
            (None, Some(_)) => Format::Json,
            (None, None) => Format::Text,
        }
    }
}

/// A reference unique within this process (a bijective mix of a counter and a start-time
/// seed), 16 hex digits: shown to the client and written to the access log.
pub(crate) fn new_reference() -> u64 {
    static SEED: LazyLock<u64> = LazyLock::new(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 40)
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut z = SEED.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A reference as shown to the client: 16 lower-case hex digits, kept on the stack.
pub(crate) struct ReferenceText([u8; 16]);

impl ReferenceText {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

pub(crate) fn format_reference(r: u64) -> ReferenceText {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((r >> ((15 - i) * 4)) & 0xf) as usize];
    }
    ReferenceText(out)
}
