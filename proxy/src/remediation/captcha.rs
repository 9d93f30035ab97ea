//! The captcha challenge: a page with the provider's widget, verification of the solved token
//! at the provider's `siteverify` endpoint, and an HMAC-signed cookie bound to the client
//! address and the service, so a solved challenge lets that client in for a while.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use nb_api::CaptchaProvider;
use ring::hmac;

/// Where the challenge form posts to, on every host of a service with captcha.
pub const CHALLENGE_PATH: &str = "/.nb-proxy/captcha";
pub const COOKIE_NAME: &str = "nb_proxy_captcha";
/// The form field carrying where to go back to after a solved challenge.
pub const RETURN_FIELD: &str = "return_to";

/// One captcha site: provider, keys and how long a solved challenge counts.
pub struct CaptchaSite {
    pub provider: CaptchaProvider,
    pub site_key: String,
    secret: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for CaptchaSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptchaSite")
            .field("provider", &self.provider)
            .field("site_key", &self.site_key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl CaptchaSite {
    pub fn new(provider: CaptchaProvider, site_key: String, secret: String, ttl: Duration) -> Self {
        Self {
            provider,
            site_key,
            secret,
            ttl,
        }
    }

    /// Reads the secret from the first line of `path`.
    pub fn with_secret_file(
        provider: CaptchaProvider,
        site_key: String,
        path: &str,
        ttl: Duration,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the captcha secret key file {path}: {e}"))?;
        let secret = text.lines().next().unwrap_or("").trim().to_owned();
        if secret.is_empty() {
            return Err(format!("the captcha secret key file {path} is empty"));
        }
        Ok(Self::new(provider, site_key, secret, ttl))
    }
}

/// The form field the provider's widget fills with the solved token.
pub fn token_field(p: CaptchaProvider) -> &'static str {
    match p {
        CaptchaProvider::Turnstile => "cf-turnstile-response",
        CaptchaProvider::Hcaptcha => "h-captcha-response",
        CaptchaProvider::Recaptcha => "g-recaptcha-response",
    }
}

/// The provider's documented verification endpoint.
pub fn default_verify_url(p: CaptchaProvider) -> &'static str {
    match p {
        CaptchaProvider::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        CaptchaProvider::Hcaptcha => "https://api.hcaptcha.com/siteverify",
        CaptchaProvider::Recaptcha => "https://www.google.com/recaptcha/api/siteverify",
    }
}

/// The provider's widget script, and what the page's CSP must allow for it.
fn widget(p: CaptchaProvider) -> (&'static str, &'static str, &'static str) {
    match p {
        CaptchaProvider::Turnstile => (
            "https://challenges.cloudflare.com/turnstile/v0/api.js",
            "cf-turnstile",
            "https://challenges.cloudflare.com",
        ),
        CaptchaProvider::Hcaptcha => (
            "https://js.hcaptcha.com/1/api.js",
            "h-captcha",
            "https://hcaptcha.com https://*.hcaptcha.com",
        ),
        CaptchaProvider::Recaptcha => (
            "https://www.google.com/recaptcha/api.js",
            "g-recaptcha",
            "https://www.google.com/recaptcha/ https://www.gstatic.com/recaptcha/",
        ),
    }
}

/// Why a token could not be checked (the client gets the page again).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the captcha provider could not be reached ({0})")]
    Unreachable(&'static str),
    #[error("the captcha provider answered HTTP {0}")]
    Status(u16),
    #[error("the captcha provider's answer is not siteverify JSON")]
    BadAnswer,
}

/// Proxy-wide captcha state: the default site (from flags), the cookie key, the client.
pub struct Captcha {
    pub default_site: Option<Arc<CaptchaSite>>,
    /// Replaces every provider's endpoint (tests, or a provider reached through a relay).
    verify_url: Option<String>,
    key: hmac::Key,
    http: reqwest::Client,
}

impl std::fmt::Debug for Captcha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captcha")
            .field("default_site", &self.default_site)
            .field("verify_url", &self.verify_url)
            .finish_non_exhaustive()
    }
}

