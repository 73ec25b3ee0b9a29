//! `GET /metrics`, `GET /health`, and the router layer that records every request.
//!
//! On the client port both need the root key or an admin key of the root database (they
//! describe every tenant); `metrics_router` serves the same two without authentication
//! for `--metrics-listen`, which an operator binds to a private address.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::http::AppState;
use crate::metrics::{ErrorCode, QueryTag};

/// OpenMetrics text, which Prometheus scrapes natively.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(metrics_authed))
        .route("/health", get(health_authed))
        .route("/admin/backup", get(backup))
}

/// `GET /admin/backup`: an online backup of this node or cluster member (see
/// `crate::backup`), streamed: one storage read transaction is held while a blocking
/// thread writes the file into a channel of at most [`BACKUP_CHUNKS_QUEUED`] chunks that
/// the response body drains, so the node's memory does not grow with the store. An error
/// part-way aborts the response; the client then has a file that fails its digest.
async fn backup(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = crate::http::may_read_ledger(&st, &headers) {
        return crate::http::error_response(&e, 0);
    }
    let internal = |e: String| crate::http::error_response(&tally_fql::FqlError::new("internal server error", e), 0);
    let store = st.store.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<_, crate::backup::BackupError> {
        let snap = store.snapshot().map_err(|e| crate::backup::BackupError::Other(e.to_string()))?;
        let height = crate::snapshot::applied_height(&*snap)?;
        let (_, header) = crate::backup::head_at(&*snap, height)?;
        Ok((snap, height, header))
    })
    .await;
    let (snap, height, header) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    // The head at the backup's height, signed (on a cluster: by every voter that signed
    // it), travels in the file so a restore can check it.
    let signed_head = crate::ledger_api::sth_json(&st, header.as_ref()).await.to_string();
    // A member's log is its Raft log: the restored member gets it from the cluster again.
    let log_dir = st.cluster.is_none().then(|| st.metrics.data_dir().join("log"));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(BACKUP_CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(crate::backup::CHUNK_BYTES) };
        let written = crate::backup::write(&*snap, height, signed_head.as_bytes(), log_dir.as_deref(), &mut w);
        if let Err(e) = written {
            tracing::warn!(error = %e, "the backup stopped part-way");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], axum::body::Body::from_stream(body))
        .into_response()
}

/// Chunks of a backup queued between the thread that reads the store and the response.
const BACKUP_CHUNKS_QUEUED: usize = 4;

/// Hands [`crate::backup::CHUNK_BYTES`] at a time to the response body, waiting while the
/// queue is full (the client's pace sets the reader's).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= crate::backup::CHUNK_BYTES {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(crate::backup::CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// The unauthenticated port (`--metrics-listen`): these two routes and nothing else.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(|State(st): State<Arc<AppState>>| async move { metrics(&st) }))
        .route("/health", get(|State(st): State<Arc<AppState>>| async move { health(&st) }))
        .with_state(state)
}

async fn metrics_authed(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match crate::http::may_read_ledger(&st, &headers) {
        Ok(()) => metrics(&st),
        Err(e) => crate::http::error_response(&e, 0),
    }
}

async fn health_authed(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match crate::http::may_read_ledger(&st, &headers) {
        Ok(()) => health(&st),
        Err(e) => crate::http::error_response(&e, 0),
    }
}

fn metrics(st: &AppState) -> Response {
    match st.metrics.encode(st) {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics").into_response(),
    }
}

/// Whether this node can serve reads and writes now: 200 if both, else 503, with the
/// reasons in the body.
fn health(st: &AppState) -> Response {
    let mut reasons = Vec::new();
    let reads = match st.store.snapshot() {
        Ok(_) => true,
        Err(e) => {
            reasons.push(format!("the state store cannot be read: {e}"));
            false
        }
    };
    let (role, writes) = match &st.cluster {
        Some(c) => cluster_writes(&c.node, &mut reasons),
        None => {
            let running = st.sequencer.lock().ok().is_some_and(|s| s.is_some());
            if !running {
                reasons.push("the node is shutting down".into());
            } else if st.metrics.log_failed() {
                reasons.push("appending to the input log failed; fix the disk and restart the node".into());
            }
            ("single", running && !st.metrics.log_failed())
        }
    };
    let height = st.head.lock().ok().and_then(|h| *h).map_or(0, |h| h.height);
    let body = json!({"reads": reads, "writes": writes, "role": role, "height": height, "reasons": reasons});
    let status = if reads && writes { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// A member can write when a leader is known; the leader itself only while a majority
/// still answers it.
fn cluster_writes(node: &tally_raft::node::RaftNode, reasons: &mut Vec<String>) -> (&'static str, bool) {
    let m = node.metrics();
    if m.current_leader == Some(m.id) {
        return match node.leader_with_quorum() {
            Ok(true) => ("leader", true),
            Ok(false) => ("leader", false),
            Err(e) => {
                reasons.push(e.to_string());
                ("leader", false)
            }
        };
    }
    match m.current_leader {
        Some(_) => ("follower", true),
        None => {
            reasons.push("no leader is known: this member cannot reach a majority of the cluster".into());
            ("follower", false)
        }
    }
}

/// The fixed route names the counters use (a path a client made up is `other`).
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/linearized" => "/linearized",
        "/ping" => "/ping",
        "/ledger/head" => "/ledger/head",
        "/metrics" => "/metrics",
        "/health" => "/health",
        p if p.starts_with("/cluster/") => "/cluster",
        p if p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}

/// Router layer: counts every request by route and status, and a query's latency, tenant
/// and bytes from the tags its handler left on the answer.
pub async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    observed(&st, req, |req| next.run(req)).await
}

/// `answer(req)`, counted as [`observe`] counts it (for the requests `crate::http::App`
/// answers without the router).
pub async fn observed<F: std::future::Future<Output = Response>>(
    st: &AppState,
    req: Request,
    answer: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let route = route_of(req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let resp = answer(req).await;
    let m = &st.metrics;
    if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
        m.error(code);
    }
    let tag = resp.extensions().get::<QueryTag>().copied();
    let bytes_in = resp.extensions().get::<crate::metrics::BytesIn>().map_or(declared, |b| b.0);
    let bytes_out = axum::body::HttpBody::size_hint(resp.body()).exact().unwrap_or(0);
    m.record(route, resp.status().as_u16(), started.elapsed().as_secs_f64(), (bytes_in, bytes_out), tag);
    resp
}
