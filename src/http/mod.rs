//! The HTTP edge: routing, errors, authentication, request parsing.

pub mod auth;
mod error;
pub mod reply;
pub mod request;
mod static_files;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

pub use self::error::Error;
use self::reply::{bytes, json, Response};
use crate::app::App;
use crate::{actions, api, transport};

/// Answers one request; never fails: errors become their JSON response.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response {
    route(app, req).await.unwrap_or_else(Error::into_response)
}

/// Fails with 405 unless `method` is `allowed` (as written in `Allow`).
fn allow(method: &Method, allowed: &'static str) -> Result<(), Error> {
    if allowed.split(", ").any(|m| m == method.as_str()) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed(allowed))
    }
}

async fn route(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if app.shutdown.is_cancelled() && segments.first() != Some(&"healthz") {
        return Err(Error::ShuttingDown);
    }
    match segments.as_slice() {
        ["healthz"] => {
            allow(&method, "GET, HEAD")?;
            Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
        }
        ["metrics"] => {
            allow(&method, "GET")?;
            app.auth.backend(&req)?;
            Ok(bytes(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                app.metrics.render(),
            ))
        }
        ["v1", "poll"] => {
            allow(&method, "GET")?;
            transport::poll::handle(app, req).await
        }
        ["v1", "longpoll"] => {
            allow(&method, "GET")?;
            transport::longpoll::handle(app, req).await
        }
        ["v1", "ack"] => {
            allow(&method, "POST")?;
            actions::ack(app, req).await
        }
        ["v1", "demo", "login"] if app.demo => {
            allow(&method, "POST")?;
            actions::demo_login(app, req).await
        }
        ["api", "v1", "tokens"] => {
            allow(&method, "POST")?;
            api::tokens::handle(app, req).await
        }
        ["api", "v1", "publish"] => {
            allow(&method, "POST")?;
            api::publish::handle(app, req).await
        }
        ["v1", ..] | ["api", ..] => Err(Error::NotFound(format!("no route {method} {path}"))),
        _ => {
            allow(&method, "GET, HEAD")?;
            static_files::serve(&app.config.static_dir, &path).await
        }
    }
}
