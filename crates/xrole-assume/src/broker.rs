//! The broker: AssumeRole behind a bounded, single-flight, refresh-ahead cache.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep, Sleep};
use aws_smithy_async::time::{SharedTimeSource, SystemTimeSource};
use aws_types::SdkConfig;
use aws_types::region::Region;
use moka::future::Cache;
use tracing::{Instrument, debug, debug_span, warn};

use crate::Error;
use crate::backoff::{Backoff, jitter};
use crate::budget::Budget;
use crate::metrics::{Counters, Metrics};
use crate::provider::TenantCredentials;
use crate::spec::{AssumeSpec, CacheKey, MAX_CHAINED_SESSION_DURATION};
use crate::sts::{Assumed, Class, Failure, Request, Sts};
use crate::types::{Partition, RoleArn};

tokio::task_local! {
    /// STS budget tokens the running task took beforehand ([`Broker::with_budget`]).
    static PREPAID: std::cell::Cell<u32>;
}

/// Hands out short-lived credentials for customers' roles, cached per [`AssumeSpec`].
///
/// Cheap to clone (one shared cache). See the [crate documentation](crate) for an example.
///
/// - **Single flight:** concurrent callers for one spec share one AssumeRole call.
/// - **Refresh ahead:** a session is renewed once it is within the refresh window of
///   its expiry (default 5 min plus up to 1 min of jitter); the other callers keep
///   getting the current session meanwhile.
/// - **Never expired:** a session is never handed out with less than the expiry margin
///   (default 1 min) left. If a refresh fails while the session is still valid, the
///   session keeps being served and the refresh is retried with backoff.
/// - **Bounded:** at most `max_sessions` sessions (default 10,000); sessions idle for
///   the idle timeout (default 1 h) are dropped.
///
/// Expiry is measured on the broker's own clock: a session is good for the duration
/// STS granted, counted from the moment the request was sent, so a skewed local clock
/// neither serves expired credentials nor refreshes early.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    sts: Sts,
    cache: Cache<CacheKey, Arc<Slot>>,
    counters: Arc<Counters>,
    time: SharedTimeSource,
    sleep: SharedAsyncSleep,
    refresh_ahead: Duration,
    refresh_jitter: Duration,
    expiry_margin: Duration,
    propagation_window: Duration,
    propagation_backoff: Backoff,
    retry_backoff: Backoff,
    max_attempts: u32,
    base_is_role_session: Option<bool>,
    detected_role_session: tokio::sync::OnceCell<bool>,
    budget: Option<Budget>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("entries", &self.inner.cache.entry_count())
            .field("refresh_ahead", &self.inner.refresh_ahead)
            .field("propagation_window", &self.inner.propagation_window)
            .finish_non_exhaustive()
    }
}

/// One cached session and the lock that makes its fetches single-flight.
struct Slot {
    role: RoleArn,
    current: RwLock<Option<Arc<Session>>>,
    fetch: tokio::sync::Mutex<FetchState>,
    /// Completed fetch attempts, readable without the lock (see `fetch_or_wait`).
    fetches: AtomicU64,
}

#[derive(Default)]
struct FetchState {
    last_error: Option<Error>,
    refresh_failures: u32,
    retry_refresh_at: Option<SystemTime>,
}

struct Session {
    creds: Credentials,
    refresh_at: SystemTime,
    usable_until: SystemTime,
}

impl Slot {
    fn current(&self) -> Option<Arc<Session>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, s: Arc<Session>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(s);
    }
}

/// Configures a [`Broker`]; every setting has a production default.
#[derive(Debug)]
pub struct BrokerBuilder {
    base: SdkConfig,
    max_sessions: u64,
    idle_timeout: Duration,
    refresh_ahead: Duration,
    refresh_jitter: Duration,
    expiry_margin: Duration,
    propagation_window: Duration,
    propagation_backoff: Backoff,
    retry_backoff: Backoff,
    max_attempts: u32,
    time: Option<SharedTimeSource>,
    sleep: Option<SharedAsyncSleep>,
    base_is_role_session: Option<bool>,
    budget: Option<(f64, u32)>,
}

impl BrokerBuilder {
    /// A budget for every STS request the broker sends, across all tenants:
    /// `per_second` on average, `burst` at once (default: none). A request
    /// finding the budget spent waits when a token is due within a quarter
    /// of a second, and otherwise fails at once with
    /// [`Error::BudgetExhausted`], saying when to try again: a job queue
    /// re-schedules, an API answers 429 or 503 with `Retry-After`.
    pub fn sts_budget(mut self, per_second: f64, burst: u32) -> Self {
        self.budget = (per_second > 0.0).then_some((per_second, burst));
        self
    }

