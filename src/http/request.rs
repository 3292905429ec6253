//! Reading requests: size-limited JSON bodies and typed query parameters,
//! each failure turned into a clear 400/413.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::Request;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::Error;

/// Reads the body of `req` (at most `--max-body` bytes) as JSON of type
/// `T`. The whole body must arrive within `--idle-timeout-ms` of its head,
/// else `408 body_timeout` (the connection is then closed): a client that
/// sends a head and then trickles or withholds its body would otherwise
/// hold a connection, and its file descriptor, for as long as it likes.
///
/// A body over the limit is still read and discarded up to a few times the
/// limit before the 413 goes out: a client still writing its body when the
/// server answers and closes would get a broken pipe instead of the 413.
pub async fn json_body<T: DeserializeOwned>(
    req: Request<Incoming>,
    config: &Config,
) -> Result<T, Error> {
    let within = config.idle_timeout();
    tokio::time::timeout(within, read_json(req, config.max_body))
        .await
        .unwrap_or_else(|_| {
            Err(Error::BodyTimeout(
                u64::try_from(within.as_millis()).unwrap_or(u64::MAX),
            ))
        })
}

async fn read_json<T: DeserializeOwned>(req: Request<Incoming>, limit: usize) -> Result<T, Error> {
    let drain_budget = limit.saturating_mul(4).max(1 << 20);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_budget as u64) {
        return Err(Error::TooLarge(limit));
    }
    let mut body = req.into_body();
    let mut bytes = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::bad("bad_body", format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= limit {
            bytes.extend_from_slice(&data);
        } else if total > drain_budget {
            break;
        }
    }
    if total > limit {
        return Err(Error::TooLarge(limit));
    }
    if bytes.is_empty() {
        return Err(Error::bad("bad_json", "a JSON body is required"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad("bad_json", format!("invalid JSON body: {e}")))
}

/// The query parameters of a request (the first value of each name).
///
/// The pairs borrow from the URI unless they had to be decoded: a request
/// has a handful, so a list beats a map, and most cost no allocation.
pub struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    pub fn of<B>(req: &'a Request<B>) -> Query<'a> {
        Query::parse(req.uri().query().unwrap_or(""))
    }

    /// The pairs of a query string (`a=1&b=2`, without the `?`).
    pub fn parse(query: &'a str) -> Query<'a> {
        Query(form_urlencoded::parse(query.as_bytes()).collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// A non-negative integer parameter, `None` if absent.
    pub fn u64(&self, name: &'static str) -> Result<Option<u64>, Error> {
        self.get(name).map(|v| parse_u64(name, v)).transpose()
    }

    /// An integer parameter within `range`, `default` if absent.
    pub fn u64_in(
        &self,
        name: &'static str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, Error> {
        let value = self.u64(name)?.unwrap_or(default);
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(Error::BadRequest(
                code_for(name),
                format!(
                    "{name} must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

/// The address a request came from (put in its extensions by the server).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The server's name and port as the client named them: `Host`, or over
/// HTTP/2 the `:authority` (there is no `Host` then).
pub fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The host of an authority (`host[:port]`, `[v6][:port]`), without its port.
pub fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The address `req` came from, if the server recorded it.
pub fn client_of<B>(req: &Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions().get::<ClientAddr>().map(|c| c.0)
}

/// The `Idempotency-Key` header of a backend write, if given: 1-64
/// visible ASCII characters, else 400 `bad_idempotency_key`.
pub fn idempotency_key<B>(req: &Request<B>) -> Result<Option<String>, Error> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > 64 || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Error::bad(
            "bad_idempotency_key",
            "Idempotency-Key must be 1-64 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

/// Whether a comma-separated header value (`Connection`, `Upgrade`) lists
/// `token`, case-insensitively.
pub fn header_has(value: Option<&hyper::header::HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses a decimal u64, naming the parameter in the error.
pub fn parse_u64(name: &'static str, value: &str) -> Result<u64, Error> {
    let digits =
        !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            Error::BadRequest(
                code_for(name),
                format!("{name} must be a non-negative integer"),
            )
        })
}

fn code_for(name: &str) -> &'static str {
    match name {
        "cursor" | "Last-Event-ID" => "bad_cursor",
        "limit" => "bad_limit",
        "timeout" => "bad_timeout",
        "before" | "after" => "bad_window",
        "partition" => "bad_partition",
        _ => "bad_parameter",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_u64_round_trips(n in any::<u64>()) {
            prop_assert_eq!(parse_u64("cursor", &n.to_string()).unwrap(), n);
        }

        #[test]
        fn anything_but_plain_digits_is_a_clear_400(text in "\\PC*") {
            let result = parse_u64("cursor", &text);
            let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            match result {
                Ok(n) => prop_assert!(digits && n.to_string().trim_start_matches('0') == text.trim_start_matches('0')),
                Err(e) => {
                    prop_assert_eq!(e.code(), "bad_cursor");
                    prop_assert!(!digits || text.len() > 19);
                }
            }
        }

        #[test]
        fn limits_and_timeouts_are_in_range_or_refused(
            limit in "[0-9a-z-]{0,25}",
            timeout in "[0-9a-z%+-]{0,25}",
        ) {
            let text = format!("limit={limit}&timeout={timeout}&limit=7");
            let query = Query::parse(&text);
            match query.u64_in("limit", 1..=1000, 100) {
                Ok(n) => {
                    let written = n.to_string();
                    prop_assert!((1..=1000).contains(&n));
                    prop_assert_eq!(written.trim_start_matches('0'), limit.trim_start_matches('0'));
                }
                Err(e) => prop_assert_eq!(e.code(), "bad_limit"),
            }
            match query.u64_in("timeout", 1..=110, 30) {
                Ok(timeout) => prop_assert!((1..=110).contains(&timeout)),
                Err(e) => prop_assert_eq!(e.code(), "bad_timeout"),
            }
        }
    }
}
