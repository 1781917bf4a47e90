//! Every route against every role: `admin` > `operator` > `viewer`, keys
//! limited below their owner's role, session keys, and the destructive
//! changes only admins make (or operators, where the organization allows).

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use xrole_crypto::{ExternalId, WebhookSecret};
use xrole_store::{AccessLevel, ResourceState};

use crate::helpers::{T0, TestApp, assert_problem, spawn_app};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Viewer,
    Operator,
    /// Admin, or operator when the organization allows destructive changes.
    Destroy,
    Admin,
}

struct Fixture {
    link_with_role: String,
    link_without_role: String,
    vpc: String,
    database: String,
}

/// A link with a role and one without, a VPC and a database resource,
/// written straight into the store (the API would need an AWS side).
fn fixture(app: &TestApp, org_id: &str) -> Fixture {
    let mut conn = app.state.pool.get().unwrap();
    let org = org_id.parse().unwrap();
    let mut link = |name: &str| {
        let ext = ExternalId::generate();
        let secret = WebhookSecret::generate();
        xrole_store::links::create(
            &mut conn,
            &app.state.keyring(),
            org,
            &xrole_store::links::NewLink {
                name,
                aws_account_id: "123456789012",
                access_level: AccessLevel::Provisioning,
                external_id: &ext,
                callback_secret: &secret,
                callback_secret_expires_ms: T0 + 1_000_000,
            },
            T0,
        )
        .unwrap()
        .id
    };
    let (with, without) = (link("with"), link("without"));
    xrole_store::links::update(
        &mut conn,
        org,
        with,
        &xrole_store::links::LinkChanges {
            role_arn: Some("arn:aws:iam::123456789012:role/xrole"),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    let tags = BTreeMap::new();
    let mut res = |kind: &str, aws_id: &str| {
        xrole_store::resources::create(
            &mut conn,
            org,
            &xrole_store::resources::NewResource {
                link: with,
                job: None,
                kind,
                aws_id,
                region: "us-east-1",
                parent: None,
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )
        .unwrap()
        .id
        .to_string()
    };
    Fixture {
        link_with_role: with.to_string(),
        link_without_role: without.to_string(),
        vpc: res("vpc", "vpc-0123456789abcdef0"),
        database: res("rds_instance", "xrole-main"),
    }
}

/// The routes of the API with what each needs (public and operator-token
/// routes are covered elsewhere).
fn routes(
    f: &Fixture,
    user: &str,
    own_key: &str,
    operators_may_destroy: bool,
) -> Vec<(Method, String, Option<Value>, Need)> {
    use Need::*;
    let link = &f.link_with_role;
    let vpc =
        json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]});
    vec![
        (Method::GET, "/v1/organization".into(), None, Viewer),
        (
            Method::PATCH,
            "/v1/organization".into(),
            // The setting as it is: the matrix runs under each value.
            Some(json!({"operators_may_destroy": operators_may_destroy})),
            Admin,
        ),
        (Method::GET, "/v1/whoami".into(), None, Viewer),
        (
            Method::POST,
            "/v1/users".into(),
            Some(json!({"email": "new@acme.example.com", "role": "viewer"})),
            Admin,
        ),
        (Method::GET, "/v1/users".into(), None, Viewer),
        (Method::GET, format!("/v1/users/{user}"), None, Viewer),
        (
            Method::PATCH,
            format!("/v1/users/{user}"),
            Some(json!({"role": "viewer"})),
            Admin,
        ),
        (Method::DELETE, format!("/v1/users/{user}"), None, Admin),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "mine", "role": "viewer"})),
            Viewer,
        ),
        (Method::GET, "/v1/api-keys".into(), None, Viewer),
        (
            Method::DELETE,
            format!("/v1/api-keys/{own_key}"),
            None,
            Viewer,
        ),
        (Method::GET, "/v1/audit-events".into(), None, Admin),
        (
            Method::POST,
            "/v1/aws-accounts".into(),
            Some(json!({"name": "n", "access_level": "read_only"})),
            Operator,
        ),
        (Method::GET, "/v1/aws-accounts".into(), None, Viewer),
        (
            Method::GET,
            format!("/v1/aws-accounts/{link}"),
            None,
            Viewer,
        ),
        (
            Method::DELETE,
            format!("/v1/aws-accounts/{link}"),
            None,
            Destroy,
        ),
        (
            Method::PUT,
            format!("/v1/aws-accounts/{link}/role"),
            Some(json!({"role_arn": "arn:aws:iam::123456789012:role/other"})),
            Destroy,
        ),
        (
            Method::PUT,
            format!("/v1/aws-accounts/{}/role", f.link_without_role),
            Some(json!({"role_arn": "arn:aws:iam::123456789012:role/first"})),
            Operator,
        ),
        (
            Method::POST,
            format!("/v1/aws-accounts/{link}/verify"),
            None,
            Operator,
        ),
        (
            Method::POST,
            format!("/v1/aws-accounts/{link}/vpcs"),
            Some(vpc),
            Operator,
        ),
        (
            Method::POST,
            format!("/v1/aws-accounts/{link}/instances"),
            Some(json!({"name": "web", "vpc_id": f.vpc, "instance_type": "t3.micro"})),
            Operator,
        ),
        (
            Method::POST,
            format!("/v1/aws-accounts/{link}/databases"),
            Some(
                json!({"name": "main", "vpc_id": f.vpc, "engine": "postgres",
                "instance_class": "db.t3.micro", "allocated_storage_gb": 20}),
            ),
            Operator,
        ),
        (
            Method::GET,
            format!("/v1/aws-accounts/{link}/resources"),
            None,
            Viewer,
        ),
        (
            Method::GET,
            format!("/v1/resources/{}", f.vpc),
            None,
            Viewer,
        ),
        (
            Method::DELETE,
            format!("/v1/resources/{}", f.vpc),
            None,
            Operator,
        ),
        (
            Method::DELETE,
            format!("/v1/resources/{}", f.database),
            None,
            Destroy,
        ),
        (Method::GET, "/v1/jobs".into(), None, Viewer),
    ]
}

