//! Signing in and out. A sign-in (user name and password, or the bootstrap admin token) opens a
//! server-side session held in an HttpOnly, SameSite=Strict cookie; writes made with it must
//! carry its CSRF token. Five failed sign-ins from one address or for one user name lock further
//! attempts for a second, then twice as long after each further failure (up to 5 minutes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::Change;
use super::auth::{source_text, Caller, Viewer, ADMIN_TOKEN_ACTOR, SESSION_COOKIE};
use super::body::JsonBody;
use super::time::rfc3339;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{generate_token, hash_token, verify_argon2, verify_nobody, SESSION_PREFIX};
use crate::store::{now_ms, Role};

/// Failed sign-ins a key (an address, a user name) may have before attempts wait.
pub const FREE_FAILURES: u32 = 5;
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_KEYS: usize = 10_000;

struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long after the last failure the next attempt must wait.
    fn wait(&self) -> Duration {
        if self.count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (self.count - FREE_FAILURES).min(16);
        Duration::from_secs(1 << doublings).min(MAX_WAIT)
    }
}

/// Failed sign-ins by address and by user name (in memory, per replica).
#[derive(Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

impl SignInThrottle {
    /// How long the attempt must still wait, if any of its keys is locked.
    fn locked_for(&self, keys: &[String]) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| failures.get(k))
            .filter_map(|f| f.wait().checked_sub(f.last.elapsed()))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts a failure against each key; returns the keys this failure locked.
    fn failed(&self, keys: &[String]) -> Vec<(String, u32)> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        let mut locked = Vec::new();
        for key in keys {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(f.last) >= FORGET_AFTER {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
            if f.count >= FREE_FAILURES {
                locked.push((key.clone(), f.count));
            }
        }
        locked
    }

    fn succeeded(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A user's name, with `password`.
    pub name: Option<String>,
    pub password: Option<String>,
    /// Or the bootstrap admin token alone.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The signed-in user; absent for the admin token.
    pub user: Option<String>,
    pub role: Role,
    /// Send it back as `X-CSRF-Token` with every write made with the session cookie. Absent
    /// when authenticated by a bearer token (which needs none).
    pub csrf_token: Option<String>,
    pub expires_at: Option<String>,
}

impl SessionView {
    fn of(caller: &Caller) -> Self {
        Self {
            user: caller.user.as_ref().map(|u| u.name.clone()),
            role: caller.role,
            csrf_token: caller.session.as_ref().map(|s| s.csrf_token.clone()),
            expires_at: caller.session.as_ref().map(|s| rfc3339(s.expires_at)),
        }
    }
}

/// The client's address, as the audit log and the throttle name it.
pub struct Source(pub String);

impl FromRequestParts<AppState> for Source {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Source(source_text(parts)))
    }
}

fn cookie(st: &AppState, value: &str, max_age: Duration) -> HeaderValue {
    let secure = if st.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let header = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::try_from(header).expect("the cookie is ASCII")
}

#[utoipa::path(post, path = "/api/v1/session", operation_id = "sign_in", tag = "session",
    request_body = SignIn,
    responses((status = 200, body = SessionView, description = "Signed in; the session cookie is set"),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody, description = "Too many failed sign-ins: wait Retry-After seconds")))]
