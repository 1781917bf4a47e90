//! `GET /v1/cloudformation/xrole-role.yaml`: the customer role template, and
//! `GET /v1/cloudformation/xrole-stackset.yaml`: the StackSet deploying it
//! into every account of an AWS Organization, for operators to host (or for
//! CloudFormation to read from this server).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

/// The template, as shipped in `cloudformation/xrole-role.yaml`.
pub const TEMPLATE: &str = include_str!("../../../../cloudformation/xrole-role.yaml");
/// The StackSet template, as shipped in `cloudformation/xrole-stackset.yaml`.
pub const STACKSET_TEMPLATE: &str = include_str!("../../../../cloudformation/xrole-stackset.yaml");

/// The YAML document's shape: a CloudFormation template. Its intrinsic
/// functions are YAML tags (`!Ref`, `!Equals`…), which a YAML reader maps
/// to their JSON form (`{"Ref": …}`, `{"Fn::Equals": …}`).
pub fn template_schema() -> RefOr<Schema> {
    let object = || ObjectBuilder::new().schema_type(SchemaType::Type(Type::Object));
    let mut o = object()
        .description(Some("A CloudFormation template"))
        .property(
            "AWSTemplateFormatVersion",
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(["2010-09-09"])),
        )
        .required("AWSTemplateFormatVersion")
        .property(
            "Description",
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
        );
    for section in [
        "Metadata",
        "Parameters",
        "Conditions",
        "Resources",
        "Outputs",
    ] {
        o = o.property(section, object());
    }
    RefOr::T(Schema::Object(o.required("Resources").build()))
}

/// Whether the client asked for `text/plain` rather than YAML (clients and
/// generators that handle only text get the same bytes as `text/plain`).
fn wants_text(req: &HttpRequest) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media: Vec<String> = accept
        .split(',')
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    media.iter().any(|m| m == "text/plain")
        && !media
            .iter()
            .any(|m| m == "application/yaml" || m == "application/*")
}

/// The customer role template, as YAML (`application/yaml`, RFC 9512), or
/// the same text as `text/plain` when that is what `Accept` asks for. The
/// document gives the YAML's shape ([`template_schema`], set in
/// `openapi.rs`).
#[utoipa::path(get, path = "/v1/cloudformation/xrole-role.yaml", tag = "aws-accounts",
    responses((status = 200, description = "The CloudFormation template",
        content(
            (serde_json::Value = "application/yaml"),
            (String = "text/plain"),
        ))))]
pub async fn template(req: HttpRequest) -> HttpResponse {
    yaml(&req, TEMPLATE)
}

/// The StackSet template for AWS Organizations, as YAML, or as
/// `text/plain` when `Accept` asks for it.
#[utoipa::path(get, path = "/v1/cloudformation/xrole-stackset.yaml", tag = "aws-organizations",
    responses((status = 200, description = "The CloudFormation template",
        content(
            (serde_json::Value = "application/yaml"),
            (String = "text/plain"),
        ))))]
pub async fn stackset_template(req: HttpRequest) -> HttpResponse {
    yaml(&req, STACKSET_TEMPLATE)
}

fn yaml(req: &HttpRequest, body: &'static str) -> HttpResponse {
    let content_type = if wants_text(req) {
        "text/plain; charset=utf-8"
    } else {
        "application/yaml; charset=utf-8"
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::VARY, "Accept"))
        .body(body)
}
