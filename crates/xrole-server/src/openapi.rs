//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{api_keys, audit, health, organizations, sessions, users, whoami};
use crate::routes::{aws_accounts, aws_organizations, callbacks, cloudformation, jobs, resources};

/// The document's root.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "xrole",
        description = "Act in your customers' AWS accounts without their keys.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
        organizations::create,
        organizations::get_own,
        organizations::update_own,
        whoami::whoami,
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
        aws_organizations::create,
        aws_organizations::list,
        aws_organizations::get,
        aws_organizations::delete,
        callbacks::cloudformation,
        resources::get,
        resources::delete,
        jobs::list,
        jobs::get,
        cloudformation::template,
        cloudformation::stackset_template,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth, &PublicOperations, &FieldRules, &StandardErrors, &ProblemJson, &OperationIds, &LinkIds, &TemplateSchema),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "organizations", description = "Tenants"),
        (name = "users", description = "People in an organization"),
        (name = "sessions", description = "Password login"),
        (name = "api-keys", description = "Bearer credentials"),
        (name = "audit", description = "The audit trail"),
        (name = "aws-accounts", description = "Links to customers' AWS accounts, and provisioning in them"),
        (name = "aws-organizations", description = "Connections to AWS Organizations: one StackSet, a link per member account"),
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
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The configured XROLE_METRICS_TOKEN (GET /metrics is open without one)",
                    ))
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

/// Operations that take no credentials say so with `security: []`, so
/// that no generator or linter has to guess (a document-wide default would
/// otherwise apply); `[{}]` (utoipa's `security(())`) says the same and
/// becomes `[]` too. It runs before [`StandardErrors`], which reads them.
struct PublicOperations;

impl Modify for PublicOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                let security = op.security.get_or_insert_with(Vec::new);
                let anonymous_only = security.iter().all(|s| {
                    serde_json::to_value(s)
                        .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
                });
                if anonymous_only {
                    security.clear();
                }
            }
        }
    }
}

/// Field rules the derive attributes cannot state: utoipa 5.5 writes a
/// `min_properties` attribute as `maxProperties`, and has no attribute for
/// the items of a `Vec<String>`.
struct FieldRules;

/// The pattern of an availability zone name (`us-east-1a`), as the
/// provisioning plan checks it.
pub const AVAILABILITY_ZONE_PATTERN: &str = r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)+-[0-9]+[a-z]$";

impl Modify for FieldRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::ArrayItems;
        use utoipa::openapi::{RefOr, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // `PATCH /v1/users/{id}`: at least one field.
        if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut("UpdateUser") {
            o.min_properties = Some(1);
        }
        if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut("CreateVpc")
            && let Some(RefOr::T(Schema::Array(zones))) = o.properties.get_mut("availability_zones")
        {
            zones.min_items = Some(1);
            zones.max_items = Some(6);
            zones.unique_items = true;
            if let ArrayItems::RefOrSchema(item) = &mut zones.items
                && let RefOr::T(Schema::Object(item)) = item.as_mut()
            {
                item.pattern = Some(AVAILABILITY_ZONE_PATTERN.to_owned());
            }
        }
    }
}

/// The operations of these paths serve static or in-memory content: no
/// database, no credentials, no input, hence no error status.
const STATIC_PATHS: [&str; 5] = [
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/v1/cloudformation/xrole-role.yaml",
    "/v1/cloudformation/xrole-stackset.yaml",
];

/// Adds to every operation the error statuses it can answer because of
/// what it is, on top of those its handler declares:
///
/// - any operation outside [`STATIC_PATHS`]: 500, and 503 when no database
///   connection is available;
/// - a JSON request body: 400 (malformed JSON, an unknown field, a wrong
///   type), 408 (the body did not arrive in time), 413, 415 and 422 (a
///   field's value);
/// - an API key or the operator token: 401; an API key: 429 (its rate limit);
/// - a path parameter: 404 (also for a malformed id);
/// - a query: 400 (an unknown parameter, a wrong type), and 422 for a
///   `limit` or `cursor` out of range;
/// - an `Idempotency-Key` header: 400 (malformed, or missing where
///   required), 409 (the first request is still running) and 422 (the key
///   was used with another body).
///
/// Every error body is a problem ([`ProblemJson`] sets the media type).
struct StandardErrors;

