//! A Rust SaaS that embeds only `xrole-crypto` and `xrole-assume`.
//!
//! It seals a tenant's External ID the way a database row would hold it, opens
//! it again, gets a short-lived session in the customer's account through the
//! broker, and lists the customer's VPCs with `aws-sdk-ec2`.
//!
//! Run it against real AWS (the SaaS identity comes from the default provider
//! chain) or against an emulator (`AWS_ENDPOINT_URL`):
//!
//! ```sh
//! XROLE_ROLE_ARN=arn:aws:iam::111122223333:role/xrole-access \
//! XROLE_EXTERNAL_ID=xrx-... \
//! cargo run -p xrole-examples --example broker_only
//! ```

use anyhow::Context;
use aws_types::region::Region;
use xrole_assume::{AssumeSpec, Broker, RoleArn, SessionName};
use xrole_crypto::{Aad, ExternalId, Keyring};

/// What the example found in the customer's account.
#[derive(Debug)]
pub struct Listing {
    /// The VPC ids the customer session can see.
    pub vpc_ids: Vec<String>,
    /// The sealed External ID as it would sit in the database.
    pub sealed_external_id: Vec<u8>,
}

/// Seal, open, assume, list: the whole library path with no database.
pub async fn run(
    base: &aws_config::SdkConfig,
    role_arn: &str,
    external_id: &str,
    region: &str,
) -> anyhow::Result<Listing> {
    // 1. At rest the External ID is sealed, bound to its row by the AAD.
    let keyring = Keyring::generate()?;
    let aad = Aad::new("tenants", "external_id", "org_acme", "tenant_1");
    let sealed = keyring.seal(external_id.as_bytes(), &aad)?;

    // 2. At use, it is opened for exactly one AssumeRole.
    let opened = keyring.open(&sealed, &aad)?;
    let external_id = ExternalId::parse(std::str::from_utf8(opened.expose_secret())?)?;

    // 3. The broker assumes the customer's role and caches the session.
    let role: RoleArn = role_arn
        .parse()
        .context("XROLE_ROLE_ARN is not a role ARN")?;
    let broker = Broker::new(base);
    let spec = AssumeSpec::builder(
        role,
        external_id,
        SessionName::for_tenant("acme", "inventory")?,
    )
    .build()?;
    let customer = broker.sdk_config(&spec, Region::new(region.to_owned()));

    // 4. Any aws-sdk client runs on the customer's session.
    let ec2 = aws_sdk_ec2::Client::new(&customer);
    let vpcs = ec2.describe_vpcs().send().await?;
    let vpc_ids = vpcs
        .vpcs()
        .iter()
        .filter_map(|v| v.vpc_id().map(str::to_owned))
        .collect();
    Ok(Listing {
        vpc_ids,
        sealed_external_id: sealed,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role_arn = std::env::var("XROLE_ROLE_ARN").context("set XROLE_ROLE_ARN")?;
    let external_id = std::env::var("XROLE_EXTERNAL_ID").context("set XROLE_EXTERNAL_ID")?;
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let listing = run(&base, &role_arn, &external_id, &region).await?;
    println!(
        "sealed External ID: {} bytes (never stored in clear)",
        listing.sealed_external_id.len()
    );
    println!("VPCs in the customer's account: {}", listing.vpc_ids.len());
    for id in &listing.vpc_ids {
        println!("  {id}");
    }
    Ok(())
}
