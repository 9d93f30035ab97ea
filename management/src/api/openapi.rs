//! The OpenAPI document's frame: title, description and security schemes. Its paths come from
//! the router (see `api_routes`), so each route is declared once.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nb-management API",
        description = "Services and their access control, proxies, and the reverse-proxy event log. \
            People authenticate with a session cookie (POST /api/v1/session; writes then carry \
            X-CSRF-Token), a personal token (`nbu_…`) or the bootstrap admin token, both as \
            `Authorization: Bearer`; each route names the least role it needs (viewer, operator, \
            admin). Proxy routes take a proxy token."
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for name in ["admin", "proxy"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "nb_session",
                "set by POST /api/v1/session",
            ))),
        );
    }
}
