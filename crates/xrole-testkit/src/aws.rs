//! Two (or more) AWS accounts on one moto, behind the gate: the SaaS identity
//! xrole runs as, and fresh customer accounts.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::gate::{Gate, GateControl};
use crate::moto::Moto;

/// moto's default account: never handed out as a SaaS or customer account.
const MOTO_DEFAULT_ACCOUNT: &str = "123456789012";
/// The role every account's admin credentials are a session of.
const ADMIN_ROLE: &str = "xrole-testkit-admin";
/// The IAM user xrole runs as in the SaaS account.
pub const SAAS_USER: &str = "xrole-saas";

/// moto, the gate in front of it, and the SaaS identity. Everything stops when
/// dropped.
///
/// Every SDK client talks to [`Aws::endpoint`] (the gate); moto itself decides
/// which account a call lands in from the access key, so credentials from an
/// `AssumeRole` into a customer role act in that customer's account.
#[derive(Debug)]
pub struct Aws {
    // Declared first so it stops before moto does.
    gate: Gate,
    moto: Moto,
    saas_account: String,
    saas_arn: String,
    saas_config: SdkConfig,
    accounts: Mutex<HashSet<String>>,
}

impl Aws {
    /// Starts moto and the gate, and creates the SaaS account with an IAM user
    /// [`SAAS_USER`] holding static access keys.
    pub async fn start() -> anyhow::Result<Aws> {
        let moto = tokio::task::spawn_blocking(Moto::start).await??;
        let gate = Gate::start(&moto.endpoint(), ([127, 0, 0, 1], 0).into()).await?;
        let mut accounts = HashSet::new();
        let saas_account = fresh_account_id(&mut accounts);
        let (admin, _) = admin_config(&moto.endpoint(), &saas_account).await?;
        let iam = aws_sdk_iam::Client::new(&admin);
        let user = iam.create_user().user_name(SAAS_USER).send().await?;
        let saas_arn = user
            .user()
            .map(|u| u.arn().to_owned())
            .context("CreateUser without user")?;
        iam.put_user_policy()
            .user_name(SAAS_USER)
            .policy_name("assume-customer-roles")
            .policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"],"Resource":"*"}]}"#,
            )
            .send()
            .await?;
        let key = iam.create_access_key().user_name(SAAS_USER).send().await?;
        let key = key.access_key().context("CreateAccessKey without key")?;
        let creds = Credentials::new(
            key.access_key_id(),
            key.secret_access_key(),
            None,
            None,
            "xrole-testkit-saas",
        );
        let saas_config = sdk_config(&gate.endpoint(), creds);
        Ok(Aws {
            gate,
            moto,
            saas_account,
            saas_arn,
            saas_config,
            accounts: Mutex::new(accounts),
        })
    }

    /// The gate's URL: what every SDK client uses.
    pub fn endpoint(&self) -> String {
        self.gate.endpoint()
    }

    /// moto's own URL, bypassing the gate (no trust checks, no faults, no counts).
    pub fn moto_endpoint(&self) -> String {
        self.moto.endpoint()
    }

    /// The moto server (its process id, address).
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The ARN xrole runs as: `arn:aws:iam::<saas account>:user/xrole-saas`.
    pub fn saas_principal_arn(&self) -> String {
        self.saas_arn.clone()
    }

    /// The SaaS account id (12 digits).
    pub fn saas_account_id(&self) -> String {
        self.saas_account.clone()
    }

    /// Static credentials of the SaaS identity, endpoint = the gate, region
    /// `us-east-1`.
    pub fn saas_config(&self) -> SdkConfig {
        self.saas_config.clone()
    }

    /// An SDK config for any credentials (e.g. a session from `AssumeRole`),
    /// endpoint = the gate, region `us-east-1`.
    pub fn config_for(&self, credentials: Credentials) -> SdkConfig {
        sdk_config(&self.gate.endpoint(), credentials)
    }

    /// A fresh customer account with a distinct 12-digit id.
    pub async fn customer(&self) -> anyhow::Result<CustomerAccount> {
        let account_id =
            fresh_account_id(&mut self.accounts.lock().unwrap_or_else(PoisonError::into_inner));
        let (admin, admin_credentials) = admin_config(&self.moto.endpoint(), &account_id).await?;
        Ok(CustomerAccount {
            account_id,
            admin,
            admin_credentials,
        })
    }

    /// Faults, delays and counters of the gate.
    pub fn gate(&self) -> &GateControl {
        self.gate.control()
    }
}

/// An AWS Organization in moto: a management account that made its members
/// with `CreateAccount`. Inside a member, `DescribeOrganization` answers the
/// management account (moto knows only the members it created).
#[derive(Debug, Clone)]
pub struct Organization {
    management: CustomerAccount,
    id: String,
}

impl Organization {
    /// The management account.
    pub fn management(&self) -> &CustomerAccount {
        &self.management
    }

