//! Building responses: the body type every handler returns and JSON helpers.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;
use serde::Serialize;

/// The body of every response: a whole buffer or a stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
pub type Response = hyper::Response<Body>;

/// A response with `body` as is.
pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON response of `value`.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    // Serialising our own response types cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes(status, "application/json", body)
}

/// A JSON response whose body is already serialised.
pub fn raw_json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    bytes(status, "application/json", body)
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response {
    let mut response = hyper::Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = status;
    response
}

/// `{"<name>":[items…],"cursor":K}` from stored JSON objects, K being the
/// `id_field` of the last item (or `after` when there is none): the answer
/// of the "items after my cursor" pulls (group history, broadcasts).
pub fn list_after(name: &str, items: &[Bytes], id_field: &str, after: u64) -> Response {
    let mut cursor = after;
    let mut body = format!("{{\"{name}\":[").into_bytes();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(item) {
            cursor = v[id_field].as_u64().unwrap_or(cursor);
        }
    }
    body.extend_from_slice(format!("],\"cursor\":{cursor}}}").as_bytes());
    raw_json(StatusCode::OK, body)
}