#[derive(Debug, Clone, Copy)]
enum As {
    Admin,
    Operator,
    Viewer,
}

fn allowed(who: As, need: Need, operators_may_destroy: bool) -> bool {
    match (who, need) {
        (As::Admin, _) => true,
        (As::Operator, Need::Viewer | Need::Operator) => true,
        (As::Operator, Need::Destroy) => operators_may_destroy,
        (As::Viewer, Need::Viewer) => true,
        _ => false,
    }
}

async fn key_for(app: &TestApp, token: &str, role: Option<&str>) -> (String, String) {
    let mut body = json!({"name": "matrix"});
    if let Some(r) = role {
        body["role"] = json!(r);
    }
    let res = app.post("/v1/api-keys", token, &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let v: Value = res.json().await.unwrap();
    let t = v["token"].as_str().unwrap().to_owned();
    app.secret(&t);
    (t, v["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_each_role_as_documented() {
    for db in xrole_testkit::TestDb::all().unwrap() {
        let app = spawn_app(db).await;
        let org = app.create_org("Acme").await;
        let operator = app
            .create_user(&org, "op@acme.example.com", "operator")
            .await;
        let viewer = app
            .create_user(&org, "view@acme.example.com", "viewer")
            .await;
        let admin2 = app
            .create_user(&org, "admin2@acme.example.com", "admin")
            .await;
        // (who, how): the admin's first key, an admin's session key, an
        // operator's and a viewer's session keys, and an admin's key
        // limited to viewer (it acts as a viewer).
        let (limited, _) = key_for(&app, &org.admin_key, Some("viewer")).await;
        let principals = [
            (As::Admin, "admin key", org.admin_key.clone()),
            (As::Admin, "admin session", admin2.key.clone()),
            (As::Operator, "operator session", operator.key.clone()),
            (As::Viewer, "viewer session", viewer.key.clone()),
            (As::Viewer, "admin key limited to viewer", limited),
        ];
        for operators_may_destroy in [false, true] {
            let res = app
                .patch(
                    "/v1/organization",
                    &org.admin_key,
                    &json!({"operators_may_destroy": operators_may_destroy}),
                )
                .await;
            assert_eq!(res.status(), 200);
            for (who, label, token) in &principals {
                let f = fixture(&app, &org.id);
                let target = app
                    .create_user(
                        &org,
                        &format!("t{}@acme.example.com", uuid::Uuid::new_v4().simple()),
                        "viewer",
                    )
                    .await;
                let (_, own_key) = key_for(&app, token, None).await;
                for (method, path, body, need) in
                    routes(&f, &target.id, &own_key, operators_may_destroy)
                {
                    let res = app
                        .request(method.clone(), &path, Some(token), body.as_ref())
                        .await;
                    let status = res.status().as_u16();
                    let text = res.text().await.unwrap();
                    if allowed(*who, need, operators_may_destroy) {
                        assert!(
                            status != 401 && status != 403,
                            "{label} (destroy by operators: {operators_may_destroy}) refused {method} {path}: {status} {text}"
                        );
                    } else {
                        assert_eq!(
                            status, 403,
                            "{label} (destroy by operators: {operators_may_destroy}) allowed {method} {path}: {text}"
                        );
                        let v: Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(v["code"], "forbidden");
                        assert!(v["detail"].as_str().unwrap().len() > 10, "{v}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn keys_never_exceed_their_creators_role_nor_outlive_a_session() {
    for db in xrole_testkit::TestDb::all().unwrap() {
        let app = spawn_app(db).await;
        let org = app.create_org("Acme").await;
        let viewer = app.create_user(&org, "v@acme.example.com", "viewer").await;
        let operator = app
            .create_user(&org, "o@acme.example.com", "operator")
            .await;
        // A key limited to viewer mints only viewer keys, even when it
        // asks for no role (it would otherwise inherit its admin owner's).
        let (limited, _) = key_for(&app, &org.admin_key, Some("viewer")).await;
        let (child, _) = key_for(&app, &limited, None).await;
        let me = app
            .get("/v1/whoami", &child)
            .await
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(me["role"], "viewer");
        // A viewer cannot mint an operator key, an operator no admin key.
        for (token, role) in [(&viewer.key, "operator"), (&operator.key, "admin")] {
            let res = app
                .post("/v1/api-keys", token, &json!({"name": "up", "role": role}))
                .await;
            let v = assert_problem(res, 422, "invalid_field").await;
            assert_eq!(v["field"], "role");
        }
        // A key minted by a one-hour session key, asked to last for ever or
        // for a year, ends with the session.
        let session = app
            .post("/v1/api-keys", &operator.key, &json!({"name": "forever"}))
            .await
            .json::<Value>()
            .await
            .unwrap();
        app.secret(session["token"].as_str().unwrap());
        let mine = app
            .get("/v1/api-keys", &operator.key)
            .await
            .json::<Value>()
            .await
            .unwrap();
        let session_expiry = mine["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["name"] == "session")
            .map(|k| k["expires_at"].as_str().unwrap().to_owned())
            .next()
            .unwrap();
        assert_eq!(session["expires_at"], session_expiry.as_str());
        let year = app
            .post(
                "/v1/api-keys",
                &operator.key,
                &json!({"name": "year", "expires_at": "2030-01-01T00:00:00Z"}),
            )
            .await
            .json::<Value>()
            .await
            .unwrap();
        app.secret(year["token"].as_str().unwrap());
        assert_eq!(year["expires_at"], session_expiry.as_str());
        app.clock.advance_ms(3_600_000);
        assert_eq!(
            app.get("/v1/whoami", session["token"].as_str().unwrap())
                .await
                .status(),
            401
        );
        // A key follows its owner down: demoting the operator to viewer
        // makes their keys viewers too.
        let fresh = app
            .login(&org.id, "o@acme.example.com", &operator.password)
            .await;
        let (long, _) = key_for(&app, &fresh, Some("operator")).await;
        let res = app
            .patch(
                &format!("/v1/users/{}", operator.id),
                &org.admin_key,
                &json!({"role": "viewer"}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let me = app
            .get("/v1/whoami", &long)
            .await
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(me["role"], "viewer");
        let res = app
            .post(
                "/v1/aws-accounts",
                &long,
                &json!({"name": "n", "access_level": "read_only"}),
            )
            .await;
        assert_problem(res, 403, "forbidden").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_always_keeps_an_admin() {
    for db in xrole_testkit::TestDb::all().unwrap() {
        let app = spawn_app(db).await;
        let org = app.create_org("Acme").await;
        let other = app.create_user(&org, "b@acme.example.com", "admin").await;
        // Each admin demotes the other at the same instant, twenty times.
        for _ in 0..20 {
            let demote = json!({"role": "operator"});
            let (path_a, path_b) = (
                format!("/v1/users/{}", other.id),
                format!("/v1/users/{}", org.admin_id),
            );
            let a = app.patch(&path_a, &org.admin_key, &demote);
            let b = app.patch(&path_b, &other.key, &demote);
            let (a, b) = tokio::join!(a, b);
            let statuses = [a.status().as_u16(), b.status().as_u16()];
            // One wins; the other is refused (last admin), or finds its own
            // key demoted already (403).
            assert_eq!(
                statuses.iter().filter(|s| **s == 200).count(),
                1,
                "{statuses:?}"
            );
            let users = app
                .get(
                    "/v1/users?limit=10",
                    if statuses[0] == 200 {
                        &org.admin_key
                    } else {
                        &other.key
                    },
                )
                .await
                .json::<Value>()
                .await
                .unwrap();
            let admins = users["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| u["role"] == "admin" && u["disabled"] == false)
                .count();
            assert_eq!(admins, 1);
            // Promote back for the next round.
            let (winner, loser) = if statuses[0] == 200 {
                (&org.admin_key, &other.id)
            } else {
                (&other.key, &org.admin_id)
            };
            let res = app
                .patch(
                    &format!("/v1/users/{loser}"),
                    winner,
                    &json!({"role": "admin"}),
                )
                .await;
            assert_eq!(res.status(), 200);
        }
        // Disabling or deleting the last admin is refused with a reason.
        let res = app
            .patch(
                &format!("/v1/users/{}", other.id),
                &org.admin_key,
                &json!({"role": "viewer"}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let res = app
            .delete(&format!("/v1/users/{}", org.admin_id), &org.admin_key)
            .await;
        assert_problem(res, 409, "cannot_modify_self").await;
        let res = app
            .patch(
                &format!("/v1/users/{}", org.admin_id),
                &other.key,
                &json!({"disabled": true}),
            )
            .await;
        assert_problem(res, 403, "forbidden").await;
    }
}
