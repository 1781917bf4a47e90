//! AWS account links. The External ID and the callback secret are stored
//! sealed (AES-256-GCM via [`Keyring`], AAD binding each value to its table,
//! column, organization and row), so a database dump reveals neither. The
//! External ID also has a blind index (keyed HMAC) with a unique constraint.
//! Plaintext leaves the store only through [`reveal_external_id`] and
//! [`reveal_callback_secret`].

use diesel::prelude::*;
use serde::Serialize;
use xrole_crypto::{Aad, ExternalId, Keyring, WebhookSecret};

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::aws_account_links::dsl as l;
use crate::types::{
    AccessLevel, ConnectionId, LinkId, LinkState, OrgId, Page, PageRequest, before_cursor,
    paginate, parse_col,
};

/// The table name in the AAD of sealed link columns.
pub const TABLE: &str = "aws_account_links";
/// The column (and AAD component) holding the sealed External ID.
pub const EXTERNAL_ID_COLUMN: &str = "external_id";
/// The column (and AAD component) holding the sealed callback secret.
pub const CALLBACK_SECRET_COLUMN: &str = "callback_secret";
/// The blind-index purpose for External IDs.
pub const EXTERNAL_ID_INDEX_PURPOSE: &str = "external_id";

/// An AWS account link, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Its id.
    pub id: LinkId,
    /// Organization.
    pub org_id: OrgId,
    /// Human label.
    pub name: String,
    /// State.
    pub state: LinkState,
    /// The AWS account the customer said they would link (12 digits).
    pub aws_account_id: String,
    /// The role ARN the customer's stack reported.
    pub role_arn: Option<String>,
    /// The permission set requested.
    pub access_level: AccessLevel,
    /// Until when the callback secret accepts a first report, unix ms. After
    /// a stack has reported (`last_callback_ms` set) it keeps serving the
    /// stack's Update and Delete events.
    pub callback_secret_expires_ms: i64,
    /// The CloudFormation stack id the callback reported.
    pub stack_id: Option<String>,
    /// The region the stack runs in.
    pub region: Option<String>,
    /// The last accepted callback, unix ms.
    pub last_callback_ms: Option<i64>,
    /// The last verification, unix ms.
    pub last_verified_ms: Option<i64>,
    /// What the last verification found (free text for operators).
    pub last_verification_result: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
    /// Counts the changes to what a verification tests (role, External ID,
    /// the stack's report): a result counts only for the generation it
    /// tested ([`record_verification`]).
    pub generation: i64,
    /// Whether the last verification audited the trust policy (`audited`)
    /// or could not read it (`not_readable`).
    pub trust_policy_audit: Option<String>,
    /// The organization connection this link is an account of (its stack
    /// came from the connection's StackSet), if any.
    pub connection_id: Option<ConnectionId>,
}

/// What [`create`] needs. The server generates both secrets
/// (`ExternalId::generate`, `WebhookSecret::generate`).
#[derive(Debug)]
pub struct NewLink<'a> {
    /// Human label.
    pub name: &'a str,
    /// The AWS account to be linked (12 digits, checked by the caller).
    pub aws_account_id: &'a str,
    /// The permission set requested.
    pub access_level: AccessLevel,
    /// The link's External ID.
    pub external_id: &'a ExternalId,
    /// The link's callback secret.
    pub callback_secret: &'a WebhookSecret,
    /// Until when a first callback is accepted, unix ms (creation + 48 h).
    pub callback_secret_expires_ms: i64,
}

/// What a CloudFormation callback reported.
#[derive(Debug, Clone, Copy)]
pub struct StackReport<'a> {
    /// The role the stack created.
    pub role_arn: &'a str,
    /// The stack's id.
    pub stack_id: &'a str,
    /// The stack's region.
    pub region: &'a str,
    /// A new expiry for the callback secret (unix ms): the first report
    /// binds the link to its stack and starts the secret's bounded life.
    pub callback_secret_expires_ms: Option<i64>,
}

/// Changes [`update`] applies; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkChanges<'a> {
    /// New label.
    pub name: Option<&'a str>,
    /// The AWS account (12 digits, checked by the caller).
    pub aws_account_id: Option<&'a str>,
    /// The role ARN (a role linked by hand, without a callback).
    pub role_arn: Option<&'a str>,
    /// The region.
    pub region: Option<&'a str>,
    /// The permission set.
    pub access_level: Option<AccessLevel>,
}

