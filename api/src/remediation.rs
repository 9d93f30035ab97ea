//! What a client sees when a service denies it: a ban page (or JSON, or a redirect), and 429
//! with `Retry-After` for throttle decisions. HTTP services only; a TCP connection is closed.

use serde::{Deserialize, Serialize};

/// Status of a ban answer unless the service says otherwise.
pub const DEFAULT_BAN_STATUS: u16 = 403;
/// Status of a throttle answer unless the service says otherwise.
pub const DEFAULT_THROTTLE_STATUS: u16 = 429;
/// `Retry-After` of a throttle answer unless the service says otherwise.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 60;
/// The variables a ban page template may use, as `{{name}}`.
pub const TEMPLATE_VARIABLES: [&str; 6] = [
    "reason",
    "reference",
    "client_ip",
    "host",
    "service",
    "status",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RemediationSpec {
    /// Denials other than throttle: CIDR, country and CrowdSec ban (and custom types).
    #[serde(default, skip_serializing_if = "BanSpec::is_default")]
    pub ban: BanSpec,
    /// CrowdSec `throttle` decisions.
    #[serde(default, skip_serializing_if = "ThrottleSpec::is_default")]
    pub throttle: ThrottleSpec,
    /// CrowdSec `captcha` decisions: a challenge page. Without it (and without the proxy's
    /// `--captcha-*` flags) a captcha decision gets the ban answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha: Option<CaptchaSpec>,
}

/// A captcha provider's widget and its verification endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CaptchaProvider {
    /// Cloudflare Turnstile.
    Turnstile,
    Hcaptcha,
    /// Google reCAPTCHA v2 (checkbox).
    Recaptcha,
}

impl CaptchaProvider {
    pub const fn as_str(self) -> &'static str {
        match self {
            CaptchaProvider::Turnstile => "turnstile",
            CaptchaProvider::Hcaptcha => "hcaptcha",
            CaptchaProvider::Recaptcha => "recaptcha",
        }
    }
}

/// A service's own captcha site. The secret stays on the proxies' machines: a file path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptchaSpec {
    pub provider: CaptchaProvider,
    /// The public site key the widget is shown with.
    pub site_key: String,
    /// A file on each proxy's machine holding the secret key (first line).
    pub secret_key_file: String,
    /// How long a solved challenge lets the client in, in seconds, 60–604800 (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_ttl_secs: Option<u32>,
}

/// How long a solved captcha lets a client in unless configured otherwise.
pub const DEFAULT_CAPTCHA_TTL_SECS: u32 = 1800;

impl CaptchaSpec {
    pub fn cookie_ttl_secs(&self) -> u32 {
        self.cookie_ttl_secs.unwrap_or(DEFAULT_CAPTCHA_TTL_SECS)
    }
}

/// What the captcha step did for one request (access-log `metadata.captcha`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CaptchaOutcome {
    /// The challenge page was shown.
    Served,
    /// A solved challenge was verified; the client got its cookie.
    Passed,
    /// The provider said no, or could not be asked.
    Failed,
    /// A valid cookie let the request through.
    Cookie,
}

impl CaptchaOutcome {
    /// As the access log writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            CaptchaOutcome::Served => "served",
            CaptchaOutcome::Passed => "passed",
            CaptchaOutcome::Failed => "failed",
            CaptchaOutcome::Cookie => "cookie",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BanSpec {
    /// HTTP status, 400–599 (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// An HTML file on the proxy's machine that replaces the built-in page; it may use
    /// `{{reason}}`, `{{reference}}`, `{{client_ip}}`, `{{host}}`, `{{service}}`, `{{status}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_file: Option<String>,
    /// Send clients here (302) instead of a page: an absolute `http(s)://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// HTTP status, 400–599 (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` in seconds, 1–86400 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,
}

impl RemediationSpec {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

impl BanSpec {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or(DEFAULT_BAN_STATUS)
    }
}

impl ThrottleSpec {
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or(DEFAULT_THROTTLE_STATUS)
    }

