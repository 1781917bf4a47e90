//! The server's side of the AWS flow: its own identity, the broker, the
//! onboarding parameters handed to customers, and link verification.
//!
//! Settings read here from the environment (next to the part of the
//! configuration in [`crate::config`]):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `XROLE_SAAS_PRINCIPAL_ARN` | the principal customers' roles trust | found with `GetCallerIdentity` at start-up |
//! | `XROLE_TEMPLATE_URL` | where CloudFormation reads `xrole-role.yaml` | `<XROLE_PUBLIC_URL>/v1/cloudformation/xrole-role.yaml` |
//! | `XROLE_STACKSET_TEMPLATE_URL` | where CloudFormation reads `xrole-stackset.yaml` (organization connections) | `<XROLE_PUBLIC_URL>/v1/cloudformation/xrole-stackset.yaml` |
//! | `XROLE_ASSUME_PROPAGATION_SECONDS` | how long verification retries AccessDenied on a new role | 120 |
//! | `XROLE_JOB_LEASE_SECONDS` | a job worker's lease; a dead worker's jobs resume after it | 60 |
//! | `XROLE_JOB_POLL_MILLISECONDS` | how often an idle worker looks for jobs | 500 |
//! | `XROLE_EXECUTOR_POLL_MILLISECONDS` | how often provisioning polls AWS waiters | 5000 |
//! | `XROLE_JOB_SESSION_WAIT_SECONDS` | how long a job waits for its link's changed role to verify before failing | 600 |
//! | `XROLE_STS_BUDGET_PER_SECOND` | STS requests per second for all tenants together (AssumeRole, GetCallerIdentity); `0` disables | 50 |
//! | `XROLE_STS_BUDGET_BURST` | STS requests at once | 100 |
//! | `XROLE_CALLBACK_SECRET_TTL_HOURS` | how long a stack's callback secret keeps serving Update and Delete after the stack's first report | 168 |

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use xrole_assume::{AwsAccountId, Broker, RoleArn, TrustPolicyCheck, VerifyOutcome};
use xrole_crypto::ExternalId;

/// Where CloudFormation's console builds quick-create links.
pub const CONSOLE_URL: &str = "https://console.aws.amazon.com/cloudformation/home";
/// The template's path on this server.
pub const TEMPLATE_PATH: &str = "/v1/cloudformation/xrole-role.yaml";
/// The StackSet template's path on this server.
pub const STACKSET_TEMPLATE_PATH: &str = "/v1/cloudformation/xrole-stackset.yaml";
/// The callback route.
pub const CALLBACK_PATH: &str = "/v1/callbacks/cloudformation";
/// How long a link waits for its stack's first report.
pub const LINK_TTL_MS: i64 = 48 * 3600 * 1000;

/// Why the AWS side cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsStartError {
    /// A setting has an invalid value.
    #[error("invalid value for {name}: {message}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `GetCallerIdentity` failed: the server has no usable AWS identity.
    #[error("cannot find the server's own AWS identity (GetCallerIdentity): {0}")]
    Identity(String),
}

/// Settings of the AWS flow.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Overrides the principal found with `GetCallerIdentity`.
    pub saas_principal_arn: Option<String>,
    /// Where the template is hosted.
    pub template_url: Option<String>,
    /// Where the StackSet template is hosted.
    pub stackset_template_url: Option<String>,
    /// Verification's AccessDenied retry window.
    pub propagation_window: Duration,
    /// A job worker's lease.
    pub lease: Duration,
    /// Idle worker poll interval.
    pub job_poll: Duration,
    /// Provisioning waiter poll interval.
    pub executor_poll: Duration,
    /// How long a job waits for its link's changed role to pass verification.
    pub session_wait: Duration,
    /// How long a callback secret serves its stack after the first report.
    pub callback_secret_ttl: Duration,
    /// STS requests per second for all tenants together (`0`: no budget).
    pub sts_budget_per_second: f64,
    /// STS requests at once.
    pub sts_budget_burst: u32,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            saas_principal_arn: None,
            template_url: None,
            stackset_template_url: None,
            propagation_window: Duration::from_secs(120),
            lease: Duration::from_secs(60),
            job_poll: Duration::from_millis(500),
            executor_poll: Duration::from_secs(5),
            session_wait: Duration::from_secs(600),
            callback_secret_ttl: Duration::from_secs(7 * 24 * 3600),
            sts_budget_per_second: 50.0,
            sts_budget_burst: 100,
        }
    }
}