impl Captcha {
    /// `key`: the cookie signing key; proxies behind one load balancer share one (a file), else
    /// a random key per process (solved challenges then last until a restart).
    pub fn new(
        default_site: Option<CaptchaSite>,
        verify_url: Option<String>,
        key: Option<Vec<u8>>,
    ) -> Self {
        let key = match key {
            Some(k) => hmac::Key::new(hmac::HMAC_SHA256, &k),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .expect("the system has randomness"),
        };
        Self {
            default_site: default_site.map(Arc::new),
            verify_url,
            key,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .user_agent(concat!("nb-proxy/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    fn message(service: &str, client: IpAddr, expires: u64) -> String {
        format!("{service}\0{client}\0{expires}")
    }

    /// The cookie value for a client that just solved the challenge.
    pub fn cookie_value(&self, service: &str, client: IpAddr, ttl: Duration) -> String {
        let expires = unix_now() + ttl.as_secs();
        let tag = hmac::sign(
            &self.key,
            Self::message(service, client, expires).as_bytes(),
        );
        let mut out = format!("{expires}.");
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Whether the request carries a cookie this proxy signed for this service and client,
    /// not yet expired.
    pub fn cookie_valid(&self, request: &HeaderMap, service: &str, client: IpAddr) -> bool {
        let now = unix_now();
        request
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            .any(|value| {
                let Some((expires, tag)) = value.split_once('.') else {
                    return false;
                };
                let (Ok(expires), Some(tag)) = (expires.parse::<u64>(), unhex(tag)) else {
                    return false;
                };
                expires > now
                    && hmac::verify(
                        &self.key,
                        Self::message(service, client, expires).as_bytes(),
                        &tag,
                    )
                    .is_ok()
            })
    }

    /// Asks the provider whether `token` was solved by `client`.
    pub async fn verify(
        &self,
        site: &CaptchaSite,
        token: &str,
        client: IpAddr,
    ) -> Result<bool, VerifyError> {
        let url = self
            .verify_url
            .as_deref()
            .unwrap_or(default_verify_url(site.provider));
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("secret", &site.secret)
            .append_pair("response", token)
            .append_pair("remoteip", &client.to_string())
            .finish();
        let resp = self
            .http
            .post(url)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                VerifyError::Unreachable(if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                })
            })?;
        if !resp.status().is_success() {
            return Err(VerifyError::Status(resp.status().as_u16()));
        }
        let body = resp.bytes().await.map_err(|_| VerifyError::BadAnswer)?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| VerifyError::BadAnswer)?;
        answer["success"].as_bool().ok_or(VerifyError::BadAnswer)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The challenge page: the provider's widget in a form that posts to [`CHALLENGE_PATH`].
/// `failed` adds a line saying the last attempt did not pass. Returns the page and its CSP.
pub fn page(site: &CaptchaSite, return_to: &str, failed: bool) -> (String, String) {
    let (script, class, origins) = widget(site.provider);
    let mut esc_return = String::new();
    super::template::escape_into(&mut esc_return, return_to);
    let mut esc_key = String::new();
    super::template::escape_into(&mut esc_key, &site.site_key);
    let notice = if failed {
        r#"<p class="failed" role="alert">That did not work. Please try again.</p>"#
    } else {
        ""
    };
    let html = format!(
        include_str!("captcha.html"),
        script = script,
        class = class,
        site_key = esc_key,
        action = CHALLENGE_PATH,
        return_field = RETURN_FIELD,
        return_to = esc_return,
        notice = notice,
    );
    let csp = format!(
        "default-src 'none'; script-src {origins}; frame-src {origins}; connect-src {origins}; \
         style-src 'unsafe-inline'; img-src {origins} data:; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    (html, csp)
}

/// Where to go back to after the challenge: a path on this host only (no scheme, no `//`).
pub fn safe_return(path: &str) -> &str {
    if path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path != CHALLENGE_PATH
    {
        path
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn hostile_cookies_are_refused() {
        let c = Captcha::new(None, None, Some(b"k".to_vec()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let good = c.cookie_value("web", ip, Duration::from_secs(60));
        assert!(c.cookie_valid(&cookie(&format!("a=b; {COOKIE_NAME}={good}")), "web", ip));
        let (exp, tag) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            format!("{COOKIE_NAME}="),
            format!("{COOKIE_NAME}={exp}"),
            format!("{COOKIE_NAME}={exp}.zz{}", &tag[2..]),
            format!("{COOKIE_NAME}={exp}.{}", &tag[1..]),
            format!("{COOKIE_NAME}={exp}.{tag}{}", "0".repeat(200)),
            format!("{COOKIE_NAME}=-1.{tag}"),
            format!("{COOKIE_NAME}X={good}"),
            format!("{COOKIE_NAME}=1.{tag}"),
        ] {
            assert!(!c.cookie_valid(&cookie(&bad), "web", ip), "{bad}");
        }
        let other_key = Captcha::new(None, None, Some(b"other".to_vec()));
        assert!(!other_key.cookie_valid(&cookie(&format!("{COOKIE_NAME}={good}")), "web", ip));
        let expired = c.cookie_value("web", ip, Duration::ZERO);
        assert!(!c.cookie_valid(&cookie(&format!("{COOKIE_NAME}={expired}")), "web", ip));
    }

    #[test]
    fn only_paths_on_this_host_are_returned_to() {
        assert_eq!(safe_return("/cart?x=1"), "/cart?x=1");
        for hostile in [
            "//evil.test/",
            "/\\evil.test",
            "https://evil.test/",
            "evil",
            "",
            CHALLENGE_PATH,
        ] {
            assert_eq!(safe_return(hostile), "/", "{hostile}");
        }
    }

    #[test]
    fn the_page_escapes_what_it_echoes() {
        let site = CaptchaSite::new(
            CaptchaProvider::Turnstile,
            "k\"><script>".into(),
            "s".into(),
            Duration::from_secs(60),
        );
        let (html, csp) = page(&site, "/a\"><script>alert(1)</script>", true);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)"));
        assert!(!html.contains("k\"><script>"));
        assert!(csp.starts_with("default-src 'none'; script-src https://challenges.cloudflare.com"));
        assert!(
            !format!("{site:?}").contains("\"s\""),
            "the secret is not printed"
        );
    }
}
