//! Every HTTP route, registered from one table ([`table`]) so the OpenAPI
//! document can be checked against exactly what is served.
//!
//! To add an endpoint: write the handler in `routes/<resource>.rs` with a
//! `#[utoipa::path]` attribute, add a [`RouteDef`] line to [`table`] and the
//! handler to `paths(...)` in `openapi.rs`. The `openapi_matches_routes` test
//! fails until both agree.

use actix_web::http::Method;
use actix_web::{Route, web};

use crate::error::method_not_allowed;

pub mod api_keys;
pub mod audit;
pub mod aws_accounts;
pub mod aws_organizations;
pub mod callbacks;
pub mod cloudformation;
pub mod health;
pub mod jobs;
pub mod models;
pub mod organizations;
pub mod resources;
pub mod sessions;
pub mod status_page;
pub mod users;
pub mod whoami;

/// One route: method, path pattern and the handler attached to a route of
/// that method.
#[derive(Debug, Clone)]
pub struct RouteDef {
    /// The HTTP method.
    pub method: Method,
    /// The actix path pattern (`/v1/users/{id}`), identical to the OpenAPI path.
    pub path: &'static str,
    /// Attaches the handler.
    pub handler: fn(Route) -> Route,
}

const fn def(method: Method, path: &'static str, handler: fn(Route) -> Route) -> RouteDef {
    RouteDef {
        method,
        path,
        handler,
    }
}

/// Every route the server serves.
pub fn table() -> Vec<RouteDef> {
    vec![
        def(Method::GET, "/healthz", |r| r.to(health::healthz)),
        def(Method::GET, "/readyz", |r| r.to(health::readyz)),
        def(Method::GET, "/metrics", |r| r.to(health::metrics)),
        def(Method::GET, "/openapi.json", |r| r.to(health::openapi)),
        def(Method::POST, "/v1/organizations", |r| {
            r.to(organizations::create)
        }),
        def(Method::GET, "/v1/organization", |r| {
            r.to(organizations::get_own)
        }),
        def(Method::PATCH, "/v1/organization", |r| {
            r.to(organizations::update_own)
        }),
        def(Method::GET, "/v1/whoami", |r| r.to(whoami::whoami)),
        def(Method::POST, "/v1/users", |r| r.to(users::create)),
        def(Method::GET, "/v1/users", |r| r.to(users::list)),
        def(Method::GET, "/v1/users/{id}", |r| r.to(users::get)),
        def(Method::PATCH, "/v1/users/{id}", |r| r.to(users::update)),
        def(Method::DELETE, "/v1/users/{id}", |r| r.to(users::delete)),
        def(Method::POST, "/v1/sessions", |r| r.to(sessions::create)),
        def(Method::POST, "/v1/api-keys", |r| r.to(api_keys::create)),
        def(Method::GET, "/v1/api-keys", |r| r.to(api_keys::list)),
        def(Method::DELETE, "/v1/api-keys/{id}", |r| {
            r.to(api_keys::revoke)
        }),
        def(Method::GET, "/v1/audit-events", |r| r.to(audit::list)),
        def(Method::POST, "/v1/aws-accounts", |r| {
            r.to(aws_accounts::create)
        }),
        def(Method::GET, "/v1/aws-accounts", |r| {
            r.to(aws_accounts::list)
        }),
        def(Method::GET, "/v1/aws-accounts/{id}", |r| {
            r.to(aws_accounts::get)
        }),
        def(Method::DELETE, "/v1/aws-accounts/{id}", |r| {
            r.to(aws_accounts::delete)
        }),
        def(Method::PUT, "/v1/aws-accounts/{id}/role", |r| {
            r.to(aws_accounts::set_role)
        }),
        def(Method::POST, "/v1/aws-accounts/{id}/verify", |r| {
            r.to(aws_accounts::verify)
        }),
        def(Method::POST, "/v1/aws-accounts/{id}/vpcs", |r| {
            r.to(aws_accounts::create_vpc)
        }),
        def(Method::POST, "/v1/aws-accounts/{id}/instances", |r| {
            r.to(aws_accounts::create_instances)
        }),
        def(Method::POST, "/v1/aws-accounts/{id}/databases", |r| {
            r.to(aws_accounts::create_database)
        }),
        def(Method::GET, "/v1/aws-accounts/{id}/resources", |r| {
            r.to(aws_accounts::list_resources)
        }),
        def(Method::POST, "/v1/aws-organizations", |r| {
            r.to(aws_organizations::create)
        }),
        def(Method::GET, "/v1/aws-organizations", |r| {
            r.to(aws_organizations::list)
        }),
        def(Method::GET, "/v1/aws-organizations/{id}", |r| {
            r.to(aws_organizations::get)
        }),
        def(Method::DELETE, "/v1/aws-organizations/{id}", |r| {
            r.to(aws_organizations::delete)
        }),
        def(Method::POST, "/v1/callbacks/cloudformation", |r| {
            r.to(callbacks::cloudformation)
        }),
        def(Method::GET, "/v1/resources/{id}", |r| r.to(resources::get)),
        def(Method::DELETE, "/v1/resources/{id}", |r| {
            r.to(resources::delete)
        }),
        def(Method::GET, "/v1/jobs", |r| r.to(jobs::list)),
        def(Method::GET, "/v1/jobs/{id}", |r| r.to(jobs::get)),
        def(Method::GET, "/v1/cloudformation/xrole-role.yaml", |r| {
            r.to(cloudformation::template)
        }),
        def(Method::GET, "/v1/cloudformation/xrole-stackset.yaml", |r| {
            r.to(cloudformation::stackset_template)
        }),
    ]
}

/// The status page's routes (`GET /` and its sign-in and sign-out forms):
/// HTML for browsers, registered next to [`table`] and deliberately left
/// out of the OpenAPI document, which describes the JSON API.
pub fn pages() -> Vec<RouteDef> {
    status_page::pages()
}

/// Registers `routes`: one resource per path, answering 405 problems with
/// an `Allow` header listing the path's methods for other methods.
pub fn register(cfg: &mut web::ServiceConfig, routes: Vec<RouteDef>) {
    let mut paths: Vec<&'static str> = Vec::new();
    for r in &routes {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        let mut allow: Vec<&str> = Vec::new();
        for r in routes.iter().filter(|r| r.path == path) {
            resource = resource.route((r.handler)(web::method(r.method.clone())));
            allow.push(r.method.as_str());
        }
        let allow = allow.join(", ");
        cfg.service(resource.default_service(web::to(move || method_not_allowed(allow.clone()))));
    }
}
