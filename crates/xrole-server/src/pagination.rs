//! Cursor pagination: `?limit=&cursor=` in, `{data, next_cursor}` out
//! (see [`crate::routes::models::Page`]).

use serde::Deserialize;
use utoipa::IntoParams;
use xrole_store::{Cursor, PageRequest};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = xrole_store::MAX_PAGE_SIZE;

/// Query parameters of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The validated store request: 422 for a limit out of range or a
    /// cursor this server did not issue.
    pub fn to_request(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ));
            }
        };
        match &self.cursor {
            None => Ok(PageRequest::first(limit)),
            Some(c) => {
                let c: Cursor = c
                    .parse()
                    .map_err(|_| ApiError::invalid("cursor", "not a cursor this API issued"))?;
                Ok(PageRequest::after(limit, c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_cursor_validation() {
        assert_eq!(
            PageQuery::default().to_request().unwrap().limit,
            DEFAULT_LIMIT
        );
        assert!(
            PageQuery {
                limit: Some(0),
                cursor: None
            }
            .to_request()
            .is_err()
        );
        assert!(
            PageQuery {
                limit: Some(MAX_LIMIT + 1),
                cursor: None
            }
            .to_request()
            .is_err()
        );
        assert_eq!(
            PageQuery {
                limit: Some(1),
                cursor: None
            }
            .to_request()
            .unwrap()
            .limit,
            1
        );
        assert!(
            PageQuery {
                limit: None,
                cursor: Some("nope".into())
            }
            .to_request()
            .is_err()
        );
    }
}
