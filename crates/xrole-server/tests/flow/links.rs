//! Links whose role is unsafe, in the wrong account or read-only; request
//! validation of the provisioning routes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

async fn problem_code(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_without_the_external_id_condition_is_insecure_and_never_used() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        // Trusts the SaaS principal, but with no sts:ExternalId condition.
        let open = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": aws.saas_principal_arn()}, "Action": "sts:AssumeRole"}]});
        let role = customer
            .create_role("xrole-open", &open.to_string(), 3600)
            .await
            .unwrap();
        let res = put_role(&app, &org, &link_id, &role).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let link = app.settled_link(&org, &link_id).await;
        assert_eq!(link["state"], "insecure", "{link}");
        assert_eq!(link["last_verification_result"], "insecure");
        assert!(
            link["last_error"]
                .as_str()
                .unwrap()
                .contains("sts:ExternalId"),
            "{link}"
        );

        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/vpcs"),
                &org.key,
                &json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]}),
            )
            .await;
        let (status, v) = problem_code(res).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (409, Some("link_not_active")),
            "{v}"
        );
        // The only jobs are verifications: nothing was provisioned.
        let jobs = app.get_json("/v1/jobs", &org.key).await;
        assert!(
            jobs["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["kind"] == "verify_link")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_in_another_account_is_rejected() {
    let aws = Aws::start().await.unwrap();
    let db = TestDb::sqlite().unwrap();
    let customer = aws.customer().await.unwrap();
    let other = aws.customer().await.unwrap();
    let app = spawn_flow_app(db, &aws, 1).await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_link(&org, Some(customer.account_id()), "provisioning")
        .await;
    let link_id = created["id"].as_str().unwrap().to_owned();
    let external_id = created["external_id"].as_str().unwrap();
    let role = other
        .create_xrole_role("xrole", &aws.saas_principal_arn(), external_id)
        .await
        .unwrap();
    // A well-formed ARN that conflicts with the link's account: 409, not a
    // 422 (the body is valid; schemathesis' positive_data_acceptance).
    let (status, v) = problem_code(put_role(&app, &org, &link_id, &role).await).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["code"], "account_mismatch");
    let link = app
        .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
        .await;
    assert_eq!(link["state"], "pending");
    assert!(link["role_arn"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_link_refuses_provisioning_and_requests_are_validated() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;

        // A read-only link, verified active.
        let ro = app.create_link(&org, None, "read_only").await;
        let ro_id = ro["id"].as_str().unwrap().to_owned();
        let role = customer
            .create_xrole_role(
                "xrole-ro",
                &aws.saas_principal_arn(),
                ro["external_id"].as_str().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            put_role(&app, &org, &ro_id, &role).await.status(),
            StatusCode::ACCEPTED
        );
        let link = app.settled_link(&org, &ro_id).await;
        assert_eq!(link["state"], "active", "{link}");
        assert_eq!(
            link["aws_account_id"],
            customer.account_id(),
            "learned from the role"
        );
        let vpc = json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]});
        let (status, v) = problem_code(
            app.post(&format!("/v1/aws-accounts/{ro_id}/vpcs"), &org.key, &vpc)
                .await,
        )
        .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (409, Some("link_read_only")),
            "{v}"
        );

        // A provisioning link: bad plans are refused up front, naming the field.
        let rw = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let rw_id = rw["id"].as_str().unwrap().to_owned();
        let role = customer
            .create_xrole_role(
                "xrole-rw",
                &aws.saas_principal_arn(),
                rw["external_id"].as_str().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            put_role(&app, &org, &rw_id, &role).await.status(),
            StatusCode::ACCEPTED
        );
        assert_eq!(app.settled_link(&org, &rw_id).await["state"], "active");
        let path = format!("/v1/aws-accounts/{rw_id}/vpcs");
        // Idempotency-Key is required.
        let res = app
            .request(Method::POST, &path, Some(&org.key), None, Some(&vpc))
            .await;
        let (status, v) = problem_code(res).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("idempotency_key_required"))
        );
        for (body, field) in [
            (
                json!({"name": "prod", "cidr_block": "8.8.0.0/16", "availability_zones": ["us-east-1a"]}),
                "cidr_block",
            ),
            (
                json!({"name": "prod", "cidr_block": "10.0.0.0/33", "availability_zones": ["us-east-1a"]}),
                "cidr_block",
            ),
            (
                json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["eu-west-1a"]}),
                "availability_zones",
            ),
            (
                json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": []}),
                "availability_zones",
            ),
            (
                json!({"name": "Prod!", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]}),
                "name",
            ),
        ] {
            let (status, v) = problem_code(app.post(&path, &org.key, &body).await).await;
            assert_eq!(status, 422, "{body}: {v}");
            assert_eq!(v["field"], field, "{body}: {v}");
        }
        let bad_vpc = json!({"name": "web", "vpc_id": uuid::Uuid::now_v7().to_string(), "instance_type": "t3.micro"});
        let (status, v) = problem_code(
            app.post(
                &format!("/v1/aws-accounts/{rw_id}/instances"),
                &org.key,
                &bad_vpc,
            )
            .await,
        )
        .await;
        assert_eq!((status, v["field"].as_str()), (422, Some("vpc_id")), "{v}");
        let bad_engine = json!({"name": "main", "vpc_id": "vpc-123", "engine": "oracle",
            "instance_class": "db.t3.micro", "allocated_storage_gb": 20});
        let (status, _) = problem_code(
            app.post(
                &format!("/v1/aws-accounts/{rw_id}/databases"),
                &org.key,
                &bad_engine,
            )
            .await,
        )
        .await;
        assert_eq!(status, 422);
        let jobs = app.get_json("/v1/jobs", &org.key).await;
        assert!(
            jobs["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["kind"] == "verify_link"),
            "no job for refused requests"
        );

        // Another organization sees none of it.
        let other = app.create_org("Other").await;
        for path in [
            format!("/v1/aws-accounts/{rw_id}"),
            format!("/v1/aws-accounts/{rw_id}/resources"),
        ] {
            let res = app
                .request(Method::GET, &path, Some(&other.key), None, None)
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let res = app.post(&path, &other.key, &vpc).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_that_does_not_trust_xrole_fails_with_a_reason() {
    let aws = Aws::start().await.unwrap();
    let db = TestDb::sqlite().unwrap();
    let customer = aws.customer().await.unwrap();
    let app = spawn_flow_app(db, &aws, 1).await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_link(&org, Some(customer.account_id()), "provisioning")
        .await;
    let link_id = created["id"].as_str().unwrap().to_owned();
    // Trusts someone else (with the right External ID): never assumable by xrole.
    let elsewhere = format!("arn:aws:iam::{}:user/someone-else", customer.account_id());
    let trust =
        xrole_testkit::xrole_trust_policy(&elsewhere, created["external_id"].as_str().unwrap());
    let role = customer
        .create_role("xrole-other", &trust, 3600)
        .await
        .unwrap();
    assert_eq!(
        put_role(&app, &org, &link_id, &role).await.status(),
        StatusCode::ACCEPTED
    );
    let link = app.settled_link(&org, &link_id).await;
    assert_eq!(link["state"], "failed", "{link}");
    assert_eq!(link["last_verification_result"], "not_assumable");
    let reason = link["last_error"].as_str().unwrap();
    assert!(reason.contains("trusts the principal"), "{reason}");
    // Verify again: a new job, the same conclusion.
    let res = app
        .request(
            Method::POST,
            &format!("/v1/aws-accounts/{link_id}/verify"),
            Some(&org.key),
            None,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(app.settled_link(&org, &link_id).await["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_link_is_gone_with_its_jobs() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        let role = customer
            .create_xrole_role(
                "xrole",
                &aws.saas_principal_arn(),
                created["external_id"].as_str().unwrap(),
            )
            .await
            .unwrap();
        let res = put_role(&app, &org, &link_id, &role).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        let job_id = job["id"].as_str().unwrap().to_owned();
        app.settled_link(&org, &link_id).await;
        app.finished_job(&org, &job_id).await;

        let path = format!("/v1/aws-accounts/{link_id}");
        let res = app
            .request(Method::DELETE, &path, Some(&org.key), None, None)
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        // Gone, with its jobs: nothing answers 200 for it any more.
        for gone in [
            path.clone(),
            format!("{path}/resources"),
            format!("/v1/jobs/{job_id}"),
        ] {
            let res = app
                .request(Method::GET, &gone, Some(&org.key), None, None)
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{gone}");
        }
        let res = app
            .request(Method::DELETE, &path, Some(&org.key), None, None)
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let events = audit_events(&app, &org).await;
        let deleted = events
            .iter()
            .find(|e| e["action"] == "aws_account.deleted")
            .unwrap();
        assert_eq!(deleted["details"]["deleted_jobs"], 1, "{deleted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_list_shows_each_link_with_its_own_external_id_page_by_page() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;
        let other = app.create_org("Beta").await;
        app.create_link(&other, None, "read_only").await;
        let mut made = Vec::new();
        for _ in 0..3 {
            let c = app.create_link(&org, None, "read_only").await;
            made.push((c["id"].clone(), c["external_id"].clone()));
        }
        made.reverse(); // newest first, as listed
        let mut seen = Vec::new();
        let mut path = "/v1/aws-accounts?limit=2".to_owned();
        loop {
            let page = app.get_json(&path, &org.key).await;
            for l in page["data"].as_array().unwrap() {
                seen.push((l["id"].clone(), l["external_id"].clone()));
            }
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/aws-accounts?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, made);
    }
}
