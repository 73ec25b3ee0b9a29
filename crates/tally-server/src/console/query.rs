//! FQL text for the console (the JavaScript driver's syntax, `tally_fqltext`):
//!
//! - `POST /console/parse` `{"fql": text}` → `{"wire": json}`: the wire JSON of an
//!   expression (the pages build forms' values with it);
//! - `POST /console/format` `{"values": [json, …]}` → `{"texts": [text, …]}`: wire
//!   values printed in the same syntax;
//! - `POST /console/query` `{"fql": text}` with the caller's secret → the query run
//!   exactly as `POST /` runs it, answered `{"resource", "text", "query"}` (or the FQL
//!   errors, with the status `POST /` gives them).
//!
//! Parse errors are `invalid expression` with the `line` and `column` (1-based) of the
//! problem. Parsing and formatting need no secret: they read and touch nothing.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tally_fql::error::code;
use tally_fql::FqlError;

use crate::http::{bad_request, error_response, AppState};

/// Longest FQL text accepted (a query typed or pasted into the console).
pub const TEXT_BYTES_MAX: usize = 1 << 20;
/// Largest body of wire values `/console/format` prints, and most values per request.
pub const FORMAT_BYTES_MAX: usize = 4 << 20;
pub const FORMAT_VALUES_MAX: usize = 1_000;
/// Answers larger than this come back as wire JSON only (`text` is null): printing
/// them would cost more than a page can show.
pub const ANSWER_TEXT_BYTES_MAX: usize = 4 << 20;

#[derive(serde::Deserialize)]
struct TextRequest {
    fql: String,
}

#[derive(serde::Deserialize)]
struct FormatRequest {
    values: Vec<Value>,
}

/// Read a body of at most `max` bytes (and within the server's own body bounds).
async fn read_json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    max: usize,
    shape: &str,
) -> Result<(T, crate::inflight::Reserved), Response> {
    let (bytes, held) = crate::body::read(st, headers, body).await?;
    if bytes.len() > max {
        let e = FqlError::new("request too large", format!("The console accepts at most {max} bytes here."));
        let mut r = error_response(&e, 0);
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        return Err(r);
    }
    if tally_value::json_depth(&bytes, tally_value::JSON_DEPTH_MAX) > tally_value::JSON_DEPTH_MAX {
        return Err(error_response(&bad_request("The request is nested too deeply."), 0));
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok((v, held)),
        Err(e) => Err(error_response(&bad_request(format!("Send {shape} as JSON ({e})")), 0)),
    }
}

/// Text to wire JSON, or the `invalid expression` answer naming line and column.
// The error is the handler's finished answer (axum's Response is large; it is built once,
// on the error path only).
#[allow(clippy::result_large_err)]
fn parse_text(text: &str) -> Result<Value, Response> {
    tally_fqltext::parse(text).map_err(|e| {
        let body = json!({"errors": [{
            "code": code::INVALID_EXPRESSION,
            "description": format!("{} (line {}, column {})", e.message, e.line, e.column),
            "line": e.line,
            "column": e.column,
        }]});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    })
}

pub async fn parse(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let req: TextRequest = match read_json(&st, &headers, body, TEXT_BYTES_MAX, r#"{"fql": "<text>"}"#).await {
        Ok((r, _held)) => r,
        Err(r) => return r,
    };
    match parse_text(&req.fql) {
        Ok(wire) => (StatusCode::OK, axum::Json(json!({"wire": wire}))).into_response(),
        Err(r) => r,
    }
}

pub async fn format(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let shape = r#"{"values": [<wire JSON>, ...]}"#;
    let req: FormatRequest = match read_json(&st, &headers, body, FORMAT_BYTES_MAX, shape).await {
        Ok((r, _held)) => r,
        Err(r) => return r,
    };
    if req.values.len() > FORMAT_VALUES_MAX {
        let e = bad_request(format!("At most {FORMAT_VALUES_MAX} values per request; send fewer."));
        return error_response(&e, 0);
    }
    let texts = off_thread(move || req.values.iter().map(tally_fqltext::format).collect::<Vec<_>>()).await;
    match texts {
        Ok(texts) => (StatusCode::OK, axum::Json(json!({"texts": texts}))).into_response(),
        Err(e) => error_response(&e, 0),
    }
}

pub async fn query(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let req: TextRequest = match read_json(&st, &headers, body, TEXT_BYTES_MAX, r#"{"fql": "<text>"}"#).await {
        Ok((r, _held)) => r,
        Err(r) => return r,
    };
    let wire = match parse_text(&req.fql) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let bytes = Bytes::from(serde_json::to_vec(&wire).unwrap_or_default());
    // Exactly the path `POST /` takes: authentication, limits, read-only pass, write path.
    let answer = crate::http::query_inner(st.clone(), &headers, bytes, false).await;
    with_text(answer, wire).await
}

/// `{"resource": v}` becomes `{"resource": v, "text": "<v printed>", "query": wire}`;
/// errors pass through. Status and the `x-*` headers are kept.
async fn with_text(answer: Response, wire: Value) -> Response {
    let (mut parts, body) = answer.into_parts();
    let Ok(collected) = body.collect().await else {
        return error_response(&FqlError::new(code::INTERNAL_ERROR, "could not read the answer"), 0);
    };
    let bytes = collected.to_bytes();
    let size = bytes.len();
    let printed = off_thread(move || {
        let mut v: Value = tally_value::parse_json_unbounded(&bytes).unwrap_or(Value::Null);
        if let Some(res) = v.get("resource") {
            let text = (size <= ANSWER_TEXT_BYTES_MAX).then(|| tally_fqltext::format(res));
            v["text"] = json!(text);
        }
        v["query"] = wire;
        serde_json::to_vec(&v).unwrap_or_default()
    })
    .await;
    let body = match printed {
        Ok(b) => b,
        Err(e) => return error_response(&e, 0),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, "application/json".parse().expect("static header value"));
    Response::from_parts(parts, Body::from(body))
}

/// On the long-work pool: printing a large answer is long work (as `POST /` encodes).
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, FqlError> {
    crate::longpool::spawn(f)
        .await
        .map_err(|e| FqlError::new(code::INTERNAL_ERROR, format!("console task failed: {e}")))
}
