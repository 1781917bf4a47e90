//! [`Broker::verify_link`]: is this role ours, safe and assumable?

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_types::region::Region;
use tracing::instrument::WithSubscriber as _;
use tracing::{Instrument, debug, info, info_span, warn};
use xrole_crypto::ExternalId;

use crate::sts::{Class, Failure, Request, classify};
use crate::trust::{TrustFinding, audit_trust_policy, parse_document};
use crate::types::{AwsAccountId, RoleArn, SessionName};
use crate::{Broker, Error};

/// The STS calls of one verification without retries: AssumeRole with the
/// External ID, GetCallerIdentity, and the three probes.
const VERIFY_STS_CALLS: u32 = 5;

/// The session name of verification calls, as it appears in the customer's CloudTrail.
pub const VERIFY_SESSION_NAME: &str = "xrole-verify";
/// The session name of the probes that must be denied (no External ID, or a
/// wrong one), so a customer reading CloudTrail can tell them apart.
pub const PROBE_SESSION_NAME: &str = "xrole-verify-probe";

/// How [`Broker::verify_link_with`] runs.
///
/// ```
/// use xrole_assume::VerifyOptions;
/// let opts = VerifyOptions::new()
///     .trusted_principal("arn:aws:iam::111122223333:role/xrole-prod")
///     .wait_for_propagation(false);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    trusted_principal: Option<String>,
    wait_for_propagation: bool,
    organization: Option<AwsAccountId>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            trusted_principal: None,
            wait_for_propagation: true,
            organization: None,
        }
    }
}

impl VerifyOptions {
    /// Waits for propagation, audits without a known principal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The one principal the trust policy may name (the SaaS's own role or
    /// user). Without it the audit refuses only wildcards, account roots and
    /// non-AWS principals.
    pub fn trusted_principal(mut self, arn: impl Into<String>) -> Self {
        self.trusted_principal = Some(arn.into());
        self
    }

    /// `true` (default): retry AccessDenied with the External ID for the
    /// broker's propagation window, sleeping in between. `false`: one
    /// attempt, and AccessDenied answers [`VerifyOutcome::NotAssumable`] with
    /// [`Error::AccessDenied`] at once, for callers that re-schedule the
    /// check themselves instead of holding a task (a job queue).
    pub fn wait_for_propagation(mut self, yes: bool) -> Self {
        self.wait_for_propagation = yes;
        self
    }

    /// The account must belong to the AWS Organization whose management
    /// account is `management`: asked from inside the account, as the
    /// verification session, with `organizations:DescribeOrganization`
    /// (never taken from what the customer's stack reported). An account
    /// of another organization, of none, or whose role may not ask answers
    /// [`VerifyOutcome::OutsideOrganization`].
    pub fn in_organization_of(mut self, management: AwsAccountId) -> Self {
        self.organization = Some(management);
        self
    }
}

/// Whether the role's trust policy could be read and audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustPolicyCheck {
    /// Read with `iam:GetRole` (the template grants it on the role itself)
    /// and audited.
    Audited,
    /// Not readable (a hand-made role without `iam:GetRole` on itself): the
    /// probes alone decided.
    NotReadable {
        /// Why, in words.
        reason: String,
    },
}

impl TrustPolicyCheck {
    /// `audited` or `not_readable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrustPolicyCheck::Audited => "audited",
            TrustPolicyCheck::NotReadable { .. } => "not_readable",
        }
    }
}

/// What [`Broker::verify_link`] found.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// Assumable with the External ID, in the expected account, refused
    /// without it and with foreign External IDs, and (where readable) its
    /// trust policy names exactly the SaaS and pins this External ID: safe.
    Verified {
        /// The account `GetCallerIdentity` reported.
        account: AwsAccountId,
        /// The assumed-role ARN of the verification session.
        caller_arn: String,
        /// AssumeRole attempts until the role was assumable (more than 1 while it propagated).
        attempts: u32,
        /// Whether the trust policy was audited.
        trust_policy: TrustPolicyCheck,
    },
    /// Someone other than the tenant holding this External ID could use the
    /// role (confused deputy). Never use it.
    Insecure {
        /// What the probes and the audit found, never empty.
        findings: Vec<TrustFinding>,
        /// Whether the trust policy was audited.
        trust_policy: TrustPolicyCheck,
    },
    /// The role lives in another account than the one the link is for.
    WrongAccount {
        /// The account `GetCallerIdentity` reported.
        actual: AwsAccountId,
    },
    /// The account is not a member of the organization
    /// [`VerifyOptions::in_organization_of`] names, or its membership could
    /// not be confirmed from inside it.
    OutsideOrganization {
        /// The management account of the organization the account belongs
        /// to, when it belongs to one and the role could read it.
        management_account: Option<AwsAccountId>,
        /// What was found, in words.
        reason: String,
    },
    /// The role cannot be assumed with the External ID: AccessDenied for the whole
    /// propagation window ([`Error::NotAssumable`]; [`Error::AccessDenied`]
    /// after one attempt when not waiting), STS disabled in the region, or a
    /// request STS rejects. The error says which.
    NotAssumable(Error),
}

