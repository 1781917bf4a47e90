//! What to assume: [`AssumeSpec`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_types::region::Region;
use xrole_crypto::ExternalId;

use crate::Error;
use crate::types::{RoleArn, SessionName, SessionPolicy, SessionTag, SourceIdentity};

/// Session length when none is asked for.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(900);
/// The shortest session STS grants.
pub const MIN_SESSION_DURATION: Duration = Duration::from_secs(900);
/// The longest session STS grants (a role's `MaxSessionDuration` may be lower).
pub const MAX_SESSION_DURATION: Duration = Duration::from_secs(43_200);
/// The longest session when the caller is itself a role session (role chaining).
pub const MAX_CHAINED_SESSION_DURATION: Duration = Duration::from_secs(3_600);
/// STS accepts at most this many session tags.
pub const MAX_SESSION_TAGS: usize = 50;
/// STS accepts at most this many managed session policy ARNs.
pub const MAX_POLICY_ARNS: usize = 10;

/// One way of assuming a customer's role: role, External ID, session name and scope.
///
/// Cheap to clone. Two specs with equal contents share one cached session in a
/// [`Broker`](crate::Broker); the region only picks the STS endpoint and is not part of
/// the cache key (session credentials are valid in every region).
///
/// ```
/// use xrole_assume::{AssumeSpec, RoleArn, SessionName, SessionPolicy};
/// use xrole_crypto::ExternalId;
/// let spec = AssumeSpec::builder(
///     "arn:aws:iam::123456789012:role/xrole".parse::<RoleArn>()?,
///     ExternalId::parse("xrx-0123456789abcdef0123456789abcdef").unwrap(),
///     SessionName::for_tenant("acme", "read")?,
/// )
/// .policy(SessionPolicy::new(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#)?)
/// .tag("xrole:org", "acme")?
/// .build()?;
/// assert_eq!(spec.duration().as_secs(), 900);
/// # Ok::<(), xrole_assume::Error>(())
/// ```
#[derive(Clone)]
pub struct AssumeSpec(pub(crate) Arc<SpecInner>);

pub(crate) struct SpecInner {
    pub(crate) role: RoleArn,
    pub(crate) external_id: ExternalId,
    pub(crate) session_name: SessionName,
    pub(crate) duration: Duration,
    pub(crate) source_identity: Option<SourceIdentity>,
    pub(crate) tags: Vec<SessionTag>,
    pub(crate) policy: Option<SessionPolicy>,
    pub(crate) policy_arns: Vec<String>,
    pub(crate) region: Option<Region>,
    /// SHA-256 over everything that shapes the session (not the region): the cache key.
    pub(crate) key: CacheKey,
}

/// A fixed-size digest of a spec; holds no External ID in clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(pub(crate) [u8; 32]);

impl AssumeSpec {
    /// Starts a spec for `role`, presenting `external_id`, named `session_name`.
    pub fn builder(
        role: RoleArn,
        external_id: ExternalId,
        session_name: SessionName,
    ) -> AssumeSpecBuilder {
        AssumeSpecBuilder {
            role,
            external_id,
            session_name,
            duration: DEFAULT_SESSION_DURATION,
            source_identity: None,
            tags: Vec::new(),
            policy: None,
            policy_arns: Vec::new(),
            region: None,
        }
    }

    /// The role to assume.
    pub fn role(&self) -> &RoleArn {
        &self.0.role
    }

    /// The External ID presented to STS.
    pub fn external_id(&self) -> &ExternalId {
        &self.0.external_id
    }

    /// The role session name.
    pub fn session_name(&self) -> &SessionName {
        &self.0.session_name
    }

    /// The requested session length (the broker clamps it to one hour for chained sessions).
    pub fn duration(&self) -> Duration {
        self.0.duration
    }

    /// The `SourceIdentity`, if any.
    pub fn source_identity(&self) -> Option<&SourceIdentity> {
        self.0.source_identity.as_ref()
    }

    /// The session tags.
    pub fn tags(&self) -> &[SessionTag] {
        &self.0.tags
    }

    /// The inline session policy, if any.
    pub fn policy(&self) -> Option<&SessionPolicy> {
        self.0.policy.as_ref()
    }