/// Every operation of a path item, mutably.
fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The error statuses `op` of `path` can answer because of its shape (see
/// [`StandardErrors`]), each with its description.
fn standard_errors(
    path: &str,
    op: &utoipa::openapi::path::Operation,
    writes: bool,
) -> Vec<(&'static str, &'static str)> {
    use utoipa::openapi::path::ParameterIn;
    let mut out = Vec::new();
    if STATIC_PATHS.contains(&path) {
        return out;
    }
    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn, name: Option<&str>| {
        params
            .iter()
            .any(|p| p.parameter_in == place && name.is_none_or(|n| p.name == n))
    };
    let schemes: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    let api_key = schemes.iter().any(|s| s == "api_key");
    if op.request_body.is_some() {
        out.push((
            "400",
            "Malformed request: the body is not JSON, has an unknown field or a wrong type",
        ));
        out.push(("408", "The request body did not arrive in time"));
        out.push(("413", "The request body is larger than allowed"));
        out.push(("415", "The request body is not `application/json`"));
        out.push((
            "422",
            "A field's value is not acceptable (`field` names it)",
        ));
    }
    if api_key || schemes.iter().any(|s| s == "operator_token") {
        out.push((
            "401",
            "Missing, malformed, unknown, revoked or expired credentials",
        ));
    }
    if api_key {
        out.push((
            "429",
            "The API key's or its organization's rate limit is exhausted; retry after `Retry-After` seconds",
        ));
    }
    // Writes depend on the caller's role: viewers only read, and
    // destructive changes need an admin (or an operator where allowed).
    if api_key && writes {
        out.push((
            "403",
            "The caller's role does not allow this (viewers only read; users, keys of others, \
             settings and destructive changes need an admin)",
        ));
    }
    if has(ParameterIn::Path, None) {
        out.push(("404", "No such resource in the caller's organization"));
    }
    if has(ParameterIn::Query, None) {
        out.push((
            "400",
            "Malformed query: an unknown parameter or a wrong type",
        ));
    }
    if has(ParameterIn::Query, Some("limit")) || has(ParameterIn::Query, Some("cursor")) {
        out.push((
            "422",
            "`limit` out of range, or a `cursor` this API did not issue",
        ));
    }
    if has(ParameterIn::Header, Some("Idempotency-Key")) {
        out.push((
            "400",
            "Malformed `Idempotency-Key`, or none where it is required",
        ));
        out.push(("409", "A request with this `Idempotency-Key` is still running; retry after `Retry-After` seconds"));
        out.push((
            "422",
            "The `Idempotency-Key` was used with another request body",
        ));
    }
    out.push((
        "500",
        "Internal server error (details are in the server log only)",
    ));
    out.push((
        "503",
        "A dependency is unavailable: the database, or the AWS side on the routes that act in AWS",
    ));
    out
}

/// What a response of `status` means, for the responses whose handler
/// gives no description.
fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted: a job does the work; follow it at `/v1/jobs/{id}`",
        "204" => "Done; no body",
        "400" => "Malformed request (`code` says what)",
        "401" => "Missing, malformed, unknown, revoked or expired credentials",
        "403" => "The caller's role does not allow this",
        "404" => "No such resource in the caller's organization",
        "409" => "Conflicts with the current state (`code` says how)",
        "422" => "A field's value is not acceptable (`field` names it)",
        "503" => "A dependency is unavailable",
        _ => "See the problem's `code`",
    }
}

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use std::collections::BTreeMap;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        for (path, item) in &mut openapi.paths.paths {
            // GET, HEAD and OPTIONS read; the others may be refused by role.
            let slots = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (false, &mut item.options),
                (false, &mut item.head),
                (true, &mut item.patch),
                (false, &mut item.trace),
            ];
            for (writes, op) in slots
                .into_iter()
                .filter_map(|(w, slot)| slot.as_mut().map(|op| (w, op)))
            {
                let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (status, description) in standard_errors(path, op, writes) {
                    wanted.entry(status).or_default().push(description);
                }
                for (status, descriptions) in wanted {
                    let description = descriptions.join(". ");
                    match op.responses.responses.get_mut(status) {
                        // The handler's own description says more.
                        Some(RefOr::T(r)) if !r.description.is_empty() => {}
                        Some(RefOr::T(r)) => r.description = description,
                        Some(RefOr::Ref(_)) => {}
                        None => {
                            let response = ResponseBuilder::new()
                                .description(description)
                                .content(
                                    crate::error::PROBLEM_JSON,
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Problem")))
                                        .build(),
                                )
                                .build();
                            op.responses
                                .responses
                                .insert(status.to_owned(), RefOr::T(response));
                        }
                    }
                }
                for (status, response) in &mut op.responses.responses {
                    if let RefOr::T(r) = response
                        && r.description.is_empty()
                    {
                        r.description = default_description(status).to_owned();
                    }
                }
            }
        }
    }
}

