//! Who is calling: a user (by session cookie or personal token), the bootstrap admin token, or
//! a proxy. [`Viewer`], [`Operator`] and [`Admin`] authenticate a person and check their role;
//! [`ProxyCaller`] a proxy. Each refuses the other kind of token with 403 and anything else with
//! 401. Failed attempts are logged with their source address and limited per source: past the
//! limit, the source gets 429 for the rest of the second, before any token is checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::Method;

use super::{ApiError, AppState};
use crate::auth::{hash_token, USER_TOKEN_PREFIX};
use crate::store::{now_ms, ProxyIdentity, Role, User};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "nb_session";
/// The header cookie-authenticated writes carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A person (or their script), authenticated, with the role their credentials carry.
#[derive(Debug, Clone)]
pub struct Caller {
    /// For the audit log and messages: the user's name, or `admin token`.
    pub actor: String,
    /// `None` for the bootstrap admin token.
    pub user: Option<User>,
    pub role: Role,
    /// The client's address, for the audit log.
    pub source: String,
    /// Set when authenticated by a session cookie.
    pub session: Option<SessionCookie>,
}

#[derive(Debug, Clone)]
pub struct SessionCookie {
    pub token_hash: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// The actor name of the bootstrap admin token.
pub const ADMIN_TOKEN_ACTOR: &str = "admin token";

/// Any signed-in person: read-only routes.
pub struct Viewer(pub Caller);
/// An operator or admin: services and proxies.
pub struct Operator(pub Caller);
/// An admin: users and the audit log.
pub struct Admin(pub Caller);

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

pub(super) fn source_text(parts: &Parts) -> String {
    source(parts).map_or_else(|| "unknown".into(), |ip| ip.to_canonical().to_string())
}

fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// Reads that cannot change anything do not need the CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn authenticate(parts: &Parts, st: &AppState) -> Result<Caller, ApiError> {
    let source = source_text(parts);
    if parts.headers.contains_key(AUTHORIZATION) {
        let token = bearer(parts)?;
        if token.starts_with(USER_TOKEN_PREFIX) {
            return personal_token(st, token, source).await;
        }
        if st.admin.verify(token).await {
            return Ok(Caller {
                actor: ADMIN_TOKEN_ACTOR.into(),
                user: None,
                role: Role::Admin,
                source,
                session: None,
            });
        }
        if st
            .store
            .proxy_by_token_hash(&hash_token(token))
            .await?
            .is_some()
        {
            return Err(ApiError::Forbidden(
                "this is a proxy token: these routes need a user's session or token, or the \
                 admin token"
                    .into(),
            ));
        }
        return Err(ApiError::Unauthorized("invalid token".into()));
    }
    let Some(cookie) = session_cookie(parts) else {
        return Err(ApiError::Unauthorized(
            "missing credentials: sign in, or send Authorization: Bearer <token>".into(),
        ));
    };
    let token_hash = hash_token(cookie);
    let session = st.store.session(&token_hash).await?.ok_or_else(|| {
        ApiError::Unauthorized("your session expired or was ended: sign in again".into())
    })?;
    if !is_safe(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !crate::auth::same_hash(sent, &session.csrf_token) {
            return Err(ApiError::Forbidden(
                "missing or wrong CSRF token: send the X-CSRF-Token header with the value \
                 returned at sign-in"
                    .into(),
            ));
        }
    }
    let (actor, role) = match &session.user {
        Some(u) => (u.name.clone(), u.role),
        None => (ADMIN_TOKEN_ACTOR.to_owned(), Role::Admin),
    };
    Ok(Caller {
        actor,
        user: session.user,
        role,
        source,
        session: Some(SessionCookie {
            token_hash,
            csrf_token: session.csrf_token,
            expires_at: session.expires_at,
        }),
    })
}

async fn personal_token(st: &AppState, token: &str, source: String) -> Result<Caller, ApiError> {
    let Some((t, user)) = st.store.api_token_by_hash(&hash_token(token)).await? else {
        return Err(ApiError::Unauthorized("invalid token".into()));
    };
    if t.revoked_at.is_some() {
        return Err(ApiError::Unauthorized(format!(
            "the token \"{}\" of {} was revoked",
            t.name, user.name
        )));
    }
    if t.expires_at <= now_ms() {
        return Err(ApiError::Unauthorized(format!(
            "the token \"{}\" of {} expired at {}",
            t.name,
            user.name,
            super::time::rfc3339(t.expires_at)
        )));
    }
    Ok(Caller {
        actor: user.name.clone(),
        role: user.role,
        user: Some(user),
        source,
        session: None,
    })
}

async fn caller_with(parts: &Parts, st: &AppState, needed: Role) -> Result<Caller, ApiError> {
    let caller = guarded(parts, st, authenticate(parts, st)).await?;
    if caller.role < needed {
        let article = if caller.role == Role::Viewer {
            "a"
        } else {
            "an"
        };
        return Err(ApiError::Forbidden(format!(
            "{} is {article} {}: this needs the {needed} role",
            caller.actor, caller.role
        )));
    }
    Ok(caller)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr) => {
        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                st: &AppState,
            ) -> Result<Self, ApiError> {
                caller_with(parts, st, $role).await.map($name)
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer);
role_extractor!(Operator, Role::Operator);
role_extractor!(Admin, Role::Admin);

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
