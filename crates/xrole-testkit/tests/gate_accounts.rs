//! Accounts: distinct ids, resources land in the session's account, every
//! service passes through the gate, and nothing outlives the fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_support;

use std::collections::HashSet;
use std::path::Path;

use aws_credential_types::provider::ProvideCredentials;
use gate_support::*;
use xrole_testkit::{Aws, Fault};

#[tokio::test]
async fn customer_accounts_are_fresh_and_distinct() {
    let aws = Aws::start().await.unwrap();
    let mut seen = HashSet::from([aws.saas_account_id(), "123456789012".to_owned()]);
    for _ in 0..5 {
        let c = aws.customer().await.unwrap();
        let id = c.account_id().to_owned();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
        assert!(seen.insert(id.clone()), "{id} handed out twice");
        // The admin identity really is in that account.
        let who = aws_sdk_sts::Client::new(&c.admin_config())
            .get_caller_identity()
            .send()
            .await
            .unwrap();
        assert_eq!(who.account(), Some(id.as_str()));
    }
    assert_eq!(
        aws.saas_principal_arn(),
        format!("arn:aws:iam::{}:user/xrole-saas", aws.saas_account_id())
    );
}

#[tokio::test]
async fn resources_made_with_a_customer_session_land_in_that_account() {
    let (aws, a, role_a) = setup().await;
    let b = aws.customer().await.unwrap();
    let role_b = b
        .create_xrole_role("xrole", &aws.saas_principal_arn(), EXT)
        .await
        .unwrap();
    let ec2_a =
        aws_sdk_ec2::Client::new(&aws.config_for(creds(&assume(&aws, &role_a, "build-a").await)));
    let ec2_b =
        aws_sdk_ec2::Client::new(&aws.config_for(creds(&assume(&aws, &role_b, "build-b").await)));

    let vpc = ec2_a
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap();
    assert_eq!(vpc.owner_id(), Some(a.account_id()));
    let vpc_id = vpc.vpc_id().unwrap();

    let in_a = aws_sdk_ec2::Client::new(&a.admin_config())
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .unwrap();
    assert_eq!(in_a.vpcs().len(), 1);
    let in_b = ec2_b.describe_vpcs().send().await.unwrap();
    assert!(
        in_b.vpcs().iter().all(|v| v.vpc_id() != Some(vpc_id)),
        "customer B sees A's VPC"
    );
    assert!(
        in_b.vpcs()
            .iter()
            .all(|v| v.owner_id() == Some(b.account_id()))
    );
}

#[tokio::test]
async fn json_protocol_requests_pass_through_and_are_counted() {
    let (aws, a, _role) = setup().await;
    let key = a
        .admin_config()
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
        key.access_key_id()
    );
    let token = key.session_token().unwrap().to_owned();
    let list = |auth: String, token: String, endpoint: String| async move {
        post_json(&endpoint, "TrentService.ListKeys", &auth, &token, "{}").await
    };
    let (status, body) = list(auth.clone(), token.clone(), aws.endpoint()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Keys\""), "{body}");
    assert_eq!(aws.gate().count("ListKeys"), 1);
    assert_eq!(aws.gate().count_for_account("ListKeys", a.account_id()), 1);

    aws.gate().fail_next("ListKeys", 1, Fault::Throttling);
    let (status, body) = list(auth.clone(), token.clone(), aws.endpoint()).await;
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["__type"], "ThrottlingException");
    let (status, _) = list(auth, token, aws.endpoint()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn dropping_the_fixture_stops_gate_and_moto() {
    let aws = Aws::start().await.unwrap();
    let gate_addr = aws.endpoint().trim_start_matches("http://").to_owned();
    let moto_pid = aws.moto().pid();
    assert!(std::net::TcpStream::connect(&gate_addr).is_ok());
    drop(aws);
    // Let the runtime run the aborted accept loop's drop.
    tokio::task::yield_now().await;
    assert!(
        !Path::new(&format!("/proc/{moto_pid}")).exists(),
        "moto {moto_pid} outlived the fixture"
    );
    assert!(
        std::net::TcpStream::connect(&gate_addr).is_err(),
        "the gate still listens on {gate_addr}"
    );
}

async fn post_json(
    endpoint: &str,
    target: &str,
    auth: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: {target}\r\nAuthorization: {auth}\r\nX-Amz-Security-Token: {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
