//! `GET /`: a small server-rendered status page for one organization: its
//! AWS account links with their state and last check, the quick-create
//! button of a pending link, and its last jobs with their progress. It is
//! the screen a SaaS copies for its own "Connect AWS" page: plain HTML, no
//! script at all, no build step.
//!
//! How it resists the usual attacks on such a page:
//!
//! - **The API key** is pasted into a form and POSTed (never put in a URL,
//!   never logged), then kept in an `HttpOnly`, `SameSite=Strict` session
//!   cookie (`Secure` when `XROLE_PUBLIC_URL` is https). The `/v1` API reads
//!   only the `Authorization` header, never this cookie, so the cookie
//!   cannot be ridden to call the API.
//! - **XSS:** every value is HTML-escaped, and the Content-Security-Policy
//!   allows no script and only this page's own stylesheet (by hash).
//! - **CSRF:** the two POSTs (sign in, sign out) must come from this origin
//!   (`Origin`, and `Sec-Fetch-Site` when sent); the cookie is `Strict`.
//! - **Clickjacking:** `frame-ancestors 'none'` and `X-Frame-Options: DENY`.
//! - **Caching:** `Cache-Control: no-store` on every page.
//!
//! These routes are for browsers, not API clients: they are registered from
//! [`pages`], outside the OpenAPI document.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine as _;
use serde::Deserialize;
use xrole_store::{LinkState, PageRequest};

use crate::auth::{Principal, authenticate_token};
use crate::error::ApiError;
use crate::link_flow;
use crate::routes::RouteDef;
use crate::routes::aws_accounts::public_base;
use crate::routes::jobs::JobOut;
use crate::state::AppState;
use crate::timefmt::format_ms;

/// The cookie that holds the API key for the browser session.
pub const COOKIE: &str = "xrole_api_key";
/// How many links and jobs the page shows.
const LINKS_SHOWN: u32 = 50;
const JOBS_SHOWN: u32 = 10;

/// The page's only stylesheet, allowed by its hash.
const STYLE: &str = "\
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}\
header{display:flex;align-items:center;gap:1rem;padding:.8rem 1.5rem;background:#1d2433;color:#fff}\
header h1{font-size:1.1rem;margin:0}header p{margin:0;flex:1}\
main{max-width:72rem;margin:1.5rem auto;padding:0 1.5rem}\
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:1rem 1.25rem;margin-bottom:1.5rem}\
h2{font-size:1rem;margin:0 0 .75rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.45rem .5rem;border-top:1px solid #eceef2;vertical-align:top}\
th{font-size:.8rem;text-transform:uppercase;color:#5b6475;border-top:0}\
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.85rem;background:#eceef2}\
.active,.succeeded{background:#d7f2df;color:#14532d}.pending,.queued,.verifying,.running{background:#fdf0c8;color:#6b4e00}\
.insecure,.failed,.cancelled,.disconnected{background:#fbd9d9;color:#7f1d1d}\
.muted{color:#5b6475;font-size:.85rem}.error{color:#7f1d1d}\
a.button,button{display:inline-block;white-space:nowrap;padding:.4rem .8rem;border-radius:4px;border:0;background:#2456d6;color:#fff;text-decoration:none;font:inherit;cursor:pointer}\
header button{background:#3a4358}\
form.login{max-width:28rem;margin:3rem auto}form.login input{width:100%;box-sizing:border-box;padding:.5rem;margin:.5rem 0 1rem;font:inherit}\
progress{width:8rem}";

/// `default-src 'none'`: no script, no frame, no connection, nothing but
/// the stylesheet above; forms post only here; nobody may frame the page.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
});

/// The status page's routes.
pub fn pages() -> Vec<RouteDef> {
    vec![
        RouteDef {
            method: Method::GET,
            path: "/",
            handler: |r| r.to(index),
        },
        RouteDef {
            method: Method::POST,
            path: "/ui/login",
            handler: |r| r.to(login),
        },
        RouteDef {
            method: Method::POST,
            path: "/ui/logout",
            handler: |r| r.to(logout),
        },
    ]
}

