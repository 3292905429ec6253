//! The router: which handler answers which method and path, with CORS on
//! the client routes. The top of the request path: it calls the
//! transports, the client actions and the backend API, which call the
//! domain below them; nothing below calls back up here.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::ORIGIN;
use hyper::{Method, Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{bytes, json, Response};
use crate::http::static_files;
use crate::trace::Cause;
use crate::{actions, api, transport};

/// Answers one request; never fails: errors become their JSON response.
/// With the delivery trace on, what it appends or acks is traced to it.
pub fn handle(app: &Arc<App>, req: Request<Incoming>) -> impl Future<Output = Response> + '_ {
    let cause = app.traces.enabled().then(|| Cause::of(&req));
    Cause::scope(cause, answer(app, req))
}

async fn answer(app: &Arc<App>, req: Request<Incoming>) -> Response {
    let client_route = req.uri().path().starts_with("/v1/");
    if !client_route {
        return route(app, req).await.unwrap_or_else(Error::into_response);
    }
    let origin = origin_of(&req);
    let result = if req.method() == Method::OPTIONS {
        app.cors.preflight(&req)
    } else {
        route(app, req).await
    };
    client_response(app, origin, result)
}

/// Answers a `GET /v1/sse`, `/v1/iframe`, `/v1/longpoll` or `/v1/poll` whose head the server parsed
/// itself (see `server::compact`): the same handlers and headers as
/// [`handle`] gives them.
pub fn handle_stream(app: &Arc<App>, req: Request<()>) -> impl Future<Output = Response> + '_ {
    let cause = app.traces.enabled().then(|| Cause::of(&req));
    Cause::scope(cause, answer_stream(app, req))
}

async fn answer_stream(app: &Arc<App>, req: Request<()>) -> Response {
    let origin = origin_of(&req);
    let result = if app.shutdown.is_cancelled() {
        Err(Error::ShuttingDown)
    } else {
        match req.uri().path() {
            "/v1/sse" => transport::sse::handle(app, req).await,
            "/v1/longpoll" => transport::longpoll::handle(app, req).await,
            "/v1/poll" => transport::poll::handle(app, req).await,
            _ => transport::iframe::handle(app, req).await,
        }
    };
    client_response(app, origin, result)
}

fn origin_of<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
}

/// A client route's result as a response with its CORS headers.
fn client_response(app: &App, origin: Option<String>, result: Result<Response, Error>) -> Response {
    let mut response = result.unwrap_or_else(Error::into_response);
    app.cors.decorate(origin.as_deref(), &mut response);
    response
}