#[derive(AsChangeset)]
#[diesel(table_name = crate::schema::aws_account_links)]
struct ChangeRow<'a> {
    name: Option<&'a str>,
    aws_account_id: Option<&'a str>,
    role_arn: Option<Option<&'a str>>,
    region: Option<Option<&'a str>>,
    access_level: Option<&'static str>,
    updated_ms: i64,
}

/// The outcome of a verification, for [`record_verification`].
#[derive(Debug, Clone, Copy)]
pub struct Verification<'a> {
    /// The state the link moves to (`active`, `insecure`, `failed`, …).
    pub state: LinkState,
    /// What was found, for operators.
    pub result: &'a str,
    /// The error, when it failed.
    pub error: Option<&'a str>,
    /// `audited` or `not_readable`, when the role was assumed.
    pub trust_policy_audit: Option<&'a str>,
}

/// Why [`begin_verification`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyTrigger {
    /// What a verification tests changed (a role set by hand, a stack's
    /// Create or Update): the generation moves on, the link is `verifying`,
    /// and no earlier result can apply any more.
    Changed,
    /// The same role checked again (on demand or on a schedule): an
    /// `active` or `insecure` link keeps its state until the result.
    Recheck,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::aws_account_links)]
struct Row {
    id: String,
    org_id: String,
    name: String,
    state: String,
    aws_account_id: String,
    role_arn: Option<String>,
    access_level: String,
    external_id_sealed: Vec<u8>,
    external_id_index: Vec<u8>,
    callback_secret_sealed: Vec<u8>,
    callback_secret_expires_ms: i64,
    stack_id: Option<String>,
    region: Option<String>,
    last_callback_ms: Option<i64>,
    last_verified_ms: Option<i64>,
    last_verification_result: Option<String>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    generation: i64,
    trust_policy_audit: Option<String>,
    connection_id: Option<String>,
}

impl TryFrom<Row> for Link {
    type Error = Error;
    fn try_from(r: Row) -> Result<Link> {
        Ok(Link {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            name: r.name,
            state: r.state.parse()?,
            aws_account_id: r.aws_account_id,
            role_arn: r.role_arn,
            access_level: r.access_level.parse()?,
            callback_secret_expires_ms: r.callback_secret_expires_ms,
            stack_id: r.stack_id,
            region: r.region,
            last_callback_ms: r.last_callback_ms,
            last_verified_ms: r.last_verified_ms,
            last_verification_result: r.last_verification_result,
            last_error: r.last_error,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            generation: r.generation,
            trust_policy_audit: r.trust_policy_audit,
            connection_id: r.connection_id.as_deref().map(parse_col).transpose()?,
        })
    }
}

fn external_id_aad(org: &str, row: &str) -> Aad {
    Aad::new(TABLE, EXTERNAL_ID_COLUMN, org, row)
}

fn callback_secret_aad(org: &str, row: &str) -> Aad {
    Aad::new(TABLE, CALLBACK_SECRET_COLUMN, org, row)
}

/// The blind index of an External ID (what the unique constraint compares).
pub fn external_id_index(keyring: &Keyring, external_id: &ExternalId) -> [u8; 32] {
    keyring.blind_index(EXTERNAL_ID_INDEX_PURPOSE, external_id.as_str().as_bytes())
}

