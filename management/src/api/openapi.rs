//! The OpenAPI document's frame: title, description and security schemes. Its paths come from
//! the router (see `api_routes`), so each route is declared once.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nb-management API",
        description = "Services and their access control, proxies, and the reverse-proxy event log. \
            Admin routes take the admin token, proxy routes a proxy token, both as `Authorization: Bearer`."
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
