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

/// Deserializes a JSON integer into `T`, also when written with a zero
/// fraction (`7.0`, `1e2`): JSON Schema's `integer` admits those, so the
/// OpenAPI document's integers must too. Other fractions, and values out of
/// `T`'s range, are refused.
pub fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::{Error, Unexpected, Visitor};

    struct Whole<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<i64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer in range")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            i64::try_from(v)
                .ok()
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // Every f64 of magnitude 2^53 or more is whole; bound it well
            // inside i64 so the cast below is exact.
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                #[allow(clippy::cast_possible_truncation)]
                let n = v as i64;
                return self.visit_i64(n);
            }
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    d.deserialize_any(Whole(std::marker::PhantomData))
}

/// [`whole_number`] for an optional field: absent or `null` is `None`.
pub fn optional_whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(serde::Deserialize)]
    struct Wrap<T: TryFrom<i64>>(#[serde(deserialize_with = "whole_number")] T);
    let v: Option<Wrap<T>> = serde::Deserialize::deserialize(d)?;
    Ok(v.map(|Wrap(v)| v))
}