/// Error responses (4xx/5xx) are `application/problem+json`, which is what
/// the server sends (`/readyz`'s 503 included); utoipa declares
/// `application/json` for a body type.
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
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

/// Unique operation ids: `<tag>_<handler>` (`users_create`), where
/// utoipa would use the handler's name alone (`create`, five times).
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map(|t| t.replace('-', "_"));
                if let (Some(tag), Some(id)) = (tag, &op.operation_id) {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

/// The operations whose `{id}` is an AWS account link's `id`.
const LINK_ID_TARGETS: [&str; 8] = [
    "aws_accounts_get",
    "aws_accounts_delete",
    "aws_accounts_set_role",
    "aws_accounts_verify",
    "aws_accounts_create_vpc",
    "aws_accounts_create_instances",
    "aws_accounts_create_database",
    "aws_accounts_list_resources",
];

/// OpenAPI links from the responses that describe AWS account links to the
/// operations on one link: its `{id}` is the link's `id`. A link also has
/// an `aws_account_id`, the customer's 12-digit AWS account, which is not
/// an id of this API; the links say so for tools that follow responses
/// (schemathesis' stateful phase would otherwise guess it from the name).
struct LinkIds;

impl Modify for LinkIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::extensions::Extensions;
        use utoipa::openapi::link::LinkBuilder;
        let sources = [
            ("/v1/aws-accounts", "post", "201", "$response.body#/id"),
            (
                "/v1/aws-accounts",
                "get",
                "200",
                "$response.body#/data/0/id",
            ),
            ("/v1/aws-accounts/{id}", "get", "200", "$response.body#/id"),
        ];
        for (path, method, status, value) in sources {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            let op = match method {
                "post" => item.post.as_mut(),
                _ => item.get.as_mut(),
            };
            let Some(RefOr::T(response)) = op.and_then(|o| o.responses.responses.get_mut(status))
            else {
                continue;
            };
            for target in LINK_ID_TARGETS {
                // utoipa 5.5 serializes `Link::operation_id` as
                // `operation_id`; the field is spelled `operationId`.
                let spelled = Extensions::from_iter([("operationId", target)]);
                let link = LinkBuilder::new()
                    .parameter("id", value)
                    .extensions(Some(spelled))
                    .build();
                response.links.insert(target.to_owned(), RefOr::T(link));
            }
        }
    }
}

/// The template route's YAML has the shape of a CloudFormation template
/// (utoipa's attribute can only say "any value").
struct TemplateSchema;

impl Modify for TemplateSchema {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for path in [
            "/v1/cloudformation/xrole-role.yaml",
            "/v1/cloudformation/xrole-stackset.yaml",
        ] {
            let Some(op) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
            else {
                continue;
            };
            if let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200")
                && let Some(yaml) = ok.content.get_mut("application/yaml")
            {
                yaml.schema = Some(cloudformation::template_schema());
            }
        }
    }
}

/// The generated document, without `servers` (see [`document_for`]).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as this server serves it: its one server is
/// `XROLE_PUBLIC_URL`, or the address it listens on.
pub fn document_for(base_url: &str) -> utoipa::openapi::OpenApi {
    let mut doc = document();
    doc.servers = Some(vec![utoipa::openapi::Server::new(base_url)]);
    doc
}