    /// The managed session policy ARNs.
    pub fn policy_arns(&self) -> &[String] {
        &self.0.policy_arns
    }

    /// The region whose STS endpoint is called, if fixed by the spec.
    pub fn region(&self) -> Option<&Region> {
        self.0.region.as_ref()
    }

    pub(crate) fn key(&self) -> CacheKey {
        self.0.key
    }
}

impl fmt::Debug for AssumeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        f.debug_struct("AssumeSpec")
            .field("role", &s.role)
            .field("external_id", &s.external_id)
            .field("session_name", &s.session_name)
            .field("duration", &s.duration)
            .field("source_identity", &s.source_identity)
            .field("tags", &s.tags)
            .field("policy", &s.policy)
            .field("policy_arns", &s.policy_arns)
            .field("region", &s.region)
            .finish()
    }
}

/// Builds an [`AssumeSpec`]; [`build`](AssumeSpecBuilder::build) checks the STS limits.
pub struct AssumeSpecBuilder {
    role: RoleArn,
    external_id: ExternalId,
    session_name: SessionName,
    duration: Duration,
    source_identity: Option<SourceIdentity>,
    tags: Vec<SessionTag>,
    policy: Option<SessionPolicy>,
    policy_arns: Vec<String>,
    region: Option<Region>,
}

impl fmt::Debug for AssumeSpecBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeSpecBuilder")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl AssumeSpecBuilder {
    /// Session length, 900 s to 43,200 s (default 900 s).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Records who acts (for example the user id) in the customer's CloudTrail.
    pub fn source_identity(mut self, identity: SourceIdentity) -> Self {
        self.source_identity = Some(identity);
        self
    }

    /// Adds a session tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        self.tags.push(SessionTag::new(key, value)?);
        Ok(self)
    }

    /// Narrows the session with an inline policy.
    pub fn policy(mut self, policy: SessionPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Narrows the session with a managed policy (`arn:<partition>:iam::…:policy/…`).
    pub fn policy_arn(mut self, arn: impl Into<String>) -> Self {
        self.policy_arns.push(arn.into());
        self
    }

    /// Calls STS in this region (default: the broker's region, or the partition's
    /// default region when the broker's region is in another partition).
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// Checks the limits STS would check, and computes the cache key.
    pub fn build(mut self) -> Result<AssumeSpec, Error> {
        let invalid = |reason: String| Err(Error::InvalidSpec { reason });
        if !(MIN_SESSION_DURATION..=MAX_SESSION_DURATION).contains(&self.duration) {
            return invalid(format!(
                "duration {:?} is outside 900-43200 s",
                self.duration
            ));
        }
        if self.duration.subsec_nanos() != 0 {
            return invalid("duration must be whole seconds".to_owned());
        }
        if self.tags.len() > MAX_SESSION_TAGS {
            return invalid(format!(
                "{} session tags, STS accepts {MAX_SESSION_TAGS}",
                self.tags.len()
            ));
        }
        let mut keys: Vec<String> = self.tags.iter().map(|t| t.key().to_lowercase()).collect();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return invalid("session tag keys must be unique (case-insensitive)".to_owned());
        }
        if self.policy_arns.len() > MAX_POLICY_ARNS {
            return invalid(format!(
                "{} policy ARNs, STS accepts {MAX_POLICY_ARNS}",
                self.policy_arns.len()
            ));
        }
        let prefix = format!("arn:{}:iam::", self.role.partition());
        for arn in &self.policy_arns {
            let ok = (20..=2048).contains(&arn.len())
                && arn.starts_with(&prefix)
                && arn.contains(":policy/")
                && arn.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !ok {
                return invalid(format!(
                    "policy ARN {arn:?} is not an IAM policy ARN of partition {}",
                    self.role.partition()
                ));
            }
        }
        // Tag order does not change the session: sort so equal specs share a cache entry.
        self.tags.sort_by(|a, b| a.key().cmp(b.key()));
        let key = cache_key(&self);
        Ok(AssumeSpec(Arc::new(SpecInner {
            role: self.role,
            external_id: self.external_id,
            session_name: self.session_name,
            duration: self.duration,
            source_identity: self.source_identity,
            tags: self.tags,
            policy: self.policy,
            policy_arns: self.policy_arns,
            region: self.region,
            key,
        })))
    }
}