impl Broker {
    /// Checks a customer's role before a link is used:
    ///
    /// 1. `AssumeRole` with the External ID, retrying AccessDenied with jittered
    ///    backoff for up to the propagation window (default 2 min: new roles take a
    ///    while to become assumable);
    /// 2. `GetCallerIdentity` with the session must report `expected_account`;
    /// 3. `AssumeRole` **without** an External ID, with a random xrole-shaped
    ///    one and with a random one of another shape must each be denied;
    /// 4. where the session may read its own role (`iam:GetRole`), the trust
    ///    policy is audited ([`audit_trust_policy`](crate::audit_trust_policy)).
    ///
    /// `Err` means the answer is unknown (throttling, network, the broker's own
    /// identity): try again later, the link is neither good nor bad. Nothing is cached.
    pub async fn verify_link(
        &self,
        role: &RoleArn,
        external_id: &ExternalId,
        expected_account: &AwsAccountId,
    ) -> Result<VerifyOutcome, Error> {
        self.verify_link_with(role, external_id, expected_account, &VerifyOptions::new())
            .await
    }

    /// [`verify_link`](Broker::verify_link) with options: the principal the
    /// audit expects, and whether to wait for propagation.
    pub async fn verify_link_with(
        &self,
        role: &RoleArn,
        external_id: &ExternalId,
        expected_account: &AwsAccountId,
        options: &VerifyOptions,
    ) -> Result<VerifyOutcome, Error> {
        let region = self.sts_region(role, None, None);
        let span = info_span!("verify_link", role = %role, expected_account = %expected_account, region = %region);
        // AssumeRole, GetCallerIdentity and the three probes: taken from the
        // STS budget together, so concurrent verifications never starve
        // each other halfway.
        let task = self
            .verify_inner(role, external_id, expected_account, &region, options)
            .instrument(span);
        self.with_budget(VERIFY_STS_CALLS, task)
            .await
            .map_err(|f| f.into_error(role, &region))?
    }

