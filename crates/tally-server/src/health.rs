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

/// `GET /admin/backup`: an online backup of this single node (see `crate::backup`).
async fn backup(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = crate::http::may_read_ledger(&st, &headers) {
        return crate::http::error_response(&e, 0);
    }
    if st.cluster.is_some() {
        let e = tally_fql::FqlError::new(
            "invalid argument",
            "Backups are taken from single nodes; a cluster member is restored by adding it again (it copies a snapshot).",
        );
        return crate::http::error_response(&e, 0);
    }
    let st2 = st.clone();
    let taken =
        tokio::task::spawn_blocking(move || crate::backup::take(&*st2.store, &st2.metrics.data_dir().join("log")))
            .await;
    match taken {
        Ok(Ok(bytes)) => ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Ok(Err(e)) => crate::http::error_response(&tally_fql::FqlError::new("internal server error", e.to_string()), 0),
        Err(e) => crate::http::error_response(&tally_fql::FqlError::new("internal server error", e.to_string()), 0),
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
    let started = Instant::now();
    let route = route_of(req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let resp = next.run(req).await;
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