    /// The organization's id (`o-…`).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Aws {
    /// A fresh account that creates an organization (all features).
    pub async fn organization(&self) -> anyhow::Result<Organization> {
        let management = self.customer().await?;
        let out = aws_sdk_organizations::Client::new(&management.admin)
            .create_organization()
            .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
            .send()
            .await
            .context("CreateOrganization")?;
        let id = out
            .organization()
            .and_then(|o| o.id())
            .context("CreateOrganization without id")?
            .to_owned();
        Ok(Organization { management, id })
    }

    /// A new member account of `org`, made with its `CreateAccount`, with
    /// admin credentials inside it.
    pub async fn member(&self, org: &Organization) -> anyhow::Result<CustomerAccount> {
        let n = uuid::Uuid::new_v4().simple().to_string();
        let out = aws_sdk_organizations::Client::new(&org.management.admin)
            .create_account()
            .email(format!("{n}@example.com"))
            .account_name(format!("member-{n}"))
            .send()
            .await
            .context("CreateAccount")?;
        let account_id = out
            .create_account_status()
            .and_then(|s| s.account_id())
            .context("CreateAccount without an account id")?
            .to_owned();
        anyhow::ensure!(
            self.accounts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(account_id.clone()),
            "moto handed out account {account_id} twice"
        );
        let (admin, admin_credentials) = admin_config(&self.moto.endpoint(), &account_id).await?;
        Ok(CustomerAccount {
            account_id,
            admin,
            admin_credentials,
        })
    }
}

/// One customer account, with admin credentials inside it.
#[derive(Debug, Clone)]
pub struct CustomerAccount {
    account_id: String,
    admin: SdkConfig,
    admin_credentials: Credentials,
}

impl CustomerAccount {
    /// The 12-digit account id.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Admin credentials in this account, talking to moto directly: set-up and
    /// inspection neither count at the gate nor meet its faults.
    pub fn admin_config(&self) -> SdkConfig {
        self.admin.clone()
    }

    /// The admin credentials themselves: `aws.config_for(c.admin_credentials())`
    /// is the same identity talking through the gate (counted, faultable).
    pub fn admin_credentials(&self) -> Credentials {
        self.admin_credentials.clone()
    }

    /// Creates a role with this trust policy and `MaxSessionDuration`; returns
    /// its ARN.
    pub async fn create_role(
        &self,
        name: &str,
        trust_policy_json: &str,
        max_session_secs: i32,
    ) -> anyhow::Result<String> {
        let iam = aws_sdk_iam::Client::new(&self.admin);
        let out = iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust_policy_json)
            .max_session_duration(max_session_secs)
            .send()
            .await
            .with_context(|| format!("CreateRole {name} in {}", self.account_id))?;
        out.role()
            .map(|r| r.arn().to_owned())
            .context("CreateRole without role")
    }

    /// The role xrole expects: trusts `principal_arn` with `StringEquals
    /// sts:ExternalId`, allows `sts:AssumeRole`, `sts:TagSession` and
    /// `sts:SetSourceIdentity`, `MaxSessionDuration` 3600, and an inline policy
    /// allowing EC2, RDS, KMS, SSM, Secrets Manager, CloudFormation and
    /// read-only IAM. Returns its ARN.
    pub async fn create_xrole_role(
        &self,
        name: &str,
        principal_arn: &str,
        external_id: &str,
    ) -> anyhow::Result<String> {
        let arn = self
            .create_role(name, &xrole_trust_policy(principal_arn, external_id), 3600)
            .await?;
        let iam = aws_sdk_iam::Client::new(&self.admin);
        iam.put_role_policy()
            .role_name(name)
            .policy_name("xrole-provisioning")
            .policy_document(
                serde_json::json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Action": ["ec2:*", "rds:*", "kms:*", "ssm:*", "secretsmanager:*",
                               "cloudformation:*", "iam:Get*", "iam:List*", "iam:PassRole",
                               "iam:CreateServiceLinkedRole", "sts:GetCallerIdentity"],
                    "Resource": "*"}]})
                .to_string(),
            )
            .send()
            .await?;
        Ok(arn)
    }
}

/// The `AccessLevel` parameter of the project's role template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessLevel {
    /// Describe calls only.
    ReadOnly,
    /// Also creates, and changes or deletes what carries xrole's tag.
    Provisioning,
}

impl AccessLevel {
    fn as_str(self) -> &'static str {
        match self {
            AccessLevel::ReadOnly => "ReadOnly",
            AccessLevel::Provisioning => "Provisioning",
        }
    }
}