/// A new `pending` link row with its External ID and callback secret
/// sealed under its own id.
#[expect(
    clippy::too_many_arguments,
    reason = "each column of a new link is named at the call"
)]
fn pending_row(
    keyring: &Keyring,
    org: OrgId,
    name: &str,
    aws_account_id: &str,
    access_level: AccessLevel,
    (external_id, index): (&ExternalId, [u8; 32]),
    (callback_secret, expires_ms): (&WebhookSecret, i64),
    connection: Option<ConnectionId>,
    now_ms: i64,
) -> Result<Row> {
    let id = LinkId::new().to_string();
    let org_s = org.to_string();
    Ok(Row {
        external_id_sealed: keyring
            .seal(
                external_id.as_str().as_bytes(),
                &external_id_aad(&org_s, &id),
            )
            .map_err(Error::Crypto)?,
        external_id_index: index.to_vec(),
        callback_secret_sealed: keyring
            .seal(
                callback_secret.expose_secret().as_bytes(),
                &callback_secret_aad(&org_s, &id),
            )
            .map_err(Error::Crypto)?,
        id,
        org_id: org_s,
        name: name.to_owned(),
        state: LinkState::Pending.as_str().to_owned(),
        aws_account_id: aws_account_id.to_owned(),
        role_arn: None,
        access_level: access_level.as_str().to_owned(),
        callback_secret_expires_ms: expires_ms,
        stack_id: None,
        region: None,
        last_callback_ms: None,
        last_verified_ms: None,
        last_verification_result: None,
        last_error: None,
        created_ms: now_ms,
        updated_ms: now_ms,
        generation: 0,
        trust_policy_audit: None,
        connection_id: connection.map(|c| c.to_string()),
    })
}

/// Creates a link of `org` in state `pending`, sealing its External ID and
/// callback secret. [`Error::Duplicate`]`("external_id")` when another link
/// (of any organization) has the same External ID.
pub fn create(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    new: &NewLink<'_>,
    now_ms: i64,
) -> Result<Link> {
    let row = pending_row(
        keyring,
        org,
        new.name,
        new.aws_account_id,
        new.access_level,
        (new.external_id, external_id_index(keyring, new.external_id)),
        (new.callback_secret, new.callback_secret_expires_ms),
        None,
        now_ms,
    )?;
    diesel::insert_into(l::aws_account_links)
        .values(&row)
        .execute(conn)
        .map_err(Error::duplicate_as("external_id"))?;
    row.try_into()
}

fn load(conn: &mut Conn, org: OrgId, id: LinkId) -> Result<Row> {
    l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// Reads a link of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: LinkId) -> Result<Link> {
    load(conn, org, id)?.try_into()
}

/// [`Error::NotFound`] unless `id` is a link of `org`.
pub(crate) fn ensure_exists(conn: &mut Conn, org: OrgId, id: LinkId) -> Result<()> {
    let n: i64 = l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::id.eq(id.to_string()))
        .count()
        .get_result(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// The organization owning link `id`: the one lookup made before a tenant is
/// known, for the CloudFormation callback (its body names only the link).
/// Verify the callback's signature with [`reveal_callback_secret`] before
/// trusting anything else in it.
pub fn org_of_link(conn: &mut Conn, id: LinkId) -> Result<Option<OrgId>> {
    let org: Option<String> = l::aws_account_links
        .find(id.to_string())
        .select(l::org_id)
        .first(conn)
        .optional()?;
    org.as_deref().map(parse_col).transpose()
}

/// Finds the link of `org` with this External ID (through the blind index).
pub fn find_by_external_id(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    external_id: &ExternalId,
) -> Result<Link> {
    l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::external_id_index.eq(external_id_index(keyring, external_id).to_vec()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// The External ID of a link of `org`, in clear (for AssumeRole and for
/// showing the customer their parameters).
pub fn reveal_external_id(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    id: LinkId,
) -> Result<ExternalId> {
    open_external_id(keyring, &load(conn, org, id)?)
}

/// A link of `org` with its External ID in clear, in one read (what the
/// API shows the link's owner); `None` when the keyring cannot open it (a
/// key retired too early): the link is still shown, and says so.
pub fn get_revealed(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    id: LinkId,
) -> Result<(Link, Option<ExternalId>)> {
    let row = load(conn, org, id)?;
    let ext = open_external_id(keyring, &row).ok();
    Ok((row.try_into()?, ext))
}

fn open_external_id(keyring: &Keyring, row: &Row) -> Result<ExternalId> {
    let plain = keyring
        .open(
            &row.external_id_sealed,
            &external_id_aad(&row.org_id, &row.id),
        )
        .map_err(Error::Crypto)?;
    let text = std::str::from_utf8(plain.expose_secret()).map_err(|_| Error::Invalid {
        kind: "external id",
    })?;
    ExternalId::parse(text).map_err(Error::Crypto)
}

/// The callback secret of a link of `org`, in clear (to verify a callback's
/// signature). Whether it still accepts a first report is the caller's
/// check: see [`Link::callback_secret_expires_ms`].
pub fn reveal_callback_secret(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    id: LinkId,
) -> Result<WebhookSecret> {
    let row = load(conn, org, id)?;
    let aad = callback_secret_aad(&row.org_id, &row.id);
    let plain = keyring
        .open_owned(row.callback_secret_sealed, &aad)
        .map_err(Error::Crypto)?;
    let text = std::str::from_utf8(plain.expose_secret()).map_err(|_| Error::Invalid {
        kind: "callback secret",
    })?;
    WebhookSecret::parse(text).map_err(Error::Crypto)
}

/// What [`join_connection`] needs: an account of an organization
/// connection whose stack reported.
#[derive(Debug)]
pub struct NewAccountLink<'a> {
    /// The connection.
    pub connection: ConnectionId,
    /// The reporting account (12 digits, checked by the caller).
    pub aws_account_id: &'a str,
    /// Label of the new link.
    pub name: &'a str,
    /// The connection's permission set.
    pub access_level: AccessLevel,
    /// The connection's External ID: every account's role requires it.
    pub external_id: &'a ExternalId,
}

/// The blind index of an account link of a connection: its accounts share
/// the connection's External ID, so the index names the pair instead, and
/// its unique constraint also makes one link per account.
fn account_link_index(keyring: &Keyring, connection: ConnectionId, account: &str) -> [u8; 32] {
    keyring.blind_index(
        "connection_account",
        format!("{connection}/{account}").as_bytes(),
    )
}

/// The link of `org` for `account` under `connection`, if its stack reported.
pub fn of_connection_account(
    conn: &mut Conn,
    org: OrgId,
    connection: ConnectionId,
    account: &str,
) -> Result<Option<Link>> {
    l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::connection_id.eq(connection.to_string()))
        .filter(l::aws_account_id.eq(account))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Link::try_from)
        .transpose()
}

