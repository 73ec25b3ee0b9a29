//! Request and answer bodies, with their bounds: a body is read within a deadline and
//! a size limit, holding its share of the in-flight budget (refused at once with `503`
//! when the budget is spent); large bodies are parsed, and large answers encoded, on the
//! low-priority long-work pool (`crate::longpool`) so the async threads stay free for
//! `/ping` and small queries.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use tally_fql::error::code;
use tally_fql::FqlError;

use crate::http::{error_response, AppState};
use crate::inflight::{Reserved, BODY_COST_FACTOR};

/// Bodies and answers up to this size are parsed or encoded on the async thread (well
/// under a millisecond); larger ones on a blocking thread.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// The error a client gets when the server has no room for its request.
pub fn overloaded(what: &str) -> FqlError {
    FqlError::new(
        code::UNAVAILABLE,
        format!("The server is overloaded ({what}); retry after the time in Retry-After, or send smaller requests."),
    )
}

fn with_status(e: FqlError, status: StatusCode) -> Response {
    let mut r = error_response(&e, 0);
    *r.status_mut() = status;
    r
}

/// Read a request body: at most `body_bytes_max` bytes within `body_read_timeout`,
/// reserving [`BODY_COST_FACTOR`] times its size in flight for as long as the returned
/// reservation is held.
pub async fn read(st: &AppState, headers: &HeaderMap, body: Body) -> Result<(Bytes, Reserved), Response> {
    let max = st.body_bytes_max;
    let too_large = || {
        let msg = format!("Request body is larger than {max} bytes; send smaller queries (or raise --body-bytes-max).");
        with_status(FqlError::new("request too large", msg), StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let deadline = Instant::now() + st.body_read_timeout;
    if declared.is_some_and(|n| n > max as u64) {
        return Err(refuse_unread(body, deadline, max, too_large()));
    }
    let busy = || error_response(&overloaded("too many bytes of requests and answers in flight"), 0);
    let mut reserved = declared.unwrap_or(0).saturating_mul(BODY_COST_FACTOR);
    let Some(mut held) = st.inflight.try_reserve(reserved) else {
        return Err(refuse_unread(body, deadline, max, busy()));
    };
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => {
                let msg = format!(
                    "The request body did not arrive within {} s; send it faster or in smaller requests.",
                    st.body_read_timeout.as_secs_f64()
                );
                return Err(with_status(FqlError::new(code::BAD_REQUEST, msg), StatusCode::REQUEST_TIMEOUT));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e = FqlError::new(code::BAD_REQUEST, format!("Could not read the request body: {e}"));
                return Err(with_status(e, StatusCode::BAD_REQUEST));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > max {
            return Err(refuse_unread(body, deadline, max, too_large()));
        }
        let needed = (buf.len() + data.len()) as u64 * BODY_COST_FACTOR;
        if needed > reserved {
            if !held.try_grow(needed - reserved) {
                drop(held);
                drop(buf);
                return Err(refuse_unread(body, deadline, max, busy()));
            }
            reserved = needed;
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), held))
}

/// Answer `refusal` to a request whose body is not read, and read the rest of the body
/// in the background, throwing it away (at most `bytes_max` bytes, until `deadline`).
///
/// Why: an HTTP/1.1 server that answers and closes while its client is still sending
/// makes the kernel reset the connection, and the client then sees `EPIPE`/`ECONNRESET`
/// instead of the answer (measured: 3 of 4 refused 8 MiB uploads). Reading on lets the
/// client finish sending and read the `503`/`413` (RFC 9112 §9.6, "lingering close").
/// It holds no memory beyond one frame and no share of the in-flight budget; the
/// connection stays bounded by the body deadline and the connection cap.
pub fn refuse_unread(body: Body, deadline: Instant, bytes_max: usize, refusal: Response) -> Response {
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline.into(), body.frame()).await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > bytes_max {
                    break;
                }
            }
        }
    });
    refusal
}

/// A parsed query body: its expression, and the query as the write path logs it.
pub struct Parsed {
    pub expr: tally_fql::expr::Expr,
    pub query: QueryJson,
}

