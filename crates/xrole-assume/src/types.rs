//! Parsed identifiers: once a value of these types exists, it is valid.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The characters STS allows in session names and source identities: `[\w+=,.@-]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)
}

fn invalid(what: &str, why: impl fmt::Display) -> Error {
    Error::InvalidSpec {
        reason: format!("{what}: {why}"),
    }
}

/// A 12-digit AWS account id.
///
/// ```
/// let id: xrole_assume::AwsAccountId = "123456789012".parse()?;
/// assert_eq!(id.as_str(), "123456789012");
/// assert!("12345".parse::<xrole_assume::AwsAccountId>().is_err());
/// # Ok::<(), xrole_assume::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsAccountId([u8; 12]);

impl AwsAccountId {
    /// Parses exactly 12 ASCII digits.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bytes: [u8; 12] = s
            .as_bytes()
            .try_into()
            .map_err(|_| invalid("account id", "must be 12 digits"))?;
        if bytes.iter().all(u8::is_ascii_digit) {
            Ok(AwsAccountId(bytes))
        } else {
            Err(invalid("account id", "must be 12 digits"))
        }
    }

    /// The 12 digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for AwsAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AwsAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AwsAccountId({})", self.as_str())
    }
}

impl FromStr for AwsAccountId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for AwsAccountId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// The AWS partitions xrole can assume roles in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Partition {
    /// Commercial regions (`aws`).
    Aws,
    /// China regions (`aws-cn`).
    AwsCn,
    /// AWS GovCloud (US) regions (`aws-us-gov`).
    AwsUsGov,
}

impl Partition {
    /// The partition's name as it appears in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }

