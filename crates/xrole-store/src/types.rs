//! Parsed values: id newtypes, state enums, `Email`, pagination.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// A UUID (version 7 when created here), stored as its lowercase
        /// hyphenated text on both backends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::try_parse(s).map(Self).map_err(|_| Error::Invalid { kind: $kind })
            }
        }
    };
}

id_type!(
    /// An organization (tenant).
    OrgId, "org id"
);
id_type!(
    /// A user of an organization.
    UserId, "user id"
);
id_type!(
    /// An API key row (not the public `key_id` inside the token).
    ApiKeyId, "api key id"
);
id_type!(
    /// An AWS account link.
    LinkId, "link id"
);
id_type!(
    /// A connection to an AWS Organization (a link per member account).
    ConnectionId, "connection id"
);
id_type!(
    /// A background job.
    JobId, "job id"
);
id_type!(
    /// One step of a job.
    JobStepId, "job step id"
);
id_type!(
    /// An AWS resource xrole created.
    ResourceId, "resource id"
);
id_type!(
    /// An audit event.
    AuditEventId, "audit event id"
);

/// Parses a stored id column; a malformed value means the database was edited
/// by hand, reported as a database error rather than a panic.
pub(crate) fn parse_col<T: FromStr<Err = Error>>(s: &str) -> Result<T> {
    s.parse()
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and serialized form.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::Invalid { kind: $kind }),
                }
            }
        }
    };
}

string_enum!(
    /// A role within an organization: `admin` > `operator` > `viewer`.
    UserRole, "user role", {
        /// Everything: users, every key, the organization's settings, and
        /// destructive changes (deleting a link, changing its role, tearing
        /// down a database).
        Admin = "admin",
        /// Links, verification, provisioning and teardown of what xrole
        /// built (destructive changes only where the organization allows).
        Operator = "operator",
        /// Reads only.
        Viewer = "viewer",
    }
);

impl UserRole {
    fn rank(self) -> u8 {
        match self {
            UserRole::Viewer => 0,
            UserRole::Operator => 1,
            UserRole::Admin => 2,
        }
    }

    /// Whether this role includes everything `other` may do.
    pub fn at_least(self, other: UserRole) -> bool {
        self.rank() >= other.rank()
    }

    /// The lower of the two roles.
    pub fn min(self, other: UserRole) -> UserRole {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

string_enum!(
    /// Where an AWS account link is in its life.
    LinkState, "link state", {
        /// Created; waiting for the customer's stack.
        Pending = "pending",
        /// The stack reported; verification runs.
        Verifying = "verifying",
        /// Verified: AssumeRole works with the External ID and fails without it.
        Active = "active",
        /// The role can be assumed without the External ID; never used.
        Insecure = "insecure",
        /// Verification failed.
        Failed = "failed",
        /// The stack was deleted, or the link was disconnected.
        Disconnected = "disconnected",
    }
);

string_enum!(
    /// The permission set the customer's role grants.
    AccessLevel, "access level", {
        /// Read-only access.
        ReadOnly = "read_only",
        /// Create and manage resources xrole tagged as its own.
        Provisioning = "provisioning",
    }
);

string_enum!(
    /// Where a job is in its life.
    JobState, "job state", {
        /// Waiting for a worker (possibly until a retry time).
        Queued = "queued",
        /// Leased by a worker.
        Running = "running",
        /// Finished successfully.
        Succeeded = "succeeded",
        /// Failed for good (attempts exhausted or a permanent error).
        Failed = "failed",
        /// Cancelled by a user.
        Cancelled = "cancelled",
    }
);

impl JobState {
    /// Whether the job can still change state.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

string_enum!(
    /// Where an AWS resource xrole manages is in its life.
    ResourceState, "resource state", {
        /// The create call was issued.
        Creating = "creating",
        /// Exists and is usable.
        Available = "available",
        /// The delete call was issued.
        Deleting = "deleting",
        /// Gone from AWS.
        Deleted = "deleted",
        /// Creation or deletion failed.
        Failed = "failed",
    }
);

/// An email address, trimmed and lower-cased, checked for one `@` with a
/// non-empty local part and a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_lowercase();
        let invalid = Error::Invalid { kind: "email" };
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid);
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(invalid);
        };
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(invalid);
        }
        Ok(Email(s))
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The largest page a list function returns.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Which page of a list to read: newest first, `limit` items (clamped to
/// 1..=[`MAX_PAGE_SIZE`]) after `cursor` (the previous page's `next_cursor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most.
    pub limit: u32,
    /// Where to continue; `None` starts at the newest item.
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: Cursor) -> Self {
        PageRequest {
            limit,
            cursor: Some(cursor),
        }
    }

    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE_SIZE))
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(50)
    }
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass it back to read the next page; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// An opaque position in a list: the (time, id) of the last item returned.
/// Its text form (`Display`/`FromStr`) travels in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub(crate) ms: i64,
    pub(crate) id: String,
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.ms, self.id)
    }
}

impl FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let invalid = Error::Invalid { kind: "cursor" };
        let (ms, id) = s.split_once('_').ok_or(Error::Invalid { kind: "cursor" })?;
        let ms: i64 = ms.parse().map_err(|_| Error::Invalid { kind: "cursor" })?;
        let id = Uuid::try_parse(id).map_err(|_| invalid)?;
        Ok(Cursor {
            ms,
            id: id.hyphenated().to_string(),
        })
    }
}

/// Turns `limit + 1` loaded rows into a page: the extra row only proves that
/// another page exists.
pub(crate) fn paginate<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> (i64, String),
    convert: impl Fn(R) -> Result<T>,
) -> Result<Page<T>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|r| {
            let (ms, id) = key(r);
            Cursor { ms, id }
        })
    } else {
        None
    };
    let items = rows.into_iter().map(convert).collect::<Result<Vec<_>>>()?;
    Ok(Page { items, next_cursor })
}

/// The keyset condition "strictly older than the cursor" for a table with a
/// time column and a text id, newest-first order.
macro_rules! before_cursor {
    ($query:expr, $cursor:expr, $time:expr, $id:expr) => {{
        match $cursor {
            Some(c) => $query.filter($time.lt(c.ms).or($time.eq(c.ms).and($id.lt(c.id.clone())))),
            None => $query,
        }
    }};
}
pub(crate) use before_cursor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = OrgId::new();
        assert_eq!(id.to_string().parse::<OrgId>().unwrap(), id);
        assert!("not-a-uuid".parse::<OrgId>().is_err());
    }

    #[test]
    fn enums_round_trip() {
        for s in LinkState::ALL {
            assert_eq!(s.as_str().parse::<LinkState>().unwrap(), *s);
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
        }
        assert_eq!(AccessLevel::ReadOnly.as_str(), "read_only");
        assert!("Admin".parse::<UserRole>().is_err());
        assert!("member".parse::<UserRole>().is_err());
        let (a, o, v) = (UserRole::Admin, UserRole::Operator, UserRole::Viewer);
        assert!(a.at_least(o) && o.at_least(v) && a.at_least(a) && !v.at_least(o));
        assert_eq!((a.min(v), o.min(a), v.min(v)), (v, o, v));
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            " Ada@Example.COM ".parse::<Email>().unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.d",
        ] {
            assert!(bad.parse::<Email>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            ms: 42,
            id: JobId::new().to_string(),
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        assert!("42".parse::<Cursor>().is_err());
        assert!("x_y".parse::<Cursor>().is_err());
    }
}
