//! Proxies as the admin sees them: create one (its token is shown once), list, revoke; and the
//! cluster's capabilities.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use nb_api::{BouncerReport, TargetReport};
use serde::{Deserialize, Serialize};

use super::audit::Change;
use super::auth::{Operator, Viewer};
use super::body::JsonBody;
use super::time::rfc3339;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{generate_id, generate_token, hash_token, PROXY_TOKEN_PREFIX};
use crate::store::{now_ms, Proxy};
use crate::validate::{
    appsec_support, crowdsec_support, group_problem, shared_bouncer_keys, CrowdSecSupport,
    FieldProblem, DEFAULT_GROUP,
};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProxyView {
    pub id: String,
    pub name: String,
    /// Its proxy group: it is sent the services that target this group.
    pub group: String,
    pub created_at: String,
    /// Absent until the proxy first connects.
    pub last_seen: Option<String>,
    /// Seen within the live window.
    pub live: bool,
    pub version: Option<String>,
    pub supports_crowdsec: bool,
    pub bouncer: Option<BouncerReport>,
    pub config_revision: Option<i64>,
    pub config_error: Option<String>,
    pub events_dropped: u64,
    /// Access-log lines management refused from this proxy (oversized, malformed).
    pub events_rejected: i64,
    /// Other live proxies using the same CrowdSec bouncer key: they lose decisions to each
    /// other. Give each proxy its own key.
    pub crowdsec_key_shared_with: Vec<String>,
    /// Upstream targets of services with several (or with health checks), as last reported.
    pub targets: Vec<TargetReport>,
}

impl ProxyView {
    fn new(p: &Proxy, st: &AppState, all: &[Proxy]) -> Self {
        let report = p.report.clone().unwrap_or_default();
        let now = now_ms();
        let shared = shared_bouncer_keys(all, now, st.settings.live_window);
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            group: p.group.clone(),
            created_at: rfc3339(p.created_at),
            last_seen: p.last_seen.map(rfc3339),
            live: p.is_live(now, st.settings.live_window),
            version: p.version.clone(),
            supports_crowdsec: p.supports_crowdsec,
            bouncer: report.bouncer,
            config_revision: report.config_revision,
            config_error: report.config_error,
            events_dropped: report.events_dropped,
            events_rejected: p.events_rejected,
            crowdsec_key_shared_with: shared.get(&p.name).cloned().unwrap_or_default(),
            targets: report.targets,
        }
    }
}