pub async fn sign_in(
    State(st): State<AppState>,
    Source(source): Source,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    let who = match (&body.name, &body.password, &body.token) {
        (Some(name), Some(_), None) => name.trim().to_owned(),
        (None, None, Some(_)) => ADMIN_TOKEN_ACTOR.to_owned(),
        _ => {
            return Err(ApiError::BadRequest(
                "send either name and password, or token (the admin token)".into(),
            ))
        }
    };
    let keys = [format!("address {source}"), format!("user {who}")];
    if let Some(wait) = st.sign_ins.locked_for(&keys) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(ApiError::LockedOut {
            message: format!(
                "too many failed sign-ins for {who} or from {source}: try again in {secs} s"
            ),
            retry_after: secs,
        });
    }
    let user = match (&body.name, &body.password, &body.token) {
        (Some(_), Some(password), None) => match st.store.user_by_name(&who).await? {
            Some(u) if verify_argon2(u.password_hash.clone(), password.clone()).await => {
                Some(Some(u))
            }
            Some(_) => None,
            None => {
                verify_nobody(password).await;
                None
            }
        },
        (_, _, Some(token)) if st.admin.verify(token).await => Some(None),
        _ => None,
    };
    let Some(user) = user else {
        for (key, count) in st.sign_ins.failed(&keys) {
            tracing::warn!(
                source = %source,
                "sign-in locked for {key} after {count} failed attempts: further attempts wait"
            );
        }
        st.audit(
            &who,
            &source,
            Change::new("sign_in_failed", "session", &who),
        )
        .await;
        let what = if body.token.is_some() {
            "wrong admin token"
        } else {
            "wrong user name or password"
        };
        return Err(ApiError::Unauthorized(what.into()));
    };
    st.sign_ins.succeeded(&keys);
    let secret = generate_token(SESSION_PREFIX);
    let csrf = generate_token("");
    let lifetime = st.settings.session_lifetime;
    let expires_at = now_ms() + lifetime.as_millis() as i64;
    st.store
        .create_session(
            &hash_token(&secret),
            user.as_ref().map(|u| u.id.as_str()),
            &csrf,
            expires_at,
        )
        .await?;
    st.audit(&who, &source, Change::new("sign_in", "session", &who))
        .await;
    let view = SessionView {
        user: user.as_ref().map(|u| u.name.clone()),
        role: user.as_ref().map_or(Role::Admin, |u| u.role),
        csrf_token: Some(csrf),
        expires_at: Some(rfc3339(expires_at)),
    };
    let mut res = Json(view).into_response();
    res.headers_mut()
        .insert(SET_COOKIE, cookie(&st, &secret, lifetime));
    Ok(res)
}

#[utoipa::path(get, path = "/api/v1/session", operation_id = "whoami", tag = "session",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody)))]
pub async fn whoami(Viewer(caller): Viewer) -> Json<SessionView> {
    Json(SessionView::of(&caller))
}

#[utoipa::path(delete, path = "/api/v1/session", operation_id = "sign_out", tag = "session",
    security(("session" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared"), (status = 401, body = ErrorBody)))]
pub async fn sign_out(
    State(st): State<AppState>,
    Viewer(caller): Viewer,
) -> Result<Response, ApiError> {
    if let Some(session) = &caller.session {
        st.store.delete_session(&session.token_hash).await?;
        st.audit(
            &caller.actor,
            &caller.source,
            Change::new("sign_out", "session", &caller.actor),
        )
        .await;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(SET_COOKIE, cookie(&st, "", Duration::ZERO));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_then_each_failure_doubles_the_wait() {
        let t = SignInThrottle::default();
        let keys = ["address 192.0.2.1".to_owned(), "user alice".to_owned()];
        for _ in 0..4 {
            assert!(t.failed(&keys).is_empty());
            assert_eq!(t.locked_for(&keys), None);
        }
        let locked = t.failed(&keys);
        assert_eq!(locked.len(), 2, "both the address and the user");
        let wait = t.locked_for(&keys).unwrap();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        // Another key of the same attempt (a different user from that address) is locked too.
        assert!(t
            .locked_for(&["address 192.0.2.1".into(), "user bob".into()])
            .is_some());
        assert_eq!(t.locked_for(&["address 192.0.2.2".into()]), None);
        t.failed(&keys);
        assert!(t.locked_for(&keys).unwrap() > Duration::from_millis(1900));
        t.succeeded(&keys);
        assert_eq!(t.locked_for(&keys), None);
    }

    #[test]
    fn the_wait_is_capped() {
        let f = Failures {
            count: 100,
            last: Instant::now(),
        };
        assert_eq!(f.wait(), MAX_WAIT);
        let f = Failures {
            count: 4,
            last: Instant::now(),
        };
        assert_eq!(f.wait(), Duration::ZERO);
    }
}
