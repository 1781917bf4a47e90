//! `Idempotency-Key` for POST requests (IETF draft semantics, DESIGN.md).
//!
//! A key is scoped to (organization, principal, method, concrete path — not
//! the route template, so `/v1/aws-accounts/A/vpcs` and `…/B/vpcs` never
//! share a key) and kept for
//! [`TTL_MS`]. The first request inserts an in-flight record holding the
//! SHA-256 of its body and a lease; its handler then commits the change, the
//! audit event and the stored response in one transaction ([`respond`]).
//! A retry with the same body gets that response replayed byte for byte
//! (status, body, `Content-Type`, `Location`); a different body gets 422; a
//! retry while the first is still running gets 409 with `Retry-After`. A
//! record whose lease expired without completing (a crashed replica) is taken
//! over by the next request. Stored bodies are sealed with the keyring: a
//! replayed `POST /v1/api-keys` contains a token, which must not rest in
//! clear.
//!
//! Handler pattern:
//! ```ignore
//! let lock = match idempotency::begin(&state, &req, &principal, &body.raw, REQUIRED).await? {
//!     Begun::Replay(res) => return Ok(res),
//!     Begun::Proceed(lock) => lock,
//! };
//! let result = state.tx(move |conn| { /* change + audit */
//!     idempotency::respond(&st, conn, lock2.as_ref(), StatusCode::CREATED, &out) }).await;
//! idempotency::finish(&state, lock, result).await
//! ```

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use xrole_crypto::Aad;
use xrole_store::Conn;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a key is remembered: 24 hours.
pub const TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a first request may run before another may take its key over.
pub const LEASE_MS: i64 = 60 * 1000;
/// The header.
pub const HEADER: &str = "idempotency-key";

pub use crate::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey};

impl IdempotencyKey {
    /// Reads the header: `Ok(None)` when absent, 400 when malformed.
    pub fn from_request(req: &HttpRequest) -> Result<Option<Self>, ApiError> {
        let Some(v) = req.headers().get(HEADER) else {
            return Ok(None);
        };
        IdempotencyKey::parse(v.as_bytes())
            .map(Some)
            .map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))
    }
}

/// A held idempotency record: the request owns the key until it completes
/// or releases it.
#[derive(Debug, Clone)]
pub struct Lock {
    aad: Aad,
    lock: xrole_store::idempotency::IdempotencyLock,
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Begun {
    /// Run the handler; with `Some` lock when a key was given.
    Proceed(Option<Lock>),
    /// The stored response of the first request with this key.
    Replay(HttpResponse),
}

/// A serialized response, ready to send (it is `Send`, unlike `HttpResponse`,
/// so it can leave the blocking database thread).
#[derive(Debug)]
pub struct Prepared {
    status: StatusCode,
    body: Vec<u8>,
}

fn fingerprint(body: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .to_vec()
}

/// The sealed body's AAD names its record by the record's unique scope
/// columns (the row id is internal to the store).
pub fn aad(org: &str, principal: &str, method: &str, route: &str, key: &str) -> Aad {
    xrole_store::idempotency::response_aad(org, principal, method, route, key)
}

/// Claims the request's `Idempotency-Key`, if any (400 when `required` and
/// absent), or answers with the replay, 422 or 409 it calls for.
pub async fn begin(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    raw_body: &[u8],
    required: bool,
) -> Result<Begun, ApiError> {
    let Some(key) = IdempotencyKey::from_request(req)? else {
        return if required {
            Err(ApiError::IdempotencyKeyRequired)
        } else {
            Ok(Begun::Proceed(None))
        };
    };
    let org = principal.org_id;
    let principal_id = principal.scope_id();
    let method = req.method().as_str().to_owned();
    // The concrete path, never the route template: the same key sent to
    // another link's `/vpcs` is another request.
    let route = req.path().to_owned();
    let aad = aad(
        &org.to_string(),
        &principal_id,
        &method,
        &route,
        key.as_str(),
    );
    let fp = fingerprint(raw_body);
    let now = state.now_ms();
    let outcome = state
        .db(move |conn| {
            let scope = xrole_store::idempotency::IdempotencyScope {
                principal: &principal_id,
                method: &method,
                route: &route,
                key: key.as_str(),
            };
            Ok(xrole_store::idempotency::begin(
                conn, org, &scope, &fp, LEASE_MS, now,
            )?)
        })
        .await?;
    use xrole_store::idempotency::Begin;
    match outcome {
        Begin::Began(lock) => Ok(Begun::Proceed(Some(Lock { aad, lock }))),
        Begin::InFlight { retry_after_ms } => {
            let secs = (retry_after_ms.max(0) + 999) / 1000;
            Err(ApiError::IdempotencyInFlight {
                retry_after_secs: u64::try_from(secs.clamp(1, LEASE_MS / 1000)).unwrap_or(1),
            })
        }
        Begin::Mismatch => Err(ApiError::IdempotencyMismatch),
        Begin::Replay(stored) => {
            let body = state
                .keyring()
                .open_owned(stored.body, &aad)
                .map_err(ApiError::internal)?;
            let status = StatusCode::from_u16(stored.status).map_err(ApiError::internal)?;
            let mut res = HttpResponse::build(status);
            for (k, v) in stored.headers {
                res.insert_header((k, v));
            }
            Ok(Begun::Replay(res.body(body.expose_secret().to_vec())))
        }
    }
}

/// Serializes `value` as the response and, with a lock, stores it (sealed)
/// in the current transaction so that the change and its replay commit
/// together.
pub fn respond<T: Serialize>(
    state: &AppState,
    conn: &mut Conn,
    lock: Option<&Lock>,
    status: StatusCode,
    value: &T,
) -> Result<Prepared, ApiError> {
    let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
    if let Some(lock) = lock {
        let sealed = state
            .keyring()
            .seal(&body, &lock.aad)
            .map_err(ApiError::internal)?;
        let stored = xrole_store::idempotency::StoredResponse {
            status: status.as_u16(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: sealed,
        };
        xrole_store::idempotency::complete(conn, &lock.lock, &stored)?;
    }
    Ok(Prepared { status, body })
}

/// Sends the handler's outcome; on failure releases the key so the client
/// can retry it.
pub async fn finish(
    state: &AppState,
    lock: Option<Lock>,
    result: Result<Prepared, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(p) => Ok(HttpResponse::build(p.status)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(p.body)),
        Err(e) => {
            if let Some(lock) = lock {
                let released = state
                    .db(move |conn| Ok(xrole_store::idempotency::release(conn, &lock.lock)?))
                    .await;
                if let Err(r) = released {
                    tracing::warn!(error = %r, "could not release an idempotency key");
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn header_parsing() {
        let r = TestRequest::default().to_http_request();
        assert_eq!(IdempotencyKey::from_request(&r).unwrap(), None);
        let r = TestRequest::default()
            .insert_header((HEADER, "\"abc-123\""))
            .to_http_request();
        assert_eq!(
            IdempotencyKey::from_request(&r).unwrap().unwrap().as_str(),
            "abc-123"
        );
        for bad in ["", "\"\"", "a b", &"x".repeat(256)] {
            let r = TestRequest::default()
                .insert_header((HEADER, bad))
                .to_http_request();
            assert!(IdempotencyKey::from_request(&r).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprint_is_sha256() {
        assert_eq!(
            hex(&fingerprint(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
