//! `GET /` and its sign-in forms over plain HTTP: headers, cookie, CSRF
//! refusals, escaping and tenant isolation. The browser test
//! (scripts/status-page-check) covers the same page in Chromium.

use reqwest::{StatusCode, header};

use crate::each_db;
use crate::helpers::{TestApp, captured_logs};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The sign-in form's body.
fn form(key: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("api_key", key)
        .finish()
}

/// `POST /ui/login` as the page's own form sends it.
async fn sign_in(app: &TestApp, key: &str) -> reqwest::Response {
    no_redirects()
        .post(app.url("/ui/login"))
        .header("origin", &app.base)
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(key))
        .send()
        .await
        .unwrap()
}

fn cookie_of(res: &reqwest::Response) -> String {
    res.headers()
        .get(header::SET_COOKIE)
        .expect("a cookie is set")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn page(app: &TestApp, cookie: Option<&str>) -> (StatusCode, header::HeaderMap, String) {
    let mut r = no_redirects().get(app.url("/"));
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    let res = r.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn signed_out_the_page_is_a_form_with_every_protective_header() {
    each_db!(|app| {
        let (status, headers, body) = page(&app, None).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("name=\"api_key\" type=\"password\""),
            "{body}"
        );
        assert!(body.contains("method=\"post\" action=\"/ui/login\""));
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("content-type"), "text/html; charset=utf-8");
        assert_eq!(h("cache-control"), "no-store");
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
        let csp = h("content-security-policy");
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"));
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(!body.contains("<script"), "no script at all");
    });
}

#[tokio::test]
async fn signing_in_keeps_the_key_in_a_strict_http_only_session_cookie() {
    each_db!(|app| {
        let org = app.create_org("Cookie").await;
        let res = sign_in(&app, &org.admin_key).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/");
        assert_eq!(
            res.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        let cookie = cookie_of(&res);
        assert!(cookie.starts_with("xrole_api_key=xrk_"), "{cookie}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{attr} missing: {cookie}");
        }
        // A session cookie: gone when the browser closes; http here, so not Secure.
        assert!(
            !cookie.contains("Max-Age") && !cookie.contains("Expires"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_owned();
        let (status, headers, body) = page(&app, Some(&pair)).await;
        assert_eq!(status, 200);
        assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert!(
            body.contains("Organization <strong>Cookie</strong>"),
            "{body}"
        );
        assert!(body.contains("No AWS account is linked yet"));
        assert!(body.contains("action=\"/ui/logout\""));
        assert!(!body.contains(&org.admin_key), "the key is never echoed");

        // Signing out clears the cookie.
        let res = no_redirects()
            .post(app.url("/ui/logout"))
            .header("origin", &app.base)
            .header(header::COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let gone = cookie_of(&res);
        assert!(gone.starts_with("xrole_api_key=;"), "{gone}");
        assert!(gone.contains("Max-Age=0"), "{gone}");
    });
}

#[tokio::test]
async fn wrong_revoked_and_cross_site_sign_ins_are_refused() {
    each_db!(|app| {
        let org = app.create_org("Refused").await;
        let res = sign_in(&app, "xrk_not_a_key").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/html; charset=utf-8",
            "the page's own error, not a problem"
        );
        assert!(res.text().await.unwrap().contains("does not work"));

        // Another site's form: its Origin, or the browser's Sec-Fetch-Site.
        for (name, value) in [
            ("origin", "https://evil.example.com"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let res = no_redirects()
                .post(app.url("/ui/login"))
                .header(name, value)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(&org.admin_key))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}: {value}");
            assert!(res.headers().get(header::SET_COOKIE).is_none());
        }
        // No Origin at all (not a browser form): refused too.
        let res = no_redirects()
            .post(app.url("/ui/logout"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        // A cookie whose key was revoked shows the form again and clears it.
        let pair = cookie_of(&sign_in(&app, &org.admin_key).await)
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let res = app
            .delete(
                &format!("/v1/api-keys/{}", org.admin_key_id),
                &org.admin_key,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = no_redirects()
            .get(app.url("/"))
            .header(header::COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(cookie_of(&res).contains("Max-Age=0"));
        assert!(res.text().await.unwrap().contains("no longer works"));
    });
}

#[tokio::test]
async fn names_are_escaped_and_tenants_see_only_their_own_page() {
    each_db!(|app| {
        let evil = app.create_org("<script>alert(1)</script>").await;
        let other = app.create_org("Other").await;
        let pair = |res: reqwest::Response| cookie_of(&res).split(';').next().unwrap().to_owned();
        let evil_cookie = pair(sign_in(&app, &evil.admin_key).await);
        let (_, _, body) = page(&app, Some(&evil_cookie)).await;
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{body}"
        );
        assert!(!body.contains("<script>"), "{body}");
        let other_cookie = pair(sign_in(&app, &other.admin_key).await);
        let (_, _, body) = page(&app, Some(&other_cookie)).await;
        assert!(body.contains("<strong>Other</strong>"));
        assert!(!body.contains("alert(1)"));
        let logs = captured_logs();
        assert!(!logs.contains(&evil.admin_key) && !logs.contains(&other.admin_key));
    });
}

#[tokio::test]
async fn the_api_ignores_the_page_cookie() {
    each_db!(|app| {
        let org = app.create_org("Ignored").await;
        let pair = cookie_of(&sign_in(&app, &org.admin_key).await)
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        // A cross-site request carrying the cookie cannot use the API.
        let res = no_redirects()
            .get(app.url("/v1/whoami"))
            .header(header::COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    });
}
