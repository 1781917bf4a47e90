//! [`TenantCredentials`]: a tenant session as an aws-sdk credentials provider.

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials};
use aws_types::region::Region;

use crate::{AssumeSpec, Broker};

/// The credentials of one tenant session, served by a [`Broker`].
///
/// Plug it into any aws-sdk client config with `.credentials_provider(...)`, or use
/// [`Broker::sdk_config`], which does that for you.
#[derive(Clone, Debug)]
pub struct TenantCredentials {
    broker: Broker,
    spec: AssumeSpec,
    region: Option<Region>,
}

impl TenantCredentials {
    pub(crate) fn new(broker: Broker, spec: AssumeSpec, region: Option<Region>) -> Self {
        TenantCredentials {
            broker,
            spec,
            region,
        }
    }

    /// The session this provider serves.
    pub fn spec(&self) -> &AssumeSpec {
        &self.spec
    }
}

impl ProvideCredentials for TenantCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.broker
                .credentials_in(&self.spec, self.region.as_ref())
                .await
                .map_err(|e| {
                    if e.is_configuration() {
                        CredentialsError::invalid_configuration(e)
                    } else {
                        CredentialsError::provider_error(e)
                    }
                })
        })
    }
}
