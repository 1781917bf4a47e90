//! The JSON shapes of responses, converted from the store's records.

use serde::Serialize;
use utoipa::ToSchema;

use crate::timefmt::format_ms;

/// An organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Whether operators may make destructive changes (delete a link,
    /// change its role, tear down a database); otherwise only admins.
    pub operators_may_destroy: bool,
}

impl From<&xrole_store::orgs::Org> for OrganizationOut {
    fn from(o: &xrole_store::orgs::Org) -> Self {
        OrganizationOut {
            id: o.id.to_string(),
            name: o.name.clone(),
            created_at: format_ms(o.created_ms),
            operators_may_destroy: o.operators_may_destroy,
        }
    }
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Email address (normalized to lower case).
    pub email: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Disabled users cannot log in and their keys do not work.
    pub disabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl From<&xrole_store::users::User> for UserOut {
    fn from(u: &xrole_store::users::User) -> Self {
        UserOut {
            id: u.id.to_string(),
            email: u.email.to_string(),
            role: u.role.as_str().to_owned(),
            disabled: u.disabled,
            has_password: u.has_password,
            created_at: format_ms(u.created_ms),
            updated_at: format_ms(u.updated_ms),
        }
    }
}

/// An API key's metadata (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyOut {
    /// Its id (use it to revoke the key).
    #[schema(format = Uuid)]
    pub id: String,
    /// The public part of the token (`xrk_<key_id>_…`), for recognising it.
    pub key_id: String,
    /// A label.
    pub name: String,
    /// The user the key acts as.
    pub owner_user_id: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<String>,
    /// Revocation time (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
    /// The most the key may do, when below its owner's role (`null`: as
    /// much as its owner).
    pub role: Option<String>,
}

impl From<&xrole_store::api_keys::ApiKeyRecord> for ApiKeyOut {
    fn from(k: &xrole_store::api_keys::ApiKeyRecord) -> Self {
        ApiKeyOut {
            id: k.id.to_string(),
            key_id: k.key_id.clone(),
            name: k.name.clone(),
            owner_user_id: k.owner.map(|u| u.to_string()),
            created_at: format_ms(k.created_ms),
            expires_at: k.expires_ms.map(format_ms),
            revoked_at: k.revoked_ms.map(format_ms),
            role: k.role.map(|r| r.as_str().to_owned()),
        }
    }
}

/// A newly created API key: its metadata plus the token, shown only in this
/// response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key's metadata.
    #[serde(flatten)]
    pub key: ApiKeyOut,
    /// The bearer token `xrk_…`. Store it now: it is not shown again.
    pub token: String,
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// `operator`, `anonymous`, `user:<id>` or `api_key:<id>`.
    pub actor: String,
    /// What happened (`user.created`, `api_key.revoked`, …).
    pub action: String,
    /// The object acted on.
    pub target: Option<String>,
    /// The `X-Request-Id` of the request, if sent.
    pub request_id: Option<String>,
    /// The caller's address.
    pub source_ip: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// Action-specific details.
    pub details: serde_json::Value,
}

impl From<&xrole_store::audit::AuditEvent> for AuditEventOut {
    fn from(e: &xrole_store::audit::AuditEvent) -> Self {
        AuditEventOut {
            id: e.id.to_string(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            request_id: e.request_id.clone(),
            source_ip: e.source_ip.clone(),
            at: format_ms(e.at_ms),
            details: e.details.clone(),
        }
    }
}

/// A page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items, newest first.
    pub data: Vec<T>,
    /// Pass as `cursor` to read the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Converts a store page.
    pub fn from_store<S>(p: &xrole_store::Page<S>, f: impl Fn(&S) -> T) -> Self {
        Page {
            data: p.items.iter().map(f).collect(),
            next_cursor: p.next_cursor.as_ref().map(ToString::to_string),
        }
    }
}
