//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{api_keys, audit, health, organizations, sessions, users};
use crate::routes::{aws_accounts, callbacks, cloudformation, jobs, resources};

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
        aws_accounts::create,
        aws_accounts::list,
        aws_accounts::get,
        aws_accounts::delete,
        aws_accounts::set_role,
        aws_accounts::verify,
        aws_accounts::create_vpc,
        aws_accounts::create_instances,
        aws_accounts::create_database,
        aws_accounts::list_resources,
        callbacks::cloudformation,
        resources::get,
        resources::delete,
        jobs::list,
        jobs::get,
        cloudformation::template,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth, &ProblemJson),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "organizations", description = "Tenants"),
        (name = "users", description = "People in an organization"),
        (name = "sessions", description = "Password login"),
        (name = "api-keys", description = "Bearer credentials"),
        (name = "audit", description = "The audit trail"),
        (name = "aws-accounts", description = "Links to customers' AWS accounts, and provisioning in them"),
        (name = "resources", description = "AWS resources xrole made"),
        (name = "jobs", description = "Provisioning, teardown and verification jobs"),
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

/// Error responses (4xx/5xx) are `application/problem+json`, which is what
/// the server sends; utoipa declares `application/json` for a body type.
/// `/readyz` answers its own JSON status, also when it is 503.
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for (path, item) in &mut openapi.paths.paths {
            if path == "/readyz" {
                continue;
            }
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                for (status, response) in &mut op.responses.responses {
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if let Some(content) = response.content.shift_remove("application/json") {
                        response
                            .content
                            .insert(crate::error::PROBLEM_JSON.to_owned(), content);
                    }
                }
            }
        }
    }
}

/// The generated document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
