//! The captcha step of a request whose client has a CrowdSec `captcha` decision: serve the
//! challenge page, or check a solved one and hand out the cookie. The cookie check itself runs
//! in `authorize`; this only answers the requests that reach the challenge.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use nb_api::CaptchaOutcome;

use super::body::{PendingEntry, ProxyBody};
use crate::remediation::captcha::{
    page, safe_return, token_field, Captcha, CaptchaSite, CHALLENGE_PATH, COOKIE_NAME, RETURN_FIELD,
};
use crate::remediation::no_store;

/// The challenge form is small; anything larger is not a solved widget.
const MAX_FORM: usize = 16 * 1024;

pub async fn challenge(
    captcha: &Captcha,
    site: &CaptchaSite,
    service: &str,
    tls: bool,
    req: Request<Incoming>,
    mut pending: PendingEntry,
) -> Response<ProxyBody> {
    let client = pending.entry().source_ip;
    if req.method() != Method::POST || req.uri().path() != CHALLENGE_PATH {
        let back = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        pending.entry().captcha = Some(CaptchaOutcome::Served);
        return challenge_page(site, safe_return(back), false, pending);
    }
    let form = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        Limited::new(req.into_body(), MAX_FORM).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        _ => Bytes::new(),
    };
    let mut token = None;
    let mut back = String::from("/");
    for (k, v) in form_urlencoded::parse(&form) {
        if k == token_field(site.provider) {
            token = Some(v.into_owned());
        } else if k == RETURN_FIELD {
            back = safe_return(&v).to_owned();
        }
    }
    let verdict = match token.filter(|t| !t.is_empty() && t.len() <= 4096) {
        None => Ok(false),
        Some(t) => captcha.verify(site, &t, client).await,
    };
    match verdict {
        Ok(true) => {
            let entry = pending.entry();
            entry.captcha = Some(CaptchaOutcome::Passed);
            entry.outcome = entry.outcome.captcha_solved();
            entry.status = Some(303);
            let cookie = format!(
                "{COOKIE_NAME}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
                captcha.cookie_value(service, client, site.ttl),
                site.ttl.as_secs(),
                if tls { "; Secure" } else { "" }
            );
            let mut resp = Response::new(ProxyBody::full(Bytes::new(), Some(pending)));
            *resp.status_mut() = StatusCode::SEE_OTHER;
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&back) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                h.insert(header::SET_COOKIE, v);
            }
            no_store(h);
            resp
        }
        Ok(false) => {
            pending.entry().captcha = Some(CaptchaOutcome::Failed);
            challenge_page(site, &back, true, pending)
        }
        Err(e) => {
            tracing::warn!(
                provider = site.provider.as_str(),
                "captcha verification failed: {e}"
            );
            pending.entry().captcha = Some(CaptchaOutcome::Failed);
            challenge_page(site, &back, true, pending)
        }
    }
}

fn challenge_page(
    site: &CaptchaSite,
    back: &str,
    failed: bool,
    mut pending: PendingEntry,
) -> Response<ProxyBody> {
    let (html, csp) = page(site, back, failed);
    pending.entry().status = Some(403);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(html), Some(pending)));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}
