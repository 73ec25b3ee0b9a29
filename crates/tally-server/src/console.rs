//! The web console at `/console` (docs/console.md): static pages built into the binary,
//! and the few routes the pages need beyond the FQL endpoint itself.
//!
//! - `GET /console/…`: the console and the Animal Exchange market page (`assets/`), with
//!   a content security policy that allows only this origin's scripts and connections
//!   and no framing;
//! - `POST /console/parse`, `/console/format`, `/console/query`: FQL text in the
//!   JavaScript driver's syntax to wire JSON and answers back to text (`query.rs`);
//! - `GET /ledger/blocks`: recent block headers for the ledger view (`blocks.rs`), with
//!   the authority `/ledger/head` needs.
//!
//! What it must not do: weaken docs/security.md. None of these routes answers another
//! origin (no CORS headers: a web page elsewhere cannot read them), a secret is read only
//! from the `Authorization` header, and the pages keep it in the tab's session storage.

mod blocks;
mod query;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::http::AppState;

/// Every file the console serves: name, content type, bytes (built into the binary).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("console/assets/index.html")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("console/assets/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/api.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/ui.js")),
    ("schema.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/schema.js")),
    ("docs.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/docs.js")),
    ("ledger.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/ledger.js")),
    ("exchange.html", "text/html; charset=utf-8", include_bytes!("console/assets/exchange.html")),
    ("exchange.js", "text/javascript; charset=utf-8", include_bytes!("console/assets/exchange.js")),
];

/// Only this origin's own files and connections; no inline script, no framing (a page
/// that holds a secret must not be clickjacked), no referrer leaving the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's address for the start-up message: an unspecified listen address
/// (`0.0.0.0`, `::`) is shown as loopback, which a browser on the same machine can open.
pub fn url(addr: std::net::SocketAddr, https: bool) -> String {
    let mut shown = addr;
    if addr.ip().is_unspecified() {
        shown.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("{}://{shown}/console/", if https { "https" } else { "http" })
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route("/console/exchange", get(|| async { asset("exchange.html") }))
        .route("/console/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
        .route("/console/parse", post(query::parse))
        .route("/console/format", post(query::format))
        .route("/console/query", post(query::query))
        .route("/ledger/blocks", get(blocks::blocks))
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        let e = tally_fql::FqlError::new("not found", format!("/console/{name} is not a file of the console."));
        let mut r = crate::http::error_response(&e, 0);
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let mut r = match from_dev_dir(name) {
        Some(b) => (StatusCode::OK, b).into_response(),
        None => (StatusCode::OK, *bytes).into_response(),
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The files change with the binary; a browser revalidates instead of keeping an
    // old page across an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// For people working on the pages: with `TALLY_CONSOLE_DIR` set to
/// `crates/tally-server/src/console/assets`, the files are read from there on every
/// request, so a change shows on reload without rebuilding. Only the names in [`ASSETS`]
/// are ever read.
fn from_dev_dir(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("TALLY_CONSOLE_DIR")?;
    std::fs::read(std::path::Path::new(&dir).join(name)).ok()
}