    /// The most sessions kept (default 10,000); the least valuable are evicted beyond.
    pub fn max_sessions(mut self, n: u64) -> Self {
        self.max_sessions = n;
        self
    }

    /// Drop sessions nobody asked for during this long (default 1 h).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Refresh sessions this long before they expire (default 5 min; at most half the
    /// session's lifetime is used).
    pub fn refresh_ahead(mut self, d: Duration) -> Self {
        self.refresh_ahead = d;
        self
    }

    /// Up to this much extra, drawn per session, so sessions fetched together do not
    /// all refresh together (default 1 min).
    pub fn refresh_jitter(mut self, d: Duration) -> Self {
        self.refresh_jitter = d;
        self
    }

    /// Never hand out a session with less than this left (default 1 min).
    pub fn expiry_margin(mut self, d: Duration) -> Self {
        self.expiry_margin = d;
        self
    }

    /// How long [`Broker::verify_link`] retries AccessDenied while a new role
    /// propagates through IAM (default 2 min).
    pub fn propagation_window(mut self, d: Duration) -> Self {
        self.propagation_window = d;
        self
    }

    /// Backoff between those AccessDenied retries (default 1 s doubling to 15 s, jittered).
    pub fn propagation_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.propagation_backoff = Backoff { initial, max };
        self
    }

    /// Attempts per STS call for throttling, network errors and 5xx (default 3), and
    /// the backoff between them (default 200 ms doubling to 5 s, jittered).
    pub fn retries(mut self, max_attempts: u32, initial: Duration, max: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.retry_backoff = Backoff { initial, max };
        self
    }

    /// The clock for expiry, refresh and retry windows (default: the base config's
    /// time source, else the system clock). Tests pass a manual clock.
    pub fn time_source(mut self, time: SharedTimeSource) -> Self {
        self.time = Some(time);
        self
    }

    /// How the broker waits between retries (default: the base config's sleep, else
    /// tokio). Tests pass one that advances a manual clock.
    pub fn sleep_impl(mut self, sleep: SharedAsyncSleep) -> Self {
        self.sleep = Some(sleep);
        self
    }

    /// Whether the broker's own identity is itself a role session (instance profile,
    /// ECS task role, web identity…). Role chaining caps sessions at one hour, so
    /// longer durations are clamped to 3,600 s. When not set, the broker asks
    /// `GetCallerIdentity` once, the first time a spec asks for more than an hour.
    pub fn base_is_role_session(mut self, yes: bool) -> Self {
        self.base_is_role_session = Some(yes);
        self
    }

    /// Builds the broker.
    pub fn build(self) -> Broker {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let cache = Cache::builder()
            .max_capacity(self.max_sessions)
            .time_to_idle(self.idle_timeout)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    Counters::inc(&listener_counters.evictions);
                }
            })
            .build();
        let time = self
            .time
            .or_else(|| self.base.time_source())
            .unwrap_or_else(|| SharedTimeSource::new(SystemTimeSource::new()));
        let sleep = self
            .sleep
            .or_else(|| self.base.sleep_impl())
            .unwrap_or_else(|| SharedAsyncSleep::new(TokioSleep));
        let budget = self
            .budget
            .map(|(rate, burst)| Budget::new(rate, burst, time.now()));
        Broker {
            inner: Arc::new(Inner {
                sts: Sts::new(self.base),
                cache,
                counters,
                time,
                sleep,
                refresh_ahead: self.refresh_ahead,
                refresh_jitter: self.refresh_jitter,
                expiry_margin: self.expiry_margin,
                propagation_window: self.propagation_window,
                propagation_backoff: self.propagation_backoff,
                retry_backoff: self.retry_backoff,
                max_attempts: self.max_attempts,
                base_is_role_session: self.base_is_role_session,
                detected_role_session: tokio::sync::OnceCell::new(),
                budget,
            }),
        }
    }
}

#[derive(Debug)]
struct TokioSleep;

impl AsyncSleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(tokio::time::sleep(duration))
    }
}

impl Broker {
    /// A broker acting as the identity in `base` (load it with
    /// `aws_config::load_defaults`: instance profiles, ECS task roles, web identity and
    /// `AWS_ENDPOINT_URL` all work), with default settings.
    pub fn new(base: &SdkConfig) -> Broker {
        Broker::builder(base).build()
    }

