//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{events, link, proxies, services};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nb-management API",
        description = "Services and their access control, proxies, and the reverse-proxy event log. \
            Admin routes take the admin token, proxy routes a proxy token, both as `Authorization: Bearer`."
    ),
    paths(
        services::list, services::get_one, services::create, services::update, services::delete,
        proxies::list, proxies::get_one, proxies::create, proxies::revoke, proxies::capabilities, proxies::countries,
        events::query,
        link::stream, link::report, link::events,
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
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
