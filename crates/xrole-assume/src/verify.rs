//! [`Broker::verify_link`]: is this role ours, safe and assumable?

use std::time::Duration;

use aws_credential_types::Credentials;
use tracing::{Instrument, debug, info, info_span, warn};
use xrole_crypto::ExternalId;

use crate::sts::{Class, Request};
use crate::types::{AwsAccountId, RoleArn, SessionName};
use crate::{Broker, Error};

/// The session name of verification calls, as it appears in the customer's CloudTrail.
pub const VERIFY_SESSION_NAME: &str = "xrole-verify";

/// What [`Broker::verify_link`] found.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// Assumable with the External ID, in the expected account, and refused without
    /// the External ID: safe to use.
    Verified {
        /// The account `GetCallerIdentity` reported.
        account: AwsAccountId,
        /// The assumed-role ARN of the verification session.
        caller_arn: String,
        /// AssumeRole attempts until the role was assumable (more than 1 while it propagated).
        attempts: u32,
    },
    /// The role can be assumed **without** the External ID: anyone who learns its ARN
    /// and trusts the same principal can use it (confused deputy). Never use it.
    Insecure,
    /// The role lives in another account than the one the link is for.
    WrongAccount {
        /// The account `GetCallerIdentity` reported.
        actual: AwsAccountId,
    },
    /// The role cannot be assumed with the External ID: AccessDenied for the whole
    /// propagation window ([`Error::NotAssumable`]), STS disabled in the region, or a
    /// request STS rejects. The error says which.
    NotAssumable(Error),
}

impl Broker {
    /// Checks a customer's role before a link is used, in three steps:
    ///
    /// 1. `AssumeRole` with the External ID, retrying AccessDenied with jittered
    ///    backoff for up to the propagation window (default 2 min: new roles take a
    ///    while to become assumable);
    /// 2. `GetCallerIdentity` with the session must report `expected_account`;
    /// 3. `AssumeRole` **without** the External ID must be denied.
    ///
    /// `Err` means the answer is unknown (throttling, network, the broker's own
    /// identity): try again later, the link is neither good nor bad. Nothing is cached.
    pub async fn verify_link(
        &self,
        role: &RoleArn,
        external_id: &ExternalId,
        expected_account: &AwsAccountId,
    ) -> Result<VerifyOutcome, Error> {
        let region = self.sts_region(role, None, None);
        let span = info_span!("verify_link", role = %role, expected_account = %expected_account, region = %region);
        self.verify_inner(role, external_id, expected_account, &region)
            .instrument(span)
            .await
    }

    async fn verify_inner(
        &self,
        role: &RoleArn,
        external_id: &ExternalId,
        expected_account: &AwsAccountId,
        region: &str,
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
        let started = self.now();
        let mut attempts = 0u32;
        let assumed = loop {
            attempts += 1;
            match self
                .call_sts(self.max_attempts(), false, || {
                    self.sts().assume_role(region, &with_id)
                })
                .await
            {
                Ok(a) => break a,
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
        // The confused-deputy probe: the same call without the External ID must fail.
        let without_id = Request {
            external_id: None,
            ..with_id
        };
        match self
            .call_sts(self.max_attempts(), true, || {
                self.sts().assume_role(region, &without_id)
            })
            .await
        {
            Ok(_) => {
                warn!("role is assumable WITHOUT the External ID: insecure, never use it");
                Ok(VerifyOutcome::Insecure)
            }
            Err(f) if f.class == Class::AccessDenied => {
                info!(attempts, "link verified");
                Ok(VerifyOutcome::Verified {
                    account: actual,
                    caller_arn,
                    attempts,
                })
            }
            Err(f) => Err(f.into_error(role, region)),
        }
    }
}
