//! The one error type of the HTTP edge: every failure a request can meet,
//! mapped to a status and a JSON body `{"error": code, "message": text}`.

use hyper::header::{HeaderValue, ALLOW, CONNECTION, RETRY_AFTER};
use hyper::StatusCode;

use super::reply::{json, Response};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed; `code` names what is wrong.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 401: no, invalid or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists with other methods (listed in `Allow`).
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// 409: the request conflicts with the server's state.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 413: the body is over the limit (bytes).
    #[error("request body is over the {0}-byte limit")]
    TooLarge(usize),
    /// 429: a limit was reached; retry after the given seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// 503: the server is shutting down.
    #[error("the server is shutting down; reconnect shortly")]
    ShuttingDown,
    /// 500: a bug or an unexpected failure outside the store.
    #[error("{0}")]
    Internal(String),
    /// 500/503: the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Shorthand for a 400 with a code and message.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Error {
        Error::BadRequest(code, message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(..) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(..) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ShuttingDown | Error::Store(StoreError::Closed) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) | Error::Store(StoreError::Io(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(code, _) | Error::Conflict(code, _) => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "body_too_large",
            Error::TooMany { .. } => "too_many_requests",
            Error::ShuttingDown | Error::Store(StoreError::Closed) => "shutting_down",
            Error::Internal(_) => "internal",
            Error::Store(StoreError::Io(_)) => "storage_error",
        }
    }

    /// The response a client gets for this error.
    pub fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{status}: {self}");
        }
        let body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        let mut response = json(status, &body);
        let headers = response.headers_mut();
        match &self {
            Error::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Error::TooMany { retry_after, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::ShuttingDown => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of the body may be unread: the connection cannot be
            // reused, and the client must know before it tries.
            Error::TooLarge(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