impl AwsSettings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, AwsStartError> {
        Self::load_with(|k| std::env::var(k).ok())
    }

    /// With an explicit environment lookup (for tests).
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, AwsStartError> {
        let mut s = AwsSettings::default();
        if let Some(v) = env("XROLE_SAAS_PRINCIPAL_ARN").filter(|v| !v.is_empty()) {
            RoleArn::parse(&v)
                .map(|_| ())
                .or_else(|_| if is_user_arn(&v) { Ok(()) } else { Err(()) })
                .map_err(|()| AwsStartError::Invalid {
                    name: "XROLE_SAAS_PRINCIPAL_ARN",
                    message: "must be an IAM role or user ARN (never an account root)".into(),
                })?;
            s.saas_principal_arn = Some(v);
        }
        if let Some(v) = env("XROLE_TEMPLATE_URL").filter(|v| !v.is_empty()) {
            url::Url::parse(&v).map_err(|e| AwsStartError::Invalid {
                name: "XROLE_TEMPLATE_URL",
                message: e.to_string(),
            })?;
            s.template_url = Some(v);
        }
        if let Some(v) = env("XROLE_STACKSET_TEMPLATE_URL").filter(|v| !v.is_empty()) {
            url::Url::parse(&v).map_err(|e| AwsStartError::Invalid {
                name: "XROLE_STACKSET_TEMPLATE_URL",
                message: e.to_string(),
            })?;
            s.stackset_template_url = Some(v);
        }
        let secs = |name: &'static str, v: String| {
            v.parse::<u64>().map_err(|e| AwsStartError::Invalid {
                name,
                message: e.to_string(),
            })
        };
        if let Some(v) = env("XROLE_ASSUME_PROPAGATION_SECONDS") {
            s.propagation_window =
                Duration::from_secs(secs("XROLE_ASSUME_PROPAGATION_SECONDS", v)?);
        }
        if let Some(v) = env("XROLE_JOB_LEASE_SECONDS") {
            s.lease = Duration::from_secs(secs("XROLE_JOB_LEASE_SECONDS", v)?.max(2));
        }
        if let Some(v) = env("XROLE_JOB_POLL_MILLISECONDS") {
            s.job_poll = Duration::from_millis(secs("XROLE_JOB_POLL_MILLISECONDS", v)?.max(10));
        }
        if let Some(v) = env("XROLE_EXECUTOR_POLL_MILLISECONDS") {
            s.executor_poll =
                Duration::from_millis(secs("XROLE_EXECUTOR_POLL_MILLISECONDS", v)?.max(10));
        }
        if let Some(v) = env("XROLE_JOB_SESSION_WAIT_SECONDS") {
            s.session_wait = Duration::from_secs(secs("XROLE_JOB_SESSION_WAIT_SECONDS", v)?);
        }
        if let Some(v) = env("XROLE_STS_BUDGET_PER_SECOND") {
            let rate: f64 =
                v.parse()
                    .map_err(|e: std::num::ParseFloatError| AwsStartError::Invalid {
                        name: "XROLE_STS_BUDGET_PER_SECOND",
                        message: e.to_string(),
                    })?;
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(AwsStartError::Invalid {
                    name: "XROLE_STS_BUDGET_PER_SECOND",
                    message: "must be a number >= 0".into(),
                });
            }
            s.sts_budget_per_second = rate;
        }
        if let Some(v) = env("XROLE_STS_BUDGET_BURST") {
            let burst = secs("XROLE_STS_BUDGET_BURST", v)?;
            s.sts_budget_burst = u32::try_from(burst.max(1)).unwrap_or(u32::MAX);
        }
        if let Some(v) = env("XROLE_CALLBACK_SECRET_TTL_HOURS") {
            let hours = secs("XROLE_CALLBACK_SECRET_TTL_HOURS", v)?;
            if !(1..=24 * 90).contains(&hours) {
                return Err(AwsStartError::Invalid {
                    name: "XROLE_CALLBACK_SECRET_TTL_HOURS",
                    message: "must be 1 to 2160 (90 days)".into(),
                });
            }
            s.callback_secret_ttl = Duration::from_secs(hours * 3600);
        }
        Ok(s)
    }
}

