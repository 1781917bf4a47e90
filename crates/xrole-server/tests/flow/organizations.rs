//! Organization-wide onboarding: one connection, one StackSet, and every
//! member account's stack reporting through the template's own Lambda,
//! each account its own link.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, CustomerAccount, TestDb};

use crate::support::*;

/// The parameters the StackSet passes to each account's stack, read from
/// `xrole-stackset.yaml` itself (`ParameterKey: K, ParameterValue: !Ref P`)
/// and filled with the connection's onboarding values: what
/// CloudFormation StackSets would hand every account.
pub fn account_parameters(connection_onboarding: &Value) -> Value {
    let text = std::fs::read_to_string(
        xrole_testkit::workspace_root().join("cloudformation/xrole-stackset.yaml"),
    )
    .unwrap();
    let given = &connection_onboarding["parameters"];
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("- { ParameterKey: ") else {
            continue;
        };
        let (key, rest) = rest.split_once(", ParameterValue: !Ref ").unwrap();
        let source = rest.trim_end_matches('}').trim();
        let value = given[source]
            .as_str()
            .unwrap_or_else(|| panic!("the onboarding has no {source}"));
        out.insert(key.to_owned(), json!(value));
    }
    assert!(out.contains_key("ConnectionId"), "{out:?}");
    json!({
        "parameters": out,
        "stack_name": format!("StackSet-xrole-{}", uuid::Uuid::new_v4()),
    })
}

/// Every stack instance of a StackSet is its own stack.
fn fresh_name(params: &Value) -> Value {
    let mut p = params.clone();
    p["stack_name"] = json!(format!("StackSet-xrole-{}", uuid::Uuid::new_v4()));
    p
}

/// A read-only connection in us-east-1 named "Acme org", naming its
/// management account when given.
pub async fn acme_connection(app: &FlowApp, org: &Org, management: Option<&str>) -> Value {
    let mut body = json!({"name": "Acme org", "access_level": "read_only", "region": "us-east-1"});
    if let Some(m) = management {
        body["management_account_id"] = json!(m);
    }
    create_connection(app, org, &body).await
}

pub async fn create_connection(app: &FlowApp, org: &Org, body: &Value) -> Value {
    let res = app.post("/v1/aws-organizations", &org.key, body).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    res.json().await.unwrap()
}

