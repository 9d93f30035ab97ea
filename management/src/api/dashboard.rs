//! Serves the dashboard embedded at build time (see `build.rs`). The UI routes by URL fragment,
//! so only `/` and the hashed assets exist.

use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/dashboard.rs"));
}

const NOT_BUILT: &str = "<!doctype html><title>nb-management</title><h1>The dashboard is not built</h1>\
<p>Run <code>npm install &amp;&amp; npm run build</code> in <code>dashboard/</code>, then build nb-management \
again (<code>scripts/test.sh</code> and <code>scripts/quickstart.sh</code> do both). The API works \
without it: see <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

pub fn file(path: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match file(path) {
        Some(bytes) => {
            // Hashed asset names change with their content; index.html must be re-read.
            let cache = if path.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, content_type(path)),
                    (header::CACHE_CONTROL, cache),
                ],
                bytes,
            )
                .into_response()
        }
        None if path == "index.html" => Html(NOT_BUILT).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