fn is_user_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("user/")
        && parts[5].len() > "user/".len()
}

/// The principal customers' roles must trust, from a `GetCallerIdentity`
/// ARN: an assumed-role session ARN becomes its role's ARN (IAM trust
/// policies name roles, never sessions); users and roles stay as they are.
/// `None` for an account root, which must never be trusted.
///
/// ```
/// use xrole_server::link_flow::principal_from_caller_arn;
/// assert_eq!(
///     principal_from_caller_arn("arn:aws:sts::111122223333:assumed-role/xrole-prod/i-0abc").as_deref(),
///     Some("arn:aws:iam::111122223333:role/xrole-prod")
/// );
/// assert_eq!(
///     principal_from_caller_arn("arn:aws:iam::111122223333:user/xrole-saas").as_deref(),
///     Some("arn:aws:iam::111122223333:user/xrole-saas")
/// );
/// assert_eq!(principal_from_caller_arn("arn:aws:iam::111122223333:root"), None);
/// ```
pub fn principal_from_caller_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return None;
    }
    let (partition, service, account, resource) = (parts[1], parts[2], parts[4], parts[5]);
    match service {
        "sts" => {
            let rest = resource.strip_prefix("assumed-role/")?;
            let role = rest.split('/').next().filter(|r| !r.is_empty())?;
            Some(format!("arn:{partition}:iam::{account}:role/{role}"))
        }
        "iam" if resource.starts_with("user/") || resource.starts_with("role/") => {
            Some(arn.to_owned())
        }
        _ => None,
    }
}

/// The server's AWS side: its own configuration, the broker over it, and
/// the principal and template URL it hands to customers.
#[derive(Debug)]
pub struct AwsRuntime {
    /// The server's own AWS configuration (default provider chain).
    pub base: SdkConfig,
    /// Assumes customers' roles.
    pub broker: Broker,
    /// The principal customers' roles trust.
    pub saas_principal_arn: String,
    /// The settings it started with.
    pub settings: AwsSettings,
}

impl AwsRuntime {
    /// Builds the broker over `base` and finds the SaaS principal (unless
    /// configured).
    pub async fn start(base: SdkConfig, settings: AwsSettings) -> Result<Arc<Self>, AwsStartError> {
        let saas_principal_arn = match &settings.saas_principal_arn {
            Some(arn) => arn.clone(),
            None => {
                let sts = aws_sdk_sts::Client::new(&base);
                let me = sts.get_caller_identity().send().await.map_err(|e| {
                    AwsStartError::Identity(format!(
                        "{}",
                        aws_sdk_sts::error::DisplayErrorContext(&e)
                    ))
                })?;
                let arn = me.arn().unwrap_or_default();
                principal_from_caller_arn(arn).ok_or_else(|| {
                    AwsStartError::Identity(format!(
                        "{arn} cannot be trusted by customers' roles: run xrole as an IAM role or user"
                    ))
                })?
            }
        };
        let broker = Broker::builder(&base)
            .propagation_window(settings.propagation_window)
            .sts_budget(settings.sts_budget_per_second, settings.sts_budget_burst)
            .build();
        tracing::info!(principal = %saas_principal_arn, "SaaS principal for customers' trust policies");
        Ok(Arc::new(AwsRuntime {
            base,
            broker,
            saas_principal_arn,
            settings,
        }))
    }

