//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{api_keys, audit, health, organizations, sessions, users};

/// The document's root.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "xrole",
        description = "Act in your customers' AWS accounts without their keys.",
        license(name = "Apache-2.0")
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
        organizations::create,
        organizations::get_own,
        users::create,
        users::list,
        users::get,
        users::update,
        users::delete,
        sessions::create,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
        audit::list,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "organizations", description = "Tenants"),
        (name = "users", description = "People in an organization"),
        (name = "sessions", description = "Password login"),
        (name = "api-keys", description = "Bearer credentials"),
        (name = "audit", description = "The audit trail"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("xrk_…")
                    .description(Some("An API key: `Authorization: Bearer xrk_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The configured XROLE_OPERATOR_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The generated document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