/// The link for an account of an organization connection: the existing one,
/// or a new `pending` one (`true`) holding the connection's External ID
/// sealed under its own row. Callbacks racing for the same account end with
/// one link (the unique index on connection and account decides). The
/// link's own callback secret is random and never shown: its stack reports
/// with the connection's.
pub fn join_connection(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    new: &NewAccountLink<'_>,
    now_ms: i64,
) -> Result<(Link, bool)> {
    if let Some(l) = of_connection_account(conn, org, new.connection, new.aws_account_id)? {
        return Ok((l, false));
    }
    // Never shown: the account's stack reports with the connection's.
    let unused = WebhookSecret::try_generate().map_err(Error::Crypto)?;
    let row = pending_row(
        keyring,
        org,
        new.name,
        new.aws_account_id,
        new.access_level,
        (
            new.external_id,
            account_link_index(keyring, new.connection, new.aws_account_id),
        ),
        (&unused, now_ms),
        Some(new.connection),
        now_ms,
    )?;
    let n = crate::backend::insert_or_ignore!(conn, l::aws_account_links, &row)?;
    if n == 1 {
        return Ok((row.try_into()?, true));
    }
    let l = of_connection_account(conn, org, new.connection, new.aws_account_id)?
        .ok_or(Error::Duplicate("external_id"))?;
    Ok((l, false))
}

macro_rules! one_link {
    ($org:expr, $id:expr) => {
        l::aws_account_links
            .filter(l::org_id.eq($org.to_string()))
            .filter(l::id.eq($id.to_string()))
    };
}

fn updated(conn: &mut Conn, n: usize, org: OrgId, id: LinkId) -> Result<Link> {
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org, id)
}

/// Renames a link of `org`.
pub fn rename(conn: &mut Conn, org: OrgId, id: LinkId, name: &str, now_ms: i64) -> Result<Link> {
    let n = diesel::update(one_link!(org, id))
        .set((l::name.eq(name), l::updated_ms.eq(now_ms)))
        .execute(conn)?;
    updated(conn, n, org, id)
}