    async fn verify_inner(
        &self,
        role: &RoleArn,
        external_id: &ExternalId,
        expected_account: &AwsAccountId,
        region: &str,
        options: &VerifyOptions,
    ) -> Result<VerifyOutcome, Error> {
        let session_name = SessionName::parse(VERIFY_SESSION_NAME)?;
        let with_id = Request {
            role,
            external_id: Some(external_id),
            session_name: &session_name,
            duration: Duration::from_secs(900),
            spec: None,
        };
        let (window, backoff) = self.propagation();
        let window = if options.wait_for_propagation {
            window
        } else {
            Duration::ZERO
        };
        let started = self.now();
        let mut attempts = 0u32;
        let assumed = loop {
            attempts += 1;
            match self
                .call_sts(self.max_attempts(), !options.wait_for_propagation, || {
                    self.sts().assume_role(region, &with_id)
                })
                .await
            {
                Ok(a) => break a,
                Err(f) if f.class == Class::AccessDenied && !options.wait_for_propagation => {
                    debug!("role not assumable with the External ID (yet)");
                    return Ok(VerifyOutcome::NotAssumable(f.into_error(role, region)));
                }
                Err(f) if f.class == Class::AccessDenied => {
                    let waited = self.now().duration_since(started).unwrap_or_default();
                    if waited >= window {
                        warn!(attempts, waited = ?waited, "role not assumable with the External ID");
                        return Ok(VerifyOutcome::NotAssumable(Error::NotAssumable {
                            role: role.clone(),
                            attempts,
                            waited,
                            message: f.message,
                        }));
                    }
                    let delay = backoff.delay(attempts).min(window - waited);
                    debug!(attempts, delay = ?delay, "AccessDenied; the role may still be propagating");
                    self.sleep(delay).await;
                }
                Err(f) if matches!(f.class, Class::RegionDisabled | Class::InvalidRequest) => {
                    return Ok(VerifyOutcome::NotAssumable(f.into_error(role, region)));
                }
                Err(f) => return Err(f.into_error(role, region)),
            }
        };
        let creds = Credentials::new(
            assumed.access_key_id,
            assumed.secret_access_key,
            Some(assumed.session_token),
            None,
            "xrole-verify",
        );
        let (account, caller_arn) = self
            .call_sts(self.max_attempts(), false, || {
                self.sts().caller_identity(region, Some(creds.clone()))
            })
            .await
            .map_err(|f| f.into_error(role, region))?;
        let actual = AwsAccountId::parse(&account).map_err(|_| Error::Unexpected {
            code: "GetCallerIdentity".into(),
            message: format!("account {account:?} is not 12 digits"),
        })?;
        if actual != *expected_account {
            warn!(actual = %actual, "role is in another account");
            return Ok(VerifyOutcome::WrongAccount { actual });
        }
        if let Some(expected) = &options.organization {
            match self.organization_of(role, creds.clone()).await? {
                Ok(found) if found == *expected => {}
                Ok(found) => {
                    warn!(management_account = %found, expected = %expected, "account of another organization");
                    return Ok(VerifyOutcome::OutsideOrganization {
                        reason: format!(
                            "account {actual} belongs to the organization managed by {found}, \
                             not by {expected}"
                        ),
                        management_account: Some(found),
                    });
                }
                Err(reason) => {
                    warn!(%reason, "organization membership not confirmed");
                    return Ok(VerifyOutcome::OutsideOrganization {
                        management_account: None,
                        reason,
                    });
                }
            }
        }

        // The confused-deputy probes: no External ID, and two that are not
        // this link's, must all be denied.
        let mut findings = Vec::new();
        let probe_name = SessionName::parse(PROBE_SESSION_NAME)?;
        let same_shape = ExternalId::try_generate().map_err(|_| Error::Unexpected {
            code: "Random".into(),
            message: "no randomness for the External ID probe".into(),
        })?;
        let other_shape = other_shape_id()?;
        let probes: [(Option<&ExternalId>, Option<&'static str>); 3] = [
            (None, None),
            (Some(&same_shape), Some("same_shape")),
            (Some(&other_shape), Some("other_shape")),
        ];
        for (probe_id, shape) in probes {
            let req = Request {
                role,
                external_id: probe_id,
                session_name: &probe_name,
                duration: Duration::from_secs(900),
                spec: None,
            };
            match self
                .call_sts(self.max_attempts(), true, || {
                    self.sts().assume_role(region, &req)
                })
                .await
            {
                // The session is dropped at once: it must never be used.
                Ok(_) => findings.push(match shape {
                    None => TrustFinding::AcceptsNoExternalId,
                    Some(probe) => TrustFinding::AcceptsForeignExternalId { probe },
                }),
                Err(f) if f.class == Class::AccessDenied => {}
                Err(f) => return Err(f.into_error(role, region)),
            }
        }
        for f in &findings {
            warn!(
                finding = f.code(),
                "probe accepted: the role is insecure, never use it"
            );
        }

        let trust_policy = match self.read_trust_policy(role, creds).await? {
            Ok(doc) => {
                let audit =
                    audit_trust_policy(&doc, options.trusted_principal.as_deref(), external_id);
                for f in &audit {
                    warn!(finding = %f, "trust policy audit");
                }
                findings.extend(audit);
                TrustPolicyCheck::Audited
            }
            Err(reason) => {
                info!(%reason, "trust policy not readable; the probes decide");
                TrustPolicyCheck::NotReadable { reason }
            }
        };
        if !findings.is_empty() {
            return Ok(VerifyOutcome::Insecure {
                findings,
                trust_policy,
            });
        }
        info!(
            attempts,
            trust_policy = trust_policy.as_str(),
            "link verified"
        );
        Ok(VerifyOutcome::Verified {
            account: actual,
            caller_arn,
            attempts,
            trust_policy,
        })
    }

    /// `iam:GetRole` on the role itself, as the verification session:
    /// `Ok(Ok(policy))`, `Ok(Err(why not))` when the role may not read
    /// itself, `Err` when IAM could not answer (retry later).
    async fn read_trust_policy(
        &self,
        role: &RoleArn,
        creds: Credentials,
    ) -> Result<Result<serde_json::Value, String>, Error> {
        // IAM is global: its requests are signed for the partition's home region.
        let region = role.partition().default_region();
        let conf = aws_sdk_iam::config::Builder::from(self.sts().base())
            .region(Region::new(region))
            .retry_config(RetryConfig::disabled())
            .credentials_provider(creds)
            .build();
        let iam = aws_sdk_iam::Client::from_conf(conf);
        let answer = self
            .read_as_session("iam:GetRole", || {
                // The answer holds the External ID, and the SDK logs whole
                // responses at TRACE: this one call runs with logging off.
                iam.get_role()
                    .role_name(role.name())
                    .send()
                    .with_subscriber(tracing::subscriber::NoSubscriber::default())
            })
            .await?;
        Ok(match answer {
            Ok(out) => {
                let raw = out
                    .role()
                    .and_then(|r| r.assume_role_policy_document())
                    .unwrap_or_default();
                parse_document(raw).ok_or_else(|| {
                    "iam:GetRole answered a trust policy that is not JSON".to_owned()
                })
            }
            Err(failure) => Err(format!(
                "iam:GetRole on the role itself failed ({}); grant it to let xrole audit the trust policy",
                failure.code
            )),
        })
    }

    /// `organizations:DescribeOrganization` as the verification session:
    /// `Ok(Ok(management account))`, `Ok(Err(why not))` when the account is
    /// in no organization or may not ask, `Err` when AWS could not answer.
    async fn organization_of(
        &self,
        role: &RoleArn,
        creds: Credentials,
    ) -> Result<Result<AwsAccountId, String>, Error> {
        // Organizations is global, served from the partition's home region.
        let conf = aws_sdk_organizations::config::Builder::from(self.sts().base())
            .region(Region::new(role.partition().default_region()))
            .retry_config(RetryConfig::disabled())
            .credentials_provider(creds)
            .build();
        let client = aws_sdk_organizations::Client::from_conf(conf);
        let answer = self
            .read_as_session("organizations:DescribeOrganization", || {
                client.describe_organization().send()
            })
            .await?;
        Ok(match answer {
            Ok(out) => {
                let master = out
                    .organization()
                    .and_then(|o| o.master_account_id())
                    .unwrap_or_default();
                AwsAccountId::parse(master).map_err(|_| {
                    format!("DescribeOrganization answered no management account ({master:?})")
                })
            }
            Err(f) if f.code == "AWSOrganizationsNotInUseException" => {
                Err("the account belongs to no AWS Organization".to_owned())
            }
            Err(f) => Err(format!(
                "organizations:DescribeOrganization as the role failed ({}), so the account's \
                 organization cannot be confirmed; the organization template grants it",
                f.code
            )),
        })
    }

    /// One read the verification session makes, retried like the broker's
    /// STS calls: `Ok(Ok(answer))`, `Ok(Err(failure))` when AWS refused it,
    /// `Err` when throttling or a transient failure outlasted the attempts.
    async fn read_as_session<T, E, Fut>(
        &self,
        action: &str,
        mut call: impl FnMut() -> Fut,
    ) -> Result<Result<T, Failure>, Error>
    where
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match call().await {
                Ok(out) => return Ok(Ok(out)),
                Err(e) => {
                    let f = classify(&e);
                    if f.class.is_retryable() && attempt < self.max_attempts() {
                        self.sleep(self.retry_delay(attempt)).await;
                        continue;
                    }
                    return match f.class {
                        Class::Throttled | Class::Transient => Err(Error::Transient {
                            message: format!("{action}: {}: {}", f.code, f.message),
                        }),
                        _ => Ok(Err(f)),
                    };
                }
            }
        }
    }
}

/// A random External ID unlike xrole's: 32 hex digits, no `xrx-` prefix, so
/// a pattern written around xrole's shape does not catch it.
fn other_shape_id() -> Result<ExternalId, Error> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Unexpected {
            code: "Random".into(),
            message: "no randomness for the External ID probe".into(),
        })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ExternalId::parse(&hex).map_err(|_| Error::Unexpected {
        code: "Random".into(),
        message: "probe External ID rejected".into(),
    })
}
