//! Services CRUD. Every write validates the service with the proxy's compiler, checks what it
//! claims against the other services' routes and, when it turns CrowdSec on or changes its mode,
//! checks that the live proxies support it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nb_api::{
    HeadersSpec, HstsSpec, Protocol, RemediationSpec, RestrictionsSpec, ServiceSpec, TlsSpec,
    UpstreamProtocol, UpstreamTlsSpec,
};
use nb_api::{HealthCheckSpec, LoadBalancing, PassiveHealthSpec};
use serde::{Deserialize, Serialize};

use super::audit::Change;
use super::auth::{Operator, Viewer};
use super::body::{CheckedBody, Undecoded};
use super::time::rfc3339;
use super::{ApiError, AppState};
use crate::store::{now_ms, Service, ServicesChange};
use crate::validate::{
    appsec_support, conflict_problems, crowdsec_support, groups_problems, routes_of,
    validate_service, FieldProblem, DEFAULT_GROUP, MAX_NAME,
};

/// A service as written by the dashboard or a script.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    /// Stable identifier (lower case, digits, `-_.`); optional on update, where the path gives it.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The proxy groups whose proxies serve it (default `["default"]`).
    #[serde(default = "default_groups")]
    pub groups: Vec<String>,
    pub protocol: Protocol,
    /// http: host names (or `*.domain`) routed to this service.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// http: serve only paths under this prefix (`/admin`); the longest prefix of a host wins.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// http: remove the prefix from the path sent upstream.
    #[serde(default)]
    pub strip_path_prefix: bool,
    /// tcp: `ip:port` the proxies listen on.
    #[serde(default)]
    pub listen: Option<String>,
    /// http: `http://host:port` (or `https://`); tcp: `host:port`. Or `upstreams`.
    #[serde(default)]
    pub upstream: String,
    /// Several targets instead of one `upstream`, balanced by `load_balancing`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// `round_robin` (the default) or `least_connections`.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// When a failing target is taken out of rotation (default: 3 failures in a row, 30 s).
    #[serde(default)]
    pub passive_health: PassiveHealthSpec,
    /// Checks each target on an interval (connect, or `GET path` for http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// tcp: at most this many connections open at once.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Open upstream connections with a PROXY protocol v2 header naming the client.
    #[serde(default)]
    pub send_proxy_protocol: bool,
    #[serde(default)]
    pub restrictions: RestrictionsSpec,
    /// http: what a denied client sees; omitted means the defaults (403 page, 429 for throttle).
    #[serde(default)]
    pub remediation: RemediationSpec,
    /// http: `auto` (HTTP/2 by ALPN for https://, else HTTP/1.1), `http1`, or `h2c` (HTTP/2
    /// over cleartext, for gRPC).
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// http, https:// upstreams: a CA file on the proxies, a server name, or no verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTlsSpec>,
    /// http: request and response headers to set, add or remove.
    #[serde(default)]
    pub headers: HeadersSpec,
    /// http: `{acme: true}` gets the hosts' certificate automatically on every proxy (ACME,
    /// HTTP-01 or TLS-ALPN-01). Certificate files are not taken here: use nb-proxy --tls-dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// http: answer plain-HTTP requests for hosts with a certificate with a 308 to https://.
    #[serde(default = "yes")]
    pub https_redirect: bool,
    /// http: `Strict-Transport-Security` on responses over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<HstsSpec>,
    /// Read-only, ignored: accepted so that a fetched service can be edited and sent back.
    #[serde(default)]
    #[schema(read_only, value_type = Option<usize>)]
    pub rule_count: Option<serde_json::Value>,
    /// Read-only, ignored (see `rule_count`).
    #[serde(default)]
    #[schema(read_only, value_type = Option<String>)]
    pub created_at: Option<serde_json::Value>,
    /// Read-only, ignored (see `rule_count`).
    #[serde(default)]
    #[schema(read_only, value_type = Option<String>)]
    pub updated_at: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    /// The proxy groups whose proxies serve it.
    pub groups: Vec<String>,
    pub protocol: Protocol,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub strip_path_prefix: bool,
    #[serde(default)]
    pub listen: Option<String>,
    /// The one target; empty when the service has `upstreams`.
    #[serde(default)]
    pub upstream: String,
    #[serde(default)]
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default)]
    pub passive_health: PassiveHealthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub send_proxy_protocol: bool,
    pub restrictions: RestrictionsSpec,
    pub remediation: RemediationSpec,
    /// http: `auto` (HTTP/2 by ALPN for https://, else HTTP/1.1), `http1`, or `h2c` (HTTP/2
    /// over cleartext, for gRPC).
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// http, https:// upstreams: a CA file on the proxies, a server name, or no verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTlsSpec>,
    /// http: request and response headers to set, add or remove.
    #[serde(default)]
    pub headers: HeadersSpec,
    /// http: `{acme: true}` gets the hosts' certificate automatically on every proxy (ACME,
    /// HTTP-01 or TLS-ALPN-01). Certificate files are not taken here: use nb-proxy --tls-dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// http: answer plain-HTTP requests for hosts with a certificate with a 308 to https://.
    #[serde(default = "yes")]
    pub https_redirect: bool,
    /// http: `Strict-Transport-Security` on responses over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<HstsSpec>,
    /// Access-control rules: list entries, with CrowdSec counted as one.
    pub rule_count: usize,
    pub created_at: String,
    pub updated_at: String,
}

