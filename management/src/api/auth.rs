//! Who is calling: the admin (dashboard, operators' scripts) or a proxy. Each extractor refuses
//! the other kind of token with 403 and anything else with 401. Failed attempts are logged with
//! their source address and limited per source: past the limit, the source gets 429 for the rest
//! of the second, before any token is checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::hash_token;
use crate::store::ProxyIdentity;

/// The caller presented the admin token.
pub struct Admin;

/// The caller presented a proxy's token.
pub struct ProxyCaller(pub ProxyIdentity);

const WINDOW: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Sources remembered before old ones are forgotten.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug)]
struct Source {
    window_start: Instant,
    in_window: u32,
    logged_at: Option<Instant>,
    since_logged: u64,
}

/// Failed authentications by source address.
pub struct AuthFailures {
    /// Failures a source may have per second; 0 = no limit.
    per_second: u32,
    exempt_loopback: bool,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl AuthFailures {
    pub fn new(per_second: u32, exempt_loopback: bool) -> Self {
        Self {
            per_second,
            exempt_loopback,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.per_second == 0 || (self.exempt_loopback && ip.to_canonical().is_loopback())
    }

    /// The source used up its failures for this second.
    fn blocked(&self, ip: IpAddr) -> bool {
        if self.exempt(ip) {
            return false;
        }
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources
            .get(&ip)
            .is_some_and(|s| s.window_start.elapsed() < WINDOW && s.in_window >= self.per_second)
    }

    /// Counts a failure; logs it unless this source was logged in the last 10 s.
    fn failed(&self, ip: IpAddr, route: &str, why: &str) {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, s| now.duration_since(s.window_start) < LOG_EVERY);
        }
        let s = sources.entry(ip).or_insert(Source {
            window_start: now,
            in_window: 0,
            logged_at: None,
            since_logged: 0,
        });
        if now.duration_since(s.window_start) >= WINDOW {
            s.window_start = now;
            s.in_window = 0;
        }
        s.in_window += 1;
        s.since_logged += 1;
        if s.logged_at
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            let limited = if self.exempt(ip) {
                String::new()
            } else {
                format!("; more than {} a second get 429", self.per_second)
            };
            tracing::warn!(
                source = %ip,
                route,
                "authentication failed from {ip} on {route}: {why} ({} failures from this address in the last {}s{limited})",
                s.since_logged,
                LOG_EVERY.as_secs()
            );
            s.logged_at = Some(now);
            s.since_logged = 0;
        }
    }
}

fn source(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing credentials: send Authorization: Bearer <token>".into())
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("malformed Authorization header: expected Bearer <token>".into())
        })
}

/// Runs `check` unless the source is over its failure limit, and counts a 401 as a failure.
async fn guarded<T>(
    parts: &Parts,
    state: &AppState,
    check: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let source = source(parts);
    if source.is_some_and(|ip| state.auth_failures.blocked(ip)) {
        return Err(ApiError::TooManyAttempts(
            "too many failed authentications from this address: wait a second".into(),
        ));
    }
    let result = check.await;
    if let (Err(ApiError::Unauthorized(why)), Some(ip)) = (&result, source) {
        let route = format!("{} {}", parts.method, parts.uri.path());
        state.auth_failures.failed(ip, &route, why);
    }
    result
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        guarded(parts, state, async {
            let token = bearer(parts)?;
            if state.admin.verify(token).await {
                return Ok(Admin);
            }
            if state
                .store
                .proxy_by_token_hash(&hash_token(token))
                .await?
                .is_some()
            {
                return Err(ApiError::Forbidden(
                    "this is a proxy token: admin routes need the admin token".into(),
                ));
            }
            Err(ApiError::Unauthorized("invalid token".into()))
        })
        .await
    }
}

impl FromRequestParts<AppState> for ProxyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        guarded(parts, state, async {
            let token = bearer(parts)?;
            if let Some(identity) = state.store.proxy_by_token_hash(&hash_token(token)).await? {
                return Ok(ProxyCaller(identity));
            }
            if state.admin.verify(token).await {
                return Err(ApiError::Forbidden(
                    "this is the admin token: proxies need a proxy token (POST /api/v1/proxies)"
                        .into(),
                ));
            }
            Err(ApiError::Unauthorized(
                "invalid or revoked proxy token".into(),
            ))
        })
        .await
    }
}
