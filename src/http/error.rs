//! The HTTP side of [`Error`]: its status, headers and JSON body
//! `{"error": code, "message": text}` (plus `"head"` for `cursor_ahead`).

use hyper::header::{HeaderValue, ALLOW, CONNECTION, RETRY_AFTER};
use hyper::StatusCode;

use super::reply::{json, Response};
use crate::error::Error;
use crate::store::StoreError;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(..) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::Rejected(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(..) | Error::CursorAhead { .. } => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::HookInvalid(_) => StatusCode::BAD_GATEWAY,
            Error::Store(StoreError::OutcomeUnknown(_)) => StatusCode::GATEWAY_TIMEOUT,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ShuttingDown
            | Error::HookUnavailable(_)
            | Error::Store(StoreError::Closed)
            | Error::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) | Error::Store(StoreError::Io(_) | StoreError::Refused(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The response a client gets for this error.
    pub fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{status}: {self}");
        }
        let mut body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        if let Error::CursorAhead { head, .. } = self {
            // Where to resume, for clients (herald.js) to read.
            body["head"] = head.into();
        }
        let mut response = json(status, &body);
        let headers = response.headers_mut();
        match &self {
            Error::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Error::TooMany { retry_after, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::ShuttingDown
            | Error::HookUnavailable(_)
            | Error::Store(StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_)) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of the body may be unread: the connection cannot be
            // reused, and the client must know before it tries.
            Error::TooLarge(_) | Error::BodyTimeout(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
