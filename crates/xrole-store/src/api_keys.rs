//! API keys: the public `key_id` in clear for lookup, the keyed hash of the
//! secret part for verification (computed by `xrole_crypto::ApiKeyHasher`),
//! never the token itself.

use diesel::prelude::*;
use serde::Serialize;
use xrole_crypto::{ApiKey, ApiKeyHasher};

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::api_keys::dsl as k;
use crate::types::{
    ApiKeyId, OrgId, Page, PageRequest, UserId, UserRole, before_cursor, paginate, parse_col,
};

/// An API key's metadata (the hash is not part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Row id.
    pub id: ApiKeyId,
    /// Organization.
    pub org_id: OrgId,
    /// The token's public 12-character key id.
    pub key_id: String,
    /// Human label.
    pub name: String,
    /// The user the key acts as (`None` = an organization key).
    pub owner: Option<UserId>,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last successful use, unix ms.
    pub last_used_ms: Option<i64>,
    /// Expiry, unix ms (`None` = no expiry).
    pub expires_ms: Option<i64>,
    /// Revocation time, unix ms.
    pub revoked_ms: Option<i64>,
    /// The most the key may do; `None`: as much as its owner. Either way
    /// never more than its owner's current role.
    pub role: Option<UserRole>,
}

impl ApiKeyRecord {
    /// Whether the key may authenticate at `now_ms` (not revoked, not expired).
    pub fn is_usable(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// What [`create`] needs. The server generates the token
/// (`xrole_crypto::ApiKey::generate`), shows it once, and stores only this.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// The token's public key id.
    pub key_id: &'a str,
    /// `ApiKeyHasher::hash(&key)`.
    pub key_hash: &'a [u8],
    /// Human label.
    pub name: &'a str,
    /// The user the key acts as; must belong to the same organization.
    pub owner: Option<UserId>,
    /// Expiry, unix ms.
    pub expires_ms: Option<i64>,
    /// A role below the owner's, if any.
    pub role: Option<UserRole>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::api_keys)]
struct Row {
    id: String,
    org_id: String,
    key_id: String,
    key_hash: Vec<u8>,
    name: String,
    owner_user_id: Option<String>,
    created_ms: i64,
    last_used_ms: Option<i64>,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
    role: Option<String>,
}

impl TryFrom<Row> for ApiKeyRecord {
    type Error = Error;
    fn try_from(r: Row) -> Result<ApiKeyRecord> {
        Ok(ApiKeyRecord {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            key_id: r.key_id,
            name: r.name,
            owner: r.owner_user_id.as_deref().map(parse_col).transpose()?,
            created_ms: r.created_ms,
            last_used_ms: r.last_used_ms,
            expires_ms: r.expires_ms,
            revoked_ms: r.revoked_ms,
            role: r.role.as_deref().map(str::parse).transpose()?,
        })
    }
}

/// Stores a new key for `org`. [`Error::Duplicate`]`("key_id")` when the key
/// id exists; [`Error::NotFound`] when `owner` is not a user of `org`.
pub fn create(
    conn: &mut Conn,
    org: OrgId,
    new: &NewApiKey<'_>,
    now_ms: i64,
) -> Result<ApiKeyRecord> {
    if let Some(owner) = new.owner {
        crate::users::get(conn, org, owner)?;
    }
    let row = Row {
        id: ApiKeyId::new().to_string(),
        org_id: org.to_string(),
        key_id: new.key_id.to_owned(),
        key_hash: new.key_hash.to_vec(),
        name: new.name.to_owned(),
        owner_user_id: new.owner.map(|o| o.to_string()),
        created_ms: now_ms,
        last_used_ms: None,
        expires_ms: new.expires_ms,
        revoked_ms: None,
        role: new.role.map(|r| r.as_str().to_owned()),
    };
    diesel::insert_into(k::api_keys)
        .values(&row)
        .execute(conn)
        .map_err(Error::duplicate_as("key_id"))?;
    row.try_into()
}