fn cache_key(b: &AssumeSpecBuilder) -> CacheKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed fields: no two different specs encode to the same bytes.
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(b"xrole-assume/cache-key/v1");
    field(b.role.as_str().as_bytes());
    field(b.external_id.as_str().as_bytes());
    field(b.session_name.as_str().as_bytes());
    field(&b.duration.as_secs().to_be_bytes());
    field(
        b.source_identity
            .as_ref()
            .map_or(&b""[..], |s| s.as_str().as_bytes()),
    );
    field(&(b.tags.len() as u64).to_be_bytes());
    for t in &b.tags {
        field(t.key().as_bytes());
        field(t.value().as_bytes());
    }
    match &b.policy {
        Some(p) => {
            field(b"policy");
            field(p.as_str().as_bytes());
        }
        None => field(b"no-policy"),
    }
    field(&(b.policy_arns.len() as u64).to_be_bytes());
    for a in &b.policy_arns {
        field(a.as_bytes());
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    CacheKey(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(ext: &str) -> AssumeSpecBuilder {
        AssumeSpec::builder(
            RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap(),
            ExternalId::parse(ext).unwrap(),
            SessionName::parse("xrole-o-p").unwrap(),
        )
    }

    #[test]
    fn limits() {
        assert!(
            base("ext-1")
                .duration(Duration::from_secs(899))
                .build()
                .is_err()
        );
        assert!(
            base("ext-1")
                .duration(Duration::from_secs(43_201))
                .build()
                .is_err()
        );
        assert!(
            base("ext-1")
                .duration(Duration::from_millis(900_500))
                .build()
                .is_err()
        );
        assert!(
            base("ext-1")
                .duration(Duration::from_secs(43_200))
                .build()
                .is_ok()
        );
        let mut b = base("ext-1");
        for i in 0..51 {
            b = b.tag(format!("k{i}"), "v").unwrap();
        }
        assert!(b.build().is_err());
        assert!(
            base("ext-1")
                .tag("K", "1")
                .unwrap()
                .tag("k", "2")
                .unwrap()
                .build()
                .is_err()
        );
        let mut b = base("ext-1");
        for i in 0..11 {
            b = b.policy_arn(format!("arn:aws:iam::aws:policy/P{i}"));
        }
        assert!(b.build().is_err());
        assert!(
            base("ext-1")
                .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
                .build()
                .is_ok()
        );
        assert!(
            base("ext-1")
                .policy_arn("arn:aws-cn:iam::aws:policy/ReadOnlyAccess")
                .build()
                .is_err()
        );
    }

    #[test]
    fn keys_separate_what_matters() {
        let a = base("ext-1").build().unwrap();
        assert!(a.key() == base("ext-1").build().unwrap().key());
        assert!(a.key() != base("ext-2").build().unwrap().key());
        assert!(
            a.key()
                != base("ext-1")
                    .duration(Duration::from_secs(1800))
                    .build()
                    .unwrap()
                    .key()
        );
        assert!(a.key() != base("ext-1").tag("a", "b").unwrap().build().unwrap().key());
        assert!(
            a.key()
                != base("ext-1")
                    .policy(SessionPolicy::new("{}").unwrap())
                    .build()
                    .unwrap()
                    .key()
        );
        // Region only picks the endpoint; tag order does not matter.
        assert!(
            a.key()
                == base("ext-1")
                    .region(Region::new("eu-west-1"))
                    .build()
                    .unwrap()
                    .key()
        );
        let t1 = base("ext-1")
            .tag("a", "1")
            .unwrap()
            .tag("b", "2")
            .unwrap()
            .build()
            .unwrap();
        let t2 = base("ext-1")
            .tag("b", "2")
            .unwrap()
            .tag("a", "1")
            .unwrap()
            .build()
            .unwrap();
        assert!(t1.key() == t2.key());
    }

    #[test]
    fn debug_hides_the_external_id() {
        let spec = base("ext-secret-value").build().unwrap();
        let shown = format!("{spec:?}");
        assert!(!shown.contains("ext-secret-value"), "{shown}");
        assert!(shown.contains("arn:aws:iam::123456789012:role/r"));
    }
}