    /// Loads the default provider chain (`AWS_ENDPOINT_URL` points it at
    /// moto in tests and demos) and starts.
    pub async fn from_environment() -> Result<Arc<Self>, AwsStartError> {
        let settings = AwsSettings::from_env()?;
        let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::start(base, settings).await
    }
}

/// Makes `runtime` the server's AWS side: routes use it from now on, and the
/// broker's counters appear in `/metrics`. A second call changes nothing.
pub fn install(state: &crate::AppState, runtime: Arc<AwsRuntime>) {
    if state.aws.set(runtime.clone()).is_ok() {
        state
            .metrics
            .add_collector(Arc::new(BrokerMetrics(runtime)));
    }
}

/// The broker's cache and STS counters in Prometheus text.
struct BrokerMetrics(Arc<AwsRuntime>);

impl crate::metrics::MetricsCollector for BrokerMetrics {
    fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = self.0.broker.metrics();
        let counters = [
            (
                "xrole_broker_cache_hits_total",
                "Credential cache hits",
                m.hits,
            ),
            (
                "xrole_broker_cache_misses_total",
                "Credential cache misses",
                m.misses,
            ),
            (
                "xrole_broker_refreshes_total",
                "Sessions refreshed ahead of expiry",
                m.refreshes,
            ),
            (
                "xrole_broker_refresh_failures_total",
                "Failed refreshes",
                m.refresh_failures,
            ),
            (
                "xrole_broker_evictions_total",
                "Sessions evicted from the cache",
                m.evictions,
            ),
            (
                "xrole_broker_sts_calls_total",
                "AssumeRole calls sent to STS",
                m.sts_calls,
            ),
            (
                "xrole_broker_sts_errors_total",
                "STS errors",
                m.sts_errors.total(),
            ),
            (
                "xrole_broker_sts_budget_refusals_total",
                "STS requests not sent because the STS budget shared by all tenants was spent",
                m.budget_refusals,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP xrole_broker_cache_entries Sessions in the cache\n# TYPE xrole_broker_cache_entries gauge\nxrole_broker_cache_entries {}",
            m.entries
        );
    }
}

/// What a verification concluded, ready for the link row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationResult {
    /// The state the link moves to.
    pub state: xrole_store::LinkState,
    /// A short machine word: `verified`, `insecure`, `wrong_account`,
    /// `outside_organization`, `not_assumable`.
    pub result: &'static str,
    /// What a person should do, when it is not `verified`.
    pub reason: Option<String>,
    /// `audited` or `not_readable` when the role was assumed.
    pub trust_policy_audit: Option<&'static str>,
}

