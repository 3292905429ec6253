//! The static files under `static/` (the demo page and herald.js) at `/`.

use std::path::{Component, Path};

use hyper::StatusCode;

use super::reply::{bytes, Response};
use crate::error::Error;

/// Serves `path` from `root`; `/` is `index.html`. Paths that would leave
/// `root` or name hidden files are 404s.
pub async fn serve(root: &Path, path: &str) -> Result<Response, Error> {
    let relative = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let safe = Path::new(relative)
        .components()
        .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    let not_found = || Error::NotFound(format!("no file {path}"));
    if !safe {
        return Err(not_found());
    }
    let file = root.join(relative);
    let content = tokio::fs::read(&file).await.map_err(|_| not_found())?;
    let mut response = bytes(StatusCode::OK, content_type(&file), content);
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
