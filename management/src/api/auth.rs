//! Who is calling: the admin (dashboard, operators' scripts) or a proxy. Each extractor refuses
//! the other kind of token with 403 and anything else with 401.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::{hash_token, same_hash};
use crate::store::ProxyIdentity;

/// The caller presented the admin token.
pub struct Admin;

/// The caller presented a proxy's token.
pub struct ProxyCaller(pub ProxyIdentity);

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

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hash = hash_token(bearer(parts)?);
        if same_hash(&hash, &state.admin_token_hash) {
            return Ok(Admin);
        }
        if state.store.proxy_by_token_hash(&hash).await?.is_some() {
            return Err(ApiError::Forbidden(
                "this is a proxy token: admin routes need the admin token".into(),
            ));
        }
        Err(ApiError::Unauthorized("invalid token".into()))
    }
}

impl FromRequestParts<AppState> for ProxyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hash = hash_token(bearer(parts)?);
        if let Some(identity) = state.store.proxy_by_token_hash(&hash).await? {
            return Ok(ProxyCaller(identity));
        }
        if same_hash(&hash, &state.admin_token_hash) {
            return Err(ApiError::Forbidden(
                "this is the admin token: proxies need a proxy token (POST /api/v1/proxies)".into(),
            ));
        }
        Err(ApiError::Unauthorized(
            "invalid or revoked proxy token".into(),
        ))
    }
}
