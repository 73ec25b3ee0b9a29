//! `GET /ledger/blocks?before=H&limit=N`: the newest block headers below height `H`
//! (default: through the head), newest first, for the console's ledger view. The same
//! authority as `/ledger/head` (the root key or an admin key of the root database): the
//! ledger moves with every tenant's writes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_fql::FqlError;

use crate::http::{bad_request, error_response, may_read_ledger, AppState};
use crate::machine::block_key;

/// Headers per answer at most (each is a meta read of 125 bytes).
pub const BLOCKS_PAGE_MAX: u64 = 100;
const BLOCKS_PAGE_DEFAULT: u64 = 20;

#[derive(serde::Deserialize)]
pub struct BlocksParams {
    before: Option<u64>,
    limit: Option<u64>,
}

pub async fn blocks(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<BlocksParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = may_read_ledger(&st, &headers) {
        return error_response(&e, 0);
    }
    let Ok(Query(p)) = params else {
        let e = bad_request("Use /ledger/blocks?before=<height>&limit=<1-100>, both non-negative integers.");
        return error_response(&e, 0);
    };
    let limit = p.limit.unwrap_or(BLOCKS_PAGE_DEFAULT).clamp(1, BLOCKS_PAGE_MAX);
    let head = st.head.lock().ok().and_then(|h| *h);
    let Some(head) = head else {
        return (StatusCode::OK, axum::Json(json!({"head": null, "blocks": []}))).into_response();
    };
    let top = p.before.map(|b| b.min(head.height.saturating_add(1))).unwrap_or(head.height.saturating_add(1));
    match read_headers(&st, top, limit) {
        Ok(blocks) => {
            let head = json!({"height": head.height, "hash": hex::encode(head.hash())});
            (StatusCode::OK, axum::Json(json!({"head": head, "blocks": blocks}))).into_response()
        }
        Err(e) => error_response(&e, 0),
    }
}

/// Headers at heights `top - 1` down, at most `limit` of them (heights never written,
/// such as 0 on a store that starts at 1, are skipped).
fn read_headers(st: &AppState, top: u64, limit: u64) -> Result<Vec<serde_json::Value>, FqlError> {
    let storage = |e: String| FqlError::new("internal server error", format!("storage: {e}"));
    let snap = st.store.snapshot().map_err(|e| storage(e.to_string()))?;
    let mut out = Vec::new();
    for height in (top.saturating_sub(limit)..top).rev() {
        let Some(bytes) = snap.meta(&block_key(height)).map_err(|e| storage(e.to_string()))? else { continue };
        let header = tally_ledger::BlockHeader::decode(&bytes).map_err(|e| storage(e.to_string()))?;
        out.push(json!({"height": header.height, "hash": hex::encode(header.hash()), "header": header}));
    }
    Ok(out)
}
