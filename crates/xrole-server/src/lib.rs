#![doc = include_str!("../README.md")]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod aws_env;
pub mod body;
pub mod clock;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod idempotency_key;
pub mod jobs;
pub mod journal;
pub mod keyring_watch;
pub mod link_flow;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod timefmt;
pub mod worker;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{App, HttpResponse, HttpServer, web};

pub use clock::{Clock, FakeClock, SystemClock};
pub use config::Config;
pub use error::ApiError;
pub use state::AppState;

use crate::body::{BodyLimit, BodyTimeout};
use crate::error::PROBLEM_JSON;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] xrole_store::Error),
    /// The keyring cannot be loaded or created.
    #[error("keyring: {0}")]
    Keyring(#[from] xrole_crypto::Error),
    /// No keyring is configured and `--dev` was not given.
    #[error(
        "no keyring configured: set XROLE_KEYRING_FILE (or XROLE_KEYRING), \
         or run with --dev to create a development keyring"
    )]
    NoKeyring,
    /// Binding the listener failed.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the pool, runs pending migrations and assembles the state.
pub fn open_state(
    config: Config,
    keyring: Arc<xrole_crypto::Keyring>,
    clock: Arc<dyn Clock>,
) -> Result<AppState, StartError> {
    // Migrate on one connection first: a fresh SQLite file switches to WAL
    // there, before the pool opens its connections all at once.
    let mut conn = xrole_store::connect(&config.database_url)?;
    xrole_store::run_migrations(&mut conn)?;
    drop(conn);
    let pool = xrole_store::pool(&config.database_url, pool_size(&config.database_url))?;
    Ok(AppState::new(config, pool, keyring, clock))
}

fn pool_size(url: &str) -> u32 {
    // SQLite has one writer; a few readers are plenty.
    match xrole_store::parse_url(url) {
        Ok((xrole_store::Backend::Postgres, _)) => 16,
        _ => 8,
    }
}

/// The application: routes, extractor error handlers, metrics and the
/// problem+json safety net.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    build_app_with(state, routes::table())
}

/// [`build_app`] with an explicit route table (part 2 appends its routes).
pub fn build_app_with(
    state: AppState,
    table: Vec<routes::RouteDef>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    let limit = state.config.max_body_bytes;
    let body_timeout = std::time::Duration::from_secs(state.config.body_timeout_secs);
    App::new()
        .app_data(web::Data::new(state))
        .app_data(BodyLimit(limit))
        .app_data(BodyTimeout(body_timeout))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(error::json_payload_error),
        )
        .configure(|cfg| routes::register(cfg, table))
        .configure(|cfg| routes::register(cfg, routes::pages()))
        .default_service(web::to(error::route_not_found))
        .wrap(ErrorHandlers::new().default_handler(problem_fallback))
        .wrap_fn(move |req, srv| {
            let start = Instant::now();
            // `Method` clones without allocating for the standard methods.
            let method = req.method().clone();
            let metrics = metrics.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                metrics.observe(
                    method.as_str(),
                    &route,
                    res.status().as_u16(),
                    start.elapsed(),
                );
                Ok(res)
            }
        })
}

/// Turns any error response that is not already a problem (actix's own
/// 4xx/5xx answers) into one, so clients see a single error format.
fn problem_fallback<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    // The status page answers its own errors as HTML pages.
    let is_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_problem || is_page {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, title) = match status.as_u16() {
        400 => ("bad_request", "Bad request"),
        401 => ("unauthenticated", "Unauthenticated"),
        404 => ("route_not_found", "Not found"),
        405 => ("method_not_allowed", "Method not allowed"),
        408 => ("request_timeout", "Request timeout"),
        413 => ("payload_too_large", "Payload too large"),
        415 => ("unsupported_media_type", "Unsupported media type"),
        431 => ("headers_too_large", "Request header fields too large"),
        s if s >= 500 => ("internal", "Internal server error"),
        _ => ("bad_request", "Bad request"),
    };
    let body = serde_json::json!({
        "type": format!("urn:xrole:problem:{code}"),
        "title": title,
        "status": status.as_u16(),
        "code": code,
    });
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status);
    for h in [header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(v) = old.headers().get(&h) {
            new.insert_header((h, v.clone()));
        }
    }
    let new = new
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
        .body(body.to_string());
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
}

/// Starts the HTTP server on `listener` (use port 0 in tests). The returned
/// [`Server`] runs until awaited and stops gracefully on SIGTERM/SIGINT.
pub fn run(listener: TcpListener, state: AppState) -> Result<Server, StartError> {
    run_with(listener, state, routes::table())
}

/// [`run`] with an explicit route table.
pub fn run_with(
    listener: TcpListener,
    state: AppState,
    table: Vec<routes::RouteDef>,
) -> Result<Server, StartError> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let server = HttpServer::new(move || build_app_with(state.clone(), table.clone()))
        .workers(workers)
        .shutdown_timeout(30)
        .listen(listener)?
        .run();
    Ok(server)
}
