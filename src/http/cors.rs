//! CORS for the client routes and the WebSocket Origin check, both against
//! the `--allow-origin` list (`*` allows any origin).

use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use hyper::{Request, StatusCode};

use super::reply::{empty, Response};
use super::request::{authority, host_of};
use crate::error::Error;

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
        if !headers.get_all(VARY).iter().any(|v| v == "Origin") {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
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
    /// page's own origin (an http or https Origin whose host and port are
    /// the request's Host). Non-browser clients send no Origin and are let
    /// through (they authenticate by token).
    pub fn check_websocket_origin<B>(&self, req: &Request<B>) -> Result<(), Error> {
        let Some(origin) = req.headers().get(ORIGIN).and_then(|o| o.to_str().ok()) else {
            return Ok(());
        };
        // HTTP/2 names the server in `:authority` (the URI), not in Host.
        let host = authority(req).unwrap_or("");
        if same_origin(origin, host) || self.allows(origin) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("origin {origin} is not allowed")))
        }
    }
}

impl Cors {
    /// A WebTransport session's `Origin` (browsers always send one): the
    /// session's own `authority`, the same host on herald's HTTP port
    /// `http_port` (where the page that opens it comes from: another port,
    /// so another origin), or an allowed origin.
    pub fn check_webtransport_origin(
        &self,
        origin: Option<&str>,
        authority: &str,
        http_port: u16,
    ) -> Result<(), Error> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let http = format!("{}:{http_port}", host_of(authority));
        if same_origin(origin, authority) || same_origin(origin, &http) || self.allows(origin) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("origin {origin} is not allowed")))
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the server at `host`
/// (the Host header, `host[:port]`): the scheme must be http or https, and
/// host and port must be equal, a missing port meaning the scheme's own.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    match (
        host_and_port(authority, default_port),
        host_and_port(host, default_port),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `host[:port]` (IPv6 in brackets) as lowercase host and port.
fn host_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port.parse().ok()?)
        }
        _ => (authority, default_port),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::{same_origin, Cors};

    #[test]
    fn a_websocket_over_http2_is_same_origin_by_its_authority() {
        let cors = Cors::new(&[]);
        let request = |origin: &str| {
            hyper::Request::connect("https://chat.example:8443/v1/ws")
                .header("origin", origin)
                .body(())
                .unwrap()
        };
        assert!(cors
            .check_websocket_origin(&request("https://chat.example:8443"))
            .is_ok());
        assert!(cors
            .check_websocket_origin(&request("https://evil.example"))
            .is_err());
    }

    #[test]
    fn a_webtransport_session_may_come_from_the_page_on_herald_s_http_port() {
        let cors = Cors::new(&[]);
        let check =
            |origin| cors.check_webtransport_origin(Some(origin), "chat.example:4433", 8443);
        assert!(check("https://chat.example:4433").is_ok());
        assert!(check("https://chat.example:8443").is_ok());
        assert!(check("https://chat.example:9999").is_err());
        assert!(check("https://evil.example:8443").is_err());
        assert!(cors
            .check_webtransport_origin(Some("https://[::1]:8443"), "[::1]:4433", 8443)
            .is_ok());
        assert!(cors
            .check_webtransport_origin(None, "chat.example:4433", 8443)
            .is_ok());
    }

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        for (origin, host) in [
            ("http://h.example:8080", "h.example:8080"),
            ("https://h.example", "h.example"),
            ("https://h.example", "h.example:443"),
            ("http://H.Example", "h.example:80"),
            ("http://[::1]:9", "[::1]:9"),
        ] {
            assert!(same_origin(origin, host), "{origin} {host}");
        }
        for (origin, host) in [
            ("evil://h.example:8080", "h.example:8080"),
            ("http://h.example:8081", "h.example:8080"),
            ("https://h.example", "h.example:80"),
            ("http://h.example.evil", "h.example"),
            ("http://h.example/path", "h.example"),
            ("null", "h.example"),
            ("http://", ""),
        ] {
            assert!(!same_origin(origin, host), "{origin} {host}");
        }
    }
}