/// The query's JSON, for the logged record.
pub enum QueryJson {
    /// The query in the record's `tree` encoding, written as the body's text was read for
    /// the expression (`tally_exec::record::read_text`): a write's record is these bytes
    /// behind its other fields, and no JSON tree is built.
    Encoded(tally_exec::record::QueryTree),
    /// The body's text, parsed straight to the expression, whose record is written from
    /// its JSON tree: it may hold a password to redact, or repeats a key.
    Text(Bytes),
    /// The body's JSON tree, when the expression was parsed from it.
    Tree(serde_json::Value),
}

/// Parse a query body (JSON, then the expression), off the async thread when large.
pub async fn parse_query(body: Bytes) -> Result<Parsed, FqlError> {
    if body.len() <= INLINE_BYTES_MAX {
        return parse_now(body);
    }
    crate::longpool::spawn(move || parse_now(body))
        .await
        .unwrap_or_else(|e| Err(FqlError::new(code::INTERNAL_ERROR, format!("parse task failed: {e}"))))
}

fn parse_now(body: Bytes) -> Result<Parsed, FqlError> {
    // Straight from the text when it can (`expr::from_text`); it declines anything it
    // cannot build exactly as the tree parser would, errors included, and the tree
    // parser below then gives the same answer as it always did. What it takes is at
    // most 128 levels deep (serde_json's limit), so the depth check below would pass.
    //
    // Parse once: the same read also writes the query's record encoding, which a write
    // logs (the body is not tokenized again; ~4 % of a transfer's CPU). A body that may
    // hold a password is logged from its JSON tree, redacted, so only its expression is
    // read here. Reads pay the encoding too (≈ 0.2 µs for a point read; a buffer of the
    // text's size, while the body's own is freed once read, within the
    // `BODY_COST_FACTOR` a write's encoding was already counted in), docs/benchmarks.md.
    //
    // The common case first: the body read into a tape, and the expression and the
    // record's tree built from it with plain loops (`tally_value::tape`, about a third of
    // the serde pass's CPU). What the tape path declines goes on as before.
    let password = tally_fql::secret::may_hold_password(&body);
    let taped = if body.len() <= TAPE_BYTES_MAX { from_tape(&body, password) } else { None };
    if let Some((expr, tree)) = taped {
        let query = match tree {
            Some(tree) => QueryJson::Encoded(tree),
            None => QueryJson::Text(body),
        };
        return Ok(Parsed { expr, query });
    }
    if password {
        if let Some(expr) = tally_fql::expr::from_text(&body) {
            return Ok(Parsed { expr, query: QueryJson::Text(body) });
        }
    } else if let Some((expr, tree)) = tally_exec::record::read_text(&body, tally_fql::expr::QuerySeed) {
        let query = match tree {
            Some(tree) => QueryJson::Encoded(tree),
            None => QueryJson::Text(body),
        };
        return Ok(Parsed { expr, query });
    }
    if tally_value::json_depth(&body, tally_value::JSON_DEPTH_MAX) > tally_value::JSON_DEPTH_MAX {
        let msg = format!("Query is nested more than {} levels deep; flatten it.", tally_value::JSON_DEPTH_MAX);
        return Err(FqlError::new(code::INVALID_EXPRESSION, msg));
    }
    let (json, expr) = parse_tree(&body)?;
    Ok(Parsed { expr, query: QueryJson::Tree(json) })
}

/// Largest body read through a tape. A tape takes 24 bytes a value, up to 12 times the
/// text (`[1,1,…]`), beside the expression built from it; within this bound that is at
/// most 768 KiB per parse, and a larger body (a batch of many transfers, parsed on the
/// long pool) is read by the serde pass, whose cost `BODY_COST_FACTOR` counts.
const TAPE_BYTES_MAX: usize = INLINE_BYTES_MAX;

/// The expression of `body` read through a tape, and the record's tree unless the body
/// may hold a password (logged redacted, from its JSON tree); `None` when declined.
fn from_tape(body: &[u8], password: bool) -> Option<(tally_fql::expr::Expr, Option<tally_exec::record::QueryTree>)> {
    let mut buf = String::new();
    let tape = tally_value::tape::Tape::parse(body, &mut buf)?;
    let expr = tally_fql::expr::from_tape(&tape)?;
    let tree = (!password).then(|| tally_exec::record::QueryTree::from_tape(&tape));
    Some((expr, tree))
}

