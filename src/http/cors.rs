//! CORS for the client routes and the WebSocket Origin check, both against
//! the `--allow-origin` list (`*` allows any origin).

use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, HOST,
    ORIGIN, VARY,
};
use hyper::{Request, StatusCode};

use super::reply::{empty, Response};
use super::Error;

/// The allowed browser origins.
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }

    /// Answers a preflight `OPTIONS` request.
    pub fn preflight<B>(&self, req: &Request<B>) -> Result<Response, Error> {
        let origin = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok());
        match origin {
            Some(origin) if self.allows(origin) => {
                let mut response = empty(StatusCode::NO_CONTENT);
                self.decorate(Some(origin), &mut response);
                let headers = response.headers_mut();
                headers.insert(
                    ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, PUT, OPTIONS"),
                );
                headers.insert(
                    ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, last-event-id"),
                );
                headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                Ok(response)
            }
            Some(origin) => Err(Error::Forbidden(format!("origin {origin} is not allowed"))),
            None => Err(Error::bad(
                "not_preflight",
                "OPTIONS needs an Origin header",
            )),
        }
    }

    /// Adds the CORS headers for `origin` to `response` if it is allowed.
    pub fn decorate(&self, origin: Option<&str>, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        if let Ok(value) = HeaderValue::from_str(origin) {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after"),
            );
        }
    }

    /// A browser's WebSocket must come from an allowed origin or from the
    /// page's own origin (Origin's host equals Host). Non-browser clients
    /// send no Origin and are let through (they authenticate by token).
    pub fn check_websocket_origin<B>(&self, req: &Request<B>) -> Result<(), Error> {
        let Some(origin) = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()) else {
            return Ok(());
        };
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same_origin = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host);
        if same_origin || self.allows(origin) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("origin {origin} is not allowed")))
        }
    }
}
