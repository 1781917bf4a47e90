//! Leases: a job that outlives its lease keeps it (renewed), so no other
//! worker takes it over; the configured SaaS principal is what customers see.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_longer_than_its_lease_is_renewed_not_taken_over() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        // Three workers compete; the lease is 4 s.
        let app = spawn_flow_app(db, &aws, 3).await;
        let org = app.create_org("Acme").await;
        let created = app.create_link(&org, None, "provisioning").await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        let role = customer
            .create_xrole_role(
                "xrole",
                &aws.saas_principal_arn(),
                created["external_id"].as_str().unwrap(),
            )
            .await
            .unwrap();
        let res = app
            .request(
                reqwest::Method::PUT,
                &format!("/v1/aws-accounts/{link_id}/role"),
                Some(&org.key),
                None,
                Some(&json!({"role_arn": role})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(app.settled_link(&org, &link_id).await["state"], "active");

        // CreateVpc takes longer than two leases.
        aws.gate().delay(Some("CreateVpc"), Duration::from_secs(9));
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/vpcs"),
                &org.key,
                &json!({"name": "slow", "cidr_block": "10.50.0.0/16", "availability_zones": ["us-east-1a"]}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        let job = app.finished_job(&org, job["id"].as_str().unwrap()).await;
        aws.gate().delay(Some("CreateVpc"), Duration::ZERO);
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(
            job["attempts"], 1,
            "renewed by its worker, never taken over: {job}"
        );
        let live = tagged_resources(&customer.admin_config(), &link_id).await;
        assert_eq!(
            live.iter().filter(|r| r.starts_with("vpc-")).count(),
            1,
            "{live:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_configured_saas_principal_is_handed_to_customers() {
    let aws = Aws::start().await.unwrap();
    let settings = xrole_server::link_flow::AwsSettings {
        saas_principal_arn: Some("arn:aws:iam::111122223333:role/xrole-prod".to_owned()),
        template_url: Some("https://templates.example.com/xrole-role.yaml".to_owned()),
        ..test_settings()
    };
    let db = TestDb::sqlite().unwrap();
    let keyring = std::sync::Arc::new(xrole_crypto::Keyring::generate().unwrap());
    let app = spawn_on(db.url(), keyring, &aws, settings, 0).await;
    let org = app.create_org("Acme").await;
    let created = app.create_link(&org, None, "read_only").await;
    let o = &created["onboarding"];
    assert_eq!(
        o["parameters"]["SaasPrincipalArn"],
        "arn:aws:iam::111122223333:role/xrole-prod"
    );
    assert_eq!(o["parameters"]["AccessLevel"], "ReadOnly");
    assert_eq!(
        o["template_url"],
        "https://templates.example.com/xrole-role.yaml"
    );
    assert!(
        o["quick_create_url"]
            .as_str()
            .unwrap()
            .contains("templateURL=https%3A%2F%2Ftemplates.example.com%2Fxrole-role.yaml"),
        "{o}"
    );
    drop(db);
}