/// Fails with 405 unless `method` is `allowed` (as written in `Allow`).
fn allow(method: &Method, allowed: &'static str) -> Result<(), Error> {
    if allowed.split(", ").any(|m| m == method.as_str()) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed(allowed))
    }
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if app.shutdown.is_cancelled() && segments.first() != Some(&"healthz") {
        return Err(Error::ShuttingDown);
    }
    match segments.as_slice() {
        ["healthz"] => {
            allow(&method, "GET, HEAD")?;
            let durability = app.upkeep.durability();
            Ok(match app.upkeep.unreachable() {
                None => json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "durability": durability}),
                ),
                Some(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "store_unavailable", "reason": reason, "durability": durability}),
                ),
            })
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
        ["v1", "sse"] => {
            allow(&method, "GET")?;
            transport::sse::handle(app, req).await
        }
        ["v1", "iframe"] => {
            allow(&method, "GET")?;
            transport::iframe::handle(app, req).await
        }
        ["v1", "ws"] => {
            // CONNECT: a WebSocket over HTTP/2 (RFC 8441).
            if method != Method::CONNECT {
                allow(&method, "GET")?;
            }
            transport::ws::handle(app, req).await
        }
        ["v1", "webtransport"] => {
            allow(&method, "GET")?;
            transport::wt::advert(app, &req)
        }
        ["v1", "conversations", uid, "messages"] => {
            allow(&method, "GET")?;
            let uid = uid.to_string();
            actions::conversation(app, req, &uid).await
        }
        ["v1", "messages", id, "read"] => {
            allow(&method, "POST")?;
            let id = id.to_string();
            actions::message_read(app, req, &id).await
        }
        ["v1", "counters"] => {
            allow(&method, "GET")?;
            actions::counters(app, req).await
        }
        ["v1", "broadcasts"] => {
            allow(&method, "GET")?;
            actions::broadcasts(app, req).await
        }
        ["api", "v1", "broadcast"] => {
            allow(&method, "POST")?;
            api::notices::broadcast(app, req).await
        }
        ["v1", "news"] => {
            allow(&method, "GET")?;
            actions::news(app, req).await
        }
        ["api", "v1", "users", uid, "counters"] => {
            allow(&method, "POST")?;
            let uid = uid.to_string();
            api::notices::change_counter(app, req, &uid).await
        }
        ["api", "v1", "news", date] => {
            allow(&method, "PUT")?;
            let date = date.to_string();
            api::notices::put_news(app, req, &date).await
        }
        ["v1", "typing"] => {
            allow(&method, "POST")?;
            actions::typing::post(app, req).await
        }
        ["v1", "status"] => {
            allow(&method, "PUT")?;
            actions::put_status(app, req).await
        }
        ["v1", "friends", "presence"] => {
            allow(&method, "GET")?;
            actions::friends_presence(app, req).await
        }
        ["v1", "groups", gid, "messages"] => {
            let gid = gid.to_string();
            match method {
                Method::POST => actions::groups::post_message(app, req, &gid).await,
                Method::GET => actions::groups::history(app, req, &gid).await,
                _ => Err(Error::MethodNotAllowed("GET, POST")),
            }
        }
        ["v1", "groups", gid, "read"] => {
            allow(&method, "POST")?;
            let gid = gid.to_string();
            actions::groups::read(app, req, &gid).await
        }
        ["v1", "groups", gid, "receipts"] => {
            allow(&method, "GET")?;
            let gid = gid.to_string();
            actions::groups::receipts(app, req, &gid).await
        }
        ["v1", "groups", gid, "presence"] => {
            allow(&method, "GET")?;
            let gid = gid.to_string();
            actions::group_presence(app, req, &gid).await
        }
        ["api", "v1", "users", uid] => {
            allow(&method, "GET")?;
            let uid = uid.to_string();
            api::users::inspect(app, req, &uid).await
        }
        ["api", "v1", "users", uid, "events", seq] => {
            allow(&method, "GET")?;
            let (uid, seq) = (uid.to_string(), seq.to_string());
            api::users::trace(app, req, &uid, &seq).await
        }
        ["api", "v1", "users", uid, "friends"] => {
            allow(&method, "PUT")?;
            let uid = uid.to_string();
            api::social::put_friends(app, req, &uid).await
        }
        ["api", "v1", "groups", gid, "members"] => {
            allow(&method, "PUT")?;
            let gid = gid.to_string();
            api::social::put_members(app, req, &gid).await
        }
        ["v1", "messages"] => {
            allow(&method, "POST")?;
            actions::send_message(app, req).await
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
        ["api", "v1", "feed"] => {
            allow(&method, "GET")?;
            api::feed::handle(app, req).await
        }
        ["api", "v1", "publish"] => {
            allow(&method, "POST")?;
            api::publish::handle(app, req).await
        }
        ["v1", ..] | ["api", ..] => Err(Error::NotFound(format!("no route {method} {path}"))),
        // The operations page; what it shows comes from /metrics, which
        // needs the API key.
        ["dashboard"] => {
            allow(&method, "GET, HEAD")?;
            static_files::serve(&app.config.static_dir, "/dashboard.html").await
        }
        _ => {
            allow(&method, "GET, HEAD")?;
            static_files::serve(&app.config.static_dir, &path).await
        }
    }
}
