//! Request input read inside handlers, after authentication, so an
//! unauthenticated caller always gets 401 whatever else is wrong with the
//! request: JSON bodies ([`read_json`], keeping the raw bytes for the
//! idempotency fingerprint), path ids ([`path_id`]) and queries ([`query`]).

use std::str::FromStr;
use std::time::Duration;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, http::header};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, json_error};

/// The largest body accepted, in bytes (app data; default 64 KiB).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How long a body may take to arrive once the head is read (app data;
/// default 10 s). A slower body gets 408 `body_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// A parsed JSON body plus the bytes it came from.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed value.
    pub value: T,
    /// The body exactly as received.
    pub raw: Bytes,
}

/// Reads and parses a JSON body: 413 over the limit, 415 without a JSON
/// content type, 400 for malformed JSON, unknown fields or wrong types, 408
/// when the body does not arrive within the [`BodyTimeout`].
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<JsonBody<T>, ApiError> {
    let limit = req.app_data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let deadline = req
        .app_data::<BodyTimeout>()
        .map_or(Duration::from_secs(10), |t| t.0);
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request("malformed_body", e.to_string()))?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    let buf = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout {
            secs: deadline.as_secs(),
        })??;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let raw = buf.freeze();
    let value = serde_json::from_slice(&raw).map_err(|e| json_error(&e))?;
    Ok(JsonBody { value, raw })
}

/// Parses a path id; a malformed one is 404, exactly like an id that does
/// not exist (or belongs to another organization).
pub fn path_id<T: FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// Parses the query string (400 `invalid_query` on unknown parameters or
/// wrong types).
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
}