impl CustomerAccount {
    /// Deploys the role of the project's template
    /// (`cloudformation/xrole-role.yaml`) with moto's CloudFormation, as a
    /// customer does, and returns the role's ARN. Stacks are named
    /// `xrole-<n>`, one per call. The template's callback Lambda is not run
    /// (moto runs Lambda only with Docker): the role and its policies exist
    /// as soon as this returns, while the stack waits for its custom resource.
    pub async fn deploy_role_template(
        &self,
        principal_arn: &str,
        external_id: &str,
        access_level: AccessLevel,
    ) -> anyhow::Result<String> {
        let path = crate::moto::workspace_root().join("cloudformation/xrole-role.yaml");
        let body = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let param = |k: &str, v: &str| {
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let cfn = aws_sdk_cloudformation::Client::new(&self.admin);
        let stack = cfn
            .create_stack()
            .stack_name(format!("xrole-{}", &suffix[..8]))
            .template_body(body)
            .parameters(param("SaasPrincipalArn", principal_arn))
            .parameters(param("ExternalId", external_id))
            .parameters(param("AccessLevel", access_level.as_str()))
            .parameters(param("LinkId", &suffix))
            .parameters(param(
                "CallbackUrl",
                "https://xrole.example.com/v1/callbacks/cloudformation",
            ))
            // Never used: the callback does not run.
            .parameters(param(
                "CallbackSecret",
                "whsec_dGVzdGtpdC1ub3QtYS1zZWNyZXQ=",
            ))
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
            .send()
            .await
            .with_context(|| format!("CreateStack in {}", self.account_id))?;
        let stack_id = stack.stack_id().context("CreateStack without id")?;
        let resources = cfn
            .describe_stack_resources()
            .stack_name(stack_id)
            .send()
            .await?;
        let role_name = resources
            .stack_resources()
            .iter()
            .find(|r| r.logical_resource_id() == Some("Role"))
            .and_then(|r| r.physical_resource_id())
            .context("the stack has no Role")?;
        let role = aws_sdk_iam::Client::new(&self.admin)
            .get_role()
            .role_name(role_name)
            .send()
            .await?;
        role.role()
            .map(|r| r.arn().to_owned())
            .context("GetRole without role")
    }
}

impl CustomerAccount {
    /// The identity policies of role `role_name` as documents: its inline
    /// policies (by name) and the default version of each attached managed
    /// policy (by ARN), as IAM holds them.
    pub async fn role_policies(
        &self,
        role_name: &str,
    ) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let iam = aws_sdk_iam::Client::new(&self.admin);
        let mut out = Vec::new();
        let inline = iam.list_role_policies().role_name(role_name).send().await?;
        for name in inline.policy_names() {
            let p = iam
                .get_role_policy()
                .role_name(role_name)
                .policy_name(name)
                .send()
                .await?;
            let doc = crate::policy::decode_document(p.policy_document())
                .map_err(|e| anyhow::anyhow!("inline policy {name}: {}", e.0))?;
            out.push((name.clone(), doc));
        }
        let attached = iam
            .list_attached_role_policies()
            .role_name(role_name)
            .send()
            .await?;
        for a in attached.attached_policies() {
            let arn = a.policy_arn().context("attached policy without ARN")?;
            let policy = iam.get_policy().policy_arn(arn).send().await?;
            let version = policy
                .policy()
                .and_then(|p| p.default_version_id())
                .context("managed policy without a default version")?;
            let v = iam
                .get_policy_version()
                .policy_arn(arn)
                .version_id(version)
                .send()
                .await?;
            let text = v
                .policy_version()
                .and_then(|v| v.document())
                .context("policy version without a document")?;
            let doc = crate::policy::decode_document(text)
                .map_err(|e| anyhow::anyhow!("managed policy {arn}: {}", e.0))?;
            out.push((arn.to_owned(), doc));
        }
        Ok(out)
    }
}

/// The trust policy of [`CustomerAccount::create_xrole_role`].
pub fn xrole_trust_policy(principal_arn: &str, external_id: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": principal_arn},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]})
    .to_string()
}

fn sdk_config(endpoint: &str, credentials: Credentials) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build()
}

/// A 12-digit id not handed out before (and never moto's default account).
fn fresh_account_id(taken: &mut HashSet<String>) -> String {
    loop {
        let n = uuid::Uuid::new_v4().as_u128() % 900_000_000_000 + 100_000_000_000;
        let id = n.to_string();
        if id != MOTO_DEFAULT_ACCOUNT && taken.insert(id.clone()) {
            return id;
        }
    }
}

/// Admin credentials in `account`: moto's `AssumeRole` places the session in
/// the account named by the role ARN, so a session of `xrole-testkit-admin`
/// acts there. The role is then created too, so the session's identity is real.
async fn admin_config(moto: &str, account: &str) -> anyhow::Result<(SdkConfig, Credentials)> {
    let bootstrap = sdk_config(
        moto,
        Credentials::new(
            "AKIAXROLETESTKITBOOT",
            "bootstrap",
            None,
            None,
            "xrole-testkit",
        ),
    );
    let role_arn = format!("arn:aws:iam::{account}:role/{ADMIN_ROLE}");
    let out = aws_sdk_sts::Client::new(&bootstrap)
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("admin")
        .send()
        .await
        .with_context(|| format!("cannot get admin credentials in {account} from moto"))?;
    let c = out
        .credentials()
        .context("AssumeRole without credentials")?;
    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "xrole-testkit-admin",
    );
    let config = sdk_config(moto, creds.clone());
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
        "Action": "sts:AssumeRole"}]});
    aws_sdk_iam::Client::new(&config)
        .create_role()
        .role_name(ADMIN_ROLE)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .with_context(|| format!("cannot create {ADMIN_ROLE} in {account}"))?;
    Ok((config, creds))
}
