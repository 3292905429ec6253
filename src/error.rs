//! The one error type of herald's operations: every way a request can
//! fail, with a stable machine-readable code. It knows nothing of HTTP; the
//! edge (`http::error`) maps each to a status and a JSON body, and the
//! WebSocket replies carry the same codes.

use crate::store::StoreError;

/// What went wrong; the variant decides the status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (400); `code` names what is wrong.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// No, invalid or expired credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// The message hook denied a message, with its reason (403).
    #[error("{0}")]
    Rejected(String),
    /// The message hook answered something herald cannot send (502).
    #[error("{0}")]
    HookInvalid(String),
    /// The message hook failed and fails closed (503).
    #[error("{0}")]
    HookUnavailable(String),
    /// No such route or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists with other methods, listed (405).
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The request conflicts with the server's state (409).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// A cursor (or ack) beyond the newest event `head` (409
    /// `cursor_ahead`): the client remembers a queue this server never had.
    #[error("cursor {cursor} is beyond the newest event {head}; resume from {head}")]
    CursorAhead { cursor: u64, head: u64 },
    /// The body did not arrive within the deadline after its head (408).
    #[error("the request body did not arrive within {0} ms of its head")]
    BodyTimeout(u64),
    /// The body is over the limit, in bytes (413).
    #[error("request body is over the {0}-byte limit")]
    TooLarge(usize),
    /// A limit was reached; retry after the given seconds (429).
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// The server is shutting down (503).
    #[error("the server is shutting down; reconnect shortly")]
    ShuttingDown,
    /// A bug or an unexpected failure outside the store (500).
    #[error("{0}")]
    Internal(String),
    /// The store failed (500, or 503 when it is closing or unreachable).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Shorthand for a 400 with a code and message.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Error {
        Error::BadRequest(code, message.into())
    }

    /// The 409 of a cursor (or ack) beyond the newest event `head`: the
    /// client should resume from `head`.
    pub fn cursor_ahead(cursor: u64, head: u64) -> Error {
        Error::CursorAhead { cursor, head }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(code, _) | Error::Conflict(code, _) => code,
            Error::CursorAhead { .. } => "cursor_ahead",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Rejected(_) => "rejected",
            Error::HookUnavailable(_) => "hook_unavailable",
            Error::HookInvalid(_) => "hook_invalid",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "body_too_large",
            Error::BodyTimeout(_) => "body_timeout",
            Error::TooMany { .. } => "too_many_requests",
            Error::ShuttingDown | Error::Store(StoreError::Closed) => "shutting_down",
            Error::Internal(_) => "internal",
            Error::Store(StoreError::Io(_) | StoreError::Refused(_)) => "storage_error",
            Error::Store(StoreError::Unavailable(_)) => "store_unavailable",
            Error::Store(StoreError::OutcomeUnknown(_)) => "outcome_unknown",
        }
    }
}
