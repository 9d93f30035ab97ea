//! The HTTP API: admin routes (services, proxies, events, capabilities), the proxy link (stream,
//! report, events) and the OpenAPI document.

mod audit;
mod auth;
mod body;
mod dashboard;
mod error;
mod events;
mod export;
mod link;
mod openapi;
mod proxies;
mod services;
mod session;
mod stats;
mod time;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use audit::{changed_fields, record, AuditList, AuditView, Change};
pub use auth::{AuthFailures, ADMIN_TOKEN_ACTOR, CSRF_HEADER, SESSION_COOKIE};
pub use error::{ApiError, ErrorBody};
pub use events::{filter_of, EventList, EventQuery, EventView};
pub use openapi::ApiDoc;
pub use proxies::{CreatedProxy, ProxyView};
pub use services::{ServiceBody, ServiceView};
pub use session::{SessionView, SignInThrottle};
pub use stats::{EnforcePreview, Timeline, TopLists};
pub use users::{name_problems, password_problems, CreatedToken, TokenView, UserView};

use crate::changes::Changes;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub admin: Arc<crate::auth::AdminCredential>,
    pub auth_failures: Arc<auth::AuthFailures>,
    /// Failed sign-ins by address and by user name.
    pub sign_ins: Arc<session::SignInThrottle>,
    pub changes: Changes,
    pub settings: Arc<Settings>,
    /// Turns true when the process shuts down: proxy streams end so that it can exit.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Sent to proxies for their bouncer-key fingerprints.
    pub key_salt: Arc<str>,
    /// Proxies currently warned about sharing a bouncer key (to log each change once).
    pub shared_keys: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// A proxy seen within this window is live.
    pub live_window: Duration,
    /// How often an open stream marks its proxy as seen and checks that its token still exists.
    pub stream_check_interval: Duration,
    /// Events older than this are refused at ingestion (retention would remove them at once).
    pub events_max_age: Option<Duration>,
    /// Failed authentications one address may have per second before it gets 429; 0 = none.
    pub auth_failures_per_second: u32,
    /// Loopback clients are never limited (tests that make many failures on purpose).
    pub auth_exempt_loopback: bool,
    /// How long a sign-in lasts.
    pub session_lifetime: Duration,
    /// Served over HTTPS: session cookies are marked Secure (sent over HTTPS only) and
    /// responses carry Strict-Transport-Security.
    pub secure_cookies: bool,
    /// Origins whose pages may call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            live_window: Duration::from_secs(60),
            stream_check_interval: Duration::from_secs(10),
            events_max_age: None,
            auth_failures_per_second: 10,
            auth_exempt_loopback: false,
            session_lifetime: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            cors_origins: Vec::new(),
        }
    }
}

/// Largest event batch a proxy may send in one request.
pub const MAX_EVENT_BATCH_BYTES: usize = nb_api::events::MAX_BATCH_BYTES;

/// The API, each route registered once: the axum router and the OpenAPI document's paths come
/// from the same list (`utoipa-axum`).
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            session::sign_in,
            session::whoami,
            session::sign_out
        ))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::update, users::delete))
        .routes(routes!(users::list_tokens, users::create_token))
        .routes(routes!(users::revoke_token))
        .routes(routes!(audit::query))
        .routes(routes!(services::list, services::create))
        .routes(routes!(
            services::get_one,
            services::update,
            services::delete
        ))
        .routes(routes!(proxies::list, proxies::create))
        .routes(routes!(proxies::get_one, proxies::update, proxies::revoke))
        .routes(routes!(proxies::capabilities))
        .routes(routes!(proxies::countries))
        .routes(routes!(events::query))
        .routes(routes!(export::export))
        .routes(routes!(stats::timeline))
        .routes(routes!(stats::top))
        .routes(routes!(stats::enforce_preview))
        .routes(routes!(link::stream))
        .routes(routes!(link::report))
        .routes(routes!(link::events).layer(DefaultBodyLimit::max(MAX_EVENT_BATCH_BYTES)))
}

/// The OpenAPI document, as `/api/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The document as `dashboard/openapi.json` holds it (pretty, with a final newline).
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi_document()).expect("the document serialises")
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let https = state.settings.secure_cookies;
    let cors = cors(&state.settings.cors_origins);
    let app = api
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async { ApiError::NotFound("no such route".into()) }),
        )
        .fallback(dashboard::serve)
        .layer(axum::middleware::map_response(
            move |res: axum::response::Response| security_headers(res, https),
        ))
        .with_state(state);
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// CORS for the configured origins only: their pages may call the API with a bearer token.
/// Without any, no CORS headers at all, so browsers keep other origins out.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(CSRF_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// On every response, API and dashboard alike: no script or style but the dashboard's own
/// files, no framing, no content sniffing, no referrer leaking tokens in URLs; over HTTPS,
/// browsers are told to keep to it.
async fn security_headers(
    mut res: axum::response::Response,
    https: bool,
) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    let h = res.headers_mut();
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