/// HTML-escapes `s` for text and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page response with the security headers every page carries.
fn page(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP.as_str()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Not `no-referrer`: with it, browsers send `Origin: null` even on
        // this page's own forms. Other sites get no referrer either way.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header(("cross-origin-resource-policy", "same-origin"))
        .insert_header((header::VARY, "Cookie"));
    b
}

/// A whole page; `header` and `body` are HTML, built with [`esc`].
fn document(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\n<body><header><h1>xrole</h1>\
         {header}</header>\n<main>{body}</main></body></html>\n",
        title = esc(title),
    )
}

fn login_page(status: StatusCode, message: Option<&str>) -> HttpResponse {
    let note = message.map_or(String::new(), |m| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m))
    });
    let body = format!(
        "<section><form class=\"login\" method=\"post\" action=\"/ui/login\">\
         <h2>Sign in with an API key</h2>{note}\
         <label for=\"api_key\">API key (<code>xrk_…</code>)</label>\
         <input id=\"api_key\" name=\"api_key\" type=\"password\" autocomplete=\"off\" \
         required maxlength=\"200\" spellcheck=\"false\">\
         <button type=\"submit\">Sign in</button>\
         <p class=\"muted\">The key stays in this browser session only (an HttpOnly \
         cookie); signing out forgets it.</p></form></section>"
    );
    page(status).body(document("xrole: sign in", "", &body))
}

fn session_cookie<'a>(state: &AppState, value: &'a str) -> Cookie<'a> {
    let secure = state
        .config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .finish()
}

/// Whether a POST comes from a page of this server. Browsers say so in
/// `Sec-Fetch-Site` (a header no page can set); one that does not send it
/// must send an `Origin` naming this server: its `XROLE_PUBLIC_URL`, or the
/// `Host` it was sent to.
fn same_origin(state: &AppState, req: &HttpRequest) -> bool {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = h("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = h("origin").and_then(|o| url::Url::parse(o).ok()) else {
        return false;
    };
    if let Some(public) = &state.config.public_url
        && origin.origin() == public.origin()
    {
        return true;
    }
    let authority = match (origin.host_str(), origin.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => return false,
    };
    h("host").is_some_and(|host| host.eq_ignore_ascii_case(&authority))
}

fn cross_site() -> HttpResponse {
    page(StatusCode::FORBIDDEN).body(document(
        "xrole: refused",
        "",
        "<section><h2>Refused</h2><p>This form can only be sent from this server's own \
         pages.</p><p><a href=\"/\">Back to the status page</a></p></section>",
    ))
}

/// The sign-in form's body.
#[derive(Deserialize)]
pub struct LoginForm {
    api_key: String,
}

// Hand-written: the derived `Debug` would print the key.
impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm { api_key: ** redacted ** }")
    }
}

/// `POST /ui/login`: checks the key, then keeps it in the session cookie.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    if !same_origin(&state, &req) {
        return cross_site();
    }
    let key = form.into_inner().api_key;
    let key = key.trim();
    match authenticate_token(&state, key).await {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(session_cookie(&state, key))
            .finish(),
        Err(ApiError::RateLimited { .. }) => login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many requests with this key; wait a moment and try again."),
        ),
        Err(ApiError::Unauthenticated) => login_page(
            StatusCode::UNAUTHORIZED,
            Some("This API key does not work: it is malformed, unknown, revoked or expired."),
        ),
        Err(_) => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The server cannot check keys right now; try again."),
        ),
    }
}

/// `POST /ui/logout`: forgets the cookie.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if !same_origin(&state, &req) {
        return cross_site();
    }
    let mut gone = session_cookie(&state, "");
    gone.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(gone)
        .finish()
}

/// One link as the page shows it.
struct LinkRow {
    link: xrole_store::links::Link,
    quick_create_url: Option<String>,
}

/// What the page shows.
struct Status {
    org_name: String,
    links: Vec<LinkRow>,
    jobs: Vec<JobOut>,
}

