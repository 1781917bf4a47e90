//! Runs a plan's steps against AWS: journaled, concurrent, resumable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types as ec2t;
use aws_sdk_rds::types as rdst;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::RetryConfig;
use aws_types::SdkConfig;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use crate::error::{AwsError, Error, aws_error};
use crate::journal::{StepJournal, StepKey};
use crate::plan::{AmiSource, IngressSource, Protocol, SubnetTier, ValidPlan};
use crate::scope::{JobScope, fnv1a};
use crate::steps::{Op, Step, create_steps, key, teardown_steps};

/// Tag keys written on every resource.
pub mod tags {
    /// Always `xrole`.
    pub const MANAGED_BY: &str = "xrole:managed-by";
    /// The organisation id.
    pub const ORG: &str = "xrole:org";
    /// The account link id.
    pub const LINK: &str = "xrole:link";
    /// The job id.
    pub const JOB: &str = "xrole:job";
    /// The step key that created the resource.
    pub const STEP: &str = "xrole:step";
}

/// Something worth telling a user while a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// A step begins (it was not finished in the journal).
    StepStarted {
        /// The step.
        step: StepKey,
    },
    /// A step finished.
    StepDone {
        /// The step.
        step: StepKey,
        /// What it produced.
        aws_id: String,
        /// True if an earlier run had created it and it was found by its tags
        /// or name rather than created now.
        discovered: bool,
    },
    /// A waiter polled and the resource is not there yet.
    Waiting {
        /// The step.
        step: StepKey,
        /// The state AWS reported.
        state: String,
        /// Time since the waiter began.
        elapsed: Duration,
    },
    /// A call failed in a way worth retrying (throttling, a server error, a
    /// dependency not yet gone); the step tries again after a pause.
    Retrying {
        /// The step.
        step: StepKey,
        /// Retries so far.
        attempt: u32,
        /// Why.
        reason: String,
    },
}

/// Timeouts, retry pacing and concurrency.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Steps running at once.
    pub concurrency: usize,
    /// Attempts per step when AWS throttles or fails transiently.
    pub max_attempts: u32,
    /// First retry pause; doubles each time (with jitter) up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest retry pause.
    pub max_backoff: Duration,
    /// Pause between waiter polls.
    pub poll_interval: Duration,
    /// How long an instance may take to be `running`.
    pub instance_running_timeout: Duration,
    /// How long a database may take to be `available`.
    pub db_available_timeout: Duration,
    /// How long an instance may take to be `terminated`.
    pub instance_terminated_timeout: Duration,
    /// How long a database may take to be deleted.
    pub db_deleted_timeout: Duration,
    /// How long teardown retries a `DependencyViolation` before giving up.
    pub dependency_timeout: Duration,
    /// After a step fails, how long steps already running may take to finish
    /// (and journal what they created) before they are abandoned.
    pub drain_timeout: Duration,
    /// Steps reported by [`Error::ReconciliationRequired`] that an operator has
    /// checked do not exist: they are created again.
    pub recreate: BTreeSet<StepKey>,
    /// Teardown keeps a final snapshot of each database, named
    /// `<database id>-<suffix>` (a suffix of lowercase letters, digits and
    /// single hyphens, the same on every retry of one teardown); `None`
    /// deletes without one. Default: `Some("final")`.
    pub final_snapshot: Option<String>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            concurrency: 8,
            max_attempts: 8,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            poll_interval: Duration::from_secs(5),
            instance_running_timeout: Duration::from_secs(10 * 60),
            db_available_timeout: Duration::from_secs(60 * 60),
            instance_terminated_timeout: Duration::from_secs(10 * 60),
            db_deleted_timeout: Duration::from_secs(60 * 60),
            dependency_timeout: Duration::from_secs(10 * 60),
            drain_timeout: Duration::from_secs(30),
            recreate: BTreeSet::new(),
            final_snapshot: Some("final".to_owned()),
        }
    }
}

/// What a finished job built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The VPC.
    pub vpc_id: String,
    /// Public subnets, one per availability zone, in the plan's zone order.
    pub public_subnet_ids: Vec<String>,
    /// Private subnets, same order.
    pub private_subnet_ids: Vec<String>,
    /// The internet gateway.
    pub internet_gateway_id: String,
    /// The public route table.
    pub route_table_id: String,
    /// Security groups by plan name.
    pub security_group_ids: BTreeMap<String, String>,
    /// Instances by plan name, `count` each.
    pub instance_ids: BTreeMap<String, Vec<String>>,
    /// RDS instance identifiers by plan name.
    pub db_instance_identifiers: BTreeMap<String, String>,
    /// Every step's result, by step key.
    pub steps: BTreeMap<StepKey, String>,
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Counts requests sent to AWS (every attempt and every waiter poll).
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<AtomicU64>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "xrole-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs plans in one customer account with one session.
///
/// Build it from the [`SdkConfig`] of a customer session (from
/// `xrole_assume`'s broker) so every call runs as the customer's role, never
/// as the SaaS's own identity.
pub struct Executor<J> {
    ec2: aws_sdk_ec2::Client,
    rds: aws_sdk_rds::Client,
    ssm: aws_sdk_ssm::Client,
    region: String,
    journal: J,
    scope: JobScope,
    options: ExecutorOptions,
    progress: Option<ProgressFn>,
    calls: CallCounter,
}

impl<J> std::fmt::Debug for Executor<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("region", &self.region)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Done { aws_id: String, discovered: bool },
    Reconcile,
}

fn done(aws_id: impl Into<String>) -> Outcome {
    Outcome::Done {
        aws_id: aws_id.into(),
        discovered: false,
    }
}

fn found(aws_id: impl Into<String>) -> Outcome {
    Outcome::Done {
        aws_id: aws_id.into(),
        discovered: true,
    }
}

fn missing(action: &'static str, what: &str) -> Error {
    Error::Aws {
        action: action.to_owned(),
        code: "IncompleteResponse".to_owned(),
        message: format!("the response has no {what}"),
    }
}

type Ids = Arc<HashMap<StepKey, String>>;
type StepFuture<'a> = Pin<Box<dyn Future<Output = (StepKey, Result<Outcome, Error>)> + Send + 'a>>;