async fn accounts_of(app: &FlowApp, org: &Org, connection: &str) -> Vec<Value> {
    app.get_json(
        &format!("/v1/aws-accounts?organization_id={connection}&limit=200"),
        &org.key,
    )
    .await["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn link_of<'a>(links: &'a [Value], account: &CustomerAccount) -> &'a Value {
    links
        .iter()
        .find(|l| l["aws_account_id"] == account.account_id())
        .unwrap_or_else(|| panic!("no link for {}", account.account_id()))
}

/// Deploys the role template in `account` as the StackSet would, and runs
/// its Lambda for `kind`; returns the stack and what CloudFormation heard.
async fn stack_reports(account: &CustomerAccount, params: &Value, kind: &str) -> (Stack, Value) {
    let stack = deploy_stack(account, &fresh_name(params)).await;
    let answer = lambda(kind, &stack, params).await;
    (stack, answer)
}

async fn lambda(kind: &str, stack: &Stack, params: &Value) -> Value {
    let bucket = ResponseBucket::start().await;
    let output = run_lambda(kind, stack, params, &bucket).await;
    let answer = bucket.last_answer();
    assert_eq!(answer["Status"], "SUCCESS", "{answer} {output}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_account_of_an_organization_becomes_its_own_link() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let backend = format!("{:?}", db.backend());
        let app = spawn_flow_app(db, &aws, 4).await;
        let org = app.create_org("Acme").await;
        let created = acme_connection(&app, &org, None).await;
        let cid = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["state"], "pending");
        let o = &created["onboarding"];
        let p = &o["parameters"];
        assert_eq!(p["ConnectionId"], cid.as_str());
        assert_eq!(p["ExternalId"], created["external_id"]);
        assert_eq!(p["OrganizationalUnitIds"], "", "the customer's to fill in");
        assert_eq!(
            p["RoleTemplateUrl"],
            app.url("/v1/cloudformation/xrole-role.yaml").as_str()
        );
        assert_eq!(
            o["template_url"],
            app.url("/v1/cloudformation/xrole-stackset.yaml").as_str()
        );
        let secret = p["CallbackSecret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        // The StackSet template is served as shipped.
        let t = app
            .request(
                Method::GET,
                "/v1/cloudformation/xrole-stackset.yaml",
                None,
                None,
                None,
            )
            .await;
        assert_eq!(t.status(), StatusCode::OK);
        assert_eq!(
            t.text().await.unwrap(),
            std::fs::read_to_string(
                xrole_testkit::workspace_root().join("cloudformation/xrole-stackset.yaml")
            )
            .unwrap()
        );
        // The secret is shown once.
        let shown = app
            .get_json(&format!("/v1/aws-organizations/{cid}"), &org.key)
            .await;
        assert!(!shown.to_string().contains(&secret));

        // Three accounts of the OU: three stacks, three callbacks, three links.
        let params = account_parameters(o);
        let mut accounts = Vec::new();
        let mut stacks = Vec::new();
        for _ in 0..3 {
            let account = aws.customer().await.unwrap();
            let (stack, _) = stack_reports(&account, &params, "Create").await;
            accounts.push(account);
            stacks.push(stack);
        }
        let links = accounts_of(&app, &org, &cid).await;
        assert_eq!(links.len(), 3, "{backend}: {links:?}");
        for account in &accounts {
            let l = link_of(&links, account);
            assert_eq!(l["organization_id"], cid.as_str());
            let settled = app.settled_link(&org, l["id"].as_str().unwrap()).await;
            assert_eq!(settled["state"], "active", "{backend}: {settled}");
            assert_eq!(settled["external_id"], created["external_id"]);
            assert_eq!(settled["access_level"], "read_only");
        }

        // A fourth account joins the OU later (automatic deployment).
        let late = aws.customer().await.unwrap();
        let (late_stack, _) = stack_reports(&late, &params, "Create").await;
        let links = accounts_of(&app, &org, &cid).await;
        assert_eq!(links.len(), 4);
        let late_link = link_of(&links, &late)["id"].as_str().unwrap().to_owned();
        assert_eq!(app.settled_link(&org, &late_link).await["state"], "active");

        // One account with a broken role (its trust policy no longer needs
        // the External ID): only it is insecure.
        let broken = aws.customer().await.unwrap();
        let stack = deploy_stack(&broken, &fresh_name(&params)).await;
        let iam = aws_sdk_iam::Client::new(&broken.admin_config());
        let role_name = stack.role_arn.rsplit('/').next().unwrap();
        let open = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": aws.saas_principal_arn()}, "Action": "sts:AssumeRole"}]});
        iam.update_assume_role_policy()
            .role_name(role_name)
            .policy_document(open.to_string())
            .send()
            .await
            .unwrap();
        lambda("Create", &stack, &params).await;
        let links = accounts_of(&app, &org, &cid).await;
        let broken_link = link_of(&links, &broken)["id"].as_str().unwrap().to_owned();
        assert_eq!(
            app.settled_link(&org, &broken_link).await["state"],
            "insecure"
        );

        // The second account leaves: only its link is disconnected.
        lambda("Delete", &stacks[1], &params).await;
        let links = accounts_of(&app, &org, &cid).await;
        assert_eq!(links.len(), 5);
        for (i, account) in accounts.iter().enumerate() {
            let want = if i == 1 { "disconnected" } else { "active" };
            assert_eq!(link_of(&links, account)["state"], want, "{backend}");
        }
        assert_eq!(link_of(&links, &late)["state"], "active");
        let summary = app
            .get_json(&format!("/v1/aws-organizations/{cid}"), &org.key)
            .await;
        assert_eq!(summary["state"], "active");
        assert_eq!(
            summary["accounts"],
            json!({"total": 5, "pending": 0, "verifying": 0, "active": 3, "insecure": 1,
                "failed": 0, "disconnected": 1}),
            "{summary}"
        );

        // Forged, replayed and cross-account callbacks change nothing.
        let before = accounts_of(&app, &org, &cid).await;
        let account = &accounts[0];
        let stranger = aws.customer().await.unwrap();
        let body = |account: &str, stack_account: &str, event: &str| {
            json!({"connection_id": cid, "event": event,
                "role_arn": format!("arn:aws:iam::{account}:role/xrole-x"),
                "account_id": account,
                "stack_id": format!("arn:aws:cloudformation:us-east-1:{stack_account}:stack/s/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f"),
                "region": "us-east-1"})
            .to_string()
            .into_bytes()
        };
        let other = xrole_crypto::WebhookSecret::generate();
        let forged = Callback {
            id: "msg_org_forged".into(),
            timestamp: now_secs(),
            body: body(stranger.account_id(), stranger.account_id(), "Create"),
        };
        let res = app.send_callback(other.expose_secret(), &forged).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // A stack of one account reporting another account's role.
        let res = app
            .send_callback(
                &secret,
                &Callback {
                    id: "msg_org_cross".into(),
                    timestamp: now_secs(),
                    body: body(stranger.account_id(), account.account_id(), "Create"),
                },
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Another stack claiming an account already bound.
        let res = app
            .send_callback(
                &secret,
                &Callback {
                    id: "msg_org_takeover".into(),
                    timestamp: now_secs(),
                    body: body(account.account_id(), account.account_id(), "Delete"),
                },
            )
            .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        // The same signed message twice: the second changes nothing.
        let first = Callback {
            id: "msg_org_replay".into(),
            timestamp: now_secs(),
            body: body(stranger.account_id(), stranger.account_id(), "Create"),
        };
        let res = app.send_callback(&secret, &first).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["applied"], true);
        let res = app.send_callback(&secret, &first).await;
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["applied"], false, "{v}");
        // Exactly one new link (the stranger's, whose role does not exist:
        // it fails verification on its own).
        let after = accounts_of(&app, &org, &cid).await;
        assert_eq!(after.len(), before.len() + 1);
        let stranger_link = link_of(&after, &stranger)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            app.settled_link(&org, &stranger_link).await["state"],
            "failed"
        );
        // An account link cannot be driven through the one-account path.
        let res = app
            .send_callback(
                &secret,
                &Callback {
                    id: "msg_org_as_link".into(),
                    timestamp: now_secs(),
                    body: callback_body(
                        &late_link,
                        "Delete",
                        &late_stack.role_arn,
                        late.account_id(),
                    ),
                },
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.settled_link(&org, &late_link).await["state"], "active");

        // Another tenant sees none of it.
        let other_org = app.create_org("Other").await;
        for path in [
            format!("/v1/aws-organizations/{cid}"),
            format!("/v1/aws-accounts?organization_id={cid}"),
            format!("/v1/aws-accounts/{late_link}"),
        ] {
            let res = app
                .request(Method::GET, &path, Some(&other_org.key), None, None)
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/aws-organizations/{cid}"),
                Some(&other_org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        // The departed account comes back with a new stack: its link again.
        let (_, _) = stack_reports(&accounts[1], &params, "Create").await;
        let links = accounts_of(&app, &org, &cid).await;
        let back = link_of(&links, &accounts[1])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.settled_link(&org, &back).await["state"], "active");
        assert_eq!(accounts_of(&app, &org, &cid).await.len(), 6);

        // The single-account path is unchanged beside it.
        let single = aws.customer().await.unwrap();
        let link = app
            .create_link(&org, Some(single.account_id()), "read_only")
            .await;
        let stack = deploy_stack(&single, &link["onboarding"]).await;
        lambda("Create", &stack, &link["onboarding"]).await;
        let l = app.settled_link(&org, link["id"].as_str().unwrap()).await;
        assert_eq!(l["state"], "active");
        assert_eq!(l["organization_id"], Value::Null);
        assert_eq!(accounts_of(&app, &org, &cid).await.len(), 6);

        // Deleting the connection takes its links (none has resources);
        // its callbacks are refused afterwards.
        let res = app
            .request(
                Method::DELETE,
                &format!("/v1/aws-organizations/{cid}"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app
            .request(
                Method::GET,
                &format!("/v1/aws-accounts/{late_link}"),
                Some(&org.key),
                None,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = app
            .send_callback(
                &secret,
                &Callback {
                    id: "msg_org_after_delete".into(),
                    timestamp: now_secs(),
                    body: body(late.account_id(), late.account_id(), "Create"),
                },
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let l = app.settled_link(&org, link["id"].as_str().unwrap()).await;
        assert_eq!(l["state"], "active", "the single link stays");
        let ids: HashSet<String> =
            app.get_json("/v1/audit-events?limit=200", &org.key).await["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned())
                .collect();
        for action in [
            "aws_organization.created",
            "aws_organization.account_joined",
            "aws_organization.account_left",
            "aws_organization.deleted",
        ] {
            assert!(ids.contains(action), "{action} in {ids:?}");
        }
    }
}

/// A connection that names its management account takes only that
/// organization's accounts: membership is read from inside each account,
/// as its verification session, never from what its stack reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_naming_its_management_account_takes_only_its_members() {
    let aws = Aws::start().await.unwrap();
    let acme = aws.organization().await.unwrap();
    let rival = aws.organization().await.unwrap();
    for db in TestDb::all().unwrap() {
        let backend = format!("{:?}", db.backend());
        let app = spawn_flow_app(db, &aws, 4).await;
        let org = app.create_org("Acme").await;
        let created = acme_connection(&app, &org, Some(acme.management().account_id())).await;
        assert_eq!(
            created["management_account_id"],
            acme.management().account_id()
        );
        let cid = created["id"].as_str().unwrap().to_owned();
        let params = account_parameters(&created["onboarding"]);

        // A member of the organization: active.
        let member = aws.member(&acme).await.unwrap();
        stack_reports(&member, &params, "Create").await;
        // An account of another organization, and one of none, report
        // through the same StackSet parameters (the secret leaked): each
        // gets a link that fails verification and is never used.
        let stranger = aws.member(&rival).await.unwrap();
        stack_reports(&stranger, &params, "Create").await;
        let loner = aws.customer().await.unwrap();
        stack_reports(&loner, &params, "Create").await;
        // A member whose hand-made role may not read its organization:
        // membership cannot be confirmed, so it is refused too.
        let quiet = aws.member(&acme).await.unwrap();
        let external_id = created["external_id"].as_str().unwrap();
        let role = quiet
            .create_xrole_role("xrole-by-hand", &aws.saas_principal_arn(), external_id)
            .await
            .unwrap();
        let secret = params["parameters"]["CallbackSecret"].as_str().unwrap();
        let body = json!({"connection_id": cid, "event": "Create", "role_arn": role,
            "account_id": quiet.account_id(),
            "stack_id": format!("arn:aws:cloudformation:us-east-1:{}:stack/s/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f", quiet.account_id()),
            "region": "us-east-1"});
        let res = app
            .send_callback(
                secret,
                &Callback {
                    id: format!("msg_quiet_{backend}"),
                    timestamp: now_secs(),
                    body: body.to_string().into_bytes(),
                },
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        let links = accounts_of(&app, &org, &cid).await;
        assert_eq!(links.len(), 4, "{backend}");
        let settled = |account: &CustomerAccount| {
            let id = link_of(&links, account)["id"].as_str().unwrap().to_owned();
            let app = &app;
            let org = &org;
            async move { app.settled_link(org, &id).await }
        };
        let ok = settled(&member).await;
        assert_eq!(ok["state"], "active", "{backend}: {ok}");
        assert_eq!(ok["last_verification_result"], "verified");
        for (account, why) in [
            (&stranger, acme.management().account_id().to_owned()),
            (&loner, "no AWS Organization".to_owned()),
            (&quiet, "DescribeOrganization".to_owned()),
        ] {
            let l = settled(account).await;
            assert_eq!(l["state"], "failed", "{backend}: {l}");
            assert_eq!(l["last_verification_result"], "outside_organization", "{l}");
            let reason = l["last_error"].as_str().unwrap();
            assert!(reason.contains(&why), "{backend}: {reason}");
        }
        let summary = app
            .get_json(&format!("/v1/aws-organizations/{cid}"), &org.key)
            .await;
        assert_eq!(summary["accounts"]["active"], 1, "{summary}");
        assert_eq!(summary["accounts"]["failed"], 3, "{summary}");
    }
}