/// The body's JSON tree and its expression.
pub fn parse_tree(body: &[u8]) -> Result<(serde_json::Value, tally_fql::expr::Expr), FqlError> {
    let json: serde_json::Value = tally_value::parse_json_unbounded(body)
        .map_err(|e| FqlError::new(code::INVALID_EXPRESSION, format!("Request body is not valid JSON: {e}.")))?;
    let expr = tally_fql::expr::parse(&json)?;
    Ok((json, expr))
}

/// Bytes of an answer encoded ahead of what its client has taken: one chunk being
/// sent, [`STREAM_CHUNKS_AHEAD`] waiting.
pub const STREAM_CHUNK_BYTES: usize = 64 * 1024;
const STREAM_CHUNKS_AHEAD: usize = 2;

/// `{"resource": v}` as a body that is encoded as its client takes it, for answers
/// larger than [`INLINE_BYTES_MAX`]. The encoding runs on the long pool's low-priority
/// worker a chunk at a time ([`crate::longpool::spawn_async`]) and waits while
/// [`STREAM_CHUNKS_AHEAD`] chunks are not yet taken, so an answer costs its value and a
/// few chunks, never its whole encoding (and the JSON tree `to_json` would build), and
/// no thread waits for a slow client. `room` (the answer's share of the in-flight
/// budget) is held until the last chunk is encoded or the client goes away; a client
/// that stops reading is cut off by the connection's answer timeout (conn.rs), which
/// drops the body and so ends the encoding.
pub fn stream_answer(v: tally_value::Value, room: crate::inflight::Reserved) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_CHUNKS_AHEAD);
    crate::longpool::spawn_async(async move {
        let _room = room;
        let mut enc = tally_value::ChunkEncoder::new("{\"resource\":", &v, "}");
        while !enc.is_done() {
            let mut chunk = Vec::with_capacity(STREAM_CHUNK_BYTES + 1024);
            enc.fill(&mut chunk, STREAM_CHUNK_BYTES);
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return; // the client went away
            }
            // Other answers' chunks take turns on the worker.
            tokio::task::yield_now().await;
        }
    });
    Body::new(ChunkBody { rx })
}