fn yes() -> bool {
    true
}

fn default_groups() -> Vec<String> {
    vec![DEFAULT_GROUP.to_owned()]
}

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> Self {
        Self {
            id: s.spec.id.clone(),
            name: s.name.clone(),
            groups: s.groups.clone(),
            protocol: s.spec.protocol,
            hosts: s.spec.hosts.clone(),
            path_prefix: s.spec.path_prefix.clone(),
            strip_path_prefix: s.spec.strip_path_prefix,
            listen: s.spec.listen.clone(),
            upstream: s.spec.upstream.clone(),
            upstreams: s.spec.upstreams.clone(),
            load_balancing: s.spec.load_balancing,
            passive_health: s.spec.passive_health,
            health_check: s.spec.health_check.clone(),
            max_connections: s.spec.max_connections,
            send_proxy_protocol: s.spec.send_proxy_protocol,
            restrictions: s.spec.restrictions.clone(),
            remediation: s.spec.remediation.clone(),
            upstream_protocol: s.spec.upstream_protocol,
            upstream_tls: s.spec.upstream_tls.clone(),
            tls: s.spec.tls.clone(),
            headers: s.spec.headers.clone(),
            https_redirect: s.spec.https_redirect,
            hsts: s.spec.hsts.clone(),
            rule_count: s.spec.restrictions.rule_count(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// What a body stores: the display name, the spec the proxies run, and the target groups.
struct Parts {
    name: String,
    spec: ServiceSpec,
    groups: Vec<String>,
}

impl ServiceBody {
    fn into_parts(self, id: String) -> Parts {
        let groups = self.groups.iter().map(|g| g.trim().to_owned()).collect();
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.clone());
        let spec = ServiceSpec {
            id,
            protocol: self.protocol,
            hosts: self
                .hosts
                .into_iter()
                .map(|h| h.trim().to_owned())
                .collect(),
            path_prefix: self
                .path_prefix
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
            strip_path_prefix: self.strip_path_prefix,
            listen: self
                .listen
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
            upstream: self.upstream.trim().to_owned(),
            upstreams: self
                .upstreams
                .into_iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            load_balancing: self.load_balancing,
            passive_health: self.passive_health,
            health_check: self.health_check,
            tls: self.tls,
            max_connections: self.max_connections,
            send_proxy_protocol: self.send_proxy_protocol,
            restrictions: trimmed(self.restrictions),
            remediation: self.remediation,
            upstream_protocol: self.upstream_protocol,
            upstream_tls: self.upstream_tls,
            headers: self.headers,
            https_redirect: self.https_redirect,
            hsts: self.hsts,
        };
        Parts { name, spec, groups }
    }
}

fn trimmed(mut r: RestrictionsSpec) -> RestrictionsSpec {
    for list in [
        &mut r.cidr_allow,
        &mut r.cidr_deny,
        &mut r.country_allow,
        &mut r.country_deny,
        &mut r.bypass,
    ] {
        for v in list.iter_mut() {
            *v = v.trim().to_owned();
        }
        list.retain(|v| !v.is_empty());
    }
    for list in [&mut r.country_allow, &mut r.country_deny] {
        for v in list.iter_mut() {
            v.make_ascii_uppercase();
        }
    }
    r
}

#[utoipa::path(get, path = "/api/v1/services", operation_id = "list_services", tag = "services",
    security(("admin" = []), ("session" = [])),
    responses((status = 200, body = [ServiceView]), (status = 401, body = ErrorBody)))]
