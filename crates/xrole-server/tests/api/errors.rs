use reqwest::Method;
use serde_json::json;

use crate::each_db;
use crate::helpers::{OPERATOR_TOKEN, assert_problem};

#[tokio::test]
async fn client_mistakes_are_problems_never_500() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let post_raw = |body: &'static str, ct: Option<&'static str>| {
            let mut r = app
                .client
                .post(app.url("/v1/users"))
                .bearer_auth(&org.admin_key)
                .body(body);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            r.send()
        };
        assert_problem(
            post_raw("{\"email\":", Some("application/json"))
                .await
                .unwrap(),
            400,
            "malformed_json",
        )
        .await;
        assert_problem(
            post_raw("not json", Some("application/json"))
                .await
                .unwrap(),
            400,
            "malformed_json",
        )
        .await;
        assert_problem(
            post_raw("", Some("application/json")).await.unwrap(),
            400,
            "malformed_json",
        )
        .await;
        assert_problem(
            post_raw("{}", Some("text/plain")).await.unwrap(),
            415,
            "unsupported_media_type",
        )
        .await;
        assert_problem(
            post_raw("{}", None).await.unwrap(),
            415,
            "unsupported_media_type",
        )
        .await;
        // Oversize, with and without a declared length.
        let big = format!(
            "{{\"email\":\"{}\",\"role\":\"member\"}}",
            "a".repeat(70_000)
        );
        let res = app
            .post(
                "/v1/users",
                &org.admin_key,
                &serde_json::from_str(&big).unwrap(),
            )
            .await;
        assert_problem(res, 413, "payload_too_large").await;
        let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(big.clone().into_bytes())]);
        let res = app
            .client
            .post(app.url("/v1/users"))
            .bearer_auth(&org.admin_key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_problem(res, 413, "payload_too_large").await;
        // Unknown route and wrong method.
        assert_problem(
            app.get("/v1/nothing-here", &org.admin_key).await,
            404,
            "route_not_found",
        )
        .await;
        assert_problem(
            app.request(Method::PUT, "/v1/users", Some(&org.admin_key), None)
                .await,
            405,
            "method_not_allowed",
        )
        .await;
        assert_problem(
            app.request(Method::POST, "/healthz", None, None).await,
            405,
            "method_not_allowed",
        )
        .await;
        // Unauthenticated beats a bad body: no information before authentication.
        let res = app
            .request(Method::POST, "/v1/users", None, Some(&json!({"bogus": 1})))
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        let _ = OPERATOR_TOKEN;
    });
}
