//! Shared by the integration tests and the benchmarks: a manual clock, a sleep that
//! moves it, and an STS stand-in that answers without a network.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep, Sleep};
use aws_smithy_async::time::{SharedTimeSource, TimeSource};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_types::SdkConfig;
use aws_types::region::Region;

/// A clock that moves only when told to (or when [`FakeSleep`] sleeps).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn starting_now() -> ManualClock {
        ManualClock(Arc::new(Mutex::new(SystemTime::now())))
    }

    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }

    pub fn shared(&self) -> SharedTimeSource {
        SharedTimeSource::new(self.clone())
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Sleeping advances the manual clock by the full duration at once, and waits
/// `1/real_divisor` of it for real (0: not at all), so a retry loop spanning
/// minutes of clock time finishes in seconds while real-time effects (a role
/// propagating at the gate) still get to happen.
#[derive(Debug, Clone)]
pub struct FakeSleep {
    pub clock: ManualClock,
    pub real_divisor: u32,
    pub slept: Arc<Mutex<Vec<Duration>>>,
}

impl FakeSleep {
    pub fn new(clock: &ManualClock, real_divisor: u32) -> FakeSleep {
        FakeSleep {
            clock: clock.clone(),
            real_divisor,
            slept: Arc::default(),
        }
    }

    pub fn shared(&self) -> SharedAsyncSleep {
        SharedAsyncSleep::new(self.clone())
    }

    pub fn total(&self) -> Duration {
        self.slept.lock().unwrap().iter().sum()
    }
}

impl AsyncSleep for FakeSleep {
    fn sleep(&self, d: Duration) -> Sleep {
        self.clock.advance(d);
        self.slept.lock().unwrap().push(d);
        let real = if self.real_divisor == 0 {
            Duration::ZERO
        } else {
            d / self.real_divisor
        };
        Sleep::new(async move {
            if real.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(real).await;
            }
        })
    }
}

/// Answers `AssumeRole` with fresh fake keys and `GetCallerIdentity` with a fixed
/// identity, records every request URI and counts the calls. No network.
#[derive(Debug, Clone, Default)]
pub struct CannedSts {
    pub uris: Arc<Mutex<Vec<String>>>,
    pub assume_role_calls: Arc<AtomicU64>,
    pub other_calls: Arc<AtomicU64>,
}

impl CannedSts {
    /// A base config signing as a static user, answered by this stand-in.
    pub fn base_config(&self, region: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDSAASUSER00000000",
                "saas-user-secret",
                None,
                None,
                "bench",
            )))
            .http_client(SharedHttpClient::new(self.clone()))
            .sleep_impl(SharedAsyncSleep::new(
                aws_smithy_async::rt::sleep::TokioSleep::new(),
            ))
            .build()
    }
}

const ASSUME_ROLE_XML: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIA{N}</AccessKeyId>
      <SecretAccessKey>fake-secret-key-{N}-wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>
      <SessionToken>fake-session-token-{N}-FQoGZXIvYXdzEJr//////////wEaDOGHzwE1S3u8zqr0ESKsAbmR1UzqgYYbBYgRk9yZMXZeIi1xgAGvhbN5wKh3RN3nyj7i9DPhoQkhYsD4ywUjc5nY3vQwoKYjR0k2XyqL2Kqa</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/xrole/session</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:session</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;

const CALLER_IDENTITY_XML: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::111122223333:user/xrole-saas</Arn>
    <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId>
    <Account>111122223333</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;

impl HttpConnector for CannedSts {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.uris.lock().unwrap().push(request.uri().to_owned());
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let xml = if body.contains("Action=AssumeRole") {
            let n = self.assume_role_calls.fetch_add(1, Ordering::Relaxed);
            ASSUME_ROLE_XML.replace("{N}", &format!("{n:016}"))
        } else {
            self.other_calls.fetch_add(1, Ordering::Relaxed);
            CALLER_IDENTITY_XML.to_owned()
        };
        let resp = HttpResponse::new(StatusCode::try_from(200u16).unwrap(), SdkBody::from(xml));
        HttpConnectorFuture::ready(Ok(resp))
    }
}

impl HttpClient for CannedSts {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// Resident set size of this process in bytes (Linux), for rough memory figures.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