pub async fn list(
    _: Viewer,
    State(st): State<AppState>,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    let services = st.store.services().await?;
    Ok(Json(services.iter().map(ServiceView::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", operation_id = "get_service", tag = "services",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    _: Viewer,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let s = st.store.service(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(ServiceView::from(&s)))
}

#[utoipa::path(post, path = "/api/v1/services", operation_id = "create_service", tag = "services",
    security(("admin" = []), ("session" = [])),
    request_body = ServiceBody,
    responses((status = 201, body = ServiceView), (status = 409, body = ErrorBody),
        (status = 422, description = "field-level problems", body = ErrorBody)))]
pub async fn create(
    Operator(caller): Operator,
    State(st): State<AppState>,
    CheckedBody(body): CheckedBody<ServiceBody>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let body = body.map_err(|u| all_problems(u, None))?;
    let Some(id) = body.id.clone().map(|i| i.trim().to_owned()) else {
        return Err(ApiError::invalid(vec![FieldProblem::new(
            "id",
            "is required",
        )]));
    };
    let parts = body.into_parts(id);
    let spec = &parts.spec;
    let mut change = st.store.change_services().await?;
    if change.get(&spec.id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "service \"{}\" already exists",
            spec.id
        )));
    }
    let routes = check(&st, &mut change, &parts, None).await?;
    let saved = change
        .insert(&parts.name, spec, &parts.groups, &routes)
        .await?;
    finish(&st, change).await?;
    tracing::info!(service = %spec.id, "service created");
    let view = ServiceView::from(&saved);
    st.audit_by(
        &caller,
        Change::new("create", "service", &spec.id).after(&view),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/api/v1/services/{id}", operation_id = "update_service", tag = "services",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    request_body = ServiceBody,
    responses((status = 200, body = ServiceView), (status = 404, body = ErrorBody),
        (status = 422, description = "field-level problems", body = ErrorBody)))]
pub async fn update(
    Operator(caller): Operator,
    State(st): State<AppState>,
    Path(id): Path<String>,
    CheckedBody(body): CheckedBody<ServiceBody>,
) -> Result<Json<ServiceView>, ApiError> {
    let body = body.map_err(|u| all_problems(u, Some(&id)))?;
    if let Some(body_id) = body.id.as_deref() {
        if body_id.trim() != id {
            return Err(ApiError::invalid(vec![FieldProblem::new(
                "id",
                format!("\"{body_id}\" does not match the service in the URL (\"{id}\"); ids cannot be renamed"),
            )]));
        }
    }
    let parts = body.into_parts(id.clone());
    let mut change = st.store.change_services().await?;
    let current = change.get(&id).await?.ok_or_else(|| not_found(&id))?;
    let routes = check(&st, &mut change, &parts, Some(&current)).await?;
    let saved = change
        .update(&parts.name, &parts.spec, &parts.groups, &routes)
        .await?
        .ok_or_else(|| not_found(&id))?;
    finish(&st, change).await?;
    tracing::info!(service = %id, "service updated");
    let view = ServiceView::from(&saved);
    st.audit_by(
        &caller,
        Change::new("update", "service", &id)
            .before(&ServiceView::from(&current))
            .after(&view),
    )
    .await;
    Ok(Json(view))
}

