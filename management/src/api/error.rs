//! API errors: a status and a JSON body `{"error": "...", "problems": [...]}` in the operator's
//! words. Internal failures are logged here and reported without details.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;
use crate::validate::FieldProblem;

#[derive(Debug)]
pub enum ApiError {
    /// Missing or wrong credentials.
    Unauthorized(String),
    /// Valid credentials of the wrong kind.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// Unreadable request (syntax, unknown query value).
    BadRequest(String),
    /// The body is over the route's limit.
    TooLarge(String),
    /// Too many failed sign-ins from this address: wait a second.
    TooManyAttempts(String),
    /// Too many failed sign-ins: the next attempt waits `retry_after` seconds.
    LockedOut {
        message: String,
        retry_after: u64,
    },
    /// Readable but rejected, field by field.
    Invalid {
        message: String,
        problems: Vec<FieldProblem>,
    },
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<FieldProblem>,
}

impl ApiError {
    pub fn invalid(problems: Vec<FieldProblem>) -> Self {
        let message = match problems.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} problems in the request", problems.len()),
        };
        ApiError::Invalid { message, problems }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what } => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, problems) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m, vec![]),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m, vec![]),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, vec![]),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, vec![]),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, vec![]),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m, vec![]),
            ApiError::TooManyAttempts(m) => (StatusCode::TOO_MANY_REQUESTS, m, vec![]),
            ApiError::LockedOut {
                message,
                retry_after,
            } => {
                let mut res = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: message,
                        problems: vec![],
                    }),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after.into());
                return res;
            }
            ApiError::Invalid { message, problems } => {
                (StatusCode::UNPROCESSABLE_ENTITY, message, problems)
            }
            ApiError::Internal(m) => {
                tracing::error!("request failed: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see nb-management's log)".to_owned(),
                    vec![],
                )
            }
        };
        let mut res = (status, Json(ErrorBody { error, problems })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("static header"));
        }
        res
    }
}