/// Turns the broker's outcome into the link's next state with a reason a
/// person can act on.
pub fn interpret(
    outcome: &VerifyOutcome,
    role: &RoleArn,
    expected: &AwsAccountId,
) -> VerificationResult {
    use xrole_store::LinkState;
    match outcome {
        VerifyOutcome::Verified { trust_policy, .. } => VerificationResult {
            state: LinkState::Active,
            result: "verified",
            reason: match trust_policy {
                // Verified, but say what was not checked and how to allow it.
                TrustPolicyCheck::NotReadable { reason } => Some(format!(
                    "verified by probes only: {reason}. The probes showed the role refuses \
                     AssumeRole without this External ID and with foreign ones."
                )),
                _ => None,
            },
            trust_policy_audit: Some(trust_policy.as_str()),
        },
        VerifyOutcome::Insecure {
            findings,
            trust_policy,
        } => VerificationResult {
            state: LinkState::Insecure,
            result: "insecure",
            reason: Some(format!(
                "{role} is open to other tenants than the holder of this External ID, so xrole \
                 will never use it: {}. Fix the trust policy (redeploy the xrole stack), then \
                 verify again.",
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            trust_policy_audit: Some(trust_policy.as_str()),
        },
        VerifyOutcome::WrongAccount { actual } => VerificationResult {
            state: LinkState::Failed,
            result: "wrong_account",
            reason: Some(format!(
                "{role} is in account {actual}, not {expected}: deploy the stack in account {expected}."
            )),
            trust_policy_audit: None,
        },
        VerifyOutcome::OutsideOrganization { reason, .. } => VerificationResult {
            state: LinkState::Failed,
            result: "outside_organization",
            reason: Some(format!(
                "{role} cannot join this organization connection: {reason}. Only accounts of \
                 the organization whose management account the connection names may join it."
            )),
            trust_policy_audit: None,
        },
        VerifyOutcome::NotAssumable(e) => VerificationResult {
            state: LinkState::Failed,
            result: "not_assumable",
            reason: Some(format!(
                "xrole cannot assume {role} with this link's External ID ({e}). Check that the \
                 stack finished, that the role trusts the principal shown in the onboarding \
                 parameters with this External ID, then verify again."
            )),
            trust_policy_audit: None,
        },
    }
}

/// Checks `role`'s account against the link's expected account.
pub fn check_account(role: &RoleArn, expected: &str) -> Result<(), String> {
    if expected.is_empty() || role.account_id().as_str() == expected {
        Ok(())
    } else {
        Err(format!(
            "the role is in account {}, but this link is for account {expected}",
            role.account_id()
        ))
    }
}

/// The template's CloudFormation parameters for one link (the callback
/// secret included: show them once).
#[derive(Debug)]
pub struct Onboarding {
    /// `param_…` values, in the template's order.
    pub parameters: Vec<(&'static str, String)>,
    /// The template URL.
    pub template_url: String,
    /// The stack name.
    pub stack_name: String,
    /// The console quick-create link.
    pub quick_create_url: String,
}

/// Builds the onboarding parameters and quick-create link.
#[expect(
    clippy::too_many_arguments,
    reason = "every template parameter is named at the call"
)]
pub fn onboarding(
    template_url: &str,
    region: &str,
    link_id: &str,
    saas_principal_arn: &str,
    external_id: &ExternalId,
    access_level: xrole_store::AccessLevel,
    callback_url: &str,
    callback_secret: &str,
) -> Onboarding {
    let level = match access_level {
        xrole_store::AccessLevel::Provisioning => "Provisioning",
        _ => "ReadOnly",
    };
    let short: String = link_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let stack_name = format!("xrole-{short}");
    let parameters = vec![
        ("SaasPrincipalArn", saas_principal_arn.to_owned()),
        ("ExternalId", external_id.as_str().to_owned()),
        ("AccessLevel", level.to_owned()),
        ("RoleName", String::new()),
        ("PermissionsBoundaryArn", String::new()),
        ("LinkId", link_id.to_owned()),
        ("CallbackUrl", callback_url.to_owned()),
        ("CallbackSecret", callback_secret.to_owned()),
    ];
    quick_create(template_url, region, stack_name, parameters)
}

/// The console's quick-create link for `template_url` with every parameter
/// filled in.
fn quick_create(
    template_url: &str,
    region: &str,
    stack_name: String,
    parameters: Vec<(&'static str, String)>,
) -> Onboarding {
    let mut fragment = url::form_urlencoded::Serializer::new(String::new());
    fragment.append_pair("templateURL", template_url);
    fragment.append_pair("stackName", &stack_name);
    for (k, v) in &parameters {
        fragment.append_pair(&format!("param_{k}"), v);
    }
    let quick_create_url = format!(
        "{CONSOLE_URL}?region={}#/stacks/quickcreate?{}",
        url::form_urlencoded::byte_serialize(region.as_bytes()).collect::<String>(),
        fragment.finish()
    );
    Onboarding {
        parameters,
        template_url: template_url.to_owned(),
        stack_name,
        quick_create_url,
    }
}

/// What the StackSet template of an organization connection needs besides
/// the parameters every account's role shares.
#[derive(Debug)]
pub struct OrganizationTemplate<'a> {
    /// `xrole-stackset.yaml`'s URL.
    pub stackset_template_url: &'a str,
    /// `xrole-role.yaml`'s URL (each account's stack).
    pub role_template_url: &'a str,
    /// The region every account's stack runs in.
    pub region: &'a str,
    /// The connection.
    pub connection_id: &'a str,
}

/// The StackSet template's parameters and quick-create link for an
/// organization connection; `OrganizationalUnitIds` is left for the
/// customer to fill in.
pub fn organization_onboarding(
    t: &OrganizationTemplate<'_>,
    saas_principal_arn: &str,
    external_id: &ExternalId,
    access_level: xrole_store::AccessLevel,
    callback_url: &str,
    callback_secret: &str,
) -> Onboarding {
    let level = match access_level {
        xrole_store::AccessLevel::Provisioning => "Provisioning",
        _ => "ReadOnly",
    };
    let short: String = t
        .connection_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let parameters = vec![
        ("OrganizationalUnitIds", String::new()),
        ("DeploymentRegion", t.region.to_owned()),
        ("CallAs", "SELF".to_owned()),
        ("RoleTemplateUrl", t.role_template_url.to_owned()),
        ("SaasPrincipalArn", saas_principal_arn.to_owned()),
        ("ExternalId", external_id.as_str().to_owned()),
        ("AccessLevel", level.to_owned()),
        ("PermissionsBoundaryArn", String::new()),
        ("ConnectionId", t.connection_id.to_owned()),
        ("CallbackUrl", callback_url.to_owned()),
        ("CallbackSecret", callback_secret.to_owned()),
    ];
    quick_create(
        t.stackset_template_url,
        t.region,
        format!("xrole-org-{short}"),
        parameters,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_reject_roots() {
        let s = AwsSettings::load_with(|_| None).unwrap();
        assert!(s.saas_principal_arn.is_none());
        let env = |k: &str| match k {
            "XROLE_SAAS_PRINCIPAL_ARN" => Some("arn:aws:iam::111122223333:root".to_owned()),
            _ => None,
        };
        assert!(AwsSettings::load_with(env).is_err());
        let env = |k: &str| match k {
            "XROLE_SAAS_PRINCIPAL_ARN" => Some("arn:aws:iam::111122223333:user/xrole".to_owned()),
            "XROLE_JOB_LEASE_SECONDS" => Some("7".to_owned()),
            _ => None,
        };
        let s = AwsSettings::load_with(env).unwrap();
        assert_eq!(s.lease, Duration::from_secs(7));
    }

    #[test]
    fn quick_create_url_carries_every_parameter() {
        let ext = ExternalId::parse("xrx-abc").unwrap();
        let o = onboarding(
            "https://x.example.com/t.yaml",
            "eu-west-3",
            "0191f3c2-7a4e-7c3b",
            "arn:aws:iam::111122223333:role/xrole",
            &ext,
            xrole_store::AccessLevel::Provisioning,
            "https://x.example.com/v1/callbacks/cloudformation",
            "whsec_abc",
        );
        assert!(o.quick_create_url.starts_with(
            "https://console.aws.amazon.com/cloudformation/home?region=eu-west-3#/stacks/quickcreate?templateURL="
        ));
        for p in [
            "param_ExternalId=xrx-abc",
            "param_AccessLevel=Provisioning",
            "stackName=xrole-",
        ] {
            assert!(
                o.quick_create_url.contains(p),
                "{p}: {}",
                o.quick_create_url
            );
        }
        assert_eq!(o.parameters.len(), 8);
    }
}