/// `GET /`: the status page, or the sign-in form without a working key.
pub async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(cookie) = req.cookie(COOKIE) else {
        return login_page(StatusCode::OK, None);
    };
    let principal = match authenticate_token(&state, cookie.value()).await {
        Ok(p) => p,
        Err(ApiError::Unauthenticated) => {
            let mut gone = session_cookie(&state, "");
            gone.make_removal();
            let mut res = login_page(
                StatusCode::OK,
                Some("The key of this session no longer works; sign in again."),
            );
            let _ = res.add_cookie(&gone);
            return res;
        }
        Err(e) => return error_page(&e),
    };
    match load(&state, principal).await {
        Ok(status) => page(StatusCode::OK).body(render(&status)),
        Err(e) => error_page(&e),
    }
}

fn error_page(e: &ApiError) -> HttpResponse {
    use actix_web::ResponseError as _;
    let status = e.status_code();
    if status.is_server_error() {
        // The cause goes to the log once, as for every API error.
        let _ = e.error_response();
    }
    page(status).body(document(
        "xrole: error",
        "",
        &format!(
            "<section><h2>{}</h2><p><a href=\"/\">Try again</a></p></section>",
            esc(&e.to_string())
        ),
    ))
}

async fn load(state: &AppState, principal: Principal) -> Result<Status, ApiError> {
    let st = state.clone();
    let org = principal.org_id;
    // The button carries the link's callback secret: only for those who
    // may onboard accounts (operators and admins), never for a viewer.
    let aws = state
        .aws
        .get()
        .cloned()
        .filter(|_| principal.role.at_least(xrole_store::UserRole::Operator));
    let base = public_base(state);
    state
        .read(move |conn| {
            let org_name = xrole_store::orgs::get(conn, org)?.name;
            let now = st.now_ms();
            let links = xrole_store::links::list(conn, org, &PageRequest::first(LINKS_SHOWN))?;
            let mut rows = Vec::with_capacity(links.items.len());
            for link in links.items {
                // The button a customer clicks: only while the stack may
                // still make its first report, and with the AWS side there
                // to name the principal their role will trust.
                let quick_create_url = match &aws {
                    Some(aws)
                        if link.state == LinkState::Pending
                            && now < link.callback_secret_expires_ms =>
                    {
                        let ext = xrole_store::links::reveal_external_id(
                            conn,
                            &st.keyring(),
                            org,
                            link.id,
                        )?;
                        let secret = xrole_store::links::reveal_callback_secret(
                            conn,
                            &st.keyring(),
                            org,
                            link.id,
                        )?;
                        let template_url = aws
                            .settings
                            .template_url
                            .clone()
                            .unwrap_or_else(|| format!("{base}{}", link_flow::TEMPLATE_PATH));
                        let o = link_flow::onboarding(
                            &template_url,
                            link.region.as_deref().unwrap_or("us-east-1"),
                            &link.id.to_string(),
                            &aws.saas_principal_arn,
                            &ext,
                            link.access_level,
                            &format!("{base}{}", link_flow::CALLBACK_PATH),
                            secret.expose_secret(),
                        );
                        Some(o.quick_create_url)
                    }
                    _ => None,
                };
                rows.push(LinkRow {
                    link,
                    quick_create_url,
                });
            }
            let jobs = xrole_store::jobs::list(conn, org, &PageRequest::first(JOBS_SHOWN))?;
            let jobs = jobs.items.iter().map(|j| JobOut::new(j, &[])).collect();
            Ok(Status {
                org_name,
                links: rows,
                jobs,
            })
        })
        .await
}

fn state_badge(s: &str) -> String {
    let s = esc(s);
    format!("<span class=\"state {s}\">{s}</span>")
}

