//! The application state every handler receives.

use std::sync::Arc;

use xrole_crypto::{ApiKeyHasher, Keyring};
use xrole_store::{Conn, Pool};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Shared state: configuration, database pool, keyring, clock, rate limiter
/// and metrics. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The fields of [`AppState`].
#[non_exhaustive]
pub struct Inner {
    /// The configuration the server started with.
    pub config: Config,
    /// The database pool.
    pub pool: Pool,
    /// Seals and opens secret columns; reloaded when its file changes
    /// ([`AppState::keyring`]).
    keyring: crate::keyring_watch::KeyringCell,
    /// Hashes API key secrets with the keyring's pepper.
    pub hasher: Arc<ApiKeyHasher>,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Per-API-key token buckets.
    pub limiter: RateLimiter,
    /// Per-organization token buckets, shared by all of its keys.
    pub org_limiter: RateLimiter,
    /// Login throttling and the password-check slots.
    pub login_guard: crate::login::LoginGuard,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The AWS side (broker, SaaS principal), set once at start-up; routes
    /// that need it answer 503 until then.
    pub aws: std::sync::OnceLock<Arc<crate::link_flow::AwsRuntime>>,
    /// Why the AWS side is missing or limited, in one line, when it is
    /// (`/readyz` shows it).
    pub aws_status: std::sync::OnceLock<String>,
    /// Recently verified API keys.
    pub auth_cache: crate::auth::AuthCache,
    /// As many permits as the pool has connections: requests wait for a
    /// connection here, as cheap tasks, instead of as blocked threads.
    pub db_gate: tokio::sync::Semaphore,
    /// Whether [`AppState::read`] may run on the request's own thread
    /// (SQLite).
    inline_reads: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Assembles the state. The pool must point at a migrated database.
    pub fn new(config: Config, pool: Pool, keyring: Arc<Keyring>, clock: Arc<dyn Clock>) -> Self {
        let hasher = Arc::new(keyring.api_key_hasher());
        let limiter = RateLimiter::new(config.rate_limit, clock.clone());
        let org_limiter = RateLimiter::new(config.org_rate_limit, clock.clone());
        let login_guard = crate::login::LoginGuard::new(config.login_concurrency, clock.clone());
        let auth_cache =
            crate::auth::AuthCache::new(std::time::Duration::from_millis(config.auth_cache_ms));
        let db_gate = tokio::sync::Semaphore::new(pool.max_size() as usize);
        let inline_reads = matches!(
            xrole_store::parse_url(&config.database_url),
            Ok((xrole_store::Backend::Sqlite, _))
        );
        AppState(Arc::new(Inner {
            config,
            pool,
            keyring: crate::keyring_watch::KeyringCell::new(keyring),
            hasher,
            clock,
            limiter,
            org_limiter,
            login_guard,
            metrics: Metrics::default(),
            aws: std::sync::OnceLock::new(),
            aws_status: std::sync::OnceLock::new(),
            auth_cache,
            db_gate,
            inline_reads,
        }))
    }

    /// The keyring as it is now: seal and open with it, and do not keep it
    /// beyond the operation (a reload may replace it).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.get()
    }

    /// The replaceable keyring itself (for the reloader).
    pub fn keyring_cell(&self) -> &crate::keyring_watch::KeyringCell {
        &self.keyring
    }

    /// Call after a committed write that revokes a key or changes a user or
    /// an organization: keys verified before it are read again. Nothing
    /// else clears the cache (an anonymous request cannot make every
    /// authenticated one pay a database read).
    pub fn credentials_changed(&self) {
        self.auth_cache.clear();
    }

    /// Now, in unix milliseconds, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .db_gate
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let pool = self.pool.clone();
        self.metrics.db_checkout();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(|e| {
                tracing::warn!(error = %e, "no database connection");
                ApiError::Unavailable
            })?;
            f(&mut conn)
        })
        .await?
    }

    /// Like [`AppState::db`], for `f` that only reads. On SQLite, when a
    /// connection is free at once, `f` runs right here on the request's
    /// thread: a read in WAL mode does not wait for writers and takes
    /// microseconds, less than the two thread switches of a trip to the
    /// blocking pool. Otherwise (PostgreSQL, which answers over the network,
    /// or no free connection) it goes through [`AppState::db`].
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, ApiError> + Send + 'static,
    {
        if self.inline_reads
            && let Ok(_permit) = self.db_gate.try_acquire()
            && let Some(mut conn) = self.pool.try_get()
        {
            self.metrics.db_checkout();
            return f(&mut conn);
        }
        self.db(f).await
    }

    /// Like [`AppState::db`], inside a write transaction (`BEGIN IMMEDIATE`
    /// on SQLite): the change, its audit event and the idempotency record
    /// commit together or not at all.
    pub async fn tx<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, ApiError> + Send + 'static,
    {
        self.db(move |conn| xrole_store::write_transaction(conn, f))
            .await
    }
}
