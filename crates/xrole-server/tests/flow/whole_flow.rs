//! org + key → link → template in the customer's account → the template's
//! Lambda sends the signed callback → active → VPC, EC2, RDS → teardown.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_flow_from_link_to_teardown() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let backend = format!("{:?}", db.backend());
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 2).await;
        let org = app.create_org("Acme").await;

        // The link: pending, an External ID, the stack's parameters.
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["state"], "pending", "{backend}");
        let external_id = created["external_id"].as_str().unwrap().to_owned();
        assert!(external_id.len() >= 20);
        let onboarding = &created["onboarding"];
        let params = &onboarding["parameters"];
        assert_eq!(params["ExternalId"], external_id.as_str());
        assert_eq!(
            params["SaasPrincipalArn"],
            aws.saas_principal_arn().as_str(),
            "found with GetCallerIdentity"
        );
        assert_eq!(params["AccessLevel"], "Provisioning");
        assert_eq!(params["LinkId"], link_id.as_str());
        assert_eq!(
            params["CallbackUrl"],
            app.url("/v1/callbacks/cloudformation").as_str()
        );
        let secret = params["CallbackSecret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        let quick = onboarding["quick_create_url"].as_str().unwrap();
        assert!(quick.starts_with("https://console.aws.amazon.com/cloudformation/home?region=us-east-1#/stacks/quickcreate?"));
        assert!(quick.contains("param_ExternalId="), "{quick}");
        assert_eq!(
            onboarding["template_url"],
            app.url("/v1/cloudformation/xrole-role.yaml").as_str()
        );
        assert!(onboarding["expires_at"].is_string());

        // The secret is shown once: never in GET.
        let shown = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert!(!shown.to_string().contains(&secret));
        assert_eq!(shown["external_id"], external_id.as_str());

        // The template route serves the file CloudFormation deploys.
        let t = app
            .request(
                Method::GET,
                "/v1/cloudformation/xrole-role.yaml",
                None,
                None,
                None,
            )
            .await;
        assert_eq!(t.status(), StatusCode::OK);
        assert_eq!(
            t.text().await.unwrap(),
            std::fs::read_to_string(template_path()).unwrap()
        );

        // The customer deploys the stack; its Lambda calls back, signed.
        let stack = deploy_stack(&customer, onboarding).await;
        let bucket = ResponseBucket::start().await;
        let output = run_lambda("Create", &stack, onboarding, &bucket).await;
        let answer = bucket.last_answer();
        assert_eq!(answer["Status"], "SUCCESS", "{answer} {output}");

        let link = app.settled_link(&org, &link_id).await;
        assert_eq!(link["state"], "active", "{backend}: {link}");
        assert_eq!(link["role_arn"], stack.role_arn.as_str());
        assert_eq!(link["aws_account_id"], customer.account_id());
        assert_eq!(link["last_verification_result"], "verified");

        // VPC, then instances and a database inside it.
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/vpcs"),
                &org.key,
                &json!({"name": "prod", "cidr_block": "10.20.0.0/16", "availability_zones": ["us-east-1a", "us-east-1b"]}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::ACCEPTED,
            "{}",
            res.text().await.unwrap()
        );
        let job: Value = res.json().await.unwrap();
        assert_eq!(job["kind"], "provision_vpc");
        let job = app.finished_job(&org, job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert!(job["progress"]["total"].as_i64().unwrap() > 0);
        assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
        let vpc = job["resources"][0].clone();
        assert_eq!(vpc["kind"], "vpc");
        let vpc_id = vpc["id"].as_str().unwrap().to_owned();

        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/instances"),
                &org.key,
                &json!({"name": "web", "vpc_id": vpc_id, "instance_type": "t3.micro", "count": 2}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::ACCEPTED,
            "{}",
            res.text().await.unwrap()
        );
        let ijob: Value = res.json().await.unwrap();
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/databases"),
                &org.key,
                &json!({"name": "main", "vpc_id": vpc_id, "engine": "postgres", "instance_class": "db.t3.micro",
                        "allocated_storage_gb": 20}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::ACCEPTED,
            "{}",
            res.text().await.unwrap()
        );
        let djob: Value = res.json().await.unwrap();
        let ijob = app.finished_job(&org, ijob["id"].as_str().unwrap()).await;
        assert_eq!(ijob["state"], "succeeded", "{ijob}");
        assert_eq!(ijob["resources"].as_array().unwrap().len(), 2, "{ijob}");
        let djob = app.finished_job(&org, djob["id"].as_str().unwrap()).await;
        assert_eq!(djob["state"], "succeeded", "{djob}");
        assert_eq!(djob["resources"][0]["kind"], "rds_instance");

        // Everything exists, tagged, in the customer's account, and nothing in the SaaS account.
        let listed = app
            .get_json(&format!("/v1/aws-accounts/{link_id}/resources"), &org.key)
            .await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 4, "{listed}");
        let live = tagged_resources(&customer.admin_config(), &link_id).await;
        assert!(live.iter().any(|r| r.starts_with("vpc-")), "{live:?}");
        assert_eq!(
            live.iter().filter(|r| r.starts_with("i-")).count(),
            2,
            "{live:?}"
        );
        let db_identifier = djob["resources"][0]["aws_id"].as_str().unwrap();
        assert!(live.iter().any(|r| r == db_identifier), "{live:?}");
        assert!(
            tagged_resources(&aws.saas_config(), &link_id)
                .await
                .is_empty(),
            "nothing in the SaaS account"
        );
        let one = app
            .get_json(&format!("/v1/resources/{vpc_id}"), &org.key)
            .await;
        assert_eq!(one["tags"]["xrole:managed-by"], "xrole");
        assert_eq!(one["tags"]["xrole:link"], link_id.as_str());

        // Every AssumeRole is in the audit trail with its purpose and session name.
        let events = audit_events(&app, &org).await;
        let assumes: Vec<&Value> = events
            .iter()
            .filter(|e| e["action"] == "aws.assume_role")
            .collect();
        assert!(assumes.len() >= 4, "verify + three provisioning jobs");
        assert!(assumes.iter().any(|e| e["details"]["purpose"] == "verify"));
        let provision = assumes
            .iter()
            .find(|e| e["details"]["purpose"] == "provision")
            .unwrap();
        assert!(
            provision["details"]["session_name"]
                .as_str()
                .unwrap()
                .starts_with("xrole-")
        );
        assert!(provision["actor"].as_str().unwrap().starts_with("user:"));
        assert!(
            provision["details"]["source_identity"]
                .as_str()
                .unwrap()
                .starts_with("xrole-user-"),
            "{provision}"
        );

        // The broker's and the workers' counters are in /metrics.
        let metrics = app
            .request(Method::GET, "/metrics", None, None, None)
            .await
            .text()
            .await
            .unwrap();
        for name in [
            "xrole_broker_sts_calls_total",
            "xrole_jobs_succeeded_total",
            "xrole_jobs_claimed_total",
        ] {
            assert!(metrics.contains(name), "{name} missing from /metrics");
        }

        // The link cannot go while resources remain; the VPC not without its dependents.
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/aws-accounts/{link_id}"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/resources/{vpc_id}"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);

        // One instance alone: only it goes.
        let gone = ijob["resources"][0]["aws_id"].as_str().unwrap().to_owned();
        let kept = ijob["resources"][1]["aws_id"].as_str().unwrap().to_owned();
        let res = app
            .request(
                Method::DELETE,
                &format!(
                    "/v1/resources/{}",
                    ijob["resources"][0]["id"].as_str().unwrap()
                ),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let one: Value = res.json().await.unwrap();
        let one = app.finished_job(&org, one["id"].as_str().unwrap()).await;
        assert_eq!(one["state"], "succeeded", "{one}");
        let live = tagged_resources(&customer.admin_config(), &link_id).await;
        assert!(!live.contains(&gone) && live.contains(&kept), "{live:?}");
        assert!(live.iter().any(|r| r.starts_with("vpc-")), "{live:?}");

        // A database deleted without a final snapshot: only when asked, and
        // the audit log says who asked. (The cascade below keeps one.)
        let rds = aws_sdk_rds::Client::new(&customer.admin_config());
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/databases"),
                &org.key,
                &json!({"name": "scratch", "vpc_id": vpc_id, "engine": "postgres",
                        "instance_class": "db.t3.micro", "allocated_storage_gb": 20}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let sjob: Value = res.json().await.unwrap();
        let sjob = app.finished_job(&org, sjob["id"].as_str().unwrap()).await;
        assert_eq!(sjob["state"], "succeeded", "{sjob}");
        let scratch = sjob["resources"][0]["aws_id"].as_str().unwrap().to_owned();
        let described = rds
            .describe_db_instances()
            .db_instance_identifier(&scratch)
            .send()
            .await
            .unwrap();
        assert_eq!(
            described.db_instances()[0].deletion_protection(),
            Some(true),
            "created with deletion protection"
        );
        let res = app
            .request(
                Method::DELETE,
                &format!(
                    "/v1/resources/{}?final_snapshot=false",
                    sjob["resources"][0]["id"].as_str().unwrap()
                ),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let sdel: Value = res.json().await.unwrap();
        let sdel = app.finished_job(&org, sdel["id"].as_str().unwrap()).await;
        assert_eq!(sdel["state"], "succeeded", "{sdel}");
        let snapshots = rds
            .describe_db_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .unwrap();
        assert!(snapshots.db_snapshots().is_empty(), "{snapshots:?}");
        let events = audit_events(&app, &org).await;
        let asked = events
            .iter()
            .find(|e| {
                e["action"] == "resource.delete_requested"
                    && e["details"]["aws_id"] == scratch.as_str()
            })
            .unwrap();
        assert_eq!(asked["details"]["final_snapshot"], false, "{asked}");
        assert!(
            asked["actor"].as_str().unwrap().starts_with("user:"),
            "{asked}"
        );

        // Cascade: instances and database first, then the network.
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/resources/{vpc_id}?cascade=true"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let tjob: Value = res.json().await.unwrap();
        let tjob = app.finished_job(&org, tjob["id"].as_str().unwrap()).await;
        assert_eq!(tjob["state"], "succeeded", "{tjob}");
        let deleted: Vec<&str> = tjob["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(deleted.len(), 3, "{tjob}");
        assert_eq!(
            *deleted.last().unwrap(),
            "vpc",
            "children first: {deleted:?}"
        );
        let live = tagged_resources(&customer.admin_config(), &link_id).await;
        assert!(live.is_empty(), "nothing tagged remains: {live:?}");
        // The database is kept as a final snapshot, named in the job's result.
        let db = tjob["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "rds_instance")
            .unwrap();
        let kept = db["final_snapshot"].as_str().unwrap();
        assert!(kept.starts_with(&format!("{db_identifier}-final-")), "{db}");
        let snapshots = rds
            .describe_db_snapshots()
            .snapshot_type("manual")
            .send()
            .await
            .unwrap();
        let names: Vec<&str> = snapshots
            .db_snapshots()
            .iter()
            .filter_map(|s| s.db_snapshot_identifier())
            .collect();
        assert_eq!(names, [kept]);
        let listed = app
            .get_json(&format!("/v1/aws-accounts/{link_id}/resources"), &org.key)
            .await;
        assert!(listed["data"].as_array().unwrap().is_empty());

        // The stack is deleted: its Delete event disconnects the link.
        let output = run_lambda("Delete", &stack, onboarding, &bucket).await;
        assert_eq!(bucket.last_answer()["Status"], "SUCCESS", "{output}");
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["state"], "disconnected");
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/aws-accounts/{link_id}"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);

        let logs = captured_logs();
        assert!(
            !logs.contains(secret.trim_start_matches("whsec_")),
            "the callback secret was logged"
        );
    }
}
