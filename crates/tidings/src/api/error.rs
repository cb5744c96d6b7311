//! The API's one error shape: `{"error": {"code", "message", "field"?}}` with a 4xx status
//! for anything the client can fix, 503 with `Retry-After` while the store is unavailable or
//! full (the same request succeeds later), and 500 only for our own failures (logged).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::changes::ChangeError;
use crate::domain::validate::FieldError;
use crate::store::{Fault, StoreError};

/// The `Retry-After` (seconds) of every 503 the API answers.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: invalid_json, invalid_field, invalid_reference, invalid_query,
    /// not_found, conflict, forbidden, unauthorized, rate_limited, request_timeout,
    /// store_unavailable, disk_full, overloaded, internal.
    pub code: &'static str,
    pub message: String,
    /// The offending field as a dotted path, when one field is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn field(code: &'static str, e: FieldError) -> Self {
        let message = if e.field.is_empty() {
            e.reason.clone()
        } else {
            e.to_string()
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            field: (!e.field.is_empty()).then_some(e.field),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn query(field: &str, reason: impl Into<String>) -> Self {
        ApiError::field("invalid_query", FieldError::new(field, reason))
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound { .. } => ApiError::not_found(e.to_string()),
            ChangeError::Invalid(f) => ApiError::field("invalid_field", f),
            ChangeError::InvalidReference(f) => ApiError::field("invalid_reference", f),
            ChangeError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ChangeError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            ChangeError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Vanished(_) = e {
            return ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string());
        }
        match e.fault() {
            Fault::Unavailable => {
                tracing::warn!(error = %e, "store unavailable; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; try again shortly",
                )
            }
            Fault::Full => {
                tracing::error!(error = %e, "store full; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "disk_full",
                    "the disk is full; try again once space is freed",
                )
            }
            Fault::Other => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: StoreError) -> (StatusCode, Option<String>, &'static str) {
        let e = ApiError::from(e);
        let code = e.code;
        let r = e.into_response();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), retry, code)
    }

    #[test]
    fn an_unreachable_store_answers_503_with_retry_after() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert_eq!(
                answer(StoreError::Database(e)),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("5".into()),
                    "store_unavailable"
                )
            );
        }
    }

    #[test]
    fn a_full_store_answers_503_disk_full() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert_eq!(
            answer(StoreError::Sqlite(full)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("5".into()),
                "disk_full"
            )
        );
        assert_eq!(
            answer(StoreError::Commit(
                "database or disk is full".into(),
                Fault::Full
            ))
            .2,
            "disk_full"
        );
    }

    #[test]
    fn other_store_errors_stay_500_without_retry_after() {
        assert_eq!(
            answer(StoreError::Corrupt("bad row".into())),
            (StatusCode::INTERNAL_SERVER_ERROR, None, "internal")
        );
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert_eq!(answer(StoreError::Sqlite(constraint)).2, "internal");
    }
}