/// Applies `changes` to a link of `org` (the sealed columns never change).
pub fn update(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
    changes: &LinkChanges<'_>,
    now_ms: i64,
) -> Result<Link> {
    let set = ChangeRow {
        name: changes.name,
        aws_account_id: changes.aws_account_id,
        role_arn: changes.role_arn.map(Some),
        region: changes.region.map(Some),
        access_level: changes.access_level.map(|a| a.as_str()),
        updated_ms: now_ms,
    };
    let n = diesel::update(one_link!(org, id)).set(&set).execute(conn)?;
    updated(conn, n, org, id)
}

/// Records what the customer's stack reported (role ARN, stack id, region).
pub fn record_stack(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
    report: &StackReport<'_>,
    now_ms: i64,
) -> Result<Link> {
    let n = diesel::update(one_link!(org, id))
        .set((
            l::role_arn.eq(Some(report.role_arn)),
            l::stack_id.eq(Some(report.stack_id)),
            l::region.eq(Some(report.region)),
            l::last_callback_ms.eq(Some(now_ms)),
            l::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if let Some(expires) = report.callback_secret_expires_ms {
        diesel::update(one_link!(org, id))
            .set(l::callback_secret_expires_ms.eq(expires))
            .execute(conn)?;
    }
    updated(conn, n, org, id)
}

/// Starts a verification of a link of `org`: with [`VerifyTrigger::Changed`]
/// the generation moves on and the link is `verifying` whatever it was;
/// with [`VerifyTrigger::Recheck`] a `pending` or `failed` link becomes
/// `verifying` and the others keep their state. Returns the link as it is
/// now: its `generation` is the one the verification must test.
pub fn begin_verification(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
    trigger: VerifyTrigger,
    now_ms: i64,
) -> Result<Link> {
    let n = match trigger {
        VerifyTrigger::Changed => diesel::update(one_link!(org, id))
            .set((
                l::generation.eq(l::generation + 1),
                l::state.eq(LinkState::Verifying.as_str()),
                l::updated_ms.eq(now_ms),
            ))
            .execute(conn)?,
        VerifyTrigger::Recheck => {
            ensure_exists(conn, org, id)?;
            diesel::update(one_link!(org, id).filter(
                l::state.eq_any([LinkState::Pending.as_str(), LinkState::Failed.as_str()]),
            ))
            .set((
                l::state.eq(LinkState::Verifying.as_str()),
                l::updated_ms.eq(now_ms),
            ))
            .execute(conn)?;
            1
        }
    };
    updated(conn, n, org, id)
}

/// Disconnects a link of `org` (its stack was deleted): the generation
/// moves on, so no verification still running can make it `active` again.
pub fn disconnect(conn: &mut Conn, org: OrgId, id: LinkId, now_ms: i64) -> Result<Link> {
    let n = diesel::update(one_link!(org, id))
        .set((
            l::generation.eq(l::generation + 1),
            l::state.eq(LinkState::Disconnected.as_str()),
            l::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    updated(conn, n, org, id)
}

/// Moves a link of `org` to `state`.
pub fn set_state(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
    state: LinkState,
    now_ms: i64,
) -> Result<Link> {
    let n = diesel::update(one_link!(org, id))
        .set((l::state.eq(state.as_str()), l::updated_ms.eq(now_ms)))
        .execute(conn)?;
    updated(conn, n, org, id)
}

/// What a verification tested: a result applies only to exactly this.
#[derive(Debug, Clone, Copy)]
pub struct Tested<'a> {
    /// The link's generation when the verification started.
    pub generation: i64,
    /// The role it assumed.
    pub role_arn: &'a str,
}

/// Records a verification's outcome and the state it leads to, if the link
/// is still what the verification tested (same generation and role, not
/// disconnected): `Ok(None)` when it is not, and nothing changed.
pub fn record_verification(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
    tested: &Tested<'_>,
    v: &Verification<'_>,
    now_ms: i64,
) -> Result<Option<Link>> {
    let n = diesel::update(
        one_link!(org, id)
            .filter(l::generation.eq(tested.generation))
            .filter(l::role_arn.eq(tested.role_arn))
            .filter(l::state.ne(LinkState::Disconnected.as_str())),
    )
    .set((
        l::state.eq(v.state.as_str()),
        l::last_verified_ms.eq(Some(now_ms)),
        l::last_verification_result.eq(Some(v.result)),
        l::last_error.eq(v.error),
        l::trust_policy_audit.eq(v.trust_policy_audit),
        l::updated_ms.eq(now_ms),
    ))
    .execute(conn)?;
    if n == 0 {
        ensure_exists(conn, org, id)?;
        return Ok(None);
    }
    get(conn, org, id).map(Some)
}

/// Deletes a link of `org`. [`Error::InUse`]`("link")` while jobs or
/// resources refer to it (disconnect it instead).
pub fn delete(conn: &mut Conn, org: OrgId, id: LinkId) -> Result<()> {
    let n = diesel::delete(one_link!(org, id))
        .execute(conn)
        .map_err(Error::in_use_as("link"))?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// The links of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<Link>> {
    page_of(conn, org, None, page, Link::try_from)
}

/// [`list`] with each link's External ID in clear, from the same read;
/// `None` for a link whose External ID the keyring cannot open: one such
/// row never hides the others.
///
/// With `connection`, only that organization connection's account links.
pub fn list_revealed(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    connection: Option<ConnectionId>,
    page: &PageRequest,
) -> Result<Page<(Link, Option<ExternalId>)>> {
    page_of(conn, org, connection, page, |r| {
        let ext = open_external_id(keyring, &r).ok();
        Ok((Link::try_from(r)?, ext))
    })
}

/// One page of `org`'s link rows, newest first, each turned by `convert`.
fn page_of<T>(
    conn: &mut Conn,
    org: OrgId,
    connection: Option<ConnectionId>,
    page: &PageRequest,
    convert: impl Fn(Row) -> Result<T>,
) -> Result<Page<T>> {
    let limit = page.clamped_limit();
    let mut q = l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    if let Some(c) = connection {
        q = q.filter(l::connection_id.eq(c.to_string()));
    }
    let q = before_cursor!(q, &page.cursor, l::created_ms, l::id);
    let rows = q
        .order((l::created_ms.desc(), l::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(rows, limit, |r: &Row| (r.created_ms, r.id.clone()), convert)
}

pub use crate::reseal::ResealReport;

/// Re-seals every sealed column still under a non-primary key with the
/// keyring's primary key, `batch` rows per transaction, calling
/// `progress(done, total)` after each batch (for `xrole keys reseal`).
/// Safe to interrupt and run again; rows sealed concurrently are already
/// under the primary key. After it finishes, the old keys can be retired.
pub fn reseal_all(
    conn: &mut Conn,
    keyring: &Keyring,
    batch: u32,
    progress: impl FnMut(u64, u64),
) -> Result<ResealReport> {
    let total: i64 = l::aws_account_links.count().get_result(conn)?;
    crate::reseal::in_batches(conn, total, progress, |conn, after| {
        let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = l::aws_account_links
            .select((
                l::id,
                l::org_id,
                l::external_id_sealed,
                l::callback_secret_sealed,
            ))
            .filter(l::id.gt(after))
            .order(l::id.asc())
            .limit(i64::from(batch.max(1)))
            .load(conn)?;
        let mut resealed = 0;
        for (id, org, ext, cb) in &rows {
            let Some((ext_new, cb_new)) = crate::reseal::reseal_pair(
                keyring,
                (ext, &external_id_aad(org, id)),
                (cb, &callback_secret_aad(org, id)),
                &mut resealed,
            )?
            else {
                continue;
            };
            diesel::update(l::aws_account_links.find(id))
                .set((
                    l::external_id_sealed.eq(ext_new),
                    l::callback_secret_sealed.eq(cb_new),
                ))
                .execute(conn)?;
        }
        Ok(crate::reseal::Batch {
            rows: rows.len() as u64,
            last: rows.last().map(|r| r.0.clone()),
            resealed,
        })
    })
}

/// How many sealed values are still under a key other than the primary
/// (0 means the old keys can be retired).
pub fn count_needing_reseal(conn: &mut Conn, keyring: &Keyring) -> Result<u64> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = l::aws_account_links
        .select((l::external_id_sealed, l::callback_secret_sealed))
        .load(conn)?;
    Ok(crate::reseal::count_stale(keyring, &rows))
}