    pub fn retry_after_secs(&self) -> u32 {
        self.retry_after_secs.unwrap_or(DEFAULT_RETRY_AFTER_SECS)
    }
}

/// Every problem with a remediation block, as (field, message).
pub(crate) fn problems(r: &RemediationSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (field, status) in [
        ("remediation.ban.status", r.ban.status),
        ("remediation.throttle.status", r.throttle.status),
    ] {
        if let Some(s) = status.filter(|s| !(400..=599).contains(s)) {
            out.push((
                field,
                format!("{s} is not an error status; use one from 400 to 599"),
            ));
        }
    }
    if let Some(s) = r
        .throttle
        .retry_after_secs
        .filter(|s| !(1..=86_400).contains(s))
    {
        out.push((
            "remediation.throttle.retry_after_secs",
            format!("{s} is out of range; use 1 to 86400 seconds"),
        ));
    }
    if let Some(url) = &r.ban.redirect_url {
        let ok = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .is_some_and(|u| u.authority().is_some());
        if !ok {
            out.push((
                "remediation.ban.redirect_url",
                format!("\"{url}\" is not an absolute http:// or https:// URL"),
            ));
        }
        if r.ban.template_file.is_some() {
            out.push((
                "remediation.ban.redirect_url",
                "a ban either redirects or shows a page; remove `template_file` or `redirect_url`"
                    .into(),
            ));
        }
    }
    if r.ban
        .template_file
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        out.push((
            "remediation.ban.template_file",
            "must not be empty; remove it for the built-in page".into(),
        ));
    }
    if let Some(c) = &r.captcha {
        let key_ok = !c.site_key.trim().is_empty()
            && c.site_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !key_ok {
            out.push((
                "remediation.captcha.site_key",
                "must be the provider's site key (letters, digits, '-' and '_')".into(),
            ));
        }
        if c.secret_key_file.trim().is_empty() {
            out.push((
                "remediation.captcha.secret_key_file",
                "must name the file holding the secret key".into(),
            ));
        }
        if let Some(t) = c.cookie_ttl_secs.filter(|t| !(60..=604_800).contains(t)) {
            out.push((
                "remediation.captcha.cookie_ttl_secs",
                format!("{t} is out of range; use 60 to 604800 seconds"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RemediationSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_a_valid_block_have_no_problems() {
        let r = RemediationSpec::default();
        assert!(problems(&r).is_empty());
        assert_eq!(r.ban.status(), 403);
        assert_eq!(r.throttle.status(), 429);
        assert_eq!(r.throttle.retry_after_secs(), 60);
        let r = spec(
            r#"{"ban": {"status": 451, "redirect_url": "https://example.com/blocked"},
                "throttle": {"retry_after_secs": 5}}"#,
        );
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let r = spec(
            r#"{"ban": {"status": 200, "redirect_url": "/relative", "template_file": "x.html"},
                "throttle": {"status": 302, "retry_after_secs": 0}}"#,
        );
        let fields: Vec<_> = problems(&r).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "remediation.ban.status",
                "remediation.throttle.status",
                "remediation.throttle.retry_after_secs",
                "remediation.ban.redirect_url",
                "remediation.ban.redirect_url",
            ]
        );
        let r = spec(
            r#"{"captcha": {"provider": "hcaptcha", "site_key": "<x>", "secret_key_file": "", "cookie_ttl_secs": 5}}"#,
        );
        let fields: Vec<_> = problems(&r).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "remediation.captcha.site_key",
                "remediation.captcha.secret_key_file",
                "remediation.captcha.cookie_ttl_secs",
            ]
        );
        let r: Result<RemediationSpec, _> = serde_json::from_str(
            r#"{"captcha": {"provider": "friendly", "site_key": "k", "secret_key_file": "f"}}"#,
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("unknown variant `friendly`"));
        let r = spec(r#"{"ban": {"template_file": " "}}"#);
        assert_eq!(problems(&r)[0].0, "remediation.ban.template_file");
        let r: Result<RemediationSpec, _> = serde_json::from_str(r#"{"ban": {"stauts": 403}}"#);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("unknown field `stauts`"));
    }
}