/// Reads a key of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: ApiKeyId) -> Result<ApiKeyRecord> {
    k::api_keys
        .filter(k::org_id.eq(org.to_string()))
        .filter(k::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// The key with this public key id and its stored hash, across
/// organizations: authentication happens before a tenant is known (the
/// token carries no organization). Verify the hash with
/// `ApiKeyHasher::verify`, then check [`ApiKeyRecord::is_usable`].
pub fn find_for_auth(conn: &mut Conn, key_id: &str) -> Result<Option<(ApiKeyRecord, Vec<u8>)>> {
    let row: Option<Row> = k::api_keys
        .filter(k::key_id.eq(key_id))
        .select(Row::as_select())
        .first(conn)
        .optional()?;
    row.map(|r| {
        let hash = r.key_hash.clone();
        Ok((ApiKeyRecord::try_from(r)?, hash))
    })
    .transpose()
}

/// Authenticates a bearer token: finds its key id, verifies the secret's
/// keyed hash in constant time, checks the key is neither revoked nor
/// expired and its owner (if any) is not disabled, and records the use.
/// `None` for every kind of refusal, so callers answer one 401 for all.
/// Parse the token with `ApiKey::parse` first: malformed tokens never
/// reach the database.
pub fn authenticate(
    conn: &mut Conn,
    hasher: &ApiKeyHasher,
    token: &ApiKey,
    now_ms: i64,
) -> Result<Option<ApiKeyRecord>> {
    let Some((record, stored)) = find_for_auth(conn, token.key_id())? else {
        return Ok(None);
    };
    if !hasher.verify(token, &stored) || !record.is_usable(now_ms) {
        return Ok(None);
    }
    if let Some(owner) = record.owner {
        let user = crate::users::get(conn, record.org_id, owner)?;
        if user.disabled {
            return Ok(None);
        }
    }
    touch(conn, record.org_id, record.id, now_ms)?;
    Ok(Some(ApiKeyRecord {
        last_used_ms: Some(now_ms),
        ..record
    }))
}

/// Records a successful use.
pub fn touch(conn: &mut Conn, org: OrgId, id: ApiKeyId, now_ms: i64) -> Result<()> {
    let n = diesel::update(
        k::api_keys
            .filter(k::org_id.eq(org.to_string()))
            .filter(k::id.eq(id.to_string())),
    )
    .set(k::last_used_ms.eq(now_ms))
    .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// Renames a key of `org`.
pub fn rename(conn: &mut Conn, org: OrgId, id: ApiKeyId, name: &str) -> Result<ApiKeyRecord> {
    let n = diesel::update(
        k::api_keys
            .filter(k::org_id.eq(org.to_string()))
            .filter(k::id.eq(id.to_string())),
    )
    .set(k::name.eq(name))
    .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org, id)
}

/// Revokes a key of `org` (idempotent: the first revocation time stays).
pub fn revoke(conn: &mut Conn, org: OrgId, id: ApiKeyId, now_ms: i64) -> Result<ApiKeyRecord> {
    get(conn, org, id)?;
    diesel::update(
        k::api_keys
            .filter(k::org_id.eq(org.to_string()))
            .filter(k::id.eq(id.to_string()))
            .filter(k::revoked_ms.is_null()),
    )
    .set(k::revoked_ms.eq(now_ms))
    .execute(conn)?;
    get(conn, org, id)
}

/// Revokes every unrevoked key `user` of `org` owns (a user removed or
/// disabled); returns how many. One statement, so it joins the caller's
/// transaction.
pub fn revoke_all_of_user(conn: &mut Conn, org: OrgId, user: UserId, now_ms: i64) -> Result<usize> {
    Ok(diesel::update(
        k::api_keys
            .filter(k::org_id.eq(org.to_string()))
            .filter(k::owner_user_id.eq(user.to_string()))
            .filter(k::revoked_ms.is_null()),
    )
    .set(k::revoked_ms.eq(now_ms))
    .execute(conn)?)
}

/// Deletes a key of `org`.
pub fn delete(conn: &mut Conn, org: OrgId, id: ApiKeyId) -> Result<()> {
    let n = diesel::delete(
        k::api_keys
            .filter(k::org_id.eq(org.to_string()))
            .filter(k::id.eq(id.to_string())),
    )
    .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// The keys of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<ApiKeyRecord>> {
    let limit = page.clamped_limit();
    let q = k::api_keys
        .filter(k::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    let q = before_cursor!(q, &page.cursor, k::created_ms, k::id);
    let rows = q
        .order((k::created_ms.desc(), k::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.created_ms, r.id.clone()),
        ApiKeyRecord::try_from,
    )
}