    /// The region whose STS endpoint serves this partition when nothing else is known.
    pub fn default_region(self) -> &'static str {
        match self {
            Partition::Aws => "us-east-1",
            Partition::AwsCn => "cn-north-1",
            Partition::AwsUsGov => "us-gov-west-1",
        }
    }

    /// The partition a region name belongs to.
    pub fn of_region(region: &str) -> Partition {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    fn parse(s: &str) -> Option<Partition> {
        match s {
            "aws" => Some(Partition::Aws),
            "aws-cn" => Some(Partition::AwsCn),
            "aws-us-gov" => Some(Partition::AwsUsGov),
            _ => None,
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<account>:role/<path/><name>`.
///
/// ```
/// let arn: xrole_assume::RoleArn = "arn:aws-cn:iam::123456789012:role/team/xrole".parse()?;
/// assert_eq!(arn.partition(), xrole_assume::Partition::AwsCn);
/// assert_eq!(arn.account_id().as_str(), "123456789012");
/// assert_eq!(arn.path(), "/team/");
/// assert_eq!(arn.name(), "xrole");
/// # Ok::<(), xrole_assume::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    arn: String,
    partition: Partition,
    account: AwsAccountId,
    // Byte offset of the role path (the '/' after "role") inside `arn`.
    path_start: usize,
    // Byte offset of the role name inside `arn`.
    name_start: usize,
}

impl RoleArn {
    /// Parses and checks a role ARN (partition, 12-digit account, path and name rules of IAM).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| invalid("role ARN", why);
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(res)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected arn:<partition>:iam::<account>:role/<name>"));
        };
        let partition = Partition::parse(partition)
            .ok_or_else(|| bad("unknown partition (aws, aws-cn, aws-us-gov)"))?;
        if service != "iam" || !region.is_empty() {
            return Err(bad("not an IAM ARN"));
        }
        let account = AwsAccountId::parse(account).map_err(|_| bad("account must be 12 digits"))?;
        let Some(path_and_name) = res.strip_prefix("role") else {
            return Err(bad("not a role"));
        };
        // path_and_name = "/" [path "/"] name; the path is "/" or "/a/b/".
        let slash = path_and_name.rfind('/').ok_or_else(|| bad("not a role"))?;
        let (path, name) = path_and_name.split_at(slash + 1);
        if !path.starts_with('/')
            || path.len() > 512
            || !path.bytes().all(|b| (0x21..=0x7e).contains(&b))
            || path.contains("//")
        {
            return Err(bad("invalid role path"));
        }
        if name.is_empty() || name.len() > 64 || !name.bytes().all(is_name_byte) {
            return Err(bad(
                "role name must be 1-64 characters of [A-Za-z0-9_+=,.@-]",
            ));
        }
        let name_start = s.len() - name.len();
        let path_start = name_start - path.len();
        Ok(RoleArn {
            arn: s.to_owned(),
            partition,
            account,
            path_start,
            name_start,
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The account the role lives in, as written in the ARN.
    pub fn account_id(&self) -> AwsAccountId {
        self.account
    }

    /// The role path, `/` when none was given.
    pub fn path(&self) -> &str {
        &self.arn[self.path_start..self.name_start]
    }

    /// The role name.
    pub fn name(&self) -> &str {
        &self.arn[self.name_start..]
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl fmt::Debug for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleArn({})", self.arn)
    }
}

impl FromStr for RoleArn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for RoleArn {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// An STS role session name: 2–64 characters of `[\w+=,.@-]`.
///
/// Build it from the tenant and the purpose, `xrole-<org>-<purpose>`; characters STS
/// refuses become `-` and the result is cut to 64 characters.
///
/// ```
/// use xrole_assume::SessionName;
/// let name = SessionName::for_tenant("acme", "provision vpc")?;
/// assert_eq!(name.as_str(), "xrole-acme-provision-vpc");
/// assert!(SessionName::parse("x").is_err());
/// # Ok::<(), xrole_assume::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionName(String);

/// The longest session name STS accepts.
pub const MAX_SESSION_NAME_LEN: usize = 64;

impl SessionName {
    /// Checks a ready-made name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if (2..=MAX_SESSION_NAME_LEN).contains(&s.len()) && s.bytes().all(is_name_byte) {
            Ok(SessionName(s.to_owned()))
        } else {
            Err(invalid(
                "session name",
                "must be 2-64 characters of [A-Za-z0-9_+=,.@-]",
            ))
        }
    }

    /// `xrole-<org>-<purpose>`, made valid: other characters become `-`, cut to 64.
    ///
    /// Fails only when `org` is empty.
    pub fn for_tenant(org: &str, purpose: &str) -> Result<Self, Error> {
        if org.is_empty() {
            return Err(invalid("session name", "the organisation is empty"));
        }
        let mut name = String::with_capacity(MAX_SESSION_NAME_LEN);
        name.push_str("xrole-");
        push_sanitized(&mut name, org);
        if !purpose.is_empty() {
            name.push('-');
            push_sanitized(&mut name, purpose);
        }
        // Every byte is ASCII after sanitising, so any cut is on a character boundary.
        name.truncate(MAX_SESSION_NAME_LEN);
        Ok(SessionName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_sanitized(out: &mut String, s: &str) {
    for c in s.chars() {
        if out.len() >= MAX_SESSION_NAME_LEN {
            return;
        }
        out.push(if c.is_ascii() && is_name_byte(c as u8) {
            c
        } else {
            '-'
        });
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionName({})", self.0)
    }
}

impl FromStr for SessionName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// The `SourceIdentity` recorded in CloudTrail for every call of the session (for
/// example the acting user): 2–64 characters of `[\w+=,.@-]`, not starting with `aws:`.
///
/// The role's trust policy must allow `sts:SetSourceIdentity`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SourceIdentity(String);

impl SourceIdentity {
    /// Checks the STS rules.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if (2..=64).contains(&s.len()) && s.bytes().all(is_name_byte) {
            Ok(SourceIdentity(s.to_owned()))
        } else {
            Err(invalid(
                "source identity",
                "must be 2-64 characters of [A-Za-z0-9_+=,.@-]",
            ))
        }
    }

    /// The identity text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SourceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceIdentity({})", self.0)
    }
}

impl FromStr for SourceIdentity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// STS's limit on the plain text of an inline session policy.
pub const MAX_SESSION_POLICY_CHARS: usize = 2048;

/// An inline session policy (JSON) that narrows the role's permissions for one session.
///
/// Checked against STS's plain-text limit of 2,048 characters and its character set
/// before anything is sent. STS also checks a *packed* size (policy, policy ARNs and
/// tags together, compressed); exceeding it is reported as [`Error::InvalidSpec`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionPolicy(String);

impl SessionPolicy {
    /// Checks the length and the character set (tab, LF, CR, U+0020–U+00FF).
    pub fn new(json: impl Into<String>) -> Result<Self, Error> {
        let json = json.into();
        let chars = json.chars().count();
        if chars == 0 || chars > MAX_SESSION_POLICY_CHARS {
            return Err(invalid(
                "session policy",
                format!("{chars} characters, STS accepts 1-{MAX_SESSION_POLICY_CHARS}"),
            ));
        }
        if !json
            .chars()
            .all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'))
        {
            return Err(invalid(
                "session policy",
                "characters outside U+0020-U+00FF",
            ));
        }
        Ok(SessionPolicy(json))
    }

    /// The policy document.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionPolicy({} chars)", self.0.chars().count())
    }
}

/// A session tag (`aws:PrincipalTag/<key>` inside the customer's account).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionTag {
    key: String,
    value: String,
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

impl SessionTag {
    /// Key 1–128 and value 0–256 characters of letters, digits, spaces and `_.:/=+-@`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let (key, value) = (key.into(), value.into());
        let key_len = key.chars().count();
        if !(1..=128).contains(&key_len) || !key.chars().all(is_tag_char) || key.starts_with("aws:")
        {
            return Err(invalid(
                "session tag key",
                "must be 1-128 letters, digits, spaces or _.:/=+-@",
            ));
        }
        if value.chars().count() > 256 || !value.chars().all(is_tag_char) {
            return Err(invalid(
                "session tag value",
                "must be 0-256 letters, digits, spaces or _.:/=+-@",
            ));
        }
        Ok(SessionTag { key, value })
    }

    /// The tag key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The tag value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SessionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!(AwsAccountId::parse("123456789012").is_ok());
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "１23456789012",
        ] {
            assert!(AwsAccountId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_arns() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/xrole-access").unwrap();
        assert_eq!(arn.partition(), Partition::Aws);
        assert_eq!(arn.path(), "/");
        assert_eq!(arn.name(), "xrole-access");
        assert_eq!(
            arn.to_string(),
            "arn:aws:iam::123456789012:role/xrole-access"
        );
        let gov = RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/a/b/R_1+=,.@-").unwrap();
        assert_eq!(gov.partition(), Partition::AwsUsGov);
        assert_eq!(gov.path(), "/a/b/");
        assert_eq!(gov.name(), "R_1+=,.@-");
        for bad in [
            "",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam:us-east-1:123456789012:role/r",
            "arn:aws:sts::123456789012:role/r",
            "arn:aws-iso:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:role/has space",
            "arn:aws:iam::123456789012:role//r",
            "arn:aws:iam::123456789012:roles/r",
            "arn:aws:iam::123456789012:rolex",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        assert!(RoleArn::parse(&long).is_err());
    }

    #[test]
    fn session_names() {
        assert!(SessionName::parse("ab").is_ok());
        assert!(SessionName::parse(&"a".repeat(64)).is_ok());
        assert!(SessionName::parse(&"a".repeat(65)).is_err());
        assert!(SessionName::parse("a b").is_err());
        let n = SessionName::for_tenant("org/ü 1", "run:job").unwrap();
        assert_eq!(n.as_str(), "xrole-org---1-run-job");
        let long = SessionName::for_tenant(&"o".repeat(40), &"p".repeat(40)).unwrap();
        assert_eq!(long.as_str().len(), 64);
        assert!(SessionName::parse(long.as_str()).is_ok());
        assert!(SessionName::for_tenant("", "x").is_err());
        assert_eq!(
            SessionName::for_tenant("o", "").unwrap().as_str(),
            "xrole-o"
        );
    }

    #[test]
    fn policies_and_tags() {
        assert!(SessionPolicy::new("x".repeat(MAX_SESSION_POLICY_CHARS)).is_ok());
        assert!(SessionPolicy::new("x".repeat(MAX_SESSION_POLICY_CHARS + 1)).is_err());
        assert!(SessionPolicy::new("").is_err());
        assert!(SessionPolicy::new("{\u{2603}}").is_err());
        assert!(SessionTag::new("xrole:org", "acme 1").is_ok());
        assert!(SessionTag::new("", "v").is_err());
        assert!(SessionTag::new("aws:x", "v").is_err());
        assert!(SessionTag::new("k", "v".repeat(257)).is_err());
        assert!(SessionTag::new("k", "a;b").is_err());
        assert!(SourceIdentity::parse("alice@example.com").is_ok());
        assert!(SourceIdentity::parse("aws:x").is_err());
    }
}