#[utoipa::path(delete, path = "/api/v1/services/{id}", operation_id = "delete_service", tag = "services",
    security(("admin" = []), ("session" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    Operator(caller): Operator,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut change = st.store.change_services().await?;
    let current = change.get(&id).await?.ok_or_else(|| not_found(&id))?;
    if !change.delete(&id).await? {
        return Err(not_found(&id));
    }
    finish(&st, change).await?;
    tracing::info!(service = %id, "service deleted");
    st.audit_by(
        &caller,
        Change::new("delete", "service", &id).before(&ServiceView::from(&current)),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The checks of a service's own fields (not of other services).
fn field_problems(parts: &Parts) -> Vec<FieldProblem> {
    let Parts { name, spec, groups } = parts;
    let mut problems = validate_service(spec);
    problems.extend(groups_problems(groups));
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        problems.push(FieldProblem::new(
            "name",
            format!("must be at most {MAX_NAME} printable characters"),
        ));
    }
    problems
}

/// One 422 for a body with fields that did not decode: those fields, then the checks of what
/// did (leaving out checks on a field already reported, which would see it as absent). `id`
/// is the service in the URL, on update.
fn all_problems(undecoded: Undecoded<ServiceBody>, id: Option<&str>) -> ApiError {
    let mut problems = undecoded.problems;
    if let Some(body) = undecoded.rest {
        let id = id
            .map(str::to_owned)
            .or_else(|| body.id.as_deref().map(|i| i.trim().to_owned()));
        if id.is_none() {
            problems.push(FieldProblem::new("id", "is required"));
        }
        let parts = body.into_parts(id.unwrap_or_default());
        let reported: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
        // A field, or one inside it or around it, is already reported.
        let within = |inner: &str, outer: &str| {
            inner.strip_prefix(outer).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        };
        let already = |field: &str| {
            reported
                .iter()
                .any(|r| within(field, r) || within(r, field))
        };
        let more = field_problems(&parts);
        problems.extend(more.into_iter().filter(|p| !already(&p.field)));
    }
    ApiError::invalid(problems)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no service \"{id}\""))
}

/// Field validation, conflicts with the routes other services hold, then the CrowdSec rule.
/// Returns the routes the service will hold.
async fn check(
    st: &AppState,
    change: &mut ServicesChange,
    parts: &Parts,
    current: Option<&Service>,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let spec = &parts.spec;
    let mut problems = field_problems(parts);
    let routes = routes_of(spec);
    if problems.is_empty() {
        problems.extend(conflict_problems(
            spec,
            &change.route_owners(&routes).await?,
        ));
    }

    // Turning CrowdSec or AppSec on, switching its mode, or moving the service to other groups
    // needs the support of the proxies of its groups; leaving all that as it is does not, so
    // other edits stay possible while proxies are away.
    let r = &spec.restrictions;
    let moved = current.is_some_and(|c| c.groups != parts.groups);
    let before = current.filter(|_| !moved).map(|c| &c.spec.restrictions);
    let wanted = [
        (
            r.crowdsec_mode.is_on() && before.is_none_or(|b| b.crowdsec_mode != r.crowdsec_mode),
            "restrictions.crowdsec_mode",
            format!("CrowdSec mode \"{}\"", r.crowdsec_mode),
            crowdsec_support as Support,
        ),
        (
            r.appsec_mode.is_on() && before.is_none_or(|b| b.appsec_mode != r.appsec_mode),
            "restrictions.appsec_mode",
            format!("AppSec mode \"{}\"", r.appsec_mode.as_str()),
            appsec_support as Support,
        ),
    ];
    if wanted.iter().any(|w| w.0) {
        let proxies = st.store.proxies().await?;
        for (_, field, what, support) in wanted.into_iter().filter(|w| w.0) {
            let support = support(
                &proxies,
                Some(&parts.groups),
                now_ms(),
                st.settings.live_window,
            );
            if let Some(reason) = support.reason {
                problems.push(FieldProblem::new(
                    field,
                    format!("{what} is not available: {reason}"),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(ApiError::invalid(problems))
    }
}

/// Whether the live proxies of some groups can run a feature (CrowdSec, AppSec).
type Support = fn(
    &[crate::store::Proxy],
    Option<&[String]>,
    i64,
    std::time::Duration,
) -> crate::validate::CrowdSecSupport;

async fn finish(st: &AppState, change: ServicesChange) -> Result<(), ApiError> {
    let revision = change.commit().await?;
    st.changes.publish(revision);
    Ok(())
}

use super::ErrorBody;
