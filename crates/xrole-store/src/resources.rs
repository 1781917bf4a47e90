//! AWS resources xrole created in a customer's account: kind, AWS id,
//! region, parent (a subnet's VPC), state and tags.

use std::collections::BTreeMap;

use diesel::prelude::*;
use serde::Serialize;

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::resources::dsl as r;
use crate::types::{
    JobId, LinkId, OrgId, Page, PageRequest, ResourceId, ResourceState, before_cursor, paginate,
    parse_col,
};

/// A resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Its id.
    pub id: ResourceId,
    /// Organization.
    pub org_id: OrgId,
    /// The link (AWS account) it lives in.
    pub link_id: LinkId,
    /// The job that created it.
    pub job_id: Option<JobId>,
    /// What it is (`vpc`, `subnet`, `ec2_instance`, `rds_instance`, …).
    pub kind: String,
    /// Its AWS id (`vpc-0abc…`, a DB identifier, …).
    pub aws_id: String,
    /// AWS region.
    pub region: String,
    /// The resource it belongs to.
    pub parent_id: Option<ResourceId>,
    /// State.
    pub state: ResourceState,
    /// The tags set on it in AWS.
    pub tags: BTreeMap<String, String>,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
}

/// What [`create`] needs.
#[derive(Debug, Clone)]
pub struct NewResource<'a> {
    /// The link; must belong to the same organization.
    pub link: LinkId,
    /// The creating job; must belong to the same organization.
    pub job: Option<JobId>,
    /// What it is.
    pub kind: &'a str,
    /// Its AWS id.
    pub aws_id: &'a str,
    /// AWS region.
    pub region: &'a str,
    /// Parent resource; must belong to the same organization.
    pub parent: Option<ResourceId>,
    /// Initial state.
    pub state: ResourceState,
    /// Tags.
    pub tags: &'a BTreeMap<String, String>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::resources)]
struct Row {
    id: String,
    org_id: String,
    link_id: String,
    job_id: Option<String>,
    kind: String,
    aws_id: String,
    region: String,
    parent_id: Option<String>,
    state: String,
    tags: String,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<Row> for Resource {
    type Error = Error;
    fn try_from(x: Row) -> Result<Resource> {
        Ok(Resource {
            id: parse_col(&x.id)?,
            org_id: parse_col(&x.org_id)?,
            link_id: parse_col(&x.link_id)?,
            job_id: x.job_id.as_deref().map(parse_col).transpose()?,
            kind: x.kind,
            aws_id: x.aws_id,
            region: x.region,
            parent_id: x.parent_id.as_deref().map(parse_col).transpose()?,
            state: x.state.parse()?,
            tags: serde_json::from_str(&x.tags)?,
            created_ms: x.created_ms,
            updated_ms: x.updated_ms,
        })
    }
}

/// Records a resource of `org`. [`Error::NotFound`] when the link, job or
/// parent is not `org`'s; [`Error::Duplicate`]`("aws_id")` when the same
/// (link, region, kind, AWS id) is recorded already.
pub fn create(conn: &mut Conn, org: OrgId, new: &NewResource<'_>, now_ms: i64) -> Result<Resource> {
    crate::links::ensure_exists(conn, org, new.link)?;
    if let Some(job) = new.job {
        crate::jobs::get(conn, org, job)?;
    }
    if let Some(parent) = new.parent {
        get(conn, org, parent)?;
    }
    let row = Row {
        id: ResourceId::new().to_string(),
        org_id: org.to_string(),
        link_id: new.link.to_string(),
        job_id: new.job.map(|j| j.to_string()),
        kind: new.kind.to_owned(),
        aws_id: new.aws_id.to_owned(),
        region: new.region.to_owned(),
        parent_id: new.parent.map(|p| p.to_string()),
        state: new.state.as_str().to_owned(),
        tags: serde_json::to_string(new.tags)?,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    diesel::insert_into(r::resources)
        .values(&row)
        .execute(conn)
        .map_err(Error::duplicate_as("aws_id"))?;
    row.try_into()
}

/// Reads a resource of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: ResourceId) -> Result<Resource> {
    r::resources
        .filter(r::org_id.eq(org.to_string()))
        .filter(r::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// Finds a resource of `org` by its place in AWS.
pub fn find_by_aws_id(
    conn: &mut Conn,
    org: OrgId,
    link: LinkId,
    region: &str,
    aws_id: &str,
) -> Result<Option<Resource>> {
    let row: Option<Row> = r::resources
        .filter(r::org_id.eq(org.to_string()))
        .filter(r::link_id.eq(link.to_string()))
        .filter(r::region.eq(region))
        .filter(r::aws_id.eq(aws_id))
        .select(Row::as_select())
        .first(conn)
        .optional()?;
    row.map(Resource::try_from).transpose()
}

/// Changes a resource's state.
pub fn set_state(
    conn: &mut Conn,
    org: OrgId,
    id: ResourceId,
    state: ResourceState,
    now_ms: i64,
) -> Result<Resource> {
    let n = diesel::update(
        r::resources
            .filter(r::org_id.eq(org.to_string()))
            .filter(r::id.eq(id.to_string())),
    )
    .set((r::state.eq(state.as_str()), r::updated_ms.eq(now_ms)))
    .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org, id)
}

/// Replaces a resource's tags.
pub fn set_tags(
    conn: &mut Conn,
    org: OrgId,
    id: ResourceId,
    tags: &BTreeMap<String, String>,
    now_ms: i64,
) -> Result<Resource> {
    let n = diesel::update(
        r::resources
            .filter(r::org_id.eq(org.to_string()))
            .filter(r::id.eq(id.to_string())),
    )
    .set((
        r::tags.eq(serde_json::to_string(tags)?),
        r::updated_ms.eq(now_ms),
    ))
    .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org, id)
}

/// Deletes the record of a resource of `org`. Children go first: a parent
/// with children answers [`Error::InUse`]`("resource")`.
pub fn delete(conn: &mut Conn, org: OrgId, id: ResourceId) -> Result<()> {
    let n = diesel::delete(
        r::resources
            .filter(r::org_id.eq(org.to_string()))
            .filter(r::id.eq(id.to_string())),
    )
    .execute(conn)
    .map_err(Error::in_use_as("resource"))?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// The direct children of a resource of `org`, oldest first.
pub fn children(conn: &mut Conn, org: OrgId, parent: ResourceId) -> Result<Vec<Resource>> {
    let rows: Vec<Row> = r::resources
        .filter(r::org_id.eq(org.to_string()))
        .filter(r::parent_id.eq(parent.to_string()))
        .select(Row::as_select())
        .order((r::created_ms.asc(), r::id.asc()))
        .load(conn)?;
    rows.into_iter().map(Resource::try_from).collect()
}

/// The resources of `org`, newest first; only those of `link` when given.
pub fn list(
    conn: &mut Conn,
    org: OrgId,
    link: Option<LinkId>,
    page: &PageRequest,
) -> Result<Page<Resource>> {
    let limit = page.clamped_limit();
    let mut q = r::resources
        .filter(r::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    if let Some(link) = link {
        q = q.filter(r::link_id.eq(link.to_string()));
    }
    let q = before_cursor!(q, &page.cursor, r::created_ms, r::id);
    let rows = q
        .order((r::created_ms.desc(), r::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |x: &Row| (x.created_ms, x.id.clone()),
        Resource::try_from,
    )
}
