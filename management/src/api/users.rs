//! Users (admins manage them) and personal API tokens (each user manages their own; admins
//! see and revoke everyone's).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::Change;
use super::auth::{Admin, Caller, Viewer};
use super::body::{with_checks, CheckedBody};
use super::time::rfc3339;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{
    generate_id, generate_token, hash_password, hash_token, MIN_PASSWORD_LEN, USER_TOKEN_PREFIX,
};
use crate::store::{now_ms, ApiToken, Role, User};
use crate::validate::FieldProblem;

const MAX_NAME_LEN: usize = 64;
const MAX_PASSWORD_LEN: usize = 1024;
/// Personal tokens live 90 days unless asked otherwise, 10 years at most.
const DEFAULT_TOKEN_DAYS: u32 = 90;
const MAX_TOKEN_DAYS: u32 = 3650;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            name: u.name.clone(),
            role: u.role,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewUser {
    /// Letters, digits, `.`, `_`, `-` and `@`; 1-64 characters.
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// At least 12 characters.
    pub password: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserChange {
    pub role: Option<String>,
    /// A new password ends the user's sessions.
    pub password: Option<String>,
}

/// Problems with a user's name; none when it is fine.
pub fn name_problems(name: &str) -> Vec<FieldProblem> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return vec![FieldProblem::new(
            "name",
            format!(
                "\"{name}\" is not a user name: use 1-{MAX_NAME_LEN} letters, digits, '.', '_', '-' or '@'"
            ),
        )];
    }
    vec![]
}

pub fn password_problems(password: &str, name: &str) -> Vec<FieldProblem> {
    let message = if password.chars().count() < MIN_PASSWORD_LEN {
        format!("too short: use at least {MIN_PASSWORD_LEN} characters")
    } else if password.len() > MAX_PASSWORD_LEN {
        format!("too long: at most {MAX_PASSWORD_LEN} bytes")
    } else if password == name {
        "must not be the user name".to_owned()
    } else {
        return vec![];
    };
    vec![FieldProblem::new("password", message)]
}

fn role_of(field: &str, role: &str, problems: &mut Vec<FieldProblem>) -> Option<Role> {
    let parsed = Role::parse(role);
    if parsed.is_none() {
        problems.push(FieldProblem::new(
            field,
            format!("unknown role \"{role}\": use admin, operator or viewer"),
        ));
    }
    parsed
}

/// The problems of fields that did not decode, and the body with those fields at their default.
fn split<T: Default>(body: Result<T, super::body::Undecoded<T>>) -> (Vec<FieldProblem>, T) {
    match body {
        Ok(b) => (vec![], b),
        Err(u) => (u.problems, u.rest.unwrap_or_default()),
    }
}

async fn hashed(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
}

async fn user_named(st: &AppState, name: &str) -> Result<User, ApiError> {
    st.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user \"{name}\"")))
}