    /// A builder for non-default settings.
    pub fn builder(base: &SdkConfig) -> BrokerBuilder {
        BrokerBuilder {
            base: base.clone(),
            max_sessions: 10_000,
            idle_timeout: Duration::from_secs(3600),
            refresh_ahead: Duration::from_secs(300),
            refresh_jitter: Duration::from_secs(60),
            expiry_margin: Duration::from_secs(60),
            propagation_window: Duration::from_secs(120),
            propagation_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(15),
            },
            retry_backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            max_attempts: 3,
            time: None,
            sleep: None,
            base_is_role_session: None,
            budget: None,
        }
    }

    /// Credentials for the session `spec` describes: cached, or fetched once for all
    /// concurrent callers.
    pub async fn credentials(&self, spec: &AssumeSpec) -> Result<Credentials, Error> {
        self.credentials_in(spec, None).await
    }

    /// A credentials provider for one tenant session, for any aws-sdk client.
    pub fn credentials_provider(&self, spec: &AssumeSpec) -> TenantCredentials {
        TenantCredentials::new(self.clone(), spec.clone(), None)
    }

    /// The broker's base config, with `region` and the tenant session as identity:
    /// `aws_sdk_ec2::Client::new(&broker.sdk_config(&spec, region))` acts in the
    /// customer's account. STS is called in `region` unless the spec names one.
    ///
    /// The config has no identity cache of its own: every request asks the broker,
    /// whose cache is the one that refreshes ahead and is bounded.
    pub fn sdk_config(&self, spec: &AssumeSpec, region: Region) -> SdkConfig {
        let provider = TenantCredentials::new(self.clone(), spec.clone(), Some(region.clone()));
        self.inner
            .sts
            .base()
            .to_builder()
            .region(region)
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .identity_cache(IdentityCache::no_cache())
            .build()
    }

    /// Drops the cached session of `spec` (for example after the customer changed the role).
    pub async fn invalidate(&self, spec: &AssumeSpec) {
        self.inner.cache.invalidate(&spec.key()).await;
    }

    /// Drops every cached session of `role` (the link was disconnected or found insecure).
    pub fn invalidate_role(&self, role: &RoleArn) {
        let role = role.clone();
        // Only fails when invalidation closures are off; the builder turns them on.
        let _ = self
            .inner
            .cache
            .invalidate_entries_if(move |_, slot| slot.role == role);
    }

    /// The counters so far.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot(self.inner.cache.entry_count())
    }

    /// Runs the cache's pending maintenance (evictions, counts) now rather than lazily.
    pub async fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks().await;
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.time.now()
    }

    pub(crate) async fn credentials_in(
        &self,
        spec: &AssumeSpec,
        hint: Option<&Region>,
    ) -> Result<Credentials, Error> {
        let key = spec.key();
        let slot = self
            .inner
            .cache
            .get_with(key, async { Arc::new(Slot::new(spec.role().clone())) })
            .await;
        let now = self.now();
        if let Some(s) = slot.current() {
            if now < s.refresh_at {
                Counters::inc(&self.inner.counters.hits);
                return Ok(s.creds.clone());
            }
            if now < s.usable_until {
                Counters::inc(&self.inner.counters.hits);
                // One caller refreshes; the others keep the still-valid session.
                if let Ok(mut state) = slot.fetch.try_lock() {
                    return Ok(self.refresh(&slot, &mut state, spec, hint, s).await);
                }
                return Ok(s.creds.clone());
            }
        }
        self.fetch_or_wait(&slot, spec, hint).await
    }

    async fn refresh(
        &self,
        slot: &Slot,
        state: &mut FetchState,
        spec: &AssumeSpec,
        hint: Option<&Region>,
        current: Arc<Session>,
    ) -> Credentials {
        let now = self.now();
        if let Some(s) = slot.current()
            && now < s.refresh_at
        {
            return s.creds.clone(); // refreshed meanwhile
        }
        if state.retry_refresh_at.is_some_and(|t| now < t) {
            return current.creds.clone();
        }
        // One attempt per refresh: the backoff below paces the next one.
        match self.fetch(spec, hint, 1).await {
            Ok(session) => {
                Counters::inc(&self.inner.counters.refreshes);
                state.refresh_failures = 0;
                state.retry_refresh_at = None;
                let creds = session.creds.clone();
                slot.store(Arc::new(session));
                creds
            }
            Err(e) => {
                Counters::inc(&self.inner.counters.refresh_failures);
                state.refresh_failures = state.refresh_failures.saturating_add(1);
                let delay = self.inner.retry_backoff.delay(state.refresh_failures);
                state.retry_refresh_at = Some(now + delay);
                warn!(
                    role = %spec.role(),
                    session = %spec.session_name(),
                    error = %e,
                    retry_in = ?delay,
                    "refreshing credentials failed; serving the current session until it nears expiry"
                );
                current.creds.clone()
            }
        }
    }

    async fn fetch_or_wait(
        &self,
        slot: &Slot,
        spec: &AssumeSpec,
        hint: Option<&Region>,
    ) -> Result<Credentials, Error> {
        let seen = slot.fetches.load(Ordering::Acquire);
        let mut state = slot.fetch.lock().await;
        if let Some(s) = slot.current()
            && self.now() < s.usable_until
        {
            Counters::inc(&self.inner.counters.hits);
            return Ok(s.creds.clone());
        }
        // A fetch finished while we queued and failed: share its error rather than
        // sending one more doomed request per waiting caller.
        if slot.fetches.load(Ordering::Acquire) != seen
            && let Some(e) = &state.last_error
        {
            return Err(e.clone());
        }
        Counters::inc(&self.inner.counters.misses);
        let result = self.fetch(spec, hint, self.inner.max_attempts).await;
        slot.fetches.fetch_add(1, Ordering::Release);
        match result {
            Ok(session) => {
                *state = FetchState::default();
                let creds = session.creds.clone();
                slot.store(Arc::new(session));
                Ok(creds)
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The STS region for `role`: the spec's, else the hint or the base config's
    /// region when it is in the role's partition, else the partition's default.
    pub(crate) fn sts_region(
        &self,
        role: &RoleArn,
        spec_region: Option<&Region>,
        hint: Option<&Region>,
    ) -> String {
        if let Some(r) = spec_region {
            return r.to_string();
        }
        let same_partition = |r: &&Region| Partition::of_region(r.as_ref()) == role.partition();
        hint.filter(same_partition)
            .or(self.inner.sts.base().region().filter(same_partition))
            .map_or_else(
                || role.partition().default_region().to_owned(),
                |r| r.to_string(),
            )
    }

    async fn fetch(
        &self,
        spec: &AssumeSpec,
        hint: Option<&Region>,
        max_attempts: u32,
    ) -> Result<Session, Error> {
        let region = self.sts_region(spec.role(), spec.region(), hint);
        let span = debug_span!("assume_role", role = %spec.role(), session = %spec.session_name(), region = %region);
        async {
            let lifetime = self
                .session_duration(spec.duration(), spec.role(), &region)
                .await?;
            let req = Request {
                role: spec.role(),
                external_id: Some(spec.external_id()),
                session_name: spec.session_name(),
                duration: lifetime,
                spec: Some(spec),
            };
            let mut sent_at = self.now();
            let assumed = self
                .call_sts(max_attempts, false, || {
                    sent_at = self.now();
                    self.inner.sts.assume_role(&region, &req)
                })
                .await
                .map_err(|f| f.into_error(spec.role(), &region))?;
            debug!(lifetime = ?lifetime, "assumed role");
            Ok(self.session(assumed, spec.role(), sent_at, lifetime))
        }
        .instrument(span)
        .await
    }

    fn session(
        &self,
        a: Assumed,
        role: &RoleArn,
        sent_at: SystemTime,
        lifetime: Duration,
    ) -> Session {
        let i = &self.inner;
        let expiry = sent_at + lifetime;
        let margin = i.expiry_margin.min(lifetime / 2);
        let ahead = i.refresh_ahead.min(lifetime / 2) + jitter(i.refresh_jitter.min(lifetime / 4));
        let usable_until = expiry - margin;
        let refresh_at = (expiry - ahead.min(lifetime)).min(usable_until);
        let creds = Credentials::builder()
            .access_key_id(a.access_key_id)
            .secret_access_key(a.secret_access_key)
            .session_token(a.session_token)
            .expiry(expiry)
            .account_id(role.account_id().as_str())
            .provider_name("xrole-assume")
            .build();
        Session {
            creds,
            refresh_at,
            usable_until,
        }
    }

    /// The duration to ask for: clamped to one hour when the broker is itself a role
    /// session, because STS refuses longer chained sessions.
    async fn session_duration(
        &self,
        asked: Duration,
        role: &RoleArn,
        region: &str,
    ) -> Result<Duration, Error> {
        if asked <= MAX_CHAINED_SESSION_DURATION {
            return Ok(asked);
        }
        let chained = match self.inner.base_is_role_session {
            Some(known) => known,
            None => {
                *self
                    .inner
                    .detected_role_session
                    .get_or_try_init(|| async {
                        let (_, arn) = self
                            .call_sts(self.inner.max_attempts, false, || {
                                self.inner.sts.caller_identity(region, None)
                            })
                            .await
                            .map_err(|f| f.into_error(role, region))?;
                        Ok::<bool, Error>(arn.contains(":assumed-role/"))
                    })
                    .await?
            }
        };
        if chained {
            debug!(asked = ?asked, "the broker is a role session: clamping to 3600 s");
            return Ok(MAX_CHAINED_SESSION_DURATION);
        }
        Ok(asked)
    }

    /// Runs one STS call with retries for throttling and transient errors, counting
    /// every attempt and every failure (except an AccessDenied the caller expects).
    pub(crate) async fn call_sts<T, F, Fut>(
        &self,
        max_attempts: u32,
        expect_denial: bool,
        mut call: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.spend_budget().await?;
            Counters::inc(&self.inner.counters.sts_calls);
            match call().await {
                Ok(v) => return Ok(v),
                Err(f) => {
                    if !(expect_denial && f.class == Class::AccessDenied) {
                        self.inner.counters.sts_error(f.class);
                    }
                    if !f.class.is_retryable() || attempt >= max_attempts {
                        return Err(f);
                    }
                    let delay = self.inner.retry_backoff.delay(attempt);
                    debug!(attempt, code = %f.code, delay = ?delay, "STS call failed; retrying");
                    self.inner.sleep.sleep(delay).await;
                }
            }
        }
    }

    /// Runs `task`, which makes up to `calls` STS calls, with that many
    /// tokens of the STS budget taken at once beforehand (waiting up to a
    /// quarter of a second); what it leaves unused goes back. Tasks sharing
    /// a spent budget then finish one after the other instead of each
    /// spending tokens on a part of their calls and starting over.
    pub(crate) async fn with_budget<T, F>(&self, calls: u32, task: F) -> Result<T, Failure>
    where
        F: Future<Output = T>,
    {
        let Some(budget) = &self.inner.budget else {
            return Ok(task.await);
        };
        let taken = self.take_budget(calls).await?;
        let prepaid = std::cell::Cell::new(taken);
        let (out, left) = PREPAID
            .scope(prepaid, async {
                let out = task.await;
                (out, PREPAID.with(std::cell::Cell::get))
            })
            .await;
        budget.give_back(left);
        Ok(out)
    }

    /// A token of the STS budget (one taken beforehand by
    /// [`with_budget`](Self::with_budget) first), waiting up to a quarter
    /// of a second.
    async fn spend_budget(&self) -> Result<(), Failure> {
        if self.inner.budget.is_none() {
            return Ok(());
        }
        let prepaid = PREPAID
            .try_with(|p| {
                let n = p.get();
                p.set(n.saturating_sub(1));
                n > 0
            })
            .unwrap_or(false);
        if prepaid {
            return Ok(());
        }
        self.take_budget(1).await.map(|_| ())
    }

    /// `n` tokens of the STS budget at once, waiting up to a quarter of a second.
    async fn take_budget(&self, n: u32) -> Result<u32, Failure> {
        let Some(budget) = &self.inner.budget else {
            return Ok(n);
        };
        let mut waited = false;
        loop {
            match budget.take_n(n, self.now()) {
                Ok(taken) => return Ok(taken),
                Err(wait) if !waited && wait <= Duration::from_millis(250) => {
                    waited = true;
                    self.inner.sleep.sleep(wait).await;
                }
                Err(wait) => {
                    Counters::inc(&self.inner.counters.budget_refusals);
                    return Err(Failure {
                        class: Class::BudgetExhausted,
                        code: "BudgetExhausted".into(),
                        message: format!("{}", wait.as_millis().max(1)),
                    });
                }
            }
        }
    }

    pub(crate) fn sts(&self) -> &Sts {
        &self.inner.sts
    }

    pub(crate) fn sleep(&self, d: Duration) -> Sleep {
        self.inner.sleep.sleep(d)
    }

    pub(crate) fn propagation(&self) -> (Duration, Backoff) {
        (
            self.inner.propagation_window,
            self.inner.propagation_backoff,
        )
    }

    pub(crate) fn retry_delay(&self, attempt: u32) -> Duration {
        self.inner.retry_backoff.delay(attempt)
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }
}

impl Slot {
    fn new(role: RoleArn) -> Slot {
        Slot {
            role,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            fetches: AtomicU64::new(0),
        }
    }
}
