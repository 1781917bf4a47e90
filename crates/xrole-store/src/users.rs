//! Users of an organization: email unique per organization, a role, an
//! optional password hash (PHC string from `xrole_crypto::password`), a
//! disabled flag.

use diesel::prelude::*;
use serde::Serialize;

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::users::dsl as u;
use crate::types::{
    Email, OrgId, Page, PageRequest, UserId, UserRole, before_cursor, paginate, parse_col,
};

/// A user. The password hash is not part of it: read it with
/// [`password_hash`] when verifying a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its organization.
    pub org_id: OrgId,
    /// Login address, unique within the organization.
    pub email: Email,
    /// Display name.
    pub display_name: String,
    /// Role within the organization.
    pub role: UserRole,
    /// Whether a password is set (API-key-only users have none).
    pub has_password: bool,
    /// A disabled user can neither log in nor use its API keys.
    pub disabled: bool,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
}

/// What [`create`] needs.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Login address.
    pub email: &'a Email,
    /// Display name.
    pub display_name: &'a str,
    /// Role.
    pub role: UserRole,
    /// PHC password hash, or `None` for a user without a password.
    pub password_hash: Option<&'a str>,
}

/// Changes [`update`] applies; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges<'a> {
    /// New login address.
    pub email: Option<&'a Email>,
    /// New display name.
    pub display_name: Option<&'a str>,
    /// New role.
    pub role: Option<UserRole>,
    /// New password hash (`Some(None)` removes the password).
    pub password_hash: Option<Option<&'a str>>,
    /// Disable or re-enable.
    pub disabled: Option<bool>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::users)]
struct Row {
    id: String,
    org_id: String,
    email: String,
    display_name: String,
    role: String,
    password_hash: Option<String>,
    disabled: bool,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<Row> for User {
    type Error = Error;
    fn try_from(r: Row) -> Result<User> {
        Ok(User {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            email: r.email.parse()?,
            display_name: r.display_name,
            role: r.role.parse()?,
            has_password: r.password_hash.is_some(),
            disabled: r.disabled,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
    }
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = crate::schema::users)]
struct Changes {
    email: Option<String>,
    display_name: Option<String>,
    role: Option<String>,
    password_hash: Option<Option<String>>,
    disabled: Option<bool>,
    updated_ms: Option<i64>,
}

/// Creates a user in `org`. [`Error::Duplicate`]`("email")` when the address
/// is taken in this organization.
pub fn create(conn: &mut Conn, org: OrgId, new: &NewUser<'_>, now_ms: i64) -> Result<User> {
    let row = Row {
        id: UserId::new().to_string(),
        org_id: org.to_string(),
        email: new.email.as_str().to_owned(),
        display_name: new.display_name.to_owned(),
        role: new.role.as_str().to_owned(),
        password_hash: new.password_hash.map(str::to_owned),
        disabled: false,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    diesel::insert_into(u::users)
        .values(&row)
        .execute(conn)
        .map_err(Error::duplicate_as("email"))?;
    row.try_into()
}

/// Reads a user of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: UserId) -> Result<User> {
    u::users
        .filter(u::org_id.eq(org.to_string()))
        .filter(u::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// Finds a user of `org` by email.
pub fn find_by_email(conn: &mut Conn, org: OrgId, email: &Email) -> Result<User> {
    u::users
        .filter(u::org_id.eq(org.to_string()))
        .filter(u::email.eq(email.as_str()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// A user's password hash (PHC string), `None` when the user has none.
pub fn password_hash(conn: &mut Conn, org: OrgId, id: UserId) -> Result<Option<String>> {
    u::users
        .filter(u::org_id.eq(org.to_string()))
        .filter(u::id.eq(id.to_string()))
        .select(u::password_hash)
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// Every user with this address, across organizations, with their password
/// hashes: the one lookup made before a tenant is known (a login form that
/// takes only an email). Callers verify the password against each candidate
/// and must not reveal which organizations matched.
pub fn login_candidates(conn: &mut Conn, email: &Email) -> Result<Vec<(User, Option<String>)>> {
    let rows: Vec<Row> = u::users
        .filter(u::email.eq(email.as_str()))
        .select(Row::as_select())
        .order(u::id.asc())
        .load(conn)?;
    rows.into_iter()
        .map(|r| {
            let hash = r.password_hash.clone();
            Ok((User::try_from(r)?, hash))
        })
        .collect()
}

/// Enabled admins of `org`.
pub fn count_admins(conn: &mut Conn, org: OrgId) -> Result<i64> {
    Ok(u::users
        .filter(u::org_id.eq(org.to_string()))
        .filter(u::role.eq(UserRole::Admin.as_str()))
        .filter(u::disabled.eq(false))
        .count()
        .get_result(conn)?)
}

/// Runs `change` to user `id` in a transaction (a savepoint inside the
/// caller's) that fails with [`Error::LastAdmin`], changing nothing, when
/// `id` was an enabled admin and none is left after it.
fn keeping_an_admin<T>(
    conn: &mut Conn,
    org: OrgId,
    id: UserId,
    change: impl FnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    crate::backend::write_transaction(conn, |conn| {
        crate::backend::lock_org(conn, &org.to_string())?;
        let before = get(conn, org, id)?;
        let out = change(conn)?;
        if before.role == UserRole::Admin && !before.disabled && count_admins(conn, org)? == 0 {
            return Err(Error::LastAdmin);
        }
        Ok(out)
    })
}

/// Applies `changes` to a user of `org`. [`Error::LastAdmin`] when it would
/// demote or disable the organization's last enabled admin.
pub fn update(
    conn: &mut Conn,
    org: OrgId,
    id: UserId,
    changes: &UserChanges<'_>,
    now_ms: i64,
) -> Result<User> {
    if changes.role.is_some() || changes.disabled.is_some() {
        return keeping_an_admin(conn, org, id, |conn| apply(conn, org, id, changes, now_ms));
    }
    apply(conn, org, id, changes, now_ms)
}

fn apply(
    conn: &mut Conn,
    org: OrgId,
    id: UserId,
    changes: &UserChanges<'_>,
    now_ms: i64,
) -> Result<User> {
    let set = Changes {
        email: changes.email.map(|e| e.as_str().to_owned()),
        display_name: changes.display_name.map(str::to_owned),
        role: changes.role.map(|r| r.as_str().to_owned()),
        password_hash: changes.password_hash.map(|p| p.map(str::to_owned)),
        disabled: changes.disabled,
        updated_ms: Some(now_ms),
    };
    let n = diesel::update(
        u::users
            .filter(u::org_id.eq(org.to_string()))
            .filter(u::id.eq(id.to_string())),
    )
    .set(&set)
    .execute(conn)
    .map_err(Error::duplicate_as("email"))?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org, id)
}

/// Deletes a user of `org` (its API keys go with it).
/// [`Error::LastAdmin`] for the organization's last enabled admin.
pub fn delete(conn: &mut Conn, org: OrgId, id: UserId) -> Result<()> {
    keeping_an_admin(conn, org, id, |conn| {
        let n = diesel::delete(
            u::users
                .filter(u::org_id.eq(org.to_string()))
                .filter(u::id.eq(id.to_string())),
        )
        .execute(conn)?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    })
}

/// The users of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<User>> {
    let limit = page.clamped_limit();
    let q = u::users
        .filter(u::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    let q = before_cursor!(q, &page.cursor, u::created_ms, u::id);
    let rows = q
        .order((u::created_ms.desc(), u::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.created_ms, r.id.clone()),
        User::try_from,
    )
}