fn render(s: &Status) -> String {
    let mut body = String::new();
    let names: HashMap<String, &str> = s
        .links
        .iter()
        .map(|r| (r.link.id.to_string(), r.link.name.as_str()))
        .collect();
    body.push_str("<section id=\"links\"><h2>AWS accounts</h2>");
    if s.links.is_empty() {
        body.push_str(
            "<p class=\"muted\">No AWS account is linked yet: <code>POST /v1/aws-accounts</code> \
             creates a link, and its button appears here.</p>",
        );
    } else {
        body.push_str(
            "<table><thead><tr><th>Name</th><th>State</th><th>AWS account</th><th>Access</th>\
             <th>Last check</th><th></th></tr></thead><tbody>",
        );
        for row in &s.links {
            let l = &row.link;
            let account = if l.aws_account_id.is_empty() {
                "<span class=\"muted\">from the stack</span>".to_owned()
            } else {
                esc(&l.aws_account_id)
            };
            let mut check = match (&l.last_verification_result, l.last_verified_ms) {
                (Some(r), Some(at)) => format!(
                    "{}<br><span class=\"muted\">{}</span>",
                    esc(r),
                    esc(&format_ms(at))
                ),
                (Some(r), None) => esc(r),
                _ => "<span class=\"muted\">not yet</span>".to_owned(),
            };
            if let Some(audit) = &l.trust_policy_audit {
                let _ = write!(
                    check,
                    "<br><span class=\"muted\">trust policy: {}</span>",
                    esc(audit)
                );
            }
            if let Some(e) = &l.last_error {
                let _ = write!(check, "<br><span class=\"error\">{}</span>", esc(e));
            }
            let action = match &row.quick_create_url {
                Some(url) => format!(
                    "<a class=\"button\" href=\"{}\" target=\"_blank\" \
                     rel=\"noopener noreferrer\">Connect AWS account</a>",
                    esc(url)
                ),
                None if l.state == LinkState::Pending => {
                    "<span class=\"muted\">no quick-create link: the AWS side is unavailable or \
                     the link expired</span>"
                        .to_owned()
                }
                None => String::new(),
            };
            let _ = write!(
                body,
                "<tr data-link=\"{id}\"><td>{name}<br><span class=\"muted\">{region}</span></td>\
                 <td>{state}</td><td>{account}</td><td>{access}</td><td>{check}</td>\
                 <td>{action}</td></tr>",
                id = esc(&l.id.to_string()),
                name = esc(&l.name),
                region = esc(l.region.as_deref().unwrap_or("")),
                state = state_badge(l.state.as_str()),
                access = esc(l.access_level.as_str()),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><section id=\"jobs\"><h2>Last jobs</h2>");
    if s.jobs.is_empty() {
        body.push_str("<p class=\"muted\">No job has run yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Job</th><th>Account</th><th>State</th><th>Progress</th>\
             <th>Created</th></tr></thead><tbody>",
        );
        for j in &s.jobs {
            let account = j
                .aws_account_id
                .as_deref()
                .map(|id| names.get(id).copied().unwrap_or(id))
                .unwrap_or("");
            let progress = if j.progress.total > 0 {
                format!(
                    "<progress value=\"{d}\" max=\"{t}\">{d}/{t}</progress> {d}/{t}",
                    d = j.progress.done,
                    t = j.progress.total
                )
            } else if j.state == "queued" {
                "<span class=\"muted\">waiting</span>".to_owned()
            } else {
                "<span class=\"muted\">—</span>".to_owned()
            };
            let error = j.error.as_deref().map_or(String::new(), |e| {
                format!("<br><span class=\"error\">{}</span>", esc(e))
            });
            let _ = write!(
                body,
                "<tr data-job=\"{id}\"><td>{kind}</td><td>{account}</td><td>{state}{error}</td>\
                 <td>{progress}</td><td class=\"muted\">{created}</td></tr>",
                id = esc(&j.id),
                kind = esc(&j.kind),
                account = esc(account),
                state = state_badge(&j.state),
                created = esc(&j.created_at),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    let header = format!(
        "<p>Organization <strong>{}</strong></p><form method=\"post\" action=\"/ui/logout\">\
         <button type=\"submit\">Sign out</button></form>",
        esc(&s.org_name)
    );
    document(&format!("xrole: {}", s.org_name), &header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<img src=x onerror="alert('1')">&"#),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn the_policy_allows_no_script_and_no_framing() {
        assert!(CSP.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("script-src"));
        assert!(!CSP.contains("unsafe"));
    }
}