#[utoipa::path(get, path = "/api/v1/users", operation_id = "list_users", tag = "users",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, body = [UserView]), (status = 403, body = ErrorBody)))]
pub async fn list(_: Admin, State(st): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(
        st.store.users().await?.iter().map(Into::into).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/users", operation_id = "create_user", tag = "users",
    security(("admin" = []), ("session" = [])),
    request_body = NewUser,
    responses((status = 201, body = UserView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    Admin(caller): Admin,
    State(st): State<AppState>,
    CheckedBody(body): CheckedBody<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let (reported, body) = split(body);
    let name = body.name.trim();
    let mut checks = name_problems(name);
    let role = role_of("role", &body.role, &mut checks);
    checks.extend(password_problems(&body.password, name));
    let problems = with_checks(reported, checks);
    let Some(role) = role.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid(problems));
    };
    let hash = hashed(body.password).await?;
    let user = st
        .store
        .create_user(&generate_id(), name, role, &hash)
        .await?;
    let view = UserView::from(&user);
    st.audit_by(&caller, Change::new("create", "user", name).after(&view))
        .await;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/api/v1/users/{name}", operation_id = "update_user", tag = "users",
    security(("admin" = []), ("session" = [])),
    params(("name" = String, Path)),
    request_body = UserChange,
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    Admin(caller): Admin,
    State(st): State<AppState>,
    Path(name): Path<String>,
    CheckedBody(body): CheckedBody<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    let user = user_named(&st, &name).await?;
    let (reported, body) = split(body);
    let mut checks = Vec::new();
    let role = body
        .role
        .as_deref()
        .and_then(|r| role_of("role", r, &mut checks));
    if let Some(p) = &body.password {
        checks.extend(password_problems(p, &name));
    }
    let problems = with_checks(reported, checks);
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let hash = match body.password {
        Some(p) => Some(hashed(p).await?),
        None => None,
    };
    st.store
        .update_user(&user.id, role, hash.as_deref())
        .await?;
    let updated = user_named(&st, &name).await?;
    let (before, after) = (UserView::from(&user), UserView::from(&updated));
    let mut change = Change::new("update", "user", &name)
        .before(&before)
        .after(&after);
    if hash.is_some() {
        // The hash itself is never recorded; that the password changed is.
        change = change
            .before(&serde_json::json!({"role": before.role, "password": "(old)"}))
            .after(&serde_json::json!({"role": after.role, "password": "(changed)"}));
    }
    st.audit_by(&caller, change).await;
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", operation_id = "delete_user", tag = "users",
    security(("admin" = []), ("session" = [])),
    params(("name" = String, Path)),
    responses((status = 204, description = "Deleted, with its sessions and tokens"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    Admin(caller): Admin,
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user_named(&st, &name).await?;
    if caller.user.as_ref().is_some_and(|u| u.id == user.id) {
        return Err(ApiError::Conflict(
            "you cannot delete yourself: sign in as another admin".into(),
        ));
    }
    st.store.delete_user(&user.id).await?;
    st.audit_by(
        &caller,
        Change::new("delete", "user", &name).before(&UserView::from(&user)),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Whose token it is.
    pub user: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

impl TokenView {
    fn new(t: &ApiToken, user: &str) -> Self {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at <= now_ms() {
            "expired"
        } else {
            "active"
        };
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            user: user.to_owned(),
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
            revoked_at: t.revoked_at.map(rfc3339),
            state: state.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewToken {
    /// What it is for, e.g. `ci`.
    pub name: String,
    /// 1-3650, default 90.
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: TokenView,
    /// Shown once: send it as `Authorization: Bearer <secret>`. Only its hash is stored.
    pub secret: String,
}

fn own_user(caller: &Caller) -> Result<&User, ApiError> {
    caller.user.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "the admin token has no personal tokens: sign in as a user (nb-management user add)"
                .into(),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, body = [TokenView], description = "Your tokens; an admin sees everyone's")))]
pub async fn list_tokens(
    Viewer(caller): Viewer,
    State(st): State<AppState>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let users: std::collections::HashMap<String, String> = st
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let only = match caller.role {
        Role::Admin => None,
        _ => Some(own_user(&caller)?.id.as_str()),
    };
    let tokens = st.store.api_tokens(only).await?;
    Ok(Json(
        tokens
            .iter()
            .map(|t| TokenView::new(t, users.get(&t.user_id).map_or("?", |n| n.as_str())))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens",
    security(("session" = [])),
    request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    Viewer(caller): Viewer,
    State(st): State<AppState>,
    CheckedBody(body): CheckedBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let user = own_user(&caller)?;
    let (reported, body) = split(body);
    let mut checks = Vec::new();
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        checks.push(FieldProblem::new(
            "name",
            format!("give the token a name of 1-{MAX_NAME_LEN} characters"),
        ));
    }
    let days = body.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        checks.push(FieldProblem::new(
            "expires_in_days",
            format!("{days} is out of range: 1-{MAX_TOKEN_DAYS} days"),
        ));
    }
    let problems = with_checks(reported, checks);
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let secret = generate_token(USER_TOKEN_PREFIX);
    let now = now_ms();
    let token = ApiToken {
        id: generate_id(),
        user_id: user.id.clone(),
        name: name.to_owned(),
        created_at: now,
        expires_at: now + i64::from(days) * 86_400_000,
        revoked_at: None,
    };
    st.store
        .create_api_token(&token, &hash_token(&secret))
        .await?;
    let view = TokenView::new(&token, &user.name);
    st.audit_by(
        &caller,
        Change::new("create", "token", &token.id).after(&view),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: view,
            secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", operation_id = "revoke_token", tag = "tokens",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    Viewer(caller): Viewer,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("no token \"{id}\""));
    let token = st.store.api_token(&id).await?.ok_or_else(not_found)?;
    let mine = caller.user.as_ref().is_some_and(|u| u.id == token.user_id);
    if !mine && caller.role != Role::Admin {
        // Someone else's token is not even confirmed to exist.
        return Err(not_found());
    }
    let owner = st
        .store
        .user_by_id(&token.user_id)
        .await?
        .map_or_else(|| "?".to_owned(), |u| u.name);
    st.store.revoke_api_token(&id).await?;
    let after = st.store.api_token(&id).await?.ok_or_else(not_found)?;
    st.audit_by(
        &caller,
        Change::new("revoke", "token", &id)
            .before(&TokenView::new(&token, &owner))
            .after(&TokenView::new(&after, &owner)),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
