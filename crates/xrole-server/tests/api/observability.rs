use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::each_db;
use crate::helpers::{assert_problem, captured_logs};

#[tokio::test]
async fn health_and_readiness() {
    each_db!(|app| {
        let res = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
        let res = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        // This server has no AWS side: ready, and it says what is missing.
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["status"], "degraded", "{v}");
        assert_eq!(v["database"], "ok");
        assert_eq!(v["aws"], "unavailable");
        assert!(v["aws_detail"].as_str().unwrap().contains("503"), "{v}");
        // With the reason the start-up found, /readyz repeats it.
        let _ = app.state.aws_status.set("no AWS credentials: test".into());
        let v: Value = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["aws_detail"], "no AWS credentials: test");
    });
}

#[tokio::test]
async fn the_served_document_names_its_server_and_every_operation_its_security() {
    each_db!(|app| {
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let servers = doc["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert!(servers[0]["url"].as_str().unwrap().starts_with("http://"));
        let public = [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/cloudformation/xrole-role.yaml",
            "/v1/cloudformation/xrole-stackset.yaml",
            "/v1/callbacks/cloudformation",
            "/v1/sessions",
        ];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let security = op
                    .get("security")
                    .unwrap_or_else(|| panic!("{method} {path} states no security"));
                if public.contains(&path.as_str()) {
                    assert_eq!(security, &serde_json::json!([]), "{method} {path}");
                } else if path == "/metrics" {
                    // Open, or with XROLE_METRICS_TOKEN set, that token.
                    assert_eq!(
                        security,
                        &serde_json::json!([{}, {"metrics_token": []}]),
                        "{method} {path}"
                    );
                } else {
                    assert_ne!(security, &serde_json::json!([]), "{method} {path}");
                }
            }
        }
        // The template: YAML shaped like a CloudFormation template, or text.
        let ok = &doc["paths"]["/v1/cloudformation/xrole-role.yaml"]["get"]["responses"]["200"]["content"];
        assert_eq!(
            ok["application/yaml"]["schema"]["required"],
            serde_json::json!(["AWSTemplateFormatVersion", "Resources"])
        );
        assert_eq!(ok["text/plain"]["schema"]["type"], "string");
        // And the server answers each as declared.
        for (accept, want) in [
            ("application/yaml", "application/yaml"),
            ("text/plain", "text/plain"),
            ("*/*", "application/yaml"),
        ] {
            let res = app
                .client
                .get(app.url("/v1/cloudformation/xrole-role.yaml"))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            let ct = res
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(ct.starts_with(want), "{accept}: {ct}");
            assert!(
                res.text()
                    .await
                    .unwrap()
                    .starts_with("AWSTemplateFormatVersion")
            );
        }
    });
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        app.get(
            "/v1/users/00000000-0000-0000-0000-000000000000",
            &org.admin_key,
        )
        .await;
        app.get(
            "/v1/users/00000000-0000-0000-0000-000000000001",
            &org.admin_key,
        )
        .await;
        app.client.get(app.url("/healthz")).send().await.unwrap();
        let res = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert!(
            res.headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = res.text().await.unwrap();
        assert!(text.contains("xrole_http_requests_total{method=\"GET\",route=\"/v1/users/{id}\",status=\"404\"} 2"), "{text}");
        assert!(text.contains(
            "xrole_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ));
        assert!(text.contains("xrole_http_requests_total{method=\"POST\",route=\"/v1/organizations\",status=\"201\"} 1"));
        assert!(text.contains(
            "xrole_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/users/{id}\"} 2"
        ));
        assert!(text.contains("# TYPE xrole_http_request_duration_seconds histogram"));
        // Raw ids never become label values.
        assert!(!text.contains("00000000-0000-0000-0000-000000000001"));
    });
}

#[tokio::test]
async fn openapi_matches_routes() {
    let doc = xrole_server::openapi::document();
    let json: Value = serde_json::to_value(&doc).unwrap();
    assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "post", "put", "patch", "delete", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = xrole_server::routes::table()
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(
        documented, served,
        "OpenAPI document and served routes differ"
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    each_db!(|app| {
        let served: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (path, item) in served["paths"].as_object().unwrap() {
            let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
            for method in item.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let res = app.request(m, &concrete, None, None).await;
                let status = res.status().as_u16();
                if status == 404 || status == 405 {
                    let v: Value = res.json().await.unwrap();
                    assert!(
                        v["code"] != "route_not_found" && v["code"] != "method_not_allowed",
                        "{method} {path} is documented but not served"
                    );
                }
            }
        }
    });
}

#[tokio::test]
async fn logs_contain_no_key_password_or_secret() {
    each_db!(|app| {
        let org = app.create_org("Logged").await;
        let m = app
            .create_user(&org, "m@logged.example.com", "operator")
            .await;
        // A failed login with a password that must not be logged either.
        let wrong = "wrong-password-that-must-not-be-logged";
        app.secret(wrong);
        let res = app
            .request(
                Method::POST,
                "/v1/sessions",
                None,
                Some(&serde_json::json!({"organization_id": org.id, "email": m.email, "password": wrong})),
            )
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        let logs = captured_logs();
        // Something was logged, and it is not the secrets.
        assert!(logs.contains("organization created"));
        for s in [
            org.admin_key.as_str(),
            m.key.as_str(),
            m.password.as_str(),
            wrong,
        ] {
            assert!(!logs.contains(s));
        }
        // The hash of the key is not logged either (hex or raw).
        assert!(!logs.contains("key_hash"));
    });
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let db = xrole_testkit::TestDb::sqlite().unwrap();
    let token = "metrics-token-0123456789abcdef";
    let app = crate::helpers::spawn_app_with(
        db,
        crate::helpers::Options {
            metrics_token: Some(token.to_owned()),
            ..crate::helpers::Options::default()
        },
    )
    .await;
    let res = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    crate::helpers::assert_problem(res, 401, "unauthenticated").await;
    let org = app.create_org("Acme").await;
    // An API key is not the metrics token.
    let res = app.get("/metrics", &org.admin_key).await;
    crate::helpers::assert_problem(res, 401, "unauthenticated").await;
    let res = app.get("/metrics", token).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("xrole_http_requests_total")
    );
}