/// The receiving end of [`stream_answer`].
struct ChunkBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl axum::body::HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// `{"resource": v}` as bytes, off the async thread when large.
pub async fn encode_answer(v: tally_value::Value) -> Vec<u8> {
    // The estimate walks the value once, cheap next to the encoding it decides about.
    let large = tally_fql::budget::wire_len(&v) > INLINE_BYTES_MAX as u64;
    let encode = move || {
        // Encoding a serde_json value cannot fail.
        serde_json::to_vec(&serde_json::json!({"resource": tally_value::to_json(&v)})).unwrap_or_default()
    };
    if large {
        return crate::longpool::spawn(encode).await.unwrap_or_default();
    }
    encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request path before the text path existed: depth check, JSON tree, expression.
    fn tree_path(body: &[u8]) -> Result<String, FqlError> {
        if tally_value::json_depth(body, tally_value::JSON_DEPTH_MAX) > tally_value::JSON_DEPTH_MAX {
            let msg = format!("Query is nested more than {} levels deep; flatten it.", tally_value::JSON_DEPTH_MAX);
            return Err(FqlError::new(code::INVALID_EXPRESSION, msg));
        }
        parse_tree(body).map(|(_, e)| format!("{e:?}"))
    }

    /// The request path now; and whether it took the text path. A query encoded as it
    /// was read must be logged as the record of its JSON tree, byte for byte.
    fn now(body: &[u8]) -> (Result<String, FqlError>, bool) {
        match parse_now(Bytes::copy_from_slice(body)) {
            Ok(p) => {
                if let QueryJson::Encoded(tree) = &p.query {
                    use tally_exec::record::{encode_input, encode_input_with_tree, TxnInput};
                    let input = |q| TxnInput {
                        q,
                        db: 1,
                        role: "admin".into(),
                        entropy: [1; 32],
                        steps_max: 10,
                        identity: None,
                        token: None,
                        jwt: None,
                    };
                    let q: serde_json::Value = tally_value::parse_json_unbounded(body).expect("JSON");
                    assert!(!tally_fql::secret::may_hold_password(body));
                    assert_eq!(
                        encode_input_with_tree(&input(serde_json::Value::Null), tree),
                        encode_input(&input(q)),
                        "{}",
                        String::from_utf8_lossy(body)
                    );
                }
                (Ok(format!("{:?}", p.expr)), matches!(p.query, QueryJson::Encoded(_) | QueryJson::Text(_)))
            }
            Err(e) => (Err(e), false),
        }
    }

    #[test]
    fn bodies_parse_to_the_same_expression_or_the_same_error() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let deep_calls = |n: usize| format!("{}1{}", "{\"add\":[".repeat(n), "]}".repeat(n));
        let bodies: Vec<(String, bool)> = vec![
            (r#"{"add":[1,2]}"#.into(), true),
            (r#"{"let":[{"a":{"get":{"@ref":{"id":"1","collection":{"@ref":{"id":"c","collection":{"@ref":{"id":"collections"}}}}}}}}],"in":{"var":"a"}}"#.into(), true),
            (r#"{"create":{"collection":"c"},"params":{"object":{"data":{"object":{"n":1}}}}}"#.into(), true),
            (r#"{"create":{"collection":"users"},"params":{"object":{"credentials":{"object":{"password":"x"}}}}}"#.into(), true),
            (r#"{"object":{"p\u0061ssword":"x"}}"#.into(), true),
            (r#"{"@ref":{"id":"1","x":1,"x":2}}"#.into(), true),
            (deep(100), true),
            (deep_calls(60), true),
            (deep(500), false),
            (deep(1000), false),
            (deep(1001), false),
            (deep_calls(600), false),
            ("".into(), false),
            ("{\"add\":".into(), false),
            ("[1,2".into(), false),
            ("{\"add\":[1,2]} trailing".into(), false),
            ("{\"add\":[1,2],\"add\":[3]}".into(), false),
            ("{}".into(), false),
            ("{\"nope\":1}".into(), false),
            ("{\"select\":1}".into(), false),
            ("{\"@ref\":{\"id\":5}}".into(), false),
            ("{\"@ts\":\"not a time\"}".into(), false),
            ("{\"@foo\":1}".into(), false),
            ("9223372036854775808".into(), false),
            ("1e400".into(), false),
            ("{\"let\":[1],\"in\":1}".into(), false),
            ("{\"object\":{\"@obj\":{\"@x\":{\"add\":[1]}}}}".into(), false),
            ("\u{feff}1".into(), false),
            ("[\"\\ud800\"]".into(), false),
        ];
        // Deep bodies recurse in both paths: on a stack like the server's threads'.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                for (body, text_path) in bodies {
                    let (got, took) = now(body.as_bytes());
                    assert_eq!(got, tree_path(body.as_bytes()), "{body}");
                    assert_eq!(took, text_path, "{body}");
                }
            })
            .expect("spawn")
            .join()
            .expect("no failure");
    }

    #[test]
    fn a_query_is_encoded_as_it_is_read_unless_its_record_needs_its_tree() {
        let kind = |body: &str| match parse_now(Bytes::copy_from_slice(body.as_bytes())).map(|p| p.query) {
            Ok(QueryJson::Encoded(_)) => "encoded",
            Ok(QueryJson::Text(_)) => "text",
            Ok(QueryJson::Tree(_)) => "tree",
            Err(_) => "error",
        };
        assert_eq!(kind(r#"{"add":[1,2]}"#), "encoded");
        // May hold a password to redact: logged from its JSON tree.
        assert_eq!(kind(r#"{"login":{"@ref":{"id":"1"}},"params":{"object":{"password":"x"}}}"#), "text");
        assert_eq!(kind(r#"{"object":{"p\u0061ssword":"x"}}"#), "text");
        // A repeated key the expression reader ignores: the tree keeps one.
        assert_eq!(kind(r#"{"@ref":{"id":"1","x":1,"x":2}}"#), "text");
        // Declined by the text reader (a repeated call key): the tree parser's answer.
        assert_eq!(kind(r#"{"add":[1],"add":[2]}"#), "tree");
        assert_eq!(kind(r#"{"nope":1}"#), "error");
    }
}