impl<J: StepJournal> Executor<J> {
    /// An executor for one job, acting with `config` (a customer session).
    /// The SDK's own retries are turned off: the executor retries throttling
    /// and server errors itself, per step, looking for what a failed call may
    /// have created before calling again.
    pub fn new(config: &SdkConfig, journal: J, scope: JobScope) -> Result<Self, Error> {
        let region = config.region().ok_or(Error::MissingRegion)?.to_string();
        let calls = CallCounter::default();
        let ec2 = aws_sdk_ec2::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .interceptor(calls.clone())
            .build();
        let rds = aws_sdk_rds::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .interceptor(calls.clone())
            .build();
        let ssm = aws_sdk_ssm::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .interceptor(calls.clone())
            .build();
        Ok(Executor {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            rds: aws_sdk_rds::Client::from_conf(rds),
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
            region,
            journal,
            scope,
            options: ExecutorOptions::default(),
            progress: None,
            calls,
        })
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ExecutorOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls `f` for every [`Progress`] event (from several tasks; keep it quick).
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Requests this executor has sent to AWS so far: every attempt,
    /// discovery call and waiter poll (a cost and rate-limit metric).
    pub fn aws_calls(&self) -> u64 {
        self.calls.0.load(Ordering::Relaxed)
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The `ClientToken` of a step: stable for (job, step), at most 64 characters.
    pub fn client_token(&self, step: &StepKey) -> String {
        let job = self.scope.job().as_uuid();
        format!(
            "xrole-{}-{:016x}",
            job.simple(),
            fnv1a(&[job.as_bytes(), step.as_str().as_bytes()])
        )
    }

    fn emit(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    fn check_region(&self, plan: &ValidPlan) -> Result<(), Error> {
        let problems: Vec<_> = plan
            .plan()
            .vpc
            .availability_zones
            .iter()
            .enumerate()
            .filter(|(_, az)| !(az.starts_with(&self.region) && az.len() == self.region.len() + 1))
            .map(|(i, az)| crate::PlanProblem {
                field: format!("vpc.availability_zones[{i}]"),
                reason: format!("`{az}` is not in the session's region {}", self.region),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidPlan { problems })
        }
    }

    /// Creates the plan's resources, or resumes a job that stopped part way:
    /// steps finished in the journal are skipped, steps begun but not finished
    /// are first looked for by their tags (or deterministic names), and only
    /// then created. Independent steps run concurrently.
    pub async fn apply(&self, plan: &ValidPlan) -> Result<Environment, Error> {
        self.check_region(plan)?;
        let entries = self.journal.load(self.scope.job()).await?;
        if let Some(e) = entries.iter().find(|e| e.step.is_teardown()) {
            return Err(Error::Conflict {
                step: e.step.clone(),
                message: "this job has been torn down; provision again under a new job id".into(),
            });
        }
        let steps = create_steps(plan);
        let mut results = HashMap::new();
        let mut begun = BTreeSet::new();
        for e in entries {
            match e.aws_id {
                Some(id) => {
                    results.insert(e.step, id);
                }
                None => {
                    begun.insert(e.step);
                }
            }
        }
        let results = self
            .run_graph(&steps, results, |step, ids| {
                let uncertain = begun.contains(&step.key);
                Box::pin(async move {
                    let r = self.run_create(plan, step, ids, uncertain).await;
                    (step.key.clone(), r)
                })
            })
            .await?;
        Ok(environment(plan, results))
    }

    /// Deletes everything the job created, in reverse dependency order,
    /// waiting for instances and databases to be gone and retrying
    /// `DependencyViolation` with backoff. Resumable: finished deletions are
    /// journaled under `teardown/<step>` and skipped next time; resources whose
    /// create step never reported an id are looked for by tags.
    pub async fn teardown(&self, plan: &ValidPlan) -> Result<(), Error> {
        self.check_region(plan)?;
        let entries = self.journal.load(self.scope.job()).await?;
        let creates = create_steps(plan);
        let mut resolved: HashMap<StepKey, String> = HashMap::new();
        let mut done = HashMap::new();
        let mut begun = Vec::new();
        for e in entries {
            match (e.step.is_teardown(), e.aws_id) {
                (true, Some(id)) => {
                    done.insert(e.step, id);
                }
                (true, None) => {}
                (false, Some(id)) => {
                    resolved.insert(e.step, id);
                }
                (false, None) => begun.push(e.step),
            }
        }
        // Resources whose create call may have happened: find them by tags.
        // Attachments and associations need the ids of what they join, so
        // they go last.
        let (assocs, others): (Vec<&Step>, Vec<&Step>) = creates
            .iter()
            .filter(|s| s.op.has_teardown() && begun.contains(&s.key))
            .partition(|s| matches!(s.op, Op::Associate { .. } | Op::AttachGateway));
        for batch in [others, assocs] {
            let ids: Ids = Arc::new(resolved.clone());
            let found = futures::future::try_join_all(batch.into_iter().map(|s| {
                let ids = ids.clone();
                async move {
                    self.with_retries(&s.key, |_| self.discover(plan, s, &ids))
                        .await
                        .map(|id| (s, id))
                }
            }))
            .await?;
            for (s, id) in found {
                if let Some(id) = id {
                    self.journal
                        .record_result(self.scope.job(), &s.key, &id)
                        .await?;
                    resolved.insert(s.key.clone(), id);
                }
            }
        }
        let resolved = Arc::new(resolved);
        let steps = teardown_steps(plan);
        self.run_graph(&steps, done, |step, _| {
            let resolved = resolved.clone();
            Box::pin(async move {
                let r = self.run_teardown(plan, step, &resolved).await;
                (step.key.clone(), r)
            })
        })
        .await?;
        Ok(())
    }

    /// Runs `steps` (a topologically sorted graph), starting each once its
    /// dependencies have results, up to `concurrency` at once. At the first
    /// error it starts nothing more, gives running steps `drain_timeout` to
    /// finish, and returns the error.
    async fn run_graph<'a, F>(
        &'a self,
        steps: &'a [Step],
        mut results: HashMap<StepKey, String>,
        start: F,
    ) -> Result<HashMap<StepKey, String>, Error>
    where
        F: Fn(&'a Step, Ids) -> StepFuture<'a>,
    {
        let mut waiting: Vec<&Step> = steps
            .iter()
            .filter(|s| !results.contains_key(&s.key))
            .collect();
        let mut running = FuturesUnordered::new();
        let mut unresolved = Vec::new();
        loop {
            let mut i = 0;
            while i < waiting.len() && running.len() < self.options.concurrency.max(1) {
                if waiting[i].deps.iter().all(|d| results.contains_key(d)) {
                    let step = waiting.remove(i);
                    running.push(start(step, Arc::new(results.clone())));
                } else {
                    i += 1;
                }
            }
            let Some((key, outcome)) = running.next().await else {
                break;
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    // Let calls already sent finish and journal their ids, so
                    // the next run has less to look for; waiters are cut short.
                    let grace = self.options.drain_timeout;
                    let _ = tokio::time::timeout(grace, async {
                        while running.next().await.is_some() {}
                    })
                    .await;
                    return Err(e);
                }
            };
            match outcome {
                Outcome::Done { aws_id, .. } => {
                    results.insert(key, aws_id);
                }
                Outcome::Reconcile => unresolved.push(key),
            }
        }
        if !unresolved.is_empty() {
            return Err(Error::ReconciliationRequired { steps: unresolved });
        }
        Ok(results)
    }

    /// Retries `f` on throttling and transient failures with jittered
    /// exponential backoff. `f` is told whether an earlier attempt may have
    /// reached AWS (after a server error or timeout), so creates look first.
    async fn with_retries<T, F, Fut>(&self, step: &StepKey, mut f: F) -> Result<T, Error>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        let mut uncertain = false;
        loop {
            match f(uncertain).await {
                Err(e @ (Error::Throttled { .. } | Error::Transient { .. }))
                    if attempt + 1 < self.options.max_attempts =>
                {
                    uncertain |= matches!(e, Error::Transient { .. });
                    attempt += 1;
                    self.emit(Progress::Retrying {
                        step: step.clone(),
                        attempt,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                r => return r,
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .options
            .base_backoff
            .saturating_mul(1 << attempt.min(16));
        let cap = exp.min(self.options.max_backoff);
        // Full jitter in [cap/2, cap].
        let r = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
        cap.mul_f64(0.5 + r / 2.0)
    }

    async fn run_create(
        &self,
        plan: &ValidPlan,
        step: &Step,
        ids: Ids,
        begun: bool,
    ) -> Result<Outcome, Error> {
        let job = self.scope.job();
        if !begun {
            self.journal.record_intent(job, &step.key).await?;
        }
        self.emit(Progress::StepStarted {
            step: step.key.clone(),
        });
        let outcome = self
            .with_retries(&step.key, |retry| {
                self.create(plan, step, &ids, begun, retry)
            })
            .await?;
        if let Outcome::Done { aws_id, discovered } = &outcome {
            self.journal.record_result(job, &step.key, aws_id).await?;
            self.emit(Progress::StepDone {
                step: step.key.clone(),
                aws_id: aws_id.clone(),
                discovered: *discovered,
            });
        }
        Ok(outcome)
    }

    // ---- naming and tags ----

    fn resource_name(&self, plan: &ValidPlan, key: &StepKey) -> String {
        format!("{}-{}", plan.plan().name, key.as_str().replace('/', "-"))
    }

    /// `<env>-<name>-<8 hex of the job id>`: unique per job, valid for RDS.
    /// The final snapshot's identifier for database `id`, if teardown keeps one.
    fn final_snapshot_id(&self, id: &str) -> Result<Option<String>, Error> {
        let Some(suffix) = &self.options.final_snapshot else {
            return Ok(None);
        };
        let snapshot = format!("{id}-{suffix}");
        let valid = !suffix.is_empty()
            && snapshot.len() <= 255
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !snapshot.contains("--")
            && !snapshot.ends_with('-');
        if !valid {
            return Err(Error::InvalidPlan {
                problems: vec![crate::PlanProblem {
                    field: "final_snapshot".to_owned(),
                    reason: format!("{snapshot:?} is not a valid RDS snapshot identifier"),
                }],
            });
        }
        Ok(Some(snapshot))
    }

    /// Turns off deletion protection of database `id`, now (teardown only).
    async fn lift_deletion_protection(&self, id: &str) -> Result<(), Error> {
        self.rds
            .modify_db_instance()
            .db_instance_identifier(id)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| aws_error("rds:ModifyDBInstance", e))?;
        Ok(())
    }

    fn rds_name(&self, plan: &ValidPlan, name: &str) -> String {
        let job = self.scope.job().as_uuid();
        // The customer's role allows RDS writes only on `xrole-*` names
        // (cloudformation/xrole-role.yaml): RDS has no create-only tag condition.
        format!(
            "xrole-{}-{}-{:08x}",
            plan.plan().name,
            name,
            fnv1a(&[job.as_bytes()]) as u32
        )
    }

    fn tag_pairs(&self, plan: &ValidPlan, key: &StepKey) -> Vec<(&'static str, String)> {
        vec![
            (tags::MANAGED_BY, "xrole".to_owned()),
            (tags::ORG, self.scope.org().to_owned()),
            (tags::LINK, self.scope.link().to_owned()),
            (tags::JOB, self.scope.job().to_string()),
            (tags::STEP, key.to_string()),
            ("Name", self.resource_name(plan, key)),
        ]
    }

    fn ec2_tags(
        &self,
        plan: &ValidPlan,
        key: &StepKey,
        rt: ec2t::ResourceType,
    ) -> ec2t::TagSpecification {
        let tags = self
            .tag_pairs(plan, key)
            .into_iter()
            .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
            .collect();
        ec2t::TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags))
            .build()
    }

    fn rds_tags(&self, plan: &ValidPlan, key: &StepKey) -> Vec<rdst::Tag> {
        self.tag_pairs(plan, key)
            .into_iter()
            .map(|(k, v)| rdst::Tag::builder().key(k).value(v).build())
            .collect()
    }

    fn step_filters(&self, key: &StepKey) -> Vec<ec2t::Filter> {
        vec![
            ec2t::Filter::builder()
                .name(format!("tag:{}", tags::JOB))
                .values(self.scope.job().to_string())
                .build(),
            ec2t::Filter::builder()
                .name(format!("tag:{}", tags::STEP))
                .values(key.to_string())
                .build(),
        ]
    }

    fn one(&self, key: &StepKey, mut found: Vec<String>) -> Result<Option<String>, Error> {
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::Conflict {
                step: key.clone(),
                message: format!(
                    "several resources carry this step's tags: {}",
                    found.join(", ")
                ),
            }),
        }
    }

    fn id<'i>(&self, ids: &'i HashMap<StepKey, String>, key: &StepKey) -> Result<&'i str, Error> {
        ids.get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::Conflict {
                step: key.clone(),
                message: "a dependency's id is missing from the journal".into(),
            })
    }

    // ---- discovery ----

    /// Finds the resource an earlier run may have created for `step`, by its
    /// `xrole:job` and `xrole:step` tags (EC2) or deterministic name (RDS).
    async fn discover(
        &self,
        plan: &ValidPlan,
        step: &Step,
        ids: &HashMap<StepKey, String>,
    ) -> Result<Option<String>, Error> {
        let k = &step.key;
        let f = || Some(self.step_filters(k));
        match step.op {
            Op::Vpc => {
                let out = self
                    .ec2
                    .describe_vpcs()
                    .set_filters(f())
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeVpcs", e))?;
                self.one(
                    k,
                    out.vpcs()
                        .iter()
                        .filter_map(|v| v.vpc_id().map(str::to_owned))
                        .collect(),
                )
            }
            Op::Subnet { .. } => {
                let out = self
                    .ec2
                    .describe_subnets()
                    .set_filters(f())
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeSubnets", e))?;
                self.one(
                    k,
                    out.subnets()
                        .iter()
                        .filter_map(|v| v.subnet_id().map(str::to_owned))
                        .collect(),
                )
            }
            Op::InternetGateway => {
                let out = self
                    .ec2
                    .describe_internet_gateways()
                    .set_filters(f())
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeInternetGateways", e))?;
                self.one(
                    k,
                    out.internet_gateways()
                        .iter()
                        .filter_map(|v| v.internet_gateway_id().map(str::to_owned))
                        .collect(),
                )
            }
            Op::RouteTable => {
                let out = self
                    .ec2
                    .describe_route_tables()
                    .set_filters(f())
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeRouteTables", e))?;
                self.one(
                    k,
                    out.route_tables()
                        .iter()
                        .filter_map(|v| v.route_table_id().map(str::to_owned))
                        .collect(),
                )
            }
            Op::SecurityGroup { .. } => {
                let out = self
                    .ec2
                    .describe_security_groups()
                    .set_filters(f())
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeSecurityGroups", e))?;
                self.one(
                    k,
                    out.security_groups()
                        .iter()
                        .filter_map(|v| v.group_id().map(str::to_owned))
                        .collect(),
                )
            }
            Op::Instance { .. } => {
                let mut filters = self.step_filters(k);
                filters.push(
                    ec2t::Filter::builder()
                        .name("instance-state-name")
                        .set_values(Some(
                            ["pending", "running", "stopping", "stopped"]
                                .map(String::from)
                                .to_vec(),
                        ))
                        .build(),
                );
                let out = self
                    .ec2
                    .describe_instances()
                    .set_filters(Some(filters))
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeInstances", e))?;
                let found = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(|i| i.instance_id().map(str::to_owned))
                    .collect();
                self.one(k, found)
            }
            Op::AttachGateway => {
                let (Some(igw), Some(vpc)) = (ids.get(&key::igw()), ids.get(&key::vpc())) else {
                    return Ok(None);
                };
                let out = self
                    .ec2
                    .describe_internet_gateways()
                    .internet_gateway_ids(igw)
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeInternetGateways", e))?;
                let attached = out
                    .internet_gateways()
                    .iter()
                    .flat_map(|g| g.attachments())
                    .any(|a| a.vpc_id() == Some(vpc.as_str()));
                Ok(attached.then(|| vpc.clone()))
            }
            Op::Associate { zone } => {
                let (Some(rtb), Some(subnet)) = (
                    ids.get(&key::route_table()),
                    ids.get(&key::subnet(SubnetTier::Public, zone)),
                ) else {
                    return Ok(None);
                };
                self.find_association(rtb, subnet).await
            }
            Op::DbSubnetGroup { db } => {
                let name = self.rds_name(plan, &plan.plan().databases[db].name);
                match self
                    .rds
                    .describe_db_subnet_groups()
                    .db_subnet_group_name(&name)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.db_subnet_groups().first().map(|_| name)),
                    Err(e) => {
                        let e = aws_error("rds:DescribeDBSubnetGroups", e);
                        if e.is("DBSubnetGroupNotFoundFault") {
                            Ok(None)
                        } else {
                            Err(e.into())
                        }
                    }
                }
            }
            Op::Database { db } => {
                let name = self.rds_name(plan, &plan.plan().databases[db].name);
                Ok(self.describe_db(&name).await?.map(|_| name))
            }
            // Steps without a resource of their own: running them again is safe.
            _ => Ok(None),
        }
    }

    async fn find_association(&self, rtb: &str, subnet: &str) -> Result<Option<String>, Error> {
        let out = self
            .ec2
            .describe_route_tables()
            .route_table_ids(rtb)
            .send()
            .await
            .map_err(|e| aws_error("ec2:DescribeRouteTables", e))?;
        Ok(out
            .route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .find(|a| a.subnet_id() == Some(subnet))
            .and_then(|a| a.route_table_association_id().map(str::to_owned)))
    }

    async fn describe_db(&self, identifier: &str) -> Result<Option<rdst::DbInstance>, Error> {
        match self
            .rds
            .describe_db_instances()
            .db_instance_identifier(identifier)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_instances().first().cloned()),
            Err(e) => {
                let e = aws_error("rds:DescribeDBInstances", e);
                if e.is("DBInstanceNotFound") || e.is("DBInstanceNotFoundFault") {
                    Ok(None)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// An existing database with our name is adopted only if it carries our job tag.
    fn check_db_owner(&self, step: &StepKey, db: &rdst::DbInstance) -> Result<(), Error> {
        let job = self.scope.job().to_string();
        let ours = db
            .tag_list()
            .iter()
            .any(|t| t.key() == Some(tags::JOB) && t.value() == Some(job.as_str()));
        if ours {
            Ok(())
        } else {
            Err(Error::Conflict {
                step: step.clone(),
                message: format!(
                    "database {} exists but belongs to another job",
                    db.db_instance_identifier().unwrap_or("?")
                ),
            })
        }
    }

    // ---- create steps ----

    /// Runs one create step. `begun`: an earlier run recorded the intent and
    /// never the result. `retry`: an earlier attempt in this run failed in a
    /// way that does not prove the call had no effect (server error, timeout).
    async fn create(
        &self,
        plan: &ValidPlan,
        step: &Step,
        ids: &HashMap<StepKey, String>,
        begun: bool,
        retry: bool,
    ) -> Result<Outcome, Error> {
        let p = plan.plan();
        let k = &step.key;
        // A step that may have run before: look for its resource first.
        if begun || retry {
            if let Some(id) = self.discover(plan, step, ids).await? {
                return Ok(found(id));
            }
            // An earlier run stopped at an unknown point and the create call
            // has no ClientToken or unique name: creating again could make a
            // twin nobody tracks. An operator decides. (Within one run, a
            // server error answered the call, so it is retried.)
            if begun
                && matches!(step.op, Op::Vpc | Op::InternetGateway)
                && !self.options.recreate.contains(k)
            {
                return Ok(Outcome::Reconcile);
            }
        }
        match step.op {
            Op::Vpc => {
                let out = self
                    .ec2
                    .create_vpc()
                    .cidr_block(p.vpc.cidr.to_string())
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::Vpc))
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:CreateVpc", e))?;
                Ok(done(
                    out.vpc()
                        .and_then(|v| v.vpc_id())
                        .ok_or_else(|| missing("ec2:CreateVpc", "VpcId"))?,
                ))
            }
            Op::DnsSupport | Op::DnsHostnames => {
                let vpc = self.id(ids, &key::vpc())?;
                let on = ec2t::AttributeBooleanValue::builder().value(true).build();
                let req = self.ec2.modify_vpc_attribute().vpc_id(vpc);
                let req = if step.op == Op::DnsSupport {
                    req.enable_dns_support(on)
                } else {
                    req.enable_dns_hostnames(on)
                };
                req.send()
                    .await
                    .map_err(|e| aws_error("ec2:ModifyVpcAttribute", e))?;
                Ok(done("enabled"))
            }
            Op::Subnet { tier, zone } => {
                let vpc = self.id(ids, &key::vpc())?;
                let cidr = match tier {
                    SubnetTier::Public => plan.public_subnets()[zone],
                    SubnetTier::Private => plan.private_subnets()[zone],
                };
                let r = self
                    .ec2
                    .create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(cidr.to_string())
                    .availability_zone(&p.vpc.availability_zones[zone])
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::Subnet))
                    .send()
                    .await;
                match r {
                    Ok(out) => Ok(done(
                        out.subnet()
                            .and_then(|s| s.subnet_id())
                            .ok_or_else(|| missing("ec2:CreateSubnet", "SubnetId"))?,
                    )),
                    Err(e) => {
                        let e = aws_error("ec2:CreateSubnet", e);
                        if !e.is("InvalidSubnet.Conflict") {
                            return Err(e.into());
                        }
                        // The block is taken: ours from an earlier attempt, or someone else's.
                        match self.discover(plan, step, ids).await? {
                            Some(id) => Ok(found(id)),
                            None => Err(Error::Conflict {
                                step: k.clone(),
                                message: format!(
                                    "{cidr} is taken by a subnet this job did not create: {}",
                                    e.message
                                ),
                            }),
                        }
                    }
                }
            }
            Op::InternetGateway => {
                let out = self
                    .ec2
                    .create_internet_gateway()
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::InternetGateway))
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:CreateInternetGateway", e))?;
                Ok(done(
                    out.internet_gateway()
                        .and_then(|g| g.internet_gateway_id())
                        .ok_or_else(|| missing("ec2:CreateInternetGateway", "InternetGatewayId"))?,
                ))
            }
            Op::AttachGateway => {
                let (igw, vpc) = (self.id(ids, &key::igw())?, self.id(ids, &key::vpc())?);
                match self
                    .ec2
                    .attach_internet_gateway()
                    .internet_gateway_id(igw)
                    .vpc_id(vpc)
                    .send()
                    .await
                {
                    Ok(_) => Ok(done(vpc)),
                    Err(e) => {
                        let e = aws_error("ec2:AttachInternetGateway", e);
                        if e.is("Resource.AlreadyAssociated") {
                            Ok(found(vpc))
                        } else {
                            Err(e.into())
                        }
                    }
                }
            }
            Op::RouteTable => {
                let vpc = self.id(ids, &key::vpc())?;
                let out = self
                    .ec2
                    .create_route_table()
                    .vpc_id(vpc)
                    .client_token(self.client_token(k))
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::RouteTable))
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:CreateRouteTable", e))?;
                Ok(done(
                    out.route_table()
                        .and_then(|t| t.route_table_id())
                        .ok_or_else(|| missing("ec2:CreateRouteTable", "RouteTableId"))?,
                ))
            }
            Op::DefaultRoute => {
                let (rtb, igw) = (
                    self.id(ids, &key::route_table())?,
                    self.id(ids, &key::igw())?,
                );
                let r = self
                    .ec2
                    .create_route()
                    .route_table_id(rtb)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(igw)
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(done("0.0.0.0/0")),
                    Err(e) => {
                        let e = aws_error("ec2:CreateRoute", e);
                        if e.is("RouteAlreadyExists") {
                            Ok(found("0.0.0.0/0"))
                        } else {
                            Err(e.into())
                        }
                    }
                }
            }
            Op::Associate { zone } => {
                let rtb = self.id(ids, &key::route_table())?;
                let subnet = self.id(ids, &key::subnet(SubnetTier::Public, zone))?;
                match self
                    .ec2
                    .associate_route_table()
                    .route_table_id(rtb)
                    .subnet_id(subnet)
                    .send()
                    .await
                {
                    Ok(out) => {
                        Ok(done(out.association_id().ok_or_else(|| {
                            missing("ec2:AssociateRouteTable", "AssociationId")
                        })?))
                    }
                    Err(e) => {
                        let e = aws_error("ec2:AssociateRouteTable", e);
                        if !e.is("Resource.AlreadyAssociated") {
                            return Err(e.into());
                        }
                        match self.find_association(rtb, subnet).await? {
                            Some(id) => Ok(found(id)),
                            None => Err(Error::Conflict {
                                step: k.clone(),
                                message: format!(
                                    "subnet {subnet} is associated with another route table"
                                ),
                            }),
                        }
                    }
                }
            }
            Op::SecurityGroup { group } => {
                let sg = &p.vpc.security_groups[group];
                let vpc = self.id(ids, &key::vpc())?;
                let r = self
                    .ec2
                    .create_security_group()
                    .group_name(format!("{}-{}", p.name, sg.name))
                    .description(&sg.description)
                    .vpc_id(vpc)
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::SecurityGroup))
                    .send()
                    .await;
                match r {
                    Ok(out) => {
                        Ok(done(out.group_id().ok_or_else(|| {
                            missing("ec2:CreateSecurityGroup", "GroupId")
                        })?))
                    }
                    Err(e) => {
                        let e = aws_error("ec2:CreateSecurityGroup", e);
                        if !e.is("InvalidGroup.Duplicate") {
                            return Err(e.into());
                        }
                        match self.discover(plan, step, ids).await? {
                            Some(id) => Ok(found(id)),
                            None => Err(Error::Conflict {
                                step: k.clone(),
                                message: e.message,
                            }),
                        }
                    }
                }
            }
            Op::Ingress { group } => {
                let sg = &p.vpc.security_groups[group];
                let group_id = self.id(ids, &key::sg(&sg.name))?;
                let mut perms = Vec::new();
                for rule in &sg.ingress {
                    let b = ec2t::IpPermission::builder();
                    let b = match rule.protocol {
                        Protocol::Tcp => b
                            .ip_protocol("tcp")
                            .from_port(i32::from(rule.from_port))
                            .to_port(i32::from(rule.to_port)),
                        Protocol::Udp => b
                            .ip_protocol("udp")
                            .from_port(i32::from(rule.from_port))
                            .to_port(i32::from(rule.to_port)),
                        Protocol::Icmp => b.ip_protocol("icmp").from_port(-1).to_port(-1),
                        Protocol::All => b.ip_protocol("-1"),
                    };
                    let b = match &rule.source {
                        IngressSource::Cidr(c) => {
                            b.ip_ranges(ec2t::IpRange::builder().cidr_ip(c.to_string()).build())
                        }
                        IngressSource::SecurityGroup(other) => b.user_id_group_pairs(
                            ec2t::UserIdGroupPair::builder()
                                .group_id(self.id(ids, &key::sg(other))?)
                                .build(),
                        ),
                    };
                    perms.push(b.build());
                }
                let r = self
                    .ec2
                    .authorize_security_group_ingress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(perms))
                    .tag_specifications(self.ec2_tags(
                        plan,
                        k,
                        ec2t::ResourceType::SecurityGroupRule,
                    ))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(done("authorized")),
                    Err(e) => {
                        // One call carries every rule, so a duplicate means all are there.
                        let e = aws_error("ec2:AuthorizeSecurityGroupIngress", e);
                        if e.is("InvalidPermission.Duplicate") {
                            Ok(found("authorized"))
                        } else {
                            Err(e.into())
                        }
                    }
                }
            }
            Op::Image { instance } => {
                let inst = &p.instances[instance];
                let ami = match &inst.ami {
                    AmiSource::Id(id) => id.clone(),
                    AmiSource::SsmParameter(name) => {
                        let out = self
                            .ssm
                            .get_parameter()
                            .name(name)
                            .send()
                            .await
                            .map_err(|e| aws_error("ssm:GetParameter", e))?;
                        out.parameter()
                            .and_then(|p| p.value())
                            .ok_or_else(|| missing("ssm:GetParameter", "Value"))?
                            .to_owned()
                    }
                };
                // The root device name varies by image; encrypting the root
                // volume needs it exactly, or AWS would add a second volume.
                let out = self
                    .ec2
                    .describe_images()
                    .image_ids(&ami)
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:DescribeImages", e))?;
                let image = out.images().first();
                let root = image
                    .and_then(|i| i.root_device_name())
                    .ok_or_else(|| Error::Aws {
                        action: "ec2:DescribeImages".into(),
                        code: "InvalidAMIID.NotFound".into(),
                        message: format!("image {ami} not found or has no root device"),
                    })?;
                let size = image
                    .into_iter()
                    .flat_map(|i| i.block_device_mappings())
                    .find(|m| m.device_name() == Some(root))
                    .and_then(|m| m.ebs())
                    .and_then(|e| e.volume_size())
                    .unwrap_or(8);
                // Journaled as `<ami> <root device> <root size GiB>`, so a
                // resumed job launches exactly what it resolved first.
                Ok(done(format!("{ami} {root} {size}")))
            }
            Op::Instance { instance, n } => {
                let inst = &p.instances[instance];
                let image = self.id(ids, &key::image(&inst.name))?;
                let mut parts = image.split(' ');
                let (ami, root) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or("/dev/xvda"),
                );
                let image_size = parts.next().and_then(|s| s.parse::<i32>().ok());
                let zone = n as usize % p.vpc.availability_zones.len();
                let subnet = self.id(ids, &key::subnet(inst.subnet_tier, zone))?;
                let groups = inst
                    .security_groups
                    .iter()
                    .map(|g| self.id(ids, &key::sg(g)).map(str::to_owned))
                    .collect::<Result<Vec<_>, _>>()?;
                let ebs = ec2t::EbsBlockDevice::builder()
                    .encrypted(true)
                    .delete_on_termination(true)
                    .volume_type(ec2t::VolumeType::Gp3)
                    .set_volume_size(inst.root_volume_gib.or(image_size))
                    .build();
                let out = self
                    .ec2
                    .run_instances()
                    .image_id(ami)
                    .instance_type(ec2t::InstanceType::from(inst.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .subnet_id(subnet)
                    .set_security_group_ids(Some(groups))
                    .client_token(self.client_token(k))
                    .metadata_options(
                        ec2t::InstanceMetadataOptionsRequest::builder()
                            .http_tokens(ec2t::HttpTokensState::Required)
                            .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                            .build(),
                    )
                    .block_device_mappings(
                        ec2t::BlockDeviceMapping::builder()
                            .device_name(root)
                            .ebs(ebs)
                            .build(),
                    )
                    .set_user_data(
                        inst.user_data
                            .as_ref()
                            .map(|u| aws_smithy_types::base64::encode(u.as_bytes())),
                    )
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::Instance))
                    .tag_specifications(self.ec2_tags(plan, k, ec2t::ResourceType::Volume))
                    .send()
                    .await
                    .map_err(|e| aws_error("ec2:RunInstances", e))?;
                Ok(done(
                    out.instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .ok_or_else(|| missing("ec2:RunInstances", "InstanceId"))?,
                ))
            }
            Op::InstanceRunning { instance, n } => {
                let id = self.id(ids, &key::instance(&p.instances[instance].name, n))?;
                self.wait_instance(
                    k,
                    id,
                    "instance running",
                    self.options.instance_running_timeout,
                )
                .await?;
                Ok(done("running"))
            }
            Op::DbSubnetGroup { db } => {
                let d = &p.databases[db];
                let name = self.rds_name(plan, &d.name);
                let subnets = (0..p.vpc.availability_zones.len())
                    .map(|z| {
                        self.id(ids, &key::subnet(SubnetTier::Private, z))
                            .map(str::to_owned)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let r = self
                    .rds
                    .create_db_subnet_group()
                    .db_subnet_group_name(&name)
                    .db_subnet_group_description(format!("xrole {} {}", p.name, d.name))
                    .set_subnet_ids(Some(subnets))
                    .set_tags(Some(self.rds_tags(plan, k)))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(done(name)),
                    Err(e) => {
                        // The name embeds the job id: an existing group is this job's.
                        let e = aws_error("rds:CreateDBSubnetGroup", e);
                        if e.is("DBSubnetGroupAlreadyExists")
                            || e.is("DBSubnetGroupAlreadyExistsFault")
                        {
                            Ok(found(name))
                        } else {
                            Err(e.into())
                        }
                    }
                }
            }
            Op::Database { db } => {
                let d = &p.databases[db];
                let name = self.rds_name(plan, &d.name);
                let groups = d
                    .security_groups
                    .iter()
                    .map(|g| self.id(ids, &key::sg(g)).map(str::to_owned))
                    .collect::<Result<Vec<_>, _>>()?;
                let r = self
                    .rds
                    .create_db_instance()
                    .db_instance_identifier(&name)
                    .engine(d.engine.as_str())
                    .engine_version(&d.engine_version)
                    .db_instance_class(&d.instance_class)
                    .allocated_storage(d.allocated_storage_gib)
                    .master_username(&d.master_username)
                    .manage_master_user_password(true)
                    .storage_encrypted(true)
                    .publicly_accessible(false)
                    .multi_az(d.multi_az)
                    .deletion_protection(d.deletion_protection)
                    .copy_tags_to_snapshot(true)
                    .db_subnet_group_name(self.id(ids, &key::db_subnet_group(&d.name))?)
                    .set_vpc_security_group_ids(Some(groups))
                    .set_tags(Some(self.rds_tags(plan, k)))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(done(name)),
                    Err(e) => {
                        let e = aws_error("rds:CreateDBInstance", e);
                        if !(e.is("DBInstanceAlreadyExists")
                            || e.is("DBInstanceAlreadyExistsFault"))
                        {
                            return Err(e.into());
                        }
                        let existing = self
                            .describe_db(&name)
                            .await?
                            .ok_or_else(|| Error::from(e))?;
                        self.check_db_owner(k, &existing)?;
                        Ok(found(name))
                    }
                }
            }
            Op::DatabaseAvailable { db } => {
                let id = self.id(ids, &key::database(&p.databases[db].name))?;
                self.wait_db(k, id, true, self.options.db_available_timeout)
                    .await?;
                Ok(done("available"))
            }
        }
    }

    async fn wait_instance(
        &self,
        step: &StepKey,
        id: &str,
        what: &'static str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let terminated = what == "instance terminated";
        loop {
            let r = self.ec2.describe_instances().instance_ids(id).send().await;
            let state = match r {
                Ok(out) => out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .find_map(|i| i.state().and_then(|s| s.name()).cloned()),
                Err(e) => {
                    let e = aws_error("ec2:DescribeInstances", e);
                    if terminated && e.is("InvalidInstanceID.NotFound") {
                        return Ok(());
                    }
                    // Just launched: EC2 may not list it yet.
                    if !e.is("InvalidInstanceID.NotFound") {
                        return Err(e.into());
                    }
                    None
                }
            };
            use ec2t::InstanceStateName as S;
            match (&state, terminated) {
                (Some(S::Running), false) | (Some(S::Terminated), true) => return Ok(()),
                (None, true) => return Ok(()),
                (Some(S::ShuttingDown | S::Terminated | S::Stopping | S::Stopped), false) => {
                    return Err(Error::ResourceFailed {
                        step: step.clone(),
                        state: state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    });
                }
                _ => {}
            }
            let last =
                state.map_or_else(|| "not visible yet".to_owned(), |s| s.as_str().to_owned());
            self.poll_pause(step, start, timeout, what, last).await?;
        }
    }

    /// Waits for `available` (or, with `available == false`, for the database to be gone).
    async fn wait_db(
        &self,
        step: &StepKey,
        identifier: &str,
        available: bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let what = if available {
            "database available"
        } else {
            "database deleted"
        };
        loop {
            let status = self
                .describe_db(identifier)
                .await?
                .and_then(|d| d.db_instance_status().map(str::to_owned));
            match (status.as_deref(), available) {
                (Some("available"), true) | (None, false) => return Ok(()),
                (
                    Some(
                        s @ ("failed"
                        | "storage-full"
                        | "inaccessible-encryption-credentials"
                        | "restore-error"
                        | "stopped"
                        | "deleting"),
                    ),
                    true,
                )
                | (Some(s @ "incompatible-parameters" | s @ "incompatible-network"), true) => {
                    return Err(Error::ResourceFailed {
                        step: step.clone(),
                        state: s.to_owned(),
                    });
                }
                (None, true) => {
                    return Err(Error::ResourceFailed {
                        step: step.clone(),
                        state: "not found".to_owned(),
                    });
                }
                _ => {}
            }
            self.poll_pause(step, start, timeout, what, status.unwrap_or_default())
                .await?;
        }
    }

    async fn poll_pause(
        &self,
        step: &StepKey,
        start: Instant,
        timeout: Duration,
        what: &'static str,
        state: String,
    ) -> Result<(), Error> {
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(Error::Timeout {
                step: step.clone(),
                waiting_for: what,
                after: timeout,
                last_state: state,
            });
        }
        self.emit(Progress::Waiting {
            step: step.clone(),
            state,
            elapsed,
        });
        tokio::time::sleep(self.options.poll_interval.min(timeout - elapsed)).await;
        Ok(())
    }

    // ---- teardown steps ----

    async fn run_teardown(
        &self,
        plan: &ValidPlan,
        step: &Step,
        resolved: &HashMap<StepKey, String>,
    ) -> Result<Outcome, Error> {
        let create_key = key_of_create(&step.key);
        let Some(id) = resolved.get(&create_key) else {
            // Never created (or already gone before the journal heard of it).
            return Ok(done("absent"));
        };
        let job = self.scope.job();
        self.journal.record_intent(job, &step.key).await?;
        self.emit(Progress::StepStarted {
            step: step.key.clone(),
        });
        self.with_retries(&step.key, |_| self.delete(plan, step, id, resolved))
            .await?;
        self.journal
            .record_result(job, &step.key, "deleted")
            .await?;
        self.emit(Progress::StepDone {
            step: step.key.clone(),
            aws_id: id.clone(),
            discovered: false,
        });
        Ok(done("deleted"))
    }

    async fn delete(
        &self,
        _plan: &ValidPlan,
        step: &Step,
        id: &str,
        resolved: &HashMap<StepKey, String>,
    ) -> Result<(), Error> {
        let k = &step.key;
        let gone = |e: &AwsError, codes: &[&str]| codes.iter().any(|c| e.is(c));
        match step.op {
            Op::Instance { .. } => {
                if let Err(e) = self.ec2.terminate_instances().instance_ids(id).send().await {
                    let e = aws_error("ec2:TerminateInstances", e);
                    if !gone(&e, &["InvalidInstanceID.NotFound"]) {
                        return Err(e.into());
                    }
                }
                self.wait_instance(
                    k,
                    id,
                    "instance terminated",
                    self.options.instance_terminated_timeout,
                )
                .await
            }
            Op::Database { .. } => {
                let snapshot = self.final_snapshot_id(id)?;
                // The first attempt finds deletion protection on (xrole turns
                // it on at create): lifted, then deleted. Only teardown lifts it.
                let mut lifted = false;
                loop {
                    let r = self
                        .rds
                        .delete_db_instance()
                        .db_instance_identifier(id)
                        .skip_final_snapshot(snapshot.is_none())
                        .set_final_db_snapshot_identifier(snapshot.clone())
                        .delete_automated_backups(true)
                        .send()
                        .await;
                    let Err(e) = r else { break };
                    let e = aws_error("rds:DeleteDBInstance", e);
                    if e.is("InvalidParameterCombination")
                        && e.message.to_ascii_lowercase().contains("protect")
                    {
                        if lifted {
                            return Err(Error::DeletionProtected { step: k.clone() });
                        }
                        self.lift_deletion_protection(id).await?;
                        lifted = true;
                        continue;
                    }
                    // Already deleting or gone: wait below.
                    if !gone(
                        &e,
                        &[
                            "DBInstanceNotFound",
                            "DBInstanceNotFoundFault",
                            "InvalidDBInstanceState",
                            "InvalidDBInstanceStateFault",
                        ],
                    ) {
                        return Err(e.into());
                    }
                    break;
                }
                self.wait_db(k, id, false, self.options.db_deleted_timeout)
                    .await
            }
            Op::DbSubnetGroup { .. } => {
                self.until_free(
                    k,
                    "rds:DeleteDBSubnetGroup",
                    &["DBSubnetGroupNotFoundFault"],
                    move || async move {
                        self.rds
                            .delete_db_subnet_group()
                            .db_subnet_group_name(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("rds:DeleteDBSubnetGroup", e))
                    },
                )
                .await
            }
            Op::Associate { .. } => match self
                .ec2
                .disassociate_route_table()
                .association_id(id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let e = aws_error("ec2:DisassociateRouteTable", e);
                    if gone(&e, &["InvalidAssociationID.NotFound"]) {
                        Ok(())
                    } else {
                        Err(e.into())
                    }
                }
            },
            Op::RouteTable => {
                self.until_free(
                    k,
                    "ec2:DeleteRouteTable",
                    &["InvalidRouteTableID.NotFound"],
                    move || async move {
                        self.ec2
                            .delete_route_table()
                            .route_table_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DeleteRouteTable", e))
                    },
                )
                .await
            }
            Op::AttachGateway => {
                let Some(igw) = resolved.get(&key::igw()) else {
                    return Ok(());
                };
                self.until_free(
                    k,
                    "ec2:DetachInternetGateway",
                    &[
                        "Gateway.NotAttached",
                        "InvalidInternetGatewayID.NotFound",
                        "InvalidVpcID.NotFound",
                    ],
                    move || async move {
                        self.ec2
                            .detach_internet_gateway()
                            .internet_gateway_id(igw)
                            .vpc_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DetachInternetGateway", e))
                    },
                )
                .await
            }
            Op::InternetGateway => {
                self.until_free(
                    k,
                    "ec2:DeleteInternetGateway",
                    &["InvalidInternetGatewayID.NotFound"],
                    move || async move {
                        self.ec2
                            .delete_internet_gateway()
                            .internet_gateway_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DeleteInternetGateway", e))
                    },
                )
                .await
            }
            Op::SecurityGroup { .. } => {
                self.until_free(
                    k,
                    "ec2:DeleteSecurityGroup",
                    &["InvalidGroup.NotFound"],
                    move || async move {
                        self.ec2
                            .delete_security_group()
                            .group_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DeleteSecurityGroup", e))
                    },
                )
                .await
            }
            Op::Subnet { .. } => {
                self.until_free(
                    k,
                    "ec2:DeleteSubnet",
                    &["InvalidSubnetID.NotFound"],
                    move || async move {
                        self.ec2
                            .delete_subnet()
                            .subnet_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DeleteSubnet", e))
                    },
                )
                .await
            }
            Op::Vpc => {
                self.until_free(
                    k,
                    "ec2:DeleteVpc",
                    &["InvalidVpcID.NotFound"],
                    move || async move {
                        self.ec2
                            .delete_vpc()
                            .vpc_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| aws_error("ec2:DeleteVpc", e))
                    },
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// Calls `f` until it succeeds or reports the resource gone, retrying
    /// `DependencyViolation` (and RDS's "subnet group in use") with backoff
    /// for up to `dependency_timeout`: AWS releases network interfaces of
    /// deleted instances and databases some time after they are gone.
    async fn until_free<F, Fut>(
        &self,
        step: &StepKey,
        _action: &'static str,
        gone_codes: &[&str],
        mut f: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), AwsError>>,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(()) => return Ok(()),
                Err(e) if gone_codes.iter().any(|c| e.is(c)) => return Ok(()),
                Err(e) if e.is("DependencyViolation") || e.is("InvalidDBSubnetGroupStateFault") => {
                    if start.elapsed() >= self.options.dependency_timeout {
                        return Err(Error::DependencyViolation {
                            step: step.clone(),
                            message: e.message,
                        });
                    }
                    attempt += 1;
                    self.emit(Progress::Retrying {
                        step: step.clone(),
                        attempt,
                        reason: format!("{}: {}", e.code(), e.message),
                    });
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn key_of_create(teardown: &StepKey) -> StepKey {
    StepKey::from_parts(&[teardown.as_str().trim_start_matches("teardown/")])
}

fn environment(plan: &ValidPlan, results: HashMap<StepKey, String>) -> Environment {
    let p = plan.plan();
    let zones = p.vpc.availability_zones.len();
    let get = |k: &StepKey| results.get(k).cloned().unwrap_or_default();
    Environment {
        vpc_id: get(&key::vpc()),
        public_subnet_ids: (0..zones)
            .map(|z| get(&key::subnet(SubnetTier::Public, z)))
            .collect(),
        private_subnet_ids: (0..zones)
            .map(|z| get(&key::subnet(SubnetTier::Private, z)))
            .collect(),
        internet_gateway_id: get(&key::igw()),
        route_table_id: get(&key::route_table()),
        security_group_ids: p
            .vpc
            .security_groups
            .iter()
            .map(|g| (g.name.clone(), get(&key::sg(&g.name))))
            .collect(),
        instance_ids: p
            .instances
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    (0..i.count)
                        .map(|n| get(&key::instance(&i.name, n)))
                        .collect(),
                )
            })
            .collect(),
        db_instance_identifiers: p
            .databases
            .iter()
            .map(|d| (d.name.clone(), get(&key::database(&d.name))))
            .collect(),
        steps: results.into_iter().collect(),
    }
}
