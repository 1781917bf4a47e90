//! The crate's one error type.

/// Everything a store function can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The row does not exist, or belongs to another organization (the two are
    /// deliberately indistinguishable: cross-tenant ids answer 404).
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write; the field names what collided
    /// (`email`, `key_id`, `external_id`, `aws_id`, …).
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    /// A delete was refused because other rows still refer to the row (jobs
    /// or resources of a link, children of a resource, audit history of an
    /// organization); the field names the row's kind.
    #[error("{0} is still referred to")]
    InUse(&'static str),
    /// The change would leave the organization without an enabled admin
    /// (checked inside the write transaction, with the organization's row
    /// locked, so two admins demoting each other cannot both succeed).
    #[error("an organization must keep an enabled admin")]
    LastAdmin,
    /// A value did not parse as the named type.
    #[error("invalid {kind}")]
    Invalid {
        /// The type that failed to parse (`org id`, `email`, `link state`, …).
        kind: &'static str,
    },
    /// The job's lease expired and another worker took the job over (or the
    /// job was cancelled): the caller must stop working on it.
    #[error("job lease lost")]
    LeaseLost,
    /// The idempotency record's lock was taken over by a later request.
    #[error("idempotency lock lost")]
    LockLost,
    /// The database URL is neither `sqlite://…`, a file path, nor `postgres://…`.
    #[error("unsupported database url (expected sqlite://, postgres:// or a file path)")]
    UnsupportedUrl,
    /// A query failed.
    #[error("database error")]
    Database(#[from] diesel::result::Error),
    /// A connection could not be opened.
    #[error("database connection failed")]
    Connection(#[from] diesel::ConnectionError),
    /// The connection pool could not hand out a connection.
    #[error("connection pool error")]
    Pool(#[from] r2d2::Error),
    /// Running or reverting migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A JSON column did not hold the expected JSON.
    #[error("malformed json column")]
    Json(#[from] serde_json::Error),
    /// Sealing or opening a sealed column failed (no detail, by design).
    #[error("sealed column could not be processed")]
    Crypto(#[source] xrole_crypto::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a foreign-key violation to [`Error::InUse`]; any other database
    /// error passes through unchanged.
    pub(crate) fn in_use_as(what: &'static str) -> impl FnOnce(diesel::result::Error) -> Error {
        move |e| match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => Error::InUse(what),
            other => Error::Database(other),
        }
    }

    /// Maps a unique-constraint violation to [`Error::Duplicate`]; any other
    /// database error passes through unchanged.
    pub(crate) fn duplicate_as(what: &'static str) -> impl FnOnce(diesel::result::Error) -> Error {
        move |e| match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => Error::Duplicate(what),
            other => Error::Database(other),
        }
    }
}