/// What the audit log keeps of a proxy: who it is, not what it last reported.
fn audited(p: &ProxyView) -> serde_json::Value {
    serde_json::json!({ "id": p.id, "name": p.name, "group": p.group, "created_at": p.created_at })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProxy {
    /// A name for the operator, unique (e.g. `edge-1`).
    pub name: String,
    /// Its proxy group (default `default`).
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyChange {
    /// Moves the proxy to this group: its stream then sends that group's services.
    pub group: String,
}

fn group_of(group: Option<&str>) -> Result<String, ApiError> {
    let group = group.map(str::trim).unwrap_or(DEFAULT_GROUP);
    match group_problem(group) {
        Some(why) => Err(ApiError::invalid(vec![FieldProblem::new("group", why)])),
        None => Ok(group.to_owned()),
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedProxy {
    pub proxy: ProxyView,
    /// Shown once: pass it to `nb-proxy --token`. Only its hash is stored.
    pub token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Capabilities {
    pub crowdsec: CrowdSecSupport,
    /// The same rule for AppSec (`--appsec-url` on every live proxy).
    pub appsec: CrowdSecSupport,
}

#[utoipa::path(get, path = "/api/v1/proxies", operation_id = "list_proxies", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, body = [ProxyView]), (status = 401, body = ErrorBody)))]
pub async fn list(_: Viewer, State(st): State<AppState>) -> Result<Json<Vec<ProxyView>>, ApiError> {
    let proxies = st.store.proxies().await?;
    Ok(Json(
        proxies
            .iter()
            .map(|p| ProxyView::new(p, &st, &proxies))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/proxies/{id}", operation_id = "get_proxy", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ProxyView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    _: Viewer,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProxyView>, ApiError> {
    let proxies = st.store.proxies().await?;
    let p = proxies
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no proxy \"{id}\"")))?;
    Ok(Json(ProxyView::new(p, &st, &proxies)))
}

#[utoipa::path(post, path = "/api/v1/proxies", operation_id = "create_proxy", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    request_body = NewProxy,
    responses((status = 201, body = CreatedProxy), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    Operator(caller): Operator,
    State(st): State<AppState>,
    JsonBody(body): JsonBody<NewProxy>,
) -> Result<(StatusCode, Json<CreatedProxy>), ApiError> {
    let name = body.name.trim();
    let mut problems = Vec::new();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        problems.push(FieldProblem::new(
            "name",
            "must be 1-100 printable characters",
        ));
    }
    let group = group_of(body.group.as_deref()).map_err(|e| {
        if let ApiError::Invalid { problems: p, .. } = e {
            problems.extend(p);
        }
    });
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let group = group.unwrap_or_default();
    let token = generate_token(PROXY_TOKEN_PREFIX);
    let proxy = st
        .store
        .create_proxy(&generate_id(), name, &group, &hash_token(&token))
        .await?;
    tracing::info!(proxy = %proxy.name, id = %proxy.id, "proxy token created");
    let view = ProxyView::new(&proxy, &st, &[]);
    st.audit_by(
        &caller,
        Change::new("create", "proxy", &proxy.id).after(&audited(&view)),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedProxy { proxy: view, token }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/proxies/{id}", operation_id = "revoke_proxy", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "token revoked; an open stream closes within the check interval"),
        (status = 404, body = ErrorBody)))]
pub async fn revoke(
    Operator(caller): Operator,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let proxies = st.store.proxies().await?;
    let before = proxies
        .iter()
        .find(|p| p.id == id)
        .map(|p| ProxyView::new(p, &st, &proxies));
    if !st.store.delete_proxy(&id).await? {
        return Err(ApiError::NotFound(format!("no proxy \"{id}\"")));
    }
    tracing::info!(id = %id, "proxy token revoked");
    let mut change = Change::new("revoke", "proxy", &id);
    if let Some(before) = &before {
        change = change.before(&audited(before));
    }
    st.audit_by(&caller, change).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/proxies/{id}", operation_id = "update_proxy", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    request_body = ProxyChange,
    responses((status = 200, body = ProxyView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update(
    Operator(caller): Operator,
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProxyChange>,
) -> Result<Json<ProxyView>, ApiError> {
    let group = group_of(Some(&body.group))?;
    let proxies = st.store.proxies().await?;
    let before = proxies
        .iter()
        .find(|p| p.id == id)
        .map(|p| ProxyView::new(p, &st, &proxies))
        .ok_or_else(|| ApiError::NotFound(format!("no proxy \"{id}\"")))?;
    // The move bumps the services revision: the proxy's open stream wakes up and sends the
    // new group's services.
    let mut change = st.store.change_services().await?;
    if !change.move_proxy(&id, &group).await? {
        return Err(ApiError::NotFound(format!("no proxy \"{id}\"")));
    }
    let revision = change.commit().await?;
    st.changes.publish(revision);
    tracing::info!(proxy = %before.name, from = %before.group, to = %group, "proxy moved to another group");
    let proxies = st.store.proxies().await?;
    let after = proxies
        .iter()
        .find(|p| p.id == id)
        .map(|p| ProxyView::new(p, &st, &proxies))
        .ok_or_else(|| ApiError::NotFound(format!("no proxy \"{id}\"")))?;
    st.audit_by(
        &caller,
        Change::new("update", "proxy", &id)
            .before(&audited(&before))
            .after(&audited(&after)),
    )
    .await;
    Ok(Json(after))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CapabilitiesQuery {
    /// Comma-separated proxy groups: what a service targeting them can use. Without it, the
    /// whole fleet.
    pub groups: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/capabilities", operation_id = "capabilities", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    params(CapabilitiesQuery),
    responses((status = 200, body = Capabilities)))]
pub async fn capabilities(
    _: Viewer,
    State(st): State<AppState>,
    Query(q): Query<CapabilitiesQuery>,
) -> Result<Json<Capabilities>, ApiError> {
    let proxies = st.store.proxies().await?;
    let groups: Option<Vec<String>> = q.groups.as_deref().map(|g| {
        g.split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect()
    });
    let groups = groups.as_deref();
    Ok(Json(Capabilities {
        crowdsec: crowdsec_support(&proxies, groups, now_ms(), st.settings.live_window),
        appsec: appsec_support(&proxies, groups, now_ms(), st.settings.live_window),
    }))
}

#[utoipa::path(get, path = "/api/v1/countries", operation_id = "countries", tag = "proxies",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, description = "ISO 3166-1 alpha-2 codes the country lists accept", body = [String])))]
pub async fn countries(_: Viewer) -> Json<Vec<&'static str>> {
    Json(nb_api::CountryCode::assigned().collect())
}
