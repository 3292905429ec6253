//! What caused a step of the trace: the request (HTTP, or one WebSocket
//! command) running as the task-local [`Cause`], with its W3C trace id and
//! idempotency key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

/// The request that made something happen: an HTTP request, or one
/// command on a WebSocket.
#[derive(Debug, Default, Serialize)]
pub struct Cause {
    /// This node's number for the request.
    pub request: u64,
    /// `POST /api/v1/publish`, `ws send`, ...
    pub what: Box<str>,
    /// The W3C trace id of the request's `traceparent` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<Box<str>>,
    /// Its `Idempotency-Key`, or a message's `cid`, once known.
    #[serde(skip_serializing_if = "unset", serialize_with = "once")]
    pub key: OnceLock<Box<str>>,
}

fn unset(key: &OnceLock<Box<str>>) -> bool {
    key.get().is_none()
}

fn once<S: serde::Serializer>(key: &OnceLock<Box<str>>, s: S) -> Result<S::Ok, S::Error> {
    key.get().serialize(s)
}

static REQUESTS: AtomicU64 = AtomicU64::new(1);

impl Cause {
    /// A new request's cause; `traceparent` is its header, if any.
    pub fn new(what: String, traceparent: Option<&str>) -> Arc<Cause> {
        Arc::new(Cause {
            request: REQUESTS.fetch_add(1, Ordering::Relaxed),
            what: what.into(),
            trace_id: traceparent.and_then(trace_id_of).map(Box::from),
            key: OnceLock::new(),
        })
    }

    /// The cause of an HTTP request: its method, path, `traceparent` and
    /// `Idempotency-Key`.
    pub fn of<B>(req: &hyper::Request<B>) -> Arc<Cause> {
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let cause = Cause::new(
            format!("{} {}", req.method(), req.uri().path()),
            traceparent,
        );
        if let Some(key) = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
        {
            let _ = cause
                .key
                .set(key.chars().take(64).collect::<String>().into());
        }
        cause
    }

    /// The request running now, if any.
    pub fn current() -> Option<Arc<Cause>> {
        CAUSE.try_with(Clone::clone).ok()
    }

    /// Records the idempotency key (or `cid`) of the request running now.
    pub fn note_key(key: &str) {
        let _ = CAUSE.try_with(|cause| cause.key.set(key.into()));
    }

    /// `fut`, run as caused by `cause` if there is one. Not an `async fn`:
    /// a held request's future (a long-poll's) stays the size of `fut`.
    pub fn scope<F: std::future::Future>(
        cause: Option<Arc<Cause>>,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        match cause {
            Some(cause) => futures::future::Either::Left(CAUSE.scope(cause, fut)),
            None => futures::future::Either::Right(fut),
        }
    }
}

tokio::task_local! {
    static CAUSE: Arc<Cause>;
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`),
/// if it is one (an all-zero id is invalid).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::trace_id_of;

    #[test]
    fn a_traceparent_gives_its_trace_id_and_anything_else_nothing() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(id)
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }
}
